"""The load generator works against zkd (no timing is asserted: numbers are
for scripts/bench.sh, which compares with ZooKeeper in the same run)."""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import TARGET, four_letter

ZKBENCH = os.path.join(TARGET, "release", "zkbench")


@pytest.mark.parametrize("workload", ["create", "set", "get", "multi10", "mix", "delete"])
def test_zkbench_runs_and_reports(zkd, workload):
    out = subprocess.run(
        [ZKBENCH, "--server", zkd.hosts, "--workload", workload, "--conns", "2", "--depth", "4",
         "--seconds", "0.5", "--keys", "50", "--prefix", f"/bench-{workload}"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["workload"] == workload and r["ops"] > 0 and r["errors"] == 0
    assert r["p50_us"] <= r["p99_us"] <= r["p999_us"]


def test_zkbench_usage():
    out = subprocess.run([ZKBENCH, "--workload", "get"], capture_output=True, text=True)
    assert out.returncode == 2 and "--server" in out.stderr


def test_zkbench_fill_decides_what_the_data_is(zkd):
    """`--fill x` writes one byte repeated; `--fill random` (the default)
    bytes that differ from value to value, so compression cannot help."""
    from kazoo.client import KazooClient

    for fill in ["x", "random", None]:
        prefix = f"/bench-fill-{fill}"
        out = subprocess.run(
            [ZKBENCH, "--server", zkd.hosts, "--workload", "create", "--seconds", "0.2",
             "--size", "300", "--prefix", prefix] + (["--fill", fill] if fill else []),
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
    zk = KazooClient(hosts=zkd.hosts)
    zk.start()
    try:
        x = [zk.get(f"/bench-fill-x/c0/n{i}")[0] for i in range(3)]
        assert x == [b"x" * 300] * 3
        for fill in ["random", "None"]:
            vals = [zk.get(f"/bench-fill-{fill}/c0/n{i}")[0] for i in range(3)]
            assert all(len(v) == 300 and len(set(v)) > 100 for v in vals), fill
            assert len(set(vals)) == 3, fill
    finally:
        zk.stop()
    bad = subprocess.run([ZKBENCH, "--server", zkd.hosts, "--workload", "get", "--fill", "zeros"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--fill" in bad.stderr


def test_zkbench_writes_land_in_the_keys(zkd):
    """set, multi10 and mix change the znodes they name, with data of the
    size asked for (the requests are framed in place, opcode and length
    filled in after the body)."""
    from kazoo.client import KazooClient

    for workload in ["set", "multi10", "mix"]:
        out = subprocess.run(
            [ZKBENCH, "--server", zkd.hosts, "--workload", workload, "--conns", "1",
             "--depth", "3", "--seconds", "0.3", "--keys", "3", "--size", "700",
             "--prefix", f"/bench-land-{workload}"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["errors"] == 0
    zk = KazooClient(hosts=zkd.hosts)
    zk.start()
    try:
        for workload in ["set", "multi10", "mix"]:
            for k in range(3):
                data, stat = zk.get(f"/bench-land-{workload}/c0/k{k}")
                assert stat.version >= 1, (workload, k)
                assert len(data) == 700 and len(set(data)) > 100, (workload, k)
    finally:
        zk.stop()


def test_zkbench_setup_only_then_skip_splits_a_run(zkd):
    """--setup only creates a run's znodes and exits without a report;
    --setup skip then runs on them: a delete run removes exactly those."""
    from kazoo.client import KazooClient

    common = [ZKBENCH, "--server", zkd.hosts, "--workload", "delete", "--conns", "2",
              "--keys", "15", "--prefix", "/bench-split"]
    only = subprocess.run(common + ["--setup", "only"], capture_output=True, text=True, timeout=60)
    assert only.returncode == 0 and only.stdout == "", only.stdout + only.stderr
    zk = KazooClient(hosts=zkd.hosts)
    zk.start()
    try:
        assert [len(zk.get_children(f"/bench-split/c{c}")) for c in range(2)] == [15, 15]
        # Gone before the run, and not made again by it: its delete fails.
        zk.delete("/bench-split/c1/k4")
        skip = subprocess.run(common + ["--setup", "skip"], capture_output=True, text=True, timeout=60)
        assert skip.returncode == 0, skip.stderr
        r = json.loads(skip.stdout)
        assert r["errors"] == 1, r
        assert [zk.get_children(f"/bench-split/c{c}") for c in range(2)] == [[], []]
    finally:
        zk.stop()
    bad = subprocess.run(common + ["--setup", "later"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--setup" in bad.stderr


def test_zkbench_counts_failed_multis_as_errors(zkd):
    """A multi whose znodes are missing fails whole (its reply's first result
    is an error): counted as an error, not as a fast op. Set up for one
    connection and run with two, half the multis have nothing to set."""
    common = [ZKBENCH, "--server", zkd.hosts, "--workload", "multi10", "--depth", "4",
              "--keys", "20", "--prefix", "/bench-multi-missing"]
    only = subprocess.run(common + ["--conns", "1", "--setup", "only"],
                          capture_output=True, text=True, timeout=60)
    assert only.returncode == 0, only.stderr
    run = subprocess.run(common + ["--conns", "2", "--seconds", "0.5", "--setup", "skip"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    r = json.loads(run.stdout)
    # Connection 1's multis all fail; connection 0's all succeed.
    assert 0 < r["errors"] < r["ops"], r


def test_zkbench_clear_removes_a_prefix_and_all_under_it(zkd):
    """--workload clear deletes the prefix and its whole subtree, however
    deep and wide (what a create run left, nested znodes, a parent with
    more children than one request in flight), reports how many znodes it
    deleted, and touches nothing beside the prefix."""
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=zkd.hosts)
    zk.start()
    try:
        zk.ensure_path("/clr/a/b/c/d")
        made = subprocess.run(
            [ZKBENCH, "--server", zkd.hosts, "--workload", "create", "--conns", "3", "--depth", "8",
             "--seconds", "0.5", "--prefix", "/clr/bench"],
            capture_output=True, text=True, timeout=60,
        )
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["errors"] == 0
        zk.ensure_path("/clr-beside/x")
        for i in range(300):
            zk.create(f"/clr/a/wide{i}", b"x")
        total = 0
        stack = ["/clr"]
        while stack:
            p = stack.pop()
            total += 1
            stack.extend(f"{p}/{c}" for c in zk.get_children(p))
        assert total > 300 + 5 + 1 + 3 + 100, total
        out = subprocess.run(
            [ZKBENCH, "--server", zkd.hosts, "--workload", "clear", "--conns", "2", "--depth", "16",
             "--prefix", "/clr"],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        assert r["workload"] == "clear" and r["deleted"] == total, (r, total)
        assert zk.exists("/clr") is None
        assert zk.get_children("/clr-beside") == ["x"]
        again = subprocess.run(
            [ZKBENCH, "--server", zkd.hosts, "--workload", "clear", "--prefix", "/clr"],
            capture_output=True, text=True, timeout=60,
        )
        assert again.returncode == 0 and json.loads(again.stdout)["deleted"] == 0, again.stderr
    finally:
        zk.stop()
    root = subprocess.run([ZKBENCH, "--server", zkd.hosts, "--workload", "clear", "--prefix", "/"],
                          capture_output=True, text=True, timeout=60)
    assert root.returncode == 2 and "below /" in root.stderr


def test_zkbench_ends_when_the_server_goes_away(zkd):
    """A server killed mid-run: zkbench stops (it used to wait forever for
    replies that could not come) and counts the unanswered requests."""
    p = subprocess.Popen(
        [ZKBENCH, "--server", zkd.hosts, "--workload", "set", "--conns", "2", "--depth", "8",
         "--seconds", "60", "--keys", "10", "--prefix", "/bench-lost"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Setup done (20 creates) and the timed run going: zxids climb.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            z = [line for line in four_letter(zkd.port, "srvr").splitlines() if line.startswith("Zxid:")]
            if z and int(z[0].split()[1], 16) > 200:
                break
            time.sleep(0.05)
        zkd.kill9()
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    r = json.loads(out.strip().splitlines()[-1])
    assert r["errors"] > 0 and "lost" in err


def test_bench_sh_compares_both_servers_and_what_they_wrote():
    """One short row of scripts/bench.sh end to end: it starts zkd and
    Apache ZooKeeper, runs the row against each, and its table has both
    servers' ops/s, the KiB the disk wrote per op for each (a setData of
    100 bytes with fsync on writes at least those bytes to its log) and
    the CPU time each server's processes used per op (some, for a write)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, SETTLE="0", ZKD_BIN=os.path.join(TARGET, "release", "zkd"))
    out = subprocess.run(
        [os.path.join(root, "scripts", "bench.sh"), "--run", "set 1 1 100", "--seconds", "1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=root,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    # Each server is up only for its own runs: the pass starts one, then
    # the other, each line naming one server.
    starts = [l for l in lines if l.startswith("pass 1:")]
    assert len(starts) == 2, starts
    assert ("zkd 127.0.0.1:" in starts[0]) != ("ZooKeeper 127.0.0.1:" in starts[0]), starts
    assert ("zkd 127.0.0.1:" in starts[1]) != ("ZooKeeper 127.0.0.1:" in starts[1]), starts
    head = next(l for l in lines if l.startswith("workload"))
    assert head.rstrip().endswith("disk KiB/op zkd ZK | server cpu us/op zkd ZK")
    row = next(l for l in lines if l.startswith("set "))
    cols = row.split("|")
    zkd_ops, zk_ops, ratio = cols[1].split()
    assert float(zkd_ops) > 0 and float(zk_ops) > 0
    assert abs(float(ratio) - float(zkd_ops) / float(zk_ops)) < 0.01
    zkd_kib, zk_kib = (float(v) for v in cols[-2].split())
    assert zkd_kib >= 100 / 1024 and zk_kib >= 100 / 1024, row
    zkd_cpu, zk_cpu = (float(v) for v in cols[-1].split())
    assert zkd_cpu > 0 and zk_cpu > 0, row
    assert any(l.startswith("Disk floor, 1 appender") for l in lines)
    # The disk floor measured as each server's runs began, in the order
    # they ran (a lone write's row compares two moments of the disk).
    began = next(l for l in lines if l.startswith("Disk floor as each server's runs began"))
    got = re.findall(r"pass 1 (zkd|ZooKeeper) (\d+)", began)
    ran = ["zkd" if "zkd 127.0.0.1:" in l else "ZooKeeper" for l in starts]
    assert [side for side, _ in got] == ran and all(int(p50) > 0 for _, p50 in got), began
    # What memory the kernel had left as each side's runs started: least
    # and median, least first.
    mem = next(l for l in lines if l.startswith("Memory available"))
    sides = re.findall(r"(\d+)/(\d+)", mem)
    assert len(sides) == 2 and all(0 < int(a) <= int(b) for a, b in sides), mem
    assert "only that server's members up" in mem, mem


def zkbench_wrapper(path, *lines):
    """A bash script at `path`, made of `lines`, for bench.sh to run as
    zkbench (ZKBENCH_BIN)."""
    path.write_text("#!/bin/bash\n" + "".join(line + "\n" for line in lines))
    path.chmod(0o755)
    return path


def test_bench_sh_runs_again_a_run_that_ended_with_errors(tmp_path):
    """A run that ends but reports errors (ZooKeeper's ensemble once lost a
    client's connection mid-run, leaving a row's pass at a few ops/s) is run
    again, and the table is made from the clean try. zkbench is wrapped so
    that the first setData run says it had 7 errors."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    marker = tmp_path / "broke-once"
    wrapper = zkbench_wrapper(
        tmp_path / "zkbench-breaks-once",
        f'out=$("{ZKBENCH}" "$@") || exit $?',
        f'if [[ " $* " == *" --workload set "* && " $* " == *" --setup skip "* && ! -e "{marker}" ]]; then',
        f'  touch "{marker}"; out=${{out/\\"errors\\":0,/\\"errors\\":7,}}',
        "fi",
        'echo "$out"',
    )
    env = dict(os.environ, SETTLE="0", ZKD_BIN=os.path.join(TARGET, "release", "zkd"), ZKBENCH_BIN=str(wrapper))
    out = subprocess.run(
        [os.path.join(root, "scripts", "bench.sh"), "--run", "set 1 1 100", "--seconds", "1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=root,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert marker.exists()
    assert re.search(r"bench.sh: (zkd|zk) set 1 1 100 had 7 error\(s\) \(pass 1, try 1\)", out.stderr), out.stderr
    assert "runs with errors" not in out.stdout, out.stdout
    row = next(l for l in out.stdout.splitlines() if l.startswith("set "))
    zkd_ops, zk_ops = (float(v) for v in row.split("|")[1].split()[:2])
    assert zkd_ops > 0 and zk_ops > 0, row


def test_bench_sh_warmup_runs_the_workload_first_on_each_server(tmp_path):
    """--warmup S: before each timed run, S seconds of the same workload go
    to the same server under a prefix of their own (2 by default; 0, none)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    calls = tmp_path / "calls"
    wrapper = zkbench_wrapper(tmp_path / "zkbench-logs", f'echo "$*" >> "{calls}"', f'exec "{ZKBENCH}" "$@"')
    env = dict(os.environ, SETTLE="0", ZKD_BIN=os.path.join(TARGET, "release", "zkd"), ZKBENCH_BIN=str(wrapper))
    def bench(*extra):
        out = subprocess.run(
            [os.path.join(root, "scripts", "bench.sh"), "--run", "set 1 1 100", "--seconds", "1", *extra],
            capture_output=True, text=True, timeout=300, env=env, cwd=root,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        runs = [l.split() for l in calls.read_text().splitlines() if "--server" in l]
        calls.unlink()
        # Each measured run's znodes are cleared after it (see
        # test_bench_sh_clears_each_runs_znodes_once_measured); this test
        # is about the runs themselves.
        bench.clears = [a for a in runs if "clear" in a]
        return out, [a for a in runs if "clear" not in a]

    out, runs = bench()

    def arg(a, name):
        return a[a.index(name) + 1]

    # Per server: its warm-up, then the timed run's setup, then the timed
    # run on the znodes that setup made, all on the same hosts.
    assert len(runs) == 6, runs
    for warm, setup, timed in (runs[0:3], runs[3:6]):
        assert arg(warm, "--prefix").startswith("/w1_"), warm
        assert arg(timed, "--prefix").startswith("/b1_"), timed
        assert arg(setup, "--setup") == "only" and arg(timed, "--setup") == "skip"
        assert "--setup" not in warm
        for a in ("--prefix", "--keys", "--conns", "--workload"):
            assert arg(setup, a) == arg(timed, a), a
        assert arg(warm, "--server") == arg(setup, "--server") == arg(timed, "--server")
        assert arg(warm, "--workload") == arg(timed, "--workload") == "set"
        assert arg(warm, "--seconds") == "2" and arg(warm, "--keys") == "100"
        assert "--cpu-of" not in warm and "--cpu-of" not in setup and "--cpu-of" in timed
    assert arg(runs[0], "--server") != arg(runs[3], "--server")
    row = next(l for l in out.stdout.splitlines() if l.startswith("set "))
    assert all(float(v) > 0 for v in row.split("|")[1].split()[:2]), row
    _, runs = bench("--warmup", "1")
    assert [arg(a, "--seconds") for a in runs if arg(a, "--prefix").startswith("/w1_")] == ["1", "1"]
    _, runs = bench("--warmup", "0")
    assert len(runs) == 4 and all(arg(a, "--prefix").startswith("/b1_") for a in runs), runs
    assert bench.clears and not any(arg(a, "--prefix").startswith("/w1_") for a in bench.clears)
    out, runs = bench("--warmup", "0", "--keep-znodes")
    assert len(runs) == 4 and bench.clears == [], bench.clears
    assert "its znodes deleted" not in out.stdout
    bad = subprocess.run([os.path.join(root, "scripts", "bench.sh"), "--warmup", "soon"],
                         capture_output=True, text=True, cwd=root)
    assert bad.returncode == 2 and "--warmup" in bad.stderr


def test_bench_sh_clears_each_runs_znodes_once_measured(tmp_path):
    """After each run is measured, bench.sh deletes the znodes it and its
    warm-up made (zkbench --workload clear), on both servers, so the next
    row starts on the same tree; the wrapper looks for each prefix on the
    server before and after its clear."""
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    calls = tmp_path / "calls"
    look = tmp_path / "look.py"
    look.write_text(
        "import sys\n"
        "from kazoo.client import KazooClient\n"
        "zk = KazooClient(hosts=sys.argv[1].split(',')[0]); zk.start(timeout=20)\n"
        "print('there' if zk.exists(sys.argv[2]) else 'gone'); zk.stop()\n")
    wrapper = zkbench_wrapper(
        tmp_path / "zkbench-looks",
        'if [[ " $* " != *" --workload clear "* ]]; then exec "' + ZKBENCH + '" "$@"; fi',
        'a=("$@"); for ((i = 0; i < $#; i++)); do',
        '  [[ ${a[i]} == --server ]] && host=${a[i+1]}; [[ ${a[i]} == --prefix ]] && prefix=${a[i+1]}',
        "done",
        f'before=$("{sys.executable}" "{look}" "$host" "$prefix")',
        f'"{ZKBENCH}" "$@" > /dev/null || exit $?',
        f'after=$("{sys.executable}" "{look}" "$host" "$prefix")',
        f'echo "$host $prefix $before $after" >> "{calls}"',
    )
    env = dict(os.environ, SETTLE="0", ZKD_BIN=os.path.join(TARGET, "release", "zkd"), ZKBENCH_BIN=str(wrapper))
    out = subprocess.run(
        [os.path.join(root, "scripts", "bench.sh"), "--run", "create 1 1 100", "--seconds", "1",
         "--warmup", "1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=root,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    cleared = [l.split() for l in calls.read_text().splitlines()]
    hosts = sorted({c[0] for c in cleared})
    assert len(hosts) == 2, cleared
    for h in hosts:
        mine = {c[1]: c[2:] for c in cleared if c[0] == h}
        side = next(p for p in mine if p.startswith("/w1_"))[len("/w1_1"):]
        # The warm-up's and the timed run's znodes were there, and are gone.
        assert mine[f"/w1_1{side}"] == ["there", "gone"], mine
        assert mine[f"/b1_1{side}1"] == ["there", "gone"], mine
        # Tries that were not needed left nothing to clear.
        assert mine[f"/b1_1{side}2"] == mine[f"/b1_1{side}3"] == ["gone", "gone"], mine
    assert "its znodes deleted" in out.stdout


def busy_loops():
    """Processes running bench.sh's busy loop."""
    out = subprocess.run(["pgrep", "-f", "while :; do :; done"], capture_output=True, text=True)
    return out.stdout.split()


def test_bench_sh_busy_loops_run_beside_each_run_and_are_gone_after(tmp_path):
    """--busy N: the pass lines say so, the loops run while zkbench does
    (the wrapper looks for them), and none is left when bench.sh ends."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert busy_loops() == []
    seen = tmp_path / "seen"
    wrapper = zkbench_wrapper(
        tmp_path / "zkbench-counts-loops",
        f'[[ " $* " == *" --workload set "* && " $* " == *" --prefix /b"* ]] && pgrep -f "while :; do :; done" | wc -l >> "{seen}"',
        f'exec "{ZKBENCH}" "$@"',
    )
    env = dict(os.environ, SETTLE="0", ZKD_BIN=os.path.join(TARGET, "release", "zkd"), ZKBENCH_BIN=str(wrapper))
    out = subprocess.run(
        [os.path.join(root, "scripts", "bench.sh"), "--run", "set 1 1 100", "--seconds", "1", "--busy", "2"],
        capture_output=True, text=True, timeout=300, env=env, cwd=root,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    starts = [l for l in out.stdout.splitlines() if l.startswith("pass 1:")]
    assert len(starts) == 2 and all("2 busy loop(s) during each run" in l for l in starts), starts
    # Both servers' setup and timed run each saw both loops.
    assert [int(n) for n in seen.read_text().split()] == [2, 2, 2, 2]
    assert busy_loops() == []
