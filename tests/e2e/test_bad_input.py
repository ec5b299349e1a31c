"""Hostile and malformed input: each gets the reference's error or a closed
connection, never a crash, and never harm to other sessions."""
import os
import socket
import subprocess
import uuid

import pytest

import rawzk
from conftest import ZKD, client, four_letter, free_port, wait_until


def healthy(server):
    """Another session still works after the abuse."""
    zk = client(server.hosts)
    p = "/ok-" + uuid.uuid4().hex[:8]
    zk.create(p, b"v")
    assert zk.get(p)[0] == b"v"
    zk.stop()
    assert four_letter(server.port, "ruok") == "imok"


@pytest.fixture
def bystander(any_server):
    """A session that must be unaffected by everything in the test."""
    zk = client(any_server.hosts)
    p = "/by-" + uuid.uuid4().hex[:8]
    zk.create(p, b"mine", ephemeral=True)
    yield zk, p
    assert zk.connected and zk.get(p)[0] == b"mine"
    zk.stop()


@pytest.mark.parametrize("path,err", [
    ("", -8),          # empty
    ("a", -8),         # relative
    ("/a/", -101),     # trailing slash: the parent "/a" does not exist
    ("/", -110),       # the root exists
    ("/x\x00y", -8),   # NUL
    ("/.", -8),
    ("/..", -8),
])
def test_create_with_invalid_paths(any_server, bystander, path, err):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    raw.request(1, rawzk.create(path))
    xid, zxid, e, _ = raw.reply()
    assert e == err
    raw.close()


@pytest.mark.parametrize("op,body,err", [
    (5, rawzk.set_data("", b"x"), -8),
    (5, rawzk.set_data("rel", b"x"), -8),
    (5, rawzk.set_data("/a//b", b"x"), -8),
    (2, rawzk.delete("rel"), -8),
    (2, rawzk.delete("/zookeeper"), -8),
    (4, rawzk.path_watch("/a\x00"), -101),
    (3, rawzk.path_watch("/a\x00"), -8),
])
def test_other_ops_with_invalid_paths(any_server, bystander, op, body, err):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    raw.request(op, body)
    assert raw.reply()[2] == err
    raw.close()


def test_unknown_opcode_is_unimplemented(any_server, bystander):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    x = raw.request(77, b"")
    xid, zxid, err, _ = raw.reply()
    assert (xid, err) == (x, -6)
    raw.close()


def test_oversized_frame_closes_the_connection(any_server, bystander):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    raw.send(rawzk.i32(0xFFFFF + 1) + b"\0" * 64)
    assert raw.closed()
    healthy(any_server)


def test_negative_frame_length_closes_the_connection(any_server, bystander):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    raw.send(rawzk.i32(-5))
    assert raw.closed()


@pytest.mark.parametrize("first_bytes", [
    rawzk.i32(50_000_000) + b"\0" * 1000,   # a handshake frame far over the limit
    rawzk.frame(b"\0" * 10),               # a handshake too short to be one
], ids=["oversized", "truncated"])
def test_bad_handshake_closes_the_connection(any_server, bystander, first_bytes):
    raw = rawzk.Raw(any_server.port)
    raw.send(first_bytes)
    assert raw.closed()


def test_frame_shorter_than_a_request_header_closes(any_server, bystander):
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    raw.send(rawzk.frame(b"\0\0\0"))
    assert raw.closed()


def test_garbage_record_bodies(any_server, bystander):
    """A request whose record does not decode gets MarshallingError or a
    closed connection; the server and other sessions carry on."""
    raw = rawzk.Raw(any_server.port)
    raw.handshake()
    raw.request(1, rawzk.i32(0x7FFFFFF0) + b"junk")   # string length beyond the frame
    r = raw.reply()
    assert r is None or r[2] == -5
    raw.close()
    healthy(any_server)


def test_random_bytes_never_kill_the_server(any_server, bystander):
    import random
    rng = random.Random(1234)
    for i in range(60):
        s = socket.create_connection(("127.0.0.1", any_server.port), timeout=5)
        try:
            if i % 2:
                s.sendall(rawzk.connect_request())
            n = rng.randrange(1, 200)
            body = bytes(rng.randrange(256) for _ in range(n))
            s.sendall(rawzk.frame(body) if i % 3 else body)
        except OSError:
            pass
        s.close()
    healthy(any_server)


