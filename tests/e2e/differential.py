"""Differential testing: the same seeded random operations against zkd and
Apache ZooKeeper, compared reply by reply, event by event, and tree by tree.

Each step sends one request on one session to both servers (over raw
sockets, so both see identical bytes), then pings every session as a
barrier: watch events of a change are delivered before any reply that
follows it, so after the barrier both servers must have sent the same
events. Replies and events are compared after masking what must differ:
times, session ids (mapped to session numbers) and the zxid in watch
notifications (3.9 sends the triggering zxid, 3.8 sends -1). zxids are
otherwise compared as they are: both servers must assign the same zxid to
the same transaction, failed writes included.

Sessions are closed and reopened, and now and then abandoned: both servers
must then expire them (ephemerals removed, watchers told) before the run goes
on, so expiry is compared too.

Deliberate differences are not generated: addWatch with two modes on one
path from one session (3.9 semantics in zkd), removeWatches of types 4/5, a
standalone check that passes (ZooKeeper 3.8 never answers it), checkWatches
(3.8 answers for any connection's watches, not the caller's).

Run directly for a longer search: python3 differential.py ZKD_PORT ZK_PORT
--seeds N --steps M (or scripts/differential.sh, which starts both).
"""
import random
import struct

import rawzk
from rawzk import i32, i64, ustr

PATHS = ["/d", "/d/a", "/d/b", "/d/a/x", "/d/a/y", "/d/b/z", "/d/c", "/d/c/q"]
DIGEST_ACL = i32(1) + i32(31) + ustr("digest") + ustr("alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=")
READ_ACL = i32(1) + i32(1) + ustr("world") + ustr("anyone")
BAD_ACL = i32(1) + i32(31) + ustr("world") + ustr("someone")


SESSION_MS = 1000
VERBOSE = bool(__import__("os").environ.get("DIFF_VERBOSE"))


class Diverged(AssertionError):
    pass


def read_stat(r):
    return r.stat()


def decode_reply(op, r, sessions, base):
    """A comparable form of a successful reply body."""
    def stat():
        s = r.stat()
        s["ctime"] = s["mtime"] = "T"
        for z in ("czxid", "mzxid", "pzxid"):
            s[z] -= base
        s["ephemeralOwner"] = sessions.get(s["ephemeralOwner"], s["ephemeralOwner"])
        return s

    if op in (1,):
        return r.str()
    if op in (15, 19, 21):
        return (r.str(), stat())
    if op in (3, 5, 7):
        return stat()
    if op == 4:
        return (r.buf(), stat())
    if op == 8:
        return sorted(r.str() for _ in range(r.int()))
    if op == 12:
        kids = sorted(r.str() for _ in range(r.int()))
        return (kids, stat())
    if op == 6:
        acl = [(r.int(), r.str(), r.str()) for _ in range(r.int())]
        return (acl, stat())
    if op == 9:
        return r.str()
    if op == 103:
        return sorted(r.str() for _ in range(r.int()))
    if op == 104:
        return r.int()
    if op == 14:
        out = []
        while True:
            typ, done, err = r.int(), r.take(1)[0], r.int()
            if done:
                return out
            if typ == -1:
                out.append(("err", r.int()))
            elif typ == 1:
                out.append(("create", r.str()))
            elif typ in (15, 19, 21):
                out.append(("create2", r.str(), stat()))
            elif typ == 5:
                out.append(("set", stat()))
            else:
                out.append((typ,))
    return r.b[r.p:]


