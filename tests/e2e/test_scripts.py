"""Every script in scripts/ answers --help and is shellcheck-clean."""
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


@pytest.mark.parametrize("script", ["capture-frames.py", "bench-zkfs.py", "bench-scale.py", "failover.py"])
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
