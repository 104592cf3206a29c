"""
Tests for L{tsagg.service}: connection management over real loopback
sockets.
"""

import os

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from tsagg.clock import MonotonicClock
from tsagg.service import RecordingService, tcp_endpoint_description

from tests import frames as F
from tests.util import files_and_frames, types_in


class PeerProtocol(Protocol):
    """
    The server side of one connection: writes what the test says.
    """

    def connectionMade(self):
        self.factory.connections.append(self)
        waiting, self.factory.waiting = self.factory.waiting, []
        for d in waiting:
            d.callback(self)

    def connectionLost(self, reason):
        self.factory.lost += 1


class PeerFactory(Factory):
    protocol = PeerProtocol

    def __init__(self):
        self.connections = []
        self.waiting = []
        self.lost = 0

    def next_connection(self):
        d = defer.Deferred()
        self.waiting.append(d)
        return d


def wait_until(predicate, timeout=10.0, step=0.01):
    """
    Poll C{predicate} on the reactor until it is true.
    """
    start = reactor.seconds()

    @defer.inlineCallbacks
    def poll():
        while not predicate():
            if reactor.seconds() - start > timeout:
                raise AssertionError("condition not met in %s s" % timeout)
            yield task.deferLater(reactor, step, lambda: None)
    return poll()


def fast_retry(attempt):
    return 0.05


class ServiceTestCase(unittest.TestCase):

    @defer.inlineCallbacks
    def listen(self, port=0):
        self.peer = PeerFactory()
        self.port = yield TCP4ServerEndpoint(reactor, port,
                                             interface="127.0.0.1").listen(
            self.peer)
        self.addCleanup(self.port.stopListening)
        return self.port.getHost().port

    def make_service(self, port, **kw):
        """
        A service of 127.0.0.1:C{port}, its timers on a L{MonotonicClock}
        as in production, unless C{kw} says otherwise.
        """
        self.dir = self.mktemp()
        kw.setdefault("fsync", False)
        kw.setdefault("retry_policy", fast_retry)
        kw.setdefault("create_data_dir", True)
        kw.setdefault("clock", MonotonicClock(reactor))
        service = RecordingService(
            reactor, tcp_endpoint_description("127.0.0.1", port), self.dir,
            **kw)
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    @defer.inlineCallbacks
    def timed_stop(self, service):
        start = reactor.seconds()
        yield service.stopService()
        return reactor.seconds() - start


class RecordingTests(ServiceTestCase):

    @defer.inlineCallbacks
    def test_frames_from_a_peer_are_recorded(self):
        port = yield self.listen()
        service = self.make_service(port)
        service.startService()
        peer = yield self.peer.next_connection()
        sent = [F.raw(F.observation())] + [F.raw(F.scan(i)) for i in range(20)]
        peer.transport.write(b"".join(sent))
        yield wait_until(lambda: service.status["frames_written"] == 21)
        self.assertTrue(service.status["connected"])
        # Megabyte frames are read a mebibyte at a time.
        proto = yield service.whenConnected()
        self.assertEqual(proto.transport.bufferSize, 1 << 20)
        yield service.stopService()
        [(path, raws)] = files_and_frames(self.dir)
        self.assertEqual(raws, sent)
        self.assertFalse(service.status["connected"])
        self.assertIsNone(service.status["current_file"])

    @defer.inlineCallbacks
    def test_reconnects_after_the_peer_drops(self):
        port = yield self.listen()
        service = self.make_service(port)
        service.startService()
        for n in range(3):
            peer = yield self.peer.next_connection()
            peer.transport.write(F.raw(F.scan(n)))
            yield wait_until(
                lambda: service.status["frames_written"] == n + 1)
            peer.transport.loseConnection()
        yield self.peer.next_connection()
        yield wait_until(lambda: service.status["connected"])
        self.assertEqual(service.status["reconnects"], 3)
        yield service.stopService()
        self.assertEqual(len(files_and_frames(self.dir)), 3)

    @defer.inlineCallbacks
    def test_reconnects_when_the_peer_appears_later(self):
        probe = yield self.listen()
        yield self.port.stopListening()
        service = self.make_service(probe)
        service.startService()
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(service.status["connected"])
        yield self.listen(probe)
        yield self.peer.next_connection()
        yield wait_until(lambda: service.status["connected"])
        yield service.stopService()

    @defer.inlineCallbacks
    def test_idle_peer_is_dropped_and_reconnected(self):
        port = yield self.listen()
        service = self.make_service(port, idle_timeout=0.2)
        service.startService()
        yield self.peer.next_connection()
        yield self.peer.next_connection()
        self.assertGreaterEqual(service.status["idle_timeouts"], 1)
        yield service.stopService()

    @defer.inlineCallbacks
    def test_bad_frame_drops_the_connection_and_keeps_good_ones(self):
        port = yield self.listen()
        service = self.make_service(port)
        service.startService()
        peer = yield self.peer.next_connection()
        good = F.raw(F.scan(1))
        bad = bytearray(F.raw(F.scan(2)))
        bad[-2] ^= 0x55
        peer.transport.write(good + bytes(bad))
        yield self.peer.next_connection()
        self.assertEqual(service.status["bad_frames"], 1)
        yield service.stopService()
        [(path, raws)] = files_and_frames(self.dir)
        self.assertEqual(raws, [good])


