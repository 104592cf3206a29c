"""
The rules' plans carried out: which acquisition and which file each frame
goes in, the acquisition begun and ended, its files opened (beginning with
the metadata) and closed at the right frame, and its one timer of rotation
and gap.  L{tsagg.rules} decides; this acts, through the open file of
L{tsagg.output}.  What is queued is written by the writer first: here, a
file closes with its queue already written.

An acquisition of a session outlives its connection: a disconnect closes
its file, and the session goes on in the next file if the next connection
brings more of it.  After a restart, the first frames of a session whose
files the data directory holds take it back from its last file
(L{tsagg.recovery.Recovery.last_file_of}): the files on disk are the state.
"""

from tsagg import sostream
from tsagg.files import Acquisition
from tsagg.frames import raw_type_code
from tsagg.plan import Plan
from tsagg.rotation import AcquisitionTimer

__all__ = ["Acquisitions"]


def _plain_plan(code):
    plan = Plan(code)
    plan.plain_data = True
    return plan


# What the write queue keeps of a plain data frame's plan: its type.
_PLAIN_PLANS = {code: _plain_plan(code) for code in sostream.DATA_TYPES}


class Acquisitions:
    """
    The acquisition in progress, and its files.

    @ivar rules: The L{tsagg.rules.StreamRules}.
    @ivar current: The L{Acquisition} in progress, or L{None}.
    @ivar default_stream_id: Directory name for streams that do not name
        themselves.
    """

    def __init__(self, rules, output, disk, clock, policy, waiting,
                 default_stream_id, wall_time, log, file_log, recovery=None,
                 resumed=None):
        """
        @param output: The L{tsagg.output.FileOutput}.
        @param disk: The L{tsagg.diskspace.DiskGuard}.
        @param policy: The L{tsagg.rotation.FilePolicy}.
        @param waiting: Returns what the writer waits for, for the timer
            (L{tsagg.rotation.HELD}, L{tsagg.rotation.WRITING} or L{None}).
        @param wall_time: Returns the unix time, which names acquisitions
            without a session id.
        @param log: Returns the L{Logger} to log to (the writer's).
        @param file_log: The L{tsagg.filelog.FileLog} of the routine lines.
        @param recovery: The L{tsagg.recovery.Recovery} that finds a
            session's last file, or L{None}.
        @param resumed: Returns the callable told C{(session_id, missed)}
            when a session goes on after a break of the connection, or
            L{None}.
        """
        self.rules = rules
        self.current = None
        self.frames_missed = 0
        self.joined_midway = None
        self._recovery = recovery
        self._resumed = resumed
        # The session last looked for on disk, while none is in progress.
        self._looked_up = None
        self.default_stream_id = default_stream_id
        self._out = output
        self._disk = disk
        self._clock = clock
        self._policy = policy
        self._wall_time = wall_time
        self._log = log
        self._file_log = file_log
        self.timer = AcquisitionTimer(clock, policy, self._opened_at,
                                      waiting, self._gap, self._rotation_due)

    def status(self):
        """
        The acquisition's part of the writer's status.
        """
        acq = self.current
        return {
            "stream_id": acq.stream_id if acq else self.rules.stream_id,
            "session_id": acq.session_id if acq else None,
            "flow_control_frames": dict(self.rules.flow_control),
            "frames_dropped_upstream": self.rules.dropped,
            "frames_missed_in_breaks": self.frames_missed,
            "joined_midway": self.joined_midway,
        }

    def plain(self, frame):
        """
        The plan of the rules' fast path (L{tsagg.rules.StreamRules.plain})
        for a frame of the acquisition in progress, or L{None} when the full
        rules must decide (L{plan}).
        """
        acq = self.current
        if acq is None or acq.joining:
            return None
        return self.rules.plain(frame.code, sostream.FrameFields.of(frame),
                                acq.session_id, self._out.file is not None)

    def take_plain(self, frames, start):
        """
        Queue the run of plain data frames that begins at C{frames[start]}
        (L{tsagg.rules.StreamRules.plain_run}) behind what is queued for the
        open file: what L{plain} and L{carry_out} do for each, done once for
        the run.

        @return: The index of the first frame not taken.
        """
        acq = self.current
        out = self._out
        queue = out.queue
        if acq is None or acq.joining or not queue:
            # (What is queued was checked against the disk: so is the run.)
            return start
        end = self.rules.plain_run(frames, start, acq.session_id,
                                   out.file is not None)
        if end > start:
            queue.push_frames(frames[start:end], _PLAIN_PLANS)
            self.timer.wrote(self._clock.seconds())
        return end

    def plan(self, frame, raw):
        """
        What the rules make of one frame now (nothing changes yet).  The
        first frame of a session whose files are on disk, while no
        acquisition is in progress, takes the session back from them.
        """
        # The rules read their keys from the raw bytes: spt3g's decoder of a
        # blob allocates whatever length a hostile blob declares.
        fields = sostream.FrameFields(raw, getattr(frame, "entries", None))
        code = raw_type_code(raw)
        plan = self._plan(raw, code, fields)
        session = plan.session
        if (session is not None and self.current is None
                and session != self._looked_up):
            self._looked_up = session
            if self._take_back(session, plan):
                plan = self._plan(raw, code, fields)
        return plan

    def _plan(self, raw, code, fields):
        acq = self.current
        return self.rules.plan(raw, code, fields,
                               acq.session_id if acq else None,
                               self._out.file is not None)

    def _take_back(self, session, plan):
        """
        Take an acquisition back from its last file, if there is one: its
        metadata and status chain, its last frame number, its next file.
        """
        if self._recovery is None:
            return False
        stream_id = (self.rules.stream_id or plan._stream_id
                     or self.default_stream_id)
        found = self._recovery.last_file_of(stream_id, str(session))
        if found is None:
            return False
        relative, index, tail = found
        has_dump = self.rules.restore(tail.metadata, tail.last_frame_num)
        acq = self.current = Acquisition(str(session), stream_id, session)
        acq.next_index = index + 1
        acq.taken_back_from = relative
        if not has_dump and any(raw_type_code(r) == "W"
                                for r in tail.metadata):
            self._joined_midway(acq)
        return True

    def carry_out(self, plan, frame, raw, in_outage=False):
        """
        Go ahead with a planned frame: end the acquisition or close the file
        if the plan says so, then queue the frame for its file, opening it
        (and beginning an acquisition) if need be.

        @param in_outage: Writing failed before: the file opened now is
            named in the log once writing works.
        @raise OSError: No file could be opened, or the disk is below its
            floor or read-only (the open file, if any, closed first).
        """
        self.rules.apply(plan)
        if plan.resumed is not None:
            self._goes_on(plan.resumed)
        if plan.discard == "unknown":
            self._log().warn("Discarding a flow-control frame of unknown "
                             "value")
        if plan.end is not None:
            self.end(plan.end)
        elif plan.close is not None:
            self.close_file(plan.close)
        if not plan.write:
            return
        out = self._out
        now = self._clock.seconds()
        if not out.queue:
            # Checked once per batch: what is queued was checked with it.
            if out.vanished():
                self.close_file("removed or replaced")
            verdict = self._disk.verdict(now, out.file is not None,
                                         out.queue.bytes_written)
            if verdict is not None:
                why, error = verdict
                self.close_file(why)
                raise error
        if out.file is None:
            if self.current is None:
                self._begin(plan.session)
            # Every file stands alone: it starts with the metadata seen so
            # far.
            out.open(self.current, now, self.rules.dropped,
                     self.rules.replay(plan), quiet=in_outage)
            self.timer.file_opened()
        out.queue.push(raw, frame, plan)
        self.timer.wrote(now)
        if self.current.joining and plan.code in sostream.DATA_TYPES:
            self._first_data(self.current)

    def _begin(self, session):
        basename = (str(session) if session is not None
                    else str(int(self._wall_time())))
        stream_id = self.rules.stream_id or self.default_stream_id
        acq = self.current = Acquisition(basename, stream_id, session)
        self.joined_midway = None
        if session is None:
            self._file_log.session_started(basename, stream_id, False)
        elif self.rules.joining:
            # Begun in the sender's replay: whether the session was joined
            # midway shows at its first data, by the status dump.
            acq.joining = True
        else:
            self._started(acq)

    def _started(self, acq):
        self._file_log.session_started(acq.basename, acq.stream_id)

    def _first_data(self, acq):
        acq.joining = False
        if self.rules.has_status_dump:
            self._started(acq)
        else:
            self._joined_midway(acq)

    def _joined_midway(self, acq):
        acq.joined_midway = True
        self.joined_midway = (
            "joined session %s of %s midway: its status dump was not seen; "
            "its files lack it until the next session"
            % (acq.basename, acq.stream_id))
        self._log().warn("Joined session {basename} of {stream} midway: its "
                         "status dump was not seen; its files lack it until "
                         "the next session", basename=acq.basename,
                         stream=acq.stream_id)

    def _goes_on(self, missed):
        """
        The first live data of the acquisition in progress after a break
        (of the connection, or of tsagg itself): say what it cost.
        """
        acq = self.current
        self.frames_missed += missed
        relative = getattr(acq, "taken_back_from", None)
        if relative is not None:
            acq.taken_back_from = None
            self._log().info(
                "Session {basename} of {stream} goes on after a restart: its "
                "metadata and status chain are taken from {path}; {missed} "
                "missed while no recorder ran", basename=acq.basename,
                stream=acq.stream_id, path=relative, missed=_frames(missed))
            return
        tell = self._resumed() if self._resumed is not None else None
        if tell is not None:
            tell(acq.session_id, missed)
        else:
            self._log().info("Session {basename} of {stream} goes on after a "
                             "break; {missed} missed",
                             basename=acq.basename, stream=acq.stream_id,
                             missed=_frames(missed))

    def close_file(self, why):
        """
        Close the open file, if any; its queue is written.
        """
        if self._out.file is None:
            return
        self.rules.file_closed()
        self._out.close(why, self.current, self.rules.dropped)

    def give_up_file(self):
        """
        Writing failed: the open file, if any, is given up (the acquisition
        goes on in a new file once writing works again).
        """
        if self._out.file is None:
            return
        self.rules.file_closed()
        self._out.give_up(self.current, self.rules.dropped)

    def end(self, why):
        """
        End the acquisition in progress, closing its file.
        """
        acq = self.current
        self.close_file(why)
        self.current = None
        # A session that ended with its END is not taken back from disk.
        self._looked_up = (acq.session_id if acq is not None and why == "end"
                           else None)
        self.timer.stop()

    def suspend(self, why):
        """
        The connection is gone: the file closes, and an acquisition of a
        session waits for the next connection to bring more of it (one
        without a session id ends).
        """
        if self.current is not None and self.current.session_id is None:
            self.end(why)
            return
        self.close_file(why)
        self.timer.stop()

    # -- the timer -------------------------------------------------------

    def _opened_at(self):
        """
        When the open file opened, for its rotation deadline; L{None} if no
        file is open or it is due already.
        """
        f = self._out.file
        if f is None or self.rules.rotation_due:
            return None
        return f.opened_at

    def _gap(self):
        self._log().info("No frame for {gap} s: acquisition ends",
                         gap=self._policy.gap_timeout)
        self.end("gap")

    def _rotation_due(self):
        # Closed just before the next data frame.
        self.rules.rotation_due = True


def _frames(count):
    return "1 frame" if count == 1 else "%d frames" % (count,)
