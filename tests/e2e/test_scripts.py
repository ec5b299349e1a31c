"""Every script in scripts/ answers --help and is shellcheck-clean."""
import glob
import os
import subprocess

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


@pytest.mark.parametrize("script", ["capture-frames.py", "bench-zkfs.py"])
def test_python_script_help(script):
    r = subprocess.run(["python3", os.path.join(ROOT, "scripts", script), "--help"], capture_output=True, text=True)
    assert r.returncode == 2 or r.returncode == 0
    assert "Usage:" in r.stdout


def test_zab_soak_runs_seeds_and_reports():
    r = subprocess.run([os.path.join(ROOT, "scripts", "zab-soak.sh"), "12", "500"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "12 seeds ok, 0 failed" in r.stdout
