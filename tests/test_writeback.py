"""
Tests for L{tsagg.writeback}.
"""

import ctypes
import errno
import os

from twisted.trial import unittest

from tsagg import writeback


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
