"""
Faults seen from outside: ``twistd tsagg`` as a process (through
L{tests.faulty_twistd}, which can slow its disk and log its fsyncs), fed by
a sender process.  Backpressure against a disk slower than the stream, with
the peak memory of the process measured; SIGTERM and SIGINT in the middle
of a frame, under full load.
"""

import os
import signal
import sys
import time

from twisted.trial import unittest

from tsagg.scan import TORN, scan_file

from tests import faultlog
from tests import frames as F
from tests.faultutil import (Sandbox, check_data_dir, quiet_port, scans,
                             spawn_sender)
from tests.util import (ROOT, log_of, poll_until, recorded_files, repo_env,
                        spawn, spawn_sim)

WRAPPER = os.path.join(ROOT, "tests", "faulty_twistd.py")


class ProcessFaultTestCase(unittest.TestCase):

    def spawn_tsagg(self, port, data, time_per_file=600, **env):
        argv = [sys.executable, WRAPPER, "-n", "--pidfile=", "--logfile=-",
                "tsagg", "--address", "127.0.0.1", "--port", str(port),
                "--data-dir", data, "--create-data-dir",
                "--time-per-file", str(time_per_file)]
        return spawn(self, argv, os.path.abspath(self.mktemp()),
                     env=repo_env(**env))

    def wait_for(self, predicate, timeout, what):
        poll_until(self, predicate, timeout, what)


def big_stream(count, distinct=10, channels=250, samples=1000):
    """
    O, W, then C{count} Scan frames of about 1 MB, C{distinct} of them
    different and repeated.
    """
    head = [F.raw(F.observation()), F.raw(F.wiring())]
    body = [F.raw(F.scan(2 + n, channels=channels, samples=samples, seed=n))
            for n in range(distinct)]
    return head + [body[n % distinct] for n in range(count)]


