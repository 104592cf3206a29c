"""
The write path of the open file: the queue of frames waiting for it, written
with C{writev} in slices; and the write-out, sync and close of files off the
reactor.  (The frames held while the disk cannot take them are
L{tsagg.outage}'s.)

Nothing here knows the SO rules: L{tsagg.writer} decides what goes where and
joins these parts.
"""

import os
from collections import deque

from twisted.internet import defer

from tsagg.files import sync_and_close, timed_call
from tsagg.writeback import start_writeback

__all__ = ["REPLAYED", "WriteQueue", "Syncer", "duration_text"]

#: In the write queue, in place of the frame: metadata replayed at the top
#: of a new file, which is not a frame received.
REPLAYED = object()
# Buffers per writev call.
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)


def duration_text(seconds):
    """
    A duration as an operator reads it: C{'45 s'}, C{'3 min 12 s'},
    C{'2 h 5 min'}.
    """
    seconds = int(round(seconds))
    if seconds < 60:
        return "%d s" % (seconds,)
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return "%d min %d s" % (minutes, seconds) if seconds else \
            "%d min" % (minutes,)
    hours, minutes = divmod(minutes, 60)
    return "%d h %d min" % (hours, minutes)


class WriteQueue:
    """
    The bytes waiting for the open file, frame by frame, and the count of
    what went in.

    @ivar frames_written: Frames received and written (replayed metadata is
        not counted).
    @ivar bytes_written: Bytes written, replayed metadata included.
    """

    def __init__(self, metadata_written):
        """
        @param metadata_written: Called with C{(raw, plan)} when a received
            metadata frame is whole in the file.
        """
        # [views of what is left, frame (or REPLAYED), raw, plan, size]
        self._items = deque()
        self._metadata_written = metadata_written
        # Bytes queued and not written yet.
        self._queued = 0
        self.frames_written = 0
        self.bytes_written = 0

    def __bool__(self):
        return bool(self._items)

    def __len__(self):
        return len(self._items)

    def push(self, raw, frame, plan=None):
        """
        Queue a frame (or, with C{frame} L{REPLAYED}, replayed metadata).

        @param raw: Its bytes; or L{None} to write the pieces it came in
            (C{frame} a L{tsagg.frames.LazyFrame}) as they are.
        """
        if raw is None:
            size = frame.size
            self._items.append([list(frame.pieces), frame, None, plan, size])
        else:
            size = len(raw)
            self._items.append([[memoryview(raw)], frame, raw, plan, size])
        self._queued += size

    def push_frames(self, frames, plans):
        """
        Queue received frames (L{tsagg.frames.LazyFrame}s), each with the
        plan of its type code in C{plans}: L{push} for each.
        """
        append = self._items.append
        queued = 0
        for frame in frames:
            size = frame.size
            append([list(frame.pieces), frame, None, plans[frame.code],
                    size])
            queued += size
        self._queued += queued

    def write(self, f, budget=None):
        """
        Write what is queued into the open file C{f}: all of it, or
        C{budget} bytes, in as few C{writev} calls as can be.

        When a write fails, the part of a frame already written is cut off
        the file, so that it ends at a frame boundary again; the frames not
        written stay queued for L{take_failed}.

        @return: The L{OSError} of a failed write, or L{None}.
        """
        items = self._items
        try:
            while items and (budget is None or budget > 0):
                if len(items) < _IOV_MAX and (
                        budget is None or self._queued <= budget):
                    # All of it fits: no view is cut (a frame has a few
                    # pieces; a read's worth of small frames, one each).
                    views = [view for item in items for view in item[0]]
                    if len(views) <= _IOV_MAX:
                        written = os.writev(f.fd, views)
                        if budget is not None:
                            budget -= written
                        self._wrote(f, written)
                        continue
                views = []
                size = 0
                for item in items:
                    for view in item[0]:
                        if budget is not None and size + len(view) > budget:
                            views.append(view[:budget - size])
                            size = budget
                            break
                        views.append(view)
                        size += len(view)
                        if len(views) == _IOV_MAX:
                            break
                    if size == budget or len(views) == _IOV_MAX:
                        break
                written = os.writev(f.fd, views)
                if budget is not None:
                    budget -= written
                self._wrote(f, written)
        except OSError as e:
            if f.partial:
                try:
                    os.ftruncate(f.fd, f.size)
                except OSError as cut:
                    e.cut_failed = cut
                f.partial = 0
            return e
        return None

    def _wrote(self, f, count):
        """
        Account for C{count} bytes written from the head of the queue.
        """
        items = self._items
        popleft = items.popleft
        self._queued -= count
        partial = f.partial
        # The whole frames written, counted here and added up at the end:
        # their bytes, how many, how many received (not replayed), Scan
        # frames, and the first and last received.
        size_sum = frames = received = scans = 0
        first = last = None
        try:
            while count:
                item = items[0]
                left = item[4] - partial
                if count < left:
                    # Part of the frame at the head: its views are cut there.
                    partial += count
                    views = item[0]
                    while count >= len(views[0]):
                        count -= len(views.pop(0))
                    if count:
                        views[0] = views[0][count:]
                    break
                count -= left
                popleft()
                partial = 0
                size_sum += item[4]
                frames += 1
                frame = item[1]
                if frame is REPLAYED:
                    continue
                received += 1
                last = frame if item[2] is None else item[2]
                if first is None:
                    first = last
                plan = item[3]
                if plan is not None:
                    if plan.code == "S":
                        scans += 1
                    elif plan.metadata:
                        self._metadata_written(
                            frame.raw if item[2] is None else item[2], plan)
        finally:
            f.partial = partial
            f.size += size_sum
            f.frames += frames
            self.bytes_written += size_sum
            if received:
                f.data_frames += received
                f.scan_frames += scans
                self.frames_written += received
                f.received(first)
                f.received(last)

    def take_failed(self):
        """
        Empty the queue after a failed write.

        @return: The frames received that were not written, in order, as
            C{(frame, raw)}.
        """
        failed = [(item[1], item[1].raw if item[2] is None else item[2])
                  for item in self._items if item[1] is not REPLAYED]
        self._items.clear()
        self._queued = 0
        return failed


