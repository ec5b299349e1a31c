//! The transaction log: records `(zxid, bytes)` appended in zxid order to
//! preallocated segment files and made durable with one `fdatasync` per
//! group. It is the write-ahead log of the standalone server (txn entries)
//! and of an ensemble member (ZAB proposals); the tree in RocksDB is written
//! without RocksDB's WAL and is only a checkpoint that this log redoes.
//!
//! Why our own file instead of RocksDB's WAL (measured on the build machine,
//! `scripts/bench.sh`, 10 KiB setData on 3 members): every txn reached the
//! disk twice through the WAL (log record + node record) and twice more in
//! flushes, 35 KiB written per 10 KiB txn against ZooKeeper's 18; and an
//! `fdatasync` that grows a file also commits its size (210 µs for a 150-byte
//! append on this disk, 145 µs inside a preallocated file).
//!
//! Layout: `<gen>-<first zxid>.log` files (hex), each a 64-byte header
//! (magic, generation, first zxid, salt) then records
//! `len u32 | crc u32 | zxid u64 | tag u32 | bytes`, little-endian. The
//! checksum covers the salt, the zxid and the bytes; the tag is derived from
//! the salt, so records left over in a reused file (another salt) read as
//! the end of the log without being checksummed. A file is extended with zeros a
//! chunk ahead of the records, so a small synced append rarely changes its
//! size (a write of a chunk or more grows it by just its own length);
//! freed files are kept as spares and reused, so in steady state the zeros
//! are not written again. While the log grows faster than files are freed
//! (a new server, a burst of big writes), the next file can be zeroed ahead
//! of time, a piece whenever the writer is idle (`prepare_ahead`; the
//! standalone server asks for it), so the syncs that clients wait for do not
//! write the zeros too.
//!
//! A standalone server's log is written with O_DIRECT where the file
//! system allows it (see `Direct`): the block the records end in is written
//! again, from memory, with the next ones.
//!
//! A cost no layout here removes: on ext4 without a journal (the build
//! machine's), once per clock tick (4 ms at HZ=250) a write updates the
//! file's times, and the next `fdatasync` writes the inode's block before
//! its flush. A 1x1 delete on the 3-member loopback ensemble (perf block
//! trace of an 8 s run): 8.5% of writes had it, and those took 429 µs
//! from request to request on average against 300. Mounting with
//! `lazytime` did not help (likely because i_version changes with the
//! times; not checked): an ext4 image without a journal, one appender, 753
//! inode writes in 3 s without it (twice), 751 and 753 with. ZooKeeper's
//! log, written and synced the same way, should pay it too (not traced).
//!
//! Reading stops at the first record that is zeros, torn or fails its
//! checksum in the *last* file: the tail of a write that was never
//! acknowledged. The same in an earlier file means acknowledged records are
//! damaged, and opening fails rather than serving what is left.
//!
//! A generation is a whole log: a learner that installs a leader's snapshot
//! writes the snapshot's log as the next generation, commits the generation
//! number in RocksDB with the tree, and only then drops the old files.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ZKDLOG01";
const HEADER: u64 = 64;
const RECORD_HEADER: usize = 20;
/// A file takes records until it holds this many bytes (one bigger record
/// gets a file of its own size).
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Zeros are written this far ahead of the records. The write that runs
/// past them pays for the zeros in its own sync: with 1 MiB, one 10 KiB
/// setData in a hundred waited for a MiB (set 1x1 10 KiB p99 2.3-2.5 ms;
/// with 64 KiB, 0.59-0.65 ms, 3 alternations; ZooKeeper's 0.69 ms).
///
/// A write of a chunk or more gets none: the next such write runs past
/// them anyway, so they only added a chunk to every sync, each of which
/// grew the file (and paid for its metadata) regardless. Fresh 3-member
/// loopback ensembles (a new log, no spare), 3 alternations of 4 s,
/// ops/s, a chunk ahead of every write -> none after a big one: multi10
/// 1x1 10 KiB (100 KiB proposals) 328/406/306 -> 384/476/443; create
/// 1x1 10 KiB 1,001/1,346/1,179 -> 1,077/1,225/1,176 (not affected);
/// multi10 16x32 10 KiB 796/881/1,024 -> 891/970/814 (noise).
///
/// Nothing ahead, or the space reserved with `fallocate` instead of
/// zeros, measured worse for small writes: every sync then wrote
/// metadata (the size, or unwritten extents turned written). Same runs,
/// 2 alternations, zeros / plain growth / fallocate: create 1x1 10 KiB
/// 1,020, 978 / 756, 762 / 849, 749 (p50 838-866 / 1,290-1,297 /
/// 1,140-1,303 µs); setData 1x1 100 B 1,587, 1,596 / 1,382, 1,530 /
/// 1,650, 1,601.
const CHUNK: u64 = 64 << 10;
/// What zeros are written from, a chunk at most: a fresh zeroed buffer per
/// extension was a fresh page for the allocator to fault in and clear
/// (0.9% of an ensemble's CPU samples under multi10 16x32).
static ZEROS: [u8; CHUNK as usize] = [0; CHUNK as usize];
/// Queued records are handed to the file once they reach this many bytes,
/// before the sync that makes them durable: a group of big txns (multi of
/// ten 10 KiB setData, 16x32 in flight) was copied into a buffer that grew
/// to megabytes, each growth a fresh allocation whose pages faulted in, and
/// the buffer was dropped at every roll. Append, realloc and page faults
/// were 30% of a loaded follower's storage thread (`perf`); a buffer that
/// stays this small stays allocated and in cache.
const WRITE_AHEAD: usize = 256 << 10;
/// Freed files kept for reuse.
const SPARES: usize = 2;
/// Zeros written per `prepare_ahead` call (at most `CHUNK`): a job that
/// arrives meanwhile waits for it (tens of µs into the page cache).
const PIECE: u64 = CHUNK;
/// Writeback of a file being prepared is started every this many bytes,
/// so the sync that takes the file has little of it left to write.
const PREPARE_WRITEBACK: u64 = 1 << 20;

