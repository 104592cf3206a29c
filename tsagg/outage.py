"""
A disk outage: the frames that wait for the disk, in order; the producer
paused while they wait; one retry timer, backing off; the drain once writing
works again; and the outage's log, once when it begins, at most once a
minute while it lasts, and once when it ends.

The writer (L{tsagg.writer}) tells it that writing failed, and hears from
it when to try again; it knows no file and no rule.
"""

from collections import deque

from tsagg.writepath import duration_text

__all__ = ["Holding"]


class _Outage:
    """
    A time in which writing fails: since when, why, and the backoff of the
    retries.
    """

    def __init__(self, since, cause, first_delay, max_delay):
        self.since = since
        self.cause = cause
        self.reported_at = since
        self._delay = first_delay
        self._max_delay = max_delay

    def next_delay(self):
        delay = self._delay
        self._delay = min(self._delay * 2, self._max_delay)
        return delay


def _cause(error):
    """
    What went wrong, without the path: the same for every retry.
    """
    return getattr(error, "strerror", None) or str(error)


class Holding:
    """
    Frames waiting for the disk, in order, and the outage they wait out: one
    timer retries, after C{retry_interval} seconds and then twice as long
    each time up to C{max_retry_interval}.  The outage is logged once when
    it begins (and when its cause changes), at most once a minute while it
    lasts, and once when it ends.

    It also holds the producer of the frames (the stream's protocol): paused
    while frames are held or queued, so that the socket is not read and the
    sender keeps the rest; resumed once nothing waits.

    @ivar frames: The frames held, as C{(frame, raw)}.
    @ivar bytes: Their size.
    @ivar producer: The producer of the frames, while a stream is on.
    """

    def __init__(self, clock, log, retry, retry_interval=1.0,
                 max_retry_interval=30.0, max_bytes=1 << 31):
        """
        @param log: Returns the L{Logger} to log the outage to.
        @param retry: Called by the timer: it tries to write the frames.
        """
        self._clock = clock
        self._log = log
        self._retry = retry
        self.retry_interval = retry_interval
        self.max_retry_interval = max(max_retry_interval, retry_interval)
        self.max_bytes = max_bytes
        self.frames = deque()
        self.bytes = 0
        self.producer = None
        self._paused = False
        self._stopped = False
        self._outage = None
        self._call = None

    def __bool__(self):
        return bool(self.frames)

    def __len__(self):
        return len(self.frames)

    @property
    def outage_seconds(self):
        """
        How long writing has failed, or L{None} while it works.
        """
        if self._outage is None:
            return None
        return self._clock.seconds() - self._outage.since

    def failed(self, error, where):
        """
        Writing failed: an outage begins, or its cause is noted if new.

        @param where: The data directory, for the log.
        """
        cause = _cause(error)
        outage = self._outage
        if outage is None:
            self._outage = _Outage(self._clock.seconds(), cause,
                                   self.retry_interval,
                                   self.max_retry_interval)
            self._log().error(
                "Writing under {data_dir} failed: {error}. The stream is "
                "paused and its frames held until writing works again.",
                data_dir=where, error=error)
        elif cause != outage.cause:
            outage.cause = cause
            self._log().error("Writing still fails, now: {error}", error=error)

    def status(self):
        """
        The outage's part of the writer's status.
        """
        return {"frames_held": len(self.frames), "bytes_held": self.bytes,
                "outage_seconds": self.outage_seconds}

    @property
    def in_outage(self):
        return self._outage is not None

    def hold(self, frame, raw, front=False):
        """
        Hold a frame, ahead of those held already (C{front}: it came first)
        or after them, and make sure a retry is due.

        @return: C{False} if it would pass C{max_bytes} and is lost.
        """
        if self.bytes + len(raw) > self.max_bytes:
            return False
        if front:
            self.frames.appendleft((frame, raw))
        else:
            self.frames.append((frame, raw))
        self.bytes += len(raw)
        if not self._stopped:
            self.schedule()
        self.pause()
        return True

    def pop(self):
        frame, raw = self.frames.popleft()
        self.bytes -= len(raw)
        return frame, raw

    def schedule(self):
        """
        Arm the retry timer, if it is not armed.
        """
        if self._call is not None:
            return
        delay = (self.retry_interval if self._outage is None
                 else self._outage.next_delay())
        self._call = self._clock.callLater(delay, self._fire)

    def _fire(self):
        self._call = None
        self._retry()

    def drain(self, write):
        """
        Write the frames held, in order, until one fails.

        @param write: Writes one frame: C{write(frame, raw)}, returning
            whether writing worked.
        @return: Whether every frame held was written.
        """
        while self.frames:
            frame, raw = self.pop()
            if not write(frame, raw):
                return False
        return True

    def still_failing(self):
        """
        A retry left frames held: summarize the outage once a minute, and
        arm the next retry.
        """
        outage = self._outage
        now = self._clock.seconds()
        if outage is not None and now - outage.reported_at >= 60:
            outage.reported_at = now
            self._log().warn(
                "Writing has failed for {duration}: {error}; {frames} frames "
                "waiting", duration=duration_text(now - outage.since),
                error=outage.cause, frames=len(self.frames))
        self.schedule()

    def ended(self, where):
        """
        Writing works again: say so, and for how long it did not.

        @param where: The file the held frames went to.
        """
        outage, self._outage = self._outage, None
        if outage is None:
            return
        self._log().info("Writing works again, after {duration}; the held "
                       "frames are in {path}",
                       duration=duration_text(self._clock.seconds()
                                              - outage.since), path=where)

    def finish(self, write, where):
        """
        The writer closes: a last try to write the frames held (L{drain}),
        and then no more retries (L{stop}).

        @param write: As for L{drain}.
        @param where: Returns the file the held frames went to.
        @return: How many frames could not be written, and are given up.
        """
        if self.frames:
            self.drain(write)
        self.stop()
        if not self.frames:
            self.ended(where())
            return 0
        lost = self.drop_all()
        self._log().error("Closing with {count} frames that could not be "
                          "written; they are lost", count=lost)
        return lost

    def drop_all(self):
        """
        Give up the frames held and the outage (at a stop).

        @return: How many frames were given up.
        """
        count = len(self.frames)
        self.frames.clear()
        self.bytes = 0
        self._outage = None
        self.cancel()
        return count

    def cancel(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def stop(self):
        """
        No more retries (the writer is closed): frames held from now on
        wait for L{restart}.
        """
        self._stopped = True
        self.cancel()

    def restart(self):
        self._stopped = False

    # -- the producer ----------------------------------------------------

    def attach(self, producer):
        """
        A stream began: C{producer} gives its frames.  It is paused at once
        if frames still wait.

        @return: Whether frames wait (held here).
        """
        self.producer = producer
        self._paused = False
        if self.frames:
            self.pause()
        return bool(self.frames)

    def detach(self):
        self.producer = None
        self._paused = False

    def pause(self):
        if self.producer is not None and not self._paused:
            self._paused = True
            self.producer.pauseProducing()

    def resume(self, busy=False):
        """
        Resume the producer once nothing is held, and nothing else waits
        (C{busy}: frames are queued for the open file).
        """
        if (self._paused and self.producer is not None
                and not self.frames and not busy):
            self._paused = False
            self.producer.resumeProducing()
