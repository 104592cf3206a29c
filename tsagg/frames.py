"""
Turn raw frame bytes into spt3g frames, under either spt3g binding.

The standalone spt3g package (pybind11) loads a frame with
``G3Frame._cereal_loads``; the older copy that so3g vendors (boost.python),
which ``from spt3g import core`` returns once so3g is imported, has only the
pickle protocol, ``G3Frame.__setstate__``.  Both check the frame's CRC and
raise on a mismatch.

Recording needs only a frame's bytes and a few small keys, so a received
frame is checked (layout and CRC, the same CRC spt3g computes, with the
hardware CRC-32C of the C{crc32c} package, no copy) and handed on as a
L{LazyFrame}, which spt3g deserializes on first use.  spt3g's own load
copies a frame twice; skipping it when nobody looks at the frame is what
lets tsagg keep up with spt3g's C++ reader.
"""

from itertools import chain

import crc32c as _crc32c
from spt3g import core

from tsagg import wire

__all__ = ["core", "BINDING", "CorruptFrame", "load_frame", "dump_frame",
           "frame_type_code", "raw_type_code", "receive_frame", "LazyFrame",
           "crc_of_entries"]


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
_chain = chain.from_iterable
# Below this size a frame's keys and blobs are joined and checked in one
# call; above it, entry by entry, without a copy.
_JOIN_BELOW = 1 << 16


def crc_of_entries(entries, size):
    """
    The CRC spt3g records after a frame's entries: the CRC-32C register run
    from 0 over every key and blob in order, with no final inversion.

    @param entries: C{(key, blob)} pairs as from L{wire.frame_entries}.
    @param size: The frame's size, to choose the cheaper way.
    """
    crc32c = _crc32c.crc32c
    if size < _JOIN_BELOW:
        return crc32c(b"".join(_chain(entries)), _MASK) ^ _MASK
    crc = 0
    for key, blob in entries:
        crc = crc32c(key, crc ^ _MASK) ^ _MASK
        crc = crc32c(blob, crc ^ _MASK) ^ _MASK
    return crc


class LazyFrame:
    """
    A received frame whose layout and CRC are checked, deserialized by spt3g
    only when something uses it.

    Indexing, C{in}, iteration and attributes go to the C{G3Frame}, which
    is loaded on the first such use.

    @ivar raw: The frame's bytes.
    @ivar entries: Its C{(key, blob)} pairs, each blob bytes-like (a view
        of C{raw}, or a copy of its part of a small frame).
    """

    __slots__ = ("raw", "entries", "_frame")

    def __init__(self, raw, entries):
        self.raw = raw
        self.entries = entries
        self._frame = None

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
        return len(self.entries)

    def __repr__(self):
        return "<LazyFrame %s, %d bytes>" % (raw_type_code(self.raw),
                                             len(self.raw))


def receive_frame(raw, entries=None):
    """
    Check one whole frame from the wire and make it usable.

    @param raw: The frame's bytes, as the splitter cut them.
    @param entries: Its entries, if the splitter found them on the way, as
        from L{wire.frame_entries}.
    @return: A L{LazyFrame}.
    @raise CorruptFrame: The CRC does not match, or the layout is wrong.
    """
    if entries is None:
        try:
            entries = wire.frame_entries(raw)
        except wire.FrameError as e:
            raise CorruptFrame(str(e))
    recorded = int.from_bytes(raw[-4:], "little")
    calculated = crc_of_entries(entries, len(raw))
    if recorded != calculated:
        raise CorruptFrame("Recorded CRC (0x%08x) does not match calculated "
                           "(0x%08x)" % (recorded, calculated))
    return LazyFrame(raw, entries)
