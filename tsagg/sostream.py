"""
The Simons Observatory stream rules: what a frame from the SMuRF streamer
means for recording.

Pure functions over one frame at a time (no I/O, no clock).  Values that come
from the network are distrusted: a key of the wrong G3 type, or one whose blob
does not decode, counts as absent, and the stream id is reduced to one safe
path component.

The rules read only four keys, of two simple types, and L{FrameFields}
decodes them from the frame's bytes itself.  spt3g's own decoder trusts the
lengths inside a blob: a 60-byte blob (with a valid CRC) that declares a
type name of 1 GiB makes it allocate 1 GiB before it fails, and a larger one
can exhaust the memory of the machine.
"""

import re
import struct

from tsagg import wire
from tsagg.pieces import piece_range

__all__ = [
    "ALIVE", "START", "END", "CLEANSE", "FLOW_CONTROL_NAMES",
    "DATA_TYPES", "FrameFields", "decode_blob", "flow_control", "stream_id",
    "session_id", "frame_num", "sanitize_stream_id", "FrameNumTracker",
    "status_dump", "frame_time", "G3INT_HEAD", "G3INT_VALUE_AT",
    "G3INT_SIZE", "G3INT_FIELDS",
]

ALIVE, START, END, CLEANSE = 0, 1, 2, 3
FLOW_CONTROL_NAMES = {ALIVE: "alive", START: "start", END: "end",
                      CLEANSE: "cleanse"}

#: Frame types whose latest instance the sender caches and replays on
#: connect (everything but Scan and Timepoint).  tsagg caches the same ones
#: to start each file with them.
DATA_TYPES = frozenset("ST")

_MAX_STREAM_ID = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

# A session id is the ctime at which the streaming session started.  Anything
# outside (0, 10**10) is not one; it also keeps the basename to ten digits.
_MAX_SESSION_ID = 10 ** 10


#: The keys the rules read.
SO_KEYS = frozenset([b"sostream_flowcontrol", b"sostream_id", b"session_id",
                     b"frame_num", b"dump"])

# A blob of a G3 object is cereal's portable binary archive of a polymorphic
# pointer: u8 endianness flag (1), u32 polymorphic type id (0x80000001: a
# new type, named next), u64 name length, the name, u32 pointer id, u32
# class version, u32 version of the G3FrameObject base, then the value.
_BLOB_HEAD = struct.Struct("<BIQ")
_BLOB_VERSIONS = struct.Struct("<III")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_NEW_TYPE = 0x80000001
_MAX_TYPE_NAME = 64
#: A G3Int blob: its head up to the versions (which are not checked), the
#: offset of its value, and its size.
G3INT_HEAD = _BLOB_HEAD.pack(1, _NEW_TYPE, 5) + b"G3Int"
G3INT_VALUE_AT = len(G3INT_HEAD) + _BLOB_VERSIONS.size
G3INT_SIZE = G3INT_VALUE_AT + _I64.size
#: The C{struct} fields (no byte order) of a G3Int blob's head and value,
#: read from its first byte.
G3INT_FIELDS = "%ds%dxq" % (len(G3INT_HEAD), G3INT_VALUE_AT - len(G3INT_HEAD))
# Its head and value, read from a frame at the blob's offset.
_G3INT_READ = struct.Struct("<" + G3INT_FIELDS)


#: G3Time ticks in a second (spt3g's G3Units.s).
TICKS_PER_SECOND = 100000000


class G3TimeTicks(int):
    """
    A G3Time, decoded: its ticks since the unix epoch.
    """


def _g3int(blob):
    """
    The value of a G3Int blob, read at once (as L{decode_blob} would read
    it): the most common blob, a frame's number, on every frame.  L{None}
    if the blob is anything else, which L{decode_blob} reads.
    """
    if len(blob) == G3INT_SIZE and blob[:G3INT_VALUE_AT - 12] == G3INT_HEAD:
        return _I64.unpack_from(blob, G3INT_VALUE_AT)[0]
    return None