#[derive(Debug)]
pub struct LogError(pub String);

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> LogError {
    LogError(format!("{what} {}: {e}", path.display()))
}

#[derive(Clone)]
struct Segment {
    path: PathBuf,
    /// The last zxid in the file (0 while empty).
    last: u64,
}

/// The file records are appended to.
struct Open {
    file: File,
    path: PathBuf,
    salt: u64,
    /// Where the next record goes.
    pos: u64,
    /// Bytes of the file that exist (zeros past `pos`).
    allocated: u64,
    /// Records not yet written to the file.
    buf: Vec<u8>,
    /// The same file opened with O_DIRECT, when the file system allows it.
    direct: Option<Direct>,
}

/// Appends that bypass the page cache: whole aligned blocks, the block
/// the records end in written again (from `tail`) with the next ones.
/// On the build machine (`/tmp/exp/fsb.c`, 20,000 150-byte appends, each
/// made durable): pwrite + fdatasync 89.7-95.6 µs mean; 4 KiB O_DIRECT
/// pwrite + fdatasync 75.0-85.1 µs. The sync then has only the device's
/// cache to flush, and no page-cache copy is made.
struct Direct {
    file: File,
    /// The file's bytes from the block `pos` is in up to `pos`.
    tail: Vec<u8>,
    /// Staging for one write, over-allocated to align it.
    stage: Vec<u8>,
}

/// O_DIRECT's alignment of memory, offsets and lengths (the largest
/// logical block size in use).
const BLOCK: usize = 4096;

impl Direct {
    /// `path` opened for direct writes, `pos` being where the next record
    /// goes and `tail` the bytes before it in its block; `None` where the
    /// file system refuses O_DIRECT (tmpfs).
    fn open(path: &Path, pos: u64, tail: &[u8]) -> Option<Direct> {
        use std::os::unix::fs::OpenOptionsExt;
        debug_assert_eq!(tail.len() as u64, pos % BLOCK as u64);
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()?;
        Some(Direct {
            file,
            tail: tail.to_vec(),
            stage: Vec::new(),
        })
    }

    /// Where a write of records ending at `end` ends: a block boundary.
    fn written_end(end: u64) -> u64 {
        end.div_ceil(BLOCK as u64) * BLOCK as u64
    }

    /// Writes `records` at `pos` (the tail's block rewritten first, zeros
    /// after the records up to the block's end: what the file holds past
    /// the records is the end of the log either way).
    fn write(&mut self, pos: u64, records: &[u8]) -> std::io::Result<()> {
        let start = pos - self.tail.len() as u64;
        let used = self.tail.len() + records.len();
        let len = used.div_ceil(BLOCK) * BLOCK;
        self.stage.clear();
        self.stage.resize(len + BLOCK, 0);
        let at = self.stage.as_ptr().align_offset(BLOCK);
        let out = &mut self.stage[at..at + len];
        out[..self.tail.len()].copy_from_slice(&self.tail);
        out[self.tail.len()..used].copy_from_slice(records);
        self.file.write_all_at(out, start)?;
        let keep = used % BLOCK;
        self.tail.clear();
        self.tail.extend_from_slice(&out[used - keep..used]);
        Ok(())
    }
}

pub struct TxnLog {
    dir: PathBuf,
    gen: u64,
    segments: Vec<Segment>,
    open: Option<Open>,
    spares: Vec<PathBuf>,
    last: u64,
    /// Written (to the file, not yet synced) since the last sync.
    dirty: bool,
    /// Files of the previous generation, until `drop_older`.
    old: Vec<PathBuf>,
    /// SEGMENT_BYTES, smaller in tests.
    segment_bytes: u64,
    /// Open files for direct writes (see `Direct`).
    direct: bool,
    /// The next file, being zeroed ahead (see `prepare_ahead`).
    preparing: Option<Preparing>,
    /// Preparing failed (disk full): not tried again until the next roll.
    prepare_failed: bool,
}

/// A spare being filled with zeros; a crash leaves it as a spare.
struct Preparing {
    file: File,
    path: PathBuf,
    /// Bytes of zeros written.
    len: u64,
}

fn crc(salt: u64, zxid: u64, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&zxid.to_le_bytes());
    h.update(data);
    h.finalize()
}

fn header(gen: u64, first: u64, salt: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&gen.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    h[24..32].copy_from_slice(&salt.to_le_bytes());
    let c = crc(salt, gen ^ first, &h[..32]);
    h[32..36].copy_from_slice(&c.to_le_bytes());
    h
}

/// (gen, first, salt) of a file's header, if it is one.
fn read_header(h: &[u8]) -> Option<(u64, u64, u64)> {
    if h.len() < HEADER as usize || &h[..8] != MAGIC {
        return None;
    }
    let u = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    let (gen, first, salt) = (u(8), u(16), u(24));
    let c = u32::from_le_bytes(h[32..36].try_into().expect("4 bytes"));
    (crc(salt, gen ^ first, &h[..32]) == c).then_some((gen, first, salt))
}

/// Asks the kernel to start writing `len` bytes at `offset` back now,
/// without waiting: the zeros of a prepared file then reach the disk while
/// the log is idle rather than in the sync that takes the file. Only a
/// hint; its failure changes nothing but when the bytes are written.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor and plain integers; the call reads
    // no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync directory", dir, e))
}

