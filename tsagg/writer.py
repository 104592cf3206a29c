"""
Write the frames of an SO stream to rotating ``.g3`` files.

L{RotatingWriter} is the L{IFrameSink}: it takes the frames of each read of
the socket, has the rules' plans carried out, reacts when writing fails
and when it works again, and keeps the counters and the status.  Each room
it joins says the rest:

    - L{tsagg.rules}: what each frame means, and the metadata a new file
      begins with;
    - L{tsagg.acquisitions}: the plans carried out: acquisitions begun and
      ended, files opened and closed, the timer of rotation and gap
      (L{tsagg.rotation});
    - L{tsagg.output}: the open file fed through the write queue
      (L{tsagg.writepath}), and files closed, synced and handed on;
    - L{tsagg.pacing}: the queue written a slice a reactor turn, and the
      producer paused while bytes or closes wait;
    - L{tsagg.files}: the names of the files, and their safe opening;
    - L{tsagg.diskspace}: whether the data file system can take more;
    - L{tsagg.outage}: the frames held while writing fails, the producer
      paused meanwhile, the retry and the drain;
    - L{tsagg.recovery}: the data directory at start, crash repair, and the
      journal of open files.

Files hold the raw bytes received, and are only ever cut, rotated or closed
at a frame boundary.
"""

import os

from twisted.logger import Logger
from zope.interface import implementer

from tsagg import sostream
from tsagg.acquisitions import Acquisitions
from tsagg.diskspace import (DEFAULT_MIN_FREE, BelowFloor, DiskGuard,
                             human_bytes)
from tsagg.filelog import FileLog
from tsagg.files import Acquisition, ClosedFile, DataDirectory, OutsideDataDir
from tsagg.frames import unchecked_frame
from tsagg.interfaces import IFrameSink
from tsagg.outage import Holding
from tsagg.output import FileOutput
from tsagg.pacing import WritePacer
from tsagg.recovery import DataDirError, Recovery
from tsagg.rotation import GAP, ROTATE, FilePolicy
from tsagg.rules import StreamRules
from tsagg.writepath import duration_text

__all__ = ["RotatingWriter", "FilePolicy", "Acquisition", "OutsideDataDir",
           "BelowFloor", "DataDirError", "ClosedFile", "duration_text",
           "ROTATE", "GAP"]


