//! Command line and `-o` mount options, in the style of sshfs: `zkfs SOURCE
//! MOUNTPOINT [-o opt,opt] [-f]`, where SOURCE is a ZooKeeper connect string with
//! an optional chroot. mount(8) and /etc/fstab call us the same way (type
//! `fuse.zkfs`), adding options such as `rw`, `dev`, `suid` that we accept and
//! ignore when they mean nothing here.

#[derive(Debug, Clone)]
pub struct Options {
    pub hosts: Vec<String>,
    pub chroot: String,
    pub source: String,
    pub mountpoint: String,
    pub foreground: bool,
    pub timeout_ms: i32,
    /// user:password pairs for digest auth.
    pub digest: Vec<(String, String)>,
    pub read_only: bool,
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
    pub sync_read: bool,
    pub max_frame: usize,
    pub allow_other: bool,
    pub debug: bool,
}

pub const USAGE: &str =
    "usage: zkfs HOST:PORT[,HOST:PORT...][/CHROOT] MOUNTPOINT [-f] [-o OPTION[,OPTION...]]
       zkfs wait [-t SECONDS] PATH
       zkfs create PATH [DATA]
options (see zkfs(8)):
  timeout=MS        session timeout asked of the server (default 10000)
  digest=USER:PASS  authenticate with the digest scheme (repeatable)
  ro                read-only mount
  uid=N gid=N       owner shown for every file (default: the mounting user)
  umask=OCTAL       bits removed from the ACL-derived permissions (default 022)
  sync_read         sync with the leader before each open for reading
  maxbuffer=BYTES   the servers' jute.maxbuffer (default 1048575)
  allow_other       let other users use the mount
  debug             log every request (with -f)";

fn split_source(src: &str) -> Result<(Vec<String>, String), String> {
    let (hosts, chroot) = match src.find('/') {
        Some(i) => (&src[..i], &src[i..]),
        None => (src, ""),
    };
    let chroot = chroot.trim_end_matches('/').to_string();
    if chroot.contains("//") {
        return Err(format!("bad chroot in {src:?}"));
    }
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.contains(':') {
                h.to_string()
            } else {
                format!("{h}:2181")
            }
        })
        .collect();
    if hosts.is_empty() {
        return Err(format!("no server in {src:?}"));
    }
    Ok((hosts, chroot))
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut pos = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut foreground = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        match a.as_str() {
            "-f" => foreground = true,
            "-d" => {
                foreground = true;
                opts.push("debug".into());
            }
            "-o" => {
                i += 1;
                let v = args.get(i).ok_or("-o needs a value")?;
                opts.extend(v.split(',').map(String::from));
            }
            s if s.starts_with("-o") => opts.extend(s[2..].split(',').map(String::from)),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown flag {s}")),
            _ => pos.push(a.clone()),
        }
        i += 1;
    }
    if pos.len() != 2 {
        return Err("need a connect string and a mount point".into());
    }
    let (hosts, chroot) = split_source(&pos[0])?;
    let mut o = Options {
        hosts,
        chroot,
        source: pos[0].clone(),
        mountpoint: pos[1].clone(),
        foreground,
        timeout_ms: 10_000,
        digest: Vec::new(),
        read_only: false,
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        umask: 0o022,
        sync_read: false,
        max_frame: zk_proto::frame::FRAME_BYTES_MAX_DEFAULT,
        allow_other: false,
        debug: false,
    };
    for opt in opts.iter().filter(|s| !s.is_empty()) {
        let (k, v) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        let num = |v: Option<&str>| -> Result<u64, String> {
            v.and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("option {k} needs a number"))
        };
        match k {
            "timeout" => o.timeout_ms = num(v)?.clamp(1, i32::MAX as u64) as i32,
            "digest" => {
                let (u, p) = v
                    .and_then(|s| s.split_once(':'))
                    .ok_or("digest=USER:PASSWORD")?;
                o.digest.push((u.into(), p.into()));
            }
            "ro" => o.read_only = true,
            "rw" => o.read_only = false,
            "uid" => o.uid = num(v)? as u32,
            "gid" => o.gid = num(v)? as u32,
            "umask" => {
                o.umask = v
                    .and_then(|s| u32::from_str_radix(s, 8).ok())
                    .filter(|m| *m <= 0o777)
                    .ok_or("umask needs an octal number")?
            }
            "sync_read" => o.sync_read = true,
            "maxbuffer" => o.max_frame = num(v)? as usize,
            "allow_other" => o.allow_other = true,
            "debug" => o.debug = true,
            // Passed by mount(8)/fstab; nothing to do for a network tree.
            "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime"
            | "relatime" | "auto" | "noauto" | "user" | "nouser" | "users" | "_netdev"
            | "nofail" | "defaults" | "async" => {}
            _ => return Err(format!("unknown option {opt:?} (see zkfs(8))")),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Options, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn sshfs_style_arguments() {
        let o = p("a:1,b/app/x /mnt -f -o timeout=4000,ro -o digest=u:p,umask=077").unwrap();
        assert_eq!(o.hosts, vec!["a:1", "b:2181"]);
        assert_eq!(o.chroot, "/app/x");
        assert!(o.foreground && o.read_only);
        assert_eq!(o.timeout_ms, 4000);
        assert_eq!(o.digest, vec![("u".into(), "p".into())]);
        assert_eq!(o.umask, 0o077);
        // mount.fuse3 puts -o before the positional arguments.
        let o = p("-o rw,nodev 127.0.0.1:2181/ /mnt").unwrap();
        assert_eq!(o.chroot, "");
    }

    #[test]
    fn bad_options_are_named() {
        assert!(p("h /m -o bogus").unwrap_err().contains("bogus"));
        assert!(p("h /m -o timeout=x").unwrap_err().contains("timeout"));
        assert!(p("h").is_err());
        assert!(p("h /m -o umask=999").is_err());
    }
}