def decode_blob(blob):
    """
    The value of a G3Int, G3Bool or G3String blob, decoded without spt3g.

    Every length is checked against the blob before it is used, and the
    value must fill the blob exactly.

    @param blob: The serialized G3 object.
    @return: An L{int}, a L{bool} or a L{str}.
    @raise ValueError: The blob is not a well-formed G3Int, G3Bool or
        G3String.
    """
    value = _g3int(blob)
    if value is not None:
        return value
    blob = bytes(blob)
    end = len(blob)
    if end < _BLOB_HEAD.size:
        raise ValueError("blob too short")
    flag, type_id, name_len = _BLOB_HEAD.unpack_from(blob, 0)
    if flag != 1 or type_id != _NEW_TYPE or name_len > _MAX_TYPE_NAME:
        raise ValueError("not a G3 object")
    pos = _BLOB_HEAD.size
    name = blob[pos:pos + name_len]
    pos += name_len + _BLOB_VERSIONS.size
    if pos > end:
        raise ValueError("blob too short")
    if name == b"G3Int":
        if end - pos != _I64.size:
            raise ValueError("G3Int of the wrong size")
        return _I64.unpack_from(blob, pos)[0]
    if name == b"G3Time":
        if end - pos != _I64.size:
            raise ValueError("G3Time of the wrong size")
        return G3TimeTicks(_I64.unpack_from(blob, pos)[0])
    if name == b"G3Bool":
        if end - pos != 1 or blob[pos] > 1:
            raise ValueError("G3Bool of the wrong size or value")
        return bool(blob[pos])
    if name == b"G3String":
        if end - pos < _U64.size:
            raise ValueError("blob too short")
        (length,) = _U64.unpack_from(blob, pos)
        pos += _U64.size
        if length != end - pos:
            raise ValueError("G3String length does not match its blob")
        return blob[pos:].decode("utf-8")
    raise ValueError("not a G3Int, G3Bool or G3String")


# The spans of the last layout (wire.Layout), the keys taken, and their
# names and blobs there.
_taken = [None, None, None]


class FrameFields:
    """
    The keys of L{SO_KEYS} of one serialized frame, decoded by
    L{decode_blob}: a mapping with C{in} and C{[]}, which the rules below
    take in place of a C{G3Frame}.
    """

    # One is made for every frame.  C{_piece}, when set (by L{of}), is the
    # one piece of the frame, and C{_blobs} holds the slice of each blob in
    # it; else C{_blobs} holds the blobs.
    __slots__ = ("_blobs", "_piece")

    def __init__(self, raw, entries=None, keys=SO_KEYS):
        """
        @param raw: The bytes of one whole frame.
        @param entries: Its entries, if L{wire.frame_entries} already found
            them.
        @param keys: The keys to take, as bytes.
        @raise wire.FrameError: C{raw} is not one frame.
        """
        if entries is None:
            entries = wire.frame_entries(raw)
        self._blobs = {key.decode("ascii"): blob
                       for key, blob in entries if key in keys}
        self._piece = None

    @classmethod
    def of(cls, frame, keys=SO_KEYS):
        """
        The keys of a received frame, read from the pieces it came in: no
        piece is joined, and of a frame in more than one piece only the
        keys and the blobs taken are copied out.

        @param frame: A L{tsagg.frames.LazyFrame}.
        """
        fields = cls.__new__(cls)
        pieces = frame.pieces
        spans = frame.spans
        if len(pieces) == 1:
            piece = pieces[0]
            if spans is not _taken[0] or keys is not _taken[1]:
                # Not the layout of the last frame (wire.Layout): find the
                # keys taken.
                names = [(piece[k:b].tobytes(), slice(b + 8, e))
                         for k, b, e in spans]
                names = [(key.decode("ascii"), blob) for key, blob in names
                         if key in keys]
                if type(spans) is not tuple:
                    fields._blobs = {name: piece[blob]
                                     for name, blob in names}
                    fields._piece = None
                    return fields
                _taken[:] = [spans, keys, dict(names)]
            # The layout's blobs, each cut from the piece when asked for.
            fields._blobs = _taken[2]
            fields._piece = piece
            return fields
        blobs = fields._blobs = {}
        fields._piece = None
        for k, b, e in frame.spans:
            key = piece_range(pieces, k, b)
            if key in keys:
                blobs[key.decode("ascii")] = piece_range(pieces, b + 8, e)
        return fields

    def __contains__(self, key):
        return key in self._blobs

    def blob(self, key):
        """
        The undecoded blob of C{key}, or L{None}.
        """
        blob = self._blobs.get(key)
        if blob is None or self._piece is None:
            return blob
        return self._piece[blob]

    def g3int(self, key):
        """
        The value of C{key} if its blob is a G3Int, read at once (as
        L{decode_blob} reads it); L{None} if the key is absent or its blob
        anything else.
        """
        blob = self._blobs.get(key)
        if blob is None:
            return None
        piece = self._piece
        if piece is None:
            return _g3int(blob)
        if blob.stop - blob.start != G3INT_SIZE:
            return None
        head, value = _G3INT_READ.unpack_from(piece, blob.start)
        return value if head == G3INT_HEAD else None

    def __getitem__(self, key):
        if key not in self._blobs:
            raise KeyError(key)
        return decode_blob(self.blob(key))