class Side:
    """One server: N raw sessions."""

    def __init__(self, name, port, n):
        self.name, self.port = name, port
        self.sess = []
        self.ids = {}
        self.base = 0
        self.pending_events = [[] for _ in range(n)]
        for i in range(n):
            self.open(i)
        # zxids are compared relative to where each server stood at the start.
        self.base = self.call(0, 3, rawzk.path_watch("/"))[0]

    def open(self, i):
        raw = rawzk.Raw(self.port, timeout=10)
        # Short sessions, kept alive by the barrier's pings, so that an
        # abandoned one expires within a second or two.
        info = raw.handshake(timeout=SESSION_MS)
        if i < len(self.sess):
            self.sess[i] = raw
        else:
            self.sess.append(raw)
        self.ids = {k: v for k, v in self.ids.items() if v != i}
        self.ids[info["session"]] = i

    def call(self, i, op, body):
        raw = self.sess[i]
        x = raw.request(op, body)
        events = []
        while True:
            rep = raw.reply()
            if rep is None:
                return ("closed", events)
            xid, zxid, err, r = rep
            if xid == -1:
                events.append((r.int(), r.int(), r.str()))
                continue
            if xid != x:
                raise Diverged(f"{self.name}: reply xid {xid} != {x}")
            val = decode_reply(op, r, self.ids, self.base) if err == 0 else None
            return (zxid - self.base, err, val, events)

    def barrier(self):
        """Ping every session; the events met on the way, per session."""
        out = []
        for k, raw in enumerate(self.sess):
            raw.request(11, b"", xid=-2)
            ev, self.pending_events[k] = self.pending_events[k], []
            while True:
                xid, zxid, err, r = raw.reply()
                if xid == -1:
                    ev.append((r.int(), r.int(), r.str()))
                elif xid == -2:
                    break
            out.append(ev)
        return out

    def tree(self, root="/d"):
        """Every node under root: path -> (data, stat, acl, children)."""
        raw = self.sess[0]
        out = {}
        stack = [root]
        while stack:
            p = stack.pop()
            r0 = self.call(0, 4, rawzk.path_watch(p))
            if r0[1] == -101:
                continue
            if r0[1] == -102:
                out[p] = "noauth"
                continue
            kids = self.call(0, 8, rawzk.path_watch(p))[2] or []
            acl = self.call(0, 6, ustr(p))
            out[p] = (r0[2], acl[2], kids)
            stack.extend(p.rstrip("/") + "/" + k for k in kids)
        return out

    def abandon(self, i):
        """Drops session i's connection without closing the session; returns
        its id, which the server must expire."""
        sid = next(k for k, v in self.ids.items() if v == i)
        self.sess[i].close()
        return sid

    def session_alive(self, sid):
        from conftest import four_letter
        return f"0x{sid:x}" in four_letter(self.port, "dump")

    def close(self):
        """Closes every session (an abandoned one would expire later, and its
        closeSession txn would shift the zxids of whatever runs next)."""
        for i, raw in enumerate(self.sess):
            try:
                self.call(i, -11, b"")
            except (OSError, Diverged):
                pass
            raw.close()


def random_op(rng, names_seen):
    """(op, body, description) of one random request."""
    p = rng.choice(PATHS + names_seen[-4:] if names_seen else PATHS)
    v = rng.choice([-1, -1, 0, 1, 2])
    k = rng.random()
    data = rng.choice([b"", b"v", b"\x00\xff", b"x" * rng.randrange(1, 300)])
    if k < 0.22:
        flags = rng.choice([0, 0, 1, 2, 3])
        if p == "/d":
            flags &= 1  # sequential children of "/" would depend on the whole server's history
        acl = rng.choice([rawzk.OPEN_ACL] * 6 + [READ_ACL, DIGEST_ACL, BAD_ACL])
        op = rng.choice([1, 15])
        return op, rawzk.create(p, data, flags, acl), f"create{op} {p} flags={flags}"
    if k < 0.32:
        return 2, rawzk.delete(p, v), f"delete {p} v={v}"
    if k < 0.42:
        return 5, rawzk.set_data(p, data, v), f"setData {p} v={v}"
    w = rng.random() < 0.5
    if k < 0.52:
        return 3, rawzk.path_watch(p, w), f"exists {p} watch={w}"
    if k < 0.62:
        return 4, rawzk.path_watch(p, w), f"getData {p} watch={w}"
    if k < 0.70:
        op = rng.choice([8, 12])
        return op, rawzk.path_watch(p, w), f"getChildren{op} {p} watch={w}"
    if k < 0.73:
        return 6, ustr(p), f"getACL {p}"
    if k < 0.76:
        acl = rng.choice([rawzk.OPEN_ACL, READ_ACL, BAD_ACL])
        return 7, ustr(p) + acl + i32(v), f"setACL {p} v={v}"
    if k < 0.79:
        # A standalone check that passes gets no reply from ZooKeeper 3.8
        # (zkd answers it, as 3.9 does), so only failing ones are generated.
        return 13, ustr(p) + i32(7), f"check {p} v=7"
    if k < 0.81:
        return 9, ustr(p), f"sync {p}"
    if k < 0.83:
        return 103, ustr(rng.choice(["/", "/d", "/d/a"])), "getEphemerals"
    if k < 0.85:
        return 104, ustr(p), f"getAllChildrenNumber {p}"
    if k < 0.87:
        # removeWatches only: ZooKeeper 3.8's checkWatches answers yes when any
        # connection watches the path (fixed in 3.9, which zkd follows).
        typ = rng.choice([1, 2, 3])
        return 18, ustr(p) + i32(typ), f"removeWatches {p} {typ}"
    # multi of 1-4 ops
    n = rng.randrange(1, 5)
    body = b""
    desc = []
    for _ in range(n):
        q = rng.choice(PATHS)
        c = rng.random()
        if c < 0.4:
            flags = rng.choice([0, 1, 2]) if q != "/d" else 0
            body += i32(1) + b"\0" + i32(-1) + rawzk.create(q, b"m", flags)
            desc.append(f"create {q}")
        elif c < 0.6:
            body += i32(2) + b"\0" + i32(-1) + rawzk.delete(q, rng.choice([-1, 0]))
            desc.append(f"delete {q}")
        elif c < 0.8:
            body += i32(5) + b"\0" + i32(-1) + rawzk.set_data(q, b"s", rng.choice([-1, 0, 1]))
            desc.append(f"set {q}")
        else:
            body += i32(13) + b"\0" + i32(-1) + ustr(q) + i32(rng.choice([-1, 0, 1]))
            desc.append(f"check {q}")
    body += i32(-1) + b"\1" + i32(-1)
    return 14, body, "multi[" + ", ".join(desc) + "]"


