"""
The rules' plans carried out: which acquisition and which file each frame
goes in, the acquisition begun and ended, its files opened (beginning with
the metadata) and closed at the right frame, and its one timer of rotation
and gap.  L{tsagg.rules} decides; this acts, through the open file of
L{tsagg.output}.  What is queued is written by the writer first: here, a
file closes with its queue already written.
"""

from tsagg import sostream
from tsagg.files import Acquisition
from tsagg.frames import raw_type_code
from tsagg.rotation import AcquisitionTimer

__all__ = ["Acquisitions"]


class Acquisitions:
    """
    The acquisition in progress, and its files.

    @ivar rules: The L{tsagg.rules.StreamRules}.
    @ivar current: The L{Acquisition} in progress, or L{None}.
    @ivar default_stream_id: Directory name for streams that do not name
        themselves.
    """

    def __init__(self, rules, output, disk, clock, policy, waiting,
                 default_stream_id, wall_time, log):
        """
        @param output: The L{tsagg.output.FileOutput}.
        @param disk: The L{tsagg.diskspace.DiskGuard}.
        @param policy: The L{tsagg.rules.FilePolicy}.
        @param waiting: Returns what the writer waits for, for the timer
            (L{tsagg.rotation.HELD}, L{tsagg.rotation.WRITING} or L{None}).
        @param wall_time: Returns the unix time, which names acquisitions
            without a session id.
        @param log: Returns the L{Logger} to log to (the writer's).
        """
        self.rules = rules
        self.current = None
        self.default_stream_id = default_stream_id
        self._out = output
        self._disk = disk
        self._clock = clock
        self._policy = policy
        self._wall_time = wall_time
        self._log = log
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
        }

    def plan(self, frame, raw):
        """
        What the rules make of one frame now (nothing changes yet).
        """
        # The rules read their keys from the raw bytes: spt3g's decoder of a
        # blob allocates whatever length a hostile blob declares.
        fields = sostream.FrameFields(raw, getattr(frame, "entries", None))
        acq = self.current
        return self.rules.plan(raw, raw_type_code(raw), fields,
                               acq.session_id if acq else None,
                               self._out.file is not None)

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

    def _begin(self, session):
        basename = (str(session) if session is not None
                    else str(int(self._wall_time())))
        stream_id = self.rules.stream_id or self.default_stream_id
        self.current = Acquisition(basename, stream_id, session)
        if session is not None:
            self._log().info("Session {basename} of {stream} started",
                             basename=basename, stream=stream_id)
        else:
            self._log().info("Acquisition {basename} of {stream} started "
                             "(its frames carry no session id)",
                             basename=basename, stream=stream_id)

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
        self.close_file(why)
        self.current = None
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
