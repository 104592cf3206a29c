"""
A hostile sender: spt3g's C{G3NetworkSender} (L{tests.stormsender}) that
gives every small Scan frame a new C{session_id}, as fast as C{twistd
tsagg} (at its default options) takes them, so that each frame is a file of
its own.  tsagg must keep every frame, once, in files that are whole; its
memory, its journal and its log must stay bounded; and SIGTERM must end it
within seconds, whatever is going on.

The long storm has C{TSAGG_FAULT_STORM} one-frame sessions after the first
2,000 (20,000 by default; ``make faults`` runs more).
"""

import os
import signal
import sys
import time

from twisted.trial import unittest

from tsagg.scan import scan_file

from tests import faultlog
from tests.faultutil import Sandbox, quiet_port
from tests.frames import raw
from tests.stormsender import BASE_SESSION, storm_frame
from tests.test_twistd import twistd_command
from tests.util import ROOT, log_of, poll_until, spawn

SENDER = os.path.join(ROOT, "tests", "stormsender.py")
STORM = int(os.environ.get("TSAGG_FAULT_STORM", "20000"))

#: What may never be in the log of a storm.
TROUBLE = ("#error]", "#critical]", "Traceback", "Unable to format",
           "recursion")


def rss(pid):
    return faultlog._status_field(pid, "VmRSS")


class StormTestCase(unittest.TestCase):

    def start(self, bursts):
        """
        Start the storm's sender and C{twistd tsagg} on default options,
        connected.
        """
        self.box = Sandbox(self)
        self.box.seal()
        self.go = os.path.join(self.box.inputs, "go")
        port = quiet_port()
        self.sender = spawn(self, [sys.executable, SENDER, "--port",
                                   str(port), "--go", self.go, "--bursts",
                                   ",".join(str(b) for b in bursts)],
                            os.path.abspath(self.mktemp()))
        poll_until(self, lambda: "Listening" in log_of(self.sender), 30,
                   "the sender to listen")
        self.tsagg = spawn(self, twistd_command() + [
            "-n", "--pidfile=", "--logfile=-", "tsagg", "--address",
            "127.0.0.1", "--port", str(port), "--data-dir", self.box.data,
            "--create-data-dir"], os.path.abspath(self.mktemp()))
        poll_until(self, lambda: "Connected to" in log_of(self.tsagg), 30,
                   "tsagg to connect")
        self.largest_journal = 0
        self.burst = 0

    def stream_dirs(self):
        """
        The stream's directories, in order: past 100,000 sessions their
        basenames' first five digits, and so the directory, change.
        """
        return [os.path.join(self.box.data, top, "crate1slot2")
                for top in sorted(os.listdir(self.box.data))
                if top.isdigit()]

    def files(self):
        count = 0
        for directory in self.stream_dirs():
            try:
                count += len(os.listdir(directory))
            except FileNotFoundError:
                pass
        return count

    def journal_size(self):
        directory = os.path.join(self.box.data, ".tsagg")
        size = 0
        for name in os.listdir(directory):
            try:
                size += os.path.getsize(os.path.join(directory, name))
            except FileNotFoundError:
                pass
        return size

    def watch(self):
        self.largest_journal = max(self.largest_journal, self.journal_size())
        return self.files()

    def send_burst(self, until, timeout):
        """
        Let the sender send its next burst; wait until C{until} files are
        on disk, watching the journal's size meanwhile.

        @return: The seconds it took.
        """
        self.burst += 1
        started = time.monotonic()
        open("%s.%d" % (self.go, self.burst), "w").close()
        poll_until(self, lambda: self.watch() >= until, timeout,
                   "%d files" % (until,))
        return time.monotonic() - started

    def terminate(self):
        """
        SIGTERM to tsagg.

        @return: The seconds until it exited.
        """
        started = time.monotonic()
        self.tsagg.send_signal(signal.SIGTERM)
        self.tsagg.wait(timeout=60)
        return time.monotonic() - started

    def check_files(self):
        """
        Every file holds one whole frame of the storm, bit for bit, named
        for its session, and together they are the storm's first frames,
        each once.

        @return: C{(files, torn)}.
        """
        paths = [os.path.join(directory, name)
                 for directory in self.stream_dirs()
                 for name in sorted(os.listdir(directory))]
        torn = []
        for i, path in enumerate(paths):
            session = BASE_SESSION + i
            self.assertEqual(os.path.relpath(path, self.box.data),
                             os.path.join(str(session)[:5], "crate1slot2",
                                          "%d_000.g3" % (session,)))
            name = os.path.basename(path)
            scan = scan_file(path)
            with open(path, "rb") as f:
                data = f.read()
            if scan.problem_kind is not None or data != raw(storm_frame(i)):
                torn.append(name)
        return len(paths), torn

    def check_log(self):
        log = log_of(self.tsagg)
        self.assertEqual([line for line in log.splitlines()
                          if any(t in line for t in TROUBLE)], [])
        self.assertIn("Server Shut Down", log)
        self.assertEqual(os.listdir(os.path.join(self.box.data, ".tsagg")),
                         [])
        return log


