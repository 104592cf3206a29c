"""
The fast path of the SO stream rules: plain data frames.

Most frames of a stream are data frames of the acquisition in progress that
only go on in the open file: nothing to decide.  L{PlainData}, a part of
L{tsagg.rules.StreamRules}, finds them with fewer looks at the frame and at
the rules' state than L{tsagg.rules.StreamRules.plan} takes, and must make
the same decision for every frame (tests/test_fastpath.py holds it to that).

A stream's data frames mostly repeat one layout (L{tsagg.pieces.Layout}):
the same keys at the same offsets, blobs of the same lengths.  A frame's
type and whether it is flow control are then the layout's, looked at once;
and when the C{session_id} and C{frame_num} are blobs of a G3Int's size,
each frame's two values, and the head that says its C{frame_num} is a
G3Int, are read in one C{struct} unpack (L{layout_numbers}).
"""

import struct

from tsagg import sostream
from tsagg.plan import Plan

__all__ = ["PlainData", "layout_numbers"]

_SESSION = b"session_id"
_FRAME_NUM = b"frame_num"


def layout_numbers(frame):
    """
    How the two numbers of the frames of C{frame}'s layout are read.

    @param frame: A received L{tsagg.frames.LazyFrame}.
    @return: C{(read, session_first)}: C{read(piece, 0)} gives, from the
        one piece of a frame of this layout, the value of C{session_id}'s
        blob and the head and value of C{frame_num}'s, in the order they lie
        in the frame, C{session_id}'s first if C{session_first}.  A value is
        the G3Int's only when its head is L{sostream.G3INT_HEAD}.  (Of
        C{session_id} only an equal session matters: one that is not a
        G3Int is none, and so never another.)  L{None} when C{frame} is not
        of a repeated layout (one piece, the spans of a layout), or either
        number is absent or not of a G3Int's size.
    """
    spans = frame.spans
    pieces = frame.pieces
    if type(spans) is not tuple or len(pieces) != 1:
        return None
    piece = pieces[0]
    found = {}
    for key, blob_len, end in spans:
        if blob_len - key in (len(_SESSION), len(_FRAME_NUM)):
            name = piece[key:blob_len].tobytes()
            if name in (_SESSION, _FRAME_NUM):
                found[name] = (blob_len + 8, end)
    if len(found) != 2 or any(end - start != sostream.G3INT_SIZE
                              for start, end in found.values()):
        return None
    fields = []
    at = 0
    for start, name in sorted((start, name)
                              for name, (start, _) in found.items()):
        if name == _SESSION:
            fields.append("%dxq" % (start - at + sostream.G3INT_VALUE_AT))
        else:
            fields.append("%dx" % (start - at) + sostream.G3INT_FIELDS)
        at = start + sostream.G3INT_SIZE
    read = struct.Struct("<" + "".join(fields)).unpack_from
    return read, found[_SESSION] < found[_FRAME_NUM]


class PlainData:
    """
    The plain data frames of L{tsagg.rules.StreamRules}, which it inherits:
    L{plain} for one frame, L{plain_run} for a run of them.  They read the
    rules' state and change only what L{tsagg.rules.StreamRules.apply}
    changes for a plain data frame.
    """

    # The spans of the last layout of plain_run, and how the numbers of its
    # frames are read.
    _layout = (None, (None, None))

    def plain(self, code, fields, acquisition_session, file_open):
        """
        The fast path of L{tsagg.rules.StreamRules.plan}: for a data frame
        of the acquisition in progress that only goes on in the open file,
        the same L{Plan} as C{plan} makes, from fewer looks at the frame and
        the state; for any other frame L{None}, and C{plan} decides.

        It is plain data exactly when C{plan} would find: no flow control,
        a data type, the stream named already, no replayed START waiting
        for its session, no other session than the acquisition's, no
        rotation due, and no break of the connection to count.
        """
        if (code not in sostream.DATA_TYPES or not file_open
                or self.rotation_due or self._start_pending
                or self.stream_id is None
                or (self._continuing and self._replaying)
                or "sostream_flowcontrol" in fields):
            return None
        session = sostream.session_id(fields)
        if (acquisition_session is not None and session is not None
                and session != acquisition_session):
            return None
        plan = Plan(code)
        plan.plain_data = True
        plan.session = session
        plan._num = sostream.frame_num(fields)
        return plan

    def plain_run(self, frames, start, acquisition_session, file_open):
        """
        L{plain} and C{apply} over a run of frames at once: from
        C{frames[start]} on, each frame that L{plain} finds plain data
        is taken (its number noted, as C{apply} does), up to the first that
        is not, or the end.  The state that L{plain} looks at is looked at
        once: a plain data frame changes none of it.

        @param frames: L{tsagg.frames.LazyFrame}s.
        @return: The index of the first frame not taken: C{start} if none
            is.
        """
        if (not file_open or self.rotation_due or self._start_pending
                or self.stream_id is None
                or (self._continuing and self._replaying)):
            return start
        see = self.frame_nums.see
        of = sostream.FrameFields.of
        data_types = sostream.DATA_TYPES
        session_id = sostream.session_id
        frame_num = sostream.frame_num
        head = sostream.G3INT_HEAD
        layout = read = session_first = None
        end = len(frames)
        i = start
        while i < end:
            frame = frames[i]
            if frame.spans is not layout:
                layout = frame.spans
                read, session_first = self._numbers_of(frame)
            if read is not None:
                # A frame of a layout of plain data: its numbers only.
                if session_first:
                    session, n_head, num = read(frame.pieces[0], 0)
                else:
                    n_head, num, session = read(frame.pieces[0], 0)
                if (n_head == head and num >= 0
                        and (session == acquisition_session
                             or acquisition_session is None)):
                    see(num)
                    i += 1
                    continue
                # Else as any frame, below.
            if frame.code not in data_types:
                break
            fields = of(frame)
            if "sostream_flowcontrol" in fields:
                break
            session = session_id(fields)
            if (acquisition_session is not None and session is not None
                    and session != acquisition_session):
                break
            see(frame_num(fields))
            i += 1
        if i > start:
            self._replaying = self._first_frame = False
        return i

    def _numbers_of(self, frame):
        """
        For a frame of a repeated layout of plain data (a data type, no
        flow control: the same for every frame of a layout, whose keys are
        part of it), how its numbers are read (L{layout_numbers}); else
        C{(None, None)}.  The last layout's answer is kept.
        """
        if type(frame.spans) is not tuple:
            return None, None
        if self._layout[0] is not frame.spans:
            numbers = None
            if (frame.code in sostream.DATA_TYPES and "sostream_flowcontrol"
                    not in sostream.FrameFields.of(frame)):
                numbers = layout_numbers(frame)
            self._layout = (frame.spans, numbers or (None, None))
        return self._layout[1]
