"""
Tests for L{tsagg.protocol}, over a L{StringTransport}.
"""

import struct

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from tsagg.interfaces import IFrameSink
from tsagg.protocol import G3StreamFactory

from tests import frames as F


@implementer(IFrameSink)
class RecordingSink:
    """
    A sink that remembers what it was given.
    """

    def __init__(self):
        self.events = []
        self.raws = []
        self.frames = []
        self.producer = None

    @property
    def status(self):
        return {}

    def streamStarted(self, producer):
        self.producer = producer
        self.events.append("started")

    def framesReceived(self, frames):
        self.events.append(len(frames))
        for frame in frames:
            self.frames.append(frame)
            self.raws.append(frame.raw)

    def streamStopped(self, reason):
        self.events.append("stopped")

    def close(self):
        pass


class ProtocolTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.sink = RecordingSink()
        self.factory = G3StreamFactory(self.sink, self.clock, idle_timeout=30,
                                       max_frame_size=1 << 20)
        self.connect()

    def connect(self):
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.proto = self.factory.buildProtocol(self.transport.getPeer())
        self.proto.makeConnection(self.transport)

    def lose(self):
        self.proto.connectionLost(Failure(ConnectionDone()))

    @property
    def stats(self):
        return self.factory.stats.as_dict()


class DeliveryTests(ProtocolTestCase):

    def test_frames_reach_the_sink_with_raw_bytes(self):
        raws = [F.raw(F.observation()), F.raw(F.scan(1)), F.raw(F.scan(2))]
        for i in range(0, len(b"".join(raws)), 100):
            self.proto.dataReceived(b"".join(raws)[i:i + 100])
        self.assertEqual(self.sink.raws, raws)
        self.assertEqual(self.sink.frames[1]["frame_num"], 1)
        self.assertEqual(self.stats["bytes_received"], len(b"".join(raws)))

    def test_the_frames_of_one_read_come_as_one_batch(self):
        raws = [F.raw(F.scan(n)) for n in range(1, 4)]
        data = b"".join(raws)
        self.proto.dataReceived(data)
        cut = len(raws[0]) + 10
        self.proto.dataReceived(data[:cut])
        self.proto.dataReceived(data[cut:])
        self.assertEqual(self.sink.events, ["started", 3, 1, 2])
        self.assertEqual(self.sink.raws, raws + raws)
        self.assertEqual(self.factory.stats.frames_received, 6)

    def test_the_sink_pauses_and_resumes_the_socket(self):
        self.assertEqual(self.sink.events, ["started"])
        self.sink.producer.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.sink.producer.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_connection_lost_reaches_the_sink(self):
        self.lose()
        self.assertEqual(self.sink.events, ["started", "stopped"])
        self.assertFalse(self.stats["connected"])

    def test_reconnects_counted(self):
        self.lose()
        self.connect()
        self.assertEqual(self.stats["connections"], 2)
        self.assertEqual(self.stats["reconnects"], 1)
        self.assertEqual(self.stats["peer"], "127.0.0.1:50000")


class BadStreamTests(ProtocolTestCase):
    """
    A bad frame drops the connection; nothing of it reaches the sink, the
    frames before it do.
    """

    def assertDropped(self, bad):
        good = F.raw(F.scan(1))
        self.proto.dataReceived(good + bad + F.raw(F.scan(2)))
        self.assertEqual(self.sink.raws, [good])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.stats["bad_frames"], 1)
        self.assertIsNotNone(self.stats["last_stream_error"])
        # Whatever else comes before the socket closes is ignored.
        self.proto.dataReceived(F.raw(F.scan(3)))
        self.assertEqual(self.sink.raws, [good])
        self.lose()

    def test_bad_crc(self):
        raw = bytearray(F.raw(F.scan(5)))
        raw[-1] ^= 0xFF
        self.assertDropped(bytes(raw))
        self.assertIn("CRC", self.stats["last_stream_error"])

    def test_corrupt_blob_with_good_layout(self):
        raw = bytearray(F.raw(F.scan(5)))
        raw[40] ^= 0xFF
        self.assertDropped(bytes(raw))

    def test_frame_over_the_limit(self):
        big = F.handmade([(b"k", b"x" * (2 << 20))])
        self.assertDropped(big)
        self.assertIn("FrameTooLarge", self.stats["last_stream_error"])

    def test_garbage(self):
        self.assertDropped(b"GET / HTTP/1.1\r\n\r\n" * 3)

    def test_blob_length_2_to_the_64(self):
        bad = F.handmade([], count=1)[:13] + struct.pack("<Q", 1) + b"k"
        self.assertDropped(bad + struct.pack("<Q", 2 ** 64 - 1))


