//! Keeps the checkpoint's files (RocksDB's SST and blob files) out of the
//! kernel's page cache.
//!
//! zkd serves every read from the tree in memory; RocksDB's files are read
//! back only at start-up and to send a learner a snapshot. Yet each byte
//! written to them stayed cached, so under a write load the page cache grew
//! by what the checkpoint wrote (GBs in a minute of 10 KiB sets), each page
//! a fresh one for the kernel to find and clear. On the build machine (a VM
//! whose host backs guest memory on first touch) that copy into fresh pages
//! was 38% of zkd's CPU samples, in RocksDB's flush thread, in a 16x32
//! 10 KiB setData run that followed a large create run. Dropping the pages
//! once written lets the next writes reuse recently freed ones.
//!
//! A thread looks at the directory every `EVERY` and asks the kernel to
//! drop the cached pages (`POSIX_FADV_DONTNEED`) of each file that has
//! stopped changing: RocksDB writes a file once, syncs it, and never
//! changes it again. Nothing here can lose data: the kernel drops only
//! clean pages, which are on the disk.
//!
//! Measured with huge pages refused (`refuse_huge_pages`, main.rs), which
//! on its own doubled creates but left later runs paying for this page
//! cache growth. Fresh standalone server, 16x32 10 KiB create, setData,
//! multi10 in a row (8 s each, waiting for a quiet disk between), ops/s,
//! 2 rounds:
//!   without this thread  create 21.3k / 23.5k  set 10.3k / 9.2k   multi10 0.62k / 1.37k
//!   with it              create 21.3k / 21.9k  set 27.8k / 29.5k  multi10 2.40k / 2.64k
//!   (before both: huge pages allowed, no thread: create 9.2k / 15.0k,
//!    set 31.0k / 33.5k, multi10 1.93k / 2.39k)
//! RocksDB's direct I/O for flushes and compactions instead of this kept
//! the page cache small too, but set 16x32 10 KiB did 22-25k (each MiB
//! written waits for the disk).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the directory is looked at.
const EVERY: Duration = Duration::from_millis(200);
/// Every this many looks, files dropped before are dropped again (pages a
/// start-up or a snapshot for a learner read back into the cache).
const AGAIN_AFTER: u32 = 25;

/// Starts the thread for the RocksDB directory `db`.
pub fn keep_out(db: PathBuf) {
    let started = std::thread::Builder::new()
        .name("zkd-pagecache".into())
        .spawn(move || {
            let mut files = Files::default();
            for look in (1..=AGAIN_AFTER).cycle() {
                std::thread::sleep(EVERY);
                if look == AGAIN_AFTER {
                    files.seen.clear();
                }
                files.look(&db, drop_pages);
            }
        });
    if let Err(e) = started {
        log::warn!("checkpoint files stay in the page cache: cannot start a thread: {e}");
    }
}

/// What the last look saw of each file: its length and modification time,
/// and whether its pages were dropped at that length and time.
#[derive(Default)]
struct Files {
    seen: HashMap<PathBuf, (u64, SystemTime, bool)>,
}

impl Files {
    /// Drops the cached pages of each SST and blob file in `db` that has
    /// not changed since the last look (RocksDB has finished and synced
    /// it) and was not dropped yet. A file still being written is left
    /// alone: asking then would start writeback of its dirty pages, and a
    /// page under writeback cannot be dropped, which makes the kernel drain
    /// the page lists of every CPU (`lru_add_drain_all`) on each ask.
    /// Best effort: an error only leaves pages cached.
    fn look(&mut self, db: &Path, mut drop_pages: impl FnMut(&Path) -> bool) {
        let Some(files) = crate::disk::checkpoint_files(db) else {
            return;
        };
        let mut now = HashMap::with_capacity(self.seen.len());
        for (e, meta) in files {
            let path = e.path();
            let Ok(mtime) = meta.modified() else { continue };
            let len = meta.len();
            let dropped = match self.seen.get(&path) {
                Some(&(l, m, dropped)) if l == len && m == mtime => dropped || drop_pages(&path),
                _ => false,
            };
            now.insert(path, (len, mtime, dropped));
        }
        // Files RocksDB deleted are forgotten.
        self.seen = now;
    }
}

/// Asks the kernel to drop the cached clean pages of `path`.
fn drop_pages(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: advice on an open descriptor; no memory is passed.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file is dropped once it has stopped changing, once, and again
    /// after it changes; other files are never asked about.
    #[test]
    fn a_file_is_dropped_once_it_stops_changing() {
        let dir = std::env::temp_dir().join(format!("zkd-pagecache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sst = dir.join("000012.sst");
        std::fs::write(&sst, b"one").unwrap();
        std::fs::write(dir.join("LOG"), b"not a checkpoint file").unwrap();
        std::fs::write(dir.join("000013.log"), b"nor this").unwrap();
        let mut files = Files::default();
        let mut asked = Vec::new();
        let mut look = |files: &mut Files| {
            let mut now = Vec::new();
            files.look(&dir, |p| {
                now.push(p.file_name().unwrap().to_string_lossy().into_owned());
                true
            });
            asked.push(now);
        };
        look(&mut files); // first seen: it may still be written
        look(&mut files); // unchanged: dropped
        look(&mut files); // dropped already
        std::fs::OpenOptions::new()
            .append(true)
            .open(&sst)
            .unwrap()
            .write_all(b" two")
            .unwrap();
        look(&mut files); // changed: being written
        look(&mut files); // unchanged again: dropped
        let blob = dir.join("000014.blob");
        std::fs::write(&blob, b"blob").unwrap();
        look(&mut files);
        look(&mut files);
        let none: Vec<String> = Vec::new();
        let sst_only = vec!["000012.sst".to_string()];
        assert_eq!(
            asked,
            vec![
                none.clone(),
                sst_only.clone(),
                none.clone(),
                none.clone(),
                sst_only,
                none,
                vec!["000014.blob".to_string()],
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
