"""kazoo's recipes end to end against zkd, several clients at once. Each
recipe is exercised for its promise (mutual exclusion, leader uniqueness,
barrier release, exactly-once consumption), with bounded waits."""
import threading
import time
import uuid

import pytest
from kazoo.recipe.barrier import Barrier, DoubleBarrier
from kazoo.recipe.cache import TreeCache, TreeEvent
from kazoo.recipe.counter import Counter
from kazoo.recipe.election import Election
from kazoo.recipe.lock import Lock, ReadLock, Semaphore, WriteLock
from kazoo.recipe.party import Party
from kazoo.recipe.queue import LockingQueue, Queue
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from conftest import client, wait_until

N = 4


@pytest.fixture(scope="module")
def clients(zkd_module):
    cs = [client(zkd_module.hosts) for _ in range(N)]
    yield cs
    for c in cs:
        c.stop()
        c.close()


@pytest.fixture
def base():
    return "/recipes-" + uuid.uuid4().hex[:8]


def run_all(fns, timeout=30):
    threads = [threading.Thread(target=f, daemon=True) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a recipe thread did not finish in time"


class Occupancy:
    """Counts how many threads are inside a section at once."""

    def __init__(self):
        self.now = 0
        self.peak = 0
        self.entries = 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.entries += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *a):
        with self.lock:
            self.now -= 1


def test_lock_excludes_and_serves_every_contender(clients, base):
    occ = Occupancy()
    shared = {"n": 0}

    def worker(c):
        def run():
            lock = Lock(c, f"{base}/lock")
            for _ in range(5):
                with lock:
                    with occ:
                        v = shared["n"]
                        time.sleep(0.002)
                        shared["n"] = v + 1
        return run

    run_all([worker(c) for c in clients])
    assert occ.peak == 1 and shared["n"] == 5 * N


def test_lock_is_fair(clients, base):
    holder = Lock(clients[0], f"{base}/fair")
    holder.acquire()
    order = []
    waiters = []
    for i, c in enumerate(clients[1:], 1):
        lk = Lock(c, f"{base}/fair", identifier=str(i))

        def run(lk=lk, i=i):
            with lk:
                order.append(i)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        waiters.append(t)
        wait_until(lambda i=i: len(holder.contenders()) == i + 1, 10, what="contender to queue")
    holder.release()
    for t in waiters:
        t.join(20)
    assert order == [1, 2, 3]


def test_nonblocking_acquire(clients, base):
    a, b = Lock(clients[0], f"{base}/nb"), Lock(clients[1], f"{base}/nb")
    assert a.acquire(blocking=False)
    assert not b.acquire(blocking=False)
    a.release()
    assert b.acquire(timeout=5)
    b.release()


def test_read_write_lock(clients, base):
    # Readers share, a writer waits for them and excludes new readers. (A
    # loop of many concurrent acquire/release rounds hangs inside kazoo
    # 2.8's ReadLock/WriteLock against Apache ZooKeeper too, so the
    # recipe's promises are checked step by step.)
    r1, r2 = ReadLock(clients[0], f"{base}/rw"), ReadLock(clients[1], f"{base}/rw")
    w = WriteLock(clients[2], f"{base}/rw")
    assert r1.acquire(timeout=5) and r2.acquire(timeout=5)
    assert not w.acquire(blocking=False)
    got = threading.Event()
    threading.Thread(target=lambda: (w.acquire(timeout=10), got.set()), daemon=True).start()
    time.sleep(0.3)
    assert not got.is_set(), "writer entered while readers held the lock"
    r1.release()
    r2.release()
    assert got.wait(5)
    r3 = ReadLock(clients[3], f"{base}/rw")
    assert not r3.acquire(blocking=False)
    w.release()
    assert r3.acquire(timeout=5)
    r3.release()


def test_semaphore_bounds_concurrency(clients, base):
    occ = Occupancy()

    def run_with(c):
        def run():
            for _ in range(3):
                with Semaphore(c, f"{base}/sem", max_leases=2):
                    with occ:
                        time.sleep(0.02)
        return run

    run_all([run_with(c) for c in clients])
    assert occ.peak == 2 and occ.entries == 3 * N


