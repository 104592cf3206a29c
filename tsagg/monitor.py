"""
What the agent tells operators about a running recording beyond its raw
status: the records of its status feed (for Grafana) and whether it is
degraded, and why.  Plain values in, plain values out: the times are given,
nothing here reads a clock or does I/O.
"""

from tsagg.diskspace import human_bytes
from tsagg.writepath import duration_text

__all__ = ["StatusRecords", "Health", "RECORD_FIELDS"]

#: The fields of the status feed's C{recorder} block, in order.
RECORD_FIELDS = (
    "connected", "degraded",
    "frames_received_per_s", "received_mb_per_s",
    "frames_written_per_s", "written_mb_per_s",
    "files_written", "frames_dropped_upstream", "frames_lost",
    "frames_held", "write_errors", "bad_frames", "reconnects",
    "seconds_since_last_frame", "file_open", "current_file_age",
)


class StatusRecords:
    """
    Turn snapshots of a recording's status into records of the status feed:
    counters as they are, rates over the time since the last record, and
    only numbers and booleans (what OCS feeds, InfluxDB and Grafana take;
    an unknown value is left out, never sent as C{None} or NaN).
    """

    def __init__(self):
        self._last = None

    def start(self, now, status):
        """
        Begin a run of the recording: the next record's rates are since
        C{now}.

        @param now: The time, on the clock of the rates.
        @param status: The recording's status now.
        """
        self._last = (now, status)

    def blocks(self, now, wall, status, started_wall, file_age, degraded):
        """
        The blocks of one record of the feed.

        @param now: The time, on the clock of the rates (monotonic).
        @param wall: The unix time, to compare with C{last_frame_time}.
        @param status: The recording's status (L{RecordingService.status}).
        @param started_wall: The unix time the recording began, the start
            of C{seconds_since_last_frame} until a frame arrives.
        @param file_age: Seconds the current file has been open, or
            L{None} when none is.
        @param degraded: Whether the recording is degraded now.
        @return: C{{block name: {field: value}}}: C{recorder} always (see
            L{RECORD_FIELDS}), C{disk} (C{free_bytes}, C{free_floor_bytes})
            when the data file system could be examined.
        """
        if self._last is None:
            self._last = (now, status)
        then, before = self._last
        self._last = (now, status)
        elapsed = now - then

        def rate(key, scale=1.0):
            if elapsed <= 0:
                return 0.0
            return max(0, status[key] - before[key]) / elapsed / scale

        last_frame = status.get("last_frame_time")
        since = wall - (last_frame if last_frame is not None
                        else started_wall)
        record = {
            "connected": bool(status["connected"]),
            "degraded": bool(degraded),
            "frames_received_per_s": rate("frames_received"),
            "received_mb_per_s": rate("bytes_received", 1e6),
            "frames_written_per_s": rate("frames_written"),
            "written_mb_per_s": rate("bytes_written", 1e6),
            "files_written": int(status["files_written"]),
            "frames_dropped_upstream": int(status["frames_dropped_upstream"]),
            "frames_lost": int(status["frames_lost"]),
            "frames_held": int(status["frames_held"]),
            "write_errors": int(status["write_errors"]),
            "bad_frames": int(status["bad_frames"]),
            "reconnects": int(status["reconnects"]),
            "seconds_since_last_frame": float(max(0.0, since)),
            "file_open": file_age is not None,
            "current_file_age": float(file_age or 0.0),
        }
        blocks = {"recorder": record}
        free, floor = status.get("free_bytes"), status.get("free_floor_bytes")
        if free is not None and floor is not None:
            blocks["disk"] = {"free_bytes": int(free),
                              "free_floor_bytes": int(floor)}
        return blocks


class Health:
    """
    Whether a running recording does its job, and if not, why, in the
    operator's words.

    It is degraded while the sender has not been connected for
    C{degraded_after} seconds, while writing fails (frames are held for the
    disk), while the data file system has less free space than its floor,
    and for C{degraded_after} seconds after frames were lost.

    @ivar degraded_after: The grace period of a missing connection, and how
        long a loss of frames counts, in seconds.
    """

    def __init__(self, degraded_after):
        self.degraded_after = degraded_after
        self._down_since = None
        self._lost_seen = 0
        self._lost_at = None

    def start(self, now):
        """
        Begin a run of the recording, not connected yet.
        """
        self._down_since = now
        self._lost_seen = 0
        self._lost_at = None

    def reasons(self, now, status, address):
        """
        Why the recording is degraded now.

        @param now: The time, on the clock of C{start} (monotonic).
        @param status: The recording's status (L{RecordingService.status}).
        @param address: The sender, for the words.
        @return: A L{list} of reasons, empty when all is well.
        """
        reasons = []
        if status["connected"]:
            self._down_since = None
        else:
            if self._down_since is None:
                self._down_since = now
            down = now - self._down_since
            if down >= self.degraded_after:
                trouble = status.get("connection_trouble")
                reasons.append("not connected to %s for %s%s" % (
                    address, duration_text(down),
                    ": %s" % (trouble,) if trouble else ""))
        outage = status.get("outage_seconds")
        if outage is not None:
            reasons.append("writing has failed for %s: %s" % (
                duration_text(outage), status.get("last_error")))
        held = status.get("frames_held") or 0
        if held:
            reasons.append("%d frames held, waiting for the disk" % (held,))
        free, floor = status.get("free_bytes"), status.get("free_floor_bytes")
        if free is not None and floor is not None and free < floor:
            reasons.append("%s free on the data file system, below the "
                           "floor of %s" % (human_bytes(free),
                                            human_bytes(floor)))
        lost = status.get("frames_lost") or 0
        if lost > self._lost_seen:
            self._lost_seen = lost
            self._lost_at = now
        if self._lost_at is not None:
            ago = now - self._lost_at
            if ago < self.degraded_after:
                reasons.append("%d frames lost, the last %s ago" % (
                    lost, duration_text(ago)))
        return reasons
