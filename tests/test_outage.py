"""
Tests for the writer through outages of the disk, on a L{task.Clock}: one
retry timer with backoff, a log an operator can read, the free-space floor,
no gap while frames are held, the metadata kept across a reconnect, and
honest timing of what runs in a thread.
"""

import errno
import os
from collections import namedtuple

from twisted.internet import defer, task
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from tsagg.diskspace import FreeSpaceFloor
from tsagg.outage import Holding
from tsagg.writer import BelowFloor, RotatingWriter, duration_text

from tests import frames as F
from tests.test_writer import T0, DeferredSync, FailingOpener
from tests.util import FakeProducer, files_and_frames

StatVFS = namedtuple("StatVFS", "f_bavail f_frsize f_blocks f_flag")


class FakeDisk:
    """
    A C{statvfs} of a 100 GiB file system whose free space the test sets.
    """

    def __init__(self, free=50 << 30, total=100 << 30):
        self.free = free
        self.total = total
        self.read_only = False
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        return StatVFS(self.free // 4096, 4096, self.total // 4096,
                       os.ST_RDONLY if self.read_only else 0)


class OutageTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.events = []
        self.producer = FakeProducer()
        self.writers = []

    def make_writer(self, **kw):
        kw.setdefault("time_per_file", 600)
        kw.setdefault("gap_timeout", 10)
        kw.setdefault("fsync", False)
        writer = RotatingWriter(self.dir, self.clock, **kw)
        writer.log = Logger(namespace="tsagg.writer", source=writer,
                            observer=self.events.append)
        writer.streamStarted(self.producer)
        self.writers.append(writer)
        return writer

    def send(self, writer, *frames):
        return F.feed(writer, *frames)

    def lines(self):
        return [formatEvent(e) for e in self.events]

    def files(self):
        return files_and_frames(self.dir)

    def tearDown(self):
        for writer in self.writers:
            writer.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BackoffTests(OutageTestCase):

    def test_one_timer_retries_with_doubling_delays_up_to_the_cap(self):
        opener = FailingOpener(errno.EROFS)
        writer = self.make_writer(opener=opener, retry_interval=1.0,
                                  max_retry_interval=30.0)
        self.send(writer, F.observation(), F.scan(2))
        self.assertEqual(opener.calls, 1)
        tries = []
        for second in range(1, 200):
            self.clock.advance(1)
            self.assertLessEqual(len(self.clock.getDelayedCalls()), 1)
            if opener.calls > len(tries) + 1:
                tries.append(second)
        self.assertEqual(tries, [1, 3, 7, 15, 31, 61, 91, 121, 151, 181])
        self.assertTrue(self.producer.paused)

    def test_backoff_starts_anew_after_recovery(self):
        opener = FailingOpener(errno.EACCES)
        writer = self.make_writer(opener=opener)
        self.send(writer, F.scan(2))
        self.clock.advance(1 + 2 + 4)
        opener.failing = False
        self.clock.advance(8)
        self.assertEqual(writer.status["frames_held"], 0)
        opener.failing = True
        self.send(writer, F.flow(F.START), F.scan(3, session_id=1700000100))
        calls = opener.calls
        self.clock.advance(1)
        self.assertEqual(opener.calls, calls + 1)


