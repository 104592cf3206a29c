"""
Write the frames of an SO stream to rotating ``.g3`` files.

L{RotatingWriter} applies the SO stream rules (L{tsagg.sostream}) and the
file layout of the Simons Observatory::

    <data-dir>/<first 5 digits of basename>/<stream-id>/<basename>_<NNN>.g3

Files are written with the raw bytes received.  The frames of one read go
to disk in one C{writev}, at most C{write_slice} bytes per reactor turn, and
a file is only ever cut, rotated or closed at a frame boundary.  Rotation and
the gap timeout run on an injected clock (C{IReactorTime}); L{FilePolicy}
decides, the writer acts.
"""

import errno
import os
import stat
import time
from collections import deque

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tsagg import sostream
from tsagg.diskspace import (DEFAULT_MIN_FREE, FreeSpaceFloor, free_space,
                             human_bytes)
from tsagg.frames import raw_type_code
from tsagg.interfaces import IFrameSink
from tsagg.journal import Journal, recover
from tsagg.writeback import start_writeback

__all__ = ["RotatingWriter", "FilePolicy", "Acquisition", "OutsideDataDir",
           "BelowFloor", "DataDirError", "duration_text"]

ROTATE = "rotate"
GAP = "gap"

_OPEN_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL
               | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
_MAX_FILE_INDEX = 10 ** 6
# In the write queue, in place of the frame: metadata replayed at the top of
# a new file, which is not a frame received.
_REPLAYED = object()
# Buffers per writev call.
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)


class OutsideDataDir(OSError):
    """
    A path resolved outside the data directory (a symlink planted in it).
    """


class DataDirError(Exception):
    """
    The data directory is missing or cannot be written: recording cannot
    start.  The message is one line, for the operator.
    """


class BelowFloor(OSError):
    """
    The data file system has less free space than the floor (C{--min-free}):
    the disk counts as full.
    """


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


def _timed_call(function, *args):
    """
    Call C{function} and time it there, where it runs (a thread of the
    pool): the time it waited in the pool's queue is not the disk's.

    @return: C{(result, seconds)}.
    """
    started = time.monotonic()
    result = function(*args)
    return result, time.monotonic() - started


