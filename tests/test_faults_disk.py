"""
Disk faults while a real socket streams into a L{RecordingService}: a real
tmpfs that fills up (ENOSPC), permission denied (EACCES, injected: root
ignores file modes), the data directory removed or moved aside, and a file
system that stalls (injected slow writes).
"""

import errno
import os
import shutil
import subprocess
import time

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest

from tsagg.writer import RotatingWriter

from tests import faultlog
from tests import frames as F
from tests.faultutil import (LogCapture, Sandbox, check_data_dir,
                             make_service, scans)
from tests.test_service import PeerFactory, wait_until

MEMORY_BOUND = 64 << 20


def mount_tmpfs(testcase, path, size):
    """
    Mount a tmpfs of C{size} at C{path} for the rest of the test, or skip
    the test where mounting is not allowed.
    """
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size,
                             "tmpfs", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise unittest.SkipTest("cannot mount a tmpfs here: %s"
                                % result.stdout.decode().strip())

    def unmount():
        if subprocess.run(["umount", path]).returncode != 0:
            subprocess.run(["umount", "-l", path])
    testcase.addCleanup(unmount)


def big_scans(first, count, session_id=1700000000):
    return [F.raw(F.scan(first + n, session_id=session_id, channels=16,
                         samples=1000, seed=first + n)) for n in range(count)]


class DiskFaultTestCase(unittest.TestCase):

    @defer.inlineCallbacks
    def start(self, data_dir=None, **writer_kw):
        self.box = Sandbox(self)
        if data_dir is not None:
            self.box.data = data_dir
        self.log = LogCapture(self)
        self.peer = PeerFactory()
        self.port = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(self.peer)
        self.addCleanup(self.port.stopListening)
        writer_kw.setdefault("retry_interval", 0.05)
        writer_kw.setdefault("fsync", True)
        self.writer = RotatingWriter(self.box.data, reactor,
                                     time_per_file=3600, gap_timeout=3600,
                                     **writer_kw)
        self.service = make_service(self, self.port.getHost().port,
                                    self.box.data, writer=self.writer)
        self.box.seal()
        self.service.startService()
        conn = yield self.peer.next_connection()
        return conn

    def finish_record(self, fault, sent, peak, data_dirs=None):
        files, torn = [], []
        for d in data_dirs or [self.box.data]:
            f, t = check_data_dir(d)
            files += f
            torn += t
        kept = [r for _, raws in files for r in scans(raws)]
        outside = self.box.outside() if data_dirs is None else 0
        faultlog.record(fault, tried=1, kept=len(kept),
                        expected=len(scans(sent)), torn=len(torn),
                        outside=outside, peak_bytes=peak.peak,
                        peak_kind="RSS growth")
        self.assertEqual(torn, [])
        self.assertEqual(sorted(kept), sorted(scans(sent)))
        self.assertEqual(len(kept), len(scans(sent)))
        if peak.peak is not None:
            self.assertLess(peak.peak, MEMORY_BOUND)
        return files


class NoSpaceTests(DiskFaultTestCase):
    """
    A real tmpfs of 2 MiB fills up in the middle of a frame.
    """

    @defer.inlineCallbacks
    def test_full_disk_pauses_reports_and_recovers(self):
        root = os.path.abspath(self.mktemp())
        mount = os.path.join(root, "mnt")
        mount_tmpfs(self, mount, "2m")
        sent = [F.raw(F.observation())] + big_scans(2, 60)
        with faultlog.PeakRSS() as peak:
            # No floor: the kernel's own ENOSPC, in the middle of a frame.
            conn = yield self.start(data_dir=os.path.join(mount, "data"),
                                    min_free=0)
            conn.transport.write(b"".join(sent))
            yield wait_until(lambda: self.service.status["write_errors"] >= 1,
                             timeout=30)
            # Stuck, and not reading: the socket is paused while the disk is
            # full (the retries fail again and again).
            yield task.deferLater(reactor, 0.5, lambda: None)
            status = self.service.status
            self.assertIn("No space left", status["last_error"])
            self.assertGreater(status["frames_held"], 0)
            self.assertLess(status["frames_written"], len(sent))
            received = status["bytes_received"]
            yield task.deferLater(reactor, 0.3, lambda: None)
            self.assertEqual(self.service.status["bytes_received"], received)
            self.assertLess(received, len(b"".join(sent)))
            # The disk comes back.
            subprocess.run(["mount", "-o", "remount,size=32m", mount],
                           check=True)
            yield wait_until(lambda: self.service.status["frames_written"]
                             >= len(sent), timeout=30)
            yield self.service.stopService()
        status = self.service.status
        self.assertEqual(status["frames_lost"], 0)
        self.assertTrue(self.log.matching("No space left"), self.log.events)
        files = self.finish_record("ENOSPC mid-frame on a real 2 MiB tmpfs, "
                                   "then space again", sent, peak)
        # One file up to the full disk, one after it: no empty or
        # metadata-only files from the failed retries.
        self.assertEqual(len(files), 2)
        self.assertEqual([p[-7:] for p, _ in files], ["_000.g3", "_001.g3"])
        self.assertEqual(self.box.outside(), 0)


class FailingOpener:
    """
    C{os.open} that fails with C{error} while C{failing} is set.
    """

    def __init__(self, error):
        self.failing = False
        self.error = error

    def __call__(self, path, flags, mode=0o777):
        if self.failing:
            raise OSError(self.error, os.strerror(self.error), path)
        return os.open(path, flags, mode)


