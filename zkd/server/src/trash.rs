//! Frees deleted files a piece at a time, from a thread of its own.
//!
//! On a file system mounted with `discard` (common on cloud VMs, and the
//! build machine's root), ext4 without a journal tells the disk about each
//! extent a file frees inside the unlink itself, and the disk works through
//! those discards ahead of the log syncs that clients wait for. RocksDB
//! deletes whole files at once, the checkpoint's blob files among them
//! (hundreds of MB each): after a compaction that dropped a cleared tree,
//! the build machine's disk was sent 2 GB of discards in 0.4 s (`perf`
//! block events, all from RocksDB's threads), and the members of a
//! 3-member ensemble serving 10 KiB setData one at a time logged about 30
//! syncs of 3-25 ms, one after another, meanwhile. A/B on fresh 3-member
//! ensembles (16x32 10 KiB creates then cleared, then 10 s of 1x1 10 KiB
//! setData, 3 alternations): p99.9 7.8 / 7.9 / 9.6 ms without this, 3.4 / 3.4 / 4.5
//! ms with it; 2,481 / 2,525 / 2,476 against 2,852 / 2,721 / 2,683 ops/s.
//! Same, 5 s of 16x32 10 KiB setData after the cleared creates: p99 110 /
//! 90 / 82 ms against 66 / 60 / 76 ms, ops/s unchanged (17.7k-18.2k
//! against 17.2k-18.8k); 1x1 10 KiB creates after cleared 16x32 creates
//! and sets: p99.9 8.2 / 5.7 / 11.4 ms against 3.5 / 4.2 / 4.4 ms.
//! Without this, on the file system remounted without `discard` (2 runs):
//! 3.5 / 3.3 ms.
//!
//! How: each file RocksDB makes gets a second name in the trash directory
//! (`zkd.trash`, beside `zkd.db`) when this thread first sees it, so
//! RocksDB's unlink frees nothing. A trash file left with a single name has
//! been deleted; it is shortened `CHUNK` at a time with a pause after each,
//! then removed. While the file system is short of space (under
//! `LOW_SPACE_PERCENT` free), files go at once.
//!
//! Only RocksDB's files: the log's files beyond its spares are removed at
//! once, in the storage thread, as before. Moved here too, they cost
//! throughput under group commit (fresh ensembles, 3 alternations, 5 s,
//! log files at once against through the trash: delete 16x32 100 B 73.8k /
//! 71.5k / 70.7k against 63.6k / 71.8k / 58.3k ops/s, multi10 16x32 100 B
//! 29.1k / 27.3k / 28.7k against 25.6k / 28.0k / 26.5k). Likely (not
//! measured further): a whole-file unlink stalls only the storage thread
//! and the next group grows, while discards spread out sit in front of
//! many syncs.
//!
//! A crash leaves the trash as it was, and the next start frees what was
//! deleted.
//!
//! Nothing here can lose data: a file is shortened only once no other name
//! refers to it. A file RocksDB makes and deletes between two looks is
//! freed by RocksDB, at once, as before.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The trash directory's name, beside `zkd.db`.
const TRASH_DIR: &str = "zkd.trash";

/// Bytes freed per step. A step is one discard, which holds the disk's
/// queue for as long as it takes: on the build machine 0.57 ms for 1 MiB,
/// 2.2 ms for 8 MiB, 33 ms for a 128 MiB file removed whole (`truncate` of
/// a synced file, medians). With 8 MiB steps at up to 400 MB/s, the run
/// above kept p99.9 at 3.8-4.8 ms but its p99 went from 0.8-1.1 to
/// 1.5-2.3 ms: more syncs waited behind a long discard.
const CHUNK: u64 = 1 << 20;

/// The slowest the trash is freed, bytes per second: one step per 10 ms,
/// the disk busy with discards ~6% of the time.
const MIN_RATE: u64 = 100 << 20;

/// Faster when more is waiting: whatever the backlog, freed within this
/// long (RocksDB may delete faster than `MIN_RATE` under heavy writes).
const CLEAR_WITHIN: Duration = Duration::from_secs(10);

/// How often the checkpoint's directory is looked at for new files.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Bytes freed between two looks, so a big deletion does not leave new
/// files unlinked (freed at once by RocksDB) for seconds.
const PER_LOOK: u64 = 64 << 20;

