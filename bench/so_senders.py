"""
N SO-rate streams from spt3g's own G3NetworkSender, the real peer: each
sends 1000 channels x 200 samples of int32 once a second, as the SMuRF
streamer does, with the SO stream keys and counting frame_num.

Before --go-file exists, every sender sends ALIVE five times a second (which
is also when G3NetworkSender accepts clients).  Then each stream sends START,
Observation, Wiring, --frames Scan frames at 1 Hz (the streams staggered
over the second), END and the two CLEANSE frames, and a last ALIVE.

Prints {"ports": [...]} when listening and {"sent": n} at the end.
"""

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FRAME_CASES, SESSION_ID, emit  # noqa: E402

import numpy as np  # noqa: E402
from spt3g import core  # noqa: E402


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def flow(value, ftype=core.G3FrameType.none):
    f = core.G3Frame(ftype)
    f["sostream_flowcontrol"] = value
    return f


def stamp(frame, sid, num, now):
    frame["sostream_id"] = sid
    frame["sostream_version"] = 2
    frame["session_id"] = SESSION_ID
    frame["frame_num"] = num
    frame["time"] = core.G3Time(int(now * core.G3Units.s))
    return frame


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--go-file", required=True)
    args = parser.parse_args()

    channels, samples, _ = FRAME_CASES["so"]
    names = core.G3VectorString(["r%04d" % i for i in range(channels)])
    data = np.random.default_rng(1).integers(
        -2 ** 20, 2 ** 20, size=(channels, samples), dtype=np.int32)
    ports = free_ports(args.streams)
    senders = [core.G3NetworkSender(hostname="*", port=p) for p in ports]
    sids = ["crate%dslot%d" % (i // 8, i % 8) for i in range(args.streams)]
    emit({"ports": ports})

    while not os.path.exists(args.go_file):
        for s in senders:
            s(flow(0))
        time.sleep(0.2)

    now = time.time()
    for s, sid in zip(senders, sids):
        s(flow(1))
        obs = core.G3Frame(core.G3FrameType.Observation)
        s(stamp(obs, sid, 0, now))
        wiring = core.G3Frame(core.G3FrameType.Wiring)
        wiring["status"] = "{}"
        s(stamp(wiring, sid, 1, now))

    t0 = time.monotonic() + 0.5
    sent = 0
    for k in range(args.frames):
        for i, (s, sid) in enumerate(zip(senders, sids)):
            due = t0 + k + i / args.streams
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            frame = core.G3Frame(core.G3FrameType.Scan)
            frame["data"] = core.G3TimestreamMap(
                names, data, core.G3Time(int((now - 1) * core.G3Units.s)),
                core.G3Time(int(now * core.G3Units.s)))
            s(stamp(frame, sid, 2 + k, now))
            sent += 1

    for s in senders:
        s(flow(2))
        s(flow(3, core.G3FrameType.Observation))
        s(flow(3, core.G3FrameType.Wiring))
    time.sleep(1.0)
    for s in senders:
        s(flow(0))
        s(core.G3Frame(core.G3FrameType.EndProcessing))
    emit({"sent": sent})


if __name__ == "__main__":
    main()
