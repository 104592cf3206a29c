"""
The benchmark's sender: serves one pre-serialized frame, over and over, to the
first client that connects on 127.0.0.1.

Modes:

  plain   a plain socket server writing the frame's bytes as fast as the
          receiver reads them (the sender is never the bottleneck: the bytes
          are joined into ~4 MB chunks once, before the clock starts);
  g3ns    spt3g's own G3NetworkSender, the real peer (it accepts a client
          only inside Process(), i.e. when a frame is sent).

Talks JSON lines on stdout: {"port": P} once listening, {"accepted": t} when
a client is in (plain), {"t0": t} when the first byte goes out, and
{"t1": t, "bytes": n, "frames": k} when all is sent.  Times are
time.monotonic(), shared by every process of the machine.  With --wait-go it
reads one line from stdin before sending.
"""

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FRAME_CASES, emit, scan_bytes, scan_frame  # noqa: E402

CHUNK = 4 << 20


def wait_go(args):
    if args.wait_go:
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)


def plain(args):
    raw = scan_bytes(args.case)
    per_chunk = max(1, CHUNK // len(raw))
    chunk = raw * per_chunk
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(8)
    emit({"port": listener.getsockname()[1], "frame_bytes": len(raw)})
    conn, _ = listener.accept()
    emit({"accepted": time.monotonic()})
    if args.idle:
        # Accept and say nothing: an idle, connected peer.
        conn.recv(1)
        return
    wait_go(args)
    sent = frames = 0
    t0 = time.monotonic()
    emit({"t0": t0})
    try:
        if args.stall_after is not None:
            conn.sendall(raw[:args.stall_after])
            sent = args.stall_after
            emit({"stalled": time.monotonic(), "bytes": sent})
            conn.recv(1)
            return
        if args.seconds is not None:
            deadline = t0 + args.seconds
            while time.monotonic() < deadline:
                conn.sendall(chunk)
                sent += len(chunk)
                frames += per_chunk
        else:
            left = args.count
            while left >= per_chunk:
                conn.sendall(chunk)
                left -= per_chunk
            if left:
                conn.sendall(raw * left)
            frames = args.count
            sent = frames * len(raw)
    except (BrokenPipeError, ConnectionResetError):
        emit({"peer_closed": time.monotonic(), "bytes": sent})
    t1 = time.monotonic()
    emit({"t1": t1, "bytes": sent, "frames": frames})
    # Close the listener first, so that a reconnecting receiver is refused.
    listener.close()
    conn.close()


def g3ns(args):
    from spt3g import core
    frame = scan_frame(args.case)
    raw_len = len(frame._cereal_dumps())
    sender = core.G3NetworkSender(hostname="*", port=args.port)
    emit({"port": args.port, "frame_bytes": raw_len})
    wait_go(args)
    t0 = time.monotonic()
    emit({"t0": t0})
    for _ in range(args.count):
        sender(frame)
    sender(core.G3Frame(core.G3FrameType.EndProcessing))
    t1 = time.monotonic()
    emit({"t1": t1, "bytes": raw_len * args.count, "frames": args.count})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("plain", "g3ns"), default="plain")
    parser.add_argument("--case", choices=sorted(FRAME_CASES), default="1.6MB")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=None,
                        help="send for this long instead of --count frames")
    parser.add_argument("--stall-after", type=int, default=None,
                        help="send this many bytes of a frame, then stall")
    parser.add_argument("--idle", action="store_true",
                        help="accept, then send nothing")
    parser.add_argument("--wait-go", action="store_true")
    args = parser.parse_args()
    if args.mode == "g3ns" and not args.port:
        parser.error("g3ns needs --port")
    (plain if args.mode == "plain" else g3ns)(args)


if __name__ == "__main__":
    main()
