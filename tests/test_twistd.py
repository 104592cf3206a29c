"""
The real thing: ``twistd -n tsagg`` and ``tsagg-sim`` as processes, stopped
with a signal in the middle of a stream.
"""

import os
import re
import signal
import sys
import time

from twisted.trial import unittest

from tsagg.frames import load_frame

from tests.test_integration import free_port
from tests.util import (files_and_frames, log_of, poll_until,
                        recorded_files, spawn, types_in)


def twistd_command():
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c",
            "import sys; from twisted.scripts.twistd import run; run()"]


class TwistdTests(unittest.TestCase):

    def spawn(self, argv, log):
        return spawn(self, argv, log)

    def wait_for(self, predicate, timeout, what):
        poll_until(self, predicate, timeout, what)

    def stop_mid_stream(self, sig, lead_in=5):
        port = free_port()
        data = os.path.abspath(self.mktemp())
        logs = os.path.abspath(self.mktemp())
        os.makedirs(logs)
        sim = self.spawn(
            [sys.executable, "-m", "tsagg.simulator", "--port", str(port),
             "--channels", "200", "--sample-rate", "2000",
             "--frame-rate", "20", "--duration", "30",
             "--lead-in", str(lead_in)],
            os.path.join(logs, "sim.log"))
        # twistd starts once the sender listens, so that its first attempt
        # connects (a refused one is retried only after 1.5-2.5 s), and must
        # be connected before the session's first frame: a receiver that
        # joins later gets the cached metadata but not the Scan frames sent
        # before it came.
        self.wait_for(lambda: "Listening on port" in log_of(sim), 30,
                      "the sender to listen")
        listening = time.monotonic()
        tw_log = os.path.join(logs, "twistd.log")
        tw = self.spawn(
            twistd_command() + ["-n", "--pidfile=", "--logfile=-", "tsagg",
                                "--address", "127.0.0.1", "--port",
                                str(port), "--data-dir", data,
                                "--create-data-dir",
                                "--time-per-file", "1"], tw_log)
        self.wait_for(lambda: "Connected to" in log_of(tw), 30,
                      "twistd to connect")
        self.assertLess(time.monotonic() - listening, lead_in - 0.5,
                        "twistd connected too late for the session's start")
        self.wait_for(lambda: len(recorded_files(data)) >= 3, 30,
                      "three files")
        start = time.monotonic()
        tw.send_signal(sig)
        tw.wait(timeout=10)
        elapsed = time.monotonic() - start
        sim.kill()
        return data, log_of(tw), elapsed

    def check_files(self, data, log):
        files = files_and_frames(data)
        self.assertGreaterEqual(len(files), 3)
        nums = []
        for path, raws in files:
            self.assertRegex(path, r"^\d{5}/crate1slot2/\d{10}_\d{3}\.g3$")
            self.assertEqual(types_in(raws)[:2], "OW")
            nums += [load_frame(r)["frame_num"] for r in raws
                     if types_in([r]) == "S"]
        # Every Scan frame once and in order, from the first of the session.
        self.assertEqual(nums, list(range(2, 2 + len(nums))))
        last = os.path.join(data, files[-1][0])
        self.assertRegex(log, re.compile(r"Closed %s \((stop|disconnect)\)"
                                         % re.escape(last)))
        self.assertIn("Recording stopped", log)
        self.assertIn("Server Shut Down", log)

    def test_sigterm_mid_stream(self):
        data, log, elapsed = self.stop_mid_stream(signal.SIGTERM)
        # A guard against hanging; the benchmark measures the latency.
        self.assertLess(elapsed, 5.0)
        self.check_files(data, log)

    def test_sigint_mid_stream(self):
        data, log, elapsed = self.stop_mid_stream(signal.SIGINT)
        self.assertLess(elapsed, 5.0)
        self.check_files(data, log)

    def test_sighup_mid_stream(self):
        # The terminal or ssh session of `twistd -n` closes.
        data, log, elapsed = self.stop_mid_stream(signal.SIGHUP)
        self.assertLess(elapsed, 5.0)
        self.assertIn("Received SIGHUP", log)
        self.check_files(data, log)
