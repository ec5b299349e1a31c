"""Seeded random operation sequences against zkd and Apache ZooKeeper side
by side (see differential.py); any difference in a reply, a watch event or
the final tree fails with the seed that replays it. A longer search lives in
scripts/differential.sh."""
import os
import shutil
import tempfile

import pytest

import differential
from conftest import ReferenceZk, Zkd

SEEDS = range(int(os.environ.get("DIFF_SEEDS", "30")))
STEPS = int(os.environ.get("DIFF_STEPS", "200"))


@pytest.fixture(scope="module")
def pair():
    d = tempfile.mkdtemp(prefix="diff-")
    os.makedirs(os.path.join(d, "zkd"))
    os.makedirs(os.path.join(d, "zk"))
    a = Zkd(os.path.join(d, "zkd")).start()
    b = ReferenceZk(os.path.join(d, "zk")).start()
    yield a, b
    a.stop()
    b.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_same_behaviour_as_zookeeper(pair, seed):
    a, b = pair
    try:
        differential.run(a.port, b.port, seed, steps=STEPS)
    finally:
        differential.cleanup(a.port)
        differential.cleanup(b.port)
