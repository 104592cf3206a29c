"""
Tests for L{tsagg.connlog}: the connection's log lines, driven by hand on a
L{task.Clock}, and as a L{RecordingService} writes them against a real
sender that refuses, accepts, and drops the connection.
"""

from twisted.internet import defer, error, reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from tsagg.connlog import (ConnectionLog, connect_failure_text, delay_text,
                           loss_text)

from tests import frames as F
from tests.test_integration import free_port
from tests.test_service import PeerFactory, ServiceTestCase, wait_until


def refused():
    return Failure(error.ConnectionRefusedError("Connection refused"))


class Lines:
    """
    The formatted lines of log events, with their levels.
    """

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    @property
    def text(self):
        return [formatEvent(e) for e in self.events]

    @property
    def levels(self):
        return [e["log_level"].name for e in self.events]


class ConnectionLogTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.lines = Lines()
        self.log = ConnectionLog("smurf-srv:50000", self.clock)
        self.log.log = Logger(observer=self.lines)

    def refuse(self, delay=2.0, attempt=1):
        self.log.connect_failed(refused())
        self.log.retrying(attempt, delay)


class LineTests(ConnectionLogTestCase):

    def test_connecting(self):
        self.log.starting("/data")
        self.assertEqual(self.lines.text,
                         ["Connecting to smurf-srv:50000, recording into "
                          "/data"])

    def test_refused_says_why_and_when_the_next_try_is(self):
        self.log.starting()
        self.refuse(delay=8.04)
        self.assertEqual(self.lines.text[-1],
                         "Cannot connect to smurf-srv:50000: connection "
                         "refused; next try in 8.0 s")
        self.assertEqual(self.lines.levels[-1], "warn")

    def test_connected(self):
        self.log.starting()
        self.log.connected("10.0.0.2:50000")
        self.assertEqual(self.lines.text[-1], "Connected to smurf-srv:50000")

    def test_disconnect_says_why_and_when_the_next_try_is(self):
        self.log.connected("10.0.0.2:50000")
        self.log.receiving()
        self.log.lost("the sender closed the connection")
        self.log.retrying(1, 1.52)
        self.assertEqual(self.lines.text[-1],
                         "Disconnected from smurf-srv:50000: the sender "
                         "closed the connection; next try in 1.5 s")

    def test_partial_frame_is_in_the_disconnect_line(self):
        self.log.connected("p")
        self.log.lost("the connection was lost", partial=1234)
        self.log.retrying(1, 1.0)
        self.assertIn("the connection was lost; 1234 bytes of an incomplete "
                      "frame discarded; next try", self.lines.text[-1])

    def test_bad_stream_is_an_error(self):
        self.log.connected("p")
        self.log.lost("bad stream, frame rejected by spt3g: CRC",
                      level="error")
        self.log.retrying(1, 1.0)
        self.assertEqual(self.lines.levels[-1], "error")
        self.assertIn("bad stream, frame rejected by spt3g: CRC",
                      self.lines.text[-1])

    def test_stop_is_no_trouble(self):
        self.log.connected("p")
        self.log.receiving()
        count = len(self.lines.events)
        self.log.stopping()
        self.log.lost("the sender closed the connection")
        self.assertEqual(len(self.lines.events), count)

    def test_stop_mid_frame_says_what_was_discarded(self):
        self.log.connected("p")
        self.log.stopping()
        self.log.lost("the sender closed the connection", partial=99)
        self.assertEqual(self.lines.text[-1],
                         "Disconnected from smurf-srv:50000: recording "
                         "stopped; 99 bytes of an incomplete frame "
                         "discarded")

    def test_cancelled_attempt_is_no_trouble(self):
        self.log.stopping()
        self.log.connect_failed(Failure(error.ConnectingCancelledError(None)))
        self.assertEqual(self.lines.events, [])


