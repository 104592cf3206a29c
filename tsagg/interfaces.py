"""
The interface between the network side of tsagg and what consumes frames.
"""

from zope.interface import Attribute, Interface

__all__ = ["IFrameSink"]


class IFrameSink(Interface):
    """
    Something that takes the frames of one G3 stream, in order.

    The protocol calls C{streamStarted} when a connection is made, then
    C{framesReceived} with the frames of each read whose layout and CRC
    passed, then C{streamStopped} when the connection is gone.  Across
    reconnects the same sink sees many streams, one after the other.
    """

    status = Attribute("A L{dict} of the sink's live counters and state.")

    def streamStarted(producer):
        """
        A connection is up.

        @param producer: The transport, an C{IPushProducer}; the sink may
            pause it to stop reading the socket while it cannot keep up.
        """

    def framesReceived(frames):
        """
        Whole, CRC-checked frames arrived: those that one read of the socket
        completed, in stream order.

        @param frames: L{tsagg.frames.LazyFrame}s.  Each one's C{raw} is the
            frame's bytes exactly as they came off the wire; indexing it or
            its attributes give those of the C{spt3g.core.G3Frame}, which
            spt3g deserializes on that first use.
        @type frames: L{list}
        """

    def streamStopped(reason):
        """
        The connection is gone, at a frame boundary or not.

        @param reason: The L{twisted.python.failure.Failure} of the loss.
        """

    def close():
        """
        Stop for good: close (and sync) any open file.

        @return: A L{twisted.internet.defer.Deferred} that fires when every
            file is closed, or L{None} when that is already so.
        """
