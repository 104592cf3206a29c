"""
A received frame as the pieces of the reads it came in: joined into one
object only when something asks, a range copied out of them; and the
layout by which a frame that repeats the one before it is recognized in one
unpack (L{tsagg.wire.FrameSplitter}).
"""

import struct

__all__ = ["Layout", "join", "piece_range", "HEADER_SIZE"]

#: Bytes of a frame's header: endianness flag, class version, entry count,
#: frame type.
HEADER_SIZE = 13


def piece_range(pieces, start, end):
    """
    The bytes at offsets C{start} to C{end} of a frame given as its pieces,
    copied out of them.
    """
    found = []
    at = 0
    for piece in pieces:
        size = len(piece)
        if at + size > start and at < end:
            found.append(piece[max(start - at, 0):end - at])
        at += size
        if at >= end:
            break
    return b"".join(found)


def join(pieces):
    """
    The bytes of a frame given as its pieces: a copy, unless it is one
    piece that is a whole L{bytes} object.
    """
    if len(pieces) == 1:
        piece = pieces[0]
        obj = getattr(piece, "obj", None)
        if type(obj) is bytes and len(obj) == len(piece):
            return obj
        return bytes(piece)
    return b"".join(pieces)


class Layout:
    """
    The layout of a frame: the bytes of its header and of each entry's
    key and lengths, everything but the contents of its blobs and its CRC.
    A stream's frames mostly repeat one layout (the same keys, blobs of the
    same lengths); a frame whose layout bytes equal another's has the same
    entries at the same offsets, so one C{struct} unpack of them stands for
    the walk over its entries, and reads the same bytes.

    @ivar size: The frame's size.
    @ivar spans: The offsets of its entries, as from L{tsagg.wire.FrameSplitter.split}
        (a L{tuple}, the same object for every frame of the layout).
    """

    def __init__(self, view, pos, size, spans):
        # From each entry's key length to its blob's first byte, after the
        # blob before it (the first from the header on).
        fields = []
        at = 0
        for key, blob_len, _ in spans:
            start = key - 8 if at else 0
            fields.append("%dx%ds" % (start - at, blob_len + 8 - start))
            at = blob_len + 8
        if not spans:
            fields.append("%ds" % HEADER_SIZE)
        self._struct = struct.Struct("<" + "".join(fields))
        self._bytes = self._struct.unpack_from(view, pos)
        self.size = size
        self.spans = tuple(spans)

    def matches(self, view, pos):
        """
        Whether the frame at C{pos} of C{view} (with at least C{size} bytes
        from there) has this layout.
        """
        return self._struct.unpack_from(view, pos) == self._bytes

    def run(self, view, pos, end, frames):
        """
        Cut the frames of this layout that follow each other in C{view}
        from C{pos} (the first known to match) up to C{end}, appending each
        to C{frames} as L{tsagg.wire.FrameSplitter.split} gives it.

        @return: The offset just past the last of them.
        """
        size = self.size
        spans = self.spans
        unpack = self._struct.unpack_from
        expected = self._bytes
        append = frames.append
        while True:
            append(([view[pos:pos + size]], size, spans))
            pos += size
            if end - pos < size or unpack(view, pos) != expected:
                return pos
