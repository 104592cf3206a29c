"""
The SO stream rules as a state machine: frames in, actions out.

L{StreamRules} reads one frame's SO keys (L{tsagg.sostream}) and says what
recording it means, as a L{Plan}: discard it, end the acquisition or close
the file first, write it, and which acquisition it belongs to.  It does no
I/O and reads no clock; the writer (L{tsagg.writer}) carries the plan out.
(The rule of time, when a file is old enough to rotate and when an
acquisition has been silent too long, is L{tsagg.rotation.FilePolicy}.)

The rules, in one place:

    - Flow-control frames are never written.  ALIVE and CLEANSE are
      discarded; START ends the acquisition and forgets the metadata; END
      does too, and forgets the stream id.
    - A frame of another nonzero C{session_id} than the acquisition's ends
      it: a new session without a START begins a new acquisition.
    - Once a file is due for rotation, it is closed just before the next
      data frame (Scan, or Timepoint): the metadata and flow control that
      follow a session's last data stay in its last file, and rotation
      never makes a file without data.
    - Each new file begins with the metadata seen so far (L{replay}): the
      latest frame of each metadata type and the whole status chain
      (L{tsagg.metadata}).

A session goes on across a broken connection and a restart.  A listen-mode
C{G3NetworkSender} begins each new connection with its cache: the latest
flow-control frame, then the latest frame of each metadata type.  While an
acquisition of session S goes on (kept over the break, or taken back from
its files by L{restore} after a restart):

    - a START replayed as the first frame of the connection ends nothing
      if it is S's; one that names no session waits for the next frame
      that does, and counts as a START only if that one is not of S;
    - a replayed metadata frame identical to the latest of its type held
      here is not written again; one that differs (a status diff sent
      during the break) is written, and joins the chain;
    - the first live data frame tells, by its C{frame_num}, how many frames
      the break cost (L{Plan.resumed}); they are not counted as dropped
      upstream.

An acquisition that begins inside the sender's replay, with no live START
on the connection, joined its session midway (L{joining}): its status dump
was sent before anyone listened.
"""

from tsagg import sostream
from tsagg.frames import raw_type_code
from tsagg.metadata import DIFF, DUMP, PLAIN, MetadataCache
from tsagg.plaindata import PlainData
from tsagg.plan import Plan

__all__ = ["StreamRules", "Plan"]

# Frame type code of a Wiring (status) frame.
_WIRING = "W"


