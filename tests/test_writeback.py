"""
Tests for L{tsagg.writeback}.
"""

import ctypes
import errno
import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tsagg import writeback
from tsagg.frames import receive_frame
from tsagg.service import in_thread_pool
from tsagg.writer import RotatingWriter

from tests import frames as F
from tests.test_outage import FakeDisk
from tests.test_writer import DeferredSync
from tests.util import FakeProducer, files_and_frames


class StartWritebackTests(unittest.TestCase):

    def setUp(self):
        self.path = self.mktemp()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        self.addCleanup(os.close, self.fd)
        os.write(self.fd, b"x" * 65536)

    def test_submits_a_range_of_a_real_file(self):
        self.assertIsNotNone(writeback._sync_file_range,
                             "sync_file_range not found in the C library")
        self.assertIsNone(writeback.start_writeback(self.fd, 0, 65536))

    def test_reserves_blocks_without_changing_the_size(self):
        self.assertIsNotNone(writeback._fallocate,
                             "fallocate not found in the C library")
        ahead = 8 << 20
        self.assertTrue(writeback.reserve(self.fd, 65536, ahead))
        st = os.fstat(self.fd)
        self.assertEqual(st.st_size, 65536)
        self.assertGreaterEqual(st.st_blocks * 512, 65536 + ahead)

    def test_a_reservation_that_fails_is_no_error(self):
        def no_space(*args):
            ctypes.set_errno(errno.ENOSPC)
            return -1
        self.patch(writeback, "_fallocate", no_space)
        self.assertFalse(writeback.reserve(self.fd, 65536, 4096))
        self.assertEqual(os.fstat(self.fd).st_size, 65536)

    def test_error_is_returned_not_raised(self):
        error = writeback.start_writeback(-1, 0, 4096)
        self.assertIsInstance(error, OSError)
        self.assertEqual(error.errno, errno.EBADF)

    def test_falls_back_to_fdatasync(self):
        synced = []
        self.patch(writeback, "_sync_file_range", None)
        self.patch(os, "fdatasync", synced.append)
        self.assertIsNone(writeback.start_writeback(self.fd, 0, 65536))
        self.assertEqual(synced, [self.fd])


class Growing:
    """
    The size, and what is reserved, of an open file
    (L{tsagg.files.OpenFile}) as L{writeback.BlockReserver} sees it.
    """

    def __init__(self):
        self.fd = -1
        self.path = "/data/f.g3"
        self.size = 0
        self.partial = 0
        self.reserved = False
        self.reserved_to = 0
        self.background = None


