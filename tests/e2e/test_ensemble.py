"""zkd ensembles: real processes on loopback, real kazoo clients.

Faults are real too: kill -9, SIGSTOP/SIGCONT, a packet filter isolating the
leader, a full restart, a wiped member. Correctness is checked with a
compare-and-set counter (every acknowledged increment is kept exactly once)
and with the tree digest every member reports in `mntr`.
"""
import os
import signal
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError

from ensemble import Ensemble
from conftest import threads_named, wait_until

# What a client sees when its server goes away mid-request.
LOST = (ConnectionLoss, SessionExpiredError, OperationTimeoutError, KazooTimeoutError)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="partitions need iptables (root)")


@pytest.fixture
def ens3(tmp_path):
    e = Ensemble(str(tmp_path), voters=3)
    try:
        e.start_all()
        yield e
    finally:
        e.close()


def client(hosts, timeout=10.0, randomize=True):
    c = KazooClient(
        hosts=hosts,
        timeout=timeout,
        randomize_hosts=randomize,
        connection_retry=dict(max_tries=-1, delay=0.05, max_delay=0.5),
    )
    c.start(timeout=30)
    return c


def assert_same_digest(e, ids):
    d = e.digests(ids)
    assert len({v for v in d.values()}) == 1, d
    return d


class CasCounter:
    """Clients on different members increment one znode by versioned
    setData. Every acknowledged increment names the version it created;
    two acknowledgements of the same version would mean a lost write."""

    def __init__(self, e, path="/counter", workers=6):
        self.e = e
        self.path = path
        self.stop = threading.Event()
        self.acked = []
        self.uncertain = 0
        self.lock = threading.Lock()
        self.errors = []
        setup = client(e.hosts())
        setup.create(path, b"0")
        setup.stop()
        setup.close()
        ids = list(e.ids)
        self.threads = [
            threading.Thread(target=self.work, args=(ids[k % len(ids)],), daemon=True)
            for k in range(workers)
        ]

    def work(self, home):
        # The member listed first is where this client starts.
        order = [home] + [i for i in self.e.ids if i != home]
        try:
            c = client(self.e.hosts(order), randomize=False)
        except Exception as ex:
            self.errors.append(repr(ex))
            return
        mine, unsure = [], 0
        try:
            while not self.stop.is_set():
                try:
                    data, st = c.get(self.path)
                except LOST:
                    time.sleep(0.05)
                    continue
                try:
                    c.set(self.path, str(int(data) + 1).encode(), version=st.version)
                    mine.append(st.version + 1)
                except BadVersionError:
                    pass
                except LOST:
                    unsure += 1
                    time.sleep(0.05)
        finally:
            with self.lock:
                self.acked.extend(mine)
                self.uncertain += unsure
            try:
                c.stop()
                c.close()
            except Exception:
                pass

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        assert not self.errors, self.errors
        c = client(self.e.hosts())
        c.sync(self.path)
        data, st = c.get(self.path)
        c.stop()
        c.close()
        value = int(data)
        assert value == st.version, (value, st.version)
        assert len(self.acked) == len(set(self.acked)), "an acknowledged version was written twice"
        assert len(self.acked) <= value <= len(self.acked) + self.uncertain, (
            len(self.acked),
            value,
            self.uncertain,
        )
        if self.acked:
            assert max(self.acked) <= value
        return value


def write_through(e, ids, path, timeout=30.0, since=None):
    """Seconds from `since` (default: now) until a create through one of
    `ids` succeeds."""
    start = since if since is not None else time.monotonic()
    c = KazooClient(hosts=e.hosts(ids), timeout=10.0, connection_retry=dict(max_tries=-1, delay=0.02, max_delay=0.2))
    c.start(timeout=30)
    try:
        while True:
            try:
                c.create(path, b"")
                return time.monotonic() - start
            except LOST:
                if time.monotonic() - start > timeout:
                    raise
                time.sleep(0.01)
    finally:
        c.stop()
        c.close()


