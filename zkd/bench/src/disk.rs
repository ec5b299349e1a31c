//! The disk's floor for one-at-a-time durable writes: `--workload fsync`.
//!
//! A server with fsync on cannot answer a lone write faster than its disk
//! makes one small append durable, so `scripts/bench.sh` measures that in
//! the same run as the servers and prints it under the table.
//!
//! Each of `--conns` appenders owns a file in `--dir`, zero-filled and
//! synced before the clock starts, so no append changes the file's size or
//! allocates a block: the cheapest append there is, as in zkd's filled log
//! files (ZooKeeper pads its log sparsely, so its appends also allocate
//! blocks). Each loops: `--size` bytes written at the next offset
//! (buffered, as ZooKeeper writes its log), then `fdatasync`. One appender
//! per ensemble member puts as many syncs in flight on the disk as three
//! members that share it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Each appender's file; appends wrap around to its start.
const FILE_BYTES: u64 = 64 << 20;

/// What a run measured: every append's latency (µs), the seconds it took
/// and the CPU seconds this process used in them (not filling the files).
pub struct Measured {
    pub lat: Vec<u32>,
    pub secs: f64,
    pub cpu: f64,
}

/// Runs the appenders for `seconds`. The files are removed afterwards.
pub fn run(dir: &Path, appenders: usize, size: usize, seconds: f64) -> std::io::Result<Measured> {
    let size = size.max(1);
    let mut files = Vec::new();
    for i in 0..appenders {
        let path = dir.join(format!("zkbench-fsync-{}-{i}", std::process::id()));
        files.push(Owned::create(path)?);
    }
    let cpu0 = crate::cpu::own_seconds();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut lat = Vec::new();
    std::thread::scope(|s| {
        let threads: Vec<_> = files
            .iter()
            .map(|f| s.spawn(move || append_until(&f.file, size, deadline)))
            .collect();
        for t in threads {
            lat.extend(t.join().expect("appender thread")?);
        }
        Ok::<_, std::io::Error>(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = crate::cpu::own_seconds() - cpu0;
    drop(files);
    Ok(Measured { lat, secs, cpu })
}

fn append_until(file: &File, size: usize, deadline: Instant) -> std::io::Result<Vec<u32>> {
    let rec = vec![b'x'; size];
    let mut lat = Vec::new();
    let mut off = 0u64;
    while Instant::now() < deadline {
        if off + size as u64 > FILE_BYTES {
            off = 0;
        }
        let t = Instant::now();
        file.write_all_at(&rec, off)?;
        file.sync_data()?;
        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        off += size as u64;
    }
    Ok(lat)
}

/// A zero-filled, synced file that is removed when dropped.
struct Owned {
    file: File,
    path: PathBuf,
}

impl Owned {
    fn create(path: PathBuf) -> std::io::Result<Owned> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Owned from here: a failure below still removes the file.
        let owned = Owned { file, path };
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < FILE_BYTES {
            owned.file.write_all_at(&zeros, at)?;
            at += zeros.len() as u64;
        }
        owned.file.sync_all()?;
        Ok(owned)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_timed_and_files_removed() {
        let dir = std::env::temp_dir().join(format!("zkbench-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = run(&dir, 2, 100, 0.2).unwrap();
        assert!(!m.lat.is_empty());
        assert!(m.secs >= 0.2);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "files left behind"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn appends_land_at_advancing_offsets() {
        let dir = std::env::temp_dir().join(format!("zkbench-disk-off-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let owned = Owned::create(dir.join("f")).unwrap();
        assert_eq!(owned.file.metadata().unwrap().len(), FILE_BYTES);
        let lat =
            append_until(&owned.file, 10, Instant::now() + Duration::from_millis(50)).unwrap();
        let mut buf = vec![0u8; 10 * lat.len() + 10];
        owned.file.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..10 * lat.len()].iter().all(|b| *b == b'x'));
        assert!(buf[10 * lat.len()..].iter().all(|b| *b == 0));
        drop(owned);
        assert!(!dir.join("f").exists());
        std::fs::remove_dir(&dir).unwrap();
    }
}
