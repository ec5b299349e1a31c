//! Records of `zookeeper.jute` used on the client port, field for field in the
//! order the jute file gives them.

use crate::jute::{DecodeError, Reader, Result, Writer};

/// A jute record: decodes from a `Reader`, encodes into a `Writer`.
pub trait Record: Sized {
    fn read(r: &mut Reader) -> Result<Self>;
    fn write(&self, w: &mut Writer);

    fn decode(bytes: &[u8]) -> Result<Self> {
        Self::read(&mut Reader::new(bytes))
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.buf
    }
}

macro_rules! record {
    ($name:ident { $($field:ident : $ty:ty => $rd:ident / $wr:ident),* $(,)? }) => {
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name { $(pub $field: $ty),* }
        impl Record for $name {
            fn read(r: &mut Reader) -> Result<Self> {
                Ok($name { $($field: r.$rd()?),* })
            }
            fn write(&self, w: &mut Writer) {
                $( w.$wr(&self.$field); )*
            }
        }
    };
}

// Field adaptors so the macro can name one read and one write per field type.
impl Reader<'_> {
    fn acls(&mut self) -> Result<Vec<Acl>> {
        // An ACL is at least perms + two null strings: 12 bytes.
        self.vec(12, Acl::read)
    }
    fn stat(&mut self) -> Result<Stat> {
        Stat::read(self)
    }
}
impl Writer {
    fn w_i32(&mut self, v: &i32) {
        self.i32(*v);
    }
    fn w_i64(&mut self, v: &i64) {
        self.i64(*v);
    }
    fn w_bool(&mut self, v: &bool) {
        self.bool(*v);
    }
    fn w_buf(&mut self, v: &[u8]) {
        self.buffer(v);
    }
    fn w_str(&mut self, v: &str) {
        self.ustring(v);
    }
    fn w_strs(&mut self, v: &[String]) {
        self.strings(v);
    }
    fn w_acls(&mut self, v: &[Acl]) {
        self.i32(v.len() as i32);
        for a in v {
            a.write(self);
        }
    }
    fn w_stat(&mut self, v: &Stat) {
        v.write(self);
    }
}

record!(Stat {
    czxid: i64 => i64 / w_i64,
    mzxid: i64 => i64 / w_i64,
    ctime: i64 => i64 / w_i64,
    mtime: i64 => i64 / w_i64,
    version: i32 => i32 / w_i32,
    cversion: i32 => i32 / w_i32,
    aversion: i32 => i32 / w_i32,
    ephemeral_owner: i64 => i64 / w_i64,
    data_length: i32 => i32 / w_i32,
    num_children: i32 => i32 / w_i32,
    pzxid: i64 => i64 / w_i64,
});

record!(Id {
    scheme: String => ustring / w_str,
    id: String => ustring / w_str,
});

#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

impl std::hash::Hash for Id {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.scheme.hash(h);
        self.id.hash(h);
    }
}

impl Record for Acl {
    fn read(r: &mut Reader) -> Result<Self> {
        Ok(Acl {
            perms: r.i32()?,
            id: Id::read(r)?,
        })
    }
    fn write(&self, w: &mut Writer) {
        w.i32(self.perms);
        self.id.write(w);
    }
}

impl Acl {
    /// Bytes `write` puts out: perms, then the scheme and the id as
    /// length-prefixed strings.
    pub fn encoded_len(&self) -> usize {
        4 + 4 + self.id.scheme.len() + 4 + self.id.id.len()
    }

    pub fn new(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id {
                scheme: scheme.into(),
                id: id.into(),
            },
        }
    }

    /// `ZooDefs.Ids.OPEN_ACL_UNSAFE`.
    pub fn open_unsafe() -> Vec<Acl> {
        vec![Acl::new(crate::codes::perms::ALL, "world", "anyone")]
    }

    /// `ZooDefs.Ids.READ_ACL_UNSAFE`.
    pub fn read_unsafe() -> Vec<Acl> {
        vec![Acl::new(crate::codes::perms::READ, "world", "anyone")]
    }
}

/// The first frame of a connection. `read_only` is absent on the wire from
/// clients older than 3.4 (a 44-byte body instead of 45).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: Option<bool>,
}

impl Record for ConnectRequest {
    fn read(r: &mut Reader) -> Result<Self> {
        Ok(ConnectRequest {
            protocol_version: r.i32()?,
            last_zxid_seen: r.i64()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            passwd: r.buffer()?,
            read_only: if r.remaining() > 0 {
                Some(r.bool()?)
            } else {
                None
            },
        })
    }
    fn write(&self, w: &mut Writer) {
        w.i32(self.protocol_version)
            .i64(self.last_zxid_seen)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
    }
}