def test_every_member_serves_and_forwards(ens3):
    e = ens3
    leader = e.leader()
    assert e.mntr(leader)["zk_synced_followers"] == "2"
    cs = {i: client(e.hosts([i]), randomize=False) for i in e.ids}
    try:
        for i, c in cs.items():
            c.create(f"/from{i}", f"{i}".encode())
        for i, c in cs.items():
            c.sync("/")
            assert sorted(x for x in c.get_children("/") if x.startswith("from")) == ["from1", "from2", "from3"]
        # Read-your-writes on a follower: the reply comes after the txn is
        # applied there.
        f = next(i for i in e.ids if i != leader)
        for k in range(50):
            cs[f].set(f"/from{f}", str(k).encode())
            assert cs[f].get(f"/from{f}")[0] == str(k).encode()
        # Pipelined writes through a follower keep their order.
        rs = [cs[f].create_async("/seq-", b"", sequence=True) for _ in range(200)]
        names = [r.get(timeout=30) for r in rs]
        assert names == sorted(names)
        # A watch set on one member fires for a write through another.
        fired = threading.Event()
        other = next(i for i in e.ids if i not in (leader, f))
        cs[other].get(f"/from{leader}", watch=lambda ev: fired.set())
        cs[leader].set(f"/from{leader}", b"changed")
        assert fired.wait(10)
        # An ephemeral goes everywhere when its session closes.
        cs[f].create("/eph", b"", ephemeral=True)
        for c in cs.values():
            c.sync("/")
            assert c.exists("/eph")
        cs[f].stop()
        cs[f].close()
        for i in e.ids:
            if i != f:
                cs[i].sync("/")
                assert cs[i].exists("/eph") is None
        del cs[f]
        # Errors come back through a follower like from the leader.
        with pytest.raises(NoNodeError):
            cs[other].set("/missing", b"")
        cs[other].create("/p/c", b"", makepath=True)
        with pytest.raises(NotEmptyError):
            cs[other].delete("/p")
    finally:
        for c in cs.values():
            c.stop()
            c.close()
    assert_same_digest(e, e.ids)


def test_session_moves_to_another_member_with_its_watches(ens3):
    e = ens3
    leader = e.leader()
    f = next(i for i in e.ids if i != leader)
    order = [f] + [i for i in e.ids if i != f]
    c = client(e.hosts(order), randomize=False)
    w = client(e.hosts([leader]), randomize=False)
    try:
        sid = c.client_id[0]
        c.create("/mine", b"", ephemeral=True)
        w.create("/watched", b"0")
        fired = threading.Event()
        # Another client's write, read through another member: ZooKeeper
        # promises it only after a sync (the follower may not have applied
        # the commit yet when w's reply arrives; failed 1 run in 12).
        c.sync("/watched")
        c.get("/watched", watch=lambda ev: fired.set())
        e.kill(f)
        wait_until(lambda: c.connected and c.client_id[0] == sid, timeout=20, what="reconnect elsewhere")
        w.set("/watched", b"1")
        assert fired.wait(10), "watch lost in failover"
        w.sync("/")
        assert w.exists("/mine") is not None, "ephemeral lost with a live session"
    finally:
        c.stop()
        c.close()
        w.stop()
        w.close()


def test_cas_counter_survives_leader_kill_and_restart(ens3):
    e = ens3
    cas = CasCounter(e)
    cas.start()
    time.sleep(1.0)
    leader = e.leader()
    killed_at = time.monotonic()
    e.kill(leader)
    others = [i for i in e.ids if i != leader]
    took = write_through(e, others, "/after-kill", since=killed_at)
    print(f"leader kill -9 to first write accepted: {took * 1000:.0f} ms")
    new = e.leader(among=others)
    assert new != leader
    time.sleep(1.0)
    e.start(leader)
    e.wait_serving(e.ids)
    assert e.mode(leader) == "follower"
    time.sleep(1.0)
    value = cas.finish()
    assert value > 0
    assert_same_digest(e, e.ids)
    assert e.grep_log(new, "event=election role=leader")


def test_sigstop_of_leader_and_follower(ens3):
    e = ens3
    cas = CasCounter(e)
    cas.start()
    time.sleep(0.5)
    leader = e.leader()
    e.signal(leader, signal.SIGSTOP)
    others = [i for i in e.ids if i != leader]
    write_through(e, others, "/during-stop")
    new = e.leader(among=others)
    e.signal(leader, signal.SIGCONT)
    # Right after SIGCONT it may still report its old role for a tick before
    # it notices it lost its quorum; then it must come back as a follower.
    wait_until(lambda: e.mode(leader) == "follower", timeout=30, what="a stopped leader back as a follower")
    e.wait_serving(e.ids)
    # Now stop a follower: the ensemble keeps a quorum and goes on.
    f = next(i for i in e.ids if i not in (new,))
    e.signal(f, signal.SIGSTOP)
    write_through(e, [new], "/during-follower-stop")
    time.sleep(0.5)
    e.signal(f, signal.SIGCONT)
    e.wait_serving(e.ids)
    cas.finish()
    assert_same_digest(e, e.ids)


