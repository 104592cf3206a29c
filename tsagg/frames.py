"""
Turn raw frame bytes into spt3g frames, under either spt3g binding.

The standalone spt3g package (pybind11) loads a frame with
``G3Frame._cereal_loads``; the older copy that so3g vendors (boost.python),
which ``from spt3g import core`` returns once so3g is imported, has only the
pickle protocol, ``G3Frame.__setstate__``.  Both check the frame's CRC and
raise on a mismatch.

Recording needs only a frame's bytes and a few small keys, so a received
frame is checked (layout and CRC, the same CRC spt3g computes, with the
hardware CRC-32C of the C{crc32c} package, over the pieces of the reads
it came in: no copy) and handed on as a L{LazyFrame}, which spt3g
deserializes on first use.  spt3g's own load
copies a frame twice; skipping it when nobody looks at the frame is what
lets tsagg keep up with spt3g's C++ reader.
"""

import struct

import crc32c as _crc32c
from spt3g import core

from tsagg import wire

__all__ = ["core", "BINDING", "CorruptFrame", "load_frame", "dump_frame",
           "frame_type_code", "raw_type_code", "receive_frame",
           "receive_pieces", "receive_all", "unchecked_frame", "LazyFrame",
           "crc_of_pieces"]


class CorruptFrame(ValueError):
    """
    spt3g refused to deserialize a frame (bad CRC or a malformed entry).
    """


if hasattr(core.G3Frame, "_cereal_loads"):
    BINDING = "spt3g"

    def _load(raw):
        frame = core.G3Frame()
        frame._cereal_loads(raw)
        return frame

    def dump_frame(frame):
        """
        Serialize a frame: the bytes a C{G3NetworkSender} sends for it.
        """
        return frame._cereal_dumps()
else:  # pragma: no cover - exercised by the so3g subprocess test
    BINDING = "so3g"

    def _load(raw):
        frame = core.G3Frame()
        frame.__setstate__(({}, raw))
        return frame

    def dump_frame(frame):
        return frame.__getstate__()[1]


def load_frame(raw):
    """
    Deserialize one frame, checking its CRC.

    Blobs are decoded lazily by spt3g, on first access of their key.

    @param raw: The frame's serialized bytes.
    @type raw: L{bytes}
    @rtype: C{spt3g.core.G3Frame}
    @raise CorruptFrame: spt3g rejected the bytes.
    """
    try:
        return _load(raw)
    except (RuntimeError, ValueError, TypeError, MemoryError) as e:
        raise CorruptFrame(str(e).splitlines()[0] if str(e) else repr(e))


def frame_type_code(frame):
    """
    The one-letter code of a frame's type, e.g. C{'S'} for Scan.
    """
    return chr(int(frame.type))


def raw_type_code(raw):
    """
    The one-letter type code of a serialized frame, read from its header.
    """
    return chr(raw[9])


_MASK = 0xFFFFFFFF
_U32 = struct.Struct("<I")


def crc_of_pieces(pieces, spans):
    """
    The CRC spt3g records after a frame's entries: the CRC-32C register run
    from 0 over every key and blob in order, with no final inversion,
    computed over the pieces the frame came in, without joining them.

    @param pieces: The frame's bytes, as pieces in order (bytes-like).
    @param spans: The offsets in the frame of each entry, as from
        L{wire.FrameSplitter.split}.
    """
    crc32c = _crc32c.crc32c
    # The package's value is the register inverted: carry it so, inverting
    # once at each end.
    value = _MASK
    if len(pieces) == 1:
        piece = pieces[0]
        if spans is _groups_of[0]:
            for group in _groups_of[1]:
                value = crc32c(piece[group] if type(group) is slice
                               else b"".join(group(piece, 0)), value)
            return value ^ _MASK
        if type(spans) is tuple:
            # (The layout holds the header, and so the type.)
            _groups_of[:] = [spans, _crc_groups(spans), chr(piece[9])]
        for key, blob_len, end in spans:
            value = crc32c(piece[key:blob_len], value)
            value = crc32c(piece[blob_len + 8:end], value)
        return value ^ _MASK
    i = 0
    piece = pieces[0]
    start = 0
    stop = len(piece)
    for key, blob_len, end in spans:
        for lo, hi in ((key, blob_len), (blob_len + 8, end)):
            while lo < hi:
                while lo >= stop:
                    i += 1
                    piece = pieces[i]
                    start = stop
                    stop += len(piece)
                cut = hi if hi < stop else stop
                value = crc32c(piece[lo - start:cut - start], value)
                lo = cut
    return value ^ _MASK


