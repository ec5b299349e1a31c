"""The reference's own command-line clients against zkd: zkCli.sh (the Java
client) and cli_mt (the C client). zkCli output is compared line for line
with the same script run against Apache ZooKeeper, after masking what must
differ (times, session ids)."""
import re
import subprocess
import time
import uuid

import pytest

from conftest import CLI_MT, ZKCLI, ReferenceZk, client

ZKCLI_SCRIPT = """\
create {b} "top"
create {b}/p "one"
create -e {b}/e "eph"
create -s {b}/s- "seq"
create -e -s {b}/es- ""
get {b}/p
get -s {b}/p
set {b}/p "two"
set -v 1 {b}/p "three"
set -v 1 {b}/p "stale"
stat {b}/p
ls {b}
ls -s {b}
ls -R {b}
getAcl {b}/p
addauth digest alice:secret
create {b}/acl "x" auth::cdrwa
getAcl {b}/acl
setAcl {b}/p world:anyone:r
getAcl {b}/p
set {b}/p "denied"
sync {b}
getEphemerals {b}
getAllChildrenNumber {b}
delete {b}/missing
delete -v 9 {b}/acl
delete {b}/acl
create {b}/deep/er "x"
deleteall {b}
ls /
create /ext "e"
create -c /ext/container
create -t 60000 /ext/ttl "t"
stat /ext/ttl
create -c /ext/container/kid
whoami
addWatch /ext
addWatch -m PERSISTENT_RECURSIVE /ext/container
getAllChildrenNumber /ext
setquota -n 4 /ext
listquota /ext
create /ext/q1
create /ext/q2
listquota /ext
setquota -N 5 /ext
create /ext/q3
create /ext/q4
listquota /ext
delquota -N /ext
create /ext/q4
listquota /ext
delquota /ext
listquota /ext
get /zookeeper/quota/ext/zookeeper_stats
removewatches /ext
removewatches /nothing
sync /ext
config
quit
"""


def run_zkcli(hosts, script, timeout=60):
    out = subprocess.run(
        [ZKCLI, "-server", hosts], input=script, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    ).stdout
    keep = []
    for line in out.splitlines():
        if re.match(r"^\d{4}-\d\d-\d\d |^\s+at |^log4j|^SLF4J|^Connecting to|^WATCHER::|^WatchedEvent|^$", line):
            continue
        keep.append(line)
    return keep


def mask(lines):
    out = []
    for l in lines:
        l = re.sub(r"(ctime|mtime) = .*", r"\1 = TIME", l)
        l = re.sub(r"ephemeralOwner = 0x[0-9a-f]+", "ephemeralOwner = OWNER", l)
        l = re.sub(r"'digest,'alice:.*", "'digest,'alice:HASH", l)
        l = re.sub(r"\[zk: [^\]]*\]", "[zk]", l)
        m = re.fullmatch(r"\[(.*)\]", l)
        if m:  # lists of names come in hash order from the reference
            l = "[" + ", ".join(sorted(m.group(1).split(", "))) + "]"
        out.append(l)
    return out


def test_zkcli_against_zkd_matches_zookeeper(zkd, tmpdir_path):
    import os
    ref_dir = os.path.join(tmpdir_path, "ref")
    os.makedirs(ref_dir)
    ref = ReferenceZk(ref_dir).start()
    try:
        script = ZKCLI_SCRIPT.format(b="/cli")
        ours = mask(run_zkcli(zkd.hosts, script))
        theirs = mask(run_zkcli(ref.hosts, script))
    finally:
        ref.stop()
    assert any("Created /cli/s-0000000002" in l for l in ours), ours
    assert any("Node does not exist: /cli/missing" in l for l in ours), ours
    assert any("version No is not valid" in l for l in ours) or any("BadVersion" in l for l in ours), ours
    assert ours == theirs


def run_cli_mt(hosts, commands, pause=0.3):
    p = subprocess.Popen([CLI_MT, hosts], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    for c in commands:
        p.stdin.write(c + "\n")
        p.stdin.flush()
        time.sleep(pause)
    p.stdin.write("quit\n")
    p.stdin.flush()
    out, _ = p.communicate(timeout=20)
    return out


CLI_MT_COMMANDS = [
    "create /m", "create +e /m/e", "create +s /m/s", "create +es /m/es", "create +c /m/c",
    "create +t=60000 /m/t", "create2 /m/c2", "set /m hello", "get /m", "ls /m", "ls2 /m",
    "exists /m/e", "wexists /m/x", "create /m/x", "sync /m", "myid", "addauth digest alice:secret",
    "config", "delete /m/c2", "exists /m/c2", "get /nope", "delete /m",
]


def mask_cli_mt(out):
    out = re.sub(r"0x[0-9a-f]+|session Id = [0-9a-f]+", "ID", out)
    out = re.sub(r"time = \d+ msec", "time = N msec", out)
    out = re.sub(r"(ctime|mtime) ?= ?[^\n]*", r"\1 = TIME", out)
    lines, block = [], []
    for l in out.splitlines():
        if re.match(r"^\d{4}-\d\d-\d\d ", l):
            continue
        if re.fullmatch(r"\t[^=\s]+", l):  # a child name: listed in hash order by the reference
            block.append(l)
            continue
        lines.extend(sorted(block))
        block = []
        lines.append(l)
    return lines + sorted(block)


def test_c_client_cli_mt_against_zkd_matches_zookeeper(zkd, tmpdir_path):
    import os
    ref_dir = os.path.join(tmpdir_path, "ref")
    os.makedirs(ref_dir)
    ref = ReferenceZk(ref_dir).start()
    try:
        ours = run_cli_mt(zkd.hosts, CLI_MT_COMMANDS, pause=0.25)
        theirs = run_cli_mt(ref.hosts, CLI_MT_COMMANDS, pause=0.25)
    finally:
        ref.stop()
    assert "[/m]: rc = 0" in ours
    assert "name = /m/es0000000002" in ours
    assert "Error -101 for /m/c2" in ours  # exists of the deleted node
    assert "Watcher CREATED_EVENT" in ours  # wexists then create
    assert mask_cli_mt(ours) == mask_cli_mt(theirs)