def test_write_of_data_near_the_limit(any_server, bystander):
    zk = client(any_server.hosts)
    p = "/big-" + uuid.uuid4().hex[:8]
    zk.create(p, b"x" * (1024 * 1024 - 200))
    assert len(zk.get(p)[0]) == 1024 * 1024 - 200
    zk.stop()


def test_four_letter_words(any_server):
    assert four_letter(any_server.port, "ruok") == "imok"
    srvr = four_letter(any_server.port, "srvr")
    for key in ["Zookeeper version:", "Latency min/avg/max:", "Received:", "Sent:", "Connections:",
                "Outstanding:", "Zxid: 0x", "Mode: standalone", "Node count:"]:
        assert key in srvr
    mntr = dict(l.split("\t", 1) for l in four_letter(any_server.port, "mntr").splitlines() if "\t" in l)
    for key in ["zk_version", "zk_avg_latency", "zk_max_latency", "zk_min_latency", "zk_packets_received",
                "zk_packets_sent", "zk_num_alive_connections", "zk_outstanding_requests", "zk_server_state",
                "zk_znode_count", "zk_watch_count", "zk_ephemerals_count", "zk_approximate_data_size",
                "zk_open_file_descriptor_count", "zk_max_file_descriptor_count"]:
        assert key in mntr, key
    assert mntr["zk_server_state"] == "standalone"
    assert four_letter(any_server.port, "isro") == "rw"


def test_four_letter_word_whitelist(tmpdir_path):
    from conftest import Zkd
    s = Zkd(tmpdir_path, extra_cfg="")
    # Without a whitelist line only srvr is allowed, as in ZooKeeper 3.5.3+.
    s.extra_cfg = ""
    with open(s.cfg_path, "w") as f:
        f.write(f"tickTime=200\ndataDir={s.data}\nclientPort={s.port}\nclientPortAddress=127.0.0.1\n")
    s.proc = subprocess.Popen([ZKD, "serve", s.cfg_path], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "Mode:" in four_letter(s.port, "srvr", 1), 20, what="zkd")
        assert four_letter(s.port, "ruok") == "ruok is not executed because it is not in the whitelist.\n"
        assert "not in the whitelist" in four_letter(s.port, "mntr")
    finally:
        s.stop()


def test_secrets_never_reach_the_logs(tmpdir_path):
    """Digest passwords, the super digest and session passwords stay out of
    zkd's log even at trace level, and out of zkfs's debug log."""
    import base64
    import subprocess

    from kazoo.client import KazooClient
    from kazoo.security import make_digest_acl

    from conftest import Zkd, SUPER_DIGEST
    from zkfs_mount import Mount

    secret = "s3cr3t-Pa55word"
    s = Zkd(tmpdir_path)
    env_level = os.environ.get("RUST_LOG")
    os.environ["RUST_LOG"] = "trace"
    try:
        s.start()
    finally:
        if env_level is None:
            del os.environ["RUST_LOG"]
        else:
            os.environ["RUST_LOG"] = env_level
    try:
        zk = KazooClient(hosts=s.hosts, auth_data=[("digest", f"alice:{secret}")])
        zk.start(timeout=15)
        zk.create("/guarded", b"x", acl=[make_digest_acl("alice", secret, all=True)])
        bad = KazooClient(hosts=s.hosts, auth_data=[("digest", f"mallory:{secret}-wrong")])
        bad.start(timeout=15)
        session_pw = zk.client_id[1]
        m = Mount(s.hosts, "", opts=f"timeout=4000,digest=alice:{secret},debug")
        try:
            assert open(m.p("guarded")).read() == "x"
            zkfs_log = m.logtext()
        finally:
            m.close()
        zk.stop()
        bad.stop()
    finally:
        s.stop()
    log = s.logtext()
    # Both logs really were written at their most verbose.
    assert "DEBUG" in log or "TRACE" in log, log[:500]
    assert "DEBUG" in zkfs_log, zkfs_log[:500]
    for text in (log, zkfs_log):
        assert secret not in text
        assert SUPER_DIGEST.split(":")[1] not in text
        assert base64.b64encode(session_pw).decode() not in text
        assert session_pw.hex() not in text