class IdleTimeoutTests(ProtocolTestCase):

    def test_silent_peer_is_dropped(self):
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.stats["idle_timeouts"], 1)
        self.lose()

    def test_bytes_reset_the_timeout(self):
        raw = F.raw(F.scan(1))
        for i in range(10):
            self.clock.advance(20)
            self.proto.dataReceived(raw[i:i + 1])
        self.assertFalse(self.transport.disconnecting)
        self.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_half_frame_then_silence(self):
        raw = F.raw(F.scan(1))
        self.proto.dataReceived(raw[:len(raw) // 2])
        self.clock.advance(30)
        self.assertTrue(self.transport.disconnecting)
        self.lose()
        self.assertEqual(self.sink.raws, [])

    def test_paused_time_does_not_count(self):
        self.clock.advance(20)
        self.sink.producer.pauseProducing()
        self.clock.advance(3600)
        self.assertFalse(self.transport.disconnecting)
        self.sink.producer.resumeProducing()
        # The peer has the whole timeout anew from the resume.
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.lose()

    def test_time_in_the_sinks_own_work_does_not_count(self):
        clock = self.clock

        def slow_write(frames):
            # A write stalled for a minute on a hung file system: the time
            # passes, and the reactor runs no timer meanwhile.
            clock.rightNow += 60
        self.sink.framesReceived = slow_write
        self.clock.advance(20)
        self.proto.dataReceived(F.raw(F.scan(1)))
        self.clock.advance(0)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.lose()

    def test_no_timeout_after_loss(self):
        self.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FakeConnectionLog:
    """
    A L{tsagg.connlog.ConnectionLog} that remembers what it was told.
    """

    def __init__(self):
        self.calls = []
        self.batches_taken = 0

    def connected(self, peer):
        self.calls.append(("connected", peer))

    def receiving(self):
        self.calls.append(("receiving",))

    def lost(self, why, partial=0, level="warn"):
        self.calls.append(("lost", why, partial, level))

    def frames_taken(self):
        self.batches_taken += 1


class ConnectionLogTests(ProtocolTestCase):
    """
    The protocol tells the connection log what happens, and why a
    connection ended.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.sink = RecordingSink()
        self.connection_log = FakeConnectionLog()
        self.factory = G3StreamFactory(self.sink, self.clock, idle_timeout=30,
                                       max_frame_size=1 << 20,
                                       connection_log=self.connection_log)
        self.connect()

    def test_the_factory_is_not_noisy(self):
        self.assertFalse(self.factory.noisy)

    def test_connected_then_receiving_once(self):
        self.proto.dataReceived(F.raw(F.scan(1)))
        self.proto.dataReceived(F.raw(F.scan(2)))
        self.assertEqual(self.connection_log.calls,
                         [("connected", "127.0.0.1:50000"), ("receiving",)])

    def test_each_batch_is_told_once_the_sink_has_it(self):
        taken = []
        self.sink.framesReceived = lambda frames: taken.append(
            self.connection_log.batches_taken)
        self.proto.dataReceived(F.raw(F.scan(1)))
        self.proto.dataReceived(F.raw(F.scan(2)) + F.raw(F.scan(3)))
        self.assertEqual(taken, [0, 1])
        self.assertEqual(self.connection_log.batches_taken, 2)

    def test_closed_by_the_sender(self):
        self.lose()
        self.assertEqual(self.connection_log.calls[-1],
                         ("lost", "the sender closed the connection", 0,
                          "warn"))

    def test_idle_timeout(self):
        self.clock.advance(30)
        self.lose()
        self.assertEqual(self.connection_log.calls[-1],
                         ("lost", "no data for 30 s", 0, "warn"))

    def test_bad_stream_is_an_error(self):
        raw = bytearray(F.raw(F.scan(5)))
        raw[-1] ^= 0xFF
        self.proto.dataReceived(bytes(raw))
        self.lose()
        _, why, _, level = self.connection_log.calls[-1]
        self.assertTrue(why.startswith("bad stream, frame rejected by "
                                       "spt3g: "), why)
        self.assertEqual(level, "error")

    def test_partial_frame_is_counted(self):
        raw = F.raw(F.scan(1))
        self.proto.dataReceived(raw[:100])
        self.lose()
        self.assertEqual(self.connection_log.calls[-1][2], 100)
