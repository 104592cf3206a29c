"""
The Simons Observatory stream rules: what a frame from the SMuRF streamer
means for recording.

Pure functions over one frame at a time (no I/O, no clock).  Values that come
from the network are distrusted: a key of the wrong G3 type, or one whose blob
does not decode, counts as absent, and the stream id is reduced to one safe
path component.
"""

import re

__all__ = [
    "ALIVE", "START", "END", "CLEANSE", "FLOW_CONTROL_NAMES",
    "DATA_TYPES", "flow_control", "stream_id", "session_id",
    "frame_num", "sanitize_stream_id", "FrameNumTracker",
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
    value = _as_int(_get(frame, "session_id"))
    if value is None or not 0 < value < _MAX_SESSION_ID:
        return None
    return value


def frame_num(frame):
    """
    The frame's C{frame_num}, or L{None}.
    """
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
