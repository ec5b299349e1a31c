"""A client that stops reading its socket must not grow the server's memory
without bound: its requests stop being read (throttled) at half of
connectionOutputBytesMax, and if watch events still pile up past the whole
of it, it is disconnected. Everyone else carries on."""
import socket
import time
import uuid

import pytest

import rawzk
from conftest import Zkd, client, rss_kib, wait_until

LIMIT = 4 << 20  # connectionOutputBytesMax for these tests


@pytest.fixture
def limited(tmpdir_path):
    s = Zkd(tmpdir_path, extra_cfg=f"connectionOutputBytesMax={LIMIT}\n").start()
    yield s
    s.stop()


def slow_socket(port):
    """A raw client whose receive buffer is tiny, so the server's queue fills."""
    raw = rawzk.Raw.__new__(rawzk.Raw)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    raw.sock, raw.buf, raw.xid = sock, b"", 0
    return raw


def test_a_client_that_does_not_read_is_throttled_not_buffered(limited):
    """Requests keep coming but replies are not read: once half the limit is
    queued the server stops reading this client's requests (its sends
    block), so memory stays bounded and nothing is dropped."""
    import threading
    zk = client(limited.hosts)
    slow = slow_socket(limited.port)
    slow.handshake()
    before = rss_kib(limited.proc.pid)
    n = 400_000  # 10 MiB of requests, 38 MiB of replies: far more than the limit
    frames = b"".join(rawzk.frame(rawzk.i32(i) + rawzk.i32(3) + rawzk.path_watch("/")) for i in range(1, n + 1))
    slow.sock.settimeout(60)
    sender = threading.Thread(target=slow.sock.sendall, args=(frames,), daemon=True)
    sender.start()
    time.sleep(2.0)
    from conftest import four_letter
    mntr = dict(l.split("\t", 1) for l in four_letter(limited.port, "mntr").splitlines() if "\t" in l)
    assert int(mntr["zk_packets_received"]) < n // 2, "the server kept reading a client that does not read"
    grown = rss_kib(limited.proc.pid) - before
    assert grown < 48 * 1024, f"server grew by {grown} KiB for a client that does not read"
    assert "over connectionOutputBytesMax" not in limited.logtext()
    # Others are served meanwhile.
    p = "/other-" + uuid.uuid4().hex[:6]
    zk.create(p, b"v")
    assert zk.get(p)[0] == b"v"
    # Once the client reads, it gets every reply, in order.
    for i in range(1, n + 1):
        xid, _, err, _ = slow.reply()
        assert (xid, err) == (i, 0)
    sender.join(10)
    slow.close()
    zk.stop()


def test_a_client_drowning_in_watch_events_is_disconnected(limited):
    zk = client(limited.hosts)
    base = "/flood-" + uuid.uuid4().hex[:6]
    leaf = base + "/" + "n" * 900
    zk.create(leaf, b"", makepath=True)
    slow = slow_socket(limited.port)
    slow.handshake()
    slow.request(106, rawzk.ustr(base) + rawzk.i32(1))  # persistent recursive watch
    assert slow.reply()[2] == 0
    # ~16 MiB of events for a client that reads nothing.
    writer = rawzk.Raw(limited.port)
    writer.handshake()
    total = 18000
    for i in range(total):
        writer.request(5, rawzk.set_data(leaf, b"%d" % i))
    for _ in range(total):
        assert writer.reply()[2] == 0
    wait_until(lambda: "over connectionOutputBytesMax" in limited.logtext(), 20, what="the server to cut the client")
    got = 0
    slow.sock.settimeout(10)
    while slow.reply() is not None:
        got += 1
    assert got < total, "every event was delivered: the limit did nothing"
    # The server is fine and the writer's session untouched.
    writer.request(3, rawzk.path_watch(leaf))
    assert writer.reply()[2] == 0
    zk.stop()


def test_ten_thousand_sessions(tmpdir_path):
    """10,000 concurrent sessions, each connected and answered, while another
    client keeps working."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 10_500:
        pytest.skip(f"this machine allows {hard} open files per process")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    s = Zkd(tmpdir_path, extra_cfg="tickTime=2000\n").start()
    socks = []
    try:
        n = 10_000
        for _ in range(n):
            sk = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            sk.sendall(rawzk.connect_request(timeout=40000))
            socks.append(sk)
        sessions = set()
        for sk in socks:
            raw = rawzk.Raw.__new__(rawzk.Raw)
            raw.sock, raw.buf, raw.xid = sk, b"", 0
            body = raw.recv_frame()
            assert body is not None, "a connection was refused"
            sessions.add(rawzk.Reader(body[8:16]).long())
        assert len(sessions) == n and 0 not in sessions
        from conftest import four_letter
        mntr = dict(l.split("\t", 1) for l in four_letter(s.port, "mntr").splitlines() if "\t" in l)
        assert int(mntr["zk_num_alive_connections"]) >= n
        assert int(mntr["zk_global_sessions"]) >= n
        zk = client(s.hosts)
        zk.create("/still-working", b"yes")
        assert zk.get("/still-working")[0] == b"yes"
        zk.stop()
    finally:
        for sk in socks:
            sk.close()
        s.stop()


def test_closed_connections_release_everything(zkd):
    """Connections that end (closed, or half-closed by the client) leave no
    task, descriptor or connection count behind."""
    from conftest import four_letter

    def mntr():
        return dict(l.split("\t", 1) for l in four_letter(zkd.port, "mntr").splitlines() if "\t" in l)

    fds_before = int(mntr()["zk_open_file_descriptor_count"])
    for i in range(300):
        raw = rawzk.Raw(zkd.port)
        raw.handshake()
        if i % 2:
            raw.sock.shutdown(socket.SHUT_WR)  # half-close: the server must finish and close
            assert raw.closed(5)
        raw.close()
    wait_until(lambda: int(mntr()["zk_num_alive_connections"]) == 0, 10, what="every connection to be gone")
    wait_until(lambda: int(mntr()["zk_open_file_descriptor_count"]) <= fds_before + 5, 10,
               what="descriptors to be released")
