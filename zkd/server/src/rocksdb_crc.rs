//! RocksDB's CRC-32C, computed with the CPU's crc32 instruction.
//!
//! Debian's librocksdb (7.8.3, the one we link) is built portable, so its
//! CRC-32C is the table-driven one, about 1 GB/s here. RocksDB checksums
//! with it every record it writes to a blob file, value included (each
//! node of 4 KiB and more, at every flush and every garbage collection
//! that moves it), every blob it reads back (at start-up), and the records
//! of its own logs (MANIFEST, WAL); SST blocks use XXH3 (the 7.8 default,
//! per the OPTIONS file of a zkd store). Under 16x32 10 KiB creates on a
//! 3-member ensemble, `perf record` put 252 of the 541 samples of
//! RocksDB's flush thread in that loop, about an eighth of the machine's
//! CPU. With this file, A/B against the build before it (two
//! servers or ensembles side by side, 5 s slices taking turns, 3 rounds,
//! medians): 16x32 10 KiB creates 1.15x the ops/s on 3 members (server
//! CPU 228 -> 185 us/op) and 1.18x standalone (53 -> 42 us/op); setData
//! and multi10 of 10 KiB 1.02-1.06x; a restart reading 217,657 10 KiB
//! nodes (2.1 GB) 24.4/24.8 -> 23.2/23.6 s.
//!
//! The library calls `rocksdb::crc32c::Extend` through its PLT, so a
//! definition in the executable takes the place of its own (ELF symbol
//! interposition, as with malloc). The linker puts it in the binary's
//! dynamic symbol table because the library refers to it. It is defined
//! only when the shared library is linked (`build.rs`): a static RocksDB
//! brings its own. If a later library stops calling it through the PLT,
//! its own loop runs again: slower, never wrong.
//!
//! The function is the standard CRC-32C continued from `init` (RocksDB
//! masks what it stores elsewhere), so files are the same bit for bit
//! whichever computed them: the tests check it against the library's own.

#[cfg(rocksdb_shared)]
use std::os::raw::c_char;

/// `uint32_t rocksdb::crc32c::Extend(uint32_t init_crc, const char* buf,
/// size_t size)`.
#[cfg(rocksdb_shared)]
#[export_name = "_ZN7rocksdb6crc32c6ExtendEjPKcm"]
pub extern "C" fn rocksdb_crc32c_extend(init: u32, buf: *const c_char, size: usize) -> u32 {
    #[cfg(test)]
    shared_tests::CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if size == 0 {
        return init;
    }
    // SAFETY: RocksDB passes `size` readable bytes at `buf` (a Slice).
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), size) };
    crc32c::crc32c_append(init, data)
}

#[cfg(test)]
mod tests {
    /// Whichever way the build went: where RocksDB's `Extend` is a dynamic
    /// symbol (the shared library is loaded), the definition the library's
    /// calls bind to is the one in this executable.
    #[test]
    fn the_shared_library_checksums_with_ours() {
        let name = c"_ZN7rocksdb6crc32c6ExtendEjPKcm";
        // SAFETY: dlsym/dladdr with a NUL-terminated name and addresses
        // of loaded code; `Dl_info` is plain data.
        let (found, ours, theirs) = unsafe {
            let f = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
            if f.is_null() {
                return; // a static RocksDB: nothing to take the place of
            }
            let mut a: libc::Dl_info = std::mem::zeroed();
            let mut b: libc::Dl_info = std::mem::zeroed();
            let here = the_shared_library_checksums_with_ours as fn() as *const libc::c_void;
            assert!(libc::dladdr(f, &mut a) != 0 && libc::dladdr(here, &mut b) != 0);
            (
                f,
                std::ffi::CStr::from_ptr(b.dli_fname),
                std::ffi::CStr::from_ptr(a.dli_fname),
            )
        };
        assert_eq!(
            theirs, ours,
            "crc32c::Extend at {found:?} is not this executable's"
        );
    }
}

#[cfg(all(test, rocksdb_shared))]
mod shared_tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Calls of `rocksdb_crc32c_extend` in this test process.
    pub static CALLS: AtomicU64 = AtomicU64::new(0);

    type Extend = extern "C" fn(u32, *const c_char, usize) -> u32;

    fn ours(init: u32, data: &[u8]) -> u32 {
        rocksdb_crc32c_extend(init, data.as_ptr().cast(), data.len())
    }

    /// The library's own definition, the one ours takes the place of.
    fn theirs() -> Extend {
        let name = c"_ZN7rocksdb6crc32c6ExtendEjPKcm";
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT looks in the
        // objects loaded after the executable (librocksdb).
        let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
        assert!(!f.is_null(), "librocksdb defines no crc32c::Extend");
        assert_ne!(f as usize, rocksdb_crc32c_extend as Extend as usize);
        // SAFETY: the symbol is that C++ function, of this signature.
        unsafe { std::mem::transmute::<*mut libc::c_void, Extend>(f) }
    }

    #[test]
    fn matches_the_standard_check_values() {
        // RFC 3720 (iSCSI), B.4, and the catalogue's check value.
        assert_eq!(ours(0, b"123456789"), 0xE306_9283);
        assert_eq!(ours(0, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(ours(0, &[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(ours(0, b""), 0);
    }

    #[test]
    fn matches_the_library_own_at_every_length_offset_and_start() {
        let theirs = theirs();
        let mut data = vec![0u8; 20_000];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let lens = (0..=70).chain([255, 4096, 4097, 10_240, 19_990]);
        for len in lens {
            for off in 0..8 {
                let d = &data[off..off + len];
                for init in [0u32, 1, 0xFFFF_FFFF, 0x1234_5678] {
                    let want = theirs(init, d.as_ptr().cast(), d.len());
                    assert_eq!(ours(init, d), want, "len {len} offset {off} init {init:#x}");
                }
            }
        }
        // Continuing a checksum is checksumming the concatenation.
        let (a, b) = data[..10_000].split_at(3_333);
        assert_eq!(ours(ours(0, a), b), ours(0, &data[..10_000]));
    }

    /// The interposition works: RocksDB writing a blob file, and reading
    /// it, calls ours.
    #[test]
    fn rocksdb_calls_ours_to_write_and_read_a_blob() {
        let dir = std::env::temp_dir().join(format!("zkd-crc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(0);
        let db = rocksdb::DB::open(&opts, &dir).unwrap();
        let before = CALLS.load(Ordering::Relaxed);
        db.put(b"/node", vec![7u8; 10_240]).unwrap();
        db.flush().unwrap();
        let written = CALLS.load(Ordering::Relaxed);
        assert!(written > before);
        // And checks it with ours when it reads it back from the file.
        assert_eq!(db.get(b"/node").unwrap().unwrap(), vec![7u8; 10_240]);
        assert!(CALLS.load(Ordering::Relaxed) > written);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