/// Free space (percent of the file system) under which files go at once.
const LOW_SPACE_PERCENT: u64 = 10;

/// The pause after each step for `backlog` bytes waiting: `MIN_RATE`, or
/// faster to free it all within `CLEAR_WITHIN`.
fn pause_for(backlog: u64) -> Duration {
    let rate = MIN_RATE.max(backlog / CLEAR_WITHIN.as_secs());
    Duration::from_micros(CHUNK * 1_000_000 / rate)
}

/// A file's name in the trash: its inode number first, which no other
/// file holds while it lives (the checkpoint's names repeat when a data
/// directory is emptied and begun again).
fn trash_name(meta: &std::fs::Metadata, name: &std::ffi::OsStr) -> OsString {
    let mut n = OsString::from(format!("{}-", meta.ino()));
    n.push(name);
    n
}

/// Starts the thread: it links the files of the checkpoint directory `db`
/// into the trash beside it and frees what is deleted there.
pub fn start(db: PathBuf) {
    let mut trash = Trash::new(db, CHUNK);
    let started = std::thread::Builder::new()
        .name("zkd-trash".into())
        .spawn(move || loop {
            trash.link_new();
            let at_once = low_on_space(&trash.db);
            // One listing per look: the backlog sets the pace of this
            // look's steps.
            let deleted = trash.deleted();
            let pause = pause_for(deleted.iter().map(|(_, len)| len).sum());
            trash.free(deleted, PER_LOOK, at_once, || std::thread::sleep(pause));
            std::thread::sleep(LOOK_EVERY);
        });
    if let Err(e) = started {
        log::warn!("deleted files are freed at once: cannot start a thread: {e}");
    }
}

fn low_on_space(dir: &Path) -> bool {
    crate::disk::space(dir)
        .is_some_and(|(free, total)| free.saturating_mul(100) < total * LOW_SPACE_PERCENT)
}

struct Trash {
    db: PathBuf,
    /// Where `db`'s files are linked: `TRASH_DIR` beside it.
    trash: PathBuf,
    /// The trash names of `db`'s files linked so far (as of the last look).
    linked: HashSet<OsString>,
    /// Linking failed (another file system, no hard links): said once.
    link_failed: bool,
    chunk: u64,
}

impl Trash {
    fn new(db: PathBuf, chunk: u64) -> Trash {
        Trash {
            trash: db.parent().unwrap_or(Path::new(".")).join(TRASH_DIR),
            db,
            linked: HashSet::new(),
            link_failed: false,
            chunk,
        }
    }