def test_election_has_one_leader_and_fails_over(zkd_module, base):
    cs = [client(zkd_module.hosts) for _ in range(3)]
    leaders = []
    active = Occupancy()
    stop = threading.Event()

    def candidate(i):
        def lead():
            with active:
                leaders.append(i)
                stop.wait(0.3)
        return lambda: Election(cs[i], f"{base}/election", str(i)).run(lead)

    threads = [threading.Thread(target=candidate(i), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(leaders) == 3, 20, what="every candidate to lead in turn")
    assert active.peak == 1
    for c in cs:
        c.stop()


def test_election_moves_when_the_leader_dies(zkd_module, base):
    a, b = client(zkd_module.hosts), client(zkd_module.hosts)
    led = threading.Event()
    b_led = threading.Event()
    threading.Thread(target=lambda: Election(a, f"{base}/el", "a").run(lambda: (led.set(), time.sleep(60))),
                     daemon=True).start()
    assert led.wait(10)
    threading.Thread(target=lambda: Election(b, f"{base}/el", "b").run(b_led.set), daemon=True).start()
    time.sleep(0.3)
    assert not b_led.is_set()
    assert Election(b, f"{base}/el").contenders() == ["a", "b"]
    a.stop()  # closes the session: its ephemeral goes, b takes over
    assert b_led.wait(10)
    b.stop()


def test_barrier(clients, base):
    bar = Barrier(clients[0], f"{base}/bar")
    bar.create()
    passed = threading.Event()
    threading.Thread(target=lambda: (Barrier(clients[1], f"{base}/bar").wait(20), passed.set()), daemon=True).start()
    time.sleep(0.3)
    assert not passed.is_set()
    bar.remove()
    assert passed.wait(10)


def test_double_barrier(clients, base):
    inside = []
    left = []

    def party(i):
        def run():
            db = DoubleBarrier(clients[i], f"{base}/dbar", 3)
            db.enter()
            inside.append(i)
            db.leave()
            left.append(i)
        return run

    threads = [threading.Thread(target=party(i), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert inside == [], "entered before the third party arrived"
    last = threading.Thread(target=party(2), daemon=True)
    last.start()
    for t in threads + [last]:
        t.join(20)
    assert sorted(inside) == [0, 1, 2] and sorted(left) == [0, 1, 2]


def test_counter(clients, base):
    def inc(c):
        def run():
            counter = Counter(c, f"{base}/count")
            for _ in range(25):
                counter += 1
        return run

    run_all([inc(c) for c in clients])
    assert Counter(clients[0], f"{base}/count").value == 25 * N


def test_queue(clients, base):
    q = Queue(clients[0], f"{base}/q")
    for i in range(10):
        q.put(f"item{i}".encode(), priority=100 if i % 2 else 50)
    got = []
    while len(got) < 10:
        v = Queue(clients[1], f"{base}/q").get()
        if v is None:
            break
        got.append(v.decode())
    assert got == [f"item{i}" for i in range(0, 10, 2)] + [f"item{i}" for i in range(1, 10, 2)]
    assert len(q) == 0


def test_locking_queue_consumes_each_item_once(clients, base):
    q = LockingQueue(clients[0], f"{base}/lq")
    for i in range(20):
        q.put(str(i).encode())
    consumed = []
    lock = threading.Lock()

    def consumer(c):
        def run():
            lq = LockingQueue(c, f"{base}/lq")
            while True:
                item = lq.get(timeout=1)
                if item is None:
                    return
                with lock:
                    consumed.append(int(item))
                assert lq.consume()
        return run

    run_all([consumer(c) for c in clients])
    assert sorted(consumed) == list(range(20))


def test_party(clients, base):
    parties = [Party(c, f"{base}/party", f"member{i}") for i, c in enumerate(clients)]
    for p in parties:
        p.join()
    assert len(parties[0]) == N
    assert sorted(parties[0]) == [f"member{i}" for i in range(N)]
    parties[1].leave()
    assert len(parties[0]) == N - 1


def test_data_watch(clients, base):
    seen = []
    got = threading.Condition()
    clients[1].create(f"{base}/dw", b"0", makepath=True)

    @DataWatch(clients[0], f"{base}/dw")
    def watch(data, stat):
        with got:
            seen.append(data)
            got.notify_all()

    for v in [b"1", b"2", b"3"]:
        clients[1].set(f"{base}/dw", v)
        with got:
            assert got.wait_for(lambda v=v: seen and seen[-1] == v, 10), seen
    clients[1].delete(f"{base}/dw")
    with got:
        assert got.wait_for(lambda: seen[-1] is None, 10)


def test_children_watch(clients, base):
    seen = []
    clients[1].ensure_path(f"{base}/cw")

    @ChildrenWatch(clients[0], f"{base}/cw")
    def watch(children):
        seen.append(sorted(children))

    clients[1].create(f"{base}/cw/a")
    clients[1].create(f"{base}/cw/b")
    wait_until(lambda: seen and seen[-1] == ["a", "b"], 10, what="children watch to see a and b")
    clients[1].delete(f"{base}/cw/a")
    wait_until(lambda: seen[-1] == ["b"], 10, what="children watch to see the delete")


def test_tree_cache(clients, base):
    writer = clients[1]
    writer.ensure_path(f"{base}/tc")
    cache = TreeCache(clients[0], f"{base}/tc")
    events = []
    cache.listen(lambda e: events.append(e.event_type))
    cache.start()
    try:
        writer.create(f"{base}/tc/x", b"1")
        writer.create(f"{base}/tc/x/y", b"2")
        # Let the cache see the first value: if it read x only after the set,
        # it would rightly report no update.
        wait_until(lambda: cache.get_data(f"{base}/tc/x/y") is not None
                   and cache.get_data(f"{base}/tc/x").data == b"1", 10, what="the cache to load")
        writer.set(f"{base}/tc/x", b"3")
        wait_until(lambda: cache.get_data(f"{base}/tc/x/y") is not None
                   and cache.get_data(f"{base}/tc/x").data == b"3", 10, what="the cache to follow")
        assert sorted(cache.get_children(f"{base}/tc")) == ["x"]
        writer.delete(f"{base}/tc/x", recursive=True)
        wait_until(lambda: cache.get_data(f"{base}/tc/x") is None, 10, what="the cache to see the delete")
        # The cache's listeners are called from its own thread, after its
        # state changed: the removal can be seen before it is told.
        wait_until(lambda: TreeEvent.NODE_REMOVED in events, 10, what="the cache to report the delete")
        assert TreeEvent.NODE_ADDED in events and TreeEvent.NODE_UPDATED in events
    finally:
        cache.close()
