//! The FUSE filesystem: kernel requests in, ZooKeeper calls out.
//!
//! Conventions (all in zkfs(8)):
//! - A znode is a directory if it is a container or has ever had a child
//!   (cversion > 0), else a file (`Kind::of`). A directory's own data is the
//!   file `.data` inside it.
//! - Files are read whole at open and written whole at close/flush/fsync: one
//!   create or one setData carrying the full content, so nobody sees a partial
//!   value. Reads and writes bypass the page cache (direct I/O) so a later
//!   `cat` never shows stale bytes.
//! - `NAME@mod,...` asks for a create mode; `NAME@version=N` makes writes
//!   conditional. rename is one multi.
//! - Requests from our own reflector thread (see `events`) are answered from
//!   state, never sent to the server.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::*;
use libc::c_int;
use zk_proto::codes::EventType;
use zk_proto::records::{
    Acl, CheckVersionRequest, CreateRequest, DeleteRequest, MultiOp, SetDataRequest, Stat,
};
use zk_proto::ErrorCode;

use crate::errno::errno;
use crate::names::{self, ino_of, join, parse_mods, Mods, DATA_FILE, LOCK_PREFIX, MKDIR_MARK};
use crate::shared::{Entry, Kind, Reflect, Shared};
use crate::xattr;

const TTL: Duration = Duration::from_secs(1);
const NO_TTL: Duration = Duration::ZERO;

/// A create that happens when the file is first flushed.
#[derive(Debug, Clone)]
struct PendingCreate {
    path: String,
    flags: i32,
    ttl: i64,
    exclusive: bool,
}

struct Handle {
    ino: u64,
    path: String,
    buf: Vec<u8>,
    dirty: bool,
    append: bool,
    /// Version the next setData must match (-1: any).
    version: i32,
    create: Option<PendingCreate>,
    /// `@handle`: the znode lives exactly as long as this handle.
    handle_scoped: bool,
    /// Opened by the reflector: every operation is a no-op.
    reflector: bool,
    writable: bool,
    /// Content was written (or truncated) through this handle. A flush before
    /// that is the shell closing a dup'ed descriptor (`echo x > f` closes one
    /// before writing): committing then would show others an empty value.
    touched: bool,
    /// A write was refused (EFBIG): the content is incomplete and must never
    /// reach the server; the old value stays.
    failed: bool,
}

impl Handle {
    /// A handle on `path` with nothing read, written or pending yet.
    fn new(ino: u64, path: String) -> Handle {
        Handle {
            ino,
            path,
            buf: Vec::new(),
            dirty: false,
            append: false,
            version: -1,
            create: None,
            handle_scoped: false,
            reflector: false,
            writable: true,
            touched: false,
            failed: false,
        }
    }
}

/// One entry of an open directory, with what READDIRPLUS hands the kernel
/// besides the name: the attributes, and the table entry for the lookup
/// that the kernel counts for every entry it is given.
struct Listed {
    name: String,
    attr: FileAttr,
    ttl: Duration,
    /// None for "." and "..": the kernel takes no lookup for them.
    entry: Option<Entry>,
}

pub struct ZkFs {
    sh: Arc<Shared>,
    handles: HashMap<u64, Handle>,
    dirs: HashMap<u64, Vec<Listed>>,
    next_fh: u64,
    /// Files created through this mount and not yet flushed: path → ino.
    local: HashMap<String, u64>,
    magic_seq: u64,
}

fn ev(t: EventType) -> i32 {
    t as i32
}

impl ZkFs {
    pub fn new(sh: Arc<Shared>) -> ZkFs {
        ZkFs {
            sh,
            handles: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            local: HashMap::new(),
            magic_seq: 0,
        }
    }

    fn fh(&mut self) -> u64 {
        self.next_fh += 1;
        self.next_fh
    }

    fn path_of(&self, ino: u64) -> Result<Entry, c_int> {
        if ino == 1 {
            return Ok(Entry {
                path: "/".into(),
                kind: Kind::Dir,
                data_file: false,
                version: None,
                lookups: 1,
            });
        }
        self.sh.entry(ino).ok_or(libc::ESTALE)
    }

    fn dir_path(&self, parent: u64) -> Result<String, c_int> {
        let e = self.path_of(parent)?;
        if e.data_file || e.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok(e.path)
    }

    fn name_str(name: &OsStr) -> Result<&str, c_int> {
        name.to_str().ok_or(libc::EINVAL)
    }

    /// Attributes of a file created through this mount and not yet stored:
    /// its size is what its open handle holds so far.
    fn local_attr(&self, ino: u64) -> FileAttr {
        let size = self
            .handles
            .values()
            .find(|h| h.ino == ino)
            .map_or(0, |h| h.buf.len());
        self.sh.local_attr(ino, size as u64)
    }

    /// An open directory's entries from `offset` on, each with the offset
    /// the kernel passes back to continue after it.
    fn listed_from(
        &self,
        fh: u64,
        offset: i64,
    ) -> Result<impl Iterator<Item = (i64, &Listed)>, c_int> {
        let list = self.dirs.get(&fh).ok_or(libc::EBADF)?;
        let from = offset.max(0) as usize;
        Ok(list
            .iter()
            .enumerate()
            .skip(from)
            .map(|(i, l)| ((i + 1) as i64, l)))
    }

