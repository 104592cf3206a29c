"""
The receiver of the quick-look comparison: the recording service as the OCS
agent makes it (tsagg.agent.service_maker: its options, timers on a
MonotonicClock), with or without a quick look watching the frames, in a plain
reactor.  There is no OCS: the quick look's feed is a function that counts
the samples.  Ends on SIGTERM as twistd does (the file closed), and then
writes the quick look's status as JSON to $TSAGG_QL_STATUS if set.

usage: ql_receiver.py HOST:PORT DATA_DIR [--channels r0001,r0500]
                      [--target-rate 10]
"""

import argparse
import json
import os
import sys

from twisted.internet import reactor

from tsagg.agent import make_parser, service_maker
from tsagg.clock import MonotonicClock
from tsagg.memory import keep_freed_memory
from tsagg.quicklook import QuickLook


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address")
    parser.add_argument("data_dir")
    parser.add_argument("--channels", default="",
                        help="comma-separated; none: no quick look")
    parser.add_argument("--target-rate", type=float, default=10.0)
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    agent_args = make_parser().parse_args(
        ["--address", host, "--port", port, "--data-dir", args.data_dir,
         "--create-data-dir", "--no-fsync", "--time-per-file", "3600"])
    keep_freed_memory()
    clock = MonotonicClock(reactor)
    samples = [0]

    def publish(block):
        samples[0] += sum(len(v) for v in block["data"].values())
    look = None
    if args.channels:
        look = QuickLook(publish, clock, channels=args.channels.split(","),
                         target_rate=args.target_rate)
    service = service_maker(agent_args, reactor, clock, watch_frames=look)()
    service.startService()

    def stop():
        d = service.stopService()
        status_path = os.environ.get("TSAGG_QL_STATUS")
        if status_path:
            status = dict(look.status) if look is not None else {}
            status["samples_counted"] = samples[0]
            with open(status_path, "w") as f:
                json.dump(status, f)
        return d
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
