#!/usr/bin/env python3
"""Free TCP ports for the servers that tests and scripts start on loopback.

A port is picked at random below the kernel's ephemeral range and checked
free on every address. The usual trick, binding port 0, hands out a port
from the ephemeral range, and an outgoing connection can take that port
between the pick and the server's bind: an ensemble member in the e2e
suite once failed to start that way ("Address already in use"). Nothing
takes a port below the range unless it asks for that port.

As a module: free_port() never returns the same port twice in a process.
As a program: ports.py N prints N distinct free ports, one per line.
"""
import random
import socket
import sys


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_LOW, _HIGH = 10000, max(_ephemeral_low(), 10001)
_handed_out = set()


def free_port():
    for _ in range(1000):
        port = random.randrange(_LOW, _HIGH)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_LOW}-{_HIGH - 1}")


if __name__ == "__main__":
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        print(free_port())