    /// Stat and permission bits of a znode in one round trip (getACL answers both).
    fn stat_acl(&self, path: &str) -> Result<(Stat, u16, Kind), c_int> {
        let (acl, st) = match self.sh.take_listed(path) {
            Some(x) => x,
            None => self.sh.zk.get_acl(path).map_err(errno)?,
        };
        let kind = self.sh.kind(path, &st);
        Ok((st, self.sh.perm(kind, &acl), kind))
    }

    fn read_only(&self) -> Result<(), c_int> {
        if self.sh.opts.read_only {
            Err(libc::EROFS)
        } else {
            Ok(())
        }
    }

    fn lookup_inner(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
    ) -> Result<(FileAttr, u64, Duration), c_int> {
        let name = Self::name_str(name)?;
        let dir = self.dir_path(parent)?;
        if name == MKDIR_MARK {
            return Err(libc::ENOENT);
        }
        if name == DATA_FILE {
            let (st, perm, kind) = self.stat_acl(&dir)?;
            if kind != Kind::Dir {
                return Err(libc::ENOENT);
            }
            let ino = ino_of(&format!("{dir}\0data"));
            let attr = self.sh.attr(ino, Kind::File, &st, perm & !0o111, None);
            self.sh.table.lock().unwrap().remember(
                ino,
                Entry {
                    data_file: true,
                    ..Entry::new(dir, Kind::File)
                },
            );
            return Ok((attr, 0, TTL));
        }
        let path = join(&dir, name);
        if self.sh.is_reflector(req.pid()) {
            match self.sh.reflecting.lock().unwrap().get(&path) {
                Some(Reflect::Create) => return Err(libc::ENOENT),
                Some(Reflect::Delete(ino, kind)) => {
                    let st = Stat::default();
                    let attr = self.sh.attr(*ino, *kind, &st, 0o644, Some(0));
                    return Ok((attr, 0, NO_TTL));
                }
                None => {}
            }
        }
        if let Some((base, m)) = parse_mods(name) {
            if m.creates() {
                // Every open of a create-mode name makes a new znode.
                return Err(libc::ENOENT);
            }
            let base_path = join(&dir, base);
            let (st, perm, kind) = self.stat_acl(&base_path)?;
            if kind == Kind::Dir {
                return Err(libc::EISDIR);
            }
            let ino = ino_of(&format!("{path}\0magic"));
            let attr = self.sh.attr(ino, kind, &st, perm, None);
            self.sh.table.lock().unwrap().remember(
                ino,
                Entry {
                    version: m.version,
                    ..Entry::new(base_path, kind)
                },
            );
            return Ok((attr, 0, NO_TTL));
        }
        if let Some(&ino) = self.local.get(&path) {
            self.sh
                .table
                .lock()
                .unwrap()
                .remember(ino, Entry::new(path, Kind::File));
            return Ok((self.local_attr(ino), 0, NO_TTL));
        }
        let (st, perm, kind) = self.stat_acl(&path)?;
        let ino = ino_of(&path);
        let attr = self.sh.attr(ino, kind, &st, perm, None);
        self.sh
            .table
            .lock()
            .unwrap()
            .remember(ino, Entry::new(path, kind));
        Ok((attr, 0, TTL))
    }

    fn getattr_inner(&self, ino: u64, fh: Option<u64>) -> Result<FileAttr, c_int> {
        let e = self.path_of(ino)?;
        if let Some(h) = fh.and_then(|f| self.handles.get(&f)) {
            if h.create.is_some() {
                return Ok(self.sh.local_attr(ino, h.buf.len() as u64));
            }
        }
        if self.local.get(&e.path) == Some(&ino) {
            return Ok(self.local_attr(ino));
        }
        let (st, perm, kind) = self.stat_acl(&e.path)?;
        if e.data_file {
            return Ok(self.sh.attr(ino, Kind::File, &st, perm & !0o111, None));
        }
        Ok(self.sh.attr(ino, kind, &st, perm, None))
    }