class RepeatTests(ConnectionLogTestCase):
    """
    A trouble that repeats is logged once, summarized once a minute, and
    summed up in the line that ends it.
    """

    def test_repeated_refusal_is_logged_once(self):
        self.log.starting()
        for attempt in range(1, 6):
            self.refuse(attempt=attempt)
            self.clock.advance(2)
        self.assertEqual(len(self.lines.events), 2)

    def test_repeated_refusal_is_summarized_once_a_minute(self):
        self.log.starting()
        for attempt in range(1, 41):
            self.refuse(delay=5, attempt=attempt)
            self.clock.advance(5)
        summaries = [t for t in self.lines.text if t.startswith("Still")]
        # 40 tries over 200 s: a summary after 60, 120 and 180 s.
        self.assertEqual(len(summaries), 3)
        self.assertEqual(summaries[0],
                         "Still cannot connect to smurf-srv:50000: "
                         "connection refused, 13 times in 1 min; next try "
                         "in 5.0 s")

    def test_connected_after_refusals_sums_them_up(self):
        self.log.starting()
        for attempt in range(1, 10):
            self.refuse(delay=15, attempt=attempt)
            self.clock.advance(15)
        self.log.connected("p")
        self.assertEqual(self.lines.text[-1],
                         "Connected to smurf-srv:50000 after 2 min 15 s "
                         "(connection refused, 9 tries)")

    def test_a_new_reason_is_logged(self):
        self.refuse()
        self.log.connect_failed(Failure(error.DNSLookupError("smurf-srv")))
        self.log.retrying(2, 3.0)
        self.assertEqual(self.lines.text[-1],
                         "Cannot connect to smurf-srv:50000: host name not "
                         "found; next try in 3.0 s")

    def test_repeated_silent_peer_is_logged_once(self):
        """
        A peer that accepts and never sends is dropped and connected to
        again and again: it is logged until it repeats, then summarized
        once a minute until frames come.
        """
        for attempt in range(5):
            self.log.connected("p")
            self.clock.advance(30)
            self.log.lost("no data for 30 s")
            self.log.retrying(1, 1.0)
            self.clock.advance(1)
        self.assertEqual(self.lines.text[:3],
                         ["Connected to smurf-srv:50000",
                          "Disconnected from smurf-srv:50000: no data for "
                          "30 s; next try in 1.0 s",
                          "Connected to smurf-srv:50000"])
        self.assertEqual(self.lines.text[3:],
                         ["Still no good connection to smurf-srv:50000: no "
                          "data for 30 s, 3 times in 1 min 2 s; next try in "
                          "1.0 s",
                          "Still no good connection to smurf-srv:50000: no "
                          "data for 30 s, 5 times in 2 min 4 s; next try in "
                          "1.0 s"])
        self.log.connected("p")
        self.log.receiving()
        self.assertEqual(self.lines.text[-1],
                         "Connected to smurf-srv:50000, frames arriving "
                         "after 2 min 5 s (no data for 30 s, 5 times)")

    def test_frames_between_disconnects_make_each_one_news(self):
        for attempt in range(3):
            self.log.connected("p")
            self.log.receiving()
            self.log.lost("the sender closed the connection")
            self.log.retrying(1, 1.0)
        self.assertEqual(len([t for t in self.lines.text
                              if t.startswith("Disconnected")]), 3)


class TextTests(unittest.TestCase):

    def test_connect_failures(self):
        self.assertEqual(connect_failure_text(refused()),
                         "connection refused")
        self.assertEqual(connect_failure_text(
            Failure(error.TCPTimedOutError())), "no answer (timed out)")
        self.assertEqual(connect_failure_text(
            Failure(error.TimeoutError())), "no answer (timed out)")
        self.assertEqual(connect_failure_text(
            Failure(error.ConnectError("EHOSTUNREACH"))), "EHOSTUNREACH")

    def test_losses(self):
        self.assertEqual(loss_text(Failure(error.ConnectionDone())),
                         "the sender closed the connection")
        self.assertEqual(loss_text(Failure(error.ConnectionLost())),
                         "the connection was lost")

    def test_delays(self):
        self.assertEqual(delay_text(2.391), "2.4 s")
        self.assertEqual(delay_text(27.6), "28 s")


