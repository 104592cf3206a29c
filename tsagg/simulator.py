"""
An SO-like G3 stream for demos and tests, sent through spt3g's own
``G3NetworkSender``.

Each session is what the SMuRF streamer sends: a START flow-control frame, an
Observation frame, a Wiring (status) frame, Scan frames of int32 detector
data at a steady rate, then END and the CLEANSE frames that flush the
sender's metadata cache.  Between sessions and before the first one the
sender sends ALIVE once a second (which is also when ``G3NetworkSender``
accepts new connections).  Frames are timed by the reactor; their samples
lie on a regular grid of the sample rate from the session's start, one
frame following the other.

The detector data is a spt3g ``G3TimestreamMap``, or with
``--super-timestream`` so3g's ``G3SuperTimestream`` as the SMuRF streamer
sends it.  That needs so3g's binding, so so3g must be imported before
anything imports spt3g::

    python -c "import so3g, sys; from tsagg.simulator import main; \\
        sys.exit(main())" --super-timestream --port 50000
"""

import sys

import numpy as np
from twisted.internet import defer, task
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python import usage

from tsagg import sostream
from tsagg.frames import core, dump_frame

__all__ = ["SessionPlan", "Simulator", "Options", "main"]

SOSTREAM_VERSION = 2


class SessionPlan:
    """
    What the simulator sends.

    @ivar channels: Detector channels in each Scan frame.
    @ivar sample_rate: Samples per second per channel.
    @ivar frame_rate: Scan frames per second.
    @ivar duration: Seconds of Scan data per session.
    @ivar sessions: Number of sessions.
    @ivar lead_in: Seconds of ALIVE before the first session.
    @ivar idle: Seconds of ALIVE between sessions.
    @ivar stream_id: The C{sostream_id} of every frame.
    @ivar super_timestream: Whether the data is so3g's C{G3SuperTimestream}
        (else a C{G3TimestreamMap}).
    """

    def __init__(self, channels=64, sample_rate=200.0, frame_rate=10.0,
                 duration=10.0, sessions=1, lead_in=2.0, idle=2.0,
                 stream_id="crate1slot2", super_timestream=False):
        self.channels = channels
        self.sample_rate = sample_rate
        self.frame_rate = frame_rate
        self.duration = duration
        self.sessions = sessions
        self.lead_in = lead_in
        self.idle = idle
        self.stream_id = stream_id
        self.super_timestream = super_timestream

    @property
    def samples_per_frame(self):
        return max(1, int(round(self.sample_rate / self.frame_rate)))

    @property
    def frames_per_session(self):
        return int(round(self.duration * self.frame_rate))


def flow_control_frame(value, frame_type=core.G3FrameType.none):
    frame = core.G3Frame(frame_type)
    frame["sostream_flowcontrol"] = value
    return frame


def g3time(seconds):
    return core.G3Time(int(round(seconds * core.G3Units.s)))


def _so3g():
    """
    The so3g module, if this process runs under its binding.

    @raise RuntimeError: It does not.
    """
    so3g = sys.modules.get("so3g")
    if so3g is None:
        raise RuntimeError(
            "G3SuperTimestream data needs so3g's binding: import so3g "
            "before spt3g, e.g. python -c \"import so3g, sys; from "
            "tsagg.simulator import main; sys.exit(main())\" "
            "--super-timestream ...")
    return so3g


