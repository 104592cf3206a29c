"""
A journal of the files a recorder has open, kept in the data directory, so
that the next start can repair what a crash (kill -9, the OOM killer, a power
cut) left behind: a file cut off in the middle of a frame.

Each running recorder keeps one journal, C{<data-dir>/.tsagg/journal-*},
and holds an exclusive C{flock} on it for as long as it runs.  A line
C{open <path>} is added (and synced) when a file opens, C{closed <path>}
once the file is synced and closed and waits to be handed on (its md5, the
suprsync database), and C{done <path>} once it is handed on, or has nothing
to hand on; paths are relative to the data directory.  The kernel drops the
lock of a process that dies, so at start a recorder takes every journal it
can lock: the files named open in it were left open by a process that is
gone, and each is cut back to its last whole frame (and synced); the files
closed but not done are handed on by the new recorder.  A file that a
journal does not name open is never touched.  Several recorders can share
one data directory: a journal whose owner still runs stays locked and is
left alone.  A journal is compacted as it grows (L{Journal.compact}), so
that its size stays that of what is open and waiting.
"""

import fcntl
import os
import stat

from tsagg.files import DataDirectory
from tsagg.scan import scan_file

__all__ = ["Journal", "Repair", "recover", "JOURNAL_DIR"]

#: The directory of the journals, under the data directory.
JOURNAL_DIR = ".tsagg"
_PREFIX = "journal-"
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _journal_dir(data_dir):
    """
    Make (if need be) the journal directory, as the directories of the
    files are made: refusing anything but a real directory there.
    """
    return DataDirectory(data_dir).make_dirs(JOURNAL_DIR)


def _sync_dir(path):
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """
    The journal of this recorder: which of its files are open now, and
    which wait to be handed on.

    It grows by a line or so per file, and is compacted when it has grown
    past L{compact_at} bytes and twice what it names: its live lines are
    written to a new journal, which is synced, locked and renamed over it
    (and the directory synced), so that at every moment the name holds a
    whole journal, the old or the new.  Its size depends on what is open and
    waiting, not on how long the recorder has run.

    @ivar path: The journal's path.
    @ivar compactions: How many times it was compacted.
    """

    #: Bytes of journal past which it is compacted.
    compact_at = 64 << 10

    def __init__(self, data_dir):
        """
        Create and lock a new journal in C{data_dir}.

        @raise OSError: It cannot be created: the data directory is not
            there or cannot be written.
        """
        directory = _journal_dir(data_dir)
        name = "%d-%s" % (os.getpid(), os.urandom(4).hex())
        self._directory = directory
        building = os.path.join(directory, "new-" + name)
        fd = _new_locked(building)
        try:
            # Only a locked journal carries the name that recovery looks
            # for, so a journal is never taken for a dead one while it is
            # being made.
            self.path = os.path.join(directory, _PREFIX + name)
            os.rename(building, self.path)
            _sync_dir(directory)
        except BaseException:
            os.close(fd)
            _unlink_quietly(building)
            raise
        self._fd = fd
        # Dicts, for their order: the order in which the files were named.
        self._open = {}
        self._waiting = {}
        self._size = 0
        self._limit = self.compact_at
        self.compactions = 0

    def opened(self, relative):
        """
        Note that a file opened: call before anything is written to it.

        The line is synced by L{sync_quietly}, which may run in a thread.
        """
        self._open[relative] = None
        self._append("open %s\n" % (relative,))

    def sync_quietly(self):
        """
        Sync the journal to disk, if it is still open; a failure is left to
        the writes of the data, which report the disk's trouble.
        """
        fd = self._fd
        if fd is None:
            return
        try:
            os.fdatasync(fd)
        except OSError:
            pass

    def closed(self, relative, hand_on=True):
        """
        Note that a file is synced and closed.

        @param hand_on: Whether it waits to be handed on (L{done} follows);
            else it is done with already.
        """
        self._open.pop(relative, None)
        if hand_on:
            self._waiting[relative] = None
            self._append("closed %s\n" % (relative,))
        else:
            self._done(relative)

    def done(self, relative):
        """
        Note that a closed file is handed on.
        """
        self._waiting.pop(relative, None)
        self._done(relative)

    def _done(self, relative):
        if self.empty:
            # Nothing open, nothing waiting: the journal need not grow.
            os.ftruncate(self._fd, 0)
            self._size = 0
        else:
            self._append("done %s\n" % (relative,))

    @property
    def empty(self):
        """
        Whether no file is open and none waits to be handed on.
        """
        return not self._open and not self._waiting

    @property
    def size(self):
        """
        The journal's size in bytes.
        """
        return self._size

    def close(self):
        """
        Close the journal: removed if it is L{empty}, else kept (and no
        longer locked), for the next start to take.
        """
        if self._fd is None:
            return
        if self.empty:
            _unlink_quietly(self.path)
        os.close(self._fd)
        self._fd = None

    def _append(self, line):
        data = line.encode("utf-8", "surrogateescape")
        os.write(self._fd, data)
        self._size += len(data)
        if self._size > self._limit:
            self.compact()

    def _live_lines(self):
        return "".join(["open %s\n" % (p,) for p in self._open]
                       + ["closed %s\n" % (p,) for p in self._waiting]
                       ).encode("utf-8", "surrogateescape")

    def compact(self):
        """
        Rewrite the journal with only its live lines, crash-safe at every
        step: write them to a new, locked file, sync it, rename it over the
        journal, sync the directory.  Until the rename the old journal is
        whole; a new file a crash leaves behind is removed by L{recover}.
        If a step fails, the journal goes on as it was.

        @return: Whether it was compacted.
        """
        data = self._live_lines()
        # Amortized: the next compaction waits until the journal has grown
        # past twice what is live, however much that is.
        self._limit = max(self.compact_at, 2 * len(data))
        building = os.path.join(self._directory, "new-%s-%s" % (
            os.path.basename(self.path)[len(_PREFIX):], os.urandom(4).hex()))
        try:
            fd = _new_locked(building)
        except OSError:
            return False
        renamed = False
        try:
            self._step("created")
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self._step("written")
            os.fdatasync(fd)
            self._step("synced")
            os.rename(building, self.path)
            renamed = True
            self._step("renamed")
            _sync_dir(self._directory)
            self._step("directory synced")
        except OSError:
            if not renamed:
                os.close(fd)
                _unlink_quietly(building)
                return False
        os.close(self._fd)
        self._fd = fd
        self._size = len(data)
        self.compactions += 1
        return True

    @staticmethod
    def _step(name):
        """
        Called after each step of a compaction: a seam for the tests, which
        kill the process there.
        """


