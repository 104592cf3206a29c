"""
``twistd tsagg``: record a G3 stream with no OCS around it.
"""

import signal

from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from twisted.python import usage

from tsagg import options, wire
from tsagg.diskspace import DEFAULT_MIN_FREE
from tsagg.clock import MonotonicClock
from tsagg.memory import keep_freed_memory
from tsagg.service import (DataDirError, RecordingService,
                           tcp_endpoint_description)

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
        ["suprsync-db", None, None,
         "socs' suprsync SQLite database: each file closed for good is "
         "registered in it for transfer, with its md5 and its path relative "
         "to the data directory (socs must be installed)."],
        ["suprsync-archive", None, "timestreams",
         "The suprsync archive the files are registered in."],
        ["min-free", None, options.min_free(DEFAULT_MIN_FREE),
         "Free space to leave on the data file system: a percentage of it "
         "(1%) or bytes (500M, 20G).  Below it the disk counts as full: the "
         "stream is paused and its frames held until space returns.",
         options.min_free],
    ]
    optFlags = [
        ["no-fsync", None, "Do not fsync files when closing them."],
        ["create-data-dir", None,
         "Make the data directory if it does not exist (by default a "
         "missing one is an error at start)."],
    ]

    def postOptions(self):
        if not self["data-dir"]:
            raise usage.UsageError("--data-dir must not be empty")


class StopOnHangup(Service):
    """
    End C{twistd} on SIGHUP the way SIGTERM does (the reactor stops, the
    recording closes its file at a frame boundary and syncs it), instead of
    the default of SIGHUP: death on the spot, which leaves a torn file.  A
    terminal or ssh session that closes under C{twistd -n} sends it.
    """

    log = Logger()

    def __init__(self, reactor):
        self._reactor = reactor
        self._previous = None

    def startService(self):
        Service.startService(self)
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self):
        Service.stopService(self)
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum, frame):
        # In a signal handler: only hand over to the reactor's thread.
        self._reactor.callFromThread(self._stop)

    def _stop(self):
        self.log.info("Received SIGHUP, shutting down.")
        if self._reactor.running:
            self._reactor.stop()


def makeService(options, reactor=None):
    """
    The L{RecordingService} the options describe, under a service that
    stops it on SIGHUP.

    The data directory is checked (and what a killed recorder left open in
    it repaired) now, before anything connects: a data directory that is
    missing or cannot be written ends C{twistd} with a one-line error and a
    non-zero status.  Its timers run on a L{MonotonicClock} of the
    reactor.

    @param reactor: The reactor to run in; the global one by default.
    @raise SystemExit: The data directory cannot be used.
    """
    if reactor is None:
        from twisted.internet import reactor
    keep_freed_memory()
    endpoint = options["endpoint"] or tcp_endpoint_description(
        options["address"], options["port"])
    try:
        recording = RecordingService(
            reactor, endpoint, options["data-dir"],
            time_per_file=options["time-per-file"],
            gap_timeout=options["gap-timeout"],
            idle_timeout=options["idle-timeout"],
            stream_id=options["stream-id"],
            max_frame_size=options["max-frame-size"],
            fsync=not options["no-fsync"],
            min_free=options["min-free"],
            suprsync_db=options["suprsync-db"],
            suprsync_archive=options["suprsync-archive"],
            create_data_dir=options["create-data-dir"],
            clock=MonotonicClock(reactor))
    except ImportError as e:
        raise SystemExit("tsagg: --suprsync-db needs socs (pip install "
                         "socs): %s" % (e,))
    try:
        recording.prepare()
    except DataDirError as e:
        raise SystemExit("tsagg: %s" % (e,))
    top = MultiService()
    recording.setServiceParent(top)
    StopOnHangup(reactor).setServiceParent(top)
    top.recording = recording
    return top