# Ranges of a frame under this size are taken together for the CRC: one
# unpack, one join and one call cost less than a call for each.
_ALONE = 1 << 10
# The spans of the last layout (wire.Layout), the groups of its ranges, and
# the type code of its frames.
_groups_of = [None, None, None]


def _crc_groups(spans):
    """
    The ranges the CRC runs over, in order, as groups: a large range alone
    (a L{slice}), small ones next to each other together (the
    C{unpack_from} of a L{struct.Struct} that copies them out of the frame
    in one call, to be joined).
    """
    groups = []
    small = []
    for key, blob_len, end in spans:
        for lo, hi in ((key, blob_len), (blob_len + 8, end)):
            if hi - lo >= _ALONE:
                if small:
                    groups.append(_together(small))
                    small = []
                groups.append(slice(lo, hi))
            elif hi > lo:
                small.append((lo, hi))
    if small:
        groups.append(_together(small))
    return groups


def _together(ranges):
    fields = []
    at = 0
    for lo, hi in ranges:
        fields.append("%dx%ds" % (lo - at, hi - lo))
        at = hi
    return struct.Struct("<" + "".join(fields)).unpack_from


class LazyFrame:
    """
    A received frame whose layout and CRC are checked, deserialized by spt3g
    only when something uses it.

    It holds the pieces of the reads it came in: its bytes are joined into
    one L{bytes} object only if something asks for C{raw} (the write path
    writes the pieces as they are).  Indexing, C{in}, iteration and
    attributes go to the C{G3Frame}, which is loaded on the first such use.

    @ivar pieces: The frame's bytes, in pieces (bytes-like), in order.
    @ivar size: Its size in bytes.
    @ivar spans: The offsets of its entries, as from
        L{wire.FrameSplitter.split}.
    @ivar code: Its one-letter type code.
    """

    __slots__ = ("pieces", "size", "spans", "code", "_raw", "_frame")

    def __init__(self, pieces, size, spans, raw=None, frame=None,
                 code=None):
        self.pieces = pieces
        self.size = size
        self.spans = spans
        self._raw = raw
        self._frame = frame
        if code is None:
            head = pieces[0]
            code = chr(head[9] if len(head) > 9 else self.raw[9])
        self.code = code

    @property
    def raw(self):
        """
        The frame's bytes, joined now if it came in pieces.
        """
        if self._raw is None:
            self._raw = wire.join(self.pieces)
        return self._raw

    @property
    def entries(self):
        """
        Its C{(key, blob)} pairs, as L{wire.frame_entries} gives them: each
        key L{bytes}, each blob a view of one piece, or of C{raw} when the
        frame came in more than one.
        """
        source = self.pieces[0] if len(self.pieces) == 1 else \
            memoryview(self.raw)
        return [(bytes(source[k:b]), source[b + 8:e])
                for k, b, e in self.spans]

    def load(self):
        """
        The C{spt3g.core.G3Frame}, deserialized now if not yet.

        @raise CorruptFrame: spt3g rejected it.
        """
        if self._frame is None:
            self._frame = load_frame(self.raw)
        return self._frame

    def __getattr__(self, name):
        return getattr(self.load(), name)

    def __getitem__(self, key):
        return self.load()[key]

    def __contains__(self, key):
        return key in self.load()

    def __iter__(self):
        return iter(self.load().keys())

    def __len__(self):
        return len(self.spans)

    def __repr__(self):
        return "<LazyFrame %s, %d bytes>" % (self.code, self.size)


