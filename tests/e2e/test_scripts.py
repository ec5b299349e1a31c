"""Every script in scripts/ answers --help and is shellcheck-clean; the ones
that are more than a wrapper also run here, briefly."""
import glob
import os
import subprocess
import time

import pytest

from conftest import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "scripts", "*.sh"))) + [os.path.join(ROOT, ".ci", "run")]


@pytest.mark.parametrize("script", [s for s in SCRIPTS if not s.endswith(("env.sh", "run"))
                                    or s.endswith("run.sh")], ids=os.path.basename)
def test_help(script):
    r = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout, r.stdout


def test_shellcheck_clean():
    r = subprocess.run(["shellcheck", *SCRIPTS], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("script", ["capture-frames.py", "bench-zkfs.py", "bench-scale.py", "failover.py",
                                    "delay-proxy.py"])
def test_python_script_help(script):
    r = subprocess.run(["python3", os.path.join(ROOT, "scripts", script), "--help"], capture_output=True, text=True)
    assert r.returncode == 2 or r.returncode == 0
    assert "Usage:" in r.stdout


def test_zab_soak_runs_seeds_and_reports():
    r = subprocess.run([os.path.join(ROOT, "scripts", "zab-soak.sh"), "12", "500"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "12 seeds ok, 0 failed" in r.stdout


def test_ensemble_script_starts_inspects_and_stops(tmp_path):
    import random
    script = os.path.join(ROOT, "scripts", "ensemble.sh")
    d = str(tmp_path / "ens")
    # Below the kernel's ephemeral range (32768-60999 by default), and every
    # port the script will use free right now.
    import socket

    def free(p):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return True
            except OSError:
                return False

    for _ in range(100):
        b = random.randint(20000, 29000)
        if all(free(b + o) for o in (0, 1, 2, 101, 102, 103, 201, 202, 203)):
            break
    base = str(b)
    run = lambda *a: subprocess.run([script, "-d", d, "-p", base, *a], capture_output=True, text=True, timeout=60)
    try:
        r = run("start")
        assert r.returncode == 0, r.stdout + r.stderr
        modes = [l.split("Mode: ")[1].split()[0] for l in r.stdout.splitlines() if "Mode: " in l]
        assert sorted(modes) == ["follower", "follower", "leader"], r.stdout
        digests = {l.split("zk_tree_digest ")[1].split()[0] for l in r.stdout.splitlines() if "zk_tree_digest " in l}
        assert len(digests) == 1, r.stdout
        hosts = run("hosts").stdout.strip()
        assert hosts == ",".join(f"127.0.0.1:{int(base) + i}" for i in range(3))
        leader = next(l.split()[0] for l in r.stdout.splitlines() if "Mode: leader" in l).split(".")[1]
        assert run("kill", leader).returncode == 0
        # The other two elect a leader among themselves.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = run("status").stdout
            if "down" in st and "Mode: leader" in st:
                break
            time.sleep(0.2)
        assert f"server.{leader}" in st and "down" in st and "Mode: leader" in st, st
        r = run("start", leader)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "down" not in r.stdout
    finally:
        r = run("stop")
    assert r.returncode == 0
    assert run("status").stdout.count("down") == 3


def test_delay_proxy_carries_a_session_late_and_goes_with_its_parent(zkd):
    """bench.sh --member-delay puts scripts/delay-proxy.py between members:
    what passes through must arrive intact and no sooner than the delay
    each way, and a proxy whose parent is gone must not linger."""
    from conftest import client, four_letter, free_port, wait_until
    port = free_port()
    delay_us = 50_000
    # Its parent, a shell that exits after starting it.
    sh = subprocess.Popen(["sh", "-c", f'python3 "$0" {delay_us} {port}:{zkd.port} & echo $!; sleep 3',
                           os.path.join(ROOT, "scripts", "delay-proxy.py")], stdout=subprocess.PIPE, text=True)
    pid = int(sh.stdout.readline())
    try:
        wait_until(lambda: four_letter(port, "ruok", 1) == "imok", what="zkd answering through the proxy")
        zk = client(f"127.0.0.1:{port}", timeout=20.0)
        try:
            data = os.urandom(100_000)
            zk.create("/through-proxy", data)
            assert zk.get("/through-proxy")[0] == data
            started = time.monotonic()
            zk.exists("/through-proxy")
            # A round trip crosses the proxy twice.
            assert time.monotonic() - started >= 2 * delay_us / 1e6
        finally:
            zk.stop()
            zk.close()
        sh.wait(timeout=10)
        wait_until(lambda: gone(pid), timeout=10, what="the orphaned proxy exiting")
    finally:
        sh.kill()
        if not gone(pid):
            os.kill(pid, 9)


def gone(pid):
    """Exited (a zombie waiting for whoever adopted it counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_bench_scale_without_kazoo_says_so_before_starting_servers():
    """bench-scale.py needs kazoo (Debian's is /usr/bin/python3's); run by a
    Python without it, it says so and starts nothing. It used to find out
    only after populating a zkd, and left that zkd running."""
    before = subprocess.run(["pgrep", "-f", "zkscale"], capture_output=True, text=True).stdout.split()
    # -S: no site-packages, so no kazoo.
    r = subprocess.run(["/usr/bin/python3", "-S", os.path.join(ROOT, "scripts", "bench-scale.py"),
                        "--znodes", "10", "--sessions", "2", "--standalone-only"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "kazoo is missing" in r.stderr, r.stderr
    after = subprocess.run(["pgrep", "-f", "zkscale"], capture_output=True, text=True).stdout.split()
    assert set(after) <= set(before), after
