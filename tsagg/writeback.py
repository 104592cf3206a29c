"""
Have the kernel start writing a file's data to disk, without waiting for it,
and reserve the disk blocks of the data still to come.

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

With delayed allocation (ext4's default), every write that extends a file
reserves its blocks one page at a time, and the blocks are allocated when
the data is written out, under a lock of the file's block map.  Sampled,
the reserving costs ~9% of tsagg's CPU at full speed; and a write appending
to the file while a write-out runs waits for that lock (the writing thread
sat in C{ext4_da_get_block_prep} 7-15% of the time, and the reactor lagged
by 30 ms and more).  Writes into blocks already allocated do neither.  So
L{BlockReserver} keeps blocks allocated ahead of the open file's end
(C{fallocate(2)} with C{FALLOC_FL_KEEP_SIZE}, which leaves the file's size
alone), in steps, as the file grows.  What is not used is released by
truncating the file to its size when it is closed (or, after a crash, when
the journal repairs it).
"""

import ctypes
import os

from tsagg import libc
from tsagg.files import timed_call

__all__ = ["reserve", "start_writeback", "BlockReserver"]

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


def start_writeback(fd, offset, nbytes):
    """
    Submit the dirty pages of C{nbytes} bytes of a file, from C{offset}, for
    writing to disk.  It may block while the disk's queue is full: call it
    off the reactor.

    This is no promise of durability (the file's metadata is not written);
    the fsync at close gives that.

    @return: The L{OSError} of the write-out, or L{None}.
    """
    try:
        if _sync_file_range is None:
            os.fdatasync(fd)
        else:
            _check(_sync_file_range(fd, offset, nbytes,
                                    _SYNC_FILE_RANGE_WRITE))
    except OSError as e:
        return e
    return None


class BlockReserver:
    """
    Disk blocks reserved ahead of the open file's end, as it grows.

    Once a file holds C{first} bytes (1 MiB by default), blocks are
    reserved ahead of its end: as many as it holds, up to C{step}, topped up
    whenever less than half of that is left.  A file of a few frames
    reserves nothing; a growing file makes a dozen small C{fallocate} calls
    on its way to C{step}, then one every half step (a fraction of a
    millisecond, at 128 MiB).

    A reservation is free space the file system no longer counts as free,
    though only this file can use it: L{unused} tells how much, so that the
    floor of free space (L{tsagg.diskspace.DiskGuard}) counts it as free.
    No reservation is made that would take the file system below the floor
    (C{room_for}); the file then grows unreserved, as any other.  A
    reservation that fails (the file system cannot, or has no room) is not
    tried again for the same file: its writes will tell whether the disk is
    full.

    Where the data is written out as it comes (fsync on: L{start_writeback}
    every gigabyte), the writer starts reserving at the first write-out
    (C{first}), where the write-out used to reserve ahead of itself:
    measured with files synced every second at full speed, reservations
    from the first megabyte took the reactor's lag p99 from 5 ms to 27
    (median of four alternating runs; why is not known: the reactor was
    seen running, never blocked in the kernel).

    @ivar step: The most bytes reserved ahead of the file's end; C{0}, no
        reservations.
    @ivar first: The size of a file from which on blocks are reserved.
    """

    def __init__(self, room_for, run_blocking=None, report=None,
                 step=128 << 20, closing=None, first=None):
        """
        @param room_for: Called with a number of bytes: whether the data
            file system can spare them and stay above its floor.
        @param closing: Returns whether a file closed before is still
            being synced and closed (L{tsagg.writepath.Syncer.closing}):
            no reservation starts meanwhile.
        @param first: The size of a file from which on blocks are
            reserved; L{None}, C{step / 128}.
        @param run_blocking: Runs a function off the reactor thread and
            returns a L{Deferred} of its result; L{None}, the call is made
            here.
        @param report: Called with C{(what, took)} once a reservation
            returned, C{took} its duration; or L{None}.
        """
        self._room_for = room_for
        self._run_blocking = run_blocking
        self._report = report or (lambda what, took: None)
        self._closing = closing or (lambda: False)
        self.step = step
        self.first = step >> 7 if first is None else first

    def grow(self, f):
        """
        Top up the reservation of the open file C{f} (a
        L{tsagg.files.OpenFile}) after a write, if it is due and no other
        call on the file runs off the reactor (else at a later write).

        A reservation runs off the reactor (made in it, they cost lag p99
        of 51 ms against 14, files synced every second at full speed), and
        not while a file closed before is being synced and closed (a guess
        at the fsync-on lag, kept as harmless: with fsync off, the same
        code gave lag medians of 22.9 and 6.1 ms in two sets of four
        alternating rounds, against 2.9 and 6.2 without reservations).
        Writes made meanwhile go on past the reserved blocks, as without
        them.
        """
        end = f.size + f.partial
        if (not self.step or f.reserved_to is None or f.background is not None
                or end < self.first or self._closing()):
            return
        ahead = min(end, self.step)
        if f.reserved_to - end >= ahead >> 1:
            return
        start = max(end, f.reserved_to)
        stop = end + ahead
        if not self._room_for(stop - start):
            f.reserved_to = None
            return
        # Whatever happens, blocks may now lie past the end: release them
        # when the file closes.
        f.reserved = True
        call = (lambda: timed_call(reserve, f.fd, start, stop - start))
        if self._run_blocking is None:
            self._done(call(), f, stop)
            return
        d = f.background = self._run_blocking(call)
        d.addCallback(self._done, f, stop)
        d.addErrback(lambda failure: self._done((False, 0.0), f, stop))

    def _done(self, result, f, stop):
        ok, took = result
        f.background = None
        f.reserved_to = stop if ok else None
        self._report("reservation of blocks for " + f.path, took)

    @staticmethod
    def unused(f):
        """
        Bytes reserved past the end of the open file C{f} (or L{None}, when
        none is open) that it has not yet used.
        """
        if f is None or not f.reserved_to:
            return 0
        return max(0, f.reserved_to - f.size - f.partial)