def run(zkd_port, zk_port, seed, steps=150, sessions=3):
    """Runs one seed; raises Diverged naming the seed and step on a difference."""
    rng = random.Random(seed)
    a = Side("zkd", zkd_port, sessions)
    b = Side("zookeeper", zk_port, sessions)
    names = []
    trace = []
    try:
        # Some sessions authenticate, so digest ACLs mean something.
        for side in (a, b):
            side.sess[1].request(100, i32(0) + ustr("digest") + ustr(b"alice:secret"), xid=-4)
            assert side.sess[1].reply()[2] == 0
            side.call(0, 1, rawzk.create("/d"))
        for step in range(steps):
            i = rng.randrange(sessions)
            roll = rng.random()
            if roll < 0.01:
                # abandon a session: both servers must expire it (its
                # ephemerals go, watchers hear of it), then open a new one
                import time
                gone = [(side, side.abandon(i)) for side in (a, b)]
                deadline = time.monotonic() + 20
                others = [j for j in range(sessions) if j != i]
                while any(side.session_alive(sid) for side, sid in gone):
                    if time.monotonic() > deadline:
                        raise Diverged("an abandoned session did not expire within 20 s")
                    for side in (a, b):
                        for j in others:  # keep the other sessions alive meanwhile
                            side.sess[j].request(11, b"", xid=-2)
                    time.sleep(0.1)
                    for side in (a, b):
                        for j in others:
                            while True:
                                xid, _, _, r = side.sess[j].reply()
                                if xid == -2:
                                    break
                                side.pending_events[j].append((r.int(), r.int(), r.str()))
                for side in (a, b):
                    side.open(i)
                trace.append(f"{step}: session {i} abandoned, expired and reopened")
            elif roll < 0.03:
                # close a session (its ephemerals go) and open a new one
                for side in (a, b):
                    side.call(i, -11, b"")
                    side.sess[i].close()
                    side.open(i)
                trace.append(f"{step}: session {i} closed and reopened")
            else:
                op, body, desc = random_op(rng, names)
                trace.append(f"{step}: s{i} {desc}")
                ra, rb = a.call(i, op, body), b.call(i, op, body)
                if VERBOSE:
                    print(trace[-1], "->", ra)
                if ra != rb:
                    raise Diverged(f"reply differs\n  zkd:       {ra}\n  zookeeper: {rb}")
                if ra[1] == 0 and op in (1, 15) and isinstance(ra[2], (str, tuple)):
                    created = ra[2] if isinstance(ra[2], str) else ra[2][0]
                    names.append(created)
            ea, eb = a.barrier(), b.barrier()
            mask = lambda evs: [sorted(e) for e in evs]
            if mask(ea) != mask(eb):
                raise Diverged(f"events differ\n  zkd:       {ea}\n  zookeeper: {eb}")
        ta, tb = a.tree(), b.tree()
        if ta != tb:
            diff = {k: (ta.get(k), tb.get(k)) for k in set(ta) | set(tb) if ta.get(k) != tb.get(k)}
            raise Diverged(f"final trees differ: {diff}")
        return len(trace)
    except (Diverged, OSError) as e:
        tail = "\n".join(trace[-int(__import__("os").environ.get("DIFF_TRACE", "8")):])
        raise Diverged(f"seed {seed} diverged at step {len(trace) - 1}: {e}\nlast steps:\n{tail}\n"
                       f"replay: python3 tests/e2e/differential.py ZKD_PORT ZK_PORT --seed {seed}") from None
    finally:
        a.close()
        b.close()


def cleanup(port):
    """Removes /d recursively so the next seed starts from the same tree."""
    from conftest import client
    zk = client(f"127.0.0.1:{port}")
    zk.add_auth("digest", "super:test")
    if zk.exists("/d"):
        zk.delete("/d", recursive=True)
    zk.stop()
    zk.close()


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zkd_port", type=int)
    ap.add_argument("zk_port", type=int)
    ap.add_argument("--seed", type=int, help="run this seed only")
    ap.add_argument("--seeds", type=int, default=100, help="run seeds 0..N-1")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    seeds = [args.seed] if args.seed is not None else range(args.seeds)
    failed = 0
    for s in seeds:
        try:
            run(args.zkd_port, args.zk_port, s, args.steps)
            print(f"seed {s}: same")
        except Diverged as e:
            failed += 1
            print(e)
        cleanup(args.zkd_port)
        cleanup(args.zk_port)
    print(f"{len(seeds) - failed} passed, {failed} failed")
    raise SystemExit(1 if failed else 0)