class BlockReserverTests(unittest.TestCase):
    """
    The schedule of reservations as a file grows, with the calls to
    C{fallocate} recorded in place of made.
    """

    def setUp(self):
        self.calls = []
        self.room = []
        self.answer = True
        self.patch(writeback, "reserve", self.reserve)

    def reserve(self, fd, offset, nbytes):
        self.calls.append((offset, nbytes))
        return self.answer

    def room_for(self, nbytes):
        self.room.append(nbytes)
        return True

    def grow(self, f, reserver, sizes):
        for size in sizes:
            f.size = size
            reserver.grow(f)

    def test_keeps_blocks_ahead_in_few_calls(self):
        step = 128 << 20
        reserver = writeback.BlockReserver(self.room_for, step=step)
        f = Growing()
        # Under a megabyte (step / 128), nothing.
        self.grow(f, reserver, range(0, 1 << 20, 65536))
        self.assertEqual(self.calls, [])
        self.assertFalse(f.reserved)
        # From there to 4 GiB, a frame of 1.6 MB at a time.
        frame = 1600000
        for size in range(1 << 20, 4 << 30, frame):
            f.size = size
            before = f.reserved_to
            reserver.grow(f)
            if f.reserved_to != before:
                # From the file's end, or from where the last one ended.
                self.assertEqual(self.calls[-1][0], max(size, before))
            # Always half of what the file holds ahead (up to half a step).
            self.assertGreaterEqual(f.reserved_to - size,
                                    min(size, step) // 2)
            self.assertLessEqual(f.reserved_to - size, min(size, step))
        self.assertTrue(f.reserved)
        # The room asked for is what it reserves.
        self.assertEqual(self.room, [nbytes for _, nbytes in self.calls])
        self.assertEqual(self.calls[0], (1 << 20, 1 << 20))
        # A dozen calls to reach the step, then one every half step.
        self.assertLess(len(self.calls), 15 + (4 << 30) // (step // 2))
        self.assertEqual(writeback.BlockReserver.unused(f),
                         f.reserved_to - f.size)

    def test_the_partial_frame_counts(self):
        reserver = writeback.BlockReserver(self.room_for, step=8 << 20)
        f = Growing()
        f.partial = 1 << 20
        reserver.grow(f)
        self.assertEqual(self.calls, [(1 << 20, 1 << 20)])
        self.assertEqual(writeback.BlockReserver.unused(f), 1 << 20)

    def test_no_room_no_reservation_and_no_more_tries(self):
        asked = []
        reserver = writeback.BlockReserver(
            lambda nbytes: asked.append(nbytes), 8 << 20)
        f = Growing()
        self.grow(f, reserver, range(1 << 20, 64 << 20, 1 << 20))
        self.assertEqual(asked, [1 << 20])
        self.assertEqual(self.calls, [])
        self.assertFalse(f.reserved)
        self.assertEqual(writeback.BlockReserver.unused(f), 0)

    def test_a_failed_reservation_is_not_tried_again_but_released(self):
        self.answer = False
        reserver = writeback.BlockReserver(self.room_for, step=8 << 20)
        f = Growing()
        self.grow(f, reserver, range(1 << 20, 64 << 20, 1 << 20))
        self.assertEqual(self.calls, [(1 << 20, 1 << 20)])
        # Part of it may have been allocated: the close truncates.
        self.assertTrue(f.reserved)
        self.assertEqual(writeback.BlockReserver.unused(f), 0)

    def test_off_the_reactor_one_call_at_a_time(self):
        sync = DeferredSync()
        reports = []
        reserver = writeback.BlockReserver(
            self.room_for, sync, lambda *a: reports.append(a), step=8 << 20)
        f = Growing()
        self.grow(f, reserver, [1 << 20])
        [(job, d)] = sync.jobs
        self.assertIs(f.background, d)
        self.assertEqual((self.calls, f.reserved_to), ([], 0))
        # Nothing else starts on the file while it runs, and what it
        # reserves counts only once it is done.
        self.grow(f, reserver, [4 << 20, 5 << 20])
        self.assertEqual(len(sync.jobs), 1)
        self.assertEqual(writeback.BlockReserver.unused(f), 0)
        sync.run_all()
        self.assertEqual(self.calls, [(1 << 20, 1 << 20)])
        self.assertIsNone(f.background)
        self.assertEqual(f.reserved_to, 2 << 20)
        [(what, took)] = reports
        self.assertEqual(what, "reservation of blocks for /data/f.g3")
        self.assertGreaterEqual(took, 0)
        # The next write tops it up.
        self.grow(f, reserver, [6 << 20])
        sync.run_all()
        self.assertEqual(self.calls[-1], (6 << 20, 6 << 20))
        self.assertEqual(f.reserved_to, 12 << 20)

    def test_none_starts_while_a_file_closed_before_is_synced(self):
        closing = [True]
        reserver = writeback.BlockReserver(
            self.room_for, step=8 << 20, closing=lambda: closing[0])
        f = Growing()
        self.grow(f, reserver, [1 << 20, 2 << 20])
        self.assertEqual((self.calls, self.room), ([], []))
        closing[0] = False
        self.grow(f, reserver, [3 << 20])
        self.assertEqual(self.calls, [(3 << 20, 3 << 20)])

    def test_an_unexpected_failure_off_the_reactor_ends_reservations(self):
        reserver = writeback.BlockReserver(
            self.room_for, lambda job: defer.fail(RuntimeError("gone")),
            step=8 << 20)
        f = Growing()
        self.grow(f, reserver, [1 << 20, 2 << 20])
        self.assertIsNone(f.background)
        self.assertIsNone(f.reserved_to)
        self.assertTrue(f.reserved)

    def test_a_step_of_nothing_reserves_nothing(self):
        reserver = writeback.BlockReserver(self.room_for, step=0)
        f = Growing()
        self.grow(f, reserver, range(0, 64 << 20, 1 << 20))
        self.assertEqual((self.calls, self.room), ([], []))
        self.assertEqual(writeback.BlockReserver.unused(None), 0)


class WritebackUnderLoadTests(unittest.TestCase):
    """
    The real thing: a RotatingWriter in the reactor writing while its
    write-outs and reservations run in threads.
    """

    @defer.inlineCallbacks
    def test_frames_intact_while_reservations_race_the_writes(self):
        data_dir = self.mktemp()
        writer = RotatingWriter(
            data_dir, reactor, time_per_file=3600, gap_timeout=3600,
            fsync=True, writeback_every=1 << 20, reserve_ahead=4 << 20,
            run_blocking=in_thread_pool(reactor))
        sent = [F.raw(F.scan(n, channels=100, samples=250, seed=n))
                for n in range(2, 202)]
        for start in range(0, len(sent), 5):
            # A reactor turn between batches lets write-outs run beside
            # the next writes, and the reservations ahead of them.
            writer.framesReceived([receive_frame(raw) for raw in
                                   sent[start:start + 5]])
            yield task.deferLater(reactor, 0, lambda: None)
        self.assertGreater(writer.status["bytes_written"], 10 << 20)
        yield writer.close()
        [(path, raws)] = files_and_frames(data_dir)
        self.assertEqual(raws, sent)
        st = os.stat(os.path.join(data_dir, path))
        self.assertEqual(st.st_size, sum(map(len, sent)))
        self.assertLess(st.st_blocks * 512, st.st_size + 65536)
        self.assertEqual(writer.status["write_errors"], 0)
        self.assertIsNone(writer.status["last_error"])


class ReservationTests(unittest.TestCase):
    """
    A writer's open file on a real file system (the test's temporary
    directory) keeps disk blocks reserved ahead of its end, gives them back
    when it closes, and counts them as free against the floor.
    """

    step = 8 << 20

    def setUp(self):
        self.clock = task.Clock()
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.big = [F.scan(n, channels=100, samples=3000, seed=n)
                    for n in range(2, 6)]
        self.size = sum(len(F.raw(frame)) for frame in self.big)

    def writer(self, **kw):
        kw.setdefault("fsync", False)
        kw.setdefault("time_per_file", 3600)
        writer = RotatingWriter(self.dir, self.clock, gap_timeout=3600,
                                reserve_ahead=self.step, **kw)
        writer.streamStarted(FakeProducer())
        self.addCleanup(writer.close)
        return writer

    def allocated(self, writer):
        st = os.stat(writer.status["current_file"])
        return st.st_size, st.st_blocks * 512

    def test_blocks_reserved_ahead_are_released_at_close(self):
        writer = self.writer()
        sent = F.feed(writer, *self.big)
        path = writer.status["current_file"]
        size, allocated = self.allocated(writer)
        # The file's size does not show them.
        self.assertEqual(size, self.size)
        self.assertGreaterEqual(allocated, size + min(size, self.step) // 2)
        writer.close()
        st = os.stat(path)
        self.assertEqual(st.st_size, self.size)
        self.assertLess(st.st_blocks * 512, self.size + 65536)
        [(_, raws)] = files_and_frames(self.dir)
        self.assertEqual(raws, sent)

    def test_a_small_file_reserves_nothing(self):
        writer = self.writer()
        F.feed(writer, F.scan(2), F.scan(3))
        size, allocated = self.allocated(writer)
        self.assertLess(allocated, size + 65536)

    def test_reserved_blocks_count_as_free(self):
        disk = FakeDisk()
        writer = self.writer(statvfs=disk)
        F.feed(writer, *self.big)
        size, allocated = self.allocated(writer)
        unused = writer.status["free_bytes"] - disk.free
        self.assertGreater(unused, 0)
        self.assertLess(abs(unused - (allocated - size)), 8192)
        # Other files take the file system below the floor of 1 GiB, by
        # less than is reserved: the file goes on into its reservation...
        disk.free = (1 << 30) - unused // 2
        self.clock.advance(2)
        more = F.feed(writer, F.scan(6))
        self.assertEqual(writer.status["frames_held"], 0)
        self.assertIsNotNone(writer.status["current_file"])
        # ... but not past it.
        disk.free = (1 << 30) - unused - 4096
        self.clock.advance(2)
        F.feed(writer, F.scan(7))
        self.assertEqual(writer.status["frames_held"], 1)
        self.assertIn("below the floor", writer.status["last_error"])
        [(_, raws)] = files_and_frames(self.dir)
        self.assertEqual(raws[-1], more[0])

    def test_no_reservation_that_would_cross_the_floor(self):
        # 1 GiB floor; room for the first megabyte ahead, not for more.
        disk = FakeDisk(free=(1 << 30) + (3 << 20) // 2)
        writer = self.writer(statvfs=disk)
        F.feed(writer, *self.big)
        size, allocated = self.allocated(writer)
        self.assertLess(allocated, size + 65536)
        self.assertEqual(writer.status["free_bytes"], disk.free)
        self.assertEqual(writer.status["frames_held"], 0)

    def test_close_and_write_out_wait_for_a_reservation(self):
        sync = DeferredSync()
        writer = self.writer(run_blocking=sync, fsync=True,
                             writeback_every=1)
        sent = F.feed(writer, *self.big[:1])
        path = writer.status["current_file"]
        [(reservation, _)] = sync.jobs
        # The write-out waits for a later write.
        sent += F.feed(writer, *self.big[1:2])
        self.assertEqual(len(sync.jobs), 1)
        d = writer.close()
        # The close is not even started while it runs.
        self.assertEqual(len(sync.jobs), 1)
        sync.run_all()
        self.assertNoResult(d)
        sync.run_all()
        self.successResultOf(d)
        st = os.stat(path)
        self.assertEqual(st.st_size, len(b"".join(sent)))
        self.assertLess(st.st_blocks * 512, st.st_size + 65536)
        [(_, raws)] = files_and_frames(self.dir)
        self.assertEqual(raws, sent)

    def test_the_next_file_reserves_once_the_last_one_is_synced(self):
        sync = DeferredSync()
        writer = self.writer(run_blocking=sync, time_per_file=1)
        F.feed(writer, self.big[0])
        [(reservation, _)] = sync.jobs
        sync.run_all()
        # The file closes, and its close waits; the next one's writes
        # reserve nothing meanwhile.
        self.clock.advance(2)
        F.feed(writer, self.big[1])
        F.feed(writer, self.big[2])
        [(close, _)] = sync.jobs
        self.assertEqual(writer.status["files_written"], 2)
        sync.run_all()
        F.feed(writer, self.big[3])
        self.assertEqual(len(sync.jobs), 1)
        sync.run_all()
        self.assertEqual(sync.jobs, [])
        size, allocated = self.allocated(writer)
        self.assertGreater(allocated, size + 65536)
        d = writer.close()
        sync.run_all()
        self.successResultOf(d)

    def test_with_fsync_reservations_start_at_the_first_write_out(self):
        sync = DeferredSync()
        one = len(F.raw(self.big[0]))
        writer = self.writer(run_blocking=sync, fsync=True,
                             writeback_every=2 * one)
        F.feed(writer, self.big[0])
        self.assertEqual(sync.jobs, [])
        F.feed(writer, self.big[1])
        [(reservation, _)] = sync.jobs
        sync.run_all()
        size, allocated = self.allocated(writer)
        self.assertGreaterEqual(allocated, 2 * size)
        # The write-out waits for a later write, one call at a time.
        for frame in self.big[2:]:
            F.feed(writer, frame)
            self.assertEqual(len(sync.jobs), 1)
            sync.run_all()
        self.assertGreaterEqual(writer._out.file.written_back, 3 * one)
        d = writer.close()
        sync.run_all()
        self.successResultOf(d)

    def test_a_reservation_the_file_system_refuses(self):
        def no_space(*args):
            calls.append(args)
            ctypes.set_errno(errno.ENOSPC)
            return -1
        calls = []
        self.patch(writeback, "_fallocate", no_space)
        writer = self.writer()
        sent = F.feed(writer, *self.big)
        sent += F.feed(writer, *self.big)
        # Tried once for the file, and no error: its writes tell.
        self.assertEqual(len(calls), 1)
        self.assertEqual(writer.status["write_errors"], 0)
        writer.close()
        [(_, raws)] = files_and_frames(self.dir)
        self.assertEqual(raws, sent)