    /// Writes a handle's buffer to the server: the one create or setData.
    fn commit(&mut self, fh: u64) -> Result<(), c_int> {
        let sh = self.sh.clone();
        let Some(h) = self.handles.get_mut(&fh) else {
            return Ok(());
        };
        if h.reflector || !h.dirty {
            return Ok(());
        }
        if h.failed {
            return Err(libc::EFBIG);
        }
        if h.buf.len() > sh.max_data(&h.path) {
            return Err(libc::EFBIG);
        }
        if let Some(pc) = h.create.clone() {
            let seq = pc.flags == 2 || pc.flags == 3 || pc.flags == 6;
            if seq {
                sh.expect_echo_prefix(ev(EventType::NodeCreated), &pc.path);
            } else {
                sh.expect_echo(ev(EventType::NodeCreated), &pc.path);
            }
            match sh
                .zk
                .create(&pc.path, &h.buf, &Acl::open_unsafe(), pc.flags, pc.ttl)
            {
                Ok((created, st)) => {
                    h.path = created.clone();
                    h.version = st.version;
                    h.create = None;
                    h.dirty = false;
                    let ino = h.ino;
                    self.local.retain(|_, v| *v != ino);
                    let mut t = sh.table.lock().unwrap();
                    if let Some(e) = t.by_ino.get_mut(&ino) {
                        e.path = created.clone();
                        e.version = None;
                    }
                    t.by_path.insert(created, ino);
                    Ok(())
                }
                Err(ErrorCode::NODE_EXISTS) if !pc.exclusive && pc.flags == 0 => {
                    sh.unexpect_echo(ev(EventType::NodeCreated), &pc.path);
                    // Someone created it between our lookup and now: as on a
                    // local filesystem, the last writer's content wins.
                    h.create = None;
                    let ino = h.ino;
                    self.local.retain(|_, v| *v != ino);
                    self.commit(fh)
                }
                Err(e) => {
                    if !seq {
                        sh.unexpect_echo(ev(EventType::NodeCreated), &pc.path);
                    }
                    Err(errno(e))
                }
            }
        } else {
            sh.expect_echo(ev(EventType::NodeDataChanged), &h.path);
            match sh.zk.set_data(&h.path, &h.buf, h.version) {
                Ok(st) => {
                    if h.version >= 0 {
                        h.version = st.version;
                    }
                    h.dirty = false;
                    Ok(())
                }
                Err(e) => {
                    sh.unexpect_echo(ev(EventType::NodeDataChanged), &h.path);
                    Err(errno(e))
                }
            }
        }
    }

    fn open_handle(
        &mut self,
        ino: u64,
        e: &Entry,
        flags: i32,
        reflector: bool,
    ) -> Result<u64, c_int> {
        let acc = flags & libc::O_ACCMODE;
        let writable = acc != libc::O_RDONLY;
        let fh = self.fh();
        let mut h = Handle {
            ino,
            path: e.path.clone(),
            buf: Vec::new(),
            dirty: false,
            append: flags & libc::O_APPEND != 0,
            version: e.version.unwrap_or(-1),
            create: None,
            handle_scoped: false,
            reflector,
            writable,
            touched: false,
            failed: false,
        };
        if !reflector {
            if writable {
                self.read_only()?;
            }
            if self.local.get(&e.path) == Some(&ino) {
                h.create = Some(PendingCreate {
                    path: e.path.clone(),
                    flags: 0,
                    ttl: 0,
                    exclusive: false,
                });
                h.dirty = true;
            } else if writable && flags & libc::O_TRUNC != 0 {
                // Fail at open, where a shell reports it, what would fail at
                // close, where `echo x > f` cannot: no write right, or a
                // conditional write whose version has already moved on.
                let (acl, st) = self.sh.zk.get_acl(&e.path).map_err(errno)?;
                if self.sh.surely_denied(&acl, zk_proto::codes::perms::WRITE) {
                    return Err(libc::EACCES);
                }
                if let Some(v) = e.version {
                    if v != st.version {
                        return Err(libc::ESTALE);
                    }
                }
                h.dirty = true;
            } else {
                if self.sh.opts.sync_read {
                    self.sh.zk.sync(&e.path).map_err(errno)?;
                }
                if writable {
                    let (acl, _) = self.sh.zk.get_acl(&e.path).map_err(errno)?;
                    if self.sh.surely_denied(&acl, zk_proto::codes::perms::WRITE) {
                        return Err(libc::EACCES);
                    }
                }
                let (data, st) = self.sh.zk.get_data(&e.path).map_err(errno)?;
                if let Some(v) = e.version.filter(|_| writable) {
                    if v != st.version {
                        return Err(libc::ESTALE);
                    }
                }
                if !e.data_file && self.sh.kind(&e.path, &st) == Kind::Dir {
                    return Err(libc::EISDIR);
                }
                h.buf = data;
                if e.version.is_some() {
                    // Keep the caller's expected version: the write must fail if
                    // the znode moved on since they decided to write.
                } else {
                    h.version = -1;
                }
            }
        }
        self.handles.insert(fh, h);
        Ok(fh)
    }