class StreamRules(PlainData):
    """
    The SO stream rules over the frames of one stream, one after the other.

    Call L{plan} with each frame (it changes nothing, so that a frame that
    must wait can be planned again), then L{apply} once the writer goes
    ahead with it; L{written} once a metadata frame is on disk.

    @ivar stream_id: The sanitized C{sostream_id} of the stream, from the
        first frame that names it, or L{None}.
    @ivar rotation_due: Whether the open file is to be closed before the
        next Scan frame.
    @ivar frame_nums: The L{sostream.FrameNumTracker} of frames dropped
        upstream.
    @ivar flow_control: Flow-control frames discarded, by name.
    """

    def __init__(self):
        self.stream_id = None
        self.rotation_due = False
        self.frame_nums = sostream.FrameNumTracker()
        self.flow_control = {name: 0 for name in
                             sostream.FLOW_CONTROL_NAMES.values()}
        self.metadata = MetadataCache()
        self._replaying = False
        # Connection state (see the module's docstring): the next frame is
        # the connection's first; a replayed START waits for its session;
        # a START came live; an acquisition goes on from before the
        # connection; the frame numbers of the replayed frames.
        self._first_frame = False
        self._start_pending = False
        self._live_start = False
        self._continuing = False
        self._replayed_nums = []

    # -- frames ----------------------------------------------------------

    def plan(self, raw, code, fields, acquisition_session, file_open):
        """
        What one frame means, given the writer's state.  Nothing changes
        until L{apply}.

        @param raw: The frame's bytes.
        @param code: Its type code.
        @param fields: Its L{sostream.FrameFields}.
        @param acquisition_session: The session id of the acquisition in
            progress; L{None} when none is, or it has none.
        @param file_open: Whether a file is open.
        @rtype: L{Plan}
        """
        plan = Plan(code)
        num = sostream.frame_num(fields)
        replayed = self._replaying and code not in sostream.DATA_TYPES
        if replayed:
            # A new connection begins with the sender's cached metadata,
            # whose frame numbers are old: only live data sets the baseline.
            plan._replayed_num, num = num, None
        plan._num = num
        session = sostream.session_id(fields)
        fc = sostream.flow_control(fields)
        if fc is not None:
            name = sostream.FLOW_CONTROL_NAMES.get(fc, "unknown")
            plan.discard = name
            plan.write = False
            plan._flow = fc
            plan.session = session
            if fc == sostream.START:
                self._plan_start(plan, session, acquisition_session)
            elif fc == sostream.END:
                plan.end = "end"
            return plan
        plan.session = session
        if self.stream_id is None:
            plan._stream_id = sostream.stream_id(fields, code)
        if self._start_pending and session is not None:
            plan._settles_start = True
            if session != acquisition_session:
                plan.end = "start"
                plan._forget = True
        if (plan.end is None and acquisition_session is not None
                and session is not None and session != acquisition_session):
            plan.end = "new session %d" % (session,)
            # The metadata kept over a break is the old session's.
            plan._forget = self._continuing and self._replaying
        elif (file_open and self.rotation_due
              and code in sostream.DATA_TYPES):
            plan.close = "rotation"
        if code in sostream.DATA_TYPES:
            if (self._continuing and self._replaying and plan.end is None
                    and acquisition_session is not None):
                plan.resumed = self._missed(num)
            plan.plain_data = (plan.end is None and plan.close is None
                               and plan.resumed is None)
            return plan
        plan.metadata = True
        if code == _WIRING:
            plan.wiring = _wiring_kind(fields)
        if (replayed and plan.end is None
                and acquisition_session is not None
                and raw == self.metadata.latest(code)):
            plan.duplicate = True
            plan.write = False
            plan.metadata = False
        return plan

    def _plan_start(self, plan, session, acquisition_session):
        if not (self._first_frame and acquisition_session is not None):
            plan.end = "start"
            plan._live_start = not self._first_frame
        elif session is None:
            # Replayed, of a session not named: the next frame tells.
            plan._start_pending = True
        elif session != acquisition_session:
            plan.end = "start"
        # Else the sender's replay of the START of the acquisition that
        # goes on: it ends nothing.

    def _missed(self, num):
        """
        How many frames a break cost, by the number of the first live data
        frame after it: those numbered between the last frame before it
        and this one, but for those the sender replayed.
        """
        highest = self.frame_nums.highest
        if num is None or highest is None or num <= highest:
            return 0
        replayed = sum(1 for n in self._replayed_nums
                       if n is not None and highest < n < num)
        return max(0, num - highest - 1 - replayed)

    def apply(self, plan):
        """
        Go ahead with a planned frame: note its number, its stream id, and
        what its flow control or new session resets.
        """
        if plan.plain_data:
            self._replaying = self._first_frame = False
            if plan._stream_id is not None and self.stream_id is None:
                self.stream_id = plan._stream_id
            self.frame_nums.see(plan._num)
            return
        self._first_frame = False
        if self._replaying and plan.code not in sostream.DATA_TYPES:
            self._replayed_nums.append(getattr(plan, "_replayed_num", None))
        if plan.code in sostream.DATA_TYPES:
            self._replaying = False
            self._continuing = False
            self._replayed_nums = []
        if plan._start_pending:
            self._start_pending = True
        if plan._live_start:
            self._live_start = True
        if plan._settles_start:
            self._start_pending = False
        if plan._forget:
            self.forget_metadata()
        if plan.end is not None:
            # What goes on after the break is another acquisition.
            self._continuing = False
        if plan.duplicate:
            return
        if plan.discard is not None:
            if plan.discard in self.flow_control:
                self.flow_control[plan.discard] += 1
            self.frame_nums.see(plan._num)
            if plan.end is not None:
                self.forget_metadata()
                self.frame_nums.reset()
                if plan._flow == sostream.END:
                    self.stream_id = None
            return
        if plan._stream_id is not None and self.stream_id is None:
            self.stream_id = plan._stream_id
        if plan.end is not None:
            self.frame_nums.reset()
        if plan.end is not None or plan.close is not None:
            self.rotation_due = False
        if plan.resumed is not None:
            # The break's frames are missed, not dropped upstream.
            self.frame_nums.highest = None
        self.frame_nums.see(plan._num)

    def written(self, raw, plan):
        """
        A metadata frame is on disk: later files begin with it.
        """
        self.metadata.written(raw, plan.code, plan.wiring)

    def replay(self, opening):
        """
        The metadata a new file begins with, before the frame that opens it.

        @param opening: The L{Plan} of the frame that opens the file
            (L{MetadataCache.replay}).
        @return: The raw frames, in order.
        """
        return self.metadata.replay(opening.code, opening.wiring)

    # -- the stream and the acquisition ----------------------------------

    def stream_started(self, keep_metadata, continuing=False):
        """
        A new connection: the sender first replays its cached metadata.

        @param keep_metadata: Whether frames of the last connection still
            wait to be written (they need the metadata at the top of their
            file); else the sender's replay takes the place of ours.
        @param continuing: Whether an acquisition goes on from before the
            connection (its metadata is kept, and the replay is compared
            with it).
        """
        if not (keep_metadata or continuing):
            self.forget_metadata()
        self._replaying = True
        self._first_frame = True
        self._start_pending = False
        self._live_start = False
        self._continuing = continuing
        self._replayed_nums = []

    @property
    def has_status_dump(self):
        """
        Whether the status chain held begins with a full dump.
        """
        return self.metadata.has_dump

    @property
    def joining(self):
        """
        Whether an acquisition that begins now joins its session midway: in
        the sender's replay, with no live START on this connection.
        """
        return self._replaying and not self._live_start

    def restore(self, frames, last_frame_num):
        """
        Take back an acquisition's metadata from its last file, after a
        restart: the metadata at the file's top and every Wiring frame in
        it, in order, as if they had just been written.

        @param frames: The raw metadata frames, in order.
        @param last_frame_num: The C{frame_num} of the file's last frame,
            or L{None}.
        @return: Whether the status chain begins with a full dump.
        """
        self.forget_metadata()
        for raw in frames:
            code = raw_type_code(raw)
            self.metadata.written(raw, code, _wiring_kind(
                sostream.FrameFields(raw)) if code == _WIRING else None)
        self.frame_nums.reset()
        self.frame_nums.see(last_frame_num)
        self._continuing = True
        return self.metadata.has_dump

    def forget_metadata(self):
        self.metadata.forget()

    def file_closed(self):
        """
        The open file was closed, for whatever reason: the next one brings
        its own rotation deadline.
        """
        self.rotation_due = False

    def restart(self):
        """
        Recording starts again after a stop: frames not sent meanwhile were
        not dropped upstream.
        """
        self.frame_nums.reset()

    @property
    def dropped(self):
        """
        Frames dropped upstream so far.
        """
        return self.frame_nums.dropped



def _wiring_kind(fields):
    """
    What a Wiring frame is, by its C{dump} key.
    """
    dump = sostream.status_dump(fields)
    return PLAIN if dump is None else DUMP if dump else DIFF
