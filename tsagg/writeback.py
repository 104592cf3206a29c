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

Submitting is not enough on its own.  With delayed allocation (ext4's
default), blocks are allocated when the data is written out, under a lock of
the file's block map; a write appending to the same file meanwhile needs
that lock to reserve its own blocks, and waits.  Sampled, the writing thread
sat in C{ext4_da_get_block_prep} 7-15% of the time, and the reactor lagged
by 30 ms and more.  So before a range is submitted, L{start_writeback}
reserves disk blocks for the data still to come (C{fallocate(2)} with
C{FALLOC_FL_KEEP_SIZE}, which leaves the file's size alone): writes into
reserved blocks do not wait.  What is not used is released by truncating the
file to its size when it is closed.
"""

import ctypes
import os

from tsagg import libc

__all__ = ["reserve", "start_writeback"]

_SYNC_FILE_RANGE_WRITE = 2
_FALLOC_FL_KEEP_SIZE = 1

_sync_file_range = libc.function(
    "sync_file_range",
    [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint])
_fallocate = libc.function(
    "fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64])


def _check(result):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def reserve(fd, offset, nbytes):
    """
    Allocate disk blocks for C{nbytes} bytes of a file from C{offset},
    without changing its size.  Best effort: where the system or the file
    system cannot, nothing happens.

    @return: Whether the blocks were reserved.
    """
    if _fallocate is None or nbytes <= 0:
        return False
    try:
        _check(_fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, nbytes))
    except OSError:
        # No space (the writes will say so), or not supported here.
        return False
    return True


def start_writeback(fd, offset, nbytes, ahead=0):
    """
    Submit the dirty pages of C{nbytes} bytes of a file, from C{offset}, for
    writing to disk, after reserving blocks for the C{ahead} bytes that
    follow them (L{reserve}).  It may block while the disk's queue is full:
    call it off the reactor.

    This is no promise of durability (the file's metadata is not written);
    the fsync at close gives that.

    @return: The L{OSError} of the write-out, or L{None}.
    """
    reserve(fd, offset + nbytes, ahead)
    try:
        if _sync_file_range is None:
            os.fdatasync(fd)
        else:
            _check(_sync_file_range(fd, offset, nbytes,
                                    _SYNC_FILE_RANGE_WRITE))
    except OSError as e:
        return e
    return None