    fn create_inner(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        flags: i32,
    ) -> Result<(FileAttr, u64, u64, Duration), c_int> {
        let name = Self::name_str(name)?;
        let dir = self.dir_path(parent)?;
        let path = join(&dir, name);
        if self.sh.is_reflector(req.pid()) {
            let (st, perm, kind) = self.stat_acl(&path)?;
            let ino = ino_of(&path);
            self.sh
                .table
                .lock()
                .unwrap()
                .remember(ino, Entry::new(path.clone(), kind));
            let fh = self.fh();
            self.handles.insert(
                fh,
                Handle {
                    reflector: true,
                    ..Handle::new(ino, path)
                },
            );
            return Ok((self.sh.attr(ino, kind, &st, perm, None), 0, fh, TTL));
        }
        self.read_only()?;
        if name == DATA_FILE || name == MKDIR_MARK {
            return Err(libc::EPERM);
        }
        let (base, mods) = parse_mods(name)
            .map(|(b, m)| (b.to_string(), m))
            .unwrap_or((name.to_string(), Mods::default()));
        let target = join(&dir, &base);
        let fh = self.fh();
        if mods.handle {
            // Created now, with no data yet: the znode marks "this handle is open".
            let flags_z = if mods.sequential { 3 } else { 1 };
            if mods.sequential {
                self.sh
                    .expect_echo_prefix(ev(EventType::NodeCreated), &target);
            } else {
                self.sh.expect_echo(ev(EventType::NodeCreated), &target);
            }
            let (created, st) = self
                .sh
                .zk
                .create(&target, b"", &Acl::open_unsafe(), flags_z, 0)
                .map_err(errno)?;
            self.magic_seq += 1;
            let ino = ino_of(&format!("{created}\0handle{}", self.magic_seq));
            self.sh
                .table
                .lock()
                .unwrap()
                .remember(ino, Entry::new(created.clone(), Kind::File));
            self.handles.insert(
                fh,
                Handle {
                    handle_scoped: true,
                    ..Handle::new(ino, created)
                },
            );
            let attr = self.sh.attr(
                ino,
                Kind::File,
                &st,
                0o644 & !(self.sh.opts.umask as u16),
                None,
            );
            return Ok((attr, 0, fh, NO_TTL));
        }
        let ino = if mods.creates() {
            self.magic_seq += 1;
            ino_of(&format!("{path}\0create{}", self.magic_seq))
        } else {
            ino_of(&target)
        };
        if !mods.creates() {
            self.local.insert(target.clone(), ino);
        }
        self.sh
            .table
            .lock()
            .unwrap()
            .remember(ino, Entry::new(target.clone(), Kind::File));
        self.handles.insert(
            fh,
            Handle {
                dirty: true,
                create: Some(PendingCreate {
                    path: target.clone(),
                    flags: mods.flags(),
                    ttl: mods.ttl_ms,
                    exclusive: flags & libc::O_EXCL != 0,
                }),
                ..Handle::new(ino, target)
            },
        );
        let ttl = if mods.creates() { NO_TTL } else { TTL };
        Ok((self.sh.local_attr(ino, 0), 0, fh, ttl))
    }

    fn mkdir_inner(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
    ) -> Result<(FileAttr, u64), c_int> {
        let name = Self::name_str(name)?;
        let dir = self.dir_path(parent)?;
        let path = join(&dir, name);
        if !self.sh.is_reflector(req.pid()) {
            self.read_only()?;
            if name == DATA_FILE || name == MKDIR_MARK {
                return Err(libc::EPERM);
            }
            let (base, mods) = parse_mods(name)
                .map(|(b, m)| (b.to_string(), m))
                .unwrap_or((name.to_string(), Mods::default()));
            if mods.ephemeral || mods.handle || mods.version.is_some() {
                // Ephemerals cannot have children, so they are never directories.
                return Err(libc::EINVAL);
            }
            let target = join(&dir, &base);
            let flags = mods.flags();
            let created = if mods.sequential {
                self.sh
                    .expect_echo_prefix(ev(EventType::NodeCreated), &target);
                let (created, _) = self
                    .sh
                    .zk
                    .create(&target, b"", &Acl::open_unsafe(), flags, mods.ttl_ms)
                    .map_err(errno)?;
                self.mark_dir(&created, vec![])?;
                created
            } else if mods.container {
                self.sh.expect_echo(ev(EventType::NodeCreated), &target);
                let (_, st) = self
                    .sh
                    .zk
                    .create(&target, b"", &Acl::open_unsafe(), flags, 0)
                    .map_err(|e| {
                        self.sh.unexpect_echo(ev(EventType::NodeCreated), &target);
                        errno(e)
                    })?;
                self.sh.made_dirs.lock().unwrap().insert(st.czxid);
                target
            } else {
                self.sh.expect_echo(ev(EventType::NodeCreated), &target);
                let first = if mods.ttl_ms > 0 {
                    MultiOp::CreateTtl(zk_proto::records::CreateTtlRequest {
                        path: target.clone(),
                        data: vec![],
                        acl: Acl::open_unsafe(),
                        flags,
                        ttl: mods.ttl_ms,
                    })
                } else {
                    MultiOp::Create {
                        op: 1,
                        req: CreateRequest {
                            path: target.clone(),
                            data: vec![],
                            acl: Acl::open_unsafe(),
                            flags,
                        },
                    }
                };
                if let Err(e) = self.mark_dir(&target, vec![first]) {
                    self.sh.unexpect_echo(ev(EventType::NodeCreated), &target);
                    return Err(e);
                }
                target
            };
            let _ = created;
        }
        let (st, perm, kind) = self.stat_acl(&path).or_else(|e| {
            // A sequential or suffixed mkdir: the kernel's name is not the znode's.
            if parse_mods(name).is_some() {
                Ok((
                    Stat {
                        cversion: 1,
                        ..Default::default()
                    },
                    0o755,
                    Kind::Dir,
                ))
            } else {
                Err(e)
            }
        })?;
        let ino = ino_of(&path);
        self.sh
            .table
            .lock()
            .unwrap()
            .remember(ino, Entry::new(path, kind));
        let ttl = if parse_mods(name).is_some() {
            NO_TTL
        } else {
            TTL
        };
        let mut attr = self.sh.attr(ino, kind, &st, perm, None);
        attr.kind = FileType::Directory;
        let _ = ttl;
        Ok((attr, 0))
    }

