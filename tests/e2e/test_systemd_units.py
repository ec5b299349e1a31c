"""The systemd units in scripts/systemd are valid for systemd-analyze, with
the binaries where the units expect them."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, TARGET

UNITS = os.path.join(ROOT, "scripts", "systemd")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit,instance", [("zkd.service", "zkd.service"), ("zkfs@.service", "zkfs@mnt-zk.service")])
def test_unit_verifies(unit, instance, tmp_path):
    text = open(os.path.join(UNITS, unit)).read()
    text = text.replace("/usr/local/bin/zkd", os.path.join(TARGET, "release", "zkd"))
    text = text.replace("/usr/local/bin/zkfs", os.path.join(TARGET, "release", "zkfs"))
    (tmp_path / unit).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / instance)],
                       capture_output=True, text=True, timeout=60)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert r.returncode == 0 and not problems, problems


def test_units_are_documented():
    zkd = open(os.path.join(ROOT, "man", "zkd.8")).read()
    zkfs = open(os.path.join(ROOT, "man", "zkfs.8")).read()
    assert "zkd.service" in zkd
    assert "zkfs@.service" in zkfs
