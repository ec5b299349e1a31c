"""zoo.cfg handling and the zkd command line, through the real binary."""
import os
import subprocess
import time

import pytest

import rawzk
from conftest import ZKD, Zkd, client, four_letter, free_port, threads_named, wait_until


def serve(cfg_text, tmp, timeout=10):
    path = os.path.join(tmp, "zoo.cfg")
    with open(path, "w") as f:
        f.write(cfg_text)
    return subprocess.run([ZKD, "serve", path], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("cfg,expect", [
    ("dataDir={d}\nclientPort=21x81\n", "invalid value for clientPort: '21x81'"),
    ("dataDir={d}\nclientPort=2181\ntickTime=0\n", "invalid value for tickTime: '0'"),
    ("dataDir={d}\nclientPort=2181\ntickTime=abc\n", "invalid value for tickTime: 'abc'"),
    ("clientPort=2181\n", "dataDir is not set"),
    ("dataDir={d}\n", "clientPort is not set"),
    ("dataDir={d}\nclientPort=2181\nclientPortAddress=not-an-ip\n", "invalid value for clientPortAddress: 'not-an-ip'"),
    ("dataDir={d}\nclientPort=2181\nminSessionTimeout=9000\nmaxSessionTimeout=4000\n", "invalid value for minSessionTimeout: '9000'"),
    ("dataDir={d}\nclientPort=2181\nmaxClientCnxns=-3\n", "invalid value for maxClientCnxns: '-3'"),
    ("dataDir={d}\nclientPort=2181\nserver.1=host:2888\n", "invalid value for server.1: 'host:2888'"),
    ("dataDir={d}\nclientPort=2181\nserver.x=h:1:2\n", "invalid value for server.x"),
    ("dataDir={d}\nclientPort=2181\njute.maxbuffer=12\n", "invalid value for jute.maxbuffer: '12'"),
    ("dataDir={d}\nclientPort=2181\n4lw.commands.whitelist=srvr,bogus\n", "unknown command 'bogus'"),
    ("dataDir={d}\nclientPort=2181\ninitLimit=ten\n", "invalid value for initLimit: 'ten'"),
    ("dataDir={d}\nclientPort=2181\nglobalOutstandingLimit=0\n", "invalid value for globalOutstandingLimit: '0'"),
    ("dataDir={d}\nclientPort=2181\nschedSliceMicros=50\n", "invalid value for schedSliceMicros: '50' (expected 0 or 100 to 100000)"),
    ("dataDir={d}\nclientPort=2181\nschedSliceMicros=fast\n", "invalid value for schedSliceMicros: 'fast'"),
    ("dataDir={d}\nclientPort=2181\nsyncIdleSpin=yes\n", "invalid value for syncIdleSpin: 'yes' (must be true or false)"),
])
def test_invalid_values_refuse_to_start(tmpdir_path, cfg, expect):
    r = serve(cfg.format(d=os.path.join(tmpdir_path, "data")), tmpdir_path)
    assert r.returncode != 0
    assert expect in r.stderr, r.stderr


def test_missing_config_file(tmpdir_path):
    r = subprocess.run([ZKD, "serve", os.path.join(tmpdir_path, "nope.cfg")], capture_output=True, text=True)
    assert r.returncode != 0 and "cannot read" in r.stderr and "nope.cfg" in r.stderr


@pytest.mark.parametrize("myid", ["one", "0", "255"])
def test_bad_myid_with_server_lines(tmpdir_path, myid):
    d = os.path.join(tmpdir_path, "data")
    os.makedirs(d)
    with open(os.path.join(d, "myid"), "w") as f:
        f.write(myid + "\n")
    r = serve(f"dataDir={d}\nclientPort=2181\nserver.1=127.0.0.1:2888:3888\n", tmpdir_path)
    assert r.returncode != 0 and f"invalid value for myid: '{myid}'" in r.stderr, r.stderr


def thread_slices(pid):
    """Each thread's scheduler slice (ns) as /proc shows it (Linux 6.6+)."""
    out = {}
    task = f"/proc/{pid}/task"
    for tid in os.listdir(task):
        with open(f"{task}/{tid}/sched") as f:
            for line in f:
                if line.startswith("se.slice"):
                    out[tid] = int(line.split(":")[1])
    return out


@pytest.mark.parametrize("extra,want_us", [("", 300), ("schedSliceMicros=1000\n", 1000), ("schedSliceMicros=0\n", None)])
def test_every_thread_runs_with_the_configured_slice(tmpdir_path, extra, want_us):
    """schedSliceMicros (default 300) reaches every thread: the runtime's
    workers, the storage thread, RocksDB's; 0 leaves the kernel's own."""
    with open("/proc/self/sched") as f:
        if "se.slice" not in f.read():
            pytest.skip("this kernel shows no per-thread slice")
    s = Zkd(tmpdir_path, extra_cfg=extra).start()
    try:
        slices = thread_slices(s.proc.pid)
        names = {open(f"/proc/{s.proc.pid}/task/{t}/comm").read().strip() for t in slices}
        assert {"zkd-storage", "tokio-rt-worker"} <= names, names
        log = s.logtext()
        if want_us is None:
            assert "sched_slice_us=default" in log
            assert 300_000 not in slices.values(), slices
        elif "sched_slice_us=default" in log:
            pytest.skip("the kernel keeps no per-thread slice (before Linux 6.12)")
        else:
            assert f"sched_slice_us={want_us}" in log
            assert set(slices.values()) == {want_us * 1000}, slices
    finally:
        s.stop()


def test_a_chosen_scheduling_policy_is_left_alone(tmpdir_path):
    """Started under chrt --idle, zkd keeps SCHED_IDLE and asks for no
    slice: an operator's choice wins over the default."""
    s = Zkd(tmpdir_path)
    s.log = open(s.log_path, "a")
    env = dict(os.environ, RUST_LOG="info")
    s.proc = subprocess.Popen(["chrt", "--idle", "0", ZKD, "serve", s.cfg_path], stdout=s.log, stderr=s.log, env=env)
    try:
        wait_until(lambda: four_letter(s.port, "ruok", 1) == "imok", 20, what="zkd to answer ruok")
        log = s.logtext()
        assert "schedSliceMicros not applied: zkd runs under SCHED_IDLE" in log, log
        assert "sched_slice_us=default" in log
        for tid in os.listdir(f"/proc/{s.proc.pid}/task"):
            with open(f"/proc/{s.proc.pid}/task/{tid}/sched") as f:
                assert any(l.startswith("policy") and l.split(":")[1].strip() == "5" for l in f), tid
    finally:
        s.stop()


@pytest.mark.parametrize("extra", ["", "syncIdleSpin=false\n"])
def test_the_sync_idle_spin_helper_idles_with_the_server(tmpdir_path, extra):
    """syncIdleSpin (default true on a standalone server) starts a
    helper thread under SCHED_IDLE for the storage thread's CPU, and on a
    machine with more than one CPU a second for the CPU a lone write came
    from; after writes they park, so an idle server's helpers use no
    CPU. Off, there is none."""
    s = Zkd(tmpdir_path, extra_cfg=extra).start()
    try:
        zk = client(f"127.0.0.1:{s.port}")
        for i in range(200):
            zk.create(f"/w{i}", b"x")
        zk.stop()
        helpers = threads_named(s.proc.pid, "zkd-awake")
        if extra:
            assert helpers == {}, helpers
            return
        if "event=sync_idle_spin_off" in s.logtext():
            pytest.skip("SCHED_IDLE refused here")
        assert len(helpers) == (2 if len(os.sched_getaffinity(s.proc.pid)) > 1 else 1), helpers
        assert all(policy == 5 for policy, _ in helpers.values()), helpers
        time.sleep(1.0)
        later = threads_named(s.proc.pid, "zkd-awake")
        # 100 ticks a second: 1 s of spinning would be ~100.
        for tid, (_, ticks) in helpers.items():
            assert later[tid][1] - ticks <= 5, (helpers, later)
    finally:
        s.stop()


def test_unknown_keys_warn_by_name_and_server_starts(tmpdir_path):
    s = Zkd(tmpdir_path, extra_cfg="flavour=strawberry\nautopurge.purgeInterval=1\n").start()
    try:
        log = s.logtext()
        assert "unknown key 'flavour'" in log
        assert "key 'autopurge.purgeInterval' is accepted but has no effect" in log
    finally:
        s.stop()


def test_reference_sample_config_is_accepted(tmpdir_path):
    """Debian's own zoo.cfg (with dataDir and port moved into the test)."""
    with open("/etc/zookeeper/conf_example/zoo.cfg") as f:
        text = f.read()
    port = free_port()
    d = os.path.join(tmpdir_path, "data")
    lines = [l for l in text.splitlines() if not l.startswith(("dataDir", "clientPort"))]
    text = "\n".join(lines) + f"\ndataDir={d}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
    path = os.path.join(tmpdir_path, "zoo.cfg")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.Popen([ZKD, "serve", path], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: "Mode: standalone" in four_letter(port, "srvr", 1), 20, what="zkd with Debian's zoo.cfg")
    finally:
        p.terminate()
        _, err = p.communicate(10)
    assert "unknown key" not in err, err


def test_jute_maxbuffer_is_honoured(tmpdir_path):
    s = Zkd(tmpdir_path, extra_cfg="jute.maxbuffer=4096\n").start()
    try:
        raw = rawzk.Raw(s.port)
        raw.handshake()
        raw.request(1, rawzk.create("/small", b"x" * 3000))
        assert raw.reply()[2] == 0
        raw.request(1, rawzk.create("/big", b"x" * 5000))
        assert raw.closed()
    finally:
        s.stop()


def test_session_timeouts_from_config(tmpdir_path):
    s = Zkd(tmpdir_path, extra_cfg="minSessionTimeout=1000\nmaxSessionTimeout=1500\n").start()
    try:
        for asked, got in [(10, 1000), (1200, 1200), (60000, 1500)]:
            raw = rawzk.Raw(s.port)
            assert raw.handshake(timeout=asked)["timeout"] == got
            raw.close()
    finally:
        s.stop()


def test_max_client_cnxns_per_address(tmpdir_path):
    s = Zkd(tmpdir_path)
    s.extra_cfg = ""
    with open(s.cfg_path, "w") as f:
        f.write(f"tickTime=200\ndataDir={s.data}\nclientPort={s.port}\nclientPortAddress=127.0.0.1\n"
                f"4lw.commands.whitelist=*\nmaxClientCnxns=3\n")
    s.start()
    try:
        # The ruok probe of start() holds a slot until the server has seen
        # it close, which can be just after the probe returned: retry.
        conns = []

        def open_one():
            c = rawzk.Raw(s.port)
            if c.handshake() is None:
                c.close()
                return False
            conns.append(c)
            return True

        for _ in range(3):
            wait_until(open_one, 5, what="a connection within maxClientCnxns")
        extra = rawzk.Raw(s.port)
        assert extra.handshake() is None  # closed at once
        conns[0].close()
        wait_until(lambda: rawzk.Raw(s.port).handshake() is not None, 5, what="a slot to free up")
    finally:
        s.stop()


def test_help_and_version():
    r = subprocess.run([ZKD, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "zkd serve <zoo.cfg>" in r.stdout and "zkd status [host:port]" in r.stdout
    r = subprocess.run([ZKD, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("zkd ")
    r = subprocess.run([ZKD, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = subprocess.run([ZKD], capture_output=True, text=True)
    assert r.returncode == 2 and "Usage:" in r.stdout


def test_status(zkd):
    zk = client(zkd.hosts)
    zk.create("/st", b"")
    r = subprocess.run([ZKD, "status", zkd.hosts], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Mode: standalone"
    assert lines[1].startswith("Zxid: 0x") and int(lines[1].split("0x")[1], 16) >= 2
    assert lines[2] == "Connections: 1"
    assert lines[3] == "Node count: 6"
    zk.stop()


def test_status_of_a_dead_server():
    r = subprocess.run([ZKD, "status", f"127.0.0.1:{free_port()}"], capture_output=True, text=True)
    assert r.returncode == 1 and "It is probably not running" in r.stderr


def test_tiny_global_outstanding_limit_still_serves_pipelined_clients(tmpdir_path):
    """With room for a single waiting request, pipelined clients are slowed,
    never stuck or refused."""
    s = Zkd(tmpdir_path, extra_cfg="globalOutstandingLimit=1\n").start()
    try:
        raws = [rawzk.Raw(s.port) for _ in range(4)]
        for r in raws:
            r.handshake()
        for r in raws:
            for i in range(300):
                r.request(3, rawzk.path_watch("/"))
        for r in raws:
            for i in range(1, 301):
                xid, _, err, _ = r.reply()
                assert (xid, err) == (i, 0)
    finally:
        s.stop()


def test_structured_log_lines_for_expiry_slow_requests_and_fsync(tmpdir_path):
    """One line per event, key=value, so log tools can pick them out."""
    import re
    import rawzk
    from conftest import Zkd, wait_until
    s = Zkd(tmpdir_path, extra_cfg="slowRequestThresholdMs=0\nfsync.warningthresholdms=0\n").start()
    try:
        c = rawzk.Raw(s.port)
        sid = c.handshake(timeout=400)["session"]
        c.request(1, rawzk.create("/logged", b"x"))
        assert c.reply()[2] == 0
        c.close()  # no closeSession: the session must expire
        wait_until(lambda: f"event=session_expired session=0x{sid:x}" in s.logtext(), 20, what="expiry line")
        log = s.logtext()
        assert re.search(rf"event=session_expired session=0x{sid:x} timeout_ms=\d+ ephemerals=0", log)
        assert re.search(r"event=slow_request conn=0x[0-9a-f]+ session=0x[0-9a-f]+ xid=\d+ latency_ms=\d+", log)
        assert re.search(r"event=slow_fsync duration_ms=\d+ txns=\d+ threshold_ms=0", log)
    finally:
        s.stop()