class FilePolicy:
    """
    When to close a file: pure decisions over times, no clock and no I/O.

    @ivar time_per_file: Seconds a file stays open before rotation.
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
            file is open.
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


class Acquisition:
    """
    One continuous recording of a stream: a basename and a directory, and
    the files numbered C{_000}, C{_001}, ... under them.

    @ivar basename: The session id, or the unix time the first file opened.
    @ivar stream_id: The directory name of the stream.
    @ivar session_id: The session id of the frames, or L{None}.
    @ivar next_index: The file number to try next.
    """

    def __init__(self, basename, stream_id, session_id):
        self.basename = basename
        self.stream_id = stream_id
        self.session_id = session_id
        self.next_index = 0

    def relative_dir(self):
        return os.path.join(self.basename[:5], self.stream_id)

    def file_name(self, index):
        return "%s_%03d.g3" % (self.basename, index)


class _OpenFile:
    def __init__(self, fd, path, index, opened_at):
        self.fd = fd
        self.path = path
        self.index = index
        self.opened_at = opened_at
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        # Bytes of whole frames in the file.
        self.size = 0
        # Bytes of the frame being written that are already in the file.
        self.partial = 0
        self.frames = 0
        self.data_frames = 0
        # Bytes already submitted for write-out, and the submission now
        # running, if any.
        self.written_back = 0
        self.writeback = None
        # Whether disk blocks were reserved past the end of the file.
        self.reserved = False


def _sync_and_close(fd, fsync, size=None):
    """
    Sync a finished file to disk and close it.

    @param size: The file's size, to release the disk blocks reserved past
        its end; L{None} if none were.
    @return: The L{OSError} of the sync (or of the release), or L{None}.
    """
    error = None
    try:
        if size is not None:
            try:
                os.ftruncate(fd, size)
            except OSError as e:
                error = e
        if fsync:
            os.fsync(fd)
    except OSError as e:
        error = e
    finally:
        os.close(fd)
    return error


@implementer(IFrameSink)
class RotatingWriter:
    """
    Record one SO stream into rotating files under a data directory.

    Flow control: ALIVE and CLEANSE are discarded; START closes the file;
    END closes it and forgets the cached metadata; none is ever written.
    Data that comes without a START opens an acquisition as if one had come.

    When writing fails (no space, no permission, a read-only or vanished
    directory), or the free space falls below the floor C{min_free}, an
    outage begins: the partial frame is cut off, the file is closed (and
    removed if it holds no frame of data, so a full disk does not fill with
    empty files), the frames of the read are held and the producer paused,
    so the socket is not read and the sender keeps the rest.  One timer
    retries, after C{retry_interval} seconds and then twice as long each time
    up to C{max_retry_interval}; the gap timer does not end an acquisition
    whose frames are held.  The outage is logged once when it begins, then
    at most once a minute, and once when it ends; the held frames then go to
    disk first, in order, in a new file that begins with the metadata.

    Before each frame the open file is checked to be still where it was
    opened (one C{lstat}): on Linux a file whose directory was removed takes
    writes without error, into an inode nobody can reach.  A file removed or
    replaced (the data directory moved aside, or deleted) is reported and
    closed, and the acquisition goes on in a new file at the configured
    place.

    Writes run in the reactor thread: a stalled file system stalls the
    reactor, so the socket is not read and nothing piles up in memory.  The
    frames of one batch (L{framesReceived}: one read of the socket) are
    queued and written with one C{writev}, at most C{write_slice} bytes per
    reactor turn; while more wait, the producer is paused and the rest is
    written in the next turns, so a large frame never holds the reactor for
    long.  Anything that closes or changes the file (a flow-control or
    metadata frame, a new session, rotation, a stop) first writes what is
    queued.

    The C{fsync} and close of a finished file, which can take long on a busy
    disk, run through C{run_blocking} (a thread, in the service) when one is
    given.  After every C{writeback_every} bytes, the open file's new data is
    submitted for write-out (L{start_writeback}, off the reactor too), so
    that the fsync at close, and so a stop, has little left to do; blocks
    for the next two such intervals are reserved first, so that writes do
    not wait for the write-out, and released at close.  A write
    or sync slower than C{slow_write} seconds is logged and counted once it
    returns; the time of a call run in a thread is taken there, around the
    call itself.

    @ivar data_dir: The absolute, real path of the data directory.
    @ivar default_stream_id: Directory name for streams that do not name
        themselves.
    @ivar policy: The L{FilePolicy}.
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
                 write_slice=1 << 20, writeback_every=1 << 30,
                 min_free=DEFAULT_MIN_FREE, statvfs=os.statvfs,
                 free_check_bytes=16 << 20, free_check_interval=1.0,
                 wall_time=None):
        safe = sostream.sanitize_stream_id(default_stream_id)
        if safe != default_stream_id:
            raise ValueError("stream id %r is not a safe directory name"
                             % (default_stream_id,))
        self.data_dir = os.path.realpath(data_dir)
        self.clock = clock
        self.wall_time = clock.seconds if wall_time is None else wall_time
        self.policy = FilePolicy(time_per_file, gap_timeout)
        self.default_stream_id = default_stream_id
        self.fsync = fsync
        # Runs a function off the reactor thread, returning a Deferred of
        # its result; None runs it inline.
        self._run_blocking = run_blocking
        self._syncing = set()
        self.retry_interval = retry_interval
        self.max_retry_interval = max(max_retry_interval, retry_interval)
        self.max_held_bytes = max_held_bytes
        if not isinstance(min_free, FreeSpaceFloor):
            min_free = FreeSpaceFloor(min_free)
        self.min_free = min_free
        self._statvfs = statvfs
        self._free_check_bytes = free_check_bytes
        self._free_check_interval = free_check_interval
        # When, and at which count of bytes written, free space was checked.
        self._free_checked_at = None
        self._free_checked_bytes = 0
        self._outage = None
        self._journal = None
        self._opener = opener
        self.slow_write = slow_write
        if write_slice is not None and write_slice <= 0:
            raise ValueError("write_slice must be positive")
        self.write_slice = write_slice
        self.writeback_every = writeback_every
        # Bytes waiting for the open file: [view of what is left, frame,
        # raw] for each frame (_REPLAYED for replayed metadata).
        self._out = deque()
        self._out_call = None

        self._file = None
        self._acq = None
        self._last_write = None
        self._timer = None
        self._retry = None
        self._producer = None
        self._paused = False
        self._closed = False
        # Latest metadata frame of each type: type code -> raw bytes, in
        # order of arrival.
        self._metadata = {}
        self._stream_id = None
        self._held = deque()
        self._held_bytes = 0
        self._frame_nums = sostream.FrameNumTracker()
        self._replaying = False
        # The last session_id blob seen, and its value.
        self._session_blob = None
        self._session_value = None

        self.files_written = 0
        self.frames_written = 0
        self.bytes_written = 0
        self.frames_received = 0
        self.flow_control = {name: 0 for name in
                             sostream.FLOW_CONTROL_NAMES.values()}
        self.frames_lost = 0
        self.write_errors = 0
        self.last_error = None
        self.last_frame_time = None
        self.last_file = None
        self.files_vanished = 0
        self.slow_writes = 0
        self.slowest_write = 0.0

    # -- IFrameSink ----------------------------------------------------------

    @property
    def status(self):
        acq = self._acq
        status = {
            "current_file": self._file.path if self._file else None,
            "last_file": self.last_file,
            "stream_id": acq.stream_id if acq else self._stream_id,
            "session_id": acq.session_id if acq else None,
            "files_written": self.files_written,
            "frames_written": self.frames_written,
            "bytes_written": self.bytes_written,
            "frames_received": self.frames_received,
            "flow_control_frames": dict(self.flow_control),
            "frames_dropped_upstream": self._frame_nums.dropped,
            "frames_held": len(self._held),
            "bytes_held": self._held_bytes,
            "outage_seconds": (None if self._outage is None else
                               self.clock.seconds() - self._outage.since),
            "frames_lost": self.frames_lost,
            "write_errors": self.write_errors,
            "files_vanished": self.files_vanished,
            "slow_writes": self.slow_writes,
            "slowest_write": self.slowest_write,
            "last_frame_time": self.last_frame_time,
            "last_error": self.last_error,
        }
        status.update(self.disk_status())
        return status

    def disk_status(self):
        """
        The free space of the data file system and the floor kept free on
        it, in bytes (L{None} when the file system cannot be examined).
        """
        try:
            free, total = free_space(self.data_dir, self._statvfs)
        except OSError:
            return {"free_bytes": None, "free_floor_bytes": None}
        return {"free_bytes": free,
                "free_floor_bytes": self.min_free.bytes_of(total)}

    def streamStarted(self, producer):
        self._producer = producer
        self._paused = False
        if self._held or self._out:
            self._pause()
        else:
            # The sender replays its own metadata cache to each new
            # connection; ours would only duplicate it.  Frames held from
            # the last connection still need it, at the top of their file.
            self._metadata.clear()
        self._replaying = True

    def streamStopped(self, reason):
        self._producer = None
        self._paused = False
        self._flush()
        if not self._held:
            self._end_acquisition("disconnect")

    def framesReceived(self, frames):
        self.last_frame_time = self.wall_time()
        for frame in frames:
            self._accept(frame, frame.raw)
        self._write_some()

    def frameReceived(self, frame, raw):
        """
        One frame: a batch of one.

        @param frame: The frame (a C{G3Frame} or a L{LazyFrame}).
        @param raw: Its bytes.
        """
        self.last_frame_time = self.wall_time()
        self._accept(frame, raw)
        self._write_some()

    def _accept(self, frame, raw):
        if self._closed:
            self.frames_lost += 1
            self.log.error("Frame arrived after the writer was closed; lost")
            return
        self.frames_received += 1
        if self._held:
            self._hold(frame, raw)
            return
        self._handle(frame, raw)

    def start(self):
        """
        Take frames again after L{close}.
        """
        self._closed = False
        # Frames not sent while stopped were not dropped upstream.
        self._frame_nums.reset()

    def close(self):
        """
        Close the open file at a frame boundary and stop all timers.

        Frames still held after a last attempt to write them are reported as
        lost.
        """
        if self._closed:
            return None
        self._flush()
        if self._held:
            self._drain()
        self._closed = True
        self._cancel(self._retry)
        self._retry = None
        self._cancel(self._out_call)
        self._out_call = None
        if self._held:
            self.frames_lost += len(self._held)
            self.log.error("Closing with {count} frames that could not be "
                           "written; they are lost", count=len(self._held))
            self._held.clear()
            self._held_bytes = 0
        else:
            self._outage_ended()
        self._outage = None
        self._end_acquisition("stop")
        d = self.synced()
        if d is None:
            self._close_journal()
            return None
        return d.addCallback(self._close_journal)

    def synced(self):
        """
        @return: A L{Deferred} that fires when every closed file is synced
            and closed, or L{None} if none is pending.
        """
        if not self._syncing:
            return None
        return defer.DeferredList(list(self._syncing)).addCallback(
            lambda _: None)

    # -- the SO stream rules ---------------------------------------------------

    def _handle(self, frame, raw):
        """
        Apply the rules to one frame, and queue it for its file; a frame
        that cannot be written now is held.
        """
        code = raw_type_code(raw)
        # The rules read their keys from the raw bytes: spt3g's decoder of a
        # blob allocates whatever length a hostile blob declares.
        fields = sostream.FrameFields(raw, getattr(frame, "entries", None))
        num = sostream.frame_num(fields)
        if self._replaying:
            # A new connection begins with the sender's cached metadata,
            # whose frame numbers are old: only live data sets the baseline.
            if code in sostream.DATA_TYPES:
                self._replaying = False
            else:
                num = None
        fc = sostream.flow_control(fields)
        session = None if fc is not None else self._session_id(fields)
        new_session = (self._acq is not None and session is not None
                       and self._acq.session_id is not None
                       and session != self._acq.session_id)
        if self._out and (fc is not None or new_session
                          or code not in sostream.DATA_TYPES):
            # This frame may close the file or change what a new one starts
            # with: what is queued goes first.
            if not self._flush():
                self._hold(frame, raw)
                return
        if fc is not None:
            self._frame_nums.see(num)
            self._flow_control(fc)
            return
        if self._stream_id is None:
            self._stream_id = sostream.stream_id(fields, code)
        if new_session:
            # A new session without a START: a new acquisition all the same.
            self._end_acquisition("new session %d" % (session,))
            self._frame_nums.reset()
        self._frame_nums.see(num)
        try:
            self._write(frame, raw, code, session)
        except OSError as e:
            self._write_failed(e)
            self._hold(frame, raw, front=True)
            return
        if code not in sostream.DATA_TYPES:
            # Metadata is cached once on disk, so that a new file never
            # starts with a frame that is not in the files before it.
            self._flush()

    def _session_id(self, fields):
        # Every frame of a session carries the same blob: decode it once.
        blob = fields.blob("session_id")
        if blob is None or blob != self._session_blob:
            self._session_blob = None if blob is None else bytes(blob)
            self._session_value = sostream.session_id(fields)
        return self._session_value

    def _flow_control(self, fc):
        name = sostream.FLOW_CONTROL_NAMES.get(fc)
        if name is None:
            self.log.warn("Discarding flow-control frame of unknown value "
                          "{value}", value=fc)
            return
        self.flow_control[name] += 1
        if fc == sostream.START:
            self._end_acquisition("start")
            self._metadata.clear()
            self._frame_nums.reset()
        elif fc == sostream.END:
            self._end_acquisition("end")
            self._metadata.clear()
            self._frame_nums.reset()
            self._stream_id = None

    # -- files -------------------------------------------------------------------

    def _write(self, frame, raw, code, session):
        """
        Queue one frame for the file it belongs in, opening that file if
        need be.

        @raise OSError: No file could be opened.
        """
        now = self.clock.seconds()
        if (self._file is not None and not self._out
                and not self._still_in_place(self._file)):
            # Checked once per batch: what is queued was checked with it.
            self.files_vanished += 1
            self._note_error("%s was removed or replaced while open; the "
                             "acquisition goes on in a new file"
                             % (self._file.path,))
            self._close_file("removed or replaced")
        if not self._out:
            self._check_disk(now)
        if self._file is None:
            if self._acq is None:
                self._begin_acquisition(session)
            self._open(now, code)
        self._out.append([memoryview(raw), frame, raw])
        self._last_write = now
        if self._timer is None:
            self._schedule()

    def _check_disk(self, now):
        """
        Check the data file system when a file is to open, and then every
        C{free_check_bytes} written or C{free_check_interval} seconds: that
        it is not read-only, and has more free space than the floor.

        A file open before the file system turned read-only (a read-only
        mount laid over the data directory) could still be written, but no
        file after it: the acquisition pauses at once, not at the next
        rotation.

        @raise BelowFloor: There is less than the floor; the open file, if
            any, has been closed at its frame boundary.
        @raise OSError: C{EROFS}, likewise.
        """
        if (self._file is not None and self._free_checked_at is not None
                and now - self._free_checked_at < self._free_check_interval
                and self.bytes_written - self._free_checked_bytes
                < self._free_check_bytes):
            return
        self._free_checked_at = now
        self._free_checked_bytes = self.bytes_written
        try:
            st = self._statvfs(self.data_dir)
        except OSError:
            # Opening the file will tell what is wrong.
            return
        if getattr(st, "f_flag", 0) & os.ST_RDONLY:
            if self._file is not None:
                self._close_file("the file system is read-only")
            raise OSError(errno.EROFS, "Read-only file system (the data "
                          "directory is on a read-only mount)")
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        floor = self.min_free.bytes_of(total)
        if free >= floor and free > 0:
            return
        if self._file is not None:
            self._close_file("free space below the floor")
        raise BelowFloor(
            errno.ENOSPC, "%s free on %s, below the floor of %s (--min-free "
            "%s)" % (human_bytes(free), self.data_dir, human_bytes(floor),
                     self.min_free.text))

    def _begin_acquisition(self, session):
        basename = (str(session) if session is not None
                    else str(int(self.wall_time())))
        stream_id = self._stream_id or self.default_stream_id
        self._acq = Acquisition(basename, stream_id, session)
        self.log.info("New acquisition {basename} of stream {stream}",
                      basename=basename, stream=stream_id)

    def _open(self, now, opening_code):
        acq = self._acq
        directory = self._make_dirs(acq.relative_dir())
        index = acq.next_index
        while True:
            path = os.path.join(directory, acq.file_name(index))
            try:
                fd = self._opener(path, _OPEN_FLAGS, 0o644)
                break
            except FileExistsError:
                index += 1
                if index >= _MAX_FILE_INDEX:
                    raise
        acq.next_index = index + 1
        self._file = _OpenFile(fd, path, index, now)
        self._file.relative = os.path.relpath(path, self.data_dir)
        self._journal_opened(self._file.relative)
        # The new file brings its own rotation deadline.
        self._cancel(self._timer)
        self._timer = None
        self.files_written += 1
        if self._outage is None:
            # In an outage, the retry's file is named when writing works.
            self.log.info("Opened {path}", path=path)
        # Every file stands alone: it starts with the latest metadata of the
        # acquisition, except the kind of frame that is about to be written.
        for code, raw in self._metadata.items():
            if code != opening_code:
                self._out.append([memoryview(raw), _REPLAYED, raw])

    def _make_dirs(self, relative):
        """
        Make the directories of C{relative} under the data directory, one by
        one, refusing any that is not a real directory (a symlink planted
        there must not lead a write, or a mkdir, outside).
        """
        os.makedirs(self.data_dir, exist_ok=True)
        if not stat.S_ISDIR(os.lstat(self.data_dir).st_mode):
            # Replaced by a symlink since the start: it may lead anywhere.
            raise OutsideDataDir(errno.EPERM, "the data directory is no "
                                 "longer a directory", self.data_dir)
        path = self.data_dir
        for part in relative.split(os.sep):
            path = os.path.join(path, part)
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                pass
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise OutsideDataDir(errno.EPERM, "refusing to write outside "
                                     "the data directory through", path)
        return path

    def _still_in_place(self, f):
        try:
            st = os.lstat(f.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == f.identity

    # -- the write queue ---------------------------------------------------

    def _write_some(self):
        """
        Write up to C{write_slice} bytes of the queue now, and the rest in
        later reactor turns, with the producer paused meanwhile.
        """
        if self._out_call is not None or not self._out:
            # Written already, or a later turn is due to go on.
            return
        self._flush(self.write_slice)
        if self._out:
            self._pause()
            self._out_call = self.clock.callLater(0, self._write_more)

    def _write_more(self):
        self._out_call = None
        self._write_some()
        if not self._out:
            self._resume()

    def _flush(self, budget=None):
        """
        Write what is queued for the open file: all of it, or C{budget}
        bytes.

        When writing fails, the partial frame is cut off the file, the
        frames not written are held (in order, ahead of any already held)
        and the file is given up.

        @return: C{True} if nothing is left queued and nothing failed.
        """
        out = self._out
        if not out:
            return True
        f = self._file
        started = self.clock.seconds()
        try:
            while out and (budget is None or budget > 0):
                views = []
                size = 0
                for item in out:
                    view = item[0]
                    if budget is not None and size + len(view) > budget:
                        views.append(view[:budget - size])
                        size = budget
                        break
                    views.append(view)
                    size += len(view)
                    if len(views) == _IOV_MAX:
                        break
                written = os.writev(f.fd, views)
                if budget is not None:
                    budget -= written
                self._wrote(f, written)
        except OSError as e:
            self._timed("write to " + f.path, self.clock.seconds() - started)
            self._queue_failed(f, e)
            return False
        self._timed("write to " + f.path, self.clock.seconds() - started)
        self._write_back(f)
        return not out

    def _wrote(self, f, count):
        """
        Account for C{count} bytes written from the head of the queue.
        """
        out = self._out
        while count:
            item = out[0]
            view = item[0]
            if count < len(view):
                item[0] = view[count:]
                f.partial += count
                return
            count -= len(view)
            out.popleft()
            frame, raw = item[1], item[2]
            f.size += len(raw)
            f.partial = 0
            f.frames += 1
            self.bytes_written += len(raw)
            if frame is _REPLAYED:
                continue
            f.data_frames += 1
            self.frames_written += 1
            code = raw_type_code(raw)
            if code not in sostream.DATA_TYPES:
                self._metadata.pop(code, None)
                self._metadata[code] = raw

    def _queue_failed(self, f, error):
        if f.partial:
            self._truncate(f)
            f.partial = 0
        failed = [(item[1], item[2]) for item in self._out
                  if item[1] is not _REPLAYED]
        self._out.clear()
        self._write_failed(error)
        # Ahead of anything held already: these came first.
        for frame, raw in reversed(failed):
            self._hold(frame, raw, front=True)

    def _write_back(self, f):
        """
        Submit the open file's new data for write-out, off the reactor, once
        C{writeback_every} bytes are new: the fsync at close then waits for
        little more.
        """
        end = f.size + f.partial
        start = f.written_back
        if (not self.fsync or self._run_blocking is None
                or self.writeback_every is None or f.writeback is not None
                or end - start < self.writeback_every):
            return
        ahead = 2 * self.writeback_every
        d = f.writeback = self._run_blocking(
            lambda: _timed_call(start_writeback, f.fd, start, end - start,
                                ahead))
        f.reserved = True

        def done(result):
            error, took = result
            f.writeback = None
            self._timed("write-out of " + f.path, took)
            if error is not None:
                self._note_error("write-out of %s failed: %s"
                                 % (f.path, error))
            else:
                f.written_back = end
        d.addCallback(done)
        d.addErrback(lambda failure: self.log.failure(
            "Write-out of {path} failed", failure, path=f.path))

    def _timed(self, what, took):
        """
        Note how long a blocking call took, once it returned.

        @param took: Its duration, in seconds, timed around the call itself.
        """
        if took > self.slowest_write:
            self.slowest_write = took
        if took >= self.slow_write:
            self.slow_writes += 1
            self.log.warn("The disk stalled: {what} took {seconds:.1f} s",
                          what=what, seconds=took)

    def _truncate(self, f):
        """
        Cut a partly written frame off the file.
        """
        try:
            os.ftruncate(f.fd, f.size)
        except OSError as e:
            self.log.error("Could not cut a partial frame off {path}: {err}",
                           path=f.path, err=e)

    def _close_file(self, why):
        if not self._flush():
            # Writing failed: the file is given up, its frames held.
            return
        f = self._file
        if f is None:
            return
        self._file = None
        self.last_file = f.path
        self.log.info("Closed {path} ({why}): {frames} frames, {size} bytes",
                      path=f.path, why=why, frames=f.frames, size=f.size)
        self._release(f, self.fsync)

    def _release(self, f, fsync, report=True):
        """
        Sync (if C{fsync}) and close a file that is no longer written, after
        any write-out of it still being submitted.

        @param report: Whether a failed sync is an error to report.
        """
        size = f.size if f.reserved else None

        def sync():
            return _timed_call(_sync_and_close, f.fd, fsync, size)
        if self._run_blocking is None:
            error, took = sync()
            self._synced(error if report else None, f, fsync, took)
            return
        if f.writeback is None:
            d = self._run_blocking(sync)
        else:
            d = f.writeback.addCallback(lambda _: self._run_blocking(sync))
        self._syncing.add(d)

        def done(result):
            error, took = result
            self._syncing.discard(d)
            self._synced(error if report else None, f, fsync, took)
        d.addCallback(done)
        d.addErrback(lambda failure: self.log.failure(
            "Syncing {path} failed", failure, path=f.path))

    def _synced(self, error, f, fsync, took):
        what = "fsync of " if fsync else "close of "
        self._timed(what + f.path, took)
        if error is not None:
            self._note_error("%s%s failed: %s" % (what, f.path, error))
        if self._journal is not None:
            try:
                self._journal.closed(f.relative)
            except OSError as e:
                self._note_error("the journal of open files cannot be "
                                 "written: %s" % (e,))

    # -- the journal of open files, for crash repair ---------------------------

    def prepare(self, create=False):
        """
        Make ready to record: check that the data directory is there and can
        be written, repair the files that a recorder killed outright left
        open in it (L{tsagg.journal}), and begin this writer's journal.
        Nothing happens if it is ready already.

        @param create: Make the data directory if it does not exist.
        @return: The L{tsagg.journal.Repair}s of the files repaired.
        @raise DataDirError: The data directory is missing (and not to be
            made) or cannot be written.
        """
        if self._journal is not None:
            return []
        if not os.path.isdir(self.data_dir):
            if not create or os.path.lexists(self.data_dir):
                raise DataDirError(
                    "the data directory %s does not exist or is not a "
                    "directory" % (self.data_dir,))
            try:
                os.makedirs(self.data_dir)
            except OSError as e:
                raise DataDirError("cannot make the data directory %s: %s"
                                   % (self.data_dir, e.strerror or e))
            self.log.info("Made the data directory {path}",
                          path=self.data_dir)
        try:
            repairs = recover(self.data_dir)
            self._journal = Journal(self.data_dir)
        except OSError as e:
            raise DataDirError("cannot write in the data directory %s: %s"
                               % (self.data_dir, e.strerror or e))
        for r in repairs:
            if r.error is not None:
                self.log.error("{path}, left open by a recorder that did not "
                               "stop, could not be repaired: {error}",
                               path=r.path, error=r.error)
            elif r.cut:
                self.log.warn("Repaired {path}, left open by a recorder that "
                              "did not stop: cut {cut} bytes off its end "
                              "({problem}); {frames} whole frames kept",
                              path=r.path, cut=r.cut, problem=r.problem,
                              frames=r.frames)
            else:
                self.log.info("{path}, left open by a recorder that did not "
                              "stop, ends with a whole frame ({frames} "
                              "frames); nothing cut", path=r.path,
                              frames=r.frames)
        return repairs

    def _journal_opened(self, relative):
        journal = self._journal
        if journal is None:
            return
        try:
            if not os.path.exists(journal.path):
                # The data directory was removed or replaced while
                # recording: begin a journal in the new one.
                journal.close()
                journal = self._journal = Journal(self.data_dir)
            journal.opened(relative)
        except OSError as e:
            self._note_error("the journal of open files cannot be written: "
                             "%s" % (e,))
            return
        if self._run_blocking is None:
            journal.sync_quietly()
        else:
            self._run_blocking(journal.sync_quietly)

    def _close_journal(self, result=None):
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        return result

    def _end_acquisition(self, why):
        self._close_file(why)
        self._acq = None
        self._last_write = None
        self._cancel(self._timer)
        self._timer = None

    # -- timers ---------------------------------------------------------------

    def _schedule(self):
        opened_at = self._file.opened_at if self._file else None
        when = self.policy.deadline(opened_at, self._last_write)
        delay = max(0.0, when - self.clock.seconds())
        self._timer = self.clock.callLater(delay, self._timer_fired)

    def _timer_fired(self):
        self._timer = None
        if self._acq is None or self._last_write is None:
            return
        if self._held:
            # The frames are not missing, they wait for the disk: writing
            # them re-arms the timer.
            return
        if self._out:
            # A large frame is still being written: decide after it.
            self._timer = self.clock.callLater(0, self._timer_fired)
            return
        opened_at = self._file.opened_at if self._file else None
        action = self.policy.decide(self.clock.seconds(), opened_at,
                                    self._last_write)
        if action == GAP:
            self.log.info("No frame for {gap} s: acquisition ends",
                          gap=self.policy.gap_timeout)
            self._end_acquisition("gap")
            return
        if action == ROTATE:
            self._close_file("rotation")
        self._schedule()

    def _cancel(self, call):
        if call is not None and call.active():
            call.cancel()

    # -- write errors and backpressure ------------------------------------

    def _write_failed(self, error):
        self.write_errors += 1
        self.last_error = "write failed: %s" % (error,)
        self._outage_noted(error)
        # The file may be unusable (its directory gone, the disk failing):
        # the acquisition goes on in a new file once writing works again.
        f = self._file
        if f is None:
            return
        self._file = None
        if f.data_frames == 0 and self._still_in_place(f):
            # Nothing but replayed metadata (or nothing at all) went in: do
            # not leave it behind, and use its number for the next try.
            try:
                os.unlink(f.path)
                if self._acq is not None:
                    self._acq.next_index = f.index
                self.files_written -= 1
            except OSError:
                pass
            fsync = False
        else:
            self.last_file = f.path
            fsync = self.fsync
            self.log.info("Closed {path} (writing failed): {frames} frames, "
                          "{size} bytes", path=f.path, frames=f.frames,
                          size=f.size)
        # The disk is failing: a failed sync of what it took is no news.
        self._release(f, fsync, report=False)

    def _outage_noted(self, error):
        """
        Begin an outage, or note that its cause changed: each is logged
        once, whatever the number of retries.
        """
        cause = _cause(error)
        outage = self._outage
        if outage is None:
            self._outage = _Outage(self.clock.seconds(), cause,
                                   self.retry_interval,
                                   self.max_retry_interval)
            self.log.error(
                "Writing under {data_dir} failed: {error}. The stream is "
                "paused and its frames held until writing works again.",
                data_dir=self.data_dir, error=error)
        elif cause != outage.cause:
            outage.cause = cause
            self.log.error("Writing still fails, now: {error}", error=error)

    def _note_error(self, message):
        # The retries of a failing disk fail the same way every time: log
        # each new error once.
        if message != self.last_error:
            self.log.error("{error}", error=message)
        self.last_error = message

    def _hold(self, frame, raw, front=False):
        if self._held_bytes + len(raw) > self.max_held_bytes:
            # Only frames already read are held, and the socket is paused:
            # in practice those of one read.  This is a last guard.
            self.frames_lost += 1
            self._note_error("more than %s wait for the disk; a frame is "
                             "lost" % (human_bytes(self.max_held_bytes),))
            return
        if front:
            self._held.appendleft((frame, raw))
        else:
            self._held.append((frame, raw))
        self._held_bytes += len(raw)
        self._pause()
        if self._retry is None and not self._closed:
            self._retry = self.clock.callLater(self._retry_delay(),
                                               self._retry_held)

    def _retry_delay(self):
        if self._outage is None:
            return self.retry_interval
        return self._outage.next_delay()

    def _pause(self):
        if self._producer is not None and not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    def _resume(self):
        """
        Resume the producer once nothing is held or queued.
        """
        if (self._paused and self._producer is not None
                and not self._held and not self._out):
            self._paused = False
            self._producer.resumeProducing()

    def _retry_held(self):
        self._retry = None
        self._drain()
        outage = self._outage
        if self._held:
            now = self.clock.seconds()
            if outage is not None and now - outage.reported_at >= 60:
                outage.reported_at = now
                self.log.warn(
                    "Writing has failed for {duration}: {error}; {frames} "
                    "frames waiting", duration=duration_text(now - outage.since),
                    error=outage.cause, frames=len(self._held))
            if self._retry is None and not self._closed:
                self._retry = self.clock.callLater(self._retry_delay(),
                                                   self._retry_held)
            return
        self._outage_ended()
        if self._producer is None:
            # The stream went away while frames were held.
            self._end_acquisition("disconnect")
        else:
            self._resume()

    def _outage_ended(self):
        outage, self._outage = self._outage, None
        if outage is None:
            return
        where = self._file.path if self._file is not None else self.last_file
        self.log.info("Writing works again, after {duration}; the held "
                      "frames are in {path}",
                      duration=duration_text(self.clock.seconds()
                                             - outage.since), path=where)

    def _drain(self):
        while self._held:
            frame, raw = self._held.popleft()
            self._held_bytes -= len(raw)
            before = self.write_errors
            self._handle(frame, raw)
            self._flush()
            if self.write_errors != before:
                return