def _new_locked(path):
    """
    Create a new file and take its C{flock}.

    @return: Its descriptor, opened for appending.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                 | _NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    return fd


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


class Repair:
    """
    What recovery found of one file left open.

    @ivar path: The file's path, relative to the data directory.
    @ivar size: Its size before the repair.
    @ivar cut: Bytes cut off its end (0 if it ended with a whole frame).
    @ivar frames: Whole frames left in it; C{scan_frames} of them Scan
        frames.
    @ivar problem: What was wrong with its tail, or L{None}.
    @ivar error: Why it could not be examined or repaired, or L{None}.
    @ivar left_open: C{True} for a file left open (repaired); C{False} for
        one closed, and whole, that was not handed on yet.
    """

    def __init__(self, path, size=0, cut=0, frames=0, problem=None,
                 error=None, scan_frames=0, left_open=True):
        self.left_open = left_open
        self.path = path
        self.size = size
        self.cut = cut
        self.frames = frames
        self.scan_frames = scan_frames
        self.problem = problem
        self.error = error

    def __repr__(self):
        return "<Repair %s: cut %d of %d bytes%s>" % (
            self.path, self.cut, self.size,
            "" if self.error is None else ", " + self.error)


def _unfinished(fd):
    """
    What a journal names open and not closed, and closed but not done.

    @return: Two lists of paths, in order.
    """
    with os.fdopen(os.dup(fd), "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    state = {}
    for line in text.splitlines():
        what, _, path = line.partition(" ")
        if not path:
            continue
        if what in ("open", "closed"):
            state.pop(path, None)
            state[path] = what
        elif what == "done":
            state.pop(path, None)
    return ([p for p, s in state.items() if s == "open"],
            [p for p, s in state.items() if s == "closed"])


def _inside(data_dir, relative):
    """
    The absolute path of C{relative} in C{data_dir}, or L{None} if it would
    lead outside (or through a symlink).
    """
    parts = relative.split("/")
    if (os.path.isabs(relative) or not relative.endswith(".g3")
            or any(p in ("", ".", "..") for p in parts)):
        return None
    path = data_dir
    for part in parts[:-1]:
        path = os.path.join(path, part)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return None
        except OSError:
            return None
    return os.path.join(path, parts[-1])


def repair(data_dir, relative, left_open=True):
    """
    Cut one file back to its last whole, valid frame, and sync it.

    @param left_open: Whether the file was left open; one closed (and
        synced) is only read, for its counts.
    @rtype: L{Repair}
    """
    path = _inside(data_dir, relative)
    if path is None:
        return Repair(relative, error="not a recorded file in the data "
                      "directory; left alone")
    try:
        fd = os.open(path, os.O_RDWR | _NOFOLLOW)
    except FileNotFoundError:
        return Repair(relative, error="no longer there")
    except OSError as e:
        return Repair(relative, error=str(e))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return Repair(relative, error="not a regular file; left alone")
        scan = scan_file("/proc/self/fd/%d" % (fd,)) if os.path.exists(
            "/proc/self/fd") else scan_file(path)
        result = Repair(relative, size=scan.size,
                        cut=scan.size - scan.good_bytes,
                        frames=scan.frames, problem=scan.problem,
                        scan_frames=scan.types.get("S", 0),
                        left_open=left_open)
        if not left_open:
            result.cut = 0
            return result
        # Truncating to the size also gives back the blocks reserved past
        # the end of the file (tsagg.writeback), when it had any.
        os.ftruncate(fd, scan.good_bytes)
        os.fsync(fd)
        return result
    except OSError as e:
        return Repair(relative, error=str(e))
    finally:
        os.close(fd)


def recover(data_dir):
    """
    Repair the files that recorders now gone left open in C{data_dir}, find
    those they closed but did not hand on, and remove their journals.
    Journals still locked (their recorder runs) are left alone.

    @return: The L{Repair}s, one per file: those left open first.
    @raise OSError: The journal directory cannot be read or made.
    """
    directory = _journal_dir(data_dir)
    repairs = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.startswith("new-"):
            # One that a recorder died making, before it named any file,
            # or a compaction's new journal that it did not rename: the
            # journal it was to replace is whole.
            _take(path, lambda fd: None)
            continue
        if not name.startswith(_PREFIX):
            continue
        _take(path, lambda fd: repairs.extend(_repairs(data_dir, fd)))
    return repairs


def _repairs(data_dir, fd):
    left_open, waiting = _unfinished(fd)
    return ([repair(data_dir, relative) for relative in left_open]
            + [repair(data_dir, relative, left_open=False)
               for relative in waiting])


def _take(path, work):
    """
    Lock a journal (or skip it if its owner holds it), do C{work} with it,
    and remove it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        if os.fstat(fd).st_nlink == 0:
            # Another recorder took it first.
            return
        work(fd)
        os.unlink(path)
    finally:
        os.close(fd)
