"""The shell recipes in scripts/ (lock, leader election, service
registration, config watch), built from a zkfs mount and standard tools,
run against a real zkd with two mounts standing for two machines."""
import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT, wait_until
from zkfs_mount import ZKFS, Mount, sh, tree, two  # noqa: F401

ENV = dict(os.environ, ZKFS=ZKFS)


def script(name):
    return os.path.join(ROOT, "scripts", name)


@pytest.fixture(scope="module")
def zkfs_server(zkd_module):
    return zkd_module


def spawn(*args):
    return subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def kill(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)


def test_lock_recipe_serialises_a_counter(two, tree):
    zk, root = tree
    a, b = two
    sh(f"echo 0 > {a.p('counter')}")
    # Read-modify-write without the lock would lose updates; with it, none.
    body = "n=$(cat {c}); sleep 0.05; echo $((n+1)) > {c}"
    procs = [spawn(script("zk-lock.sh"), m.p("locks/counter"), "bash", "-c", body.format(c=m.p("counter")))
             for m in [a, b, a, b, a, b]]
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read()
    assert zk.get(root + "/counter")[0] == b"6\n"
    held = spawn(script("zk-lock.sh"), a.p("locks/x"), "sleep", "30")
    try:
        wait_until(lambda: zk.get_children(root + "/locks/.zkfs-lock.x"), 10, what="lock held")
        r = subprocess.run([script("zk-lock.sh"), "-n", b.p("locks/x"), "true"], env=ENV)
        assert r.returncode == 1
    finally:
        kill(held)
    r = subprocess.run([script("zk-lock.sh"), "-n", b.p("locks/x"), "bash", "-c", "echo $ZK_LOCK_TOKEN"],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 0 and int(r.stdout) > 0


def test_leader_election_fails_over(two, tree):
    zk, root = tree
    a, b = two
    os.mkdir(a.p("elect"))
    cands = []
    for i, m in enumerate([a, b, a]):
        cands.append(spawn(script("zk-elect.sh"), m.p("elect"), f"c{i}", "bash", "-c",
                           f"echo c{i} > {m.p('leader')}; sleep 60"))
        wait_until(lambda: len(zk.get_children(root + "/elect")) == i + 1, 10, what="candidate queued")
    try:
        wait_until(lambda: zk.exists(root + "/leader") and zk.get(root + "/leader")[0] == b"c0\n", 10,
                   what="first leader")
        time.sleep(0.3)
        assert zk.get(root + "/leader")[0] == b"c0\n"  # only one leader
        kill(cands[0])
        wait_until(lambda: zk.get(root + "/leader")[0] == b"c1\n", 15, what="second leader")
        kill(cands[1])
        wait_until(lambda: zk.get(root + "/leader")[0] == b"c2\n", 15, what="third leader")
    finally:
        for c in cands:
            kill(c)


def test_service_registration_lives_with_the_process(two, tree):
    zk, root = tree
    a, b = two
    svc = spawn(script("zk-register.sh"), a.p("services/web"), "host1", "10.0.0.1:80", "sleep", "60")
    try:
        wait_until(lambda: os.path.exists(b.p("services/web/host1")), 10, what="registered")
        assert open(b.p("services/web/host1")).read() == "10.0.0.1:80\n"
        assert zk.exists(root + "/services/web/host1").ephemeralOwner != 0
    finally:
        kill(svc)
    wait_until(lambda: not os.path.exists(b.p("services/web/host1")), 10, what="deregistered")
    assert os.path.isdir(b.p("services/web"))


def test_config_watch_reloads_on_remote_change(two, tree, tmp_path):
    zk, root = tree
    a, b = two
    sh(f"echo level=1 > {a.p('app.conf')}")
    out = tmp_path / "seen"
    w = spawn(script("zk-config-watch.sh"), b.p("app.conf"), "bash", "-c", f"cat >> {out}")
    try:
        wait_until(lambda: out.exists() and out.read_text() == "level=1\n", 10, what="first load")
        zk.set(root + "/app.conf", b"level=2\n")
        wait_until(lambda: out.read_text().endswith("level=2\n"), 10, what="reload")
        sh(f"echo level=3 > {a.p('app.conf')}")
        wait_until(lambda: out.read_text().endswith("level=3\n"), 15, what="reload from the other mount")
    finally:
        kill(w)
