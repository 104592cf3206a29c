"""
Turn raw frame bytes into spt3g frames, under either spt3g binding.

The standalone spt3g package (pybind11) loads a frame with
``G3Frame._cereal_loads``; the older copy that so3g vendors (boost.python),
which ``from spt3g import core`` returns once so3g is imported, has only the
pickle protocol, ``G3Frame.__setstate__``.  Both check the frame's CRC and
raise on a mismatch.
"""

from spt3g import core

__all__ = ["core", "BINDING", "CorruptFrame", "load_frame", "dump_frame",
           "frame_type_code"]


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
    except (RuntimeError, ValueError, TypeError) as e:
        raise CorruptFrame(str(e).splitlines()[0] if str(e) else repr(e))


def frame_type_code(frame):
    """
    The one-letter code of a frame's type, e.g. C{'S'} for Scan.
    """
    return chr(int(frame.type))
