"""
Tests for L{tsagg.lowwater}: the protocol over real TCP on loopback wakes
once per read's worth of a big frame, and never holds bytes it was sent.
"""

import sys

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from tsagg.lowwater import LowWater
from tsagg.protocol import G3StreamFactory, G3StreamProtocol

from tests import frames as F
from tests.test_protocol import RecordingSink
from tests.test_service import PeerFactory, wait_until

LINUX = sys.platform.startswith("linux")


class CountingProtocol(G3StreamProtocol):
    """
    The protocol, counting the reads it is given.
    """

    def dataReceived(self, data):
        self.factory.reads += 1
        G3StreamProtocol.dataReceived(self, data)


class Loopback:
    """
    A sender and tsagg's protocol, connected over loopback TCP in this
    reactor.
    """

    def __init__(self, test, idle_timeout=30.0):
        self.sink = RecordingSink()
        self.stopped = defer.Deferred()
        self.sink.streamStopped = lambda reason: self.stopped.callback(None)
        self.factory = G3StreamFactory(self.sink, reactor,
                                       idle_timeout=idle_timeout)
        self.factory.protocol = CountingProtocol
        self.factory.reads = 0
        self.server = PeerFactory()
        self.connected = self.server.next_connection()
        port = reactor.listenTCP(0, self.server, interface="127.0.0.1")
        test.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.test = test

    @defer.inlineCallbacks
    def connect(self):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        self.client = yield endpoint.connect(self.factory)
        self.peer = yield self.connected
        self.test.addCleanup(self.close)
        return self.peer

    def close(self):
        self.peer.transport.abortConnection()
        if not self.stopped.called:
            return self.stopped

    @defer.inlineCallbacks
    def send_slowly(self, data, piece, every):
        """
        Write C{data} C{piece} bytes at a time, one piece every C{every}
        seconds.
        """
        for i in range(0, len(data), piece):
            self.peer.transport.write(data[i:i + piece])
            yield task.deferLater(reactor, every, lambda: None)


class ReadsTests(unittest.TestCase):

    if not LINUX:
        skip = "SO_RCVLOWAT's wakeups are Linux's"

    @defer.inlineCallbacks
    def test_a_big_frame_sent_in_small_pieces_takes_few_reads(self):
        """
        A 4 MB frame that comes 32 KiB at a time is read about a read's
        worth (1 MiB) at a time, not once per piece (128 of them).
        """
        link = Loopback(self)
        yield link.connect()
        raw = F.raw(F.scan(1, channels=64, samples=16000))
        self.assertGreater(len(raw), 4000000)
        yield link.send_slowly(raw, 32 << 10, 0.001)
        yield wait_until(lambda: link.sink.raws)
        self.assertEqual(link.sink.raws, [raw])
        self.assertLessEqual(link.factory.reads, 10)

    @defer.inlineCallbacks
    def test_the_last_few_bytes_of_a_frame_are_not_held(self):
        """
        The mark never asks for more than the frame owes: when the last
        bytes of a frame are fewer than a read's worth and nothing follows,
        the frame still comes at once.
        """
        link = Loopback(self)
        peer = yield link.connect()
        raw = F.raw(F.scan(1, channels=64, samples=6000))
        peer.transport.write(raw[:len(raw) - 1000])
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(link.sink.raws, [])
        peer.transport.write(raw[len(raw) - 1000:])
        yield wait_until(lambda: link.sink.raws, timeout=1.0)
        self.assertEqual(link.sink.raws, [raw])

    @defer.inlineCallbacks
    def test_small_frames_are_not_held(self):
        link = Loopback(self)
        peer = yield link.connect()
        raws = [F.raw(F.scan(i)) for i in range(3)]
        for raw in raws:
            peer.transport.write(raw)
            yield wait_until(lambda: link.sink.raws[-1:] == [raw],
                             timeout=1.0)
        self.assertEqual(link.sink.raws, raws)

    @defer.inlineCallbacks
    def test_a_close_mid_frame_is_seen_at_once(self):
        """
        Below the mark, the peer's close still wakes the reactor: the
        connection is lost, and the partial frame is not a frame.
        """
        link = Loopback(self)
        peer = yield link.connect()
        whole = F.raw(F.scan(0))
        raw = F.raw(F.scan(1, channels=64, samples=16000))
        peer.transport.write(whole + raw[:100000])
        yield wait_until(lambda: link.factory.reads)
        started = reactor.seconds()
        peer.transport.loseConnection()
        yield link.stopped
        self.assertLess(reactor.seconds() - started, 1.0)
        self.assertEqual(link.sink.raws, [whole])


class IdleTimeoutTests(unittest.TestCase):

    if not LINUX:
        skip = "SO_RCVLOWAT's wakeups are Linux's"

    @defer.inlineCallbacks
    def test_a_slow_peer_below_the_mark_is_not_dropped(self):
        """
        Bytes that trickle in below the mark are not read at once, but
        they are not silence: the idle timeout finds them in the socket.
        """
        link = Loopback(self, idle_timeout=0.3)
        peer = yield link.connect()
        raw = F.raw(F.scan(1, channels=64, samples=16000))
        head, tail = raw[:200000], raw[200000:]
        peer.transport.write(head)
        # 2 s at 10 kB/s: far less than a read's worth, for over six
        # timeouts.
        yield link.send_slowly(tail[:20000], 1000, 0.1)
        self.assertEqual(link.factory.stats.idle_timeouts, 0)
        self.assertFalse(link.stopped.called)
        peer.transport.write(tail[20000:])
        yield wait_until(lambda: link.sink.raws)
        self.assertEqual(link.sink.raws, [raw])

    @defer.inlineCallbacks
    def test_a_peer_silent_mid_frame_is_dropped(self):
        link = Loopback(self, idle_timeout=0.2)
        peer = yield link.connect()
        raw = F.raw(F.scan(1, channels=64, samples=16000))
        started = reactor.seconds()
        peer.transport.write(raw[:300000])
        yield link.stopped
        # At most twice the timeout: once to read what waited below the
        # mark, once for the silence after it.
        self.assertLess(reactor.seconds() - started, 1.0)
        self.assertEqual(link.factory.stats.idle_timeouts, 1)
        self.assertEqual(link.sink.raws, [])


class NoSocketTests(unittest.TestCase):
    """
    With no TCP socket under the transport, the mark does nothing.
    """

    def test_no_socket(self):
        low = LowWater(StringTransport(), 1 << 20)
        low.expect(5000)
        self.assertEqual(low.mark, 1)
        self.assertEqual(low.unread(), 0)
