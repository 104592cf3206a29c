"""
Split a byte stream of serialized G3 frames into whole frames.

A G3 stream (a ``.g3`` file, or the bytes a ``G3NetworkSender`` puts on a
socket) is serialized frames back to back with no framing around them, so the
only way to find where a frame ends is to walk its entries.  This module does
that incrementally and without I/O: bytes go in, each whole frame comes out
as the pieces of the reads it came in, with the offsets of its entries.  It does not check the CRC (spt3g does that when the frame is
deserialized) and it never allocates from a length it has not validated.

Layout of one frame, all integers little-endian::

    u8  endianness flag (1)     u32 class version (1)
    u32 entry count N           u32 frame type (ASCII code)
    N * (u64 key length, key, u64 blob length, blob)
    u32 CRC-32C
"""

import struct

from tsagg.pieces import Layout, join

__all__ = [
    "FrameSplitter", "frame_entries", "frame_spans", "join", "FrameError", "BadEndianness", "BadClassVersion",
    "BadFrameType", "TooManyEntries", "KeyTooLong", "FrameTooLarge",
    "FRAME_TYPE_CODES", "DEFAULT_MAX_FRAME_SIZE", "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_KEY_LENGTH",
]

#: Frame type codes of ``spt3g.core.G3FrameType``.
FRAME_TYPE_CODES = frozenset(b"TSOWCHPZNMIGELR")

DEFAULT_MAX_FRAME_SIZE = 1 << 30
DEFAULT_MAX_ENTRIES = 1 << 16
DEFAULT_MAX_KEY_LENGTH = 1 << 12

_HEADER = struct.Struct("<BIII")
_HEADER_SIZE = _HEADER.size            # 13
_U64 = struct.Struct("<Q")
_CRC_SIZE = 4
_ENDIANNESS_LITTLE = 1
_CLASS_VERSION = 1

# The fields a frame that spans reads waits for, and their sizes.
_S_HEADER, _S_KEYLEN, _S_BLOBLEN, _S_CRC = range(4)
_FIELD_SIZE = (_HEADER_SIZE, 8, 8, _CRC_SIZE)


class FrameError(ValueError):
    """
    The stream is not a valid sequence of G3 frames.

    @ivar offset: Offset in the stream of the first byte of the frame that is
        bad.
    """

    def __init__(self, message, offset=None):
        ValueError.__init__(self, message)
        self.offset = offset


class BadEndianness(FrameError):
    """The endianness flag of a frame is not the portable little-endian 1."""


class BadClassVersion(FrameError):
    """A frame has a G3Frame class version this reader does not know."""


class BadFrameType(FrameError):
    """A frame's type code is not one of ``spt3g.core.G3FrameType``."""


class TooManyEntries(FrameError):
    """A frame declares more entries than the configured limit."""


class KeyTooLong(FrameError):
    """An entry's key is longer than the configured limit."""


class FrameTooLarge(FrameError):
    """A frame is (or declares itself) larger than the configured limit."""


