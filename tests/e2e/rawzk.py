"""A deliberately small ZooKeeper client over a raw socket, for tests that
must see frames exactly: their order, their bytes, and what happens when a
client sends something no library would."""
import socket
import struct


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def ustr(s):
    if s is None:
        return i32(-1)
    b = s.encode() if isinstance(s, str) else s
    return i32(len(b)) + b


def frame(body):
    return i32(len(body)) + body


OPEN_ACL = i32(1) + i32(31) + ustr("world") + ustr("anyone")


def connect_request(timeout=4000, session=0, passwd=b"\0" * 16, last_zxid=0, read_only=True):
    body = i32(0) + i64(last_zxid) + i32(timeout) + i64(session) + ustr(passwd)
    if read_only is not None:
        body += b"\x01" if read_only else b"\x00"
    return frame(body)


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, n):
        v = self.b[self.p:self.p + n]
        if len(v) != n:
            raise ValueError("short")
        self.p += n
        return v

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def long(self):
        return struct.unpack(">q", self.take(8))[0]

    def buf(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def str(self):
        b = self.buf()
        return None if b is None else b.decode()

    def stat(self):
        names = ["czxid", "mzxid", "ctime", "mtime", "version", "cversion", "aversion",
                 "ephemeralOwner", "dataLength", "numChildren", "pzxid"]
        kinds = "qqqqiiiqiiq"
        return {n: (self.long() if k == "q" else self.int()) for n, k in zip(names, kinds)}


class Raw:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.xid = 0

    def send(self, data):
        self.sock.sendall(data)

    def recv_frame(self):
        """The next frame's body, or None if the server closed the connection."""
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">i", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return body
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def handshake(self, **kw):
        self.send(connect_request(**kw))
        body = self.recv_frame()
        if body is None:
            return None
        r = Reader(body)
        out = {"protocol": r.int(), "timeout": r.int(), "session": r.long(), "passwd": r.buf(), "len": len(body)}
        return out

    def request(self, op, body, xid=None):
        if xid is None:
            self.xid += 1
            xid = self.xid
        self.send(frame(i32(xid) + i32(op) + body))
        return xid

    def reply(self):
        """(xid, zxid, err, reader over the rest) of the next frame."""
        body = self.recv_frame()
        if body is None:
            return None
        r = Reader(body)
        return r.int(), r.long(), r.int(), r

    def closed(self, timeout=5.0):
        """True if the server closes the connection (no more frames)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if self.recv_frame() is None:
                    return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


# Request bodies.
def create(path, data=b"", flags=0, acl=OPEN_ACL):
    return ustr(path) + ustr(data) + acl + i32(flags)


def path_watch(path, watch=False):
    return ustr(path) + (b"\x01" if watch else b"\x00")


def set_data(path, data, version=-1):
    return ustr(path) + ustr(data) + i32(version)


def delete(path, version=-1):
    return ustr(path) + i32(version)
