"""
tsagg's archive as SO reads it: SMuRF sessions from a real G3NetworkSender
recorded by ``twistd -n tsagg --time-per-file 3``, then read by sotodlib's
G3tSmurf and compared with a reference archive of the same frames written
by spt3g's own G3Writer; and the files handed to socs' suprsync database.

SO's readers live in a venv of their own (``make so-venv``: sotodlib pins
its own numpy and so3g), whose Python runs tests/so/sender.py,
tests/so/check.py and tests/so/suprsync_rows.py.  The test finds it through
C{$TSAGG_SO_PYTHON} and is skipped, saying why, without it, unless
C{$TSAGG_REQUIRE_SO} is set (``make test-so`` sets both).

One recording serves every test of the module: the first test to need it
makes it (about 30 s), the others read its report.
"""

import hashlib
import json
import os
import signal
import subprocess
import tempfile

from twisted.trial import unittest

from tests.test_integration import free_port
from tests.test_twistd import twistd_command
from tests.util import ROOT, log_of, poll_until, spawn

SO_DIR = os.path.join(ROOT, "tests", "so")
TIME_PER_FILE = 3
SUPRSYNC_ARCHIVE = "timestreams"


def so_python():
    """
    The SO venv's Python, or L{None}.
    """
    return os.environ.get("TSAGG_SO_PYTHON") or None