class FrameSplitter:
    """
    Incremental splitter of a G3 byte stream into the pieces of each frame.

    A frame comes out as the pieces of the reads it came in (views of
    them, not copies), so that its bytes can go to disk as they came off
    the socket.  Only the length fields of a frame are read, each once; a
    read that ends inside a frame costs nothing but a note of where its
    next length field lies.  Total work is linear in the entries received
    and does not grow with the bytes in their blobs.

    After a L{FrameError} the stream cannot be resynchronized (there is no
    marker to find the next frame by): the error is kept in C{error} and
    later calls to L{feed} return nothing.

    @ivar max_frame_size: Largest frame accepted, in bytes, CRC included.
    @ivar max_entries: Largest number of entries in one frame.
    @ivar max_key_length: Longest key accepted, in bytes.
    @ivar error: The L{FrameError} that ended the stream, or L{None}.
    @ivar offset: Bytes of the stream consumed into whole frames so far.
    """

    def __init__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                 max_entries=DEFAULT_MAX_ENTRIES,
                 max_key_length=DEFAULT_MAX_KEY_LENGTH):
        if max_frame_size < _HEADER_SIZE + _CRC_SIZE:
            raise ValueError("max_frame_size is too small for any frame")
        self.max_frame_size = max_frame_size
        self.max_entries = max_entries
        self.max_key_length = max_key_length
        self.error = None
        self.offset = 0
        # The layout of the last whole frame, which the next one likely
        # repeats.
        self._layout = None
        self._reset()

    def _reset(self):
        # The frame that spans reads: its pieces (views of the reads), their
        # size, the entries found so far, the frame offset of the next field
        # to read and which field it is, and the entries left after it.
        self._pieces = []
        self._size = 0
        self._spans = []
        self._at = 0
        self._field = _S_HEADER
        self._key = 0
        self._entries_left = 0

    @property
    def buffered(self):
        """
        Bytes held for the frame now being received.
        """
        return self._size

    @property
    def owed(self):
        """
        Bytes the stream must bring before the frame now being received can
        take its next step (the rest of the length field or blob awaited):
        bytes the peer owes.  0 at a frame boundary, where the size of the
        next frame is not known.
        """
        if not self._size:
            return 0
        return max(0, self._at + _FIELD_SIZE[self._field] - self._size)

    def feed(self, data):
        """
        Take the next bytes of the stream.

        @param data: Any bytes-like object.
        @return: The raw bytes (L{bytes}) of each frame completed by C{data},
            in stream order.  If C{data} makes the stream invalid, the frames
            completed before the bad one are still returned and C{error} is
            set.
        @rtype: L{list} of L{bytes}
        """
        return [join(pieces) for pieces, _, _ in self.split(data)]

    def split(self, data):
        """
        Like L{feed}, each frame as the pieces it came in.

        @return: C{(pieces, size, spans)} for each frame completed by
            C{data}: its pieces (L{memoryview}s of this read and of the
            reads before it, in order), their total size, and the offsets
            in the frame of each entry, C{(key, blob length, blob end)}:
            its key runs from the first to the second, its blob from 8 bytes
            after the second to the third.
        """
        frames = []
        if self.error is not None:
            return frames
        if not isinstance(data, bytes):
            # Pieces are kept as views of the input, so the input must be
            # immutable.
            data = bytes(data)
        view = memoryview(data)
        end = len(view)
        pos = 0
        try:
            if self._size:
                pos = self._go_on(view, end, frames)
            while pos < end:
                layout = self._layout
                if (layout is not None and end - pos >= layout.size
                        and layout.matches(view, pos)):
                    # The layout of the frame before: the common case, and
                    # most often a run of frames of it.
                    start = pos
                    pos = layout.run(view, pos, end, frames)
                    self.offset += pos - start
                    continue
                # At a frame boundary: a frame wholly inside this read is
                # walked with direct offsets.
                whole = self._whole_frame(view, pos, end)
                if whole is None:
                    self._pieces = [view[pos:]]
                    self._size = end - pos
                    self._go_on(None, end, frames)
                    break
                frame_end, spans = whole
                size = frame_end - pos
                frames.append(([view[pos:frame_end]], size, spans))
                self.offset += size
                pos = frame_end
        except FrameError as e:
            e.offset = self.offset
            self.error = e
            self._reset()
        return frames

    # -- whole frames within one buffer -------------------------------------

    def _whole_frame(self, view, pos, end):
        """
        Find a frame that starts at C{pos} and lies wholly in C{view[:end]}
        (one of another layout than the frame before: L{split} takes those
        of the same).

        @return: The offset one past the frame's CRC and the spans of its
            entries (as in L{split}, from the frame's start).  L{None} if
            the frame is not complete within the buffer.
        @raise FrameError: The frame is invalid.
        """
        if end - pos < _HEADER_SIZE:
            return None
        flag, version, entries, ftype = _HEADER.unpack_from(view, pos)
        self._check_header(flag, version, entries, ftype)
        limit = pos + self.max_frame_size
        unpack_u64 = _U64.unpack_from
        max_key = self.max_key_length
        p = pos + _HEADER_SIZE
        spans = []
        for _ in range(entries):
            if p + 8 > end:
                return None
            (klen,) = unpack_u64(view, p)
            if klen > max_key:
                raise KeyTooLong("key of %d bytes exceeds the limit of %d"
                                 % (klen, max_key))
            key = p + 8
            p = key + klen
            if p + 8 > end:
                return None
            (blen,) = unpack_u64(view, p)
            blob_len = p
            p += 8
            if blen > limit - p:
                raise FrameTooLarge("frame exceeds the limit of %d bytes"
                                    % (self.max_frame_size,))
            p += blen
            spans.append((key - pos, blob_len - pos, p - pos))
        if p + _CRC_SIZE > limit:
            raise FrameTooLarge("frame exceeds the limit of %d bytes"
                                % (self.max_frame_size,))
        p += _CRC_SIZE
        if p > end:
            return None
        self._layout = layout = Layout(view, pos, p - pos, spans)
        return p, layout.spans

    def _check_header(self, flag, version, entries, ftype):
        if flag != _ENDIANNESS_LITTLE:
            raise BadEndianness("endianness flag is 0x%02x, not 0x01" % flag)
        if version != _CLASS_VERSION:
            raise BadClassVersion("G3Frame class version %d is not %d"
                                  % (version, _CLASS_VERSION))
        if ftype not in FRAME_TYPE_CODES:
            raise BadFrameType("frame type code 0x%08x is unknown" % ftype)
        if entries > self.max_entries:
            raise TooManyEntries("%d entries exceed the limit of %d"
                                 % (entries, self.max_entries))

    # -- a frame across reads -------------------------------------------------

    def _go_on(self, view, end, frames):
        """
        Take the next read into the frame that spans reads (C{view} is
        L{None} when its pieces hold the read already), and read every
        length field it completes.

        @return: The offset in the read just past the frame's end if it
            completed (the frame is appended to C{frames}), else C{end}.
        """
        if view is not None:
            self._pieces.append(view)
            self._size += end
        size = self._size
        limit = self.max_frame_size
        while True:
            field = self._field
            at = self._at
            need = _FIELD_SIZE[field]
            if at + need > size:
                if size > limit:
                    raise FrameTooLarge("frame exceeds the limit of %d bytes"
                                        % (limit,))
                return end
            raw = self._bytes_at(at, need)
            if field == _S_HEADER:
                flag, version, entries, ftype = _HEADER.unpack(raw)
                self._check_header(flag, version, entries, ftype)
                self._entries_left = entries
                self._at = _HEADER_SIZE
            elif field == _S_KEYLEN:
                (klen,) = _U64.unpack(raw)
                if klen > self.max_key_length:
                    raise KeyTooLong("key of %d bytes exceeds the limit of %d"
                                     % (klen, self.max_key_length))
                self._key = at + 8
                self._at = self._key + klen
                self._field = _S_BLOBLEN
                continue
            elif field == _S_BLOBLEN:
                (blen,) = _U64.unpack(raw)
                if blen > limit - at - 8:
                    raise FrameTooLarge("frame exceeds the limit of %d bytes"
                                        % (limit,))
                self._at = at + 8 + blen
                self._spans.append((self._key, at, self._at))
                self._entries_left -= 1
            else:  # _S_CRC
                return self._complete(at + _CRC_SIZE, end, frames)
            if self._entries_left:
                self._field = _S_KEYLEN
            else:
                self._field = _S_CRC
                if self._at + _CRC_SIZE > limit:
                    raise FrameTooLarge("frame exceeds the limit of %d bytes"
                                        % (limit,))

    def _bytes_at(self, at, count):
        """
        The C{count} bytes at offset C{at} of the frame that spans reads
        (a length field: a few bytes, perhaps across two pieces).
        """
        start = self._size
        pieces = self._pieces
        for i in range(len(pieces) - 1, -1, -1):
            start -= len(pieces[i])
            if start <= at:
                break
        found = pieces[i][at - start:at - start + count]
        if len(found) == count:
            return found
        found = bytes(found)
        while len(found) < count:
            i += 1
            found += pieces[i][:count - len(found)]
        return found

    def _complete(self, frame_end, end, frames):
        """
        The frame that spans reads ends at C{frame_end}: cut its last piece
        there and hand it on.

        @return: The offset in the last read where the next frame begins.
        """
        pieces = self._pieces
        over = self._size - frame_end
        last = pieces[-1]
        pieces[-1] = last[:len(last) - over]
        frames.append((pieces, frame_end, self._spans))
        self.offset += frame_end
        self._reset()
        return end - over


