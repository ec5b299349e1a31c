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


def test_c_client_cli_mt(zkd):
    b = "/cmt-" + uuid.uuid4().hex[:6]
    out = run_cli_mt(zkd.hosts, [
        f"create {b}", f"create +e {b}/eph", f"create +s {b}/seq", f"create2 {b}/c2",
        f"set {b} hello", f"get {b}", f"ls {b}", f"ls2 {b}", f"exists {b}/eph", f"sync {b}",
        f"delete {b}/c2", f"exists {b}/c2",
    ])
    assert f"[{b}]: rc = 0" in out
    assert f"{b}/seq0000000001" in out
    assert f"Error -101 for {b}/c2" in out  # exists of the deleted node
    zk = client(zkd.hosts)
    assert zk.get(b)[0] == b"hello"
    kids = sorted(zk.get_children(b))
    assert kids == ["seq0000000001"], kids  # the ephemeral went with cli_mt's session
    zk.stop()