    /// Runs `ops` plus the directory mark (see `mark_ops`) in one multi.
    fn mark_dir(&self, path: &str, mut ops: Vec<MultiOp>) -> Result<(), c_int> {
        ops.extend(mark_ops(path));
        self.sh.zk.multi(ops).map(|_| ()).map_err(errno)
    }

    fn remove_inner(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        dir_expected: bool,
    ) -> Result<(), c_int> {
        let name = Self::name_str(name)?;
        let dir = self.dir_path(parent)?;
        let path = join(&dir, name);
        if self.sh.is_reflector(req.pid()) {
            return Ok(());
        }
        self.read_only()?;
        if name == DATA_FILE {
            // Removing a directory's data file empties the data.
            self.sh.expect_echo(ev(EventType::NodeDataChanged), &dir);
            return self
                .sh
                .zk
                .set_data(&dir, b"", -1)
                .map(|_| ())
                .map_err(errno);
        }
        if self.local.remove(&path).is_some() {
            return Ok(());
        }
        if dir_expected {
            // rmdir: a directory whose only content is its data is empty.
            let st = self.sh.zk.exists(&path).map_err(errno)?;
            if st.num_children > 0 {
                return Err(libc::ENOTEMPTY);
            }
        }
        self.sh.expect_echo(ev(EventType::NodeDeleted), &path);
        self.sh.zk.delete(&path, -1).map_err(|e| {
            self.sh.unexpect_echo(ev(EventType::NodeDeleted), &path);
            errno(e)
        })
    }

    fn rename_inner(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), c_int> {
        self.read_only()?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(libc::EINVAL);
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let (name, newname) = (Self::name_str(name)?, Self::name_str(newname)?);
        let (sdir, ddir) = (self.dir_path(parent)?, self.dir_path(newparent)?);
        let src_data = name == DATA_FILE;
        let dst_data = newname == DATA_FILE;
        let src = if src_data {
            sdir.clone()
        } else {
            join(&sdir, name)
        };
        let dst = if dst_data {
            ddir.clone()
        } else {
            join(&ddir, newname)
        };
        if !src_data && self.local.contains_key(&src) {
            // Not yet on the server: just move the pending create.
            let ino = self.local.remove(&src).unwrap();
            self.local.insert(dst.clone(), ino);
            for h in self.handles.values_mut().filter(|h| h.ino == ino) {
                h.path = dst.clone();
                if let Some(c) = h.create.as_mut() {
                    c.path = dst.clone();
                }
            }
            return Ok(());
        }
        let (data, sst) = self.sh.zk.get_data(&src).map_err(errno)?;
        let skind = if src_data {
            Kind::File
        } else {
            self.sh.kind(&src, &sst)
        };
        if skind == Kind::Dir && sst.num_children > 0 {
            // Not one multi's worth: mv(1) falls back to copy and remove.
            return Err(libc::EXDEV);
        }
        let mut ops = Vec::new();
        let mut echoes = Vec::new();
        if dst_data {
            ops.push(MultiOp::SetData(SetDataRequest {
                path: dst.clone(),
                data: data.clone(),
                version: -1,
            }));
            echoes.push((ev(EventType::NodeDataChanged), dst.clone()));
        } else {
            match self.sh.zk.exists(&dst) {
                Ok(dst_st) => {
                    if noreplace {
                        return Err(libc::EEXIST);
                    }
                    let dkind = self.sh.kind(&dst, &dst_st);
                    if dkind == Kind::Dir && skind == Kind::File {
                        return Err(libc::EISDIR);
                    }
                    if dkind == Kind::File && skind == Kind::Dir {
                        return Err(libc::ENOTDIR);
                    }
                    if dst_st.num_children > 0 {
                        return Err(libc::ENOTEMPTY);
                    }
                    ops.push(MultiOp::Delete(DeleteRequest {
                        path: dst.clone(),
                        version: dst_st.version,
                    }));
                }
                Err(ErrorCode::NO_NODE) => {}
                Err(e) => return Err(errno(e)),
            }
            let (acl, _) = self.sh.zk.get_acl(&src).map_err(errno)?;
            let mine = sst.ephemeral_owner != 0 && sst.ephemeral_owner == self.sh.zk.session_id();
            let cflags = if mine { 1 } else { 0 };
            ops.push(MultiOp::Create {
                op: 1,
                req: CreateRequest {
                    path: dst.clone(),
                    data: data.clone(),
                    acl,
                    flags: cflags,
                },
            });
            if skind == Kind::Dir {
                ops.extend(mark_ops(&dst));
            }
            echoes.push((ev(EventType::NodeCreated), dst.clone()));
        }
        if src_data {
            ops.push(MultiOp::SetData(SetDataRequest {
                path: src.clone(),
                data: vec![],
                version: sst.version,
            }));
            echoes.push((ev(EventType::NodeDataChanged), src.clone()));
        } else {
            ops.push(MultiOp::Delete(DeleteRequest {
                path: src.clone(),
                version: sst.version,
            }));
            echoes.push((ev(EventType::NodeDeleted), src.clone()));
        }
        if src_data && dst_data {
            ops.insert(
                0,
                MultiOp::Check(CheckVersionRequest {
                    path: src.clone(),
                    version: sst.version,
                }),
            );
        }
        for (t, p) in &echoes {
            self.sh.expect_echo(*t, p);
        }
        if let Err(e) = self.sh.zk.multi(ops) {
            for (t, p) in &echoes {
                self.sh.unexpect_echo(*t, p);
            }
            return Err(errno(e));
        }
        // The kernel moves its dentry; the inode it keeps now names `dst`.
        let mut t = self.sh.table.lock().unwrap();
        let sino = ino_of(&src);
        if let Some(e) = t.by_ino.get_mut(&sino) {
            if !src_data && !dst_data {
                e.path = dst.clone();
                t.by_path.remove(&src);
                t.by_path.insert(dst, sino);
            }
        }
        Ok(())
    }