class Simulator:
    """
    Send the sessions of a L{SessionPlan} to C{send}, timed by C{clock}.

    @ivar sent: When C{record} is set, the raw bytes of every frame sent, in
        order (what a recorder must have written, flow control aside).
    """

    log = Logger()

    def __init__(self, send, clock, plan, record=False, seed=0):
        self._send = send
        self._clock = clock
        self.plan = plan
        self.record = record
        self.sent = []
        self.scan_frames_sent = 0
        self._rng = np.random.default_rng(seed)
        self._names = core.G3VectorString(
            ["r%04d" % i for i in range(plan.channels)])
        self._so3g = _so3g() if plan.super_timestream else None
        # The time of the session's first sample.
        self._t0 = None

    def emit(self, frame):
        if self.record:
            self.sent.append(dump_frame(frame))
        self._send(frame)

    @defer.inlineCallbacks
    def run(self):
        """
        Send every session.

        @return: A L{Deferred} that fires when the last frame is sent.
        """
        plan = self.plan
        yield self._alive(plan.lead_in)
        for n in range(plan.sessions):
            if n:
                yield self._alive(plan.idle)
            yield self._session()
        yield self._alive(min(plan.idle, 1.0))

    @defer.inlineCallbacks
    def _alive(self, seconds):
        for _ in range(int(round(seconds))):
            self.emit(flow_control_frame(sostream.ALIVE))
            yield task.deferLater(self._clock, 1.0, lambda: None)

    def _stamp(self, frame, session_id, frame_num):
        frame["sostream_id"] = self.plan.stream_id
        frame["sostream_version"] = SOSTREAM_VERSION
        frame["session_id"] = session_id
        frame["frame_num"] = frame_num
        frame["time"] = g3time(self._clock.seconds())
        return frame

    @defer.inlineCallbacks
    def _session(self):
        plan = self.plan
        session_id = int(self._clock.seconds())
        self.log.info("Session {session}: {frames} Scan frames of {channels} "
                      "channels x {samples} samples", session=session_id,
                      frames=plan.frames_per_session, channels=plan.channels,
                      samples=plan.samples_per_frame)
        self.emit(flow_control_frame(sostream.START))
        obs = core.G3Frame(core.G3FrameType.Observation)
        obs["start_time"] = g3time(self._clock.seconds())
        self.emit(self._stamp(obs, session_id, 0))
        wiring = core.G3Frame(core.G3FrameType.Wiring)
        wiring["status"] = "{'AMCc.SmurfProcessor.Unwrapper.Disable': 0}"
        wiring["num_channels"] = plan.channels
        self.emit(self._stamp(wiring, session_id, 1))
        frame_num = 2
        period = 1.0 / plan.frame_rate
        self._t0 = self._clock.seconds()
        for k in range(plan.frames_per_session):
            yield task.deferLater(self._clock, period, lambda: None)
            self.emit(self._scan_frame(session_id, frame_num, k))
            frame_num += 1
            self.scan_frames_sent += 1
        self.emit(flow_control_frame(sostream.END))
        self.emit(flow_control_frame(sostream.CLEANSE,
                                     core.G3FrameType.Observation))
        self.emit(flow_control_frame(sostream.CLEANSE,
                                     core.G3FrameType.Wiring))

    def _scan_frame(self, session_id, frame_num, k):
        """
        The C{k}-th Scan frame of a session: its samples follow those of
        frame C{k - 1} on the sample rate's grid.
        """
        plan = self.plan
        samples = plan.samples_per_frame
        first = k * samples
        times = [g3time(self._t0 + (first + i) / plan.sample_rate)
                 for i in range(samples)]
        data = self._rng.integers(-2 ** 20, 2 ** 20,
                                  size=(plan.channels, samples),
                                  dtype=np.int32)
        frame = core.G3Frame(core.G3FrameType.Scan)
        if self._so3g is None:
            frame["data"] = core.G3TimestreamMap(self._names, data, times[0],
                                                 times[-1])
        else:
            ts = self._so3g.G3SuperTimestream()
            ts.names = self._names
            ts.times = core.G3VectorTime(times)
            # so3g scrambles data that is not C-ordered.
            ts.data = np.ascontiguousarray(data)
            frame["data"] = ts
        return self._stamp(frame, session_id, frame_num)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Stream SO-like sessions of G3 frames through a spt3g "
                "G3NetworkSender listening on --port.")
    optParameters = [
        ["port", "p", 50000, "TCP port to listen on.", int],
        ["channels", "c", 64, "Detector channels per Scan frame.", int],
        ["sample-rate", "r", 200.0, "Samples per second per channel.", float],
        ["frame-rate", "f", 10.0, "Scan frames per second.", float],
        ["duration", "d", 10.0, "Seconds of Scan data per session.", float],
        ["sessions", "n", 1, "Number of sessions.", int],
        ["lead-in", None, 2.0, "Seconds of ALIVE before the first session.",
         float],
        ["idle", None, 2.0, "Seconds of ALIVE between sessions.", float],
        ["stream-id", "s", "crate1slot2", "The sostream_id of the frames."],
    ]
    optFlags = [
        ["super-timestream", None,
         "Send so3g G3SuperTimestream data, as the SMuRF streamer does "
         "(needs so3g imported first: see the module's docstring)."],
    ]

    def postOptions(self):
        for name in ("channels", "sessions"):
            if self[name] < 1:
                raise usage.UsageError("--%s must be at least 1" % name)
        for name in ("sample-rate", "frame-rate", "duration"):
            if self[name] <= 0:
                raise usage.UsageError("--%s must be positive" % name)

    def plan(self):
        return SessionPlan(
            channels=self["channels"], sample_rate=self["sample-rate"],
            frame_rate=self["frame-rate"], duration=self["duration"],
            sessions=self["sessions"], lead_in=self["lead-in"],
            idle=self["idle"], stream_id=self["stream-id"],
            super_timestream=bool(self["super-timestream"]))


def main(argv=None):
    """
    The C{tsagg-sim} command.
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print("%s\n%s" % (options, e), file=sys.stderr)
        return 2
    if options["super-timestream"]:
        try:
            _so3g()
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 2
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])

    def run(reactor):
        sender = core.G3NetworkSender(hostname="*", port=options["port"])
        sim = Simulator(sender, reactor, options.plan())
        # The sender is bound and listening once constructed; receivers
        # started after this line connect on their first attempt.
        sim.log.info("Listening on port {port}", port=options["port"])

        def done(result):
            sender(core.G3Frame(core.G3FrameType.EndProcessing))
            sim.log.info("Sent {count} Scan frames", count=sim.scan_frames_sent)
            return result
        return sim.run().addBoth(done)

    task.react(run)


if __name__ == "__main__":
    sys.exit(main())
