"""
Split a byte stream of serialized G3 frames into whole frames.

A G3 stream (a ``.g3`` file, or the bytes a ``G3NetworkSender`` puts on a
socket) is serialized frames back to back with no framing around them, so the
only way to find where a frame ends is to walk its entries.  This module does
that incrementally and without I/O: bytes go in, the raw bytes of each whole
frame come out.  It does not check the CRC (spt3g does that when the frame is
deserialized) and it never allocates from a length it has not validated.

Layout of one frame, all integers little-endian::

    u8  endianness flag (1)     u32 class version (1)
    u32 entry count N           u32 frame type (ASCII code)
    N * (u64 key length, key, u64 blob length, blob)
    u32 CRC-32C
"""

import struct

__all__ = [
    "FrameSplitter", "frame_entries", "FrameError", "BadEndianness", "BadClassVersion",
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

# States of the incremental parser.
_S_HEADER, _S_KEYLEN, _S_KEY, _S_BLOBLEN, _S_BLOB, _S_CRC = range(6)


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


# Frames smaller than this get their blobs as copies, not views.
_COPY_BLOBS_BELOW = 1 << 16


class FrameSplitter:
    """
    Incremental splitter of a G3 byte stream into the raw bytes of each frame.

    Every byte is looked at once (twice at most for the tail of a read that
    ends inside a frame), and each frame's bytes are joined exactly once, so
    total work is linear in the bytes received whatever their chunking.

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
        # Pieces (memoryviews of received chunks) of the incomplete frame.
        self._parts = []
        self._size = 0          # bytes of the incomplete frame so far
        self._state = _S_HEADER
        self._need = _HEADER_SIZE
        self._field = bytearray()
        self._entries_left = 0

    @property
    def buffered(self):
        """
        Bytes held for the frame now being received.
        """
        return self._size

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
        return [raw for raw, _ in self.split(data)]

    def split(self, data):
        """
        Like L{feed}, with the entries of each frame when they were found on
        the way.

        @return: C{(raw, entries)} for each frame completed by C{data}:
            C{entries} as L{frame_entries} would give them (each blob a
            view of C{raw}, or its own copy in a frame under 64 kB), or
            L{None} for a frame that spanned reads.
        """
        frames = []
        if self.error is not None:
            return frames
        if not isinstance(data, bytes):
            # Pieces of a partial frame are kept as views of the input, so
            # the input must be immutable.
            data = bytes(data)
        view = memoryview(data)
        end = len(view)
        pos = 0
        try:
            while pos < end:
                if self._size == 0:
                    # At a frame boundary: whole frames inside this read are
                    # parsed with direct offsets, the common case.
                    whole = self._whole_frame(view, pos, end)
                    if whole is not None:
                        frame_end, spans = whole
                        raw = data[pos:frame_end]
                        if frame_end - pos < _COPY_BLOBS_BELOW:
                            # Copying a few kB costs less than making a
                            # view.
                            entries = [(data[k:b], data[b + 8:e])
                                       for k, b, e in spans]
                        else:
                            rv = memoryview(raw)
                            entries = [(data[k:b], rv[b + 8 - pos:e - pos])
                                       for k, b, e in spans]
                        frames.append((raw, entries))
                        self.offset += frame_end - pos
                        pos = frame_end
                        continue
                pos = self._consume(view, pos, end, frames)
        except FrameError as e:
            e.offset = self.offset
            self.error = e
            self._parts = []
            self._field = bytearray()
        return frames

    # -- whole frames within one buffer -------------------------------------

    def _whole_frame(self, view, pos, end):
        """
        Find a frame that starts at C{pos} and lies wholly in C{view[:end]}.

        @return: The offset one past the frame's CRC and, for each entry,
            the offsets C{(key, blob length, blob end)}: its key runs from
            the first to the second, its blob from 8 bytes after the second
            to the third.  L{None} if the frame is not complete within the
            buffer (nothing is consumed then).
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
            spans.append((key, blob_len, p))
        if p + _CRC_SIZE > limit:
            raise FrameTooLarge("frame exceeds the limit of %d bytes"
                                % (self.max_frame_size,))
        p += _CRC_SIZE
        return (p, spans) if p <= end else None

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

    # -- the incremental state machine --------------------------------------

    def _consume(self, view, pos, end, frames):
        """
        Advance the state machine over C{view[pos:end]} until the current
        frame completes or the buffer ends.

        @return: The offset reached.
        """
        start = pos
        while pos < end:
            take = min(self._need, end - pos)
            if self._state != _S_BLOB:
                self._field += view[pos:pos + take]
            pos += take
            self._need -= take
            if self._size + (pos - start) > self.max_frame_size:
                raise FrameTooLarge("frame exceeds the limit of %d bytes"
                                    % (self.max_frame_size,))
            if self._need == 0 and self._advance():
                self._parts.append(view[start:pos])
                frame = b"".join(self._parts)
                self._parts = []
                self._size = 0
                self.offset += len(frame)
                frames.append((frame, None))
                return pos
        self._parts.append(view[start:pos])
        self._size += pos - start
        return pos

    def _advance(self):
        """
        Act on a completed field and set up the next one.

        @return: C{True} if the frame is complete.
        """
        state = self._state
        field = self._field
        if state == _S_HEADER:
            flag, version, entries, ftype = _HEADER.unpack(field)
            self._check_header(flag, version, entries, ftype)
            self._entries_left = entries
            self._next_entry()
        elif state == _S_KEYLEN:
            (klen,) = _U64.unpack(field)
            if klen > self.max_key_length:
                raise KeyTooLong("key of %d bytes exceeds the limit of %d"
                                 % (klen, self.max_key_length))
            self._set(_S_KEY, klen)
            if klen == 0:
                self._set(_S_BLOBLEN, 8)
        elif state == _S_KEY:
            self._set(_S_BLOBLEN, 8)
        elif state == _S_BLOBLEN:
            (blen,) = _U64.unpack(field)
            if blen > self.max_frame_size:
                raise FrameTooLarge("blob of %d bytes exceeds the frame limit "
                                    "of %d" % (blen, self.max_frame_size))
            self._entries_left -= 1
            if blen:
                self._set(_S_BLOB, blen)
            else:
                self._next_entry()
        elif state == _S_BLOB:
            self._next_entry()
        else:  # _S_CRC
            self._set(_S_HEADER, _HEADER_SIZE)
            return True
        return False

    def _next_entry(self):
        if self._entries_left:
            self._set(_S_KEYLEN, 8)
        else:
            self._set(_S_CRC, _CRC_SIZE)

    def _set(self, state, need):
        self._state = state
        self._need = need
        self._field = bytearray()


def frame_entries(raw):
    """
    The entries of one whole serialized frame, without decoding any blob.

    @param raw: The bytes of exactly one frame.
    @return: C{(key, blob)} pairs in stream order, the key as L{bytes} and
        the blob as a L{memoryview} of C{raw}.
    @raise FrameError: C{raw} is not exactly one frame.
    """
    view = memoryview(raw)
    end = len(view)
    if end < _HEADER_SIZE + _CRC_SIZE:
        raise FrameError("%d bytes are too few for a frame" % (end,))
    entries = _HEADER.unpack_from(view, 0)[2]
    pos = _HEADER_SIZE
    found = []
    for _ in range(entries):
        if pos + 8 > end:
            raise FrameError("frame ends inside an entry")
        (klen,) = _U64.unpack_from(view, pos)
        pos += 8
        if klen > end - pos:
            raise FrameError("key runs past the end of the frame")
        key = view[pos:pos + klen].tobytes()
        pos += klen
        if pos + 8 > end:
            raise FrameError("frame ends inside an entry")
        (blen,) = _U64.unpack_from(view, pos)
        pos += 8
        if blen > end - pos:
            raise FrameError("blob runs past the end of the frame")
        found.append((key, view[pos:pos + blen]))
        pos += blen
    if pos + _CRC_SIZE != end:
        raise FrameError("frame does not end after its CRC")
    return found