def test_isolated_leader_stops_taking_writes(ens3):
    e = ens3
    leader = e.leader()
    c = client(e.hosts([leader]), randomize=False)
    try:
        c.create("/before", b"")
        e.isolate(leader)
        # A write sent to the isolated leader before it notices: it prepares
        # it, no quorum ever logs it, and it must never be acknowledged.
        doomed = c.create_async("/minority", b"")
        # The majority elects a new leader and takes writes.
        others = [i for i in e.ids if i != leader]
        write_through(e, others, "/majority")
        new = e.leader(among=others)
        assert new != leader
        # The old leader gives up within syncLimit and refuses writes.
        wait_until(lambda: e.mode(leader) == "looking", timeout=20, what="isolated leader steps down")
        with pytest.raises((KazooException, KazooTimeoutError)):
            doomed.get(timeout=10)
        with pytest.raises((KazooException, KazooTimeoutError)):
            c.create_async("/minority2", b"").get(timeout=5)
        assert e.grep_log(leader, "stepped down with undelivered txns")
        # A request that timed out stays in kazoo's queue and would be sent,
        # legitimately, once the member serves again: drop the client first.
        c.stop()
        e.heal()
        e.wait_serving(e.ids)
        assert e.mode(leader) == "follower"
        d = client(e.hosts())
        d.sync("/")
        assert d.exists("/majority") and d.exists("/before")
        assert d.exists("/minority") is None and d.exists("/minority2") is None
        d.stop()
        d.close()
        assert_same_digest(e, e.ids)
    finally:
        c.stop()
        c.close()


def restart_all_keeps_tree(e):
    """kill -9 of every member, then all start again: a new epoch is elected
    and every member has the tree it had."""
    before = assert_same_digest(e, e.ids)
    for i in list(e.ids):
        e.kill(i)
    for i in e.ids:
        e.start(i)
    e.wait_serving(e.ids)
    after = assert_same_digest(e, e.ids)
    assert {v[1] for v in before.values()} == {v[1] for v in after.values()}


def test_full_restart_and_wiped_member_catch_up(ens3):
    e = ens3
    c = client(e.hosts())
    for k in range(300):
        c.create(f"/n{k}", str(k).encode())
    c.stop()
    c.close()
    restart_all_keeps_tree(e)
    # A member down for a long time catches up (the leader sends a diff),
    # and a member that lost its disk gets the whole history (a snapshot).
    leader = e.leader()
    down, wiped = [i for i in e.ids if i != leader]
    e.kill(down)
    e.kill(wiped)
    e.wipe(wiped)
    e.start(wiped)
    e.wait_serving([leader, wiped])
    c = client(e.hosts([leader, wiped]))
    for k in range(2000):
        c.create_async(f"/late{k}", b"x")
    c.sync("/")
    c.stop()
    c.close()
    e.start(down)
    e.wait_serving(e.ids)
    assert_same_digest(e, e.ids)
    assert e.grep_log(wiped, "event=election role=follower")


def test_compacted_logs_bring_learners_up_with_the_state(tmp_path):
    """With a small snapCount every member compacts its ZAB log; a member
    that falls behind the leader's log, or lost its disk, is sent the
    leader's tree and sessions (SNAP with state), and restarts come back
    from tree + compacted log."""
    e = Ensemble(str(tmp_path), voters=3, extra_cfg="snapCount=100\ncommitLogCount=20\n")
    try:
        e.start_all()
        owner = client(e.hosts())
        owner.create("/eph", b"mine", ephemeral=True)
        c = client(e.hosts())
        for k in range(300):
            c.create(f"/n{k}", str(k).encode())
        assert_same_digest(e, e.ids)
        for i in e.ids:
            m = e.mntr(i)
            assert int(m["zk_zab_log_base"], 16) > 0, m
            assert int(m["zk_zab_log_txns"]) <= 100, m
        leader = e.leader()
        behind, wiped = [i for i in e.ids if i != leader]
        # Writes through the leader only: it stays up while the others go.
        c.stop()
        c.close()
        c = client(e.hosts([leader]), randomize=False)
        e.kill(behind)
        for k in range(300):
            c.set(f"/n{k}", b"v2")
        e.start(behind)
        e.wait_serving(e.ids)
        assert_same_digest(e, e.ids)
        assert e.grep_log(leader, f"event=snapshot_sent to={behind}")
        assert e.grep_log(behind, "event=snapshot_installed")
        r = client(e.hosts([behind]), randomize=False)
        assert r.get("/n299")[0] == b"v2"
        assert r.get("/eph")[0] == b"mine"
        r.stop()
        r.close()
        # Lost its disk: the state again (the log starts above zero).
        e.kill(wiped)
        e.wipe(wiped)
        e.start(wiped)
        e.wait_serving(e.ids)
        assert_same_digest(e, e.ids)
        assert e.grep_log(wiped, "event=snapshot_installed")
        # The session that owns /eph came with the state: closing it removes
        # the node everywhere, including on the members that installed it.
        owner.stop()
        owner.close()
        for i in (behind, wiped):
            r = client(e.hosts([i]), randomize=False)
            wait_until(lambda: r.exists("/eph") is None, timeout=20, what="ephemeral gone")
            r.stop()
            r.close()
        # A full restart recovers every member from its tree and compacted
        # log, and a member that installed a state can lead.
        restart_all_keeps_tree(e)
        leader = e.leader()
        if leader not in (behind, wiped):
            e.kill(leader)
            e.leader(among=[behind, wiped])
        c = client(e.hosts([i for i in e.ids if i in e.procs and e.mode(i)]))
        c.create("/after", b"x")
        assert c.get("/n0")[0] == b"v2"
        c.stop()
        c.close()
    finally:
        e.close()