def frame_spans(raw):
    """
    The offsets of the entries of one whole serialized frame, as
    L{FrameSplitter.split} gives them.

    @param raw: The bytes of exactly one frame.
    @raise FrameError: C{raw} is not exactly one frame.
    """
    view = memoryview(raw)
    end = len(view)
    if end < _HEADER_SIZE + _CRC_SIZE:
        raise FrameError("%d bytes are too few for a frame" % (end,))
    entries = _HEADER.unpack_from(view, 0)[2]
    pos = _HEADER_SIZE
    spans = []
    for _ in range(entries):
        if pos + 8 > end:
            raise FrameError("frame ends inside an entry")
        (klen,) = _U64.unpack_from(view, pos)
        key = pos = pos + 8
        if klen > end - pos:
            raise FrameError("key runs past the end of the frame")
        pos += klen
        if pos + 8 > end:
            raise FrameError("frame ends inside an entry")
        (blen,) = _U64.unpack_from(view, pos)
        blob_len = pos
        pos += 8
        if blen > end - pos:
            raise FrameError("blob runs past the end of the frame")
        pos += blen
        spans.append((key, blob_len, pos))
    if pos + _CRC_SIZE != end:
        raise FrameError("frame does not end after its CRC")
    return spans


def frame_entries(raw):
    """
    The entries of one whole serialized frame, without decoding any blob.

    @param raw: The bytes of exactly one frame.
    @return: C{(key, blob)} pairs in stream order, the key as L{bytes} and
        the blob as a L{memoryview} of C{raw}.
    @raise FrameError: C{raw} is not exactly one frame.
    """
    view = memoryview(raw)
    return [(view[k:b].tobytes(), view[b + 8:e])
            for k, b, e in frame_spans(view)]
