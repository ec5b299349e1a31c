"""Shared fixtures: real zkd and Apache ZooKeeper servers on loopback.

Every server gets a fresh data directory and a free port on 127.0.0.1, is
started as a real process, and is killed at the end of its fixture. Waits are
bounded; nothing here sleeps for a fixed time when it can poll instead.
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from ports import free_port  # noqa: E402,F401 (tests import it from here)

# The same default as scripts/env.sh: the build lives outside the clone.
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/cache/zkfs-target")
ZKD = os.environ.get("ZKD_BIN", os.path.join(TARGET, "release", "zkd"))
ZK_SERVER_SH = "/usr/share/zookeeper/bin/zkServer.sh"
ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"
CLI_MT = "/usr/lib/zookeeper/bin/cli_mt"
# The digest of "super:test"; both servers grant it the super identity.
SUPER_DIGEST = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
# Options the reference needs to match zkd's defaults where tests compare
# them: TTL nodes on (zkd's default), a short container check, a super user.
REFERENCE_JVMFLAGS = (
    "-Dzookeeper.extendedTypesEnabled=true -Dznode.container.checkIntervalMs=300 -Dzookeeper.enforceQuota=true "
    f"-Dzookeeper.DigestAuthenticationProvider.superDigest={SUPER_DIGEST}"
)


def four_letter(port, word, timeout=5.0, host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(word.encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.decode()
            out += chunk


def rss_kib(pid):
    """A process's resident memory (VmRSS), in KiB; 0 if it has none."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def flush_a_blob_file(zk, data_dir):
    """Writes /big/n0../big/n99, 100 MB of incompressible data, into a zkd
    whose dataDir is `data_dir`: that fills a 64 MB memtable, so RocksDB
    flushes the big values to a blob file and the keys to an SST. Waits
    for the blob file; returns a function listing the checkpoint's files.
    (Values just under jute.maxbuffer, 1 MiB with the header.)"""
    db = os.path.join(data_dir, "zkd.db")
    zk.create("/big")
    for i in range(100):
        zk.create(f"/big/n{i}", os.urandom(1000 << 10))
    checkpoint = lambda: glob.glob(f"{db}/*.sst") + glob.glob(f"{db}/*.blob")
    wait_until(lambda: any(p.endswith(".blob") for p in checkpoint()), 60,
               what="RocksDB to flush a blob file")
    return checkpoint


def threads_named(pid, name):
    """{tid: (policy, cpu ticks)} of the process's threads called `name`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        # policy is field 41, utime and stime 14 and 15 (index - 3 here).
        out[tid] = (int(fields[38]), int(fields[11]) + int(fields[12]))
    return out


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Zkd:
    """A zkd process with its own data directory."""

    kind = "zkd"

    def __init__(self, tmp, extra_cfg="", port=None):
        self.dir = tmp
        self.port = port or free_port()
        self.data = os.path.join(tmp, "data")
        self.cfg_path = os.path.join(tmp, "zoo.cfg")
        self.log_path = os.path.join(tmp, "zkd.log")
        self.extra_cfg = extra_cfg
        self.proc = None
        self.write_cfg()

    def write_cfg(self):
        with open(self.cfg_path, "w") as f:
            f.write(
                f"tickTime=200\ndataDir={self.data}\nclientPort={self.port}\n"
                f"clientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\n"
                f"maxClientCnxns=0\nznode.container.checkIntervalMs=300\n"
                f"zookeeper.DigestAuthenticationProvider.superDigest={SUPER_DIGEST}\n{self.extra_cfg}"
            )

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    def start(self, wait=True):
        self.log = open(self.log_path, "a")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen([ZKD, "serve", self.cfg_path], stdout=self.log, stderr=self.log, env=env)
        if wait:
            wait_until(lambda: four_letter(self.port, "ruok", 1) == "imok", 20, what="zkd to answer ruok")
        return self

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self):
        self.kill9()
        return self.start()

    def logtext(self):
        with open(self.log_path) as f:
            return f.read()


class ReferenceZk:
    """Apache ZooKeeper 3.8.0 from Debian, standalone, fsync on."""

    kind = "zookeeper"

    def __init__(self, tmp, extra_cfg=""):
        self.dir = tmp
        self.port = free_port()
        self.data = os.path.join(tmp, "data")
        os.makedirs(self.data, exist_ok=True)
        self.cfg_path = os.path.join(tmp, "zoo.cfg")
        with open(self.cfg_path, "w") as f:
            f.write(
                f"tickTime=200\ndataDir={self.data}\nclientPort={self.port}\n"
                f"clientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\n"
                f"admin.enableServer=false\nmaxClientCnxns=0\n{extra_cfg}"
            )
        self.proc = None

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        env = dict(os.environ, ZOOCFGDIR=self.dir, ZOO_LOG_DIR=self.dir, ZOO_LOG4J_PROP="WARN,ROLLINGFILE",
                   SERVER_JVMFLAGS=REFERENCE_JVMFLAGS)
        self.log = open(os.path.join(self.dir, "zk.out"), "a")
        self.proc = subprocess.Popen(
            [ZK_SERVER_SH, "start-foreground", self.cfg_path],
            stdout=self.log, stderr=self.log, env=env, start_new_session=True,
        )
        # ruok answers before the server takes sessions; srvr shows a mode only
        # once it serves.
        wait_until(lambda: "Mode:" in four_letter(self.port, "srvr", 1), 60, what="ZooKeeper to serve")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def tmpdir_path():
    d = tempfile.mkdtemp(prefix="zkd-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def zkd(tmpdir_path):
    s = Zkd(tmpdir_path).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def zkd_module():
    d = tempfile.mkdtemp(prefix="zkd-test-")
    s = Zkd(d).start()
    yield s
    s.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module", params=["zkd", "zookeeper"])
def any_server(request):
    """The same test against zkd and against the reference server."""
    d = tempfile.mkdtemp(prefix=f"{request.param}-test-")
    s = Zkd(d) if request.param == "zkd" else ReferenceZk(d)
    s.start()
    yield s
    s.stop()
    shutil.rmtree(d, ignore_errors=True)


def client(hosts, timeout=10.0, **kw):
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=hosts, timeout=timeout, **kw)
    zk.start(timeout=15)
    return zk


@pytest.fixture
def zk(any_server):
    """A kazoo client of `any_server`."""
    c = client(any_server.hosts)
    yield c
    c.stop()
    c.close()


@pytest.fixture
def base(zk):
    """A fresh znode for one test, so module-scoped servers can be shared."""
    import uuid

    p = "/t-" + uuid.uuid4().hex[:8]
    zk.create(p, b"base")
    return p