class ServiceLogTests(ServiceTestCase):
    """
    The lines of a recording whose sender refuses, then appears, sends and
    goes away, as an operator reads them: no object reprs, no factory or
    retry noise.
    """

    def capture(self):
        lines = Lines()
        globalLogPublisher.addObserver(lines)
        self.addCleanup(globalLogPublisher.removeObserver, lines)
        return lines

    @defer.inlineCallbacks
    def test_refused_reconnecting_recording_session(self):
        lines = self.capture()
        port = free_port()
        service = self.make_service(port, retry_policy=lambda n: 0.05)
        service.startService()
        # Refused a few times...
        yield task.deferLater(reactor, 0.4, lambda: None)
        peer = PeerFactory()
        listening = yield TCP4ServerEndpoint(
            reactor, port, interface="127.0.0.1").listen(peer)
        self.addCleanup(listening.stopListening)
        conn = yield peer.next_connection()
        # Frames of no session: their loss is no break in a session.
        conn.transport.write(F.raw(F.observation(session_id=None))
                             + F.raw(F.scan(2, session_id=None)))
        yield wait_until(lambda: service.status["frames_written"] == 2)
        # ...the sender goes away, and comes back.
        conn.transport.loseConnection()
        conn = yield peer.next_connection()
        conn.transport.write(F.raw(F.scan(3, session_id=None)))
        yield wait_until(lambda: service.status["frames_received"] == 3)
        yield service.stopService()

        address = "127.0.0.1:%d" % (port,)
        mine = [t for t in lines.text if address in t]
        self.assertEqual(mine[0], "Connecting to %s, recording into %s"
                         % (address, service.writer.data_dir))
        self.assertEqual(mine[1], "Cannot connect to %s: connection "
                         "refused; next try in 0.1 s" % (address,))
        self.assertRegex(mine[2], r"^Connected to %s after \d s \(connection "
                         r"refused, \d+ tries\)$" % (address,))
        self.assertEqual(mine[3], "Disconnected from %s: the sender closed "
                         "the connection; next try in 0.1 s" % (address,))
        self.assertEqual(mine[4], "Connected to %s" % (address,))
        self.assertEqual(len(mine), 5, mine)
        self.assertIn("Recording stopped", lines.text)
        # The test's own listening port may be noisy; tsagg must not be.
        for text in [t for t in lines.text if "PeerFactory" not in t]:
            self.assertNotIn("object at 0x", text)
            self.assertNotIn("Scheduling retry", text)
            self.assertNotIn("Starting factory", text)
            self.assertNotIn("Stopping factory", text)


class BreakTests(ConnectionLogTestCase):
    """
    A connection lost while the writer has a session in progress.
    """

    def setUp(self):
        ConnectionLogTestCase.setUp(self)
        self.session = 1795604518
        self.log = ConnectionLog("smurf-srv:50000", self.clock,
                                 session=lambda: self.session)
        self.log.log = Logger(observer=self.lines)

    def test_a_bad_stream_in_a_session_is_an_error(self):
        self.log.connected("p")
        self.log.receiving()
        self.log.lost("bad stream, frame rejected by spt3g: CRC",
                      level="error")
        self.log.retrying(1, 1.5)
        self.assertEqual(self.lines.text[-1],
                         "Connection to smurf-srv:50000 lost during session "
                         "1795604518: bad stream, frame rejected by spt3g: "
                         "CRC; next try in 1.5 s")
        self.assertEqual(self.lines.levels[-1], "error")
        self.assertFalse(self.log.ended_after_frames)

    def test_resumed_with_no_break_known(self):
        self.log.session_resumed(1795604518, 3)
        self.assertEqual(self.lines.text,
                         ["Session 1795604518 goes on; 3 frames missed"])
        self.assertEqual(self.log.status, {"breaks": 0,
                                           "frames_missed_in_breaks": 3})

    def test_a_break_that_lasts_long_is_said_in_minutes(self):
        self.log.connected("p")
        self.log.receiving()
        self.log.lost("the connection was lost")
        self.log.retrying(1, 0.05)
        self.clock.advance(125)
        self.log.connected("p")
        self.log.receiving()
        self.log.session_resumed(1795604518, 250)
        self.assertEqual(self.lines.text[-1],
                         "Connection to smurf-srv:50000 back after 2 min 5 s; "
                         "session 1795604518 goes on; 250 frames missed")
