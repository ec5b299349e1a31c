"""The rest of the 3.x API over the raw protocol, against zkd and Apache
ZooKeeper alike: containers, TTL nodes, persistent and recursive watches,
checkWatches/removeWatches, setWatches2, whoAmI, getEphemerals,
getAllChildrenNumber, multiRead, reconfig, and the super digest."""
import time
import uuid

import pytest

import rawzk
from rawzk import create, delete, i32, i64, path_watch, set_data, ustr
from conftest import client, wait_until

# Opcodes
CREATE, DELETE, EXISTS, GETDATA, SETDATA, GETCHILDREN = 1, 2, 3, 4, 5, 8
CHECK_WATCHES, REMOVE_WATCHES, CREATE_CONTAINER, CREATE_TTL, MULTI_READ = 17, 18, 19, 21, 22
RECONFIG, GET_EPHEMERALS, ALL_CHILDREN, SET_WATCHES2, ADD_WATCH, WHO_AM_I = 16, 103, 104, 105, 106, 107


class Session:
    def __init__(self, port):
        self.raw = rawzk.Raw(port)
        self.info = self.raw.handshake(timeout=4000)
        self.events = []

    def call(self, op, body=b"", xid=None):
        """(err, reader) of the reply; watch events met on the way are kept."""
        x = self.raw.request(op, body, xid)
        while True:
            xid_, zxid, err, r = self.raw.reply()
            if xid_ == -1:
                self.events.append(self._event(r))
                continue
            assert xid_ == x
            return err, r

    @staticmethod
    def _event(r):
        typ, state, path = r.int(), r.int(), r.str()
        return (typ, path)

    def wait_events(self, n, timeout=5.0):
        self.raw.sock.settimeout(timeout)
        while len(self.events) < n:
            xid, zxid, err, r = self.raw.reply()
            assert xid == -1, xid
            self.events.append(self._event(r))
        got, self.events = self.events[:n], self.events[n:]
        return got

    def close(self):
        self.raw.close()


@pytest.fixture
def s(any_server):
    sess = Session(any_server.port)
    yield sess
    sess.close()


@pytest.fixture
def root(s):
    p = "/x-" + uuid.uuid4().hex[:8]
    assert s.call(CREATE, create(p))[0] == 0
    return p


def ttl_create(path, ttl, flags=5):
    return create(path, flags=flags) + i64(ttl)


def stat_of(s, path):
    err, r = s.call(EXISTS, path_watch(path))
    return r.stat() if err == 0 else None


def test_container_is_removed_after_its_last_child(s, root):
    c = f"{root}/c"
    assert s.call(CREATE_CONTAINER, create(c, flags=4))[0] == 0
    assert stat_of(s, c)["ephemeralOwner"] == 0
    assert s.call(CREATE, create(f"{c}/kid"))[0] == 0
    never = f"{root}/never"
    assert s.call(CREATE_CONTAINER, create(never, flags=4))[0] == 0
    assert s.call(DELETE, delete(f"{c}/kid"))[0] == 0
    wait_until(lambda: stat_of(s, c) is None, 10, what="the empty container to go")
    time.sleep(1.0)
    assert stat_of(s, never) is not None, "a container that never had children stays"


def test_create_flag_4_without_the_container_opcode_is_persistent(s, root):
    p = f"{root}/p4"
    assert s.call(CREATE, create(p, flags=4))[0] == 0
    assert s.call(CREATE, create(f"{p}/k"))[0] == 0
    assert s.call(DELETE, delete(f"{p}/k"))[0] == 0
    time.sleep(1.0)
    assert stat_of(s, p) is not None


@pytest.mark.parametrize("op,flags,ttl,err", [
    (CREATE_TTL, 5, 1000, 0),
    (CREATE_TTL, 0, 1000, -8),
    (CREATE_TTL, 1, 1000, -8),
    (CREATE_TTL, 5, 0, -8),
    (CREATE_TTL, 5, -1, -8),
    (CREATE_TTL, 5, 1 << 40, -8),
    (CREATE_TTL, 5, (1 << 40) - 1, 0),
])
def test_ttl_create_validation(s, root, op, flags, ttl, err):
    assert s.call(op, ttl_create(f"{root}/t", ttl, flags))[0] == err


def test_ttl_flag_on_plain_create_is_refused(s, root):
    assert s.call(CREATE, create(f"{root}/t", flags=5))[0] == -8
    assert s.call(15, create(f"{root}/t", flags=7))[0] == -8