fn segment_name(gen: u64, first: u64) -> String {
    format!("{gen:08x}-{first:016x}.log")
}

impl TxnLog {
    /// Opens generation `gen` in `dir` (created if missing), calling `each`
    /// with every record in order. Files of other generations are freed:
    /// the caller's store says which generation is current. With `direct`,
    /// appends bypass the page cache where the file system allows it.
    pub fn open(
        dir: &Path,
        gen: u64,
        direct: bool,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), LogError>,
    ) -> Result<TxnLog, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let mut found = Vec::new();
        let mut log = TxnLog {
            dir: dir.to_path_buf(),
            gen,
            segments: Vec::new(),
            open: None,
            spares: Vec::new(),
            last: 0,
            dirty: false,
            old: Vec::new(),
            segment_bytes: SEGMENT_BYTES,
            direct,
            preparing: None,
            prepare_failed: false,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))?;
        for e in entries {
            let e = e.map_err(|e| io("cannot list", dir, e))?;
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("log") {
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("spare-") {
                log.spares.push(path);
                continue;
            }
            let mut h = [0u8; HEADER as usize];
            let ok = File::open(&path)
                .and_then(|mut f| f.read_exact(&mut h))
                .is_ok();
            match read_header(&h).filter(|_| ok) {
                Some((g, first, salt)) if g == gen => found.push((first, salt, path)),
                // Another generation, a spare, or a file whose header was
                // never completed (crash while taking a spare): reusable.
                _ => log.spares.push(path),
            }
        }
        found.sort();
        let n = found.len();
        let mut prev = 0u64;
        for (i, (_first, salt, path)) in found.into_iter().enumerate() {
            let is_last = i + 1 == n;
            let mut f = File::open(&path).map_err(|e| io("cannot open", &path, e))?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)
                .map_err(|e| io("cannot read", &path, e))?;
            let mut pos = HEADER as usize;
            let mut last = 0;
            loop {
                let end = match next_record(&bytes, pos, salt, prev) {
                    Ok(Some((zxid, data, end))) => {
                        each(zxid, data)?;
                        prev = zxid;
                        last = zxid;
                        end
                    }
                    Ok(None) => break,
                    Err(why) if is_last && !valid_record_after(&bytes, pos, salt, prev) => {
                        log::info!(
                            "{}: log ends at byte {pos} ({why}): the tail of an unacknowledged write",
                            path.display()
                        );
                        break;
                    }
                    Err(why) => {
                        return Err(LogError(format!(
                            "{}: damaged record at byte {pos} ({why}) with valid records after it: \
                             acknowledged transactions would be lost; refusing to open",
                            path.display()
                        )))
                    }
                };
                pos = end;
            }
            if last == 0 && !is_last {
                log.spares.push(path);
                continue;
            }
            if is_last {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io("cannot open", &path, e))?;
                let tail = &bytes[pos - pos % BLOCK..pos];
                log.open = Some(Open {
                    file,
                    path: path.clone(),
                    salt,
                    pos: pos as u64,
                    allocated: bytes.len() as u64,
                    buf: Vec::new(),
                    direct: direct
                        .then(|| Direct::open(&path, pos as u64, tail))
                        .flatten(),
                });
            }
            log.segments.push(Segment { path, last });
        }
        log.last = prev;
        // Spares beyond what is kept go now.
        while log.spares.len() > SPARES {
            let p = log.spares.pop().expect("non-empty");
            std::fs::remove_file(&p).map_err(|e| io("cannot remove", &p, e))?;
        }
        Ok(log)
    }

    /// The last zxid in the log (0 if empty).
    pub fn last_zxid(&self) -> u64 {
        self.last
    }

    pub fn generation(&self) -> u64 {
        self.gen
    }

    pub fn is_empty(&self) -> bool {
        self.last == 0
    }

    /// Smaller files, so a test rolls the log without writing 64 MiB.
    #[cfg(test)]
    pub fn set_segment_bytes(&mut self, n: u64) {
        self.segment_bytes = n;
    }

    /// Files of the current generation.
    #[cfg(test)]
    pub fn files(&self) -> usize {
        self.segments.len()
    }

    /// Hands what is queued to the file without waiting for the disk.
    pub fn write(&mut self) -> Result<(), LogError> {
        self.write_buffer()
    }

    /// Queues a record; it is durable after the next `sync`.
    pub fn append(&mut self, zxid: u64, data: &[u8]) -> Result<(), LogError> {
        if zxid <= self.last {
            return Err(LogError(format!(
                "log append out of order: 0x{zxid:x} after 0x{:x}",
                self.last
            )));
        }
        let need = (RECORD_HEADER + data.len()) as u64;
        // An empty file takes any record; otherwise files stop at
        // SEGMENT_BYTES.
        let fits = self.open.as_ref().is_some_and(|o| {
            let used = o.pos + o.buf.len() as u64;
            used == HEADER || used + need <= self.segment_bytes
        });
        if !fits {
            self.roll(zxid)?;
        }
        let o = self.open.as_mut().expect("rolled");
        o.buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        o.buf
            .extend_from_slice(&crc(o.salt, zxid, data).to_le_bytes());
        o.buf.extend_from_slice(&zxid.to_le_bytes());
        o.buf.extend_from_slice(&tag(o.salt).to_le_bytes());
        o.buf.extend_from_slice(data);
        let seg = self.segments.last_mut().expect("an open segment is listed");
        seg.last = zxid;
        self.last = zxid;
        if o.buf.len() >= WRITE_AHEAD {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// Writes what is queued and makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.write_buffer()?;
        if self.dirty {
            let o = self.open.as_ref().expect("dirty implies open");
            o.file
                .sync_data()
                .map_err(|e| io("cannot sync", &o.path, e))?;
            self.dirty = false;
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<(), LogError> {
        let segment_bytes = self.segment_bytes;
        let Some(o) = self.open.as_mut() else {
            return Ok(());
        };
        if o.buf.is_empty() {
            return Ok(());
        }
        let end = o.pos + o.buf.len() as u64;
        let written_end = match o.direct {
            Some(_) => Direct::written_end(end),
            None => end,
        };
        if written_end > o.allocated {
            // Zeros past the records, so later synced appends change no
            // metadata. The sync that follows makes the new size durable.
            // Only after a write smaller than the chunk (see `CHUNK`).
            let ahead = if (o.buf.len() as u64) < CHUNK {
                CHUNK
            } else {
                0
            };
            let target = (written_end + ahead).min(segment_bytes.max(written_end));
            // Only past the records, so at most one chunk: the records'
            // write below covers the rest (a direct one would first have
            // to write back zeros left there in the page cache).
            if target > written_end {
                o.file
                    .write_all_at(&ZEROS[..(target - written_end) as usize], written_end)
                    .map_err(|e| io("cannot extend", &o.path, e))?;
            }
            o.allocated = target;
        }
        let direct = match o.direct.as_mut().map(|d| d.write(o.pos, &o.buf)) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                // A file system that took O_DIRECT at open but refuses
                // the write: the page cache from now on.
                log::warn!(
                    "{}: direct write failed ({e}); writing through the page cache",
                    o.path.display()
                );
                o.direct = None;
                false
            }
            None => false,
        };
        if !direct {
            o.file
                .write_all_at(&o.buf, o.pos)
                .map_err(|e| io("cannot write", &o.path, e))?;
        }
        o.pos = end;
        o.buf.clear();
        self.dirty = true;
        Ok(())
    }

    /// Closes the current file (synced) and opens one whose first record
    /// is `first`, reusing a spare if there is one.
    fn roll(&mut self, first: u64) -> Result<(), LogError> {
        // An end mark after the last record: a reused file holds old
        // records past it, which must read as the end, not as damage.
        let segment_bytes = self.segment_bytes;
        if let Some(o) = self.open.as_mut() {
            if o.pos + (o.buf.len() + RECORD_HEADER) as u64 <= segment_bytes {
                o.buf.extend_from_slice(&[0u8; RECORD_HEADER]);
            }
        }
        self.sync()?;
        // The buffer goes on to the next file, allocated (see WRITE_AHEAD).
        let buf = self.open.take().map(|o| o.buf).unwrap_or_default();
        let path = self.dir.join(segment_name(self.gen, first));
        let salt: u64 = rand::random();
        // A file zeroed only in part is still taken: what it has is not
        // written again, the rest is extended as usual.
        if self.spares.is_empty() {
            if let Some(p) = self.preparing.take() {
                self.spares.push(p.path);
            }
        }
        self.prepare_failed = false;
        let head = header(self.gen, first, salt);
        let (file, allocated) = match self.spares.pop() {
            Some(spare) => {
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&spare)
                    .map_err(|e| io("cannot open", &spare, e))?;
                let len = f
                    .metadata()
                    .map_err(|e| io("cannot stat", &spare, e))?
                    .len();
                // The new header is durable before the file takes a
                // segment's name: under that name it is never read with
                // its old header (whose salt fits the old records).
                f.write_all(&head)
                    .and_then(|_| f.sync_data())
                    .map_err(|e| io("cannot write", &spare, e))?;
                std::fs::rename(&spare, &path).map_err(|e| io("cannot rename", &spare, e))?;
                (f, len)
            }
            None => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|e| io("cannot create", &path, e))?;
                f.write_all_at(&head, 0)
                    .and_then(|_| f.sync_data())
                    .map_err(|e| io("cannot write", &path, e))?;
                (f, 0)
            }
        };
        // A spare's header was written and synced before its rename; only
        // the directory (the new name) is left to make durable.
        sync_dir(&self.dir)?;
        self.open = Some(Open {
            file,
            path: path.clone(),
            salt,
            pos: HEADER,
            allocated: allocated.max(HEADER),
            buf,
            direct: self
                .direct
                .then(|| Direct::open(&path, HEADER, &head))
                .flatten(),
        });
        self.segments.push(Segment { path, last: 0 });
        Ok(())
    }

    /// How many files `trim_through(zxid)` would free.
    fn freeable_through(&self, zxid: u64) -> usize {
        self.segments
            .iter()
            .position(|s| s.last > zxid || s.last == 0)
            .unwrap_or(self.segments.len())
            .min(self.segments.len().saturating_sub(1))
    }

    /// Whether `trim_through(zxid)` would free a file: a checkpoint made
    /// only to trim the log is worth its flush then, and not before.
    pub fn frees_through(&self, zxid: u64) -> bool {
        self.freeable_through(zxid) > 0
    }

    /// The last zxid of the newest file that is older than the newest
    /// `keep` files and holds nothing after `upto`.
    pub fn last_beyond(&self, keep: usize, upto: u64) -> Option<u64> {
        let n = self.segments.len().checked_sub(keep)?;
        self.segments[..n]
            .iter()
            .rev()
            .map(|s| s.last)
            .find(|l| *l <= upto && *l > 0)
    }

    /// The records of the current generation at the zxids in `wanted`
    /// (`read_records`).
    pub fn read(
        &self,
        wanted: &std::collections::BTreeSet<u64>,
    ) -> Result<std::collections::HashMap<u64, Vec<u8>>, LogError> {
        read_records(&self.dir, self.gen, &self.segments, wanted)
    }

    /// What another thread needs to read back the records written so far,
    /// for as long as the files are not freed (the caller's to ensure).
    pub fn reader(&self) -> LogReader {
        LogReader {
            dir: self.dir.clone(),
            gen: self.gen,
            segments: self.segments.clone(),
        }
    }

    /// Frees the files whose records are all at or below `zxid` (the
    /// caller's checkpoint covers them). The file being appended to stays.
    pub fn trim_through(&mut self, zxid: u64) -> Result<usize, LogError> {
        let keep_from = self.freeable_through(zxid);
        let freed: Vec<Segment> = self.segments.drain(..keep_from).collect();
        for s in &freed {
            self.free(&s.path)?;
        }
        if !freed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(freed.len())
    }

    /// Zeros a piece of the file the log will roll into next, when there
    /// is no spare for it; true while more is left to do. For a writer
    /// with nothing queued. Without it, while the log grows into new files
    /// one 10 KiB create in six pays for a 64 KiB extension in its own
    /// sync. Standalone, fresh server, zkbench 1 connection x 1 request,
    /// 8 s runs, before -> after, 3 alternations:
    ///   create 10 KiB   2,181/2,669/3,182 -> 2,786/3,433/3,063 ops/s,
    ///                   p99 2.7/1.5/0.9 -> 1.3/0.8/1.1 ms
    ///   multi10 10 KiB  1,267/1,300/1,484 -> 1,340/1,675/1,610 ops/s,
    ///                   p99 2.8/2.8/1.6 -> 2.7/1.4/1.9 ms
    /// (every file zeroed before the run, the bound: 3,191/3,978 creates).
    /// A writer that is never idle (16x32 creates) never gets here and
    /// extends its files as before: 18.8-19.9k -> 18.3-19.4k ops/s.
    pub fn prepare_ahead(&mut self) -> Result<bool, LogError> {
        // Not before the open file is a quarter full: a server that writes
        // little (or a test) never pays for a file it does not reach. One
        // request at a time leaves gaps of 100 µs and more between writes,
        // room for a few 64 KiB pieces each.
        let started = self
            .open
            .as_ref()
            .is_some_and(|o| o.pos >= self.segment_bytes / 4);
        if !self.spares.is_empty() || !started || self.prepare_failed {
            return Ok(false);
        }
        let p = match self.preparing.as_mut() {
            Some(p) => p,
            None => {
                let path = self
                    .dir
                    .join(format!("spare-{}.log", rand::random::<u32>()));
                let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        self.prepare_failed = true;
                        return Err(io("cannot create", &path, e));
                    }
                };
                self.preparing.insert(Preparing { file, path, len: 0 })
            }
        };
        let n = PIECE.min(self.segment_bytes.saturating_sub(p.len));
        if let Err(e) = p.file.write_all_at(&ZEROS[..n as usize], p.len) {
            // Disk full, most likely: give the space back; the appends
            // extend their own file as before.
            let p = self.preparing.take().expect("just used");
            let _ = std::fs::remove_file(&p.path);
            self.prepare_failed = true;
            return Err(io("cannot write", &p.path, e));
        }
        p.len += n;
        if p.len % PREPARE_WRITEBACK == 0 || p.len >= self.segment_bytes {
            start_writeback(
                &p.file,
                p.len.saturating_sub(PREPARE_WRITEBACK),
                PREPARE_WRITEBACK,
            );
        }
        if p.len < self.segment_bytes {
            return Ok(true);
        }
        let p = self.preparing.take().expect("just used");
        self.spares.push(p.path);
        Ok(false)
    }

    fn free(&mut self, path: &Path) -> Result<(), LogError> {
        if self.spares.len() < SPARES {
            // Renamed so its header's generation is never read as ours
            // again; the header is rewritten when it is taken.
            let spare = self
                .dir
                .join(format!("spare-{}.log", rand::random::<u32>()));
            std::fs::rename(path, &spare).map_err(|e| io("cannot rename", path, e))?;
            self.spares.push(spare);
        } else {
            std::fs::remove_file(path).map_err(|e| io("cannot remove", path, e))?;
        }
        Ok(())
    }

    /// Starts generation `gen` holding exactly `records`, durable when this
    /// returns. The old generation's files stay until `drop_older`: until
    /// the caller has committed `gen` as current, a restart reads the old.
    pub fn begin_generation(&mut self, gen: u64, records: &[(u64, &[u8])]) -> Result<(), LogError> {
        if gen <= self.gen {
            return Err(LogError(format!(
                "log generation {gen} is not after {}",
                self.gen
            )));
        }
        self.sync()?;
        let old = std::mem::take(&mut self.segments);
        self.open = None;
        self.gen = gen;
        self.last = 0;
        for (zxid, data) in records {
            self.append(*zxid, data)?;
        }
        self.sync()?;
        self.old.extend(old.into_iter().map(|s| s.path));
        Ok(())
    }

    /// Frees the files of generations before the current one.
    pub fn drop_older(&mut self) -> Result<(), LogError> {
        if self.old.is_empty() {
            return Ok(());
        }
        for p in std::mem::take(&mut self.old) {
            self.free(&p)?;
        }
        sync_dir(&self.dir)
    }
}

