"""
The one timer of an acquisition: when its open file is due for rotation,
and when it has been silent long enough that it ends (the gap).  The
decisions are L{tsagg.rules.FilePolicy}'s; this runs them on an injected
clock (C{IReactorTime}) and tells the writer.
"""

from tsagg.rules import GAP, ROTATE

__all__ = ["AcquisitionTimer", "HELD", "WRITING"]

#: What L{AcquisitionTimer}'s C{waiting} may answer: frames are held through
#: an outage (they are not missing: writing them re-arms the timer), or a
#: large frame is still being written (decide after it).
HELD = "held"
WRITING = "writing"


class AcquisitionTimer:
    """
    One timer over an acquisition in progress.

    @ivar last_write: When the acquisition last queued a frame, or L{None}
        when none is in progress.
    """

    def __init__(self, clock, policy, opened_at, waiting, gap, rotate):
        """
        @param policy: The L{tsagg.rules.FilePolicy}.
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
