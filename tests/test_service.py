"""
Tests for L{tsagg.service}: connection management over real loopback
sockets, and the timing and log lines of reconnects on a
L{MemoryReactorClock}.
"""

import os

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from zope.interface import implementer

from tsagg.clock import MonotonicClock
from tsagg.interfaces import IFrameSink
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


@implementer(IFrameSink)
class FakeWriter:
    """
    An L{IFrameSink} with the outside of a L{RotatingWriter}, whose session
    in progress the test sets; at the first frames after a reconnect it
    calls C{on_session_resumed} as the writer does when C{resume} says so.

    @ivar resume: C{(session_id, missed)} to report at the first frames of
        the next connection, or L{None}.
    """

    data_dir = "/data"
    on_session_resumed = None

    def __init__(self):
        self.session_id = None
        self.resume = None
        self.frames = []

    @property
    def status(self):
        return {"session_id": self.session_id, "stream_id": "crate1slot2",
                "last_error": None}

    def prepare(self, create=False):
        pass

    def start(self):
        pass

    def close(self):
        pass

    def add_closed_file_listener(self, listener):
        pass

    def handed_on(self, relative):
        pass

    def release_journal(self):
        pass

    def streamStarted(self, producer):
        pass

    def framesReceived(self, frames):
        self.frames += frames
        resume, self.resume = self.resume, None
        if resume is not None:
            self.on_session_resumed(*resume)

    def streamStopped(self, reason):
        pass


#: Backoff without jitter: 1.5 s, 2.25 s, ... after failed attempts.
BACKOFF = backoffPolicy(initialDelay=1.0, maxDelay=30.0, jitter=lambda: 0.0)

ADDRESS = "127.0.0.1:4532"