class OutageLogTests(OutageTestCase):

    def test_an_hour_of_outage_logs_a_handful_of_lines(self):
        opener = FailingOpener(errno.ENOSPC)
        writer = self.make_writer(opener=opener)
        self.send(writer, F.observation(), F.scan(2), F.scan(3))
        for _ in range(3600):
            self.clock.advance(1)
        lines = self.lines()
        failed = [l for l in lines if "failed: " in l and "paused" in l]
        summaries = [l for l in lines if "Writing has failed for" in l]
        self.assertEqual(len(failed), 1, lines)
        self.assertIn("No space left on device", failed[0])
        # One summary a minute at most: the retries are 30 s apart.
        self.assertLessEqual(len(summaries), 60)
        self.assertGreaterEqual(len(summaries), 55)
        self.assertLessEqual(len(lines), 62)
        self.assertIn("3 frames waiting", summaries[0])
        self.assertIn("No space left on device", summaries[0])
        opener.failing = False
        self.clock.advance(30)
        [back] = [l for l in self.lines() if l.startswith("Writing works")]
        self.assertIn("after 1 h 0 min", back)
        self.assertIn("_000.g3", back)
        self.assertEqual(writer.status["outage_seconds"], None)

    def test_a_new_cause_is_logged_once(self):
        opener = FailingOpener(errno.ENOSPC)
        writer = self.make_writer(opener=opener)
        self.send(writer, F.scan(2))
        self.clock.advance(1)
        opener.error = errno.EROFS
        for _ in range(5):
            self.clock.advance(30)
        now = [l for l in self.lines() if "still fails, now" in l]
        self.assertEqual(len(now), 1)
        self.assertIn("Read-only file system", now[0])

    def test_no_file_is_named_opened_by_a_failing_retry(self):
        real_writev = os.writev
        failing = [True]

        def writev(fd, views):
            if failing[0]:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_writev(fd, views)
        self.patch(os, "writev", writev)
        writer = self.make_writer(min_free=0)
        self.send(writer, F.scan(2))
        opened = [l for l in self.lines() if l.startswith("Opened")]
        for _ in range(10):
            self.clock.advance(30)
        self.assertEqual(
            [l for l in self.lines() if l.startswith("Opened")], opened)
        # And no empty file is left of the retries.
        self.assertEqual(self.files(), [])
        failing[0] = False
        self.clock.advance(30)
        [(_, raws)] = self.files()
        self.assertEqual(raws, [F.raw(F.scan(2))])

    def test_status_tells_how_long_it_has_been_out(self):
        writer = self.make_writer(opener=FailingOpener(errno.EACCES))
        self.assertIsNone(writer.status["outage_seconds"])
        self.send(writer, F.scan(2))
        self.clock.advance(42)
        self.assertEqual(writer.status["outage_seconds"], 42)
        self.assertGreater(writer.status["bytes_held"], 0)

    def test_durations_read_as_an_operator_says_them(self):
        self.assertEqual(duration_text(45.2), "45 s")
        self.assertEqual(duration_text(192), "3 min 12 s")
        self.assertEqual(duration_text(180), "3 min")
        self.assertEqual(duration_text(7500), "2 h 5 min")


class HeldAcquisitionTests(OutageTestCase):

    def test_held_frames_are_no_gap(self):
        opener = FailingOpener(errno.EACCES)
        opener.failing = False
        writer = self.make_writer(opener=opener)
        first = self.send(writer, F.observation(), F.scan(2))
        opener.failing = True
        # A START-less session continues: the file is full, say.
        writer._acqs.close_file("rotation")
        held = self.send(writer, F.scan(3))
        for _ in range(10):
            self.clock.advance(30)
        opener.failing = False
        self.clock.advance(30)
        self.assertEqual(writer.status["frames_held"], 0)
        writer.close()
        files = self.files()
        # One acquisition: the next file of the same basename, and it
        # begins with the metadata.
        self.assertEqual([os.path.basename(p) for p, _ in files],
                         ["1700000000_000.g3", "1700000000_001.g3"])
        self.assertEqual(files[0][1], first)
        self.assertEqual(files[1][1], first[:1] + held)

    def test_frames_held_over_a_reconnect_begin_with_the_metadata(self):
        opener = FailingOpener(errno.ENOSPC)
        opener.failing = False
        writer = self.make_writer(opener=opener)
        first = self.send(writer, F.observation(), F.wiring(), F.scan(3))
        writer._acqs.close_file("rotation")
        opener.failing = True
        held = self.send(writer, F.scan(4), F.scan(5))
        writer.streamStopped(Failure(Exception("the sender restarted")))
        second = FakeProducer()
        writer.streamStarted(second)
        self.assertTrue(second.paused)
        # The sender replays its cache to the new connection.
        replayed = self.send(writer, F.observation(), F.wiring(), F.scan(6))
        opener.failing = False
        self.clock.advance(1)
        self.assertFalse(second.paused)
        writer.close()
        files = self.files()
        self.assertEqual(len(files), 2)
        self.assertEqual(files[1][1], first[:2] + held + replayed)


