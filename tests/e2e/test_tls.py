"""The secure client port: TLS with rustls, configured by ZooKeeper's own
zoo.cfg keys, used by kazoo and by zkCli (ZooKeeperMain, Netty client) with
client certificates; wrong certificates and plaintext are refused,
configuration errors name their key."""
import os
import subprocess

import pytest

from conftest import ZKD, Zkd, free_port


def run(*cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def pki(tmp_path):
    d = str(tmp_path)
    ext = os.path.join(d, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for ca in ["ca", "rogue"]:
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=d)
    for name, ca in [("server", "ca"), ("client", "ca"), ("intruder", "rogue")]:
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=d)
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", f"{name}.crt", cwd=d)
        # ZooKeeper's PEM key store: the private key and the certificate in one file.
        with open(os.path.join(d, f"{name}.pem"), "w") as f:
            f.write(open(os.path.join(d, f"{name}.key")).read() + open(os.path.join(d, f"{name}.crt")).read())
    return d


@pytest.fixture
def tls_zkd(pki, tmpdir_path):
    port = free_port()
    s = Zkd(tmpdir_path, extra_cfg=(
        f"secureClientPort={port}\nserverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
        f"ssl.keyStore.location={pki}/server.pem\nssl.keyStore.type=PEM\n"
        f"ssl.trustStore.location={pki}/ca.pem\nssl.trustStore.type=PEM\n")).start()
    s.secure_port = port
    yield s
    s.stop()


def kazoo(port, pki, who="client", timeout=10):
    from kazoo.client import KazooClient
    c = KazooClient(hosts=f"127.0.0.1:{port}", use_ssl=True, ca=f"{pki}/ca.pem", certfile=f"{pki}/{who}.crt",
                    keyfile=f"{pki}/{who}.key", verify_certs=True, timeout=timeout)
    c.start(timeout=timeout)
    return c


def test_kazoo_over_tls_with_a_client_certificate(tls_zkd, pki):
    c = kazoo(tls_zkd.secure_port, pki)
    try:
        c.create("/tls", b"secret data")
        assert c.get("/tls")[0] == b"secret data"
    finally:
        c.stop()
        c.close()
    # The plaintext port serves the same tree.
    from conftest import client
    p = client(tls_zkd.hosts)
    assert p.get("/tls")[0] == b"secret data"
    p.stop()
    p.close()


def test_wrong_certificates_and_plaintext_are_refused(tls_zkd, pki):
    from kazoo.client import KazooClient
    with pytest.raises(Exception):
        kazoo(tls_zkd.secure_port, pki, who="intruder", timeout=4)
    plain = KazooClient(hosts=f"127.0.0.1:{tls_zkd.secure_port}", timeout=3)
    with pytest.raises(Exception):
        plain.start(timeout=4)
    plain.stop()
    assert "TLS handshake" in tls_zkd.logtext()


def test_zkcli_over_tls(tls_zkd, pki):
    """zkCli's main class with the Netty client socket and PEM stores. Debian's
    zkCli.sh cannot do this as shipped: its class path lacks netty-codec and
    netty-resolver, so the JVM is started here with them added."""
    from conftest import client
    p = client(tls_zkd.hosts)
    p.create("/fromcli", b"over-tls")
    p.stop()
    p.close()
    cp = ":".join(["/etc/zookeeper/conf", "/usr/share/java/zookeeper.jar", "/usr/share/java/netty-codec.jar",
                   "/usr/share/java/netty-resolver.jar"])
    r = subprocess.run([
        "java", "-cp", cp,
        "-Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty",
        "-Dzookeeper.client.secure=true",
        f"-Dzookeeper.ssl.keyStore.location={pki}/client.pem", "-Dzookeeper.ssl.keyStore.type=PEM",
        f"-Dzookeeper.ssl.trustStore.location={pki}/ca.pem", "-Dzookeeper.ssl.trustStore.type=PEM",
        "org.apache.zookeeper.ZooKeeperMain", "-waitforconnection", "-server", f"127.0.0.1:{tls_zkd.secure_port}",
        "get", "/fromcli",
    ], capture_output=True, text=True, timeout=90)
    assert "over-tls" in r.stdout, r.stdout + r.stderr


def test_tls_configuration_errors_name_the_key(tmpdir_path, pki):
    for extra, key in [
        (f"secureClientPort={free_port()}\n", "ssl.keyStore.location"),
        (f"secureClientPort={free_port()}\nssl.keyStore.location={pki}/server.pem\nssl.keyStore.type=JKS\n",
         "ssl.keyStore.type"),
        (f"secureClientPort={free_port()}\nssl.keyStore.location={pki}/server.pem\n", "ssl.clientAuth"),
        (f"secureClientPort={free_port()}\nssl.keyStore.location={pki}/ca.key\nssl.clientAuth=none\n",
         "certificate"),
    ]:
        s = Zkd(tmpdir_path, extra_cfg=extra)
        r = subprocess.run([ZKD, "serve", s.cfg_path], capture_output=True, text=True, timeout=30)
        assert r.returncode == 78, (extra, r.stderr)
        assert key in r.stderr, (extra, r.stderr)
