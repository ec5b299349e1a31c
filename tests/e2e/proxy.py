"""A TCP proxy on loopback that a test can cut: it drops every connection
it carries and refuses new ones until resumed, which is how a client sees a
network partition from its server."""
import socket
import threading


class Proxy:
    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.cut = False
        self.lock = threading.Lock()
        self.pairs = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self.cut:
                c.close()
                continue
            try:
                s = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.pairs.append((c, s))
            threading.Thread(target=self._pump, args=(c, s), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def disconnect(self):
        """Cut every connection and refuse new ones."""
        self.cut = True
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for c, s in pairs:
            for x in (c, s):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                    x.close()
                except OSError:
                    pass

    def resume(self):
        self.cut = False

    def close(self):
        self.stopped = True
        self.disconnect()
        self.lsock.close()