def test_a_snapshot_read_while_writes_go_on_leaves_the_learner_whole(tmp_path):
    """The leader reads a SNAP's state in the background and serves on;
    what it sends the learner meanwhile (proposals, commits) waits behind
    the SNAP on that learner's stream. A wiped member synced while clients
    write through the leader ends with the same tree as every member, and
    at least one of its syncs had frames held behind the SNAP (the log's
    held_frames), so that path ran."""
    e = Ensemble(str(tmp_path), voters=3, extra_cfg="snapCount=100\n")
    try:
        e.start_all()
        c = client(e.hosts())
        for start in range(0, 30000, 1000):
            for r in [c.create_async(f"/n{k}", b"x" * 100) for k in range(start, start + 1000)]:
                r.get(timeout=30)
        leader = e.leader()
        wiped = [i for i in e.ids if i != leader][0]
        w = client(e.hosts([leader]), randomize=False)
        held = []
        for attempt in range(3):
            stop = threading.Event()

            def write():
                deadline = time.monotonic() + 60
                n = 0
                while not stop.is_set() and time.monotonic() < deadline:
                    for r in [w.set_async(f"/n{(n + k) % 30000}", b"y%d" % n) for k in range(50)]:
                        r.get(timeout=30)
                    n += 50

            t = threading.Thread(target=write)
            t.start()
            try:
                e.kill(wiped)
                e.wipe(wiped)
                e.start(wiped)
                e.wait_serving(e.ids)
                # Writes go on a little after the sync, on the new stream.
                time.sleep(0.5)
            finally:
                stop.set()
                t.join(timeout=90)
            assert not t.is_alive()
            w.sync("/")
            assert_same_digest(e, e.ids)
            lines = e.grep_log(leader, f"event=snapshot_sent to={wiped} ")
            assert lines, "the wiped member was sent a SNAP"
            held.append(int(lines[-1].split("held_frames=")[1].split()[0]))
            if held[-1] > 0:
                break
        assert held[-1] > 0, held
        w.stop()
        w.close()
        c.stop()
        c.close()
    finally:
        e.close()


def test_observer_serves_and_does_not_vote(tmp_path):
    e = Ensemble(str(tmp_path), voters=3, observers=1)
    try:
        e.start_all()
        obs = 4
        assert e.mode(obs) == "observer"
        c = client(e.hosts([obs]), randomize=False)
        c.create("/via-observer", b"o")
        assert c.get("/via-observer")[0] == b"o"
        leader = e.leader(among=[1, 2, 3])
        assert e.mntr(leader)["zk_synced_observers"] == "1"
        # Two voters down: no quorum, even with the observer up.
        down = [i for i in (1, 2, 3) if i != leader]
        for i in down:
            e.kill(i)
        wait_until(lambda: e.mode(leader) == "looking", timeout=20, what="leader without quorum steps down")
        for i in down:
            e.start(i)
        e.wait_serving(e.ids)
        # The observer may drop its clients once more while it finds the
        # new leader: retry through that.
        c.retry(c.sync, "/")
        assert c.retry(c.exists, "/via-observer")
        c.stop()
        c.close()
        assert_same_digest(e, e.ids)
    finally:
        e.close()


