"""
Names and safe opening of the files of the SO layout::

    <data-dir>/<first 5 digits of basename>/<stream-id>/<basename>_<NNN>.g3

L{DataDirectory} makes the directories one by one, refusing a symlink
planted on the way, and opens the next free C{_NNN} with C{O_EXCL}: no file
is ever overwritten, and nothing is written outside the data directory.
"""

import errno
import os
import stat
import time

__all__ = ["DataDirectory", "Acquisition", "OpenFile", "ClosedFile",
           "OutsideDataDir", "sync_and_close", "timed_call"]

_OPEN_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL
               | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
_MAX_FILE_INDEX = 10 ** 6


class OutsideDataDir(OSError):
    """
    A path resolved outside the data directory (a symlink planted in it).
    """


class Acquisition:
    """
    One continuous recording of a stream: a basename and a directory, and
    the files numbered C{_000}, C{_001}, ... under them.

    @ivar basename: The session id, or the unix time the first file opened.
    @ivar stream_id: The directory name of the stream.
    @ivar session_id: The session id of the frames, or L{None}.
    @ivar next_index: The file number to try next.
    @ivar joined_midway: Whether recording joined the session after its
        status dump was sent: its files lack the dump.
    @ivar joining: Whether it began in the sender's replay, so that its
        first data tells whether it joined midway.
    @ivar taken_back_from: The file it was taken back from after a
        restart, until the session goes on; else L{None}.
    """

    def __init__(self, basename, stream_id, session_id):
        self.basename = basename
        self.stream_id = stream_id
        self.session_id = session_id
        self.next_index = 0
        self.joined_midway = False
        self.joining = False
        self.taken_back_from = None

    def relative_dir(self):
        return os.path.join(self.basename[:5], self.stream_id)

    def file_name(self, index):
        return "%s_%03d.g3" % (self.basename, index)


class OpenFile:
    """
    A file being written, and what is in it.

    @ivar fd: Its descriptor.
    @ivar path: Its absolute path.
    @ivar relative: Its path relative to the data directory.
    @ivar index: Its number in the acquisition.
    @ivar opened_at: When it opened, by the writer's clock.
    @ivar identity: C{(st_dev, st_ino)}, to find it replaced or removed.
    @ivar size: Bytes of whole frames in it.
    @ivar partial: Bytes of the frame being written already in it.
    @ivar frames: Frames in it; C{data_frames} of them received (the rest
        replayed metadata), C{scan_frames} of those Scan frames.
    @ivar written_back: Bytes submitted for write-out.
    @ivar background: The L{Deferred} of the call on it running off the
        reactor (a write-out, or a reservation of blocks), if any: one at
        a time, and the close waits for it.
    @ivar reserved: Whether disk blocks may have been reserved past its
        end; C{reserved_to} the offset they reach (L{None} once no more are
        to be reserved; L{tsagg.writeback.BlockReserver}).
    """

    def __init__(self, fd, path, relative, index, opened_at):
        self.fd = fd
        self.path = path
        self.relative = relative
        self.index = index
        self.opened_at = opened_at
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        self.size = 0
        self.partial = 0
        self.frames = 0
        self.data_frames = 0
        self.scan_frames = 0
        self.written_back = 0
        self.background = None
        self.reserved = False
        self.reserved_to = 0
        # Frames dropped upstream before it opened; the first and last frame
        # received that went into it (its bytes, or a frame that has them).
        self.dropped_before = 0
        self._first = None
        self._last = None

    def received(self, frame):
        """
        Frames received are whole in the file: called with the first and
        the last of them (of frames written together, no more is needed).

        @param frame: Its bytes, or a L{tsagg.frames.LazyFrame}, whose
            bytes are joined only if L{first_raw} or L{last_raw} asks.
        """
        if self._first is None:
            self._first = frame
        self._last = frame

    @property
    def first_raw(self):
        """
        The bytes of the first frame received in the file, or L{None}.
        """
        return _raw(self._first)

    @property
    def last_raw(self):
        """
        The bytes of the last frame received in the file, or L{None}.
        """
        return _raw(self._last)


