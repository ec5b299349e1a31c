#!/usr/bin/env python3
"""Forwards TCP connections on loopback with a fixed delay each way.

Usage: scripts/delay-proxy.py DELAY_US LISTEN_PORT:TARGET_PORT...

Every chunk read from one side is written to the other DELAY_US after it
was read, in order. `bench.sh --member-delay` puts one in front of each
member's quorum port, for each other member, so the members of an ensemble
talk as if they ran on separate machines, while the clients still talk to
them directly. This machine's kernel has no netem, which would do this
without a process in the middle.

It is a Python thread per direction of each connection: it adds tens of µs
of its own per chunk and cannot carry a heavy load, so it is meant for
runs with a few requests in flight. Both servers of a run go through the
same proxy code. Stops on SIGTERM/SIGINT or when its parent dies.
"""
import collections
import os
import signal
import socket
import sys
import threading
import time


def pump(src, dst, delay):
    """Copies src to dst, each chunk `delay` seconds after it was read."""
    queue = collections.deque()
    ready = threading.Condition()

    def writer():
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            if data is None:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                return

    threading.Thread(target=writer, daemon=True).start()
    while True:
        try:
            data = src.recv(1 << 16)
        except OSError:
            data = b""
        with ready:
            queue.append((time.monotonic() + delay, data or None))
            ready.notify()
        if not data:
            return


def serve(listen_port, target_port, delay):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(64)
    while True:
        client, _ = ls.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=2)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(client, upstream, delay), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, delay), daemon=True).start()


def main():
    if sys.argv[1:2] in (["--help"], ["-h"]):
        print(__doc__)
        return
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    delay = int(sys.argv[1]) / 1e6
    for spec in sys.argv[2:]:
        listen_port, target_port = (int(p) for p in spec.split(":"))
        threading.Thread(target=serve, args=(listen_port, target_port, delay), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()
    # Bounded by its parent's life: a bench that dies leaves no proxy.
    while os.getppid() == parent:
        time.sleep(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