/// The answer to `ConnectRequest`; `read_only` is written only to clients that
/// sent one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: Option<bool>,
}

impl Record for ConnectResponse {
    fn read(r: &mut Reader) -> Result<Self> {
        Ok(ConnectResponse {
            protocol_version: r.i32()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            passwd: r.buffer()?,
            read_only: if r.remaining() > 0 {
                Some(r.bool()?)
            } else {
                None
            },
        })
    }
    fn write(&self, w: &mut Writer) {
        w.i32(self.protocol_version)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
    }
}

record!(RequestHeader { xid: i32 => i32 / w_i32, op: i32 => i32 / w_i32 });
record!(ReplyHeader { xid: i32 => i32 / w_i32, zxid: i64 => i64 / w_i64, err: i32 => i32 / w_i32 });

record!(CreateRequest {
    path: String => ustring / w_str,
    data: Vec<u8> => buffer / w_buf,
    acl: Vec<Acl> => acls / w_acls,
    flags: i32 => i32 / w_i32,
});
record!(CreateTtlRequest {
    path: String => ustring / w_str,
    data: Vec<u8> => buffer / w_buf,
    acl: Vec<Acl> => acls / w_acls,
    flags: i32 => i32 / w_i32,
    ttl: i64 => i64 / w_i64,
});
record!(CreateResponse { path: String => ustring / w_str });
record!(Create2Response { path: String => ustring / w_str, stat: Stat => stat / w_stat });
record!(DeleteRequest { path: String => ustring / w_str, version: i32 => i32 / w_i32 });
record!(PathWatch { path: String => ustring / w_str, watch: bool => bool / w_bool });
pub type ExistsRequest = PathWatch;
pub type GetDataRequest = PathWatch;
pub type GetChildrenRequest = PathWatch;
record!(StatResponse { stat: Stat => stat / w_stat });
pub type ExistsResponse = StatResponse;
pub type SetDataResponse = StatResponse;
pub type SetAclResponse = StatResponse;
record!(GetDataResponse { data: Vec<u8> => buffer / w_buf, stat: Stat => stat / w_stat });
record!(SetDataRequest {
    path: String => ustring / w_str,
    data: Vec<u8> => buffer / w_buf,
    version: i32 => i32 / w_i32,
});
record!(GetChildrenResponse { children: Vec<String> => strings / w_strs });
record!(GetChildren2Response { children: Vec<String> => strings / w_strs, stat: Stat => stat / w_stat });
record!(CheckVersionRequest { path: String => ustring / w_str, version: i32 => i32 / w_i32 });
record!(PathRequest { path: String => ustring / w_str });
pub type SyncRequest = PathRequest;
pub type SyncResponse = PathRequest;
pub type GetAclRequest = PathRequest;
record!(GetAclResponse { acl: Vec<Acl> => acls / w_acls, stat: Stat => stat / w_stat });
record!(SetAclRequest {
    path: String => ustring / w_str,
    acl: Vec<Acl> => acls / w_acls,
    version: i32 => i32 / w_i32,
});
record!(SetWatches {
    relative_zxid: i64 => i64 / w_i64,
    data_watches: Vec<String> => strings / w_strs,
    exist_watches: Vec<String> => strings / w_strs,
    child_watches: Vec<String> => strings / w_strs,
});
record!(SetWatches2 {
    relative_zxid: i64 => i64 / w_i64,
    data_watches: Vec<String> => strings / w_strs,
    exist_watches: Vec<String> => strings / w_strs,
    child_watches: Vec<String> => strings / w_strs,
    persistent_watches: Vec<String> => strings / w_strs,
    persistent_recursive_watches: Vec<String> => strings / w_strs,
});
record!(AuthPacket {
    typ: i32 => i32 / w_i32,
    scheme: String => ustring / w_str,
    auth: Vec<u8> => buffer / w_buf,
});
record!(WatcherEvent {
    typ: i32 => i32 / w_i32,
    state: i32 => i32 / w_i32,
    path: String => ustring / w_str,
});
record!(MultiHeader { typ: i32 => i32 / w_i32, done: bool => bool / w_bool, err: i32 => i32 / w_i32 });
record!(ErrorResponse { err: i32 => i32 / w_i32 });

/// One operation of a `multi` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    Create {
        op: i32,
        req: CreateRequest,
    },
    CreateTtl(CreateTtlRequest),
    Delete(DeleteRequest),
    SetData(SetDataRequest),
    Check(CheckVersionRequest),
    /// In a multiRead, as `GetChildrenRequest` (path and an ignored watch flag).
    GetChildren(PathWatch),
    /// In a multiRead, as `GetDataRequest` (path and an ignored watch flag).
    GetData(PathWatch),
}