class BackpressureTests(ProcessFaultTestCase):
    """
    A disk four times slower than the stream: tsagg stops reading the socket
    while it writes (the writes block its reactor), so the sender waits
    instead of tsagg's memory growing.
    """

    #: The bound the design states: one frame being written, one frame
    #: being received, one socket read, and the interpreter's own slack.
    BOUND = 48 << 20

    def test_slow_disk_bounds_memory(self):
        box = Sandbox(self)
        raws = big_stream(96)
        total = sum(len(r) for r in raws)
        stream = box.write_input("stream.g3", b"".join(raws))
        port = quiet_port()
        box.seal()
        tsagg = self.spawn_tsagg(port, box.data,
                                 TSAGG_TEST_WRITE_RATE=25 * 2 ** 20)
        self.wait_for(lambda: "Connecting to" in log_of(tsagg), 30,
                      "tsagg to start")
        time.sleep(0.5)
        base = faultlog.vm_hwm(tsagg.pid)
        sender = spawn_sender(self, port, stream, then="close")
        self.wait_for(lambda: sender.poll() is not None, 120,
                      "the sender to hand over the whole stream")
        self.wait_for(lambda: "(disconnect)" in log_of(tsagg), 120,
                      "tsagg to write every frame")
        peak = faultlog.vm_hwm(tsagg.pid) - base
        tsagg.send_signal(signal.SIGTERM)
        tsagg.wait(timeout=30)
        files, torn = check_data_dir(box.data)
        kept = [r for _, rs in files for r in rs]
        faultlog.record("disk 4x slower than the stream (%d MB through "
                        "25 MB/s writes)" % (total // 10 ** 6), tried=1,
                        kept=len(scans(kept)), expected=len(scans(raws)),
                        torn=len(torn), outside=box.outside(),
                        peak_bytes=peak, peak_kind="peak RSS growth of "
                        "twistd")
        self.assertEqual(torn, [])
        self.assertEqual(kept, raws)
        self.assertEqual(box.outside(), 0)
        self.assertLess(peak, self.BOUND, "peak RSS grew by %d bytes for a "
                        "stream of %d" % (peak, total))

    test_slow_disk_bounds_memory.timeout = 300


class ShutdownTests(ProcessFaultTestCase):
    """
    A signal in the middle of a frame: the last file ends at a frame
    boundary and every file was fsynced before the process exited.
    """

    def check(self, fault, tsagg, box, fsync_log, sent_scans, mid_frame,
              files=2):
        tsagg.wait(timeout=30)
        log = log_of(tsagg)
        found, torn = check_data_dir(box.data)
        with open(fsync_log) as f:
            synced = set(f.read().split())
        kept = [r for _, rs in found for r in scans(rs)]
        faultlog.record(fault, tried=1, kept=len(kept),
                        expected=len(kept) if sent_scans is None
                        else len(sent_scans), torn=len(torn),
                        outside=box.outside(),
                        note="every file fsynced before exit")
        self.assertEqual(torn, [])
        self.assertGreaterEqual(len(found), files)
        self.assertEqual({os.path.join(box.data, p) for p, _ in found},
                         synced)
        self.assertIn("Recording stopped", log)
        self.assertIn("Server Shut Down", log)
        if mid_frame:
            self.assertIn("incomplete frame discarded", log)
        if sent_scans is not None:
            self.assertEqual(kept, sent_scans)
        self.assertEqual(box.outside(), 0)

    def test_sigterm_under_full_load(self):
        box = Sandbox(self)
        raws = big_stream(400, distinct=20)
        stream = box.write_input("stream.g3", b"".join(raws))
        fsync_log = os.path.abspath(self.mktemp())
        port = quiet_port()
        box.seal()
        sender = spawn_sender(self, port, stream, chunk=65536, pace=0.002)
        tsagg = self.spawn_tsagg(port, box.data, time_per_file=0.5,
                                 TSAGG_TEST_FSYNC_LOG=fsync_log)
        self.wait_for(lambda: log_of(tsagg).count("Opened") >= 3, 60,
                      "three files")
        self.assertIsNone(sender.poll(), "the stream ended too soon")
        tsagg.send_signal(signal.SIGTERM)
        self.check("SIGTERM to twistd tsagg under full load", tsagg, box,
                   fsync_log, None, mid_frame=False)

    def test_sigint_mid_frame(self):
        box = Sandbox(self)
        raws = big_stream(12)
        cut = sum(len(r) for r in raws[:-1]) + len(raws[-1]) // 2
        stream = box.write_input("stream.g3", b"".join(raws))
        fsync_log = os.path.abspath(self.mktemp())
        port = quiet_port()
        box.seal()
        spawn_sender(self, port, stream, cut=cut, then="hold")
        tsagg = self.spawn_tsagg(port, box.data, time_per_file=600,
                                 TSAGG_TEST_FSYNC_LOG=fsync_log)
        whole = sum(len(r) for r in raws[:-1])
        self.wait_for(lambda: sum(os.path.getsize(p) for p in
                                  recorded_files(box.data)) == whole, 60,
                      "every whole frame on disk")
        tsagg.send_signal(signal.SIGINT)
        self.check("SIGINT to twistd tsagg mid-frame", tsagg, box,
                   fsync_log, scans(raws[:-1]), mid_frame=True, files=1)


class KillTests(ProcessFaultTestCase):
    """
    kill -9 in the middle of a frame (as the OOM killer or a power cut would
    end it), then a restart: the torn tail is cut off at the next start,
    the file keeps every whole frame, and numbering goes on.
    """

    def test_kill_9_mid_frame_then_restart(self):
        box = Sandbox(self)
        port = quiet_port()
        box.seal()
        # spt3g's G3NetworkSender: frames of 2 MB, 5 a second.
        spawn_sim(self, port, os.path.abspath(self.mktemp()), channels=1000,
                  sample_rate=2500, frame_rate=5, duration=60, lead_in=2)
        # A disk of 8 MB/s: a frame takes a quarter of a second to write,
        # its bytes reaching the file a piece at a time, so the file is
        # mid-frame most of the time.
        first = self.spawn_tsagg(port, box.data,
                                 TSAGG_TEST_WRITE_RATE=8 * 2 ** 20)
        self.wait_for(lambda: len(recorded_files(box.data)) == 1
                      and scan_file(recorded_files(box.data)[0]).frames > 4,
                      60, "frames on disk")
        [path] = recorded_files(box.data)

        def torn():
            scan = scan_file(path)
            return scan.problem_kind == TORN and scan.good_bytes > 0
        self.wait_for(torn, 30, "a moment when the file ends mid-frame")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        before = scan_file(path)
        self.assertEqual(before.problem_kind, TORN)
        second = self.spawn_tsagg(port, box.data)
        self.wait_for(lambda: "Connected to" in log_of(second), 30,
                      "the restarted tsagg to connect")
        self.wait_for(lambda: len(recorded_files(box.data)) >= 2, 30,
                      "the next file")
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        log = log_of(second)
        relative = os.path.relpath(path, box.data)
        self.assertIn("Repaired %s" % (relative,), log)
        self.assertIn("cut %d bytes" % (before.size - before.good_bytes,),
                      log)
        files, torn_files = check_data_dir(box.data)
        faultlog.record("kill -9 of twistd tsagg mid-frame, then a restart",
                        tried=1, kept=before.types["S"],
                        expected=before.types["S"], torn=len(torn_files),
                        outside=box.outside(), note="the torn tail (%d "
                        "bytes) cut at the restart" % (before.size
                                                       - before.good_bytes))
        self.assertEqual(torn_files, [])
        names = [p for p, _ in files]
        self.assertEqual(names[0], relative)
        self.assertEqual(names[1], relative.replace("_000.g3", "_001.g3"))
        self.assertEqual(os.path.getsize(path), before.good_bytes)
        self.assertEqual(box.outside(), 0)

    test_kill_9_mid_frame_then_restart.timeout = 180