    /// Lists a directory once, at opendir, with every child's attributes:
    /// one getChildren, then one pipelined getACL per child (its stat gives
    /// the type and its ACL the mode). `ls -l` then finds everything in the
    /// kernel's cache instead of asking for each name again.
    fn readdir_list(&mut self, ino: u64) -> Result<Vec<Listed>, c_int> {
        let dir = self.dir_path(ino)?;
        let (children, st) = self.sh.zk.children(&dir).map_err(errno)?;
        // "." and ".." carry no attributes the kernel uses; their type and
        // inode number are what readdir shows.
        let dot = |name: &str, ino: u64| Listed {
            name: name.to_string(),
            attr: self.sh.attr(ino, Kind::Dir, &st, 0, None),
            ttl: NO_TTL,
            entry: None,
        };
        let mut out = vec![dot(".", ino), dot("..", 1)];
        if st.data_length > 0 {
            let (dst, perm, _) = self.stat_acl(&dir)?;
            let data_ino = ino_of(&format!("{dir}\0data"));
            out.push(Listed {
                name: DATA_FILE.to_string(),
                attr: self
                    .sh
                    .attr(data_ino, Kind::File, &dst, perm & !0o111, None),
                ttl: TTL,
                entry: Some(Entry {
                    data_file: true,
                    ..Entry::new(dir.clone(), Kind::File)
                }),
            });
        }
        // The stat and ACL are also kept briefly for a lookup that still
        // comes: a plain READDIR, or an entry the kernel already dropped.
        let names: Vec<String> = children.into_iter().filter(|c| c != MKDIR_MARK).collect();
        let tickets: Vec<_> = names
            .iter()
            .map(|c| self.sh.zk.get_acl_ticket(&join(&dir, c)))
            .collect();
        for (name, t) in names.into_iter().zip(tickets) {
            let p = join(&dir, &name);
            match crate::client::Client::acl_of(self.sh.zk.wait(t)) {
                Ok((acl, cst)) => {
                    let kind = self.sh.kind(&p, &cst);
                    let attr = self
                        .sh
                        .attr(ino_of(&p), kind, &cst, self.sh.perm(kind, &acl), None);
                    // A child named like `base@mods` means something else on
                    // lookup: the kernel must ask rather than trust this.
                    let ttl = if parse_mods(&name).is_some() {
                        NO_TTL
                    } else {
                        TTL
                    };
                    out.push(Listed {
                        name,
                        attr,
                        ttl,
                        entry: Some(Entry::new(p.clone(), kind)),
                    });
                    self.sh.remember_listed(p, acl, cst);
                }
                Err(ErrorCode::NO_NODE) => {}
                Err(e) => return Err(errno(e)),
            }
        }
        for (p, &lino) in &self.local {
            let (pd, base) = names::split(p);
            if pd == dir && !out.iter().any(|l| l.name == base) {
                out.push(Listed {
                    name: base.to_string(),
                    attr: self.local_attr(lino),
                    ttl: NO_TTL,
                    entry: Some(Entry::new(p.clone(), Kind::File)),
                });
            }
        }
        Ok(out)
    }
}

