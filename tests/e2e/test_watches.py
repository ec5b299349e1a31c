"""Watches: one-shot data, exist and child watches, with ZooKeeper's ordering
guarantees, checked against zkd and the reference alike."""
import threading
import uuid

import pytest

import rawzk
from conftest import client, wait_until


class Events:
    def __init__(self):
        self.items = []
        self.cv = threading.Condition()

    def __call__(self, ev):
        with self.cv:
            self.items.append((ev.type, ev.path))
            self.cv.notify_all()

    def wait(self, n, timeout=10):
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.items) >= n, timeout), self.items
        return list(self.items)


def test_data_watch_is_one_shot(any_server, zk, base):
    other = client(any_server.hosts)
    ev = Events()
    zk.get(base, watch=ev)
    other.set(base, b"1")
    assert ev.wait(1) == [("CHANGED", base)]
    other.set(base, b"2")
    zk.sync(base)
    other.sync(base)
    assert ev.items == [("CHANGED", base)]
    other.stop()


def test_exists_watch_fires_on_create_and_delete(any_server, zk, base):
    other = client(any_server.hosts)
    ev = Events()
    assert zk.exists(f"{base}/n", watch=ev) is None
    other.create(f"{base}/n")
    assert ev.wait(1) == [("CREATED", f"{base}/n")]
    zk.exists(f"{base}/n", watch=ev)
    other.delete(f"{base}/n")
    assert ev.wait(2)[1] == ("DELETED", f"{base}/n")
    other.stop()


def test_child_watch(any_server, zk, base):
    other = client(any_server.hosts)
    ev = Events()
    zk.get_children(base, watch=ev)
    other.create(f"{base}/c")
    assert ev.wait(1) == [("CHILD", base)]
    zk.get_children(base, watch=ev)
    other.delete(f"{base}/c")
    assert ev.wait(2)[1] == ("CHILD", base)
    # Data changes of the parent do not fire child watches.
    zk.get_children(base, watch=ev)
    other.set(base, b"x")
    other.create(f"{base}/d")
    assert ev.wait(3)[2] == ("CHILD", base)
    other.stop()


def test_delete_fires_one_event_for_data_and_child_watch(any_server, base):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    raw.request(4, rawzk.path_watch(base, True))      # getData with watch
    raw.reply()
    raw.request(8, rawzk.path_watch(base, True))      # getChildren with watch
    raw.reply()
    other = client(any_server.hosts)
    other.delete(base)
    raw.request(3, rawzk.path_watch("/", False))      # exists, to flush
    frames = []
    while True:
        xid, zxid, err, r = raw.reply()
        frames.append(xid)
        if xid == -1:
            typ, state, path = r.int(), r.int(), r.str()
            assert (typ, state, path) == (2, 3, base)
        else:
            break
    assert frames.count(-1) == 1
    other.stop()
    raw.close()


def test_event_arrives_before_the_reply_that_shows_the_change(any_server, base):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    raw.request(4, rawzk.path_watch(base, True))
    xid, _, err, _ = raw.reply()
    assert err == 0
    other = client(any_server.hosts)
    other.set(base, b"new")
    x = raw.request(4, rawzk.path_watch(base, False))
    xid, zxid, err, r = raw.reply()
    assert xid == -1, "the watch event must come before the reply carrying the new data"
    xid, zxid, err, r = raw.reply()
    assert xid == x and r.buf() == b"new"
    other.stop()
    raw.close()


def test_events_arrive_in_update_order(any_server, base):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    other = client(any_server.hosts)
    names = [f"{base}/n{i}" for i in range(10)]
    for n in names:
        other.create(n)
        raw.request(4, rawzk.path_watch(n, True))
        assert raw.reply()[2] == 0
    order = [names[i] for i in (3, 7, 0, 9, 1, 5, 2, 8, 6, 4)]
    for n in order:
        other.set(n, b"x")
    seen = []
    while len(seen) < len(order):
        xid, zxid, err, r = raw.reply()
        assert xid == -1
        r.int(), r.int()
        seen.append(r.str())
    assert seen == order
    other.stop()
    raw.close()


def test_replies_come_in_request_order(any_server, base):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    sent = []
    for i in range(200):
        if i % 3 == 0:
            sent.append(raw.request(1, rawzk.create(f"{base}/p{i}", b"v")))
        elif i % 3 == 1:
            sent.append(raw.request(4, rawzk.path_watch(f"{base}/p{i - 1}")))
        else:
            sent.append(raw.request(5, rawzk.set_data(f"{base}/p{i - 2}", b"w")))
    got = []
    for _ in sent:
        xid, zxid, err, r = raw.reply()
        assert err == 0, (xid, err)
        got.append(xid)
    assert got == sent
    raw.close()


def test_order_holds_for_lone_requests_and_bursts_alike(any_server, base):
    """zkd answers a lone write from its storage thread right after the sync
    and a burst from the core; whichever way a reply goes, each connection
    gets its replies in request order, and the event of a watch it set just
    before the reply to its own write that fired it. Six connections
    at once, in waves of 1 to 60 pipelined create/getData(watch)/setData, so
    the server keeps switching between the two ways."""
    import random

    failures = []

    def session(n):
        rnd = random.Random(n)
        raw = rawzk.Raw(any_server.port, timeout=30)
        try:
            raw.handshake()
            i = 0
            for wave in range(60):
                expect = []
                for _ in range(rnd.choice([1, 1, 1, 2, 3, 8, 20, 60])):
                    p = f"{base}/c{n}-{i}"
                    i += 1
                    expect.append(raw.request(1, rawzk.create(p, b"v")))
                    expect.append(raw.request(4, rawzk.path_watch(p, True)))
                    x = raw.request(5, rawzk.set_data(p, b"w"))
                    expect += [-1, x]
                got = []
                for _ in expect:
                    xid, _, err, _ = raw.reply()
                    assert err == 0, (xid, err)
                    got.append(xid)
                assert got == expect, f"session {n} wave {wave}"
        except Exception as e:  # reported by the main thread
            failures.append(repr(e))
        finally:
            raw.close()

    threads = [threading.Thread(target=session, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a session hung"
    assert failures == []


def test_watch_notification_zxid_follows_3_9(zkd_module):
    """3.9 puts the triggering zxid in the notification header (3.8 sent -1)."""
    zk = client(zkd_module.hosts)
    base = "/z-" + uuid.uuid4().hex[:8]
    zk.create(base)
    raw = rawzk.Raw(zkd_module.port)
    raw.handshake()
    raw.request(4, rawzk.path_watch(base, True))
    raw.reply()
    st = zk.set(base, b"x")
    xid, zxid, err, r = raw.reply()
    assert xid == -1 and zxid == st.mzxid
    raw.close()
    zk.stop()
