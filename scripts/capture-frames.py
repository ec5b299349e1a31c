#!/usr/bin/env python3
"""Record the ZooKeeper frames that pass between a client and a server.

Usage: capture-frames.py LISTEN_PORT SERVER_HOST:PORT OUT_FILE [--seconds N]

Listens on 127.0.0.1:LISTEN_PORT, forwards every connection to the server, and
appends one line per frame to OUT_FILE: "<conn> <c|s> <hex of length+body>".
Stops after --seconds (default 60). Used to make the byte-exact codec fixtures
in zkd/proto/tests/captured/ from real clients talking to Apache ZooKeeper.
"""
import asyncio
import sys


def usage():
    print(__doc__.strip())
    sys.exit(2)


async def pump(reader, writer, conn, tag, out):
    buf = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
            buf += data
            while len(buf) >= 4:
                n = int.from_bytes(buf[:4], "big", signed=True)
                if n < 0 or n > 0x7FFFFFF:
                    buf = b""  # a four-letter word or garbage: stop framing
                    break
                if len(buf) < 4 + n:
                    break
                out.write(f"{conn} {tag} {buf[:4 + n].hex()}\n")
                out.flush()
                buf = buf[4 + n:]
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main():
    args = sys.argv[1:]
    if len(args) < 3 or args[0] in ("-h", "--help"):
        usage()
    seconds = 60.0
    if "--seconds" in args:
        i = args.index("--seconds")
        seconds = float(args[i + 1])
        del args[i:i + 2]
    port, target, path = int(args[0]), args[1], args[2]
    host, tport = target.rsplit(":", 1)
    out = open(path, "a")
    counter = [0]

    async def handle(cr, cw):
        counter[0] += 1
        conn = counter[0]
        sr, sw = await asyncio.open_connection(host, int(tport))
        await asyncio.gather(pump(cr, sw, conn, "c", out), pump(sr, cw, conn, "s", out))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await asyncio.sleep(seconds)


if __name__ == "__main__":
    asyncio.run(main())