impl Filesystem for ZkFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), c_int> {
        let _ = config.add_capabilities(
            fuser::consts::FUSE_FLOCK_LOCKS
                | fuser::consts::FUSE_POSIX_LOCKS
                | fuser::consts::FUSE_ATOMIC_O_TRUNC
                // Always READDIRPLUS, not the kernel's adaptive choice: that
                // uses it for a directory's first buffer only, and `ls`
                // reads the whole directory before it stats anything.
                | fuser::consts::FUSE_DO_READDIRPLUS,
        );
        Ok(())
    }

    fn lookup(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_inner(req, parent, name) {
            Ok((attr, generation, ttl)) => reply.entry(&ttl, &attr, generation),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        if self.handles.values().any(|h| h.ino == ino) {
            return;
        }
        self.sh.table.lock().unwrap().forget(ino, nlookup);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        match self.getattr_inner(ino, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<u64>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // Mode, owner and times are not stored in ZooKeeper: accepted and
        // ignored, so cp -p, tar and rsync -a do not fail. Size is content.
        if let (Some(size), false) = (size, self.sh.is_reflector(req.pid())) {
            if let Err(e) = self.read_only() {
                return reply.error(e);
            }
            let handle = fh.filter(|f| self.handles.contains_key(f)).or_else(|| {
                self.handles
                    .iter()
                    .find(|(_, h)| h.ino == ino && h.writable && !h.reflector)
                    .map(|(f, _)| *f)
            });
            if let Some(f) = handle {
                let h = self.handles.get_mut(&f).unwrap();
                if size as usize > self.sh.max_data(&h.path) {
                    return reply.error(libc::EFBIG);
                }
                h.buf.resize(size as usize, 0);
                h.dirty = true;
                h.touched = true;
            } else {
                let Ok(e) = self.path_of(ino) else {
                    return reply.error(libc::ESTALE);
                };
                if size as usize > self.sh.max_data(&e.path) {
                    return reply.error(libc::EFBIG);
                }
                let r = self.sh.zk.get_data(&e.path).and_then(|(mut d, st)| {
                    d.resize(size as usize, 0);
                    self.sh.expect_echo(ev(EventType::NodeDataChanged), &e.path);
                    self.sh.zk.set_data(&e.path, &d, st.version)
                });
                if let Err(err) = r {
                    self.sh
                        .unexpect_echo(ev(EventType::NodeDataChanged), &e.path);
                    return reply.error(errno(err));
                }
            }
        }
        match self.getattr_inner(ino, fh) {
            Ok(mut a) => {
                if let Some(h) = fh.and_then(|f| self.handles.get(&f)) {
                    if !h.reflector {
                        a.size = h.buf.len() as u64;
                    }
                }
                reply.attr(&TTL, &a)
            }
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(libc::EPERM);
        }
        if self.sh.is_reflector(req.pid()) {
            return match self.create_inner(req, parent, name, 0) {
                Ok((attr, g, fh, ttl)) => {
                    self.handles.remove(&fh);
                    reply.entry(&ttl, &attr, g)
                }
                Err(e) => reply.error(e),
            };
        }
        // mknod of a regular file: an empty znode, created now.
        let r = (|| {
            self.read_only()?;
            let name_s = Self::name_str(name)?;
            let path = join(&self.dir_path(parent)?, name_s);
            self.sh.expect_echo(ev(EventType::NodeCreated), &path);
            self.sh
                .zk
                .create(&path, b"", &Acl::open_unsafe(), 0, 0)
                .map_err(|e| {
                    self.sh.unexpect_echo(ev(EventType::NodeCreated), &path);
                    errno(e)
                })?;
            self.lookup_inner(req, parent, name)
        })();
        match r {
            Ok((attr, g, ttl)) => reply.entry(&ttl, &attr, g),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.mkdir_inner(req, parent, name) {
            Ok((attr, g)) => {
                let ttl = if parse_mods(&name.to_string_lossy()).is_some() {
                    NO_TTL
                } else {
                    TTL
                };
                reply.entry(&ttl, &attr, g)
            }
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, self.remove_inner(req, parent, name, false))
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, self.remove_inner(req, parent, name, true))
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        answer(
            reply,
            self.rename_inner(parent, name, newparent, newname, flags),
        )
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let reflector = self.sh.is_reflector(req.pid());
        let r = self
            .path_of(ino)
            .and_then(|e| self.open_handle(ino, &e, flags, reflector));
        match r {
            Ok(fh) => reply.opened(fh, FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(h) = self.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let start = (offset.max(0) as usize).min(h.buf.len());
        let end = (start + size as usize).min(h.buf.len());
        reply.data(&h.buf[start..end]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _wf: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        let max = match self.handles.get(&fh) {
            Some(h) => self.sh.max_data(&h.path),
            None => return reply.error(libc::EBADF),
        };
        let h = self.handles.get_mut(&fh).unwrap();
        if h.reflector {
            return reply.written(data.len() as u32);
        }
        let off = if h.append {
            h.buf.len()
        } else {
            offset.max(0) as usize
        };
        let end = off + data.len();
        if end > max {
            h.failed = true;
            return reply.error(libc::EFBIG);
        }
        if end > h.buf.len() {
            h.buf.resize(end, 0);
        }
        h.buf[off..end].copy_from_slice(data);
        h.dirty = true;
        h.touched = true;
        if h.handle_scoped {
            // A handle-scoped znode has no close before it must be visible.
            if let Err(e) = self.commit(fh) {
                return reply.error(e);
            }
        }
        reply.written(data.len() as u32);
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        // POSIX locks end when their process closes any descriptor of the file;
        // the kernel names that process as the flush's lock owner. (A flock's
        // owner is its open file, which a flush never names, so flocks stay.)
        if let Some(h) = self.handles.get(&fh) {
            if !h.reflector {
                let path = h.path.clone();
                self.sh.locks.release(&self.sh, lock_owner, &path);
            }
        }
        if !self.handles.get(&fh).is_some_and(|h| h.touched) {
            return reply.ok();
        }
        answer(reply, self.commit(fh))
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        answer(reply, self.commit(fh))
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.commit(fh);
        if let Some(h) = self.handles.remove(&fh) {
            if let Some(owner) = lock_owner {
                self.sh.locks.release(&self.sh, owner, &h.path);
            }
            if h.handle_scoped {
                self.sh.expect_echo(ev(EventType::NodeDeleted), &h.path);
                if self.sh.zk.delete(&h.path, -1).is_err() {
                    self.sh.unexpect_echo(ev(EventType::NodeDeleted), &h.path);
                }
            }
            if h.create.is_some() {
                self.local.retain(|_, v| *v != ino);
            }
        }
        answer(reply, r)
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.readdir_list(ino) {
            Ok(list) => {
                let fh = self.fh();
                self.dirs.insert(fh, list);
                reply.opened(fh, 0)
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.listed_from(fh, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        for (next, l) in entries {
            if reply.add(l.attr.ino, next, l.attr.kind, &l.name) {
                break;
            }
        }
        reply.ok()
    }

    /// READDIR with a LOOKUP of every entry in the same reply. The kernel
    /// counts a lookup for each entry it receives (not "." or ".."), so
    /// each one sent is remembered as a lookup here.
    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.listed_from(fh, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let mut table = self.sh.table.lock().unwrap();
        for (next, l) in entries {
            if reply.add(l.attr.ino, next, &l.name, &l.ttl, &l.attr, 0) {
                break;
            }
            if let Some(e) = &l.entry {
                table.remember(l.attr.ino, e.clone());
            }
        }
        drop(table);
        reply.ok()
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.dirs.remove(&fh);
        reply.ok()
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096)
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let r = self
            .path_of(ino)
            .and_then(|e| xattr::get(&self.sh, &e.path, &name.to_string_lossy()));
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(libc::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let Ok(e) = self.path_of(ino) else {
            return reply.error(libc::ESTALE);
        };
        let v = xattr::list(&self.sh, &e.path);
        if size == 0 {
            reply.size(v.len() as u32)
        } else if v.len() > size as usize {
            reply.error(libc::ERANGE)
        } else {
            reply.data(&v)
        }
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _pos: u32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .path_of(ino)
            .and_then(|e| xattr::set(&self.sh, &e.path, &name.to_string_lossy(), value));
        answer(reply, r)
    }

    fn removexattr(&mut self, _req: &Request<'_>, _ino: u64, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(libc::ENOTSUP)
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_inner(req, parent, name, flags) {
            Ok((attr, g, fh, ttl)) => reply.created(&ttl, &attr, g, fh, FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn getlk(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let Ok(e) = self.path_of(ino) else {
            return reply.error(libc::ESTALE);
        };
        match self.sh.locks.holder(&self.sh, &e.path, lock_owner) {
            Ok(true) => reply.locked(0, u64::MAX, libc::F_WRLCK, 0),
            Ok(false) => reply.locked(start, end, libc::F_UNLCK, 0),
            Err(err) => {
                let _ = typ;
                reply.error(err)
            }
        }
    }

    fn setlk(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        _start: u64,
        _end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let Ok(e) = self.path_of(ino) else {
            return reply.error(libc::ESTALE);
        };
        let path = e.path;
        if typ == libc::F_UNLCK {
            self.sh.locks.release(&self.sh, lock_owner, &path);
            return reply.ok();
        }
        // Off the request loop: a blocking lock may wait for a long time.
        let sh = self.sh.clone();
        std::thread::spawn(move || {
            let r = sh.locks.acquire(&sh, &path, lock_owner, sleep);
            answer(reply, r)
        });
    }
}

/// Replies to a request whose only result is success or an errno.
fn answer(reply: ReplyEmpty, r: Result<(), c_int>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// Create and delete of a marker child, to run in the same multi as the
/// znode's own create: its cversion becomes non-zero, so it is a directory by
/// the rule on every mount, and no child is left behind.
fn mark_ops(path: &str) -> [MultiOp; 2] {
    let mark = join(path, MKDIR_MARK);
    [
        MultiOp::Create {
            op: 1,
            req: CreateRequest {
                path: mark.clone(),
                data: vec![],
                acl: Acl::open_unsafe(),
                flags: 0,
            },
        },
        MultiOp::Delete(DeleteRequest {
            path: mark,
            version: -1,
        }),
    ]
}

/// Names never shown to `inotify` reflection: zkfs's own bookkeeping.
pub fn internal(path: &str) -> bool {
    let (_, base) = names::split(path);
    base == MKDIR_MARK || path.contains(&format!("/{LOCK_PREFIX}"))
}
