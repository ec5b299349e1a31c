"""Every client operation through kazoo, against zkd and against Apache
ZooKeeper 3.8.0 with the same expectations: a test that passes on one and
fails on the other is a compatibility bug."""
import uuid

import pytest
from kazoo.exceptions import (
    BadArgumentsError, BadVersionError, InvalidACLError, NoAuthError,
    NoChildrenForEphemeralsError, NodeExistsError, NoNodeError, NotEmptyError,
    RolledBackError, RuntimeInconsistency,
)
from kazoo.protocol.states import ZnodeStat
from kazoo.security import ACL, Id, make_digest_acl, OPEN_ACL_UNSAFE, READ_ACL_UNSAFE

from conftest import client


def test_create_modes_and_stat(zk, base):
    assert zk.create(f"{base}/p", b"data") == f"{base}/p"
    st = zk.exists(f"{base}/p")
    assert st.version == 0 and st.dataLength == 4 and st.ephemeralOwner == 0
    assert st.czxid == st.mzxid == st.pzxid
    e = zk.create(f"{base}/e", b"", ephemeral=True)
    assert zk.exists(e).ephemeralOwner == zk.client_id[0]
    s1 = zk.create(f"{base}/s-", b"", sequence=True)
    s2 = zk.create(f"{base}/s-", b"", sequence=True, ephemeral=True)
    # The suffix is the parent's create count so far, zero-padded to ten digits.
    assert s1 == f"{base}/s-0000000002"
    assert s2 == f"{base}/s-0000000003"
    assert zk.exists(s2).ephemeralOwner == zk.client_id[0]
    path, stat = zk.create(f"{base}/c2", b"xy", include_data=True)  # create2
    assert path == f"{base}/c2" and stat.dataLength == 2 and stat.version == 0
    parent = zk.exists(base)
    assert parent.numChildren == 5 and parent.cversion == 5


def test_cversion_counts_creates_and_deletes_and_sequence_counts_creates(zk, base):
    zk.create(f"{base}/a")
    zk.create(f"{base}/b")
    zk.delete(f"{base}/a")
    assert zk.exists(base).cversion == 3
    assert zk.create(f"{base}/s", sequence=True) == f"{base}/s0000000002"
    assert zk.exists(base).cversion == 4
    assert zk.exists(base).pzxid == zk.exists(f"{base}/s0000000002").czxid


def test_errors(zk, base):
    with pytest.raises(NodeExistsError):
        zk.create(base)
    with pytest.raises(NoNodeError):
        zk.create(f"{base}/missing/child")
    with pytest.raises(NoNodeError):
        zk.get(f"{base}/missing")
    with pytest.raises(NoNodeError):
        zk.set(f"{base}/missing", b"")
    with pytest.raises(NoNodeError):
        zk.delete(f"{base}/missing")
    with pytest.raises(NoNodeError):
        zk.get_children(f"{base}/missing")
    assert zk.exists(f"{base}/missing") is None
    zk.create(f"{base}/eph", ephemeral=True)
    with pytest.raises(NoChildrenForEphemeralsError):
        zk.create(f"{base}/eph/child")
    zk.create(f"{base}/full/kid", makepath=True)
    with pytest.raises(NotEmptyError):
        zk.delete(f"{base}/full")
    with pytest.raises(BadVersionError):
        zk.set(base, b"x", version=7)
    with pytest.raises(BadVersionError):
        zk.delete(f"{base}/full/kid", version=3)
    with pytest.raises(InvalidACLError):
        zk.create(f"{base}/badacl", acl=[ACL(31, Id("world", "someone"))])
    with pytest.raises(InvalidACLError):
        zk.create(f"{base}/badacl", acl=[ACL(31, Id("auth", ""))])


def test_reserved_paths(zk):
    for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"]:
        with pytest.raises(BadArgumentsError):
            zk.delete(p)
    with pytest.raises(NodeExistsError):
        zk.create("/")
    with pytest.raises(NoAuthError):
        zk.set("/zookeeper/config", b"x")
    assert zk.get_acls("/zookeeper/config")[0] == READ_ACL_UNSAFE
    assert sorted(zk.get_children("/zookeeper")) == ["config", "quota"]
    assert zk.exists("/zookeeper").cversion == -2


def test_get_set_with_versions(zk, base):
    data, st = zk.get(base)
    assert data == b"base" and st.version == 0
    st2 = zk.set(base, b"v1", version=0)
    assert st2.version == 1 and st2.mzxid > st.mzxid and st2.czxid == st.czxid
    st3 = zk.set(base, b"v2")  # -1: any version
    assert st3.version == 2
    assert zk.get(base)[0] == b"v2"
    zk.set(base, b"")
    assert zk.get(base) == (b"", zk.exists(base))


def test_binary_data_and_large_values(zk, base):
    blob = bytes(range(256)) * 4000  # 1,024,000 bytes, under jute.maxbuffer
    zk.create(f"{base}/bin", blob)
    assert zk.get(f"{base}/bin")[0] == blob


def test_children(zk, base):
    for n in ["b", "a", "c"]:
        zk.create(f"{base}/{n}")
    assert sorted(zk.get_children(base)) == ["a", "b", "c"]
    kids, st = zk.get_children(base, include_data=True)  # getChildren2
    assert sorted(kids) == ["a", "b", "c"] and st.numChildren == 3


