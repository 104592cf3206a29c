"""
A session goes on across a broken connection and a restart of tsagg, as an
operator meets them: spt3g's G3NetworkSender in listen mode sending long
SMuRF sessions as smurf-streamer's SessionManager does (tests/so/sender.py's
long mode: 0.5 s Scan frames, a status diff a second, no ALIVE while data
flows), ``twistd tsagg --time-per-file 3`` connected through a relay
(tests/relay.py) that the test cuts, and tsagg stopped and started again.

What SO reads of the archive is checked in the SO venv by
tests/so/continuity.py (sotodlib's SmurfStatus and G3tSmurf); like
tests/test_so_readers.py, the module needs C{$TSAGG_SO_PYTHON} and is
skipped without it, unless C{$TSAGG_REQUIRE_SO} is set.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from twisted.trial import unittest

from tests import faultlog
from tests.test_integration import free_port
from tests.test_so_readers import SO_DIR, so_env, so_python
from tests.test_twistd import twistd_command
from tests.util import ROOT, log_of, poll_until, spawn

TIME_PER_FILE = 3
FRAME_PERIOD = 0.5
#: Seconds into a session at which the break comes.
BREAK_AT = 5.0
#: Seconds a cut lasts.
CUT = 0.3


class Run:
    """
    One run: the sender, the relay, each start of twistd tsagg, and at the
    end what tests/so/continuity.py found in the archive.

    @ivar where: Its directory: data, logs, reference archive, manifest.
    @ivar tsaggs: Every twistd process started, in order.
    @ivar report: The checker's report, once L{finish} has run.
    """

    def __init__(self, testcase, sessions):
        self.testcase = testcase
        self.python = so_python()
        self.sessions = sessions
        self.where = os.path.abspath(testcase.mktemp())
        self.data = os.path.join(self.where, "data")
        self.control = os.path.join(self.where, "control")
        self.logs = os.path.join(self.where, "logs")
        self.manifest_path = os.path.join(self.where, "manifest.json")
        for d in (self.control, self.logs):
            os.makedirs(d)
        self.tsaggs = []
        sender_port, self.port = free_port(), free_port()
        self.sender = spawn(
            testcase,
            [self.python, os.path.join(SO_DIR, "sender.py"),
             "--port", str(sender_port), "--control", self.control,
             "--sessions", str(sessions),
             "--frame-period", str(FRAME_PERIOD),
             "--reference", os.path.join(self.where, "reference"),
             "--meta", os.path.join(self.where, "smurf"),
             "--manifest", self.manifest_path,
             "--time-per-file", str(TIME_PER_FILE)],
            os.path.join(self.logs, "sender.log"), env=so_env())
        self.wait_for(self.sender, "Listening on port", 60)
        self.relay = spawn(
            testcase, [sys.executable, os.path.join(ROOT, "tests",
                                                    "relay.py"),
                       "--listen", str(self.port), "--to", str(sender_port)],
            os.path.join(self.logs, "relay.log"))
        self.wait_for(self.relay, "Relaying", 30)

    def wait_for(self, proc, text, timeout, count=1):
        poll_until(self.testcase,
                   lambda: log_of(proc).count(text) >= count
                   or proc.poll() is not None, timeout,
                   "%r in the log of %s" % (text, proc.args))
        if log_of(proc).count(text) < count:
            self.testcase.fail("%s ended: %s" % (proc.args,
                                                 log_of(proc)[-3000:]))

    @property
    def tsagg(self):
        return self.tsaggs[-1]

    def start_tsagg(self):
        """
        Start twistd tsagg through the relay; wait until it is connected.

        @return: When it was, by the wall clock (the sender's).
        """
        argv = twistd_command() + [
            "-n", "--pidfile=", "--logfile=-", "tsagg",
            "--address", "127.0.0.1", "--port", str(self.port),
            "--data-dir", self.data, "--create-data-dir",
            "--time-per-file", str(TIME_PER_FILE), "--no-fsync"]
        log = os.path.join(self.logs, "twistd-%d.log" % (len(self.tsaggs) + 1))
        self.tsaggs.append(spawn(self.testcase, argv, log))
        self.wait_for(self.tsagg, "Connected to", 30)
        return time.time()

    def stop_tsagg(self, signum=signal.SIGTERM):
        """
        @return: When the signal was sent.
        """
        sent = time.time()
        self.tsagg.send_signal(signum)
        self.tsagg.wait(timeout=30)
        return sent

    def start_session(self, n):
        open(os.path.join(self.control, "start%d" % n), "w").close()
        self.wait_for(self.sender, "Session ", 30, count=n)

    def stop_session(self, n):
        open(os.path.join(self.control, "stop%d" % n), "w").close()
        self.wait_for(self.sender, "Sent session", 30, count=n)

    def cut(self, seconds):
        """
        Cut the relay for C{seconds}.

        @return: When it was cut and when restored.
        """
        cut = time.time()
        self.relay.send_signal(signal.SIGUSR1)
        self.wait_for(self.relay, "Cut:", 10)
        time.sleep(max(0.0, cut + seconds - time.time()))
        restored = time.time()
        self.relay.send_signal(signal.SIGUSR2)
        self.wait_for(self.relay, "Restored", 10)
        return cut, restored

    def finish(self, joined=()):
        """
        Let the sender end, stop tsagg, and check the archive.
        """
        try:
            self.sender.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.testcase.fail("the sender did not finish: %s"
                               % log_of(self.sender)[-3000:])
        if self.tsagg.poll() is None:
            self.stop_tsagg()
        with open(self.manifest_path) as f:
            self.manifest = json.load(f)
        argv = [self.python, os.path.join(SO_DIR, "continuity.py"),
                "--archive", self.data, "--manifest", self.manifest_path,
                "--work", os.path.join(self.where, "g3tsmurf")]
        if joined:
            argv += ["--joined"] + [str(s) for s in joined]
        checked = subprocess.run(argv, capture_output=True, env=so_env(),
                                 timeout=180)
        with open(os.path.join(self.logs, "check.log"), "wb") as f:
            f.write(checked.stderr)
        with open(os.path.join(self.logs, "report.json"), "wb") as f:
            f.write(checked.stdout)
        try:
            self.report = json.loads(checked.stdout)
        except ValueError:
            self.testcase.fail("the checker wrote no report (exit %d): %s" % (
                checked.returncode,
                checked.stderr.decode("utf-8", "replace")[-3000:]))

    def started(self):
        """
        The ids of the sessions the sender has started so far.
        """
        return [int(m) for m in re.findall(r"^Session (\d+) started$",
                                           log_of(self.sender), re.M)]

    def session_ids(self):
        return [s["session_id"] for s in self.manifest["sessions"]]

    def session(self, n):
        return self.manifest["sessions"][n - 1]

    def lost(self, n, kind=None):
        """
        The frames of session C{n} that never reached the archive.
        """
        return [f for f in self.report["lost"][str(self.session(n)[
            "session_id"])] if kind is None or f["type"] == kind]

    def scans(self, n):
        return sum(1 for f in self.session(n)["frames"] if f["type"] == "S")

    def log_lines(self, proc):
        return log_of(proc).splitlines()


class ContinuityTestCase(unittest.TestCase):

    timeout = 300

    def setUp(self):
        if so_python() is None:
            reason = ("SO's readers are not installed: `make test-so` builds "
                      "their venv (.venv-so) and sets TSAGG_SO_PYTHON")
            if os.environ.get("TSAGG_REQUIRE_SO"):
                self.fail(reason)
            raise unittest.SkipTest(reason)

    def assertArchiveWhole(self, run):
        """
        Every check of tests/so/continuity.py passed: one complete
        observation per session, the channel count in every file with data,
        every such file beginning with the Observation and the status
        chain as sent, no frame twice.
        """
        for prefix in ("files.layout", "observation.one", "files.head",
                       "frames.once", "frames.exact"):
            self.assertTrue([c for c in run.report["checks"]
                             if c["check"] == prefix],
                            "the checker ran no %s check" % prefix)
        if run.report["failures"]:
            self.fail("%d failed:\n%s\n(the archive and logs are under %s)"
                      % (len(run.report["failures"]),
                         "\n".join(run.report["failures"]), run.where))

    def assertLostOnlyBetween(self, run, n, start, end):
        """
        Session C{n} lost no frame sent outside C{start}..C{end}.
        """
        outside = [f for f in run.lost(n)
                   if not start <= f["sent"] <= end]
        self.assertEqual(outside, [], "frames lost outside the window "
                         "%.2f..%.2f (archive under %s)"
                         % (start, end, run.where))

    def assertNoSessionStarted(self, lines, session_id):
        started = [line for line in lines
                   if re.search(r"Session %d of \S+ started" % session_id,
                                line)]
        self.assertEqual(started, [], "a session that went on is said to "
                         "have started again")

    def record(self, run, fault, n, note):
        faultlog.record(fault, 1, run.scans(n) - len(run.lost(n, "S")),
                        run.scans(n), note=note)


class BreakTests(ContinuityTestCase):
    """
    A connection cut 5 s into a session and restored 0.3 s later.
    """

    def test_connection_cut_mid_session(self):
        run = Run(self, sessions=2)
        run.start_tsagg()
        run.start_session(1)
        time.sleep(BREAK_AT)
        cut, restored = run.cut(CUT)
        time.sleep(2 * TIME_PER_FILE)
        run.stop_session(1)
        time.sleep(1.5)
        run.start_session(2)
        time.sleep(2 * TIME_PER_FILE)
        run.stop_session(2)
        run.finish()
        first, second = run.session_ids()
        self.record(run, "session continuity: connection cut for 0.3 s, 5 s "
                    "into a session", 1,
                    "%d Scan frames of 0.5 s lost in the break"
                    % len(run.lost(1, "S")))

        self.assertArchiveWhole(run)
        self.assertLessEqual(len(run.lost(1, "S")), 2, run.lost(1))
        self.assertLostOnlyBetween(run, 1, cut - FRAME_PERIOD,
                                   restored + 2 * FRAME_PERIOD)
        self.assertEqual(run.lost(2), [])

        # From the first connection to the start of the second session,
        # the connection's lines are the pair of the break.
        lines = run.log_lines(run.tsagg)
        address = "127.0.0.1:%d" % run.port
        connected = next(i for i, line in enumerate(lines)
                         if "Connected to %s" % address in line)
        second_started = [i for i, line in enumerate(lines)
                          if re.search(r"Session %d of \S+ started" % second,
                                       line)]
        self.assertEqual(len(second_started), 1)
        after = [line for line in lines[connected + 1:second_started[0]]
                 if address in line]
        self.assertEqual(len(after), 2, after)
        self.assertRegex(after[0], r"Connection to %s lost during session "
                         r"%d: .*; next try in 0\.1 s$" % (
                             re.escape(address), first))
        self.assertRegex(after[1], r"Connection to %s back after [\d.]+ s; "
                         r"session %d goes on; \d+ frames? missed$" % (
                             re.escape(address), first))
        lost_at = next(i for i, line in enumerate(lines)
                       if "lost during session" in line)
        self.assertNoSessionStarted(lines[lost_at:], first)


class RestartTests(ContinuityTestCase):
    """
    tsagg stopped 5 s into a session and started again.
    """

    def restart(self, signum, name):
        run = Run(self, sessions=1)
        run.start_tsagg()
        run.start_session(1)
        time.sleep(BREAK_AT)
        down = run.stop_tsagg(signum)
        up = run.start_tsagg()
        time.sleep(2 * TIME_PER_FILE)
        run.stop_session(1)
        run.finish()
        [session_id] = run.session_ids()
        self.record(run, "session continuity: tsagg restarted (%s) 5 s into "
                    "a session" % name, 1,
                    "%d Scan frames lost while no tsagg ran (%.1f s)"
                    % (len(run.lost(1, "S")), up - down))

        self.assertArchiveWhole(run)
        # The frames in flight when it stopped, and those sent until the
        # sender took the new connection (at its next frame), may be lost.
        self.assertLostOnlyBetween(run, 1, down - FRAME_PERIOD,
                                   up + 2 * FRAME_PERIOD)
        self.assertNoSessionStarted(run.log_lines(run.tsagg), session_id)

    def test_sigterm_mid_session(self):
        self.restart(signal.SIGTERM, "SIGTERM")

    def test_kill_9_mid_session(self):
        self.restart(signal.SIGKILL, "kill -9")


class JoinTests(ContinuityTestCase):
    """
    tsagg first started 5 s into a session, with nothing of it on disk.
    """

    def test_first_start_mid_session(self):
        run = Run(self, sessions=2)
        run.start_session(1)
        time.sleep(BREAK_AT)
        up = run.start_tsagg()
        time.sleep(2 * TIME_PER_FILE)
        run.stop_session(1)
        time.sleep(1.5)
        run.start_session(2)
        time.sleep(2 * TIME_PER_FILE)
        run.stop_session(2)
        joined, second = run.started()
        run.finish(joined=[joined])
        self.record(run, "session continuity: first start 5 s into a "
                    "session", 2, "the joined session's files lack its "
                    "status dump, as expected")

        self.assertArchiveWhole(run)
        self.assertLostOnlyBetween(run, 1, 0, up + 2 * FRAME_PERIOD)
        self.assertEqual(run.lost(2), [])
        said = [line for line in run.log_lines(run.tsagg)
                if "joined session %d" % joined in line.lower()
                and "midway" in line]
        self.assertEqual(len(said), 1, "the midway join is said once in the "
                         "log")
