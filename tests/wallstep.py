"""
A child process for the wall-clock step tests of L{tsagg.clock}: it makes
the same call C{DELAY} seconds from now on a L{MonotonicClock} and on the
reactor, says C{scheduled}, wakes the reactor halfway, and once the clock's
call is made (and half a second more) prints, as JSON, when each call came:
monotonic and wall seconds after scheduling, or nothing for a call not
made.

    python -m tests.wallstep DELAY
"""

import json
import sys
import time

from twisted.internet import reactor

from tsagg.clock import MonotonicClock


def main(delay):
    clock = MonotonicClock(reactor)
    made = {}
    monotonic_start, wall_start = time.monotonic(), time.time()

    def note(name):
        made[name] = {"monotonic": time.monotonic() - monotonic_start,
                      "wall": time.time() - wall_start}

    clock.callLater(delay, note, "clock")
    reactor.callLater(delay, note, "reactor")
    # A wake-up halfway, at which the reactor finds its own call due if the
    # wall clock went forward.
    clock.callLater(delay / 2, lambda: None)
    clock.callLater(delay + 0.5, reactor.stop)
    print("scheduled", flush=True)
    reactor.run()
    print(json.dumps(made), flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]))
