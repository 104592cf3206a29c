"""
``twistd tsagg``: record a G3 stream with no OCS around it.
"""

from twisted.python import usage

from tsagg import options, wire
from tsagg.clock import MonotonicClock
from tsagg.memory import keep_freed_memory
from tsagg.service import RecordingService, tcp_endpoint_description

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """
    Command line of C{twistd tsagg}.  The defaults are those of the original
    OCS Timestream Aggregator Agent.
    """

    synopsis = "[options]"
    longdesc = ("Connect to a spt3g G3NetworkSender and write every frame it "
                "sends to rotating .g3 files, by the Simons Observatory "
                "stream rules, until stopped.")

    optParameters = [
        ["address", "a", "localhost", "Host of the G3NetworkSender."],
        ["port", "p", 50000, "TCP port of the G3NetworkSender.", options.port],
        ["data-dir", "d", "/data/", "Directory the files are written under."],
        ["time-per-file", "t", 600.0,
         "Seconds after which a file is closed and the next one begun.",
         options.positive(float)],
        ["stream-id", "s", "unknown",
         "Directory name for a stream whose frames carry no sostream_id.",
         options.stream_id],
        ["gap-timeout", "g", 10.0,
         "Seconds without a frame after which the acquisition ends.",
         options.positive(float)],
        ["idle-timeout", None, 30.0,
         "Seconds without any byte after which the connection is dropped "
         "and made again.", options.positive(float)],
        ["max-frame-size", None, wire.DEFAULT_MAX_FRAME_SIZE,
         "Largest frame accepted, in bytes; a larger one drops the "
         "connection.", options.positive(int)],
        ["endpoint", None, None,
         "Twisted client endpoint of the sender, e.g. "
         "'tcp:host=h:port=50000'; overrides --address and --port."],
    ]
    optFlags = [
        ["no-fsync", None, "Do not fsync files when closing them."],
    ]

    def postOptions(self):
        if not self["data-dir"]:
            raise usage.UsageError("--data-dir must not be empty")


def makeService(options, reactor=None):
    """
    The L{RecordingService} the options describe, its timers on a
    L{MonotonicClock} of the reactor.

    @param reactor: The reactor to run in; the global one by default.
    """
    if reactor is None:
        from twisted.internet import reactor
    keep_freed_memory()
    endpoint = options["endpoint"] or tcp_endpoint_description(
        options["address"], options["port"])
    return RecordingService(
        reactor, endpoint, options["data-dir"],
        time_per_file=options["time-per-file"],
        gap_timeout=options["gap-timeout"],
        idle_timeout=options["idle-timeout"],
        stream_id=options["stream-id"],
        max_frame_size=options["max-frame-size"],
        fsync=not options["no-fsync"],
        clock=MonotonicClock(reactor))
