"""
Have the kernel start writing a file's data to disk, without waiting for it.

A recorder that fsyncs each file only when it closes leaves the whole file
dirty in the page cache until then: at a gigabyte a second, a stop then waits
a second for the fsync.  Syncing the open file as it grows (C{fdatasync})
bounds that, but the next writes to the file wait for each sync: measured,
tens of milliseconds of reactor lag at a gigabyte a second.
Linux's C{sync_file_range(2)} with C{SYNC_FILE_RANGE_WRITE} only submits the
dirty pages of a range for write-out and returns; the fsync at close then
has little left to do.  Python's C{os} module does not offer it, so it is
called from the C library; elsewhere L{start_writeback} falls back to
C{os.fdatasync}, which gives the same bound at a higher cost.
"""

import ctypes
import os

__all__ = ["start_writeback"]

_SYNC_FILE_RANGE_WRITE = 2


def _find():
    try:
        # The symbols the process already has, the C library's among them
        # (no search for the library, which may run ldconfig).
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                     ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_sync_file_range = _find()


def start_writeback(fd, offset, nbytes):
    """
    Submit the dirty pages of C{nbytes} bytes of a file, from C{offset}, for
    writing to disk.  It may block while the disk's queue is full: call it
    off the reactor.

    This is no promise of durability (the file's metadata is not written);
    the fsync at close gives that.

    @return: The L{OSError}, or L{None}.
    """
    try:
        if _sync_file_range is None:
            os.fdatasync(fd)
        elif _sync_file_range(fd, offset, nbytes,
                              _SYNC_FILE_RANGE_WRITE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    except OSError as e:
        return e
    return None