class PermissionTests(DiskFaultTestCase):
    """
    Permission denied where the next file opens.  Root ignores file modes,
    so the error is injected through the writer's C{opener}.
    """

    @defer.inlineCallbacks
    def test_permission_denied_at_rotation_then_granted(self):
        opener = FailingOpener(errno.EACCES)
        sent = [F.raw(F.observation())] + big_scans(2, 10)
        with faultlog.PeakRSS() as peak:
            conn = yield self.start(opener=opener)
            conn.transport.write(b"".join(sent[:6]))
            yield wait_until(lambda: self.service.status["frames_written"]
                             == 6, timeout=30)
            opener.failing = True
            # A new session needs a new file, which cannot be made.
            more = big_scans(20, 4, session_id=1700000100)
            conn.transport.write(F.raw(F.flow(F.START)) + b"".join(more))
            sent += more
            yield wait_until(lambda: self.service.status["write_errors"] >= 1,
                             timeout=30)
            self.assertIn("Permission denied",
                          self.service.status["last_error"])
            yield task.deferLater(reactor, 0.3, lambda: None)
            opener.failing = False
            conn.transport.write(b"".join(sent[6:11]))
            yield wait_until(lambda: self.service.status["frames_held"] == 0
                             and self.service.status["frames_written"]
                             == len(sent), timeout=30)
            yield self.service.stopService()
        self.assertEqual(self.service.status["frames_lost"], 0)
        self.finish_record("EACCES opening the next file (injected), then "
                           "granted", sent, peak)
        self.assertEqual(self.box.outside(), 0)


class VanishingDataDirTests(DiskFaultTestCase):
    """
    The data directory is deleted, or moved aside and made anew, while a
    file in it is open.
    """

    @defer.inlineCallbacks
    def record_around(self, sent, fault):
        """
        Stream the first four frames of C{sent}, and once they are written
        call C{fault}; then stream the rest and stop.

        @return: The L{faultlog.PeakRSS} of it all.
        """
        with faultlog.PeakRSS() as peak:
            conn = yield self.start()
            conn.transport.write(b"".join(sent[:4]))
            yield wait_until(lambda: self.service.status["frames_written"]
                             == 4, timeout=30)
            fault()
            conn.transport.write(b"".join(sent[4:]))
            yield wait_until(lambda: self.service.status["frames_received"]
                             == len(sent), timeout=30)
            yield self.service.stopService()
        return peak

    @defer.inlineCallbacks
    def test_data_dir_removed_while_recording(self):
        sent = [F.raw(F.observation())] + big_scans(2, 10)
        peak = yield self.record_around(
            sent, lambda: shutil.rmtree(self.box.data))
        status = self.service.status
        self.assertEqual(status["files_vanished"], 1)
        self.assertIn("removed or replaced", status["last_error"])
        # What was deleted is gone; everything after it is on disk, in a new
        # file that starts with the metadata.
        files, torn = check_data_dir(self.box.data)
        self.assertEqual(torn, [])
        [(path, raws)] = files
        self.assertEqual(raws, [sent[0]] + sent[4:])
        faultlog.record("data dir deleted while a file is open", tried=1,
                        kept=len(scans(raws)), expected=len(scans(sent[4:])),
                        torn=0, outside=self.box.outside(),
                        peak_bytes=peak.peak, peak_kind="RSS growth",
                        note="frames before the deletion went with it")
        self.assertEqual(self.box.outside(), 0)

    @defer.inlineCallbacks
    def test_data_dir_moved_aside_while_recording(self):
        sent = [F.raw(F.observation())] + big_scans(2, 10)

        def move_aside():
            # The data dir is made by start(), inside record_around.
            os.rename(self.box.data, self.box.data + ".old")
            os.makedirs(self.box.data)
        peak = yield self.record_around(sent, move_aside)
        aside = self.box.data + ".old"
        self.assertEqual(self.service.status["files_vanished"], 1)
        files = self.finish_record("data dir moved aside and made anew while "
                                   "a file is open", sent, peak,
                                   data_dirs=[aside, self.box.data])
        [(_, before)], [(_, after)] = (check_data_dir(aside)[0],
                                       check_data_dir(self.box.data)[0])
        self.assertEqual(before, sent[:4])
        self.assertEqual(after, [sent[0]] + sent[4:])
        self.assertEqual(len(files), 2)


class StallTests(DiskFaultTestCase):
    """
    A file system that stalls: every write to a recorded file sleeps.
    Writes run in the reactor, so the reactor does not read the socket
    meanwhile; the stall is reported once the write returns, and nothing is
    lost.
    """

    @defer.inlineCallbacks
    def test_stalling_disk_is_reported_and_loses_nothing(self):
        real_writev = os.writev
        stalls = []

        def stalling_writev(fd, buffers):
            try:
                target = os.readlink("/proc/self/fd/%d" % fd)
            except OSError:
                target = ""
            if target.endswith(".g3") and len(stalls) < 3:
                stalls.append(fd)
                time.sleep(0.4)
            return real_writev(fd, buffers)
        self.patch(os, "writev", stalling_writev)
        sent = [F.raw(F.observation())] + big_scans(2, 20)
        with faultlog.PeakRSS() as peak:
            conn = yield self.start(slow_write=0.3)
            conn.transport.write(b"".join(sent))
            yield wait_until(lambda: self.service.status["frames_written"]
                             == len(sent), timeout=30)
            yield self.service.stopService()
        status = self.service.status
        self.assertEqual(status["slow_writes"], 3)
        self.assertGreaterEqual(status["slowest_write"], 0.3)
        self.assertEqual(len(self.log.matching("The disk stalled")), 3)
        self.finish_record("stalling file system (3 writes of 0.4 s, "
                           "injected)", sent, peak)