def so_env():
    """
    The environment of the SO venv's processes: without this tree on the
    path, so that nothing of tsagg's venv mixes with theirs.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Recording:
    """
    One recording of the sender's sessions by twistd tsagg, and the
    checker's report on it.

    @ivar data: tsagg's data directory.
    @ivar report: The checker's JSON report (see tests/so/check.py).
    @ivar suprsync_db: The suprsync database twistd was told to register
        files in, or L{None} when it has no such option.
    """

    def __init__(self, testcase, python, where):
        self.python = python
        self.where = where
        self.data = os.path.join(where, "data")
        self.manifest = os.path.join(where, "manifest.json")
        self.suprsync_db = None
        self.run(testcase)

    def run(self, testcase):
        where, python = self.where, self.python
        logs = os.path.join(where, "logs")
        os.makedirs(logs)
        port = free_port()
        go = os.path.join(where, "go")
        sender = spawn(
            testcase,
            [python, os.path.join(SO_DIR, "sender.py"), "--port", str(port),
             "--go-file", go, "--reference", os.path.join(where, "reference"),
             "--meta", os.path.join(where, "smurf"),
             "--manifest", self.manifest,
             "--time-per-file", str(TIME_PER_FILE)],
            os.path.join(logs, "sender.log"), env=so_env())
        # twistd starts once the sender listens, so that its first attempt
        # connects rather than waiting out a retry.
        poll_until(testcase, lambda: "Listening on port" in log_of(sender)
                   or sender.poll() is not None, 60, "the sender to listen")
        if sender.poll() is not None:
            testcase.fail("the sender ended: %s" % log_of(sender))

        argv = twistd_command() + [
            "-n", "--pidfile=", "--logfile=-", "tsagg",
            "--address", "127.0.0.1", "--port", str(port),
            "--data-dir", self.data, "--create-data-dir", "--time-per-file",
            str(TIME_PER_FILE)]
        self.suprsync_db = os.path.join(where, "suprsync.db")
        argv += ["--suprsync-db", self.suprsync_db,
                 "--suprsync-archive", SUPRSYNC_ARCHIVE]
        tsagg = spawn(testcase, argv, os.path.join(logs, "twistd.log"))
        poll_until(testcase, lambda: "Connected to" in log_of(tsagg)
                   or tsagg.poll() is not None, 30, "twistd to connect")
        if tsagg.poll() is not None:
            testcase.fail("twistd ended: %s" % log_of(tsagg))
        # The sessions start only now: every frame of them reaches tsagg.
        open(go, "w").close()
        try:
            sender.wait(timeout=90)
        except subprocess.TimeoutExpired:
            testcase.fail("the sender did not finish: %s" % log_of(sender))
        if sender.returncode != 0:
            testcase.fail("the sender failed: %s" % log_of(sender))
        tsagg.send_signal(signal.SIGTERM)
        tsagg.wait(timeout=15)

        argv = [python, os.path.join(SO_DIR, "check.py"),
                "--archive", self.data, "--manifest", self.manifest,
                "--work", os.path.join(where, "g3tsmurf")]
        if self.suprsync_db:
            argv += ["--suprsync-db", self.suprsync_db,
                     "--suprsync-archive", SUPRSYNC_ARCHIVE]
        checked = subprocess.run(argv, capture_output=True, env=so_env(),
                                 timeout=120)
        with open(os.path.join(logs, "check.log"), "wb") as f:
            f.write(checked.stderr)
        try:
            self.report = json.loads(checked.stdout)
        except ValueError:
            testcase.fail("the checker wrote no report (exit %d): %s" % (
                checked.returncode, checked.stderr.decode("utf-8",
                                                          "replace")[-3000:]))
        if checked.returncode not in (0, 1):
            testcase.fail("the checker failed (exit %d)" % checked.returncode)

    def check_intended(self):
        """
        The checker's report on the archive tsagg's writer is meant to
        write from the same sessions (tests/so/intended_archive.py).
        """
        out = os.path.join(self.where, "intended")
        subprocess.run([self.python, os.path.join(SO_DIR,
                                                  "intended_archive.py"),
                        "--manifest", self.manifest, "--out", out],
                       check=True, env=so_env(), capture_output=True)
        checked = subprocess.run(
            [self.python, os.path.join(SO_DIR, "check.py"), "--archive", out,
             "--manifest", self.manifest,
             "--work", os.path.join(self.where, "intended-g3tsmurf")],
            capture_output=True, env=so_env(), timeout=120)
        return json.loads(checked.stdout)

    def failures(self, *prefixes):
        """
        The failed checks whose names begin with one of C{prefixes}, one
        line each.
        """
        return ["%s %s: %s" % (c["check"], c["subject"], c["message"])
                for c in self.report["checks"]
                if not c["ok"] and c["check"].startswith(prefixes)]

    def checked(self, *prefixes):
        return [c for c in self.report["checks"]
                if c["check"].startswith(prefixes)]


_recording = []


class SOReadersTests(unittest.TestCase):
    """
    What SO's readers find in what tsagg recorded.
    """

    timeout = 240

    def setUp(self):
        self.python = so_python()
        if self.python is None:
            reason = ("SO's readers are not installed: `make test-so` builds "
                      "their venv (.venv-so) and sets TSAGG_SO_PYTHON to its "
                      "Python")
            if os.environ.get("TSAGG_REQUIRE_SO"):
                self.fail(reason)
            raise unittest.SkipTest(reason)
        if not os.access(self.python, os.X_OK):
            self.fail("TSAGG_SO_PYTHON=%s is not an executable" % self.python)

    def recording(self):
        if not _recording:
            where = tempfile.mkdtemp(prefix="so-readers-", dir=os.getcwd())
            try:
                _recording.append(Recording(self, self.python, where))
            except Exception as e:
                _recording.append(e)
                raise
        if isinstance(_recording[0], Exception):
            self.fail("the recording failed in an earlier test: %s"
                      % (_recording[0],))
        return _recording[0]

    def assertPassed(self, recording, *prefixes):
        self.assertTrue(recording.checked(*prefixes),
                        "the checker ran no %s check" % (prefixes,))
        failures = recording.failures(*prefixes)
        if failures:
            self.fail("%d failed:\n%s\n(the archives and logs are under %s)"
                      % (len(failures), "\n".join(failures), recording.where))

    def test_harness(self):
        """
        The sender kept to its timetable, so that sessions ended where the
        test meant them to; and G3tSmurf completes every session of the
        reference archive.
        """
        self.assertPassed(self.recording(), "harness.")

    def test_checker_passes_the_intended_archive(self):
        """
        The checker passes the archive that tsagg's writer is meant to
        write from the same sessions, made from the reference by the rules
        of shared/DESIGN.md: the checks ask for nothing more.
        """
        report = self.recording().check_intended()
        self.assertEqual(report["failures"], [])
        self.assertTrue(report["ok"])

    def test_file_layout(self):
        """
        Every file is where G3tSmurf looks: one session per basename,
        numbered from 000.
        """
        self.assertPassed(self.recording(), "files.")

    def test_every_observation_complete(self):
        """
        G3tSmurf makes one observation per session and finds its end,
        with the reference's stop, sample count, start and timing.
        """
        self.assertPassed(self.recording(), "observation.")

    def test_every_sample_exact(self):
        """
        Every Scan frame arrives whole, and load_file gives every sample and
        timestamp of the reference, file by file and whole observations.
        """
        self.assertPassed(self.recording(), "frames.", "load.")

    def test_status_in_every_file(self):
        """
        Every file starts with the full status, as it stood at its first
        Scan frame.
        """
        self.assertPassed(self.recording(), "status.")

    def test_every_closed_file_in_suprsync(self):
        """
        Every closed file is registered in socs' suprsync database once,
        with its md5 and its path relative to the archive.
        """
        recording = self.recording()
        if recording.suprsync_db is None:
            self.fail("twistd tsagg has no --suprsync-db option: no file is "
                      "handed to suprsync")
        self.assertPassed(recording, "suprsync.")

    def test_suprsync_reader(self):
        """
        A file registered with socs' own C{add_file}, from the SO venv, is
        read back by tests/so/suprsync_rows.py as the checker reads tsagg's
        registrations.
        """
        recording = self.recording()
        first = min(os.path.join(d, f) for d, _, fs in os.walk(recording.data)
                    for f in fs)
        remote = os.path.relpath(first, recording.data)
        db = os.path.join(self.mktemp() + ".db")
        script = os.path.join(SO_DIR, "suprsync_rows.py")
        subprocess.run([self.python, script, "add", db, first, remote,
                        SUPRSYNC_ARCHIVE], check=True, env=so_env(),
                       capture_output=True)
        rows = json.loads(subprocess.run(
            [self.python, script, "rows", db], check=True, env=so_env(),
            capture_output=True).stdout)
        with open(first, "rb") as f:
            md5 = hashlib.md5(f.read()).hexdigest()
        self.assertEqual(
            [(r["local_path"], r["remote_path"], r["archive_name"],
              r["local_md5sum"]) for r in rows],
            [(first, remote, SUPRSYNC_ARCHIVE, md5)])