def test_five_members_lose_two(tmp_path):
    e = Ensemble(str(tmp_path), voters=5)
    try:
        e.start_all()
        cas = CasCounter(e, workers=5)
        cas.start()
        time.sleep(0.5)
        leader = e.leader()
        victim = next(i for i in e.ids if i != leader)
        e.kill(leader)
        e.kill(victim)
        rest = [i for i in e.ids if i not in (leader, victim)]
        write_through(e, rest, "/three-of-five")
        time.sleep(1.0)
        e.start(leader)
        e.start(victim)
        e.wait_serving(e.ids)
        cas.finish()
        assert_same_digest(e, e.ids)
    finally:
        e.close()


def test_requests_in_flight_per_connection_are_capped(tmp_path):
    """connectionOutstandingRequestsMax: a follower whose leader is stalled
    reads at most that many requests of a connection, then stops reading
    it; everything completes, in order, once the leader runs again."""
    e = Ensemble(str(tmp_path), voters=3, sync_limit=100, extra_cfg="connectionOutstandingRequestsMax=5\n")
    try:
        e.start_all()
        leader = e.leader()
        f = next(i for i in e.ids if i != leader)
        c = client(e.hosts([f]), randomize=False)
        c.create("/cap", b"")
        e.signal(leader, signal.SIGSTOP)
        try:
            rs = [c.create_async("/cap/n-", b"", sequence=True) for _ in range(50)]
            seen = []
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                for line in e.four(f, "cons").splitlines():
                    if "queued=" in line and "lop=" in line:
                        seen.append(int(line.split("queued=")[1].split(",")[0]))
                time.sleep(0.05)
        finally:
            e.signal(leader, signal.SIGCONT)
        assert seen and max(seen) == 5, seen
        names = [r.get(timeout=30) for r in rs]
        assert names == sorted(names) and len(set(names)) == 50
        c.stop()
        c.close()
    finally:
        e.close()


def test_hostile_bytes_on_peer_ports_are_dropped(ens3):
    """Peer ports take connections from anyone on the network: a bad hello,
    an unknown server id, a lying frame length or an undecodable frame each
    end that connection, and the ensemble goes on serving."""
    import socket
    import struct

    e = ens3
    leader = e.leader()
    target = next(i for i in e.ids if i != leader)
    magic = 0x7A6B6451
    attempts = [
        b"GET / HTTP/1.0\r\n\r\n",
        struct.pack(">IQB", magic, 99, 2) + b"\x00" * 16,  # unknown id
        struct.pack(">IQB", magic, leader, 2) + struct.pack(">I", 0x3FFFFFFF) + b"x" * 10,
        struct.pack(">IQB", magic, leader, 2) + struct.pack(">I", 5) + b"\x07junk",
        struct.pack(">IQB", magic, leader, 1) + struct.pack(">I", 3) + b"\x00\x01\x02",
    ]
    for port in (e.quorum_port[target], e.election_port[target]):
        for payload in attempts:
            with socket.create_connection((e.ip[target], port), timeout=5) as s:
                s.sendall(payload)
                s.settimeout(1)
                try:
                    while s.recv(4096):
                        pass
                except (socket.timeout, ConnectionResetError):
                    pass
    c = client(e.hosts([target]), randomize=False)
    try:
        c.create("/still-fine", b"")
        c.sync("/")
        assert c.exists("/still-fine")
    finally:
        c.stop()
        c.close()
    assert e.mode(target) in ("follower", "leader")
    assert_same_digest(e, e.ids)


def test_the_event_loop_look_ends_when_requests_stop(tmp_path):
    """eventLoopLookMicros: a member's worker polls its sockets for a while
    after each step before it sleeps. Once the requests stop, the look
    ends: an idle member's workers use next to no CPU (the 50 ms core tick
    and the leader's pings do not keep it looking). Off unless set."""
    e = Ensemble(str(tmp_path), voters=3, extra_cfg="eventLoopLookMicros=300\n")
    try:
        e.start_all()
        for i in e.ids:
            assert "event_loop_look_us=300" in e.grep_log(i, "event=start")[0]
        c = client(e.hosts([1]), randomize=False)
        try:
            c.create("/look", b"")
            for n in range(300):
                c.set("/look", b"%d" % n)
                c.get("/look")
        finally:
            c.stop()
            c.close()
        time.sleep(0.5)
        before = {i: threads_named(e.procs[i].pid, "tokio-rt-worker") for i in e.ids}
        time.sleep(1.5)
        for i in e.ids:
            after = threads_named(e.procs[i].pid, "tokio-rt-worker")
            # 100 ticks a second: a look that never ended would be ~150.
            used = sum(after[t][1] - before[i][t][1] for t in before[i] if t in after)
            assert used <= 15, (i, used)
    finally:
        e.close()
