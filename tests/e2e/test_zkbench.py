"""The load generator works against zkd (no timing is asserted: numbers are
for scripts/bench.sh, which compares with ZooKeeper in the same run)."""
import json
import os
import subprocess

import pytest

from conftest import TARGET

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
