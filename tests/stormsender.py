"""
A hostile sender: spt3g's own C{G3NetworkSender}, listening, that gives
every frame a new C{session_id}, so that each frame is an acquisition, and
a file, of its own::

    python tests/stormsender.py --port P --go FILE --bursts 2000,20000

It sends ALIVE every 50 ms until C{FILE.1} exists (the test makes it once
tsagg is connected: the sender accepts a client only while it sends), then
the first burst of small Scan frames at once (its queue is unbounded, so it
never drops one, and tsagg takes them as fast as it can); then ALIVE again
until C{FILE.2} exists, and so on.  After each burst it prints C{sent N}
(frames so far).  Frame C{i} (from 0) has C{session_id} 1700000000 + i and
C{frame_num} 0; it ends by holding the connection open.
"""

import argparse
import os
import sys
import time

from spt3g import core

BASE_SESSION = 1700000000


def storm_frame(i, stream_id="crate1slot2"):
    """
    The storm's frame C{i}: a small Scan frame of session 1700000000 + C{i}.
    """
    frame = core.G3Frame(core.G3FrameType.Scan)
    frame["sostream_id"] = stream_id
    frame["session_id"] = BASE_SESSION + i
    frame["frame_num"] = 0
    frame["sostream_version"] = 2
    frame["time"] = core.G3Time(int((BASE_SESSION + i) * core.G3Units.s))
    frame["data"] = core.G3VectorInt([i] * 16)
    return frame


def alive():
    frame = core.G3Frame(core.G3FrameType.none)
    frame["sostream_flowcontrol"] = 0
    return frame


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--go", required=True)
    p.add_argument("--bursts", default="20000")
    args = p.parse_args(argv)
    sender = core.G3NetworkSender(hostname="*", port=args.port,
                                  max_queue_size=0)
    sys.stdout.write("Listening on port %d\n" % (args.port,))
    sys.stdout.flush()
    sent = 0
    for n, count in enumerate(int(b) for b in args.bursts.split(",")):
        while not os.path.exists("%s.%d" % (args.go, n + 1)):
            sender(alive())
            time.sleep(0.05)
        for i in range(sent, sent + count):
            sender(storm_frame(i))
        sent += count
        sys.stdout.write("sent %d\n" % (sent,))
        sys.stdout.flush()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