@implementer(IFrameSink)
class RotatingWriter:
    """
    Record one SO stream into rotating files under a data directory: the
    L{IFrameSink} that joins the rooms of this module's docstring.  The
    frames of each read go through the rules' plans into the write queue,
    written at the pacer's pace; what cannot be written is held through the
    outage and goes first, in order, into a new file once writing works
    again.  Each file closed for good goes to the listeners of
    L{add_closed_file_listener}.

    @ivar data_dir: The absolute, real path of the data directory.
    @ivar policy: The L{FilePolicy}.
    @ivar rules: The L{StreamRules}.
    @ivar clock: The C{IReactorTime} that times files.
    @ivar wall_time: Returns the unix time, which names acquisitions without
        a session id and dates C{last_frame_time}.
    @ivar fsync: Whether closing a file syncs it to disk first.
    """

    log = Logger()

    def __init__(self, data_dir, clock, time_per_file=600.0, gap_timeout=10.0,
                 default_stream_id="unknown", fsync=True, retry_interval=1.0,
                 max_retry_interval=30.0, max_held_bytes=1 << 31,
                 opener=os.open, slow_write=1.0, run_blocking=None,
                 write_slice=2 << 20, writeback_every=1 << 30,
                 reserve_ahead=128 << 20,
                 min_free=DEFAULT_MIN_FREE, statvfs=os.statvfs,
                 free_check_bytes=16 << 20, free_check_interval=1.0,
                 wall_time=None):
        safe = sostream.sanitize_stream_id(default_stream_id)
        if safe != default_stream_id:
            raise ValueError("stream id %r is not a safe directory name"
                             % (default_stream_id,))
        self.dir = DataDirectory(data_dir, opener)
        self.data_dir = self.dir.path
        self.clock = clock
        self.wall_time = clock.seconds if wall_time is None else wall_time
        self.policy = FilePolicy(time_per_file, gap_timeout)
        self.rules = StreamRules()
        self.fsync = fsync
        self.disk = DiskGuard(self.data_dir, min_free, statvfs,
                              free_check_bytes, free_check_interval)

        #: The routine lines about files, rate-limited.
        self.file_log = FileLog(clock, lambda: self.log)
        self._out = out = FileOutput(
            self.dir, clock, lambda: self.log, self.file_log,
            self._note_error,
            self.rules.written, fsync, slow_write, run_blocking,
            writeback_every, self.disk.room_for, reserve_ahead)
        self.disk.reserved = out.reserved_unused
        self._queue = out.queue
        self._holding = Holding(clock, lambda: self.log, self._retry_held,
                                retry_interval, max_retry_interval,
                                max_held_bytes)
        self._pacer = WritePacer(clock, out.queue, out.syncer, self._holding,
                                 self._flush, write_slice)
        self.recovery = out.recovery = Recovery(
            self.data_dir, out.hand_on, lambda: bool(out.listeners),
            self._note_error, run_blocking)
        self._acqs = Acquisitions(self.rules, out, self.disk, clock,
                                  self.policy, self._pacer.waiting,
                                  default_stream_id, self.wall_time,
                                  lambda: self.log, self.file_log,
                                  self.recovery,
                                  lambda: self.on_session_resumed)
        #: Called with C{(session_id, frames missed)} when a session goes on
        #: after a break of the connection (the connection log's), or
        #: L{None}.
        self.on_session_resumed = None
        self._closed = False

        self.frames_received = 0
        self.frames_lost = 0
        self.write_errors = 0
        self.last_error = None
        self.last_frame_time = None

    @property
    def retry_interval(self):
        return self._holding.retry_interval

    @property
    def min_free(self):
        return self.disk.min_free

    @property
    def _file(self):
        return self._out.file

    @property
    def last_file(self):
        return self._out.last_file

    def add_closed_file_listener(self, listener):
        """
        Call C{listener} with the L{ClosedFile} of every file closed for
        good from now on (in the reactor thread, once it is synced), and of
        every file repaired after a crash by L{prepare}.
        """
        self._out.listeners.append(listener)

    # -- IFrameSink ----------------------------------------------------------

    @property
    def status(self):
        status = {
            "frames_received": self.frames_received,
            "frames_lost": self.frames_lost,
            "write_errors": self.write_errors,
            "last_frame_time": self.last_frame_time,
            "last_error": self.last_error,
        }
        for room in (self._acqs, self._out, self._holding, self.disk):
            status.update(room.status())
        return status

    def streamStarted(self, producer):
        waiting = self._holding.attach(producer) or bool(self._queue)
        if waiting:
            self._holding.pause()
        # The sender replays its own metadata cache to each new connection:
        # it takes the place of ours, unless frames held from the last
        # connection still need ours at the top of their file, or the
        # acquisition goes on (then the replay is compared with ours).
        self.rules.stream_started(
            keep_metadata=waiting,
            continuing=self._acqs.current is not None)

    def streamStopped(self, reason):
        self._holding.detach()
        self._flush()
        if not self._holding:
            self._acqs.suspend("disconnect")

    def framesReceived(self, frames):
        # LazyFrames, whose pieces are written as they came.
        self.last_frame_time = self.wall_time()
        i, end = 0, len(frames)
        while i < end:
            self._accept(frames[i])
            i += 1
            if i < end and not (self._closed or self._holding):
                # The plain data frames that follow, decided together.
                taken = self._acqs.take_plain(frames, i)
                self.frames_received += taken - i
                i = taken
        self._pacer.write_some()

    def frameReceived(self, frame, raw):
        """
        One frame: a batch of one.

        @param frame: The frame (a C{G3Frame} or a L{LazyFrame}).
        @param raw: Its bytes.
        """
        self.framesReceived([unchecked_frame(raw, frame)])

    def _accept(self, frame):
        if self._closed:
            self.frames_lost += 1
            self.log.error("Frame arrived after the writer was closed; lost")
            return
        self.frames_received += 1
        if self._holding:
            self._hold(frame, frame.raw)
            return
        self._handle(frame, None)

    def start(self):
        """
        Take frames again after L{close}.
        """
        self._closed = False
        self._holding.restart()
        self.rules.restart()

    def close(self):
        """
        Close the open file at a frame boundary and stop all timers.

        Frames still held after a last attempt to write them are reported as
        lost.

        @return: A L{Deferred} that fires once every file is synced and
            closed, or L{None} if that is so already.
        """
        if self._closed:
            return None
        self._flush()
        self.frames_lost += self._holding.finish(self._write_held,
                                                 lambda: self.last_file)
        self._closed = True
        self._pacer.stop()
        self._end_acquisition("stop")
        self.file_log.stop()
        d = self._out.syncer.synced()
        if d is None:
            self.recovery.close()
            return None
        return d.addCallback(self.recovery.close)

    def prepare(self, create=False):
        """
        Make ready to record (L{Recovery.prepare}): the data directory
        checked, the files a crash left open repaired, the journal begun.
        """
        return self.recovery.prepare(create)

    def release_journal(self):
        """
        Once closed, let go of the journal even if files wait in it to be
        handed on: it is kept, unlocked, for the next start to take.
        """
        if self._closed:
            self.recovery.release()

    def handed_on(self, relative):
        """
        A file closed for good was handed on (L{add_closed_file_listener}):
        the journal need not keep it for the next start.
        """
        self.recovery.handed_on(relative, self._closed)

    # -- the rules, carried out ------------------------------------------

    def _handle(self, frame, raw):
        """
        Apply the rules to one frame, and queue it for its file; a frame
        that cannot be written now is held.
        """
        plan = self._acqs.plain(frame)
        if plan is None:
            if raw is None:
                raw = frame.raw
            plan = self._acqs.plan(frame, raw)
            if self._queue and not plan.plain_data:
                # This frame may close the file or change what a new one
                # starts with: what is queued goes first.
                if not self._flush():
                    self._hold(frame, raw)
                    return
        try:
            self._acqs.carry_out(plan, frame, raw, self._holding.in_outage)
        except OSError as e:
            self._write_failed(e)
            self._hold(frame, frame.raw if raw is None else raw, front=True)
            return
        if plan.metadata:
            # Metadata is replayed once it is on disk, so that a new file
            # never starts with a frame that is not in the files before it.
            self._flush()

    # -- the write queue ---------------------------------------------------

    def _flush(self, budget=None):
        """
        Write what is queued for the open file: all of it, or C{budget}
        bytes.  When writing fails, the frames not written are held (in
        order, ahead of any already held) and the file is given up.

        @return: C{True} if nothing is left queued and nothing failed.
        """
        error = self._out.flush(budget)
        if error is None:
            return not self._queue
        failed = self._queue.take_failed()
        self._write_failed(error)
        for frame, raw in reversed(failed):
            self._hold(frame, raw, front=True)
        return False

    def _end_acquisition(self, why):
        # A failed flush gives the file up: then there is none to close.
        self._flush()
        self._acqs.end(why)

    # -- write errors and backpressure ------------------------------------

    def _write_failed(self, error):
        self.write_errors += 1
        self.last_error = "write failed: %s" % (error,)
        self._holding.failed(error, self.data_dir)
        # The file may be unusable (its directory gone, the disk failing):
        # the acquisition goes on in a new file once writing works again.
        self._acqs.give_up_file()

    def _note_error(self, message):
        # The retries of a failing disk fail the same way every time: log
        # each new error once.
        if message != self.last_error:
            self.log.error("{error}", error=message)
        self.last_error = message

    def _hold(self, frame, raw, front=False):
        if not self._holding.hold(frame, raw, front):
            # Only frames already read are held, and the socket is paused:
            # in practice those of one read.  This is a last guard.
            self.frames_lost += 1
            self._note_error("more than %s wait for the disk; a frame is "
                             "lost" % (human_bytes(self._holding.max_bytes),))

    def _retry_held(self):
        if not self._holding.drain(self._write_held):
            if not self._closed:
                self._holding.still_failing()
            return
        # Writing works again.
        where = self._file.relative if self._file is not None else \
            self.last_file
        self._holding.ended(where)
        if self._holding.producer is None:
            # The stream went away while frames were held.
            self._acqs.suspend("disconnect")
        else:
            self._holding.resume(busy=self._pacer.busy())

    def _write_held(self, frame, raw):
        before = self.write_errors
        self._handle(frame, raw)
        self._flush()
        return self.write_errors == before