/// A whole `multi` (or `multiRead`) request: ops until the `done` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiRequest {
    pub ops: Vec<MultiOp>,
}

impl Record for MultiRequest {
    fn read(r: &mut Reader) -> Result<Self> {
        let mut ops = Vec::new();
        loop {
            let h = MultiHeader::read(r)?;
            if h.done {
                return Ok(MultiRequest { ops });
            }
            ops.push(match h.typ {
                1 | 15 | 19 => MultiOp::Create {
                    op: h.typ,
                    req: CreateRequest::read(r)?,
                },
                21 => MultiOp::CreateTtl(CreateTtlRequest::read(r)?),
                2 => MultiOp::Delete(DeleteRequest::read(r)?),
                5 => MultiOp::SetData(SetDataRequest::read(r)?),
                13 => MultiOp::Check(CheckVersionRequest::read(r)?),
                8 => MultiOp::GetChildren(PathWatch::read(r)?),
                4 => MultiOp::GetData(PathWatch::read(r)?),
                t => return Err(DecodeError::BadValue("multi op type", t as i64)),
            });
        }
    }
    fn write(&self, w: &mut Writer) {
        for op in &self.ops {
            let (typ, body): (i32, Vec<u8>) = match op {
                MultiOp::Create { op, req } => (*op, req.encode()),
                MultiOp::CreateTtl(req) => (21, req.encode()),
                MultiOp::Delete(req) => (2, req.encode()),
                MultiOp::SetData(req) => (5, req.encode()),
                MultiOp::Check(req) => (13, req.encode()),
                MultiOp::GetChildren(req) => (8, req.encode()),
                MultiOp::GetData(req) => (4, req.encode()),
            };
            MultiHeader {
                typ,
                done: false,
                err: -1,
            }
            .write(w);
            w.bytes(&body);
        }
        MultiHeader {
            typ: -1,
            done: true,
            err: -1,
        }
        .write(w);
    }
}

/// One result of a `multi` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    Create(String),
    Create2(String, Stat),
    Delete,
    SetData(Stat),
    Check,
    GetChildren(Vec<String>),
    GetData(Vec<u8>, Stat),
    Error(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiResponse {
    pub results: Vec<MultiResult>,
}

impl Record for MultiResponse {
    fn read(r: &mut Reader) -> Result<Self> {
        let mut results = Vec::new();
        loop {
            let h = MultiHeader::read(r)?;
            if h.done {
                return Ok(MultiResponse { results });
            }
            results.push(match h.typ {
                1 => MultiResult::Create(r.ustring()?),
                15 | 19 | 21 => MultiResult::Create2(r.ustring()?, Stat::read(r)?),
                2 => MultiResult::Delete,
                5 => MultiResult::SetData(Stat::read(r)?),
                13 => MultiResult::Check,
                8 => MultiResult::GetChildren(r.strings()?),
                4 => MultiResult::GetData(r.buffer()?, Stat::read(r)?),
                -1 => MultiResult::Error(r.i32()?),
                t => return Err(DecodeError::BadValue("multi result type", t as i64)),
            });
        }
    }
    fn write(&self, w: &mut Writer) {
        for res in &self.results {
            let (typ, err) = match res {
                MultiResult::Create(_) => (1, 0),
                MultiResult::Create2(..) => (15, 0),
                MultiResult::Delete => (2, 0),
                MultiResult::SetData(_) => (5, 0),
                MultiResult::Check => (13, 0),
                MultiResult::GetChildren(_) => (8, 0),
                MultiResult::GetData(..) => (4, 0),
                MultiResult::Error(e) => (-1, *e),
            };
            MultiHeader {
                typ,
                done: false,
                err,
            }
            .write(w);
            match res {
                MultiResult::Create(p) => {
                    w.ustring(p);
                }
                MultiResult::Create2(p, s) => {
                    w.ustring(p);
                    s.write(w);
                }
                MultiResult::SetData(s) => s.write(w),
                MultiResult::GetChildren(c) => {
                    w.strings(c);
                }
                MultiResult::GetData(d, s) => {
                    w.buffer(d);
                    s.write(w);
                }
                MultiResult::Error(e) => {
                    w.i32(*e);
                }
                MultiResult::Delete | MultiResult::Check => {}
            }
        }
        // The reference ends a multi reply with {-1, true, -1}.
        MultiHeader {
            typ: -1,
            done: true,
            err: -1,
        }
        .write(w);
    }
}