/// A log's files as they were when it was made (`TxnLog::reader`).
pub struct LogReader {
    dir: PathBuf,
    gen: u64,
    segments: Vec<Segment>,
}

impl LogReader {
    /// The records of the generation at the zxids in `wanted`
    /// (`read_records`).
    pub fn read(
        &self,
        wanted: &std::collections::BTreeSet<u64>,
    ) -> Result<std::collections::HashMap<u64, Vec<u8>>, LogError> {
        read_records(&self.dir, self.gen, &self.segments, wanted)
    }
}

/// The records of generation `gen` at the zxids in `wanted`, read back
/// from `segments` (a file is read whole, once, only if it holds one of
/// them). A zxid not in the log is an error: the caller holds a reference
/// to it.
fn read_records(
    dir: &Path,
    gen: u64,
    segments: &[Segment],
    wanted: &std::collections::BTreeSet<u64>,
) -> Result<std::collections::HashMap<u64, Vec<u8>>, LogError> {
    let mut out = std::collections::HashMap::with_capacity(wanted.len());
    let mut after = 0u64;
    for s in segments {
        let (from, through) = (after, s.last);
        after = after.max(s.last);
        if s.last == 0 || wanted.range(from + 1..=through).next().is_none() {
            continue;
        }
        let mut bytes = Vec::new();
        File::open(&s.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io("cannot read", &s.path, e))?;
        let salt = match bytes.get(..HEADER as usize).and_then(read_header) {
            Some((g, _, salt)) if g == gen => salt,
            _ => {
                return Err(LogError(format!(
                    "{}: not a log file of generation {}",
                    s.path.display(),
                    gen
                )))
            }
        };
        let (mut pos, mut prev) = (HEADER as usize, 0);
        while let Ok(Some((zxid, data, end))) = next_record(&bytes, pos, salt, prev) {
            if wanted.contains(&zxid) {
                out.insert(zxid, data.to_vec());
            }
            if zxid >= through {
                break;
            }
            (pos, prev) = (end, zxid);
        }
    }
    match wanted.iter().find(|z| !out.contains_key(z)) {
        Some(z) => Err(LogError(format!(
            "{}: the record of txn 0x{z:x} is not in the log",
            dir.display()
        ))),
        None => Ok(out),
    }
}