def receive_pieces(pieces, size, spans):
    """
    Check one whole frame from the wire, as the splitter cut it, and make
    it usable.

    @param pieces: The frame's pieces, as from L{wire.FrameSplitter.split}.
    @param size: Its size.
    @param spans: The offsets of its entries.
    @return: A L{LazyFrame}.
    @raise CorruptFrame: The CRC does not match.
    """
    tail = pieces[-1]
    if len(tail) < 4:
        tail = b"".join(pieces)[-4:]
    (recorded,) = _U32.unpack_from(tail, len(tail) - 4)
    calculated = crc_of_pieces(pieces, spans)
    if recorded != calculated:
        raise _mismatch(recorded, calculated)
    return LazyFrame(pieces, size, spans)


def receive_all(found):
    """
    Check the frames the splitter cut from one read, as L{receive_pieces}
    does each: a frame in one piece with the layout of the frame before (the
    common case) is checked here at once.

    @param found: C{(pieces, size, spans)} of each frame, as from
        L{wire.FrameSplitter.split}.
    @return: C{(frames, error)}: the L{LazyFrame}s, in order, up to the
        first whose CRC does not match, and that one's L{CorruptFrame}, or
        L{None} if every frame is good.
    """
    frames = []
    append = frames.append
    crc32c = _crc32c.crc32c
    unpack_crc = _U32.unpack_from
    layout = None
    for pieces, size, spans in found:
        if spans is not layout or len(pieces) != 1:
            if len(pieces) != 1 or spans is not _groups_of[0]:
                try:
                    append(receive_pieces(pieces, size, spans))
                except CorruptFrame as e:
                    return frames, e
                continue
            layout, groups, code = _groups_of
            # Most often small ranges, then one large: their shape is
            # taken without a loop.
            small = big = None
            if (len(groups) == 2 and type(groups[0]) is not slice
                    and type(groups[1]) is slice):
                small, big = groups
        piece = pieces[0]
        if small is not None:
            value = crc32c(piece[big],
                           crc32c(b"".join(small(piece, 0)), _MASK))
        else:
            value = _MASK
            for group in groups:
                value = crc32c(piece[group] if type(group) is slice
                               else b"".join(group(piece, 0)), value)
        value ^= _MASK
        (recorded,) = unpack_crc(piece, size - 4)
        if recorded != value:
            return frames, _mismatch(recorded, value)
        append(LazyFrame(pieces, size, spans, None, None, code))
    return frames, None


def _mismatch(recorded, calculated):
    return CorruptFrame("Recorded CRC (0x%08x) does not match calculated "
                        "(0x%08x)" % (recorded, calculated))


def receive_frame(raw, frame=None):
    """
    Check one whole frame given as its bytes and make it usable.

    @param raw: The frame's bytes.
    @param frame: Its C{G3Frame}, if it was loaded already.
    @return: A L{LazyFrame}.
    @raise CorruptFrame: The CRC does not match, or the layout is wrong.
    """
    try:
        spans = wire.frame_spans(raw)
    except wire.FrameError as e:
        raise CorruptFrame(str(e))
    received = receive_pieces([memoryview(raw)], len(raw), spans)
    received._raw = raw
    received._frame = frame
    return received


def unchecked_frame(raw, frame=None):
    """
    A frame given as its bytes, as a L{LazyFrame}, its CRC not checked
    (that of a frame that did not come off the wire, or came checked).

    @param frame: Its C{G3Frame}, or a L{LazyFrame} (returned as it is).
    @raise wire.FrameError: C{raw} is not one frame.
    """
    if isinstance(frame, LazyFrame):
        return frame
    return LazyFrame([memoryview(raw)], len(raw), wire.frame_spans(raw), raw,
                     frame)
