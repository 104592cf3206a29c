"""
Wake for a read only when the bytes a frame owes have come.

A frame of megabytes reaches the socket in pieces of whatever the network
delivers.  Read as soon as the kernel has any of it, a 13 MB frame took
a reactor wakeup for every ~300 kB, measured: each one a poll, a read and
the protocol's own work, three or four times as many as the frame needs,
and on a machine whose cores the sender shares, each a chance to lose the
core.  The splitter knows how many bytes the frame in progress still owes
before anything can be done with it (L{tsagg.wire.FrameSplitter.owed}).
Linux's C{SO_RCVLOWAT} has the socket report itself readable only once that
many bytes wait (or the peer closed, or failed), so the reactor wakes once
per read's worth.  The mark is never more than is owed: a frame never waits
for bytes that are not on their way, and a frame boundary sets it back to a
byte, since the next frame's size is not known yet.

Bytes below the mark are in the socket but not yet read: the protocol's idle
timeout asks L{LowWater.unread} before it calls a peer silent.

Where the socket has no such option (not TCP, not Linux, a test's transport
with no socket), L{LowWater} does nothing.
"""

import fcntl
import socket
import struct
import termios

__all__ = ["LowWater"]

_SO_RCVLOWAT = getattr(socket, "SO_RCVLOWAT", None)


def _tcp_socket(transport):
    """
    The TCP socket under C{transport}, or L{None}.
    """
    get = getattr(transport, "getHandle", None)
    handle = get() if get is not None else None
    if (isinstance(handle, socket.socket)
            and handle.family in (socket.AF_INET, socket.AF_INET6)
            and handle.type == socket.SOCK_STREAM):
        return handle
    return None


class LowWater:
    """
    The receive low-water mark of one connection's socket.

    @ivar mark: The bytes the socket must hold before it is read.
    """

    def __init__(self, transport, most):
        """
        @param most: The highest mark: the bytes of one read.
        """
        self._sock = _tcp_socket(transport) if _SO_RCVLOWAT else None
        self._most = most
        self.mark = 1

    def expect(self, owed):
        """
        Read again once C{owed} bytes (at most a read's worth, at least one)
        wait in the socket.
        """
        want = min(max(owed, 1), self._most)
        if want == self.mark or self._sock is None:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, want)
        except OSError:
            # Not here: read as bytes come, as before.
            self._sock = None
            return
        self.mark = want

    def unread(self):
        """
        @return: The bytes in the socket that were not read yet.
        """
        if self._sock is None:
            return 0
        try:
            out = fcntl.ioctl(self._sock.fileno(), termios.FIONREAD,
                              b"\0\0\0\0")
        except (OSError, ValueError):
            return 0
        return struct.unpack("i", out)[0]