class StopTests(ServiceTestCase):
    """
    Stop is prompt in every state and leaves files at a frame boundary.
    """

    @defer.inlineCallbacks
    def test_stop_while_nobody_listens(self):
        probe = yield self.listen()
        yield self.port.stopListening()
        service = self.make_service(
            probe, retry_policy=lambda attempt: 3600.0)
        service.startService()
        yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertLess((yield self.timed_stop(service)), 0.5)

    @defer.inlineCallbacks
    def test_stop_idle(self):
        port = yield self.listen()
        service = self.make_service(port)
        service.startService()
        yield self.peer.next_connection()
        self.assertLess((yield self.timed_stop(service)), 0.5)
        yield wait_until(lambda: self.peer.lost == 1)

    @defer.inlineCallbacks
    def test_stop_mid_frame(self):
        port = yield self.listen()
        service = self.make_service(port)
        service.startService()
        peer = yield self.peer.next_connection()
        whole = F.raw(F.scan(1, channels=100, samples=1000))
        half = F.raw(F.scan(2, channels=100, samples=1000))
        peer.transport.write(whole + half[:len(half) // 2])
        yield wait_until(lambda: service.status["bytes_received"]
                         >= len(whole) + len(half) // 2)
        self.assertLess((yield self.timed_stop(service)), 0.5)
        [(path, raws)] = files_and_frames(self.dir)
        self.assertEqual(raws, [whole])

    @defer.inlineCallbacks
    def test_stop_while_connecting(self):
        """
        An endpoint whose connection attempt never completes (a host that
        does not answer) is cancelled at once.
        """
        service = self.make_service(1)
        attempts = []

        class Hanging:
            def connect(self, factory):
                d = defer.Deferred(lambda d: attempts.append("cancelled"))
                attempts.append("connecting")
                return d
        service.endpoint = Hanging()
        service.startService()
        self.assertEqual(attempts, ["connecting"])
        self.assertLess((yield self.timed_stop(service)), 0.5)
        self.assertEqual(attempts, ["connecting", "cancelled"])

    @defer.inlineCallbacks
    def test_start_and_stop_many_times(self):
        port = yield self.listen()
        service = self.make_service(port)
        for n in range(5):
            service.startService()
            peer = yield self.peer.next_connection()
            peer.transport.write(F.raw(F.scan(n)))
            yield wait_until(lambda: service.status["frames_written"] == n + 1)
            yield service.stopService()
            self.assertFalse(service.running)
        self.assertEqual(len(files_and_frames(self.dir)), 5)


class ClockTests(ServiceTestCase):

    def test_the_reactor_times_by_default(self):
        service = RecordingService(
            reactor, tcp_endpoint_description("127.0.0.1", 1), self.mktemp())
        self.assertIs(service.clock, reactor)
        self.assertIs(service.writer.clock, reactor)
        self.assertIs(service.factory.clock, reactor)

    @defer.inlineCallbacks
    def test_every_timer_is_on_the_clock_and_files_on_the_wall_time(self):
        clock = task.Clock()
        # Nobody listens there: the retry goes on the clock.
        port = yield self.listen()
        yield self.port.stopListening()
        service = self.make_service(port, clock=clock)
        self.assertIs(service.writer.clock, clock)
        self.assertEqual(service.writer.wall_time, reactor.seconds)
        self.assertIs(service.factory.clock, clock)
        service.startService()
        yield wait_until(lambda: clock.getDelayedCalls())
        yield service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class StatusTests(ServiceTestCase):

    @defer.inlineCallbacks
    def test_status_is_plain_values(self):
        port = yield self.listen()
        service = self.make_service(port)
        service.startService()
        peer = yield self.peer.next_connection()
        peer.transport.write(F.raw(F.observation()) + F.raw(F.scan(1))
                             + F.raw(F.scan(4)))
        yield wait_until(lambda: service.status["frames_written"] == 3)
        status = service.status
        for key in ("connected", "endpoint", "current_file", "files_written",
                    "frames_written", "bytes_written",
                    "frames_dropped_upstream", "bad_frames", "reconnects",
                    "last_error", "stream_id", "session_id",
                    "last_frame_time"):
            self.assertIn(key, status)
        self.assertEqual(status["frames_dropped_upstream"], 2)
        self.assertEqual(status["stream_id"], "crate1slot2")
        self.assertTrue(os.path.exists(status["current_file"]))

        def plain(value):
            if isinstance(value, dict):
                return all(isinstance(k, str) and plain(v)
                           for k, v in value.items())
            return value is None or isinstance(value, (bool, int, float, str))
        self.assertTrue(plain(status))
        yield service.stopService()
        self.assertEqual(types_in(files_and_frames(self.dir)[0][1]), "OSS")
