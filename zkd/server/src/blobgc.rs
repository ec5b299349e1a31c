//! When the checkpoint's blob files are garbage-collected.
//!
//! Nodes with 4 KiB of data or more live in RocksDB's blob files (see
//! `storage`). Blob garbage collection moves the live values out of the
//! oldest quarter of those files whenever a compaction passes over their
//! keys, so that the files can then be deleted. Always on, it moved the
//! same long-lived nodes over and over. One example: a 3-member ensemble
//! ran `bench.sh`'s 10 KiB rows (create through multi10), ending with
//! about 1.2 GB of live nodes per member (estimated from the rows' key
//! counts). Each member rewrote 1,013 MB of blobs in four compactions of
//! 124-434 MB. The largest wrote for 12 s on the disk the log syncs on,
//! during the multi10 1x1 row, and that row's disk writes came to 1,000
//! KiB per op.
//!
//! So collection runs only while garbage is a large share of the blob
//! files: it is switched on above half and off again below a quarter. A
//! blob file whose records all died is removed by compaction without it.
//! Same sequence with this rule: no blobs were moved, and multi10 1x1
//! wrote 388 KiB per op (ZooKeeper 369). Sets over 16,000 10 KiB nodes
//! (standalone, 16x32, 60 s) kept 190-390 MB of blob files, as they did
//! with collection always on (245-514 MB): overwritten files die whole.
//! The price is space where files die in part (deletes, long-lived nodes
//! among short-lived ones): after that sequence the blob files were
//! 2.2 GB per member.

/// Below this many bytes of blob files, space is not worth moving data
/// for.
pub const FLOOR: u64 = 64 << 20;

pub struct BlobGc {
    on: bool,
    floor: u64,
}

impl BlobGc {
    /// Off, as a store opens: the first look decides.
    pub fn new(floor: u64) -> BlobGc {
        BlobGc { on: false, floor }
    }

    #[cfg(test)]
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Given the blob files' total size and the garbage in them, the new
    /// setting if it should change.
    pub fn change(&self, files: u64, garbage: u64) -> Option<bool> {
        let want = if self.on {
            garbage.saturating_mul(4) >= files
        } else {
            files > self.floor && garbage.saturating_mul(2) > files
        };
        (want != self.on).then_some(want)
    }

    /// The setting was changed (RocksDB took it).
    pub fn switched(&mut self, on: bool) {
        self.on = on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_above_half_garbage_and_off_below_a_quarter() {
        let mut gc = BlobGc::new(FLOOR);
        // (garbage in MB of 1000 MB of blob files, the change expected, why)
        let steps = [
            (500, None, "half is not above half"),
            (501, Some(true), "above half"),
            (400, None, "still collecting"),
            (250, None, "a quarter is not below"),
            (249, Some(false), "below a quarter"),
            (400, None, "stays off until half"),
        ];
        for (garbage, change, why) in steps {
            let got = gc.change(1000 << 20, garbage << 20);
            assert_eq!(got, change, "{why}");
            if let Some(on) = got {
                gc.switched(on);
            }
        }
        assert!(!gc.is_on());
    }

    #[test]
    fn a_small_store_is_left_alone() {
        let gc = BlobGc::new(FLOOR);
        assert_eq!(gc.change(FLOOR, FLOOR), None);
        assert_eq!(gc.change(FLOOR + 1, FLOOR), Some(true));
    }
}
