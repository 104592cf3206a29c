"""
A sender that can be killed: a plain-socket process that serves bytes of a
prepared G3 stream to one client, the way a G3NetworkSender would, and then
does what the fault test asks of it.

It imports nothing but the standard library, so it starts fast enough to be
killed and restarted many times in one test::

    python tests/faultpeer.py --port P --stream FILE [--cut N]
        [--chunk K] [--pace S] [--seed N] [--then hold|close|reset]

It listens on 127.0.0.1:P (with SO_REUSEADDR, so the next one can take the
port at once), accepts one connection, writes C{FILE[:cut]} in chunks of
C{K} bytes (of random sizes up to 64 KiB when K is 0), sleeping C{S}
seconds between chunks, and then holds the connection open (to be killed),
closes it, or resets it.
"""

import argparse
import random
import socket
import struct
import sys
import time


def parse(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--cut", type=int, default=None)
    p.add_argument("--chunk", type=int, default=0)
    p.add_argument("--pace", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--then", choices=["hold", "close", "reset"],
                   default="hold")
    return p.parse_args(argv)


def serve(args):
    with open(args.stream, "rb") as f:
        data = f.read()
    if args.cut is not None:
        data = data[:args.cut]
    rng = random.Random(args.seed)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # The previous sender's socket may linger on the port for a moment.
    for _ in range(200):
        try:
            listener.bind(("127.0.0.1", args.port))
            break
        except OSError as e:
            sys.stderr.write("bind: %s\n" % (e,))
            time.sleep(0.05)
    else:
        listener.bind(("127.0.0.1", args.port))
    listener.listen(1)
    sys.stderr.write("listening on %d\n" % args.port)
    sys.stderr.flush()
    conn, peer = listener.accept()
    sys.stderr.write("accepted %s:%d\n" % peer)
    sys.stderr.flush()
    listener.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pos = 0
    while pos < len(data):
        size = args.chunk or rng.randint(1, 65536)
        conn.sendall(data[pos:pos + size])
        pos += size
        if args.pace:
            time.sleep(args.pace)
    # Everything is handed to the kernel; tell the parent so.
    sys.stdout.write("sent %d\n" % len(data))
    sys.stdout.flush()
    if args.then == "hold":
        while True:
            time.sleep(3600)
    if args.then == "reset":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
    conn.close()


if __name__ == "__main__":
    serve(parse(sys.argv[1:]))