class SessionStormTests(StormTestCase):

    def test_sigterm_mid_storm(self):
        """
        SIGTERM while tens of thousands of one-frame sessions pour in: tsagg
        ends within seconds, every frame it took is on disk once, and no
        file is torn.
        """
        self.start([40000])
        self.send_burst(8000, 120)
        took = self.terminate()
        files, torn = self.check_files()
        log = self.check_log()
        faultlog.record("session_id storm (every frame a new session), "
                        "SIGTERM mid-storm", tried=1, kept=files - len(torn),
                        expected=files, torn=len(torn),
                        outside=self.box.outside(),
                        note="exited %.1f s after SIGTERM, with %d files "
                        "written of 40,000 sent" % (took, files))
        self.assertLess(took, 10)
        self.assertLess(files, 40000, "the storm was over before SIGTERM")
        self.assertEqual(torn, [])
        self.assertEqual(self.box.outside(), 0)
        # The log holds summaries, not a line per file.
        self.assertIn("sessions began; the sender changes session_id on "
                      "nearly every frame", log)
        self.assertLess(len(log.splitlines()), 300)

    test_sigterm_mid_storm.timeout = 300

    def test_long_storm(self):
        """
        2,000 then C{STORM} one-frame sessions: RSS flat, the journal
        small, the log summarized, SIGTERM prompt.
        """
        self.start([2000, STORM])
        self.send_burst(2000, 120)
        time.sleep(1)
        before = rss(self.tsagg.pid)
        lines_before = len(log_of(self.tsagg).splitlines())
        seconds = self.send_burst(2000 + STORM, 30 + STORM / 100.0)
        # The last file stays open until the gap timeout: let the writer
        # settle before RSS is read.
        time.sleep(1)
        after = rss(self.tsagg.pid)
        lines = len(log_of(self.tsagg).splitlines()) - lines_before
        took = self.terminate()
        files, torn = self.check_files()
        log = self.check_log()
        rate = STORM / seconds
        per_minute = lines * 60.0 / seconds
        faultlog.record(
            "session_id storm: 2,000 then %d one-frame sessions, then "
            "SIGTERM" % (STORM,), tried=1, kept=files - len(torn),
            expected=2000 + STORM, torn=len(torn),
            outside=self.box.outside(), peak_bytes=max(0, after - before),
            peak_kind="RSS growth of twistd over the %d" % (STORM,),
            note="%.0f files/s; RSS %.1f MiB then %.1f MiB; journal at most "
            "%.1f KiB; %.0f log lines a minute; exited %.1f s after "
            "SIGTERM" % (rate, before / 2.0 ** 20, after / 2.0 ** 20,
                         self.largest_journal / 1024.0, per_minute, took))
        self.assertEqual((files, torn), (2000 + STORM, []))
        self.assertLessEqual(after - before, 16 << 20)
        self.assertLess(self.largest_journal, 256 << 10)
        self.assertLess(took, 10)
        self.assertIn("the sender changes session_id on nearly every frame",
                      log)
        self.assertLess(per_minute, 200)
        self.assertEqual(self.box.outside(), 0)

    test_long_storm.timeout = 600 + STORM / 50
