//! Unmounting on a signal when the mount is busy.
//!
//! A plain umount fails with EBUSY while any process has its working
//! directory or an open file under the mount point. fuser then only logs the
//! error and the mount stays, so SIGTERM from systemd or a test harness did
//! nothing until SIGKILL followed and left a dead mount behind ("Transport
//! endpoint is not connected"). libfuse unmounts lazily for that reason; so do
//! we: the mount point is detached from the namespace at once and the
//! filesystem keeps serving the files already open until their last user
//! lets go, then the session ends and zkfs exits.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether `mnt` is a mount point of a zkfs (any FUSE) mount in this
/// process's mount namespace, from /proc/self/mountinfo.
pub fn is_fuse_mount(mnt: &Path) -> bool {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.as_os_str().as_bytes();
    info.split(|&b| b == b'\n').any(|line| {
        let text = String::from_utf8_lossy(line);
        let fields: Vec<&str> = text.split(' ').collect();
        // id parent major:minor root MOUNTPOINT opts [optional...] - FSTYPE source super
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        fields.len() > dash + 1
            && fields.len() > 4
            && fields[dash + 1].starts_with("fuse")
            && unescape(fields[4]) == want
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Detaches `mnt` lazily: umount2(MNT_DETACH) as root, `fusermount3 -u -z`
/// otherwise (the kernel refuses unprivileged umount2 of a FUSE mount).
pub fn lazily(mnt: &Path) -> Result<(), String> {
    let c = CString::new(mnt.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    for tool in ["fusermount3", "fusermount"] {
        if let Ok(s) = std::process::Command::new(tool)
            .arg("-u")
            .arg("-z")
            .arg(mnt)
            .status()
        {
            if s.success() {
                return Ok(());
            }
        }
    }
    Err(format!(
        "umount2(MNT_DETACH): {err}; fusermount3 -u -z failed too"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_octal_escapes_decode() {
        assert_eq!(unescape(r"/tmp/a\040b\134c"), b"/tmp/a b\\c");
        assert_eq!(unescape(r"/plain"), b"/plain");
        assert_eq!(unescape(r"/end\04"), b"/end\\04");
    }
}
