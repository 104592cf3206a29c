"""
The free-space floor of the data file system: how much room tsagg leaves to
the rest of the node.  Below it, tsagg treats the disk as full (it pauses
the stream and holds its frames) before the kernel would say so.
"""

import errno
import os
import re

__all__ = ["FreeSpaceFloor", "DEFAULT_MIN_FREE", "DiskGuard", "BelowFloor",
           "free_space", "human_bytes"]

#: The default floor: 1% of the file system.
DEFAULT_MIN_FREE = "1%"

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SPEC = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(%|[kmgt]?)(?:i?b)?\s*$",
                   re.IGNORECASE)


class FreeSpaceFloor:
    """
    A floor of free space: a number of bytes, or a percentage of the file
    system's size.

    @ivar text: The floor as the operator wrote it, e.g. C{'1%'} or
        C{'20G'}.
    """

    def __init__(self, text):
        """
        @param text: C{'N%'} (0 to 100) or a number of bytes with an
            optional unit C{K}, C{M}, C{G} or C{T} (powers of 1024, an
            optional C{B} or C{iB} after it), or an L{int} of bytes.
        @raise ValueError: C{text} is none of these.
        """
        match = _SPEC.match(str(text))
        if match is None:
            raise ValueError("not a size or a percentage: %r (e.g. 1%%, "
                             "500M, 20G)" % (text,))
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit == "%":
            if number > 100:
                raise ValueError("more than 100%%: %r" % (text,))
            self._percent, self._bytes = number, None
        else:
            self._percent, self._bytes = None, int(number * _UNITS[unit])
        self.text = str(text).strip()

    def bytes_of(self, total):
        """
        The floor in bytes on a file system of C{total} bytes.
        """
        if self._bytes is not None:
            return self._bytes
        return int(total * self._percent / 100)

    def __str__(self):
        return self.text

    def __repr__(self):
        return "FreeSpaceFloor(%r)" % (self.text,)


class BelowFloor(OSError):
    """
    The data file system has less free space than the floor (C{--min-free}):
    the disk counts as full.
    """


class DiskGuard:
    """
    When to look at the data file system, and what it says: before a file
    opens, and then every C{check_bytes} written or C{check_interval}
    seconds, that it is not read-only and has more free space than the
    floor.  It answers with a verdict; the writer acts on it.

    Disk blocks reserved ahead of the open file (L{tsagg.writeback}) are
    not free to the file system, but they are to that file: they count as
    free space here, and no more are reserved than the file system can
    spare above the floor (L{room_for}).

    @ivar min_free: The L{FreeSpaceFloor}.
    @ivar reserved: Returns the bytes reserved ahead of the open file and
        not yet used.
    """

    def __init__(self, data_dir, min_free=DEFAULT_MIN_FREE,
                 statvfs=os.statvfs, check_bytes=16 << 20,
                 check_interval=1.0):
        if not isinstance(min_free, FreeSpaceFloor):
            min_free = FreeSpaceFloor(min_free)
        self.data_dir = data_dir
        self.min_free = min_free
        self._statvfs = statvfs
        self._check_bytes = check_bytes
        self._check_interval = check_interval
        # When, and at which count of bytes written, it last looked.
        self._checked_at = None
        self._checked_bytes = 0
        self.reserved = lambda: 0

    def verdict(self, now, file_open, bytes_written):
        """
        Whether writing may go on, looking at the file system only when it
        is due.

        A file open before the file system turned read-only (a read-only
        mount laid over the data directory) could still be written, but no
        file after it: the verdict is given at once, not at the next
        rotation.

        @param file_open: Whether a file is open (else one is about to
            open, and the file system is looked at now).
        @param bytes_written: Bytes written so far.
        @return: L{None} when writing may go on; else C{(why, error)}: why
            the open file is to be closed, and the L{OSError} (C{EROFS}, or
            L{BelowFloor}) that stops writing.
        """
        if (file_open and self._checked_at is not None
                and now - self._checked_at < self._check_interval
                and bytes_written - self._checked_bytes < self._check_bytes):
            return None
        self._checked_at = now
        self._checked_bytes = bytes_written
        try:
            free, total, read_only = free_space(self.data_dir, self._statvfs)
        except OSError:
            # Opening the file will tell what is wrong.
            return None
        free += self.reserved()
        if read_only:
            return ("the file system is read-only", OSError(
                errno.EROFS, "Read-only file system (the data directory is "
                "on a read-only mount)"))
        floor = self.min_free.bytes_of(total)
        if free >= floor and free > 0:
            return None
        return ("free space below the floor", BelowFloor(
            errno.ENOSPC, "%s free on %s, below the floor of %s (--min-free "
            "%s)" % (human_bytes(free), self.data_dir, human_bytes(floor),
                     self.min_free.text)))

    def room_for(self, nbytes):
        """
        Whether the data file system can spare C{nbytes} more and keep
        its floor free (one C{statvfs}).
        """
        try:
            free, total, read_only = free_space(self.data_dir, self._statvfs)
        except OSError:
            return False
        return not read_only and free - nbytes >= max(
            1, self.min_free.bytes_of(total))

    def status(self):
        """
        The free space of the data file system (what is reserved ahead of
        the open file counted as free) and the floor kept free on it, in
        bytes (L{None} when the file system cannot be examined).
        """
        try:
            free, total, _ = free_space(self.data_dir, self._statvfs)
        except OSError:
            return {"free_bytes": None, "free_floor_bytes": None}
        return {"free_bytes": free + self.reserved(),
                "free_floor_bytes": self.min_free.bytes_of(total)}


def free_space(path, statvfs=os.statvfs):
    """
    The space an unprivileged writer may still use on the file system of
    C{path}, its size, and whether it is mounted read-only: one C{statvfs}.

    @return: C{(free bytes, total bytes, read-only)}.
    @raise OSError: C{path} cannot be examined.
    """
    st = statvfs(path)
    return (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize,
            bool(getattr(st, "f_flag", 0) & os.ST_RDONLY))


def human_bytes(count):
    """
    A byte count as an operator reads it: C{'1.2 GiB'}.
    """
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return "%d B" % (count,)
    return "%.1f %s" % (value, unit)