class Syncer:
    """
    The slow part of writing, off the reactor: the write-out of the open
    file as it grows, and the sync and close of a finished one.

    Each call runs through C{run_blocking} (a thread, in the service), or
    inline when that is L{None}, and is timed there, around the call itself.

    @ivar max_pending: Files waiting for their sync and close past which
        the syncer is L{full}: the writer then reads no more until they
        drop to half as many (a stream of tiny files must not build a
        backlog of closes, each holding its descriptor and record).
    @ivar on_drained: Called with no argument once a L{full} syncer has
        drained to half of C{max_pending}, or L{None}.
    """

    max_pending = 64

    def __init__(self, run_blocking, writeback_every, report):
        """
        @param run_blocking: Runs a function off the reactor thread and
            returns a L{Deferred} of its result, or L{None}.
        @param writeback_every: Bytes of new data after which the open
            file's data is submitted for write-out, or L{None}.
        @param report: Called with C{(what, took, error)} once a call
            returned: C{what} names it (C{'fsync of /data/...'}), C{took}
            is its duration, C{error} its L{OSError} or L{None}.
        """
        self._run_blocking = run_blocking
        self.writeback_every = writeback_every
        self._report = report
        self._pending = set()
        self._was_full = False
        self.on_drained = None

    @property
    def full(self):
        """
        Whether as many files as C{max_pending}, or more, wait for their
        sync and close.
        """
        if len(self._pending) >= self.max_pending:
            self._was_full = True
        return self._was_full

    @property
    def closing(self):
        """
        Whether a file released is still being synced and closed.
        """
        return bool(self._pending)

    def write_back(self, f):
        """
        Submit the open file's new data for write-out once
        C{writeback_every} bytes are new: the fsync at close then waits for
        little more.
        """
        end = f.size + f.partial
        start = f.written_back
        if (self._run_blocking is None or self.writeback_every is None
                or f.background is not None
                or end - start < self.writeback_every):
            return
        d = f.background = self._run_blocking(
            lambda: timed_call(start_writeback, f.fd, start, end - start))

        def done(result):
            error, took = result
            f.background = None
            self._report("write-out of " + f.path, took, error)
            if error is None:
                f.written_back = end
        d.addCallback(done)
        d.addErrback(self._report_failure, f)

    def release(self, f, fsync, done):
        """
        Sync (if C{fsync}) and close a file that is no longer written, after
        any write-out of it still running.

        @param done: Called with C{(error, took)} once it is closed.
        """
        size = f.size if f.reserved else None

        def sync():
            return timed_call(sync_and_close, f.fd, fsync, size)
        if self._run_blocking is None:
            done(*sync())
            return
        if f.background is None:
            d = self._run_blocking(sync)
        else:
            d = f.background.addCallback(lambda _: self._run_blocking(sync))
        self._pending.add(d)

        def finished(result):
            self._pending.discard(d)
            done(*result)
            if self._was_full and len(self._pending) <= self.max_pending // 2:
                self._was_full = False
                if self.on_drained is not None:
                    self.on_drained()
        d.addCallback(finished)
        d.addErrback(self._report_failure, f)

    def synced(self):
        """
        @return: A L{Deferred} that fires when every file released is synced
            and closed, or L{None} if none is pending.
        """
        if not self._pending:
            return None
        return defer.DeferredList(list(self._pending)).addCallback(
            lambda _: None)

    def _report_failure(self, failure, f):
        self._report("sync of " + f.path, 0.0,
                     OSError(0, "unexpected error: %s" % (failure.value,)))