def _raw(frame):
    return getattr(frame, "raw", frame)


class ClosedFile:
    """
    A file closed for good (synced, and not to be written again), for those
    who hand it on.

    @ivar path: Its absolute path.
    @ivar relative: Its path relative to the data directory.
    @ivar stream_id: The stream (its directory).
    @ivar session_id: The session id of its frames, or L{None}.
    @ivar size: Its size in bytes.
    @ivar frames: Frames in it, replayed metadata included.
    @ivar scan_frames: Scan frames in it.
    @ivar first_frame_time: The C{time} of its first frame received, unix
        seconds, or L{None} if it has none.
    @ivar last_frame_time: Likewise, of its last frame.
    @ivar frames_dropped: Frames dropped upstream while it was open.
    @ivar repaired: Whether it was repaired after a crash.
    @ivar joined_midway: Whether its session was joined midway, so that it
        lacks the status dump.
    """

    def __init__(self, path, relative, stream_id, session_id, size, frames,
                 scan_frames, first_frame_time=None, last_frame_time=None,
                 frames_dropped=0, repaired=False, joined_midway=False):
        self.path = path
        self.relative = relative
        self.stream_id = stream_id
        self.session_id = session_id
        self.size = size
        self.frames = frames
        self.scan_frames = scan_frames
        self.first_frame_time = first_frame_time
        self.last_frame_time = last_frame_time
        self.frames_dropped = frames_dropped
        self.repaired = repaired
        self.joined_midway = joined_midway

    def __repr__(self):
        return "<ClosedFile %s: %d bytes, %d frames>" % (
            self.relative, self.size, self.frames)


class DataDirectory:
    """
    The data directory: the directories and files of the layout in it.

    @ivar path: Its absolute, real path.
    """

    def __init__(self, path, opener=os.open):
        """
        @param opener: C{os.open}, or a stand-in that fails as a test wants.
        """
        self.path = os.path.realpath(path)
        self._opener = opener

    def make_dirs(self, relative):
        """
        Make the directories of C{relative} under the data directory, one by
        one, refusing any that is not a real directory (a symlink planted
        there must not lead a write, or a mkdir, outside).

        @return: The absolute path of the last one.
        @raise OutsideDataDir: A symlink or a file is in the way.
        """
        os.makedirs(self.path, exist_ok=True)
        if not stat.S_ISDIR(os.lstat(self.path).st_mode):
            # Replaced by a symlink since the start: it may lead anywhere.
            raise OutsideDataDir(errno.EPERM, "the data directory is no "
                                 "longer a directory", self.path)
        path = self.path
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

    def open_next(self, acquisition, now):
        """
        Open the acquisition's next free file, creating it: a number taken
        already (by an earlier run, say) is skipped, never overwritten.

        @param now: When, by the writer's clock.
        @rtype: L{OpenFile}
        @raise OSError: It cannot be opened.
        """
        directory = self.make_dirs(acquisition.relative_dir())
        index = acquisition.next_index
        while True:
            path = os.path.join(directory, acquisition.file_name(index))
            try:
                fd = self._opener(path, _OPEN_FLAGS, 0o644)
                break
            except FileExistsError:
                index += 1
                if index >= _MAX_FILE_INDEX:
                    raise
        acquisition.next_index = index + 1
        return OpenFile(fd, path, os.path.relpath(path, self.path), index,
                        now)

    def still_in_place(self, f):
        """
        Whether an open file is still where it was opened: on Linux a file
        whose directory was removed takes writes without error, into an
        inode nobody can reach.
        """
        try:
            st = os.lstat(f.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == f.identity


def sync_and_close(fd, fsync, size=None):
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


def timed_call(function, *args):
    """
    Call C{function} and time it there, where it runs (a thread of the
    pool): the time it waited in the pool's queue is not the disk's.

    @return: C{(result, seconds)}.
    """
    started = time.monotonic()
    result = function(*args)
    return result, time.monotonic() - started
