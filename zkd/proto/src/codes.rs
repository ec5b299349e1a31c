//! The numbers of the protocol: opcodes, error codes, create modes, permission
//! bits, and watch event types and states, as in `ZooDefs` and `KeeperException`.

/// Request types (`ZooDefs.OpCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum OpCode {
    Notification = 0,
    Create = 1,
    Delete = 2,
    Exists = 3,
    GetData = 4,
    SetData = 5,
    GetAcl = 6,
    SetAcl = 7,
    GetChildren = 8,
    Sync = 9,
    Ping = 11,
    GetChildren2 = 12,
    Check = 13,
    Multi = 14,
    Create2 = 15,
    Reconfig = 16,
    CheckWatches = 17,
    RemoveWatches = 18,
    CreateContainer = 19,
    DeleteContainer = 20,
    CreateTtl = 21,
    MultiRead = 22,
    Auth = 100,
    SetWatches = 101,
    Sasl = 102,
    GetEphemerals = 103,
    GetAllChildrenNumber = 104,
    SetWatches2 = 105,
    AddWatch = 106,
    WhoAmI = 107,
    CreateSession = -10,
    CloseSession = -11,
    Error = -1,
}

impl OpCode {
    /// Requests that become transactions (and so go to the leader).
    pub fn is_write(self) -> bool {
        use OpCode::*;
        matches!(
            self,
            Create
                | Create2
                | CreateContainer
                | CreateTtl
                | Reconfig
                | Delete
                | SetData
                | SetAcl
                | Check
                | Multi
        )
    }

    pub fn from_i32(v: i32) -> Option<OpCode> {
        use OpCode::*;
        Some(match v {
            0 => Notification,
            1 => Create,
            2 => Delete,
            3 => Exists,
            4 => GetData,
            5 => SetData,
            6 => GetAcl,
            7 => SetAcl,
            8 => GetChildren,
            9 => Sync,
            11 => Ping,
            12 => GetChildren2,
            13 => Check,
            14 => Multi,
            15 => Create2,
            16 => Reconfig,
            17 => CheckWatches,
            18 => RemoveWatches,
            19 => CreateContainer,
            20 => DeleteContainer,
            21 => CreateTtl,
            22 => MultiRead,
            100 => Auth,
            101 => SetWatches,
            102 => Sasl,
            103 => GetEphemerals,
            104 => GetAllChildrenNumber,
            105 => SetWatches2,
            106 => AddWatch,
            107 => WhoAmI,
            -10 => CreateSession,
            -11 => CloseSession,
            -1 => Error,
            _ => return None,
        })
    }
}

/// `KeeperException.Code`. Kept as a newtype over the wire value so an
/// unknown code from a peer still round-trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    pub const OK: ErrorCode = ErrorCode(0);
    pub const SYSTEM_ERROR: ErrorCode = ErrorCode(-1);
    pub const RUNTIME_INCONSISTENCY: ErrorCode = ErrorCode(-2);
    pub const DATA_INCONSISTENCY: ErrorCode = ErrorCode(-3);
    pub const CONNECTION_LOSS: ErrorCode = ErrorCode(-4);
    pub const MARSHALLING_ERROR: ErrorCode = ErrorCode(-5);
    pub const UNIMPLEMENTED: ErrorCode = ErrorCode(-6);
    pub const OPERATION_TIMEOUT: ErrorCode = ErrorCode(-7);
    pub const BAD_ARGUMENTS: ErrorCode = ErrorCode(-8);
    pub const UNKNOWN_SESSION: ErrorCode = ErrorCode(-12);
    pub const API_ERROR: ErrorCode = ErrorCode(-100);
    pub const NO_NODE: ErrorCode = ErrorCode(-101);
    pub const NO_AUTH: ErrorCode = ErrorCode(-102);
    pub const BAD_VERSION: ErrorCode = ErrorCode(-103);
    pub const NO_CHILDREN_FOR_EPHEMERALS: ErrorCode = ErrorCode(-108);
    pub const NODE_EXISTS: ErrorCode = ErrorCode(-110);
    pub const NOT_EMPTY: ErrorCode = ErrorCode(-111);
    pub const SESSION_EXPIRED: ErrorCode = ErrorCode(-112);
    pub const INVALID_CALLBACK: ErrorCode = ErrorCode(-113);
    pub const INVALID_ACL: ErrorCode = ErrorCode(-114);
    pub const AUTH_FAILED: ErrorCode = ErrorCode(-115);
    pub const SESSION_MOVED: ErrorCode = ErrorCode(-118);
    pub const NOT_READ_ONLY: ErrorCode = ErrorCode(-119);
    pub const NO_WATCHER: ErrorCode = ErrorCode(-121);
    pub const QUOTA_EXCEEDED: ErrorCode = ErrorCode(-125);
    pub const THROTTLED_OP: ErrorCode = ErrorCode(-127);

    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "OK",
            -1 => "SystemError",
            -2 => "RuntimeInconsistency",
            -3 => "DataInconsistency",
            -4 => "ConnectionLoss",
            -5 => "MarshallingError",
            -6 => "Unimplemented",
            -7 => "OperationTimeout",
            -8 => "BadArguments",
            -12 => "UnknownSession",
            -100 => "APIError",
            -101 => "NoNode",
            -102 => "NoAuth",
            -103 => "BadVersion",
            -108 => "NoChildrenForEphemerals",
            -110 => "NodeExists",
            -111 => "NotEmpty",
            -112 => "SessionExpired",
            -113 => "InvalidCallback",
            -114 => "InvalidACL",
            -115 => "AuthFailed",
            -118 => "SessionMoved",
            -119 => "NotReadOnly",
            -121 => "NoWatcher",
            -125 => "QuotaExceeded",
            -127 => "ThrottledOp",
            _ => "Unknown",
        }
    }
}

/// Create flags (`CreateMode`), as sent in `CreateRequest.flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    Container,
    PersistentWithTtl,
    PersistentSequentialWithTtl,
}

impl CreateMode {
    pub fn from_flags(flags: i32) -> Option<CreateMode> {
        use CreateMode::*;
        Some(match flags {
            0 => Persistent,
            1 => Ephemeral,
            2 => PersistentSequential,
            3 => EphemeralSequential,
            4 => Container,
            5 => PersistentWithTtl,
            6 => PersistentSequentialWithTtl,
            _ => return None,
        })
    }

    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }

    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }
}

/// Permission bits (`ZooDefs.Perms`).
pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;
}

/// Special xids.
pub mod xid {
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
    pub const AUTH: i32 = -4;
    pub const SET_WATCHES: i32 = -8;
}

/// `Watcher.Event.EventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum EventType {
    None = -1,
    NodeCreated = 1,
    NodeDeleted = 2,
    NodeDataChanged = 3,
    NodeChildrenChanged = 4,
    DataWatchRemoved = 5,
    ChildWatchRemoved = 6,
    PersistentWatchRemoved = 7,
}

/// `Watcher.Event.KeeperState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum KeeperState {
    Disconnected = 0,
    SyncConnected = 3,
    AuthFailed = 4,
    ConnectedReadOnly = 5,
    SaslAuthenticated = 6,
    Expired = -112,
    Closed = 7,
}
