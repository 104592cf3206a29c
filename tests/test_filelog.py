"""
Tests for L{tsagg.filelog}: the writer's lines about files pass at a sane
rate, and beyond it one summary a minute says what they would have said;
a flood of sessions is one warning; warnings and errors always pass.
"""

from twisted.internet import task
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial import unittest

from tsagg.filelog import FileLog
from tsagg.writer import RotatingWriter

from tests import frames as F


class FileLogTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1700000000)
        self.events = []
        logger = Logger(observer=self.events.append)
        self.file_log = FileLog(self.clock, lambda: logger)

    def one_file(self, n, frames=1):
        relative = "17000/crate1slot2/%d_000.g3" % (1700000000 + n,)
        self.file_log.session_started(str(1700000000 + n), "crate1slot2")
        self.file_log.opened(relative)
        self.file_log.closed(relative, "new session", 0, 300, frames, 0)

    def storm(self, files, seconds, first=0):
        """
        C{files} one-frame sessions, evenly over C{seconds}.
        """
        for n in range(first, first + files):
            self.one_file(n)
            self.clock.advance(float(seconds) / files)

    def wait(self, seconds):
        for _ in range(seconds):
            self.clock.advance(1)

    def lines(self, level=None):
        return [formatEvent(e) for e in self.events
                if level is None or e["log_level"] == level]

    def summaries(self):
        return [line for line in self.lines() if "in the last" in line]


class RateTests(FileLogTestCase):

    def test_every_line_of_a_few_files_is_logged(self):
        for n in range(10):
            self.one_file(n)
            self.clock.advance(60)
        self.assertEqual(len(self.lines()), 30)
        self.assertEqual(self.lines()[:3], [
            "Session 1700000000 of crate1slot2 started",
            "Opened 17000/crate1slot2/1700000000_000.g3",
            "Closed 17000/crate1slot2/1700000000_000.g3 (new session): 0 s, "
            "300 B, 1 frames, 0 dropped"])
        self.assertEqual(self.summaries(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_steady_file_every_ten_seconds_is_never_summarized(self):
        for n in range(360):
            self.one_file(n, frames=20)
            self.clock.advance(10)
        self.assertEqual(len(self.lines()), 3 * 360)

    def test_a_storm_is_summarized_once_a_minute(self):
        # 700 files a second for ten minutes: 1.26 million lines unlimited.
        self.storm(420000, 600)
        self.wait(120)
        lines = self.lines()
        self.assertLessEqual(len(lines), FileLog.burst
                             + 10 * FileLog.per_minute + 10 + 1 + 1)
        summaries = self.summaries()
        self.assertEqual(len(summaries), 10)
        self.assertRegex(summaries[1], r"^4[12],\d{3} files opened and "
                         r"4[12],\d{3} closed in the last minute; 4[12],\d{3} "
                         r"sessions began; the sender changes session_id on "
                         r"nearly every frame \(\d{3},\d{3} lines not "
                         r"logged\)$")

    def test_summaries_end_with_the_storm(self):
        self.storm(5000, 10)
        self.wait(300)
        [summary] = self.summaries()
        # Counted from the first line skipped: the burst went before.
        self.assertIn("4,966 sessions began", summary)
        self.assertIn("in the last minute", summary)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Lines pass again once it is over.
        before = len(self.lines())
        self.one_file(10 ** 6)
        self.assertEqual(len(self.lines()), before + 3)

    def test_a_flood_of_sessions_is_one_warning(self):
        self.storm(20000, 30)
        self.wait(600)
        self.storm(20000, 30, first=20000)
        warnings = self.lines(LogLevel.warn)
        self.assertEqual(len(warnings), 2)
        self.assertIn("A flood of new sessions from crate1slot2", warnings[0])

    def test_files_of_one_session_are_no_flood(self):
        for n in range(20000):
            relative = "17000/crate1slot2/1700000000_%03d.g3" % (n,)
            self.file_log.opened(relative)
            self.file_log.closed(relative, "rotation", 0, 300, 1, 0)
            self.clock.advance(0.01)
        self.file_log.stop()
        self.assertEqual(self.lines(LogLevel.warn), [])
        self.assertNotIn("session_id", " ".join(self.summaries()))

    def test_a_stop_logs_what_was_skipped(self):
        self.storm(1000, 5)
        self.file_log.stop()
        [summary] = self.summaries()
        self.assertRegex(summary, r"closed in the last \d s;")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WriterTests(unittest.TestCase):
    """
    The writer's lines about files go through its L{FileLog}; its warnings
    and errors do not.
    """

    def test_warnings_pass_in_a_storm(self):
        clock = task.Clock()
        clock.advance(1700000000)
        writer = RotatingWriter(self.mktemp(), clock, fsync=False)
        writer.prepare(create=True)
        self.addCleanup(writer.close)
        events = []
        writer.log = Logger(observer=events.append)
        for n in range(2000):
            F.feed(writer, F.scan(n, session_id=1700000000 + n))
            clock.advance(0.001)
            if n % 500 == 499:
                F.feed(writer, F.flow(7))
        warnings = [formatEvent(e) for e in events
                    if e["log_level"] == LogLevel.warn]
        self.assertEqual(len([w for w in warnings if "unknown value" in w]),
                         4)
        self.assertEqual(len([w for w in warnings if "flood" in w]), 1)
        routine = [e for e in events if e["log_level"] == LogLevel.info]
        self.assertLessEqual(len(routine), FileLog.burst + 2)
        self.assertEqual(writer.status["files_written"], 2000)