/// Every record carries its file's tag (from the salt): in a reused file,
/// what follows the last record is an earlier use's records, whose tag
/// differs, so finding the end never needs a checksum of them.
fn tag(salt: u64) -> u32 {
    (salt >> 32) as u32 ^ salt as u32
}

/// Is there a valid record anywhere after a bad one at `pos`? Then the bad
/// one is damage inside the log, not the torn tail of the last write
/// (RocksDB's TolerateCorruptedTailRecords draws the same line). Scans byte
/// by byte, but only when a record failed, and checksums only offsets that
/// carry this file's tag and a zxid after `prev`.
fn valid_record_after(bytes: &[u8], pos: usize, salt: u64, prev: u64) -> bool {
    let t = tag(salt).to_le_bytes();
    (pos + 1..bytes.len().saturating_sub(RECORD_HEADER)).any(|p| {
        bytes[p + 16..p + 20] == t
            && u64::from_le_bytes(bytes[p + 8..p + 16].try_into().expect("8")) > prev
            && matches!(next_record(bytes, p, salt, prev), Ok(Some(_)))
    })
}

/// A record read back: its zxid, its bytes and where the next one starts.
type Record<'a> = (u64, &'a [u8], usize);

/// The record at `pos`: `Ok(None)` at the zeros after the last record,
/// `Err` for a torn or damaged one, or one of an earlier use of the file.
fn next_record(
    bytes: &[u8],
    pos: usize,
    salt: u64,
    prev: u64,
) -> Result<Option<Record<'_>>, String> {
    if pos + RECORD_HEADER > bytes.len() {
        // The writer never starts a record where its header cannot fit.
        return Ok(None);
    }
    let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4")) as usize;
    let c = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4"));
    let zxid = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().expect("8"));
    let t = u32::from_le_bytes(bytes[pos + 16..pos + 20].try_into().expect("4"));
    if len == 0 && c == 0 && zxid == 0 && t == 0 {
        return Ok(None);
    }
    if t != tag(salt) {
        return Err("not a record of this file".into());
    }
    let end = pos + RECORD_HEADER + len;
    if end > bytes.len() {
        return Err(format!("a record of {len} bytes runs past the file"));
    }
    let data = &bytes[pos + RECORD_HEADER..end];
    if crc(salt, zxid, data) != c {
        return Err("a checksum mismatch".into());
    }
    if zxid <= prev {
        return Err(format!("zxid 0x{zxid:x} after 0x{prev:x}"));
    }
    Ok(Some((zxid, data, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zkd-txnlog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    type Records = Vec<(u64, Vec<u8>)>;

    fn read(d: &Path, gen: u64) -> Result<(TxnLog, Records), LogError> {
        read_with(d, gen, true)
    }

    fn read_with(d: &Path, gen: u64, direct: bool) -> Result<(TxnLog, Records), LogError> {
        let mut out = Vec::new();
        let log = TxnLog::open(d, gen, direct, |z, b| {
            out.push((z, b.to_vec()));
            Ok(())
        })?;
        Ok((log, out))
    }

    fn rec(z: u64) -> Vec<u8> {
        vec![z as u8; 100 + (z as usize % 7) * 50]
    }

    fn files(d: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name().unwrap().to_str().unwrap().contains('-')
                    && !p.to_str().unwrap().contains("spare")
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_come_back_in_order_across_files_and_reopens() {
        in_order_across_files_and_reopens(true);
    }

    /// The same through the page cache (file systems without O_DIRECT).
    #[test]
    fn records_come_back_in_order_without_direct_writes() {
        in_order_across_files_and_reopens(false);
    }

    fn in_order_across_files_and_reopens(direct: bool) {
        let d = dir(if direct { "order" } else { "order-cached" });
        let (mut log, got) = read_with(&d, 0, direct).unwrap();
        assert!(got.is_empty() && log.is_empty());
        log.segment_bytes = 2048;
        for z in 1..=40 {
            log.append(z, &rec(z)).unwrap();
            if z % 3 == 0 {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
        assert!(log.files() > 3, "small files roll: {}", log.files());
        assert!(log.append(40, b"again").is_err(), "zxids only grow");
        drop(log);
        let (mut log, got) = read_with(&d, 0, direct).unwrap();
        assert_eq!(got, (1..=40).map(|z| (z, rec(z))).collect::<Vec<_>>());
        assert_eq!(log.last_zxid(), 40);
        // Appends continue in the last file, in the middle of a block.
        for z in 41..=45 {
            log.append(z, &rec(z)).unwrap();
            log.sync().unwrap();
        }
        assert_eq!(
            log.open.as_ref().unwrap().direct.is_some(),
            direct && direct_writes_work(&d)
        );
        let (_, got) = read(&d, 0).unwrap();
        assert_eq!(got, (1..=45).map(|z| (z, rec(z))).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Whether the file system under `d` takes O_DIRECT writes.
    fn direct_writes_work(d: &Path) -> bool {
        let p = d.join("probe");
        std::fs::write(&p, [0u8; BLOCK]).unwrap();
        let ok = Direct::open(&p, 0, &[])
            .map(|mut w| w.write(0, b"x").is_ok())
            .unwrap_or(false);
        std::fs::remove_file(&p).unwrap();
        ok
    }

    /// A log of small files holding txns `1..=n`, each synced.
    fn small_files(d: &Path, n: u64) -> TxnLog {
        let (mut log, _) = read(d, 0).unwrap();
        log.segment_bytes = 2048;
        for z in 1..=n {
            log.append(z, &rec(z)).unwrap();
            log.sync().unwrap();
        }
        log
    }

    #[test]
    fn a_torn_tail_is_the_end_and_damage_before_it_is_refused() {
        let d = dir("torn");
        drop(small_files(&d, 30));
        let fs = files(&d);
        let last = fs.last().unwrap();
        // Tear the last record of the last file: flip a byte in its data.
        let (_, before) = read(&d, 0).unwrap();
        let mut bytes = std::fs::read(last).unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap();
        bytes[end] ^= 0xff;
        std::fs::write(last, &bytes).unwrap();
        let (mut log, got) = read(&d, 0).unwrap();
        assert_eq!(got.len(), before.len() - 1, "only the torn record goes");
        // Appending goes on where the valid records end.
        log.append(30, &rec(30)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, got) = read(&d, 0).unwrap();
        assert_eq!(got, (1..=30).map(|z| (z, rec(z))).collect::<Vec<_>>());
        // Damage with valid records after it, in the last file or an
        // earlier one, loses acknowledged records.
        let (_, all) = read(&d, 0).unwrap();
        let mut bytes = std::fs::read(last).unwrap();
        let keep = bytes.clone();
        bytes[HEADER as usize + RECORD_HEADER + 3] ^= 0xff;
        std::fs::write(last, &bytes).unwrap();
        let err = read(&d, 0).err().expect("refused");
        assert!(err.0.contains("refusing to open"), "{err}");
        std::fs::write(last, &keep).unwrap();
        assert_eq!(read(&d, 0).unwrap().1, all);
        let first = &files(&d)[0];
        let mut bytes = std::fs::read(first).unwrap();
        bytes[HEADER as usize + RECORD_HEADER + 3] ^= 0xff;
        std::fs::write(first, &bytes).unwrap();
        let err = read(&d, 0).err().expect("refused");
        assert!(err.0.contains("refusing to open"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn trimmed_files_are_reused_and_their_old_records_never_read_back() {
        let d = dir("trim");
        let mut log = small_files(&d, 60);
        let n = log.files();
        let freed = log.trim_through(45).unwrap();
        assert!(freed > 0 && log.files() == n - freed);
        // New records go into reused files full of old ones.
        for z in 61..=120 {
            log.append(z, &rec(z)).unwrap();
            log.sync().unwrap();
        }
        drop(log);
        let (_, got) = read(&d, 0).unwrap();
        let first = got[0].0;
        assert!(
            first > 1 && first <= 46,
            "freed through 45, kept 46: {first}"
        );
        assert_eq!(got, (first..=120).map(|z| (z, rec(z))).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_new_generation_is_read_only_once_it_is_current() {
        let d = dir("gen");
        let (mut log, _) = read(&d, 0).unwrap();
        for z in 1..=5 {
            log.append(z, &rec(z)).unwrap();
        }
        log.sync().unwrap();
        let new: Vec<(u64, &[u8])> = vec![(3, b"three"), (9, b"nine")];
        log.begin_generation(1, &new).unwrap();
        // Not yet committed by the caller: a restart reads generation 0.
        let (_, got) = read(&d, 0).unwrap();
        assert_eq!(got.len(), 5);
        let (mut log, got) = read(&d, 1).unwrap();
        assert_eq!(got, vec![(3, b"three".to_vec()), (9, b"nine".to_vec())]);
        log.append(10, b"ten").unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, got) = read(&d, 1).unwrap();
        assert_eq!(got.len(), 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Records bigger than the chunk of zeros written ahead: the file grows
    /// to cover them and no more (zeros after them would be run past by the
    /// next big write anyway); a small record after them gets its chunk of
    /// zeros again; and they all read back.
    #[test]
    fn records_bigger_than_a_chunk_extend_the_file_to_their_end() {
        for direct in [true, false] {
            let d = dir(if direct { "big" } else { "big-cached" });
            let (mut log, _) = read_with(&d, 0, direct).unwrap();
            let big = |z: u64| vec![z as u8; 3 * CHUNK as usize + 123 * z as usize];
            let mut want = Vec::new();
            for z in 1..=3 {
                log.append(z, &big(z)).unwrap();
                log.sync().unwrap();
                want.push((z, big(z)));
                let o = log.open.as_ref().unwrap();
                let len = std::fs::metadata(&o.path).unwrap().len();
                assert_eq!(len, o.allocated, "the file is as long as it is known to be");
                let records_end = if direct {
                    Direct::written_end(o.pos)
                } else {
                    o.pos
                };
                assert_eq!(o.allocated, records_end, "no zeros after a big write");
            }
            // Smaller than a chunk, bigger than the block a direct write
            // pads the records to: it runs past the file's end.
            let small = vec![4u8; 5000];
            log.append(4, &small).unwrap();
            log.sync().unwrap();
            want.push((4, small));
            let o = log.open.as_ref().unwrap();
            assert_eq!(std::fs::metadata(&o.path).unwrap().len(), o.allocated);
            assert!(
                o.allocated >= o.pos + CHUNK,
                "a chunk ahead of a small record"
            );
            drop(log);
            let (_, got) = read_with(&d, 0, direct).unwrap();
            assert_eq!(got, want);
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    /// Records queued past WRITE_AHEAD go to the file before the sync, so
    /// the queue stays small; the queue's memory goes on to the next file
    /// at a roll; and the records read back, in order.
    #[test]
    fn queued_records_are_written_ahead_and_the_queue_outlives_a_roll() {
        for direct in [true, false] {
            let d = dir(if direct { "ahead" } else { "ahead-cached" });
            let (mut log, _) = read_with(&d, 0, direct).unwrap();
            log.set_segment_bytes(4 * WRITE_AHEAD as u64);
            let rec = |z: u64| vec![z as u8; 10_000 + z as usize];
            let mut rolled = false;
            for z in 1..=200 {
                let file = log.open.as_ref().map(|o| o.path.clone());
                log.append(z, &rec(z)).unwrap();
                let o = log.open.as_ref().unwrap();
                assert!(o.buf.len() < WRITE_AHEAD, "{} bytes queued", o.buf.len());
                if file.is_some_and(|f| f != o.path) {
                    rolled = true;
                    assert!(o.buf.capacity() >= WRITE_AHEAD, "the queue was dropped");
                }
            }
            assert!(rolled);
            let o = log.open.as_ref().unwrap();
            assert!(o.pos > HEADER, "nothing was written before the sync");
            log.sync().unwrap();
            drop(log);
            let (_, got) = read_with(&d, 0, direct).unwrap();
            assert_eq!(got, (1..=200).map(|z| (z, rec(z))).collect::<Vec<_>>());
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    /// A log that outgrows its spares takes the file zeroed ahead while it
    /// was idle: the roll reuses that file instead of creating one, and the
    /// records read back across it. Also when it was zeroed only in part,
    /// and when a restart found it left over.
    #[test]
    fn the_next_file_is_zeroed_ahead_and_taken_by_the_roll() {
        use std::os::unix::fs::MetadataExt;
        fn rec(z: u64) -> Vec<u8> {
            vec![z as u8; 3000]
        }
        fn append(log: &mut TxnLog, z: &mut u64) {
            *z += 1;
            log.append(*z, &rec(*z)).unwrap();
            log.sync().unwrap();
        }
        for (full, restart) in [(true, false), (false, false), (false, true)] {
            let d = dir(&format!("prepare-{full}-{restart}"));
            let (mut log, _) = read(&d, 0).unwrap();
            log.segment_bytes = 2 * PIECE;
            let mut z = 0;
            append(&mut log, &mut z);
            assert!(
                !log.prepare_ahead().unwrap(),
                "nothing before a quarter of the file"
            );
            assert!(log.preparing.is_none());
            while log.open.as_ref().unwrap().pos < log.segment_bytes / 4 {
                append(&mut log, &mut z);
            }
            assert!(log.prepare_ahead().unwrap(), "one piece of two, more to do");
            let path = log.preparing.as_ref().unwrap().path.clone();
            if full {
                assert!(!log.prepare_ahead().unwrap(), "done");
                assert_eq!(log.spares, vec![path.clone()]);
                assert!(
                    !log.prepare_ahead().unwrap(),
                    "a spare is there: nothing to do"
                );
            } else if restart {
                // A restart finds the half-zeroed file and keeps it as a spare.
                drop(log);
                let (l, got) = read(&d, 0).unwrap();
                log = l;
                assert_eq!(got.len() as u64, z);
                assert_eq!(log.spares, vec![path.clone()]);
            }
            let ino = std::fs::metadata(&path).unwrap().ino();
            let before = log.files();
            while log.files() == before {
                append(&mut log, &mut z);
            }
            let open = &log.open.as_ref().unwrap().path;
            assert_eq!(
                std::fs::metadata(open).unwrap().ino(),
                ino,
                "the roll took it"
            );
            assert!(log.spares.is_empty() && log.preparing.is_none());
            for _ in 0..30 {
                append(&mut log, &mut z);
            }
            drop(log);
            let (_, got) = read(&d, 0).unwrap();
            assert_eq!(got, (1..=z).map(|z| (z, rec(z))).collect::<Vec<_>>());
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}