def _get(frame, key):
    """
    A frame's value for C{key}, or L{None} when absent or undecodable.
    """
    try:
        if key not in frame:
            return None
        return frame[key]
    except Exception:
        # A blob that spt3g cannot decode (a hostile or broken sender) must
        # not take the recorder down: the key counts as absent.
        return None


def _as_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return None


def flow_control(frame):
    """
    The flow-control code a frame carries, or L{None} for a data frame.

    A frame that carries C{sostream_flowcontrol} is a flow-control frame
    whatever its value: unknown values are reported as themselves, and the
    caller discards them like ALIVE.
    """
    try:
        if "sostream_flowcontrol" not in frame:
            return None
    except Exception:
        return None
    value = _as_int(_get(frame, "sostream_flowcontrol"))
    return -1 if value is None else value


def sanitize_stream_id(value):
    """
    Reduce a stream id to one safe path component.

    Characters outside C{[A-Za-z0-9_.-]} become C{_}, leading dots are
    dropped (no C{.}, C{..} or hidden directories), and the result is cut to
    64 characters.

    @return: The safe id, or L{None} when nothing usable is left.
    """
    if not isinstance(value, str):
        return None
    safe = _UNSAFE.sub("_", value).lstrip(".")[:_MAX_STREAM_ID]
    if not safe.strip("_"):
        return None
    return safe


def stream_id(frame, type_code):
    """
    The sanitized C{sostream_id} of a frame, or L{None}.

    PipelineInfo frames never name the stream.
    """
    if type_code == "P":
        return None
    return sanitize_stream_id(_get(frame, "sostream_id"))


def session_id(frame):
    """
    The frame's C{session_id} when it is a plausible nonzero ctime, else
    L{None}.
    """
    if type(frame) is FrameFields:
        # A G3Int, read at once; anything else as below.
        value = frame.g3int("session_id")
        if value is not None:
            return value if 0 < value < _MAX_SESSION_ID else None
    value = _as_int(_get(frame, "session_id"))
    if value is None or not 0 < value < _MAX_SESSION_ID:
        return None
    return value


def frame_num(frame):
    """
    The frame's C{frame_num}, or L{None}.
    """
    if type(frame) is FrameFields:
        # A G3Int, read at once; anything else as below.
        value = frame.g3int("frame_num")
        if value is not None:
            return value if value >= 0 else None
    value = _as_int(_get(frame, "frame_num"))
    if value is None or value < 0:
        return None
    return value


class FrameNumTracker:
    """
    Count frames missing upstream from jumps of C{frame_num}.

    Only forward jumps count: frames replayed by the sender on reconnect
    carry older numbers and are ignored.

    @ivar highest: The highest C{frame_num} seen since the last reset.
    @ivar dropped: Frames missing so far (never reset).
    """

    def __init__(self):
        self.highest = None
        self.dropped = 0

    def reset(self):
        """
        Forget the numbering: a new session starts counting anew.
        """
        self.highest = None

    def see(self, num):
        """
        Note one frame's number.

        @return: How many frames are missing right before this one.
        """
        if num is None:
            return 0
        missing = 0
        if self.highest is not None and num > self.highest + 1:
            missing = num - self.highest - 1
            self.dropped += missing
        if self.highest is None or num > self.highest:
            self.highest = num
        return missing


def status_dump(frame):
    """
    Whether a Wiring (status) frame of the SMuRF streamer holds the whole
    status (C{dump} true), only the keys that changed (C{dump} false), or
    does not say (L{None}).
    """
    value = _get(frame, "dump")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return None


_TIME_KEY = frozenset([b"time"])


def frame_time(raw):
    """
    The C{time} (a G3Time) of a serialized frame, in unix seconds, or
    L{None}.
    """
    try:
        value = _get(FrameFields(raw, keys=_TIME_KEY), "time")
    except ValueError:
        return None
    if not isinstance(value, G3TimeTicks):
        return None
    return value / TICKS_PER_SECOND
