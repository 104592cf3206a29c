"""
The real thing: ``twistd -n tsagg`` and ``tsagg-sim`` as processes, stopped
with a signal in the middle of a stream, or with the wall clock of twistd
stepped an hour.
"""

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime

from twisted.trial import unittest

from tsagg.frames import load_frame

from tests.test_integration import free_port
from tests.util import (ROOT, files_and_frames, log_of, poll_until,
                        recorded_files, repo_env, spawn, spawn_sim, types_in,
                        WallClock)


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
        # twistd starts once the sender listens, so that its first attempt
        # connects (a refused one is retried only after 1.5-2.5 s), and must
        # be connected before the session's first frame: a receiver that
        # joins later gets the cached metadata but not the Scan frames sent
        # before it came.
        sim = spawn_sim(self, port, os.path.join(logs, "sim.log"),
                        channels=200, sample_rate=2000, frame_rate=20,
                        duration=30, lead_in=lead_in)
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
        self.assertRegex(log, re.compile(r"Closed %s \((stop|disconnect)\)"
                                         % re.escape(files[-1][0])))
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


class FailFastTests(unittest.TestCase):

    def test_a_missing_data_dir_ends_twistd_at_once(self):
        data = os.path.abspath(self.mktemp())
        port = free_port()
        result = subprocess.run(
            twistd_command() + ["-n", "--pidfile=", "--logfile=-", "tsagg",
                                "--address", "127.0.0.1", "--port", str(port),
                                "--data-dir", data],
            cwd=ROOT, env=repo_env(), capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        lines = result.stderr.decode().strip().splitlines()
        self.assertEqual(lines, ["tsagg: the data directory %s does not "
                                 "exist or is not a directory" % (data,)])
        self.assertNotIn(b"Connect", result.stdout)
        self.assertFalse(os.path.exists(data))


class WallClockStepTests(unittest.TestCase):
    """
    C{twistd -n tsagg --time-per-file 3} under libfaketime, its wall clock
    stepped an hour back or forward in the middle of a stream: files still
    rotate every 3 s, and the step ends no acquisition and drops no
    connection.
    """

    frame_rate = 20

    def record_across_a_step(self, offset):
        """
        Record until the second file is open, step the wall clock of twistd
        by C{offset}, and record until the fourth is open.

        @return: The data directory, the log of twistd, and the seconds
            from the step to the fourth file.
        """
        wall = WallClock(self)
        port = free_port()
        data = os.path.abspath(self.mktemp())
        logs = os.path.abspath(self.mktemp())
        os.makedirs(logs)
        sim = spawn_sim(self, port, os.path.join(logs, "sim.log"),
                        channels=16, frame_rate=self.frame_rate, duration=30,
                        lead_in=3)
        tw = spawn(self, twistd_command() + [
            "-n", "--pidfile=", "--logfile=-", "tsagg", "--address",
            "127.0.0.1", "--port", str(port), "--data-dir", data,
            "--create-data-dir", "--time-per-file", "3", "--no-fsync"],
            os.path.join(logs, "twistd.log"), env=wall.env())
        poll_until(self, lambda: len(recorded_files(data)) >= 2, 30,
                   "the first rotation")
        wall.set(offset)
        stepped = time.monotonic()
        # Two rotations take 6 s; a clock that followed a step back would
        # keep the file open for an hour.
        poll_until(self, lambda: len(recorded_files(data)) >= 4, 9,
                   "two rotations after the step")
        elapsed = time.monotonic() - stepped
        tw.send_signal(signal.SIGTERM)
        tw.wait(timeout=10)
        sim.kill()
        return data, log_of(tw), elapsed

    def check_rotation(self, data, log, elapsed, step):
        # The step did happen in twistd: its log says so.
        stamps = [datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z").timestamp()
                  for t in re.findall(r"^(\S+) \[", log, re.MULTILINE)]
        self.assertLess(abs(stamps[-1] - stamps[0] - step), 60)
        self.assertGreater(elapsed, 5.0)
        files = files_and_frames(data)
        self.assertGreaterEqual(len(files), 4)
        scans = [[load_frame(r)["frame_num"] for r in raws
                  if types_in([r]) == "S"] for _, raws in files]
        # One acquisition, every Scan frame once and in order.
        self.assertEqual(len({os.path.basename(p).split("_")[0]
                              for p, _ in files}), 1)
        nums = sum(scans, [])
        self.assertEqual(nums, list(range(nums[0], nums[0] + len(nums))))
        # Every closed file holds 3 s of Scan frames.
        for (path, _), file_scans in zip(files[:3], scans):
            self.assertLess(abs(len(file_scans) - 3 * self.frame_rate), 5,
                            "%s holds %d Scan frames"
                            % (path, len(file_scans)))
        self.assertEqual(log.count("(rotation)"), len(files) - 1)
        self.assertNotIn("No data from", log)
        self.assertNotIn("(gap)", log)
        self.assertEqual(log.count("Connected to"), 1)

    def test_one_hour_back(self):
        self.check_rotation(*self.record_across_a_step("-1h"), step=-3600)

    def test_one_hour_forward(self):
        self.check_rotation(*self.record_across_a_step("+1h"), step=3600)
