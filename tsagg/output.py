"""
The files of an acquisition as they are written and closed: the open file,
fed through the write queue (L{tsagg.writepath}); and each file closed,
synced off the reactor, taken off the journal (L{tsagg.recovery}) and
handed on to the listeners as a L{ClosedFile}.  It decides nothing: the
writer (L{tsagg.writer}) says when a file opens and closes.
"""

import os

from tsagg import sostream
from tsagg.diskspace import human_bytes
from tsagg.files import ClosedFile
from tsagg.writeback import BlockReserver
from tsagg.writepath import REPLAYED, Syncer, WriteQueue

__all__ = ["FileOutput"]


def _frame_time(raw):
    return None if raw is None else sostream.frame_time(raw)


class FileOutput:
    """
    The open file and the files closing.

    @ivar file: The open L{tsagg.files.OpenFile}, or L{None}.
    @ivar queue: The L{WriteQueue} of frames for it.
    @ivar last_file: The path of the last file closed, or L{None}.
    @ivar files_written: Files opened (and kept).
    @ivar files_vanished: Open files found removed or replaced.
    @ivar slow_writes: Writes, write-outs and syncs slower than
        C{slow_write} seconds.
    @ivar slowest_write: The slowest of them, in seconds.
    """

    def __init__(self, directory, clock, log, file_log, note_error,
                 metadata_written,
                 fsync=True, slow_write=1.0, run_blocking=None,
                 writeback_every=1 << 30, room_for=None,
                 reserve_ahead=128 << 20):
        """
        @param directory: The L{tsagg.files.DataDirectory}.
        @param log: Returns the L{Logger} to log to (the writer's).
        @param file_log: The L{tsagg.filelog.FileLog} of the routine lines
            about files.
        @param note_error: Called with the message of an error to report.
        @param metadata_written: Called with C{(raw, plan)} once a metadata
            frame is on disk (L{tsagg.rules.StreamRules.written}).
        @param room_for: Called with a number of bytes: whether the file
            system can spare them for disk blocks reserved ahead of the open
            file (L{tsagg.diskspace.DiskGuard.room_for}); L{None}, always.
        @param reserve_ahead: The most bytes reserved ahead of the open
            file's end (L{BlockReserver}); C{0} for no reservations.
        """
        self.dir = directory
        self.clock = clock
        self.fsync = fsync
        self.slow_write = slow_write
        self.recovery = None
        self.listeners = []
        self.file = None
        self.queue = WriteQueue(metadata_written)
        self.syncer = Syncer(run_blocking,
                             writeback_every if fsync else None,
                             self._write_out_done)
        self.reserver = BlockReserver(
            room_for or (lambda nbytes: True), run_blocking, self.timed,
            reserve_ahead, lambda: self.syncer.closing,
            first=self.syncer.writeback_every)
        self._log = log
        self._file_log = file_log
        self._note_error = note_error
        self.last_file = None
        self.files_written = 0
        self.files_vanished = 0
        self.slow_writes = 0
        self.slowest_write = 0.0

    def reserved_unused(self):
        """
        Bytes of disk blocks reserved ahead of the open file and not yet
        used: free space that only it can use.
        """
        return self.reserver.unused(self.file)

    def status(self):
        """
        The files' part of the writer's status.
        """
        f = self.file
        return {
            "current_file": f.path if f else None,
            "current_file_age": (self.clock.seconds() - f.opened_at
                                 if f else None),
            "last_file": self.last_file,
            "files_written": self.files_written,
            "frames_written": self.queue.frames_written,
            "bytes_written": self.queue.bytes_written,
            "files_vanished": self.files_vanished,
            "slow_writes": self.slow_writes,
            "slowest_write": self.slowest_write,
        }

    # -- the open file ---------------------------------------------------

    def open(self, acquisition, now, dropped, replay, quiet=False):
        """
        Open the acquisition's next file, name it in the journal, and queue
        the metadata it begins with.

        @param dropped: Frames dropped upstream so far.
        @param replay: The raw metadata frames it begins with.
        @param quiet: Do not log it (the retry of an outage names its file
            once writing works).
        @raise OSError: It could not be opened.
        """
        f = self.file = self.dir.open_next(acquisition, now)
        f.dropped_before = dropped
        self.recovery.opened(f.relative)
        self.files_written += 1
        if not quiet:
            self._file_log.opened(f.relative)
        for raw in replay:
            self.queue.push(raw, REPLAYED)
        return f

    def vanished(self):
        """
        Whether the open file was removed or replaced (one C{lstat}); if it
        was, it is reported.
        """
        f = self.file
        if f is None or self.dir.still_in_place(f):
            return False
        self.files_vanished += 1
        self._note_error("%s was removed or replaced while open; the "
                         "acquisition goes on in a new file" % (f.path,))
        return True

    def flush(self, budget=None):
        """
        Write what is queued for the open file: all of it, or C{budget}
        bytes.

        @return: L{None}, or the L{OSError} with which writing failed; the
            frames not written are then in L{WriteQueue.take_failed}.
        """
        queue = self.queue
        if not queue:
            return None
        f = self.file
        started = self.clock.seconds()
        error = queue.write(f, budget)
        if error is None:
            self.reserver.grow(f)
        self.timed("write to " + f.path, self.clock.seconds() - started)
        if error is None:
            self.syncer.write_back(f)
            return None
        cut = getattr(error, "cut_failed", None)
        if cut is not None:
            self._log().error("Could not cut a partial frame off {path}: "
                              "{err}", path=f.path, err=cut)
        return error

    # -- closing ---------------------------------------------------------

    def close(self, why, acquisition, dropped):
        """
        Close the open file (its queue written): log it, sync it off the
        reactor, and hand it on.

        @param dropped: Frames dropped upstream so far.
        """
        f, self.file = self.file, None
        self.last_file = f.path
        self._file_log.closed(
            f.relative, why, int(round(self.clock.seconds() - f.opened_at)),
            f.size, f.frames, dropped - f.dropped_before)
        self._release(f, acquisition, dropped, self.fsync)

    def give_up(self, acquisition, dropped):
        """
        Writing failed: the open file is given up.  One that holds nothing
        but replayed metadata is removed, and its number is used for the
        next try, so that a full disk does not fill with empty files.
        """
        f, self.file = self.file, None
        keep = True
        if f.data_frames == 0 and self.dir.still_in_place(f):
            try:
                os.unlink(f.path)
                if acquisition is not None:
                    acquisition.next_index = f.index
                self.files_written -= 1
                keep = False
            except OSError:
                pass
            fsync = False
        else:
            self.last_file = f.path
            fsync = self.fsync
            self._log().info("Closed {path} (writing failed): {frames} "
                             "frames, {size}", path=f.relative,
                             frames=f.frames, size=human_bytes(f.size))
        # The disk is failing: a failed sync of what it took is no news.
        self._release(f, acquisition, dropped, fsync, report=False,
                      keep=keep)

    def _release(self, f, acquisition, dropped, fsync, report=True,
                 keep=True):
        """
        Sync (if C{fsync}) and close a file that is no longer written; then
        take it off the journal and hand it on.

        @param report: Whether a failed sync is an error to report.
        @param keep: Whether the file stays (it is not being removed).
        """
        stream_id = acquisition.stream_id if acquisition else None
        session_id = acquisition.session_id if acquisition else None
        midway = acquisition.joined_midway if acquisition else False
        dropped -= f.dropped_before

        def done(error, took):
            what = ("fsync of " if fsync else "close of ") + f.path
            self.timed(what, took)
            if error is not None and report:
                self._note_error("%s failed: %s" % (what, error))
            hand_on = bool(keep and f.data_frames and self.listeners)
            self.recovery.closed(f.relative, hand_on)
            if hand_on:
                self.hand_on(ClosedFile(
                    f.path, f.relative, stream_id or f.relative.split("/")[1],
                    session_id, f.size, f.frames, f.scan_frames,
                    _frame_time(f.first_raw), _frame_time(f.last_raw),
                    dropped, joined_midway=midway))
        self.syncer.release(f, fsync, done)

    def hand_on(self, closed):
        """
        Give the L{ClosedFile} of a file closed for good to every listener.
        """
        for listener in self.listeners:
            try:
                listener(closed)
            except Exception:
                self._log().failure("Handing on {path} failed",
                                    path=closed.relative)

    # -- how long the disk took ------------------------------------------

    def timed(self, what, took):
        """
        Note how long a blocking call took, once it returned.

        @param took: Its duration, in seconds, timed around the call itself.
        """
        if took > self.slowest_write:
            self.slowest_write = took
        if took >= self.slow_write:
            self.slow_writes += 1
            self._log().warn("The disk stalled: {what} took {seconds:.1f} s",
                             what=what, seconds=took)

    def _write_out_done(self, what, took, error):
        self.timed(what, took)
        if error is not None:
            self._note_error("%s failed: %s" % (what, error))