def test_children_of_a_big_parent(zk, base):
    """A parent with more children than zkd lists afresh each time (256):
    its list comes back whole and in the same frame as its stat, twice
    (the second from zkd's cache of the encoded list, sent without a copy),
    with other requests pipelined around it, and changes when a child is
    added or removed."""
    p = f"{base}/big"
    zk.create(p)
    tx = zk.transaction()
    for i in range(300):
        tx.create(f"{p}/c{i:04d}", b"")
    assert len(tx.commit()) == 300
    want = {f"c{i:04d}" for i in range(300)}
    for _ in range(2):
        # Sent together, answered in order: the big reply between two small.
        a = zk.exists_async(p)
        b = zk.get_children_async(p, include_data=True)
        c = zk.get_async(f"{p}/c0007")
        kids, st = b.get(timeout=10)
        assert set(kids) == want and len(kids) == 300
        assert st.numChildren == 300 and st.cversion == a.get(timeout=10).cversion
        assert c.get(timeout=10)[1].czxid > 0
    zk.create(f"{p}/extra")
    zk.delete(f"{p}/c0000")
    kids, st = zk.get_children(p, include_data=True)
    assert set(kids) == (want - {"c0000"}) | {"extra"} and st.numChildren == 300
    assert set(zk.get_children(p)) == set(kids)


def test_delete_with_version(zk, base):
    zk.create(f"{base}/d")
    zk.set(f"{base}/d", b"1")
    with pytest.raises(BadVersionError):
        zk.delete(f"{base}/d", version=0)
    zk.delete(f"{base}/d", version=1)
    assert zk.exists(f"{base}/d") is None


def test_multi_commits_atomically(zk, base):
    tx = zk.transaction()
    tx.create(f"{base}/m1", b"1")
    tx.check(base, 0)
    tx.set_data(f"{base}/m1", b"2")
    tx.create(f"{base}/m2")
    tx.delete(f"{base}/m2")
    res = tx.commit()
    assert res[0] == f"{base}/m1" and res[1] is True
    assert isinstance(res[2], ZnodeStat) and res[2].version == 1
    assert res[3] == f"{base}/m2" and res[4] is True
    assert zk.get(f"{base}/m1")[0] == b"2"
    assert zk.exists(f"{base}/m2") is None


def test_multi_failure_rolls_back_with_per_op_errors(zk, base):
    before = zk.exists(base)
    tx = zk.transaction()
    tx.create(f"{base}/x")
    tx.set_data(base, b"changed")
    tx.check(base, 42)
    tx.create(f"{base}/y")
    res = tx.commit()
    assert [type(r) for r in res] == [RolledBackError, RolledBackError, BadVersionError, RuntimeInconsistency]
    assert zk.exists(f"{base}/x") is None
    after = zk.exists(base)
    assert zk.get(base)[0] == b"base"
    assert (after.version, after.cversion, after.numChildren) == (before.version, before.cversion, before.numChildren)
    # A failed write still takes a zxid, as in the reference.
    assert zk.create(f"{base}/z", include_data=True)[1].czxid > before.mzxid


def test_failed_multi_that_deleted_a_child_then_its_parent_restores_both(zk, base):
    # zkd before e50ed5c restored the parent with no children listed.
    zk.create(f"{base}/p/c", b"x", makepath=True)
    zk.create(f"{base}/p/d")
    before = zk.exists(f"{base}/p")
    tx = zk.transaction()
    tx.delete(f"{base}/p/c")
    tx.delete(f"{base}/p/d")
    tx.delete(f"{base}/p")
    tx.check(base, 42)
    assert [type(r) for r in tx.commit()][-1] is BadVersionError
    assert sorted(zk.get_children(f"{base}/p")) == ["c", "d"]
    assert zk.exists(f"{base}/p") == before
    assert zk.get(f"{base}/p/c")[0] == b"x"
    zk.delete(f"{base}/p", recursive=True)
    assert zk.exists(f"{base}/p") is None


def test_sync(zk, base):
    assert zk.sync(base) == base


def test_acl_stored_returned_and_enforced(zk, base):
    acl = make_digest_acl("alice", "secret", all=True)
    zk.create(f"{base}/private", b"s", acl=[acl])
    with pytest.raises(NoAuthError):
        zk.get_acls(f"{base}/private")
    with pytest.raises(NoAuthError):
        zk.get(f"{base}/private")
    with pytest.raises(NoAuthError):
        zk.set(f"{base}/private", b"x")
    # exists is not subject to ACLs.
    assert zk.exists(f"{base}/private").dataLength == 1
    zk.add_auth("digest", "alice:secret")
    acls, st = zk.get_acls(f"{base}/private")
    assert acls == [acl] and st.aversion == 0
    assert zk.get(f"{base}/private")[0] == b"s"
    st = zk.set_acls(f"{base}/private", OPEN_ACL_UNSAFE, version=0)
    assert st.aversion == 1
    with pytest.raises(BadVersionError):
        zk.set_acls(f"{base}/private", OPEN_ACL_UNSAFE, version=0)
    # "auth" expands to the session's digest identity.
    zk.create(f"{base}/mine", acl=[ACL(31, Id("auth", ""))])
    assert zk.get_acls(f"{base}/mine")[0] == [acl]


def test_read_only_acl(zk, base):
    zk.create(f"{base}/ro", b"r", acl=READ_ACL_UNSAFE)
    assert zk.get(f"{base}/ro")[0] == b"r"
    with pytest.raises(NoAuthError):
        zk.set(f"{base}/ro", b"w")
    with pytest.raises(NoAuthError):
        zk.create(f"{base}/ro/child")
