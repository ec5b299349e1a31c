"""Sessions: negotiation, reconnect with id and password, close, expiry with
ephemeral cleanup, and setWatches after a reconnect."""
import threading
import time
import uuid

import pytest
from kazoo.protocol.states import KazooState

import rawzk
from conftest import client, wait_until
from proxy import Proxy

# conftest writes tickTime=200 for both servers: sessions are clamped to
# [400, 4000] ms (2 and 20 ticks).


def test_timeout_negotiation_is_clamped(any_server):
    for asked, granted in [(1, 400), (1000, 1000), (10**6, 4000)]:
        raw = rawzk.Raw(any_server.port)
        rsp = raw.handshake(timeout=asked)
        assert rsp["timeout"] == granted and rsp["session"] != 0 and len(rsp["passwd"]) == 16
        raw.close()


def test_old_client_without_read_only_byte(any_server):
    raw = rawzk.Raw(any_server.port)
    rsp = raw.handshake(read_only=None)
    # Protocol, timeout, session, password (4+16): 36 bytes, no readOnly byte.
    assert rsp["len"] == 36 and rsp["session"] != 0
    raw.request(3, rawzk.path_watch("/"))
    assert raw.reply()[2] == 0
    raw.close()
    raw = rawzk.Raw(any_server.port)
    assert raw.handshake()["len"] == 37
    raw.close()


def test_reconnect_with_id_and_password_keeps_the_session(any_server):
    raw = rawzk.Raw(any_server.port)
    rsp = raw.handshake(timeout=4000)
    path = "/s-" + uuid.uuid4().hex[:8]
    raw.request(1, rawzk.create(path, flags=1))
    assert raw.reply()[2] == 0
    raw.close()  # no closeSession: the session lives on
    raw2 = rawzk.Raw(any_server.port)
    rsp2 = raw2.handshake(timeout=4000, session=rsp["session"], passwd=rsp["passwd"])
    assert rsp2["session"] == rsp["session"] and rsp2["passwd"] == rsp["passwd"]
    raw2.request(3, rawzk.path_watch(path))
    xid, zxid, err, r = raw2.reply()
    assert err == 0 and r.stat()["ephemeralOwner"] == rsp["session"]
    raw2.close()


def test_wrong_password_gets_the_expired_answer(any_server):
    raw = rawzk.Raw(any_server.port)
    rsp = raw.handshake()
    raw2 = rawzk.Raw(any_server.port)
    bad = bytes(16 - len(b"x")) + b"x"
    rsp2 = raw2.handshake(session=rsp["session"], passwd=bad)
    assert (rsp2["timeout"], rsp2["session"], rsp2["passwd"]) == (0, 0, b"\0" * 16)
    assert raw2.closed()
    raw.close()


def test_close_session_removes_ephemerals_at_once(any_server):
    zk = client(any_server.hosts)
    watcher = client(any_server.hosts)
    path = "/c-" + uuid.uuid4().hex[:8]
    zk.create(path, ephemeral=True)
    seen = threading.Event()
    watcher.exists(path, watch=lambda e: seen.set())
    zk.stop()
    zk.close()
    assert seen.wait(5)
    assert watcher.exists(path) is None
    watcher.stop()


def test_expiry_removes_ephemerals_and_answers_expired(any_server):
    watcher = client(any_server.hosts)
    raw = rawzk.Raw(any_server.port)
    rsp = raw.handshake(timeout=400)
    path = "/x-" + uuid.uuid4().hex[:8]
    raw.request(1, rawzk.create(path, flags=1))
    assert raw.reply()[2] == 0
    gone = threading.Event()
    assert watcher.exists(path, watch=lambda e: gone.set()) is not None
    # Stop talking: no pings. The session must expire and take its ephemeral.
    start = time.monotonic()
    assert gone.wait(10), "ephemeral not removed after expiry"
    assert time.monotonic() - start >= 0.3
    assert watcher.exists(path) is None
    raw.close()
    raw2 = rawzk.Raw(any_server.port)
    rsp2 = raw2.handshake(session=rsp["session"], passwd=rsp["passwd"])
    assert (rsp2["timeout"], rsp2["session"]) == (0, 0)
    assert raw2.closed()
    watcher.stop()


def test_kazoo_sees_session_expiry_and_recovers(any_server):
    proxy = Proxy(any_server.port)
    states = []
    zk = client(proxy.hosts, timeout=1.0)
    zk.add_listener(lambda s: states.append(s))
    path = "/k-" + uuid.uuid4().hex[:8]
    zk.create(path, ephemeral=True)
    old_session = zk.client_id[0]
    proxy.disconnect()
    observer = client(any_server.hosts)
    wait_until(lambda: observer.exists(path) is None, 15, what="ephemeral removal on expiry")
    proxy.resume()
    wait_until(lambda: KazooState.LOST in states, 15, what="kazoo to report LOST")
    wait_until(lambda: zk.connected and zk.client_id[0] != old_session, 15, what="a new session")
    zk.stop()
    observer.stop()
    proxy.close()


def set_watches_body(rel, data=(), exist=(), child=()):
    def strs(v):
        return rawzk.i32(len(v)) + b"".join(rawzk.ustr(x) for x in v)
    return rawzk.i64(rel) + strs(data) + strs(exist) + strs(child)


def test_set_watches_after_reconnect_delivers_missed_events(any_server):
    """What the Java and C clients send after reconnecting (kazoo instead
    drops its watches on connection loss): SetWatches with the last zxid the
    client saw. Missed changes fire at once; the rest are re-registered."""
    other = client(any_server.hosts)
    base = "/r-" + uuid.uuid4().hex[:8]
    for p in [base, f"{base}/x", f"{base}/gone", f"{base}/same"]:
        other.create(p)
    raw = rawzk.Raw(any_server.port)
    rsp = raw.handshake(timeout=4000)
    raw.request(3, rawzk.path_watch(base))
    _, seen_zxid, _, _ = raw.reply()
    raw.close()
    other.set(f"{base}/x", b"1")
    other.create(f"{base}/new")
    other.delete(f"{base}/gone")
    raw = rawzk.Raw(any_server.port)
    assert raw.handshake(timeout=4000, session=rsp["session"], passwd=rsp["passwd"], last_zxid=seen_zxid)["session"] == rsp["session"]
    raw.request(101, set_watches_body(
        seen_zxid,
        data=[f"{base}/x", f"{base}/gone", f"{base}/same"],
        exist=[f"{base}/new", f"{base}/absent"],
        child=[base],
    ), xid=-8)
    events = []
    while True:
        xid, zxid, err, r = raw.reply()
        if xid == -8:
            assert err == 0
            break
        assert xid == -1
        events.append((r.int(), r.int(), r.str()))
    assert sorted(events) == sorted([
        (3, 3, f"{base}/x"), (2, 3, f"{base}/gone"), (1, 3, f"{base}/new"), (4, 3, base),
    ])
    # The watches that had nothing to report are now set.
    other.set(f"{base}/same", b"s")
    other.create(f"{base}/absent")
    later = []
    for _ in range(2):
        xid, zxid, err, r = raw.reply()
        assert xid == -1
        later.append((r.int(), r.int(), r.str()))
    assert later == [(3, 3, f"{base}/same"), (1, 3, f"{base}/absent")]
    raw.close()
    other.stop()


def test_client_ahead_of_server_is_refused(any_server):
    raw = rawzk.Raw(any_server.port)
    assert raw.handshake(last_zxid=1 << 40) is None
