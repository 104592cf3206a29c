"""
The rule of time: when an acquisition's open file is due for rotation, and
when it has been silent long enough that it ends (the gap).  L{FilePolicy}
decides, over times alone; L{AcquisitionTimer} runs it, one timer on an
injected clock (C{IReactorTime}), and tells the writer.
"""

__all__ = ["FilePolicy", "AcquisitionTimer", "ROTATE", "GAP", "HELD",
           "WRITING"]

ROTATE = "rotate"
GAP = "gap"

#: What L{AcquisitionTimer}'s C{waiting} may answer: frames are held through
#: an outage (they are not missing: writing them re-arms the timer), or a
#: large frame is still being written (decide after it).
HELD = "held"
WRITING = "writing"


class FilePolicy:
    """
    When to close a file: pure decisions over times, no clock and no I/O.

    @ivar time_per_file: Seconds a file stays open before it is due for
        rotation.
    @ivar gap_timeout: Seconds without a written frame that end an
        acquisition.
    """

    def __init__(self, time_per_file, gap_timeout):
        if time_per_file <= 0 or gap_timeout <= 0:
            raise ValueError("time_per_file and gap_timeout must be positive")
        self.time_per_file = time_per_file
        self.gap_timeout = gap_timeout

    def deadline(self, opened_at, last_write):
        """
        The next time at which L{decide} may answer something.

        @param opened_at: When the open file was opened, or L{None} when no
            file is open (or it is due already).
        @param last_write: When the acquisition last wrote a frame.
        """
        gap_at = last_write + self.gap_timeout
        if opened_at is None:
            return gap_at
        return min(gap_at, opened_at + self.time_per_file)

    def decide(self, now, opened_at, last_write):
        """
        @return: L{GAP} when the acquisition has been silent too long,
            L{ROTATE} when the open file is old enough, else L{None}.
        """
        if now >= last_write + self.gap_timeout:
            return GAP
        if opened_at is not None and now >= opened_at + self.time_per_file:
            return ROTATE
        return None


class AcquisitionTimer:
    """
    One timer over an acquisition in progress.

    @ivar last_write: When the acquisition last queued a frame, or L{None}
        when none is in progress.
    """

    def __init__(self, clock, policy, opened_at, waiting, gap, rotate):
        """
        @param policy: The L{FilePolicy}.
        @param opened_at: Returns when the open file opened, for its
            rotation deadline; L{None} if no file is open or it is due
            already.
        @param waiting: Returns L{HELD}, L{WRITING} or L{None}.
        @param gap: Called when the acquisition has been silent too long.
        @param rotate: Called when the open file is due for rotation.
        """
        self.clock = clock
        self.policy = policy
        self.last_write = None
        self._opened_at = opened_at
        self._waiting = waiting
        self._gap = gap
        self._rotate = rotate
        self._call = None

    def wrote(self, now):
        """
        A frame was queued at C{now}: the timer runs.
        """
        self.last_write = now
        if self._call is None:
            self._schedule()

    def file_opened(self):
        """
        A new file brings its own rotation deadline.
        """
        self._cancel()

    def stop(self):
        """
        The acquisition ended.
        """
        self.last_write = None
        self._cancel()

    def _cancel(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self):
        when = self.policy.deadline(self._opened_at(), self.last_write)
        delay = max(0.0, when - self.clock.seconds())
        self._call = self.clock.callLater(delay, self._fired)

    def _fired(self):
        self._call = None
        if self.last_write is None:
            return
        waiting = self._waiting()
        if waiting == HELD:
            return
        if waiting == WRITING:
            self._call = self.clock.callLater(0, self._fired)
            return
        action = self.policy.decide(self.clock.seconds(), self._opened_at(),
                                    self.last_write)
        if action == GAP:
            self._gap()
            return
        if action == ROTATE:
            self._rotate()
        self._schedule()