def test_ttl_node_expires_when_childless_and_unmodified(s, root):
    t = f"{root}/t"
    err, r = s.call(CREATE_TTL, ttl_create(t, 600))
    assert err == 0 and r.str() == t
    assert stat_of(s, t)["ephemeralOwner"] == 0
    held = f"{root}/held"
    assert s.call(CREATE_TTL, ttl_create(held, 600))[0] == 0
    # A TTL node may have ephemeral children; while it has any it stays.
    assert s.call(CREATE, create(f"{held}/e", flags=1))[0] == 0
    seq = s.call(CREATE_TTL, ttl_create(f"{root}/s-", 600, flags=6))
    assert seq[0] == 0 and seq[1].str() == f"{root}/s-0000000002"
    wait_until(lambda: stat_of(s, t) is None, 10, what="the TTL node to expire")
    wait_until(lambda: stat_of(s, f"{root}/s-0000000002") is None, 10, what="the sequential TTL node to expire")
    assert stat_of(s, held) is not None


def test_persistent_watch_events_in_order(any_server, s, root):
    other = client(any_server.hosts)
    p = f"{root}/pw"
    other.create(p)
    assert s.call(ADD_WATCH, ustr(p) + i32(0))[0] == 0
    other.set(p, b"1")
    other.set(p, b"2")
    other.create(f"{p}/kid")
    other.create(f"{p}/kid/grandkid")
    other.delete(f"{p}/kid/grandkid")
    other.delete(f"{p}/kid")
    other.delete(p)
    assert s.wait_events(5) == [(3, p), (3, p), (4, p), (4, p), (2, p)]
    other.create(p)   # still watching after the node went away
    assert s.wait_events(1) == [(1, p)]
    other.stop()


def test_recursive_watch_sees_the_subtree_but_not_child_lists(any_server, s, root):
    other = client(any_server.hosts)
    p = f"{root}/rw"
    other.create(p)
    assert s.call(ADD_WATCH, ustr(p) + i32(1))[0] == 0
    other.create(f"{p}/a")
    other.create(f"{p}/a/b", b"x")
    other.set(f"{p}/a/b", b"y")
    other.delete(f"{p}/a/b")
    other.set(p, b"z")
    other.create(f"{root}/sibling")     # outside: nothing
    other.set(f"{p}/a", b"w")
    assert s.wait_events(6) == [
        (1, f"{p}/a"), (1, f"{p}/a/b"), (3, f"{p}/a/b"), (2, f"{p}/a/b"), (3, p), (3, f"{p}/a"),
    ]
    other.stop()


def test_add_watch_with_an_unknown_mode(s, root):
    assert s.call(ADD_WATCH, ustr(root) + i32(7))[0] == -5


def test_check_and_remove_watches(s, root):
    assert s.call(GETDATA, path_watch(root, True))[0] == 0
    assert s.call(CHECK_WATCHES, ustr(root) + i32(2))[0] == 0     # data
    assert s.call(CHECK_WATCHES, ustr(root) + i32(3))[0] == 0     # any
    assert s.call(CHECK_WATCHES, ustr(root) + i32(1))[0] == -121  # children: none
    assert s.call(REMOVE_WATCHES, ustr(root) + i32(1))[0] == -121
    assert s.call(REMOVE_WATCHES, ustr(root) + i32(2))[0] == 0
    assert s.call(REMOVE_WATCHES, ustr(root) + i32(2))[0] == -121
    assert s.call(REMOVE_WATCHES, ustr(root) + i32(9))[0] == -5
    assert s.call(GETCHILDREN, path_watch(root, True))[0] == 0
    assert s.call(REMOVE_WATCHES, ustr(root) + i32(3))[0] == 0
    assert s.call(CHECK_WATCHES, ustr(root) + i32(3))[0] == -121


def test_removed_watch_does_not_fire(any_server, s, root):
    other = client(any_server.hosts)
    assert s.call(GETDATA, path_watch(root, True))[0] == 0
    assert s.call(REMOVE_WATCHES, ustr(root) + i32(2))[0] == 0
    other.set(root, b"changed")
    other.create(f"{root}/marker")
    assert s.call(GETCHILDREN, path_watch(root, True))[0] == 0
    other.create(f"{root}/marker2")
    assert s.wait_events(1) == [(4, root)]
    other.stop()


def test_set_watches2_restores_persistent_watches(any_server, root):
    other = client(any_server.hosts)
    sub = f"{root}/sub"
    other.create(sub)
    a = Session(any_server.port)
    body = i64(0) + i32(0) + i32(0) + i32(0) + i32(1) + ustr(root) + i32(1) + ustr(sub)
    a.raw.request(SET_WATCHES2, body, xid=-8)
    xid, _, err, _ = a.raw.reply()
    assert (xid, err) == (-8, 0)
    other.create(f"{root}/k")          # persistent on root: child list changed
    other.create(f"{sub}/deep")        # recursive on sub: created
    assert a.wait_events(2) == [(4, root), (1, f"{sub}/deep")]
    a.close()
    other.stop()


