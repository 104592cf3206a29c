"""
The writer's routine lines about files ("Session ... started", "Opened
...", "Closed ..."), at a rate an operator can read: a sender that starts a
new session on every frame makes hundreds of files a second, and a line
for each would push everything else out of the log.

Up to L{FileLog.burst} lines pass at once, and L{FileLog.per_minute} a
minute after that.  Beyond it, the lines are counted, and once a minute one
summary says what they would have said::

    2,341 files opened and 2,340 closed in the last minute; 2,339 sessions
    began; the sender changes session_id on nearly every frame (7,010 lines
    not logged)

A flood of new sessions earns one warning of its own.  Only these routine
lines are ever summarized: warnings and errors go to the log as they come.
"""

from twisted.logger import Logger

from tsagg.diskspace import human_bytes

__all__ = ["FileLog"]


class FileLog:
    """
    The routine lines of a writer about its files, rate-limited.

    @ivar burst: Lines that pass at once, after a quiet time.
    @ivar per_minute: Lines a minute that pass beyond the burst.
    @ivar period: Seconds between summaries.
    @ivar flood: Sessions begun within one summary's time that make a
        flood, worth a warning.
    @ivar lines_skipped: Lines not logged, in all.
    @ivar summaries: Summaries logged, in all.
    """

    burst = 100
    per_minute = 20
    period = 60.0
    flood = 100

    def __init__(self, clock, log=None):
        """
        @param clock: The C{IReactorTime} that times the rate and the
            summaries.
        @param log: Returns the L{Logger} to log to (the writer's, so that
            the lines keep their source); a logger of this module's own by
            default.
        """
        if log is None:
            own = Logger()
            log = lambda: own  # noqa: E731
        self._log = log
        self._clock = clock
        self._tokens = float(self.burst)
        self._filled_at = None
        self._timer = None
        self._flooded = False
        self.lines_skipped = 0
        self.summaries = 0
        self._reset()

    def _reset(self):
        # What happened since the last summary, or since lines were first
        # skipped.
        self._since = self._clock.seconds()
        self._opened = 0
        self._closed = 0
        self._sessions = 0
        self._acquisitions = 0
        self._frames = 0
        self._skipped = 0
        self._stream = None

    # -- what the writer tells ------------------------------------------

    def session_started(self, basename, stream, has_session=True):
        """
        An acquisition began: a session of the sender, or, when its frames
        carry no session id, an acquisition named by the clock.
        """
        if has_session:
            self._sessions += 1
        else:
            self._acquisitions += 1
        self._stream = stream
        if has_session:
            self._line("Session {basename} of {stream} started",
                       basename=basename, stream=stream)
        else:
            self._line("Acquisition {basename} of {stream} started (its "
                       "frames carry no session id)", basename=basename,
                       stream=stream)
        self._check_flood()

    def opened(self, relative):
        """
        A file opened.
        """
        self._opened += 1
        self._line("Opened {path}", path=relative)

    def closed(self, relative, why, seconds, size, frames, dropped):
        """
        A file was closed.

        @param why: Why (C{'rotation'}, C{'new session 1700000001'}, ...).
        @param seconds: How long it was open.
        @param size: Its size, in bytes.
        @param frames: Frames in it.
        @param dropped: Frames dropped upstream while it was open.
        """
        self._closed += 1
        self._frames += frames
        self._line("Closed {path} ({why}): {seconds} s, {size}, {frames} "
                   "frames, {dropped} dropped", path=relative, why=why,
                   seconds=seconds, size=human_bytes(size), frames=frames,
                   dropped=dropped)

    def stop(self):
        """
        Log the summary of what was skipped, if anything was, and stop
        the timer of summaries (recording stops).
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._summarize()
        self._flooded = False
        self._reset()

    # -- the rate ---------------------------------------------------------

    def _line(self, text, **fields):
        if self._take_token():
            self._log().info(text, **fields)
            return
        self._skipped += 1
        self.lines_skipped += 1
        if self._timer is None:
            # Lines are skipped from now on: count from here.
            skipped = self._skipped
            self._reset()
            self._skipped = skipped
            self._timer = self._clock.callLater(self.period, self._tick)

    def _take_token(self):
        now = self._clock.seconds()
        if self._filled_at is not None:
            self._tokens = min(float(self.burst), self._tokens + (
                now - self._filled_at) * self.per_minute / 60.0)
        self._filled_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _tick(self):
        self._timer = None
        skipped = self._skipped
        self._summarize()
        if skipped:
            # Still more than the rate: go on summarizing.
            self._reset()
            self._timer = self._clock.callLater(self.period, self._tick)
        else:
            # Every line of the last minute was logged: the storm is over.
            self._flooded = False
            self._reset()

    def _summarize(self):
        if not self._skipped:
            return
        span = self._clock.seconds() - self._since
        fields = dict(opened=self._opened, closed=self._closed,
                      sessions=self._sessions, skipped=self._skipped,
                      span=_span(span), why="")
        if self._sessions and self._sessions >= 0.9 * self._opened:
            fields["why"] = ("; the sender changes session_id on nearly "
                             "every frame" if self._closed and self._frames
                             <= 2 * self._closed else "; nearly every "
                             "session is a file of its own")
        text = ("{opened:,} files opened and {closed:,} closed in the last "
                "{span}; {sessions:,} sessions began{why}")
        if self._acquisitions:
            text += "; {acquisitions:,} acquisitions began without a session id"
            fields["acquisitions"] = self._acquisitions
        self.summaries += 1
        self._log().info(text + " ({skipped:,} lines not logged)", **fields)

    def _check_flood(self):
        if (self._flooded or self._timer is None
                or self._sessions < self.flood):
            return
        self._flooded = True
        self._log().warn(
            "A flood of new sessions from {stream}: {count:,} began in "
            "{seconds:.0f} s, each in files of its own.  Is the sender's "
            "session counter stuck or misconfigured?  Lines about files are "
            "summarized once a minute while it lasts.", stream=self._stream,
            count=self._sessions,
            seconds=max(1.0, self._clock.seconds() - self._since))


def _span(seconds):
    if abs(seconds - 60.0) < 1.0:
        return "minute"
    return "%d s" % (max(1, int(round(seconds))),)