    /// Gives each SST and blob file of `db` not linked yet its trash name.
    /// Best effort: a file left unlinked is freed by RocksDB, at once.
    fn link_new(&mut self) {
        let Some(files) = crate::disk::checkpoint_files(&self.db) else {
            return;
        };
        if std::fs::create_dir_all(&self.trash).is_err() {
            return;
        }
        let mut now = HashSet::with_capacity(self.linked.len());
        for (e, meta) in files {
            let path = e.path();
            let name = trash_name(&meta, &e.file_name());
            if !self.linked.contains(&name) {
                match std::fs::hard_link(&path, self.trash.join(&name)) {
                    // Linked before a restart.
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        if !self.link_failed {
                            self.link_failed = true;
                            log::warn!(
                                "deleted checkpoint files are freed at once: cannot link {} into {}: {e}",
                                path.display(),
                                self.trash.display()
                            );
                        }
                        continue;
                    }
                }
            }
            now.insert(name);
        }
        self.linked = now;
    }

    /// The deleted files in the trash (those left with one name), and
    /// their lengths.
    fn deleted(&self) -> Vec<(PathBuf, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.trash) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let meta = std::fs::symlink_metadata(&path).ok()?;
                (meta.is_file() && meta.nlink() == 1).then_some((path, meta.len()))
            })
            .collect()
    }

    /// Frees up to `budget` bytes of `deleted` (as `deleted()` listed
    /// them), `chunk` at a time, calling `pause` after each step; with
    /// `at_once` (the file system is short of space), removes each whole
    /// and does not pause. Returns the bytes freed. Best effort: a file
    /// that cannot be shortened is removed.
    fn free(
        &self,
        deleted: Vec<(PathBuf, u64)>,
        budget: u64,
        at_once: bool,
        mut pause: impl FnMut(),
    ) -> u64 {
        let mut freed = 0;
        for (path, mut len) in deleted {
            while !at_once && len > self.chunk && freed < budget {
                let shorter = len - self.chunk;
                let cut = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(shorter));
                if cut.is_err() {
                    break;
                }
                freed += self.chunk;
                len = shorter;
                pause();
            }
            if freed >= budget && !at_once {
                return freed;
            }
            if std::fs::remove_file(&path).is_ok() {
                freed += len;
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zkd-trash-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("zkd.db")).unwrap();
        dir
    }

    fn trash_files(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir.join(TRASH_DIR))
            .unwrap()
            .flatten()
            .map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                (
                    n.split_once('-').unwrap().1.to_string(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// A checkpoint file gets a trash name at the first look and is left
    /// whole while RocksDB still has it; once deleted it is shortened a
    /// chunk per step, a pause after each, then removed. Other files are
    /// never linked.
    #[test]
    fn a_deleted_checkpoint_file_is_freed_a_chunk_at_a_time() {
        let dir = fresh("chunks");
        let db = dir.join("zkd.db");
        let chunk = 4096;
        let blob = db.join("000012.blob");
        std::fs::File::create(&blob)
            .unwrap()
            .set_len(2 * chunk + 100)
            .unwrap();
        std::fs::write(db.join("000013.sst"), b"kept").unwrap();
        std::fs::write(db.join("LOG"), b"not a checkpoint file").unwrap();
        let mut t = Trash::new(db.clone(), chunk);
        t.link_new();
        assert_eq!(
            trash_files(&dir),
            vec![
                ("000012.blob".into(), 2 * chunk + 100),
                ("000013.sst".into(), 4)
            ]
        );
        assert_eq!(
            t.free(t.deleted(), u64::MAX, false, || panic!(
                "nothing is deleted"
            )),
            0
        );
        t.link_new(); // linked once only
        std::fs::remove_file(&blob).unwrap();
        let mut seen = Vec::new();
        let freed = t.free(t.deleted(), u64::MAX, false, || {
            seen.push(trash_files(&dir))
        });
        assert_eq!(freed, 2 * chunk + 100);
        let sst = ("000013.sst".to_string(), 4);
        assert_eq!(
            seen,
            vec![
                vec![("000012.blob".into(), chunk + 100), sst.clone()],
                vec![("000012.blob".into(), 100), sst.clone()],
            ]
        );
        assert_eq!(trash_files(&dir), vec![sst]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A look frees no more than its budget (the rest waits for the next),
    /// and short of space a file goes whole, without pauses.
    #[test]
    fn a_look_keeps_to_its_budget_unless_space_is_short() {
        let dir = fresh("budget");
        let db = dir.join("zkd.db");
        let chunk = 4096;
        for n in ["000020.blob", "000021.blob"] {
            std::fs::File::create(db.join(n))
                .unwrap()
                .set_len(3 * chunk)
                .unwrap();
        }
        let mut t = Trash::new(db.clone(), chunk);
        t.link_new();
        std::fs::remove_file(db.join("000020.blob")).unwrap();
        std::fs::remove_file(db.join("000021.blob")).unwrap();
        let mut pauses = 0;
        assert_eq!(t.free(t.deleted(), chunk, false, || pauses += 1), chunk);
        assert_eq!(pauses, 1);
        let left: u64 = trash_files(&dir).iter().map(|(_, l)| l).sum();
        assert_eq!(left, 5 * chunk);
        assert_eq!(
            t.free(t.deleted(), u64::MAX, true, || panic!("no pause")),
            5 * chunk
        );
        assert!(trash_files(&dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The pause keeps to `MIN_RATE` until a backlog would take longer
    /// than `CLEAR_WITHIN` at that rate.
    #[test]
    fn the_pace_quickens_with_the_backlog() {
        let at_min = Duration::from_micros(CHUNK * 1_000_000 / MIN_RATE);
        assert_eq!(pause_for(0), at_min);
        assert_eq!(pause_for(MIN_RATE * CLEAR_WITHIN.as_secs()), at_min);
        assert_eq!(pause_for(4 * MIN_RATE * CLEAR_WITHIN.as_secs()), at_min / 4);
    }
}
