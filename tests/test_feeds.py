"""
Tests for L{tsagg.feeds}: the agent's feeds and its C{degraded} flag, on
their own with a L{task.Clock}, and as the C{stream} Process publishes them
against loopback peers.
"""

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial import unittest

from tsagg.feeds import Feeds
from tsagg.monitor import RECORD_FIELDS
from tsagg.service import in_thread_pool
from tsagg.writer import RotatingWriter

from tests import frames as F
from tests.test_agent import FakeAgent, FakeSession, ProcessTestCase
from tests.test_monitor import status
from tests.test_outage import FakeDisk
from tests.test_service import wait_until
from tests.util import files_and_frames


class FakeService:
    """
    The parts of a L{tsagg.service.RecordingService} the feeds read.
    """

    def __init__(self):
        self.status = status(current_file_age=None)


class FeedsTests(unittest.TestCase):
    """
    L{Feeds} on its own: a run's records on the clock, the degraded flag
    and its log lines.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.agent = FakeAgent()
        self.lines = []
        self.feeds = Feeds(self.agent, self.clock, lambda: 1000.0,
                           "sender:50000", feed_interval=5.0,
                           degraded_after=15.0,
                           log=Logger(observer=self.observe))

    def observe(self, event):
        self.lines.append(formatEvent(event))

    def test_a_record_every_interval_from_start_records_to_stop(self):
        service = FakeService()
        self.feeds.start(self.clock.seconds(), service.status)
        self.feeds.start_records(service)
        self.assertEqual(self.agent.blocks("recorder", "recorder"), [])
        self.clock.advance(5.0)
        self.clock.advance(5.0)
        self.assertEqual(len(self.agent.blocks("recorder", "recorder")), 2)
        self.feeds.stop(FakeSession())
        self.clock.advance(10.0)
        self.assertEqual(len(self.agent.blocks("recorder", "recorder")), 2)

    def test_degraded_up_and_down_with_one_line_each(self):
        session = FakeSession()
        self.feeds.start(self.clock.seconds(), status())
        self.feeds.update_degraded(session, status())
        self.clock.advance(20.0)
        self.feeds.update_degraded(session, status(connected=False))
        self.assertFalse(session.degraded)
        self.clock.advance(16.0)
        self.feeds.update_degraded(session, status(connected=False))
        self.assertTrue(session.degraded)
        [reason] = self.feeds.degraded_reasons
        self.assertEqual(reason, "not connected to sender:50000 for 16 s")
        self.feeds.update_degraded(session, status())
        self.assertFalse(session.degraded)
        self.assertEqual(self.feeds.degraded_reasons, [])
        self.assertEqual(self.lines, [
            "Degraded: not connected to sender:50000 for 16 s",
            "No longer degraded: recording as it should"])

    def test_stop_clears_the_degraded_flag(self):
        session = FakeSession()
        self.feeds.start(self.clock.seconds(), status())
        self.feeds.update_degraded(session, status(frames_held=3))
        self.assertTrue(session.degraded)
        self.feeds.stop(session)
        self.assertFalse(session.degraded)
        self.assertEqual(self.feeds.degraded_reasons, [])


class FilesFeedTests(ProcessTestCase):

    @defer.inlineCallbacks
    def test_each_closed_file_is_published_once(self):
        aggregator, session, running, peer = yield self.connected()
        self.assertEqual(self.agent.feeds["files"]["record"], False)
        sent = [F.raw(F.observation()), F.raw(F.scan(1)), F.raw(F.flow(F.END)),
                F.raw(F.observation(session_id=1700000100)),
                F.raw(F.scan(1, session_id=1700000100))]
        peer.transport.write(b"".join(sent))
        yield wait_until(lambda: session.data.get("frames_written") == 4)
        yield self.timed_stop(aggregator, session, running)
        # The last file is handed on after the stop, not before.
        yield wait_until(lambda: len(self.agent.published["files"]) == 2)
        files = self.agent.published["files"]
        self.assertEqual([m["data"]["path"] for m in files],
                         [p for p, _ in files_and_frames(self.dir)])
        for m in files:
            self.assertEqual(m["block_name"], "files")
            self.assertEqual(len(m["data"]["md5"]), 32)
            self.assertEqual(m["data"]["scan_frames"], 1)


class FeedTests(ProcessTestCase):
    """
    The status feed, for Grafana: a record every interval, of numbers and
    booleans only.
    """

    def test_feeds_are_registered_and_recorded(self):
        self.make_aggregator(1)
        feeds = self.agent.feeds
        self.assertEqual(feeds["recorder"]["record"], True)
        self.assertEqual(feeds["recorder"]["agg_params"],
                         {"frame_length": 60})
        self.assertEqual(feeds["detectors"]["record"], True)
        self.assertEqual(feeds["detectors"]["agg_params"],
                         {"exclude_aggregator": True})

    @defer.inlineCallbacks
    def test_a_record_every_interval(self):
        port = yield self.listen()
        aggregator = self.make_aggregator(port, feed_interval=0.2)
        session, running = self.start(aggregator)
        peer = yield self.peer.next_connection()
        peer.transport.write(F.raw(F.observation()) + F.raw(F.scan(2))
                             + F.raw(F.scan(3)))
        yield wait_until(lambda: len(self.agent.blocks(
            "recorder", "recorder")) >= 3)
        yield self.timed_stop(aggregator, session, running)
        records = self.agent.blocks("recorder", "recorder")
        stamps = [r["timestamp"] for r in records]
        self.assertEqual(stamps, sorted(stamps))
        for gap in [b - a for a, b in zip(stamps, stamps[1:])]:
            self.assertLess(abs(gap - 0.2), 0.1)
        for record in records:
            self.assertEqual(tuple(record["data"]), RECORD_FIELDS)
        first = records[0]["data"]
        self.assertIs(first["connected"], True)
        self.assertIs(first["degraded"], False)
        self.assertIs(first["file_open"], True)
        self.assertEqual(first["files_written"], 1)
        self.assertGreater(first["frames_written_per_s"], 0)
        self.assertGreater(first["written_mb_per_s"], 0)
        self.assertLess(first["seconds_since_last_frame"], 1.0)
        self.assertGreater(records[-1]["data"]["current_file_age"],
                           first["current_file_age"])
        # Nothing came after the first record: no rate.
        self.assertEqual(records[-1]["data"]["frames_received_per_s"], 0)
        [disk] = self.agent.blocks("recorder", "disk")[:1]
        self.assertGreater(disk["data"]["free_bytes"], 0)
        self.assertGreater(disk["data"]["free_floor_bytes"], 0)


    @defer.inlineCallbacks
    def test_a_failing_publish_does_not_stop_the_records(self):
        port = yield self.listen()
        aggregator = self.make_aggregator(port, feed_interval=0.1)
        calls = []

        def failing(name, message):
            calls.append(name)
            if len(calls) <= 2:
                raise RuntimeError("crossbar is away")
            FakeAgent.publish_to_feed(self.agent, name, message)
        self.agent.publish_to_feed = failing
        session, running = self.start(aggregator)
        yield wait_until(lambda: len(self.agent.blocks(
            "recorder", "recorder")) >= 2)
        yield self.timed_stop(aggregator, session, running)
        self.assertGreater(len(calls), 2)


class DegradedTests(ProcessTestCase):
    """
    C{session.degraded} goes up while the recording does not do its job,
    with the reasons in C{session.data}, and down when it does again.
    """

    def capture(self):
        lines = []

        def observe(event):
            if event.get("log_namespace", "").startswith("tsagg.agent"):
                lines.append(formatEvent(event))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines

    @defer.inlineCallbacks
    def test_sender_going_away_then_back(self):
        lines = self.capture()
        port = yield self.listen()
        aggregator = self.make_aggregator(port, degraded_after=0.5)
        session, running = self.start(aggregator)
        peer = yield self.peer.next_connection()
        yield wait_until(lambda: session.data.get("connected"))
        self.assertFalse(session.degraded)
        self.assertEqual(session.data["degraded_reasons"], [])

        yield self.port.stopListening()
        peer.transport.loseConnection()
        yield wait_until(lambda: session.data.get("connected") is False)
        gone = reactor.seconds()
        yield wait_until(lambda: session.degraded, timeout=3)
        self.assertGreaterEqual(reactor.seconds() - gone, 0.4)
        self.assertLess(reactor.seconds() - gone, 1.5)
        [reason] = session.data["degraded_reasons"]
        self.assertRegex(reason, r"^not connected to 127\.0\.0\.1:%d for "
                         r"\d s: connection refused$" % (port,))

        again = yield TCP4ServerEndpoint(
            reactor, port, interface="127.0.0.1").listen(self.peer)
        self.addCleanup(again.stopListening)
        yield self.peer.next_connection()
        yield wait_until(lambda: not session.degraded, timeout=3)
        self.assertEqual(session.data["degraded_reasons"], [])
        yield self.timed_stop(aggregator, session, running)
        self.assertEqual(len([t for t in lines
                              if t.startswith("Degraded: not connected")]),
                         1, lines)
        self.assertEqual(lines.count("No longer degraded: recording as it "
                                     "should"), 1, lines)

    @defer.inlineCallbacks
    def test_disk_below_its_floor_then_space_again(self):
        disk = FakeDisk()

        def writer():
            return RotatingWriter(
                self.dir, reactor, fsync=False, statvfs=disk,
                retry_interval=0.05, max_retry_interval=0.05,
                run_blocking=in_thread_pool(reactor),
                wall_time=reactor.seconds)
        port = yield self.listen()
        aggregator = self.make_aggregator(port, writer=writer,
                                          degraded_after=30)
        session, running = self.start(aggregator)
        peer = yield self.peer.next_connection()
        peer.transport.write(F.raw(F.observation()) + F.raw(F.scan(2)))
        yield wait_until(lambda: session.data.get("frames_written") == 2)
        self.assertFalse(session.degraded)

        disk.free = 1 << 20
        # The writer looks at the free space once a second.
        yield task.deferLater(reactor, 1.1, lambda: None)
        peer.transport.write(F.raw(F.scan(3)))
        yield wait_until(lambda: session.degraded)
        yield wait_until(lambda: len(session.data["degraded_reasons"]) == 3)
        reasons = session.data["degraded_reasons"]
        self.assertTrue(any(r.startswith("writing has failed for ")
                            for r in reasons), reasons)
        self.assertIn("1 frames held, waiting for the disk", reasons)
        self.assertTrue(any("below the floor of" in r for r in reasons),
                        reasons)

        disk.free = 50 << 30
        yield wait_until(lambda: not session.degraded)
        self.assertEqual(session.data["frames_written"], 3)
        yield self.timed_stop(aggregator, session, running)

    @defer.inlineCallbacks
    def test_not_degraded_once_stopped(self):
        port = yield self.listen()
        yield self.port.stopListening()
        aggregator = self.make_aggregator(port, degraded_after=0.1)
        session, running = self.start(aggregator)
        yield wait_until(lambda: session.degraded)
        yield self.timed_stop(aggregator, session, running)
        self.assertFalse(session.degraded)
        self.assertEqual(session.data["degraded_reasons"], [])

