"""A real zkd ensemble on loopback for tests and scripts.

Each member is a zkd process with its own data directory and its own
loopback address (127.0.X.i, X random per ensemble), so a packet filter can
cut one member off from the others while its client port stays reachable.
Waits are bounded; `close` kills every process and removes every filter rule
this ensemble added.
"""
import os
import random
import shutil
import signal
import subprocess

from conftest import ZKD, four_letter, free_port, wait_until


class Ensemble:
    def __init__(self, tmp, voters=3, observers=0, tick=200, sync_limit=5, extra_cfg=""):
        self.tmp = tmp
        self.ids = list(range(1, voters + observers + 1))
        self.observers = set(range(voters + 1, voters + observers + 1))
        self.net = random.randint(100, 250)
        self.ip = {i: f"127.0.{self.net}.{i}" for i in self.ids}
        self.client_port = {i: free_port() for i in self.ids}
        self.quorum_port = {i: free_port() for i in self.ids}
        self.election_port = {i: free_port() for i in self.ids}
        self.tick = tick
        self.sync_limit = sync_limit
        self.extra_cfg = extra_cfg
        self.procs = {}
        self.rules = []
        for i in self.ids:
            self.write_cfg(i)

    def dir(self, i):
        return os.path.join(self.tmp, f"n{i}")

    def data(self, i):
        return os.path.join(self.dir(i), "data")

    def log_path(self, i):
        return os.path.join(self.dir(i), "zkd.log")

    def cfg_path(self, i):
        return os.path.join(self.dir(i), "zoo.cfg")

    def write_cfg(self, i):
        os.makedirs(self.data(i), exist_ok=True)
        with open(os.path.join(self.data(i), "myid"), "w") as f:
            f.write(f"{i}\n")
        lines = [
            f"tickTime={self.tick}",
            "initLimit=10",
            f"syncLimit={self.sync_limit}",
            f"dataDir={self.data(i)}",
            f"clientPort={self.client_port[i]}",
            f"clientPortAddress={self.ip[i]}",
            "maxSessionTimeout=30000",
            "4lw.commands.whitelist=*",
        ]
        for j in self.ids:
            role = ":observer" if j in self.observers else ""
            lines.append(
                f"server.{j}={self.ip[j]}:{self.quorum_port[j]}:{self.election_port[j]}{role}"
            )
        with open(self.cfg_path(i), "w") as f:
            f.write("\n".join(lines) + "\n" + self.extra_cfg)

    # ---- processes -------------------------------------------------------

    def start(self, i):
        log = open(self.log_path(i), "a")
        self.procs[i] = subprocess.Popen(
            [ZKD, "serve", self.cfg_path(i)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        log.close()

    def start_all(self):
        for i in self.ids:
            self.start(i)
        self.wait_serving(self.ids)

    def kill(self, i, sig=signal.SIGKILL):
        p = self.procs.pop(i)
        if sig == signal.SIGTERM:
            p.terminate()
        else:
            p.send_signal(sig)
            if sig == signal.SIGSTOP:
                # Stopped, not gone: SIGCONT brings it back.
                self.procs[i] = p
                return
        p.wait(timeout=20)

    def signal(self, i, sig):
        self.procs[i].send_signal(sig)

    def wipe(self, i):
        """The member loses its disk: everything in dataDir but myid."""
        d = self.data(i)
        for name in os.listdir(d):
            if name != "myid":
                p = os.path.join(d, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    def close(self):
        self.heal()
        for p in self.procs.values():
            try:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(timeout=10)
            except Exception:
                pass
        self.procs.clear()

    # ---- inspection ------------------------------------------------------

    def mntr(self, i, timeout=2.0):
        out = four_letter(self.client_port[i], "mntr", timeout, host=self.ip[i])
        return dict(l.split("\t", 1) for l in out.splitlines() if "\t" in l)

    def four(self, i, word):
        return four_letter(self.client_port[i], word, 2.0, host=self.ip[i])

    def mode(self, i):
        try:
            return self.mntr(i).get("zk_server_state")
        except OSError:
            return None

    def wait_serving(self, ids, timeout=30):
        wait_until(
            lambda: all(self.mode(i) in ("leader", "follower", "observer") for i in ids),
            timeout=timeout,
            interval=0.05,
            what=f"members {ids} serving",
        )

    def leader(self, among=None, timeout=30):
        among = among or [i for i in self.ids if i in self.procs]
        found = []

        def one():
            found[:] = [i for i in among if self.mode(i) == "leader"]
            return len(found) == 1

        wait_until(one, timeout=timeout, interval=0.05, what="one leader")
        return found[0]

    def digests(self, ids):
        """(zxid, digest) per member once every member has applied the same zxid."""
        out = {}

        def same():
            out.clear()
            for i in ids:
                m = self.mntr(i)
                out[i] = (m["zk_tree_digest_zxid"], m["zk_tree_digest"])
            return len({v[0] for v in out.values()}) == 1

        wait_until(same, timeout=30, interval=0.1, what="members at the same zxid")
        return dict(out)

    def hosts(self, ids=None):
        return ",".join(f"{self.ip[i]}:{self.client_port[i]}" for i in (ids or self.ids))

    # ---- partitions (iptables on loopback) --------------------------------

    def isolate(self, i):
        """Cut member i off from every other member (client port untouched)."""
        for j in self.ids:
            if j == i:
                continue
            for src, dst in ((self.ip[i], self.ip[j]), (self.ip[j], self.ip[i])):
                rule = ["-s", src, "-d", dst, "-j", "DROP"]
                subprocess.run(["iptables", "-I", "INPUT", *rule], check=True)
                self.rules.append(rule)

    def heal(self):
        while self.rules:
            rule = self.rules.pop()
            subprocess.run(["iptables", "-D", "INPUT", *rule], check=False)

    def grep_log(self, i, needle):
        with open(self.log_path(i), errors="replace") as f:
            return [l for l in f if needle in l]