def test_watch_modes_coexist_on_one_path(zkd_module):
    """3.9 semantics (ZOOKEEPER-4466): a persistent and a recursive watch on
    the same path both stay; 3.8 let the last one replace the other. Each
    change still notifies the connection once."""
    other = client(zkd_module.hosts)
    root = "/co-" + uuid.uuid4().hex[:8]
    other.create(root)
    a = Session(zkd_module.port)
    assert a.call(ADD_WATCH, ustr(root) + i32(0))[0] == 0
    assert a.call(ADD_WATCH, ustr(root) + i32(1))[0] == 0
    assert a.call(GETDATA, path_watch(root, True))[0] == 0
    other.create(f"{root}/k")
    other.set(root, b"x")
    assert a.wait_events(3) == [(1, f"{root}/k"), (4, root), (3, root)]
    assert a.call(CHECK_WATCHES, ustr(root) + i32(4))[0] == 0
    assert a.call(REMOVE_WATCHES, ustr(root) + i32(5))[0] == 0
    assert a.call(CHECK_WATCHES, ustr(root) + i32(5))[0] == -121
    a.close()
    other.stop()


def test_who_am_i(s):
    err, r = s.call(WHO_AM_I)
    assert err == 0
    n = r.int()
    assert [(r.str(), r.str()) for _ in range(n)] == [("ip", "127.0.0.1")]
    s.raw.request(100, i32(0) + ustr("digest") + ustr(b"alice:secret"), xid=-4)
    assert s.raw.reply()[2] == 0
    err, r = s.call(WHO_AM_I)
    n = r.int()
    assert sorted((r.str(), r.str()) for _ in range(n)) == [("digest", "alice"), ("ip", "127.0.0.1")]


def test_get_ephemerals_and_all_children_number(s, root):
    for name in ["e1", "e2"]:
        assert s.call(CREATE, create(f"{root}/{name}", flags=1))[0] == 0
    assert s.call(CREATE, create(f"{root}/p"))[0] == 0
    assert s.call(CREATE, create(f"{root}/p/q"))[0] == 0
    err, r = s.call(GET_EPHEMERALS, ustr(root))
    n = r.int()
    assert sorted(r.str() for _ in range(n)) == [f"{root}/e1", f"{root}/e2"]
    err, r = s.call(ALL_CHILDREN, ustr(root))
    assert err == 0 and r.int() == 4
    assert s.call(ALL_CHILDREN, ustr(f"{root}/nope"))[0] == -101


def test_multi_read(s, root):
    assert s.call(CREATE, create(f"{root}/a", b"A"))[0] == 0

    def op(typ, path):
        return i32(typ) + b"\0" + i32(-1) + ustr(path) + b"\0"  # path, watch flag

    body = op(8, root) + op(4, f"{root}/a") + op(4, f"{root}/missing") + i32(-1) + b"\1" + i32(-1)
    err, r = s.call(MULTI_READ, body)
    assert err == 0
    typ, done, e = r.int(), r.take(1), r.int()
    assert typ == 8 and [r.str() for _ in range(r.int())] == ["a"]
    typ, done, e = r.int(), r.take(1), r.int()
    assert typ == 4 and r.buf() == b"A"
    r.stat()
    typ, done, e = r.int(), r.take(1), r.int()
    assert typ == -1 and r.int() == -101


def test_reconfig_is_disabled_standalone(s):
    body = ustr(None) + ustr(None) + ustr(None) + i64(-1)
    assert s.call(RECONFIG, body)[0] == -123


def test_super_digest_bypasses_acls(any_server, s, root):
    owner = client(any_server.hosts)
    owner.add_auth("digest", "alice:secret")
    from kazoo.security import make_digest_acl
    p = f"{root}/locked"
    owner.create(p, b"secret", acl=[make_digest_acl("alice", "secret", all=True)])
    assert s.call(GETDATA, path_watch(p))[0] == -102
    s.raw.request(100, i32(0) + ustr("digest") + ustr(b"super:test"), xid=-4)
    assert s.raw.reply()[2] == 0
    err, r = s.call(GETDATA, path_watch(p))
    assert err == 0 and r.buf() == b"secret"
    assert s.call(DELETE, delete(p))[0] == 0
    owner.stop()
