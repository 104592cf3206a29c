"""
Tests for L{tsagg.writepath}: the write queue in slices, and the sync off
the reactor.
"""

import errno
import os

from twisted.trial import unittest

from tsagg.files import Acquisition, DataDirectory
from tsagg.rules import Plan
from tsagg.writepath import REPLAYED, Syncer, WriteQueue

from tests import frames as F


def plan_of(code):
    """
    The plan of a frame written to the open file, as the rules make it.
    """
    plan = Plan(code)
    plan.metadata = code not in "ST"
    plan.plain_data = not plan.metadata
    return plan


class WriteQueueTests(unittest.TestCase):

    def setUp(self):
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        self.file = DataDirectory(root).open_next(
            Acquisition("1700000000", "s", None), 0.0)
        self.addCleanup(os.close, self.file.fd)
        self.metadata = []
        self.queue = WriteQueue(lambda raw, plan: self.metadata.append(raw))

    def contents(self):
        with open(self.file.path, "rb") as f:
            return f.read()

    def test_a_budget_writes_part_of_a_frame_and_the_rest_follows(self):
        raws = [F.raw(F.scan(n)) for n in (2, 3)]
        for raw in raws:
            self.queue.push(raw, object(), plan_of("S"))
        self.assertIsNone(self.queue.write(self.file, budget=100))
        self.assertEqual(self.file.partial, 100)
        self.assertEqual(self.file.size, 0)
        self.assertIsNone(self.queue.write(self.file))
        self.assertEqual(self.contents(), b"".join(raws))
        self.assertEqual((self.file.frames, self.file.scan_frames), (2, 2))
        self.assertEqual(self.queue.frames_written, 2)

    def test_replayed_metadata_is_written_but_not_counted_as_received(self):
        obs = F.raw(F.observation())
        self.queue.push(obs, REPLAYED)
        self.queue.push(F.raw(F.scan(2)), object(), plan_of("S"))
        self.queue.write(self.file)
        self.assertEqual(self.queue.frames_written, 1)
        self.assertEqual(self.file.frames, 2)
        self.assertEqual(self.metadata, [])

    def test_metadata_is_reported_once_whole_on_disk(self):
        wir = F.raw(F.wiring())
        self.queue.push(wir, object(), plan_of("W"))
        self.queue.write(self.file, budget=10)
        self.assertEqual(self.metadata, [])
        self.queue.write(self.file)
        self.assertEqual(self.metadata, [wir])

    def test_a_failed_write_cuts_the_partial_frame(self):
        first, second = F.raw(F.scan(2)), F.raw(F.scan(3))
        replayed = F.raw(F.observation())
        self.queue.push(first, "a", plan_of("S"))
        self.queue.push(second, "b", plan_of("S"))
        self.queue.write(self.file, budget=len(first) + 10)
        real = os.writev

        def failing(fd, views):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.patch(os, "writev", failing)
        self.queue.push(replayed, REPLAYED)
        error = self.queue.write(self.file)
        self.patch(os, "writev", real)
        self.assertEqual(error.errno, errno.ENOSPC)
        self.assertEqual(self.contents(), first)
        self.assertEqual(self.queue.take_failed(), [("b", second)])
        self.assertFalse(self.queue)


class SyncerTests(unittest.TestCase):

    def test_release_reports_the_time_of_the_call_itself(self):
        reports = []
        path = self.mktemp()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)

        class F:
            pass
        f = F()
        f.fd, f.path, f.size, f.reserved, f.background = fd, path, 0, False, None
        done = []
        Syncer(None, None, lambda *a: reports.append(a)).release(
            f, True, lambda error, took: done.append((error, took)))
        [(error, took)] = done
        self.assertIsNone(error)
        self.assertLess(took, 5)
        self.assertRaises(OSError, os.fstat, fd)