class MemoryServiceTestCase(unittest.TestCase):
    """
    A L{RecordingService} on a L{MemoryReactorClock}: its connection
    attempts are made, refused and accepted by hand, its timers advanced by
    hand, and its connection log captured.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.writer = FakeWriter()
        self.service = RecordingService(
            self.reactor, tcp_endpoint_description("127.0.0.1", 4532),
            "/data", writer=self.writer, retry_policy=BACKOFF)
        self.lines = []
        self.service.connection_log.log = Logger(
            observer=lambda e: self.lines.append(formatEvent(e)))
        self.service.startService()

    def attempts(self):
        return len(self.reactor.tcpClients)

    def refuse(self):
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(
            self.reactor.connectors[-1],
            Failure(error.ConnectionRefusedError("Connection refused")))

    def accept(self):
        address = IPv4Address("TCP", "127.0.0.1", 4532)
        proto = self.reactor.tcpClients[-1][2].buildProtocol(address)
        proto.makeConnection(StringTransport(peerAddress=address))
        return proto

    def drop(self, proto):
        proto.connectionLost(Failure(error.ConnectionDone()))

    def session(self, proto, session_id=1795604518, start=2, count=3):
        """
        The writer has C{session_id} in progress, and C{proto} delivers
        Scan frames of it.
        """
        self.writer.session_id = session_id
        proto.dataReceived(b"".join(F.raw(F.scan(n, session_id=session_id))
                                    for n in range(start, start + count)))

    def next_try_in(self):
        """
        Seconds until the one timer that is left: the next attempt.
        """
        [call] = self.reactor.getDelayedCalls()
        return call.getTime() - self.reactor.seconds()

    def try_again(self):
        """
        Let the next attempt be made.
        """
        before = self.attempts()
        self.reactor.advance(self.next_try_in())
        self.assertEqual(self.attempts(), before + 1)


class ReconnectTimingTests(MemoryServiceTestCase):
    """
    Backoff is for attempts that fail; a connection that delivered frames
    and dropped is tried again at once.
    """

    def test_the_first_attempt_is_made_at_once(self):
        self.assertEqual(self.attempts(), 1)

    def test_a_refused_first_try_backs_off(self):
        self.refuse()
        self.assertEqual(self.next_try_in(), 1.5)
        self.try_again()
        self.refuse()
        self.assertEqual(self.next_try_in(), 2.25)

    def test_the_default_backoff_has_jitter(self):
        service = RecordingService(
            MemoryReactorClock(), tcp_endpoint_description("127.0.0.1", 1),
            "/data", writer=FakeWriter())
        delays = {service._retry_policy(1) for _ in range(20)}
        self.assertTrue(all(1.5 <= d < 2.5 for d in delays), delays)
        self.assertGreater(len(delays), 1)

    def test_a_connection_that_delivered_frames_is_tried_again_at_once(self):
        proto = self.accept()
        self.session(proto)
        self.drop(proto)
        self.assertLessEqual(self.next_try_in(), 0.1)

    def test_a_failed_quick_try_resumes_backoff(self):
        proto = self.accept()
        self.session(proto)
        self.drop(proto)
        self.try_again()
        self.refuse()
        self.assertEqual(self.next_try_in(), 1.5)
        self.try_again()
        self.refuse()
        self.assertEqual(self.next_try_in(), 2.25)

    def test_a_quick_try_that_connects_needs_no_backoff(self):
        proto = self.accept()
        self.session(proto)
        self.drop(proto)
        self.try_again()
        self.accept()
        self.assertEqual(self.attempts(), 2)

    def test_a_connection_without_frames_backs_off(self):
        self.drop(self.accept())
        self.assertEqual(self.next_try_in(), 1.5)

    def test_a_bad_stream_backs_off(self):
        proto = self.accept()
        bad = bytearray(F.raw(F.scan(3)))
        bad[-1] ^= 0xFF
        proto.dataReceived(F.raw(F.scan(2)) + bytes(bad))
        self.assertTrue(proto.transport.disconnecting)
        self.drop(proto)
        self.assertEqual(self.next_try_in(), 1.5)

    def test_quick_tries_are_spaced(self):
        """
        A sender that drops each connection as soon as it has sent
        something is tried at once no more than every ten seconds.
        """
        proto = self.accept()
        self.session(proto)
        self.drop(proto)
        self.try_again()
        proto = self.accept()
        self.session(proto, start=5)
        self.drop(proto)
        self.assertEqual(self.next_try_in(), 1.5)
        self.try_again()
        proto = self.accept()
        self.reactor.advance(10)
        self.session(proto, start=8)
        self.drop(proto)
        self.assertLessEqual(self.next_try_in(), 0.1)

    def test_stop_cancels_the_quick_try(self):
        proto = self.accept()
        self.session(proto)
        self.drop(proto)
        self.service.stopService()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class BreakLogTests(MemoryServiceTestCase):
    """
    A connection lost during a session is one pair of lines: lost, and
    back once the session goes on; none claims a new session.
    """

    def break_off(self, session_id=1795604518):
        proto = self.accept()
        self.session(proto, session_id)
        del self.lines[:]
        self.drop(proto)

    def test_the_writer_calls_the_connection_log(self):
        self.assertEqual(self.writer.on_session_resumed,
                         self.service.connection_log.session_resumed)

    def test_a_break_is_one_pair_of_lines(self):
        self.break_off()
        self.reactor.advance(0.05)
        proto = self.accept()
        self.reactor.advance(0.35)
        self.writer.resume = (1795604518, 1)
        self.session(proto, start=6)
        self.assertEqual(self.lines, [
            "Connection to %s lost during session 1795604518: the sender "
            "closed the connection; next try in 0.1 s" % ADDRESS,
            "Connection to %s back after 0.4 s; session 1795604518 goes on; "
            "1 frame missed" % ADDRESS])
        status = self.service.status
        self.assertEqual((status["breaks"], status["frames_missed_in_breaks"]),
                         (1, 1))
        self.assertIsNone(status["connection_trouble"])

    def test_missed_frames_add_up(self):
        proto = self.accept()
        for n, missed in enumerate([2, 0, 3]):
            self.session(proto, start=10 * n)
            self.drop(proto)
            self.reactor.advance(10)
            proto = self.accept()
            self.writer.resume = (1795604518, missed)
            self.session(proto, start=10 * n + 5)
            self.assertTrue(self.lines[-1].endswith(
                "goes on; %d frames missed" % missed), self.lines[-1])
        status = self.service.status
        self.assertEqual((status["breaks"], status["frames_missed_in_breaks"]),
                         (3, 5))

    def test_a_failed_quick_try_is_told_between_the_pair(self):
        self.break_off()
        self.try_again()
        self.refuse()
        self.try_again()
        proto = self.accept()
        self.writer.resume = (1795604518, 4)
        self.session(proto, start=9)
        self.assertEqual(self.lines[1:], [
            "Cannot connect to %s: connection refused; next try in 1.5 s"
            % ADDRESS,
            "Connection to %s back after 1.6 s; session 1795604518 goes on; "
            "4 frames missed" % ADDRESS])

    def test_a_new_session_after_a_break_is_a_plain_reconnect(self):
        self.break_off()
        self.try_again()
        proto = self.accept()
        self.assertEqual(len(self.lines), 1)
        self.session(proto, session_id=1795609999)
        self.assertEqual(self.lines[1:], ["Connected to %s" % ADDRESS])
        self.assertEqual(self.service.status["frames_missed_in_breaks"], 0)

    def test_a_session_that_does_not_go_on_is_a_plain_reconnect_in_time(self):
        self.break_off()
        self.try_again()
        proto = self.accept()
        self.session(proto, start=7)
        self.reactor.advance(9.9)
        self.session(proto, start=8, count=1)
        self.assertEqual(len(self.lines), 1)
        self.reactor.advance(0.1)
        self.session(proto, start=9, count=1)
        self.assertEqual(self.lines[1:], ["Connected to %s" % ADDRESS])

    def test_a_drop_before_the_session_goes_on_is_the_same_break(self):
        self.break_off()
        self.try_again()
        self.drop(self.accept())
        self.try_again()
        proto = self.accept()
        self.writer.resume = (1795604518, 3)
        self.session(proto, start=9)
        self.assertEqual(len(self.lines), 2, self.lines)
        self.assertEqual(self.service.status["breaks"], 1)

    def test_no_session_in_progress_is_a_plain_disconnect(self):
        proto = self.accept()
        proto.dataReceived(F.raw(F.scan(2, session_id=None)))
        del self.lines[:]
        self.drop(proto)
        self.try_again()
        self.accept()
        self.assertEqual(self.lines, [
            "Disconnected from %s: the sender closed the connection; next "
            "try in 0.1 s" % ADDRESS, "Connected to %s" % ADDRESS])
        self.assertEqual(self.service.status["breaks"], 0)

    def test_a_stop_in_a_break_says_nothing_more(self):
        self.break_off()
        self.service.stopService()
        self.assertEqual(len(self.lines), 1)
