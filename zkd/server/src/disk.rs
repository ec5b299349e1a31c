//! The few things zkd asks of the filesystem beyond RocksDB.

use std::path::Path;

/// Free bytes (for unprivileged users) on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    space(dir).map(|(free, _)| free)
}

/// Free bytes (for unprivileged users) and total bytes of the filesystem
/// holding `dir`.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a properly sized
    // out-parameter for statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// The SST and blob files in RocksDB's directory `db` (the checkpoint's
/// data files), each with its metadata; `None` if `db` cannot be listed.
pub fn checkpoint_files(
    db: &Path,
) -> Option<impl Iterator<Item = (std::fs::DirEntry, std::fs::Metadata)>> {
    let entries = std::fs::read_dir(db).ok()?;
    Some(entries.flatten().filter_map(|e| {
        if !matches!(
            e.path().extension().and_then(|x| x.to_str()),
            Some("sst" | "blob")
        ) {
            return None;
        }
        let meta = e.metadata().ok()?;
        Some((e, meta))
    }))
}

/// Ends the process at once, without running exit handlers: after a storage
/// failure RocksDB's own static destructors can abort on threads it still
/// owns, which would hide the exit status the operator should see.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(code) }
}
