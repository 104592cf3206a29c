"""
The pace of writing.  The write queue (L{tsagg.writepath.WriteQueue}) is
written at most C{write_slice} bytes a reactor turn, so that one big frame
does not hold the reactor for as long as a throttled disk takes to take it;
the rest goes in the turns after, with the producer paused meanwhile.  The
producer is paused, too, while closed files wait for their sync in numbers
(L{tsagg.writepath.Syncer.full}), so that a storm of short files builds no
backlog of closes; it is resumed once neither holds.

The writer hands the pacer its C{flush}, which writes what it is given the
budget for and deals with a write that fails; the pacer decides only when.
"""

from tsagg.rotation import HELD, WRITING

__all__ = ["WritePacer"]


class WritePacer:
    """
    When the writer's queue is written, and when its producer may read.

    @ivar write_slice: The most bytes written a reactor turn, or L{None} for
        no limit.
    """

    def __init__(self, clock, queue, syncer, holding, flush,
                 write_slice=2 << 20):
        """
        @param queue: The L{tsagg.writepath.WriteQueue}.
        @param syncer: The L{tsagg.writepath.Syncer} of the closed files.
        @param holding: The L{tsagg.outage.Holding}, which pauses and
            resumes the producer.
        @param flush: Called with a budget of bytes: writes that much of the
            queue.
        """
        if write_slice is not None and write_slice <= 0:
            raise ValueError("write_slice must be positive")
        self.write_slice = write_slice
        self._clock = clock
        self._queue = queue
        self._syncer = syncer
        self._holding = holding
        self._flush = flush
        self._call = None
        syncer.on_drained = self._syncs_drained

    def write_some(self):
        """
        Write up to C{write_slice} bytes of the queue now, and the rest in
        later reactor turns, with the producer paused meanwhile.
        """
        if self._call is None and self._queue:
            # Else written already, or a later turn is due to go on.
            self._flush(self.write_slice)
        if self._queue and self._call is None:
            self._holding.pause()
            self._call = self._clock.callLater(0, self._write_more)
        if self._syncer.full:
            # Files close faster than they sync: read no more until the
            # closes catch up.
            self._holding.pause()

    def busy(self):
        """
        Whether the producer must stay paused: bytes wait to be written, or
        too many closed files wait for their sync.
        """
        return bool(self._queue) or self._syncer.full

    def waiting(self):
        """
        What the writer waits for, for the timer of rotation and gap: frames
        held (L{HELD}), bytes queued (L{WRITING}), or nothing (L{None}).
        """
        if self._holding:
            return HELD
        if self._queue:
            return WRITING
        return None

    def stop(self):
        """
        No more turns: the writer closes, having written the queue.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _write_more(self):
        self._call = None
        self.write_some()
        self._holding.resume(busy=self.busy())

    def _syncs_drained(self):
        if self._call is None:
            self._holding.resume(busy=self.busy())