class FloorTests(OutageTestCase):

    def test_below_the_floor_pauses_and_holds_without_touching_the_disk(self):
        disk = FakeDisk(free=2 << 30)
        writer = self.make_writer(statvfs=disk, min_free="1%")
        first = self.send(writer, F.observation(), F.scan(2))
        disk.free = 900 << 20
        self.clock.advance(2)
        held = self.send(writer, F.scan(3), F.scan(4))
        status = writer.status
        self.assertEqual(status["frames_held"], 2)
        self.assertTrue(self.producer.paused)
        self.assertIn("below the floor", status["last_error"])
        self.assertEqual(status["free_bytes"], 900 << 20)
        self.assertEqual(status["free_floor_bytes"], (100 << 30) // 100)
        # The file open then was closed at its frame boundary.
        self.assertIsNone(status["current_file"])
        [(_, raws)] = self.files()
        self.assertEqual(raws, first)
        for _ in range(20):
            self.clock.advance(30)
        self.assertEqual(len(self.files()), 1)
        disk.free = 5 << 30
        self.clock.advance(30)
        self.assertFalse(self.producer.paused)
        writer.close()
        files = self.files()
        self.assertEqual([raws for _, raws in files], [first, first[:1] + held])

    def test_the_floor_is_checked_every_so_many_bytes(self):
        disk = FakeDisk()
        big = F.scan(2, channels=64, samples=2000)
        size = len(F.raw(big))
        # Reserving blocks ahead asks too (tests.test_writeback); here
        # only the floor's checks are counted.
        writer = self.make_writer(statvfs=disk, free_check_bytes=4 * size,
                                  free_check_interval=3600, reserve_ahead=0)
        self.send(writer, F.scan(1))
        calls = disk.calls
        for n in range(10):
            self.send(writer, F.scan(2 + n, channels=64, samples=2000))
        self.assertEqual(disk.calls - calls, 2)

    def test_a_read_only_file_system_pauses_at_once(self):
        disk = FakeDisk()
        writer = self.make_writer(statvfs=disk)
        first = self.send(writer, F.observation(), F.scan(2))
        # A read-only mount laid over the data directory: the open file
        # could still be written, but the acquisition stops there.
        disk.read_only = True
        self.clock.advance(2)
        held = self.send(writer, F.scan(3))
        self.assertTrue(self.producer.paused)
        self.assertIn("read-only", writer.status["last_error"])
        self.assertIsNone(writer.status["current_file"])
        disk.read_only = False
        self.clock.advance(1)
        self.assertFalse(self.producer.paused)
        writer.close()
        self.assertEqual([raws for _, raws in self.files()],
                         [first, first[:1] + held])

    def test_a_floor_in_bytes(self):
        disk = FakeDisk(free=300 << 20)
        writer = self.make_writer(statvfs=disk, min_free="500M")
        self.send(writer, F.scan(2))
        self.assertEqual(writer.status["frames_held"], 1)
        self.assertEqual(writer.status["free_floor_bytes"], 500 << 20)

    def test_an_empty_disk_is_full_even_with_no_floor(self):
        disk = FakeDisk(free=0)
        writer = self.make_writer(statvfs=disk, min_free=0)
        self.send(writer, F.scan(2))
        self.assertEqual(writer.status["frames_held"], 1)

    def test_floor_values(self):
        self.assertEqual(FreeSpaceFloor("1%").bytes_of(1000), 10)
        self.assertEqual(FreeSpaceFloor("2.5%").bytes_of(1000), 25)
        self.assertEqual(FreeSpaceFloor("20G").bytes_of(1), 20 << 30)
        self.assertEqual(FreeSpaceFloor("512MiB").bytes_of(1), 512 << 20)
        self.assertEqual(FreeSpaceFloor("4096").bytes_of(1), 4096)
        self.assertEqual(FreeSpaceFloor(0).bytes_of(1 << 40), 0)
        for bad in ("", "-1", "101%", "lots", "5 parsecs"):
            self.assertRaises(ValueError, FreeSpaceFloor, bad)

    def test_below_floor_is_no_space(self):
        self.assertEqual(BelowFloor(errno.ENOSPC, "x").errno, errno.ENOSPC)


class HonestTimingTests(OutageTestCase):

    def test_waiting_in_the_pool_is_not_a_slow_sync(self):
        sync = DeferredSync()
        writer = self.make_writer(run_blocking=sync, fsync=True,
                                  slow_write=1.0)
        self.send(writer, F.scan(2))
        d = writer.close()
        # The job waits in the pool's queue for a minute, then runs fast.
        self.clock.advance(60)
        sync.run_all()
        self.successResultOf(d)
        self.assertEqual(writer.status["slow_writes"], 0)
        self.assertLess(writer.status["slowest_write"], 1.0)

    def test_no_fsync_is_reported_when_none_ran(self):
        def slow_pool(job):
            result, _took = job()
            return defer.succeed((result, 5.0))
        writer = self.make_writer(run_blocking=slow_pool, fsync=False)
        self.send(writer, F.scan(2))
        writer.close()
        lines = self.lines()
        self.assertFalse([l for l in lines if "fsync of" in l], lines)
        self.assertTrue([l for l in lines if "close of" in l], lines)

    def test_a_slow_fsync_is_named_so(self):
        def slow_pool(job):
            result, _took = job()
            return defer.succeed((result, 5.0))
        writer = self.make_writer(run_blocking=slow_pool, fsync=True)
        self.send(writer, F.scan(2))
        writer.close()
        self.assertEqual(writer.status["slow_writes"], 1)
        self.assertTrue([l for l in self.lines()
                         if "fsync of" in l and "5.0 s" in l])


class HoldingTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.events = []
        self.retries = []
        log = Logger(observer=self.events.append)
        self.holding = Holding(self.clock, lambda: log,
                               lambda: self.retries.append(
                                   self.clock.seconds()))

    def test_one_timer_backing_off_to_the_cap(self):
        self.holding.failed(OSError(errno.EROFS, "Read-only file system"),
                            "/data")
        self.holding.hold("f", b"raw")
        self.holding.hold("g", b"raw2")
        for _ in range(8):
            self.clock.advance(self.clock.getDelayedCalls()[0].getTime()
                               - self.clock.seconds())
            self.assertEqual(len(self.clock.getDelayedCalls()), 0)
            self.holding.still_failing()
        self.assertEqual(self.retries, [1, 3, 7, 15, 31, 61, 91, 121])
        self.assertEqual(len(self.holding), 2)
        self.assertEqual(self.holding.bytes, 7)

    def test_the_log_of_an_outage(self):
        self.holding.failed(OSError(errno.ENOSPC, "No space left on device"),
                            "/data")
        self.holding.failed(OSError(errno.ENOSPC, "No space left on device"),
                            "/data")
        self.clock.advance(61)
        self.holding.hold("f", b"x")
        self.holding.still_failing()
        self.holding.still_failing()
        self.clock.advance(100)
        self.holding.ended("17000/s/1_001.g3")
        lines = [formatEvent(e) for e in self.events]
        self.assertEqual(len(lines), 3, lines)
        self.assertIn("Writing has failed for 1 min 1 s", lines[1])
        self.assertIn("after 2 min 41 s", lines[2])
        self.assertIsNone(self.holding.outage_seconds)
        self.holding.cancel()

    def test_a_frame_past_the_bound_is_refused(self):
        holding = Holding(self.clock, Logger, lambda: None, max_bytes=10)
        self.assertTrue(holding.hold("a", b"x" * 6))
        self.assertFalse(holding.hold("b", b"x" * 6))
        self.assertEqual(holding.drop_all(), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
