"""
Tests for L{tsagg.files}: the names of the layout, and opening files safely
under the data directory.
"""

import os

from twisted.trial import unittest

from tsagg.files import (Acquisition, DataDirectory, OutsideDataDir,
                         sync_and_close)


class DataDirectoryTests(unittest.TestCase):

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.dir = DataDirectory(self.root)
        self.acq = Acquisition("1700000000", "crate1slot2", 1700000000)

    def open(self):
        f = self.dir.open_next(self.acq, 0.0)
        self.addCleanup(os.close, f.fd)
        return f

    def test_names_follow_the_layout(self):
        f = self.open()
        self.assertEqual(f.relative, "17000/crate1slot2/1700000000_000.g3")
        self.assertEqual(f.path, os.path.join(self.root, f.relative))
        self.assertEqual(self.open().relative,
                         "17000/crate1slot2/1700000000_001.g3")

    def test_a_number_taken_is_skipped_never_overwritten(self):
        os.makedirs(os.path.join(self.root, "17000", "crate1slot2"))
        taken = os.path.join(self.root, "17000/crate1slot2/1700000000_000.g3")
        with open(taken, "wb") as out:
            out.write(b"earlier run")
        f = self.open()
        self.assertEqual(f.index, 1)
        with open(taken, "rb") as f_in:
            self.assertEqual(f_in.read(), b"earlier run")

    def test_a_planted_symlink_is_refused(self):
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        os.symlink(elsewhere, os.path.join(self.root, "17000"))
        self.assertRaises(OutsideDataDir, self.dir.open_next, self.acq, 0.0)
        self.assertEqual(os.listdir(elsewhere), [])

    def test_a_file_moved_away_is_no_longer_in_place(self):
        f = self.open()
        self.assertTrue(self.dir.still_in_place(f))
        os.rename(f.path, f.path + ".moved")
        self.assertFalse(self.dir.still_in_place(f))


class SyncAndCloseTests(unittest.TestCase):

    def test_blocks_reserved_past_the_end_are_given_back(self):
        path = self.mktemp()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"x" * 100)
        os.posix_fallocate(fd, 100, 1 << 20)
        self.assertIsNone(sync_and_close(fd, fsync=True, size=100))
        self.assertEqual(os.path.getsize(path), 100)
        self.assertLess(os.stat(path).st_blocks * 512, 1 << 20)

    def test_errors_are_returned_and_the_file_closed_all_the_same(self):
        fd = os.open(self.mktemp(), os.O_WRONLY | os.O_CREAT)
        error = sync_and_close(fd, fsync=True, size=-1)
        self.assertIsInstance(error, OSError)
        self.assertRaises(OSError, os.fstat, fd)
