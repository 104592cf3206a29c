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
from tests.util import files_and_frames


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

    def test_reserves_blocks_ahead_without_changing_the_size(self):
        self.assertIsNotNone(writeback._fallocate,
                             "fallocate not found in the C library")
        ahead = 8 << 20
        self.assertIsNone(writeback.start_writeback(self.fd, 0, 65536, ahead))
        st = os.fstat(self.fd)
        self.assertEqual(st.st_size, 65536)
        self.assertGreaterEqual(st.st_blocks * 512, 65536 + ahead)

    def test_a_reservation_that_fails_is_no_error(self):
        def no_space(*args):
            ctypes.set_errno(errno.ENOSPC)
            return -1
        self.patch(writeback, "_fallocate", no_space)
        self.assertFalse(writeback.reserve(self.fd, 65536, 4096))
        self.assertIsNone(writeback.start_writeback(self.fd, 0, 65536, 4096))
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
            fsync=True, writeback_every=1 << 20,
            run_blocking=in_thread_pool(reactor))
        sent = [F.raw(F.scan(n, channels=100, samples=250, seed=n))
                for n in range(2, 202)]
        for start in range(0, len(sent), 5):
            # A reactor turn between batches lets write-outs (each first
            # reserving 2 MiB ahead) run beside the next writes.
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
