"""
The reactor side of a G3 stream: a Twisted protocol that reassembles frames
from the socket, has spt3g deserialize and CRC-check them, and hands them to
an L{IFrameSink}.
"""

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from tsagg import wire
from tsagg.connlog import ConnectionLog, loss_text
from tsagg.frames import receive_all
from tsagg.interfaces import IFrameSink
from tsagg.lowwater import LowWater

__all__ = ["G3StreamProtocol", "G3StreamFactory", "StreamStats"]


class StreamStats:
    """
    Counters of the network side, shared by every connection of a factory.

    @ivar connections: Connections made.
    @ivar connected: Whether a connection is up now.
    @ivar peer: The address of the current (or last) peer, as text.
    @ivar bytes_received: Bytes read from every connection.
    @ivar frames_received: Whole, CRC-checked frames.
    @ivar bad_frames: Streams dropped for a frame that failed a limit, its
        layout or its CRC.
    @ivar idle_timeouts: Connections dropped for silence.
    @ivar last_error: Text of the last stream error, or L{None}.
    """

    def __init__(self):
        self.connections = 0
        self.connected = False
        self.peer = None
        self.bytes_received = 0
        self.frames_received = 0
        self.bad_frames = 0
        self.idle_timeouts = 0
        self.last_error = None

    def as_dict(self):
        return {
            "connected": self.connected,
            "peer": self.peer,
            "connections": self.connections,
            "reconnects": max(0, self.connections - 1),
            "bytes_received": self.bytes_received,
            "bad_frames": self.bad_frames,
            "idle_timeouts": self.idle_timeouts,
            "last_stream_error": self.last_error,
        }


@implementer(IPushProducer)
class G3StreamProtocol(Protocol, TimeoutMixin):
    """
    Receive one G3 stream and pass each frame to the factory's sink.

    A frame that breaks the stream (a limit exceeded, a malformed header, a
    bad CRC) is counted, and the connection is dropped: there is no way to
    find the next frame after it.  Frames before it are kept.  What the
    connection does (connected, dropped and why) goes to the factory's
    L{ConnectionLog}.

    A peer that sends nothing for C{idle_timeout} seconds while tsagg wants
    data is dropped too.  The protocol is the producer the sink pauses: while
    paused (the sink cannot write) the idle clock stands still, and the time
    the sink spends in its own work on a read does not count either.  The
    timeout finds a silent peer; it never punishes tsagg's own pause.

    The socket is read once the bytes the frame in progress owes have come,
    a read's worth at most (L{LowWater}); bytes waiting below that mark are
    no silence, and the timeout reads them instead of dropping the peer.
    """

    def connectionMade(self):
        factory = self.factory
        self.callLater = factory.clock.callLater
        if hasattr(self.transport, "bufferSize"):
            # Frames are megabytes: Twisted's 64 KiB reads cost a call, an
            # allocation and a piece to join for every 64 KiB.
            self.transport.bufferSize = factory.read_size
        self._splitter = wire.FrameSplitter(**factory.limits)
        self._sink = factory.sink
        self._stats = factory.stats
        self._failed = False
        self._stats.connections += 1
        self._stats.connected = True
        peer = self.transport.getPeer()
        self._stats.peer = "%s:%s" % (getattr(peer, "host", peer),
                                      getattr(peer, "port", ""))
        # Why this side ends the connection, if it does: (text, level).
        self._why = None
        self._receiving = False
        factory.connection_log.connected(self._stats.peer)
        self._paused = False
        self._low_water = LowWater(self.transport, factory.read_size)
        self.setTimeout(factory.idle_timeout)
        self._sink.streamStarted(self)

    def dataReceived(self, data):
        if self._failed:
            return
        self.resetTimeout()
        stats = self._stats
        stats.bytes_received += len(data)
        splitter = self._splitter
        frames, error = receive_all(splitter.split(data))
        if error is not None:
            error = "frame rejected by spt3g: %s" % (error,)
        if frames:
            if not self._receiving:
                self._receiving = True
                self.factory.connection_log.receiving()
            stats.frames_received += len(frames)
            self._sink.framesReceived(frames)
            self.factory.connection_log.frames_taken()
            # A write that took long was tsagg's time, not the peer's.
            self.resetTimeout()
        self._low_water.expect(splitter.owed)
        if error is not None:
            self._fail(error)
        elif splitter.error is not None:
            self._fail("%s: %s" % (type(splitter.error).__name__,
                                   splitter.error))

    # -- IPushProducer, for the sink -------------------------------------

    def pauseProducing(self):
        """
        Stop reading the socket, and the idle clock with it.
        """
        if self._paused:
            return
        self._paused = True
        self.setTimeout(None)
        self.transport.pauseProducing()

    def resumeProducing(self):
        """
        Read the socket again; the peer has C{idle_timeout} seconds anew.
        """
        if not self._paused:
            return
        self._paused = False
        if not self._failed:
            self.setTimeout(self.factory.idle_timeout)
        self.transport.resumeProducing()

    def stopProducing(self):
        self.transport.stopProducing()

    def _fail(self, message):
        self._failed = True
        self._stats.bad_frames += 1
        self._stats.last_error = message
        self._why = ("bad stream, %s" % (message,), "error")
        self.setTimeout(None)
        self.transport.abortConnection()

    def timeoutConnection(self):
        if self._low_water.unread():
            # Bytes came, fewer than the frame owes: the peer is slow, not
            # silent.  Read them now, and give it the timeout anew.
            self._low_water.expect(1)
            self.setTimeout(self.factory.idle_timeout)
            return
        self._stats.idle_timeouts += 1
        self._stats.last_error = ("no data for %s s" % (self.timeOut,))
        self._why = (self._stats.last_error, "warn")
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.setTimeout(None)
        self._stats.connected = False
        why, level = self._why or (loss_text(reason), "warn")
        self.factory.connection_log.lost(why, self._splitter.buffered, level)
        self._sink.streamStopped(reason)


class G3StreamFactory(Factory):
    """
    Make L{G3StreamProtocol}s that feed one sink.

    @ivar sink: The L{IFrameSink} of every connection.
    @ivar clock: The C{IReactorTime} of the idle timeout.
    @ivar idle_timeout: Seconds of silence after which a peer is dropped, or
        L{None} for never.
    @ivar limits: Keyword arguments of L{wire.FrameSplitter}.
    @ivar stats: The L{StreamStats} of all connections.
    @ivar read_size: Bytes asked of the socket per read.
    @ivar connection_log: The L{ConnectionLog} that tells the operator what
        the connections do.
    """

    read_size = 1 << 20

    protocol = G3StreamProtocol

    # No "Starting factory <...>" and "Stopping factory <...>" at every
    # connection: the connection log says what happens, in words.
    noisy = False

    def __init__(self, sink, clock, idle_timeout=30.0,
                 max_frame_size=wire.DEFAULT_MAX_FRAME_SIZE,
                 max_entries=wire.DEFAULT_MAX_ENTRIES,
                 max_key_length=wire.DEFAULT_MAX_KEY_LENGTH,
                 connection_log=None):
        self.sink = IFrameSink(sink)
        if connection_log is None:
            connection_log = ConnectionLog("the sender", clock)
        self.connection_log = connection_log
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.limits = dict(max_frame_size=max_frame_size,
                           max_entries=max_entries,
                           max_key_length=max_key_length)
        self.stats = StreamStats()
