"""Four-letter words in the reference's formats, checked line by line on
zkd and Apache ZooKeeper with the same patterns (monitoring scripts parse
these)."""
import re
import uuid

import pytest

import rawzk
from conftest import four_letter


@pytest.fixture
def busy(any_server):
    """One session with an ephemeral, a data watch and a child watch."""
    raw = rawzk.Raw(any_server.port)
    info = raw.handshake()
    p = "/flw-" + uuid.uuid4().hex[:8]
    raw.request(1, rawzk.create(p, flags=1))
    raw.reply()
    raw.request(4, rawzk.path_watch(p, True))
    raw.reply()
    raw.request(8, rawzk.path_watch("/", True))
    raw.reply()
    yield info["session"], p
    raw.close()


def lines(port, word):
    return four_letter(port, word).splitlines()


def test_stat(any_server, busy):
    out = lines(any_server.port, "stat")
    assert out[0].startswith("Zookeeper version: ")
    assert out[1] == "Clients:"
    clients = [l for l in out if l.startswith(" /")]
    # queued= counts requests the server has not answered yet: the busy
    # client's ping can be one of them at the moment `stat` is answered
    # (seen once from Apache ZooKeeper), so only its form is checked. The
    # bracket is, in Apache ZooKeeper, the interest set of the connection's
    # selection key: it printed [0] for the busy client once (a CI run,
    # session 52), so 0 or 1.
    assert any(re.fullmatch(r" /127\.0\.0\.1:\d+\[[01]\]\(queued=\d+,recved=\d+,sent=\d+\)", l) for l in clients), out
    for key in ["Latency min/avg/max: ", "Received: ", "Sent: ", "Connections: ", "Outstanding: ",
                "Zxid: 0x", "Mode: standalone", "Node count: "]:
        assert any(l.startswith(key) for l in out), key


def test_cons(any_server, busy):
    # The bracket: 0 or 1, as in test_stat.
    session, _ = busy
    out = lines(any_server.port, "cons")
    mine = [l for l in out if f"sid=0x{session:x}," in l]
    assert len(mine) == 1, out
    assert re.fullmatch(
        r" /127\.0\.0\.1:\d+\[[01]\]\(queued=\d+,recved=\d+,sent=\d+,sid=0x[0-9a-f]+,lop=GETC,est=\d+,to=\d+,"
        r"lcxid=0x3,lzxid=0x[0-9a-f]+,lresp=\d+,llat=\d+,minlat=\d+,avglat=\d+,maxlat=\d+\)",
        mine[0],
    ), mine[0]


def test_wchc_and_wchp(any_server, busy):
    session, p = busy
    wchc = four_letter(any_server.port, "wchc")
    assert f"0x{session:x}\n\t{p}\n" in wchc
    wchp = four_letter(any_server.port, "wchp")
    assert f"{p}\n\t0x{session:x}\n" in wchp
    wchs = lines(any_server.port, "wchs")
    assert re.fullmatch(r"\d+ connections watching \d+ paths", wchs[0])
    assert re.fullmatch(r"Total watches:\d+", wchs[1])


def test_dump_lists_ephemerals_by_session(any_server, busy):
    session, p = busy
    out = four_letter(any_server.port, "dump")
    assert out.startswith("SessionTracker dump:\n")
    assert "ephemeral nodes dump:\n" in out
    assert f"0x{session:x}:\n\t{p}\n" in out


def test_conf(any_server):
    out = dict(l.split("=", 1) for l in lines(any_server.port, "conf") if "=" in l)
    assert out["clientPort"] == str(any_server.port)
    assert out["tickTime"] == "200"
    assert (out["minSessionTimeout"], out["maxSessionTimeout"]) == ("400", "4000")
    assert out["maxClientCnxns"] == "0"
    for key in ["dataDir", "dataLogDir", "serverId", "secureClientPort", "clientPortListenBacklog"]:
        assert key in out


def test_mntr_counts(any_server, busy):
    m = dict(l.split("\t", 1) for l in lines(any_server.port, "mntr") if "\t" in l)
    assert m["zk_server_state"] == "standalone"
    assert int(m["zk_ephemerals_count"]) >= 1
    assert int(m["zk_watch_count"]) >= 2
    assert int(m["zk_num_alive_connections"]) >= 1
    assert int(m["zk_znode_count"]) >= 6
    assert int(m["zk_global_sessions"]) >= 1
    assert int(m["zk_approximate_data_size"]) > 0


def test_envi_srst_crst_isro_ruok(any_server):
    assert lines(any_server.port, "envi")[0] == "Environment:"
    assert lines(any_server.port, "envi")[1].startswith("zookeeper.version=")
    assert four_letter(any_server.port, "srst") == "Server stats reset.\n"
    assert four_letter(any_server.port, "crst") == "Connection stats reset.\n"
    assert four_letter(any_server.port, "isro") == "rw"
    assert four_letter(any_server.port, "ruok") == "imok"


def test_prometheus_endpoint_serves_mntr_figures(tmpdir_path):
    import urllib.request
    from conftest import Zkd, free_port, client
    port = free_port()
    s = Zkd(tmpdir_path, extra_cfg=(
        "metricsProvider.className=org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider\n"
        f"metricsProvider.httpHost=127.0.0.1\nmetricsProvider.httpPort={port}\n")).start()
    try:
        zk = client(s.hosts)
        zk.create("/m1", b"x")
        zk.create("/m2", b"y")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        lines = dict(l.split(" ", 1) for l in body.splitlines() if not l.startswith("#"))
        # root, /zookeeper, /zookeeper/config, /zookeeper/quota + 2 = as mntr reports
        mntr = dict(l.split("\t", 1) for l in four_letter(s.port, "mntr").splitlines())
        assert lines["znode_count"] == mntr["zk_znode_count"]
        assert int(lines["num_alive_connections"]) >= 1
        assert "# TYPE znode_count gauge" in body
        assert 'server_state{server_state="standalone"} 1' in body
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
        zk.stop()
    finally:
        s.stop()


def test_metrics_provider_other_than_prometheus_is_refused(tmpdir_path):
    import subprocess
    from conftest import ZKD, Zkd
    s = Zkd(tmpdir_path, extra_cfg="metricsProvider.className=com.example.Nope\n")
    r = subprocess.run([ZKD, "serve", s.cfg_path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 78 and "metricsProvider.className" in r.stderr
