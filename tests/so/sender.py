"""
SMuRF streaming sessions, shaped as smurf-streamer's SessionManager sends
them, from a real spt3g G3NetworkSender (the spt3g that so3g bundles), for
tsagg to record; and the reference archive of the very same frames, written
by spt3g's own G3Writer in the layout G3tSmurf reads.

Run with the Python of the SO venv (``make so-venv``)::

    .venv-so/bin/python tests/so/sender.py --port P --go-file F \\
        --reference DIR --meta DIR --manifest FILE --time-per-file 3

It prints ``Listening on port P``, then sends ALIVE five times a second
until the go-file exists; then one session of each kind in SESSION_KINDS,
one second of ALIVE between them; then writes the manifest (JSON: every
session, what it is meant to show, when its frames were sent) and exits.

The long mode (``--control DIR --sessions N --frame-period 0.5`` instead of
``--go-file``) sends sessions whose length the test decides: session n
starts when ``DIR/start<n>`` exists and ends when ``DIR/stop<n>`` does, a
Scan frame every frame period and a status diff every second in between,
and no ALIVE while it runs (see ``Streamer.long_session``).  Its reference
archive holds each session's frames exactly as they went on the wire, and
its manifest every frame sent, with when.

A session: START; Observation (``stream_placement`` 'start'); Wiring with
``dump`` true, the whole status as YAML; Scan frames every 0.2 s; Wiring
diffs (``dump`` false, only the changed keys) now and then; at the end a
Wiring diff with ``open_g3stream`` 0, Observation 'end', END, and the
CLEANSE Observation and Wiring frames.  Every frame but flow control
carries time, sostream_version, sostream_id, frame_num and session_id.

The status, tune file and channel assignments come from socs'
SmurfFileEmulator (``Tune``, ``G3FrameGenerator``).  The Scan frames are
built here: the emulator's ``get_data_frame`` gives G3SuperTimestream
arrays in Fortran order (it masks samples along the second axis), which
so3g 0.2.9 serializes scrambled; here every array is C-ordered.  Their
timing is 'High Precision' with timing-system counters that agree
(Counter0 and Counter2), and the status says the downsampler is external,
so that G3tSmurf judges the timing good as it does for site data.

Times are offsets from the moment the Observation 'start' frame is sent,
which is when tsagg opens a session's first file.  tsagg's rotation
deadline is --time-per-file after a file opens; a rotated file opens on the
first frame after the deadline, which is always a Scan frame here.  Scan
frames are sent 0.1 s off the deadlines, end frames 0.3 s after.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import so3g  # noqa: F401 -- first: it brings the spt3g it was built with
import txaio
import yaml
from socs.agents.smurf_file_emulator.agent import (
    NBIASLINES, G3FrameGenerator, Tune, primary_names)
from spt3g import core

txaio.use_twisted()

ALIVE, START, END, CLEANSE = 0, 1, 2, 3

FRAME_PERIOD = 0.2
# The first Scan frame's offset: Scan frames go at odd tenths of a second
# after the Observation frame, 0.1 s either side of a deadline of whole
# seconds.
FIRST_SCAN = 0.1
END_AFTER_DEADLINE = 0.3
DIFF_OFFSETS = (1.3, 4.3)
# Seconds between the Unix epoch and the EPICS epoch (1990) of Counter2.
EPICS_EPOCH = 5 * (4 * 365 + 1) * 24 * 60 * 60
# Counter0 counts this many ticks per second of the timing system.
COUNTER0_RATE = 480000
STATUS_TAG = "obs,cmb"
ACTION = "stream_g3_on"

#: What each session shows, in the order they are sent.
SESSION_KINDS = {
    "short": "ends 1.7 s after it opens, well before the rotation deadline",
    "end_after_deadline": ("last Scan 0.1 s before the first deadline, "
                           "end frames 0.3 s after it"),
    "rotating": ("rotates once, with a status diff in each file, and ends "
                 "before the second deadline"),
    "end_after_second_deadline": ("rotates once; last Scan 0.1 s before "
                                  "the second deadline, end frames 0.3 s "
                                  "after it"),
}


#: The type code of each frame type, as tsagg and the manifest write them.
TYPE_CODES = {core.G3FrameType.Scan: "S", core.G3FrameType.Observation: "O",
              core.G3FrameType.Wiring: "W", core.G3FrameType.none: "N"}


def flow_control(value, frame_type=core.G3FrameType.none):
    frame = core.G3Frame(frame_type)
    frame["sostream_flowcontrol"] = value
    return frame


def scan_offsets(last):
    """
    The offsets of a session's Scan frames, up to C{last}.
    """
    count = int(np.floor((last - FIRST_SCAN) / FRAME_PERIOD + 1e-6)) + 1
    return [round(FIRST_SCAN + k * FRAME_PERIOD, 6) for k in range(count)]


def first_scan_after(deadline):
    k = int(np.floor((deadline - FIRST_SCAN) / FRAME_PERIOD + 1e-6)) + 1
    return round(FIRST_SCAN + k * FRAME_PERIOD, 6)


def schedule(kind, time_per_file):
    """
    The planned offsets of one session: its Scan frames and its end.

    @return: C{(scan offsets, end offset)}.
    """
    d1 = time_per_file
    d2 = first_scan_after(d1) + time_per_file
    if kind == "short":
        last = min(1.5, d1 - 0.5)
        return scan_offsets(last), last + FRAME_PERIOD
    if kind == "end_after_deadline":
        return scan_offsets(d1 - 0.1), d1 + END_AFTER_DEADLINE
    if kind == "rotating":
        last = d1 + 1.5
        assert last + FRAME_PERIOD < d2 - 0.5
        return scan_offsets(last), last + FRAME_PERIOD
    if kind == "end_after_second_deadline":
        return scan_offsets(d2 - 0.1), d2 + END_AFTER_DEADLINE
    raise ValueError(kind)


class Streamer:
    """
    One G3NetworkSender and the sessions sent through it.
    """

    def __init__(self, sender, stream_id, tune, status, sample_rate, rng,
                 frame_period=FRAME_PERIOD):
        self.sender = sender
        self.stream_id = stream_id
        self.tune = tune
        self.status = status
        self.status_yaml = yaml.dump(status, Dumper=yaml.CSafeDumper)
        self.sample_rate = sample_rate
        self.frame_period = frame_period
        self.samples_per_frame = int(round(sample_rate * frame_period))
        self.channels = int(np.sum(tune.channels != -1))
        self.names = core.G3VectorString(
            ["r%04d" % ch for ch in range(self.channels)])
        self.rng = rng

    def alive(self, seconds):
        """
        Send ALIVE five times a second for C{seconds}.
        """
        until = time.time() + seconds
        while True:
            self.sender(flow_control(ALIVE))
            if time.time() >= until:
                return
            time.sleep(0.2)

    def session(self, kind, time_per_file, reference_dir):
        """
        Send one session; write its frames to the reference archive.

        @return: What the manifest says of it.
        """
        scans, end_offset = schedule(kind, time_per_file)
        gen = G3FrameGenerator(self.stream_id, self.sample_rate, self.tune,
                               action=ACTION, action_time=time.time())
        gen.session_id = int(time.time())
        sent = []

        def send(frame):
            self.sender(frame)
            if "sostream_flowcontrol" not in frame:
                sent.append(frame)
            return time.time()

        send(flow_control(START))
        t_open = send(gen.get_obs_start_frame())
        dump = core.G3Frame(core.G3FrameType.Wiring)
        dump["status"] = self.status_yaml
        dump["dump"] = True
        send(gen.tag_frame(dump))

        # The samples of Scan frame k are those just before it is sent; the
        # first on a whole 10 ms, in G3 ticks.
        t_sample0 = (int((t_open - self.frame_period) * 100)
                     * (int(core.G3Units.s) // 100))
        diffs = [d for d in DIFF_OFFSETS if d < scans[-1]]
        events = sorted([(s, "scan") for s in scans]
                        + [(d, "diff") for d in diffs])
        scan_sent, diff_sent = [], []
        for offset, what in events:
            delay = t_open + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            if what == "scan":
                frame = self.scan_frame(gen, t_sample0, len(scan_sent))
                scan_sent.append(send(frame))
            else:
                diff = core.G3Frame(core.G3FrameType.Wiring)
                diff["status"] = yaml.dump(self.changed_keys(len(diff_sent)))
                diff["dump"] = False
                diff_sent.append(send(gen.tag_frame(diff)))

        delay = t_open + end_offset - time.time()
        if delay > 0:
            time.sleep(delay)
        closing = core.G3Frame(core.G3FrameType.Wiring)
        closing["status"] = yaml.dump(
            {"AMCc.SmurfProcessor.SOStream.open_g3stream": 0})
        closing["dump"] = False
        end_sent = send(gen.tag_frame(closing))
        send(gen.get_obs_end_frame())
        send(flow_control(END))
        send(flow_control(CLEANSE, core.G3FrameType.Observation))
        send(flow_control(CLEANSE, core.G3FrameType.Wiring))

        path = write_reference(reference_dir, self.stream_id, gen.session_id,
                               sent)
        return {
            "kind": kind,
            "meaning": SESSION_KINDS[kind],
            "session_id": gen.session_id,
            "reference": path,
            "scan_frames": len(scans),
            "samples": len(scans) * self.samples_per_frame,
            "opened": t_open,
            "scans_sent": scan_sent,
            "diffs_sent": diff_sent,
            "end_sent": end_sent,
            "timing": check_timing(kind, time_per_file, t_open, scan_sent,
                                   end_sent),
        }

    def long_session(self, stop_file, reference_dir, diff_period=1.0):
        """
        Send one session as smurf-streamer's SessionManager does, for as
        long as the test wants: START, Observation 'start', the status
        dump, then a Scan frame every C{frame_period} seconds and a status
        diff every C{diff_period} seconds (between two Scan frames), no
        ALIVE, until C{stop_file} exists; then the closing diff
        (C{open_g3stream} 0), Observation 'end', END and the CLEANSE
        Observation and Wiring frames.

        Every frame is kept as it went on the wire (C{__getstate__} gives
        the very bytes the sender sends): those of the session, flow
        control aside, are the reference archive's file of the session,
        bit for bit.

        @return: What the manifest says of it: C{frames} lists every frame
            sent (flow control too), with its type, C{frame_num}, flow
            control value, C{dump} and when it was sent.
        """
        gen = G3FrameGenerator(self.stream_id, self.sample_rate, self.tune,
                               action=ACTION, action_time=time.time())
        gen.session_id = int(time.time())
        sent, raws = [], []

        def send(frame):
            self.sender(frame)
            t = time.time()
            raw = frame.__getstate__()[1]
            flow = frame.get("sostream_flowcontrol")
            sent.append({
                "type": TYPE_CODES.get(frame.type, "?"),
                "frame_num": (None if "frame_num" not in frame
                              else int(frame["frame_num"])),
                "flow": None if flow is None else int(flow),
                "dump": (bool(frame["dump"]) if "dump" in frame
                         else None),
                "sent": t, "bytes": len(raw)})
            if flow is None:
                raws.append(raw)
            return t

        send(flow_control(START))
        t_open = send(gen.get_obs_start_frame())
        dump = core.G3Frame(core.G3FrameType.Wiring)
        dump["status"] = self.status_yaml
        dump["dump"] = True
        send(gen.tag_frame(dump))
        print("Session %d started" % gen.session_id, flush=True)
        t_sample0 = (int((t_open - self.frame_period) * 100)
                     * (int(core.G3Units.s) // 100))
        scans = diffs = 0
        next_scan = t_open + self.frame_period
        next_diff = t_open + diff_period + self.frame_period / 2
        while not os.path.exists(stop_file):
            due = min(next_scan, next_diff)
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            if due == next_scan:
                send(self.scan_frame(gen, t_sample0, scans))
                scans += 1
                next_scan += self.frame_period
            else:
                diff = core.G3Frame(core.G3FrameType.Wiring)
                diff["status"] = yaml.dump(self.changed_keys(diffs))
                diff["dump"] = False
                send(gen.tag_frame(diff))
                diffs += 1
                next_diff += diff_period
        closing = core.G3Frame(core.G3FrameType.Wiring)
        closing["status"] = yaml.dump(
            {"AMCc.SmurfProcessor.SOStream.open_g3stream": 0})
        closing["dump"] = False
        send(gen.tag_frame(closing))
        send(gen.get_obs_end_frame())
        send(flow_control(END))
        send(flow_control(CLEANSE, core.G3FrameType.Observation))
        send(flow_control(CLEANSE, core.G3FrameType.Wiring))

        directory = os.path.join(reference_dir, str(gen.session_id)[:5],
                                 self.stream_id)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "%d_000.g3" % gen.session_id)
        with open(path, "wb") as f:
            f.write(b"".join(raws))
        return {
            "kind": "long",
            "meaning": "a session as long as the test wants",
            "session_id": gen.session_id,
            "reference": path,
            "scan_frames": scans,
            "samples": scans * self.samples_per_frame,
            "opened": t_open,
            "frames": sent,
            "timing": {"ok": True, "why": ""},
        }

    def changed_keys(self, n):
        """
        The status keys a mid-session diff carries: a reading that moved.
        """
        key = "AMCc.FpgaTopLevel.AmcCarrierCore.AxiSysMonUltraScale.Temperature"
        return {key: round(self.status[key] + 0.25 * (n + 1), 3),
                "AMCc.SmurfProcessor.SOStream.dataDropCnt": 0}

    def scan_frame(self, gen, t_sample0, k):
        """
        Scan frame C{k} of a session, every array C-ordered.
        """
        n = self.samples_per_frame
        first = k * n
        sample_numbers = np.arange(first, first + n, dtype=np.int64)
        # Whole G3 ticks (10 ns): every time below is exact.
        ticks_per_second = int(core.G3Units.s)
        ticks = t_sample0 + sample_numbers * (ticks_per_second
                                              // int(self.sample_rate))
        times = core.G3VectorTime(ticks)
        seconds = ticks / ticks_per_second

        # Detector data, as the emulator makes it (a DC level per channel,
        # an 8 Hz line and white noise), below 2**23 in magnitude, so that
        # load_file's float32 holds every value exactly.
        chans = np.arange(self.channels)
        data = np.empty((self.channels, n), dtype=np.int32, order="C")
        data[:] = 2 ** 16 * chans[:, None]
        data += (2 ** 16 * 0.2 * np.sin(2 * np.pi * 8 * seconds)).astype(
            np.int32)
        data += (2 ** 16 * self.rng.normal(0, 0.03, data.shape)).astype(
            np.int32)

        # The timing system's counters: Counter2 is the EPICS time (seconds
        # since 1990 above, nanoseconds below), Counter0 the fraction of
        # the second in 480 kHz ticks; G3tSmurf checks that they agree.
        whole, fraction = np.divmod(ticks, ticks_per_second)
        nanos = fraction * (10 ** 9 // ticks_per_second)
        primary = np.zeros((len(primary_names), n), dtype=np.int64, order="C")
        row = {name: i for i, name in enumerate(primary_names)}
        primary[row["UnixTime"]] = whole * 10 ** 9 + nanos
        primary[row["FrameCounter"]] = sample_numbers
        primary[row["Counter0"]] = fraction * COUNTER0_RATE // ticks_per_second
        primary[row["Counter1"]] = sample_numbers // 20
        primary[row["Counter2"]] = ((whole - EPICS_EPOCH) << 32) | nanos

        biases = np.empty((NBIASLINES, n), dtype=np.int32, order="C")
        biases[:] = (1000 * np.arange(NBIASLINES))[:, None] + (first // n)

        frame = core.G3Frame(core.G3FrameType.Scan)
        frame["data"] = so3g.G3SuperTimestream(self.names, times, data)
        frame["primary"] = so3g.G3SuperTimestream(
            core.G3VectorString(primary_names), times, primary)
        frame["tes_biases"] = so3g.G3SuperTimestream(
            core.G3VectorString(["bias%02d" % b for b in range(NBIASLINES)]),
            times, biases)
        frame["timing_paradigm"] = "High Precision"
        frame["num_samples"] = n
        return gen.tag_frame(frame)


def check_timing(kind, time_per_file, t_open, scans_sent, end_sent):
    """
    Whether the frames were sent when the session's kind needs them to be
    (a loaded machine can make the sender late).

    @return: C{{'ok': bool, 'why': str}}.
    """
    guard = 0.03
    d1 = t_open + time_per_file
    after = [t for t in scans_sent if t > d1]
    if kind in ("short", "end_after_deadline") and after:
        return {"ok": False, "why": "a Scan frame was sent after the "
                "first deadline"}
    if kind == "short" and end_sent >= d1 - guard:
        return {"ok": False, "why": "the end came too close to the deadline"}
    if kind == "end_after_deadline":
        if not (scans_sent[-1] < d1 - guard and end_sent > d1 + guard):
            return {"ok": False, "why": "last Scan at %+.3f s, end at %+.3f s "
                    "of the deadline" % (scans_sent[-1] - d1, end_sent - d1)}
    if kind in ("rotating", "end_after_second_deadline"):
        before = [t for t in scans_sent if t <= d1]
        if not after or d1 - before[-1] < guard or after[0] - d1 < guard:
            return {"ok": False, "why": "a Scan frame came too close to the "
                    "first deadline"}
        d2 = after[0] + time_per_file
        if kind == "rotating" and end_sent >= d2 - guard:
            return {"ok": False, "why": "the end came too close to the "
                    "second deadline"}
        if kind == "end_after_second_deadline" and not (
                scans_sent[-1] < d2 - guard and end_sent > d2 + guard):
            return {"ok": False, "why": "last Scan at %+.3f s, end at %+.3f s "
                    "of the second deadline"
                    % (scans_sent[-1] - d2, end_sent - d2)}
    return {"ok": True, "why": ""}


def write_reference(reference_dir, stream_id, session_id, frames):
    """
    The session's frames, flow control aside, through spt3g's G3Writer into
    ``<5 digits>/<stream-id>/<session>_000.g3``.
    """
    directory = os.path.join(reference_dir, str(session_id)[:5], stream_id)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "%d_000.g3" % session_id)
    writer = core.G3Writer(path)
    for frame in frames:
        writer(frame)
    writer(core.G3Frame(core.G3FrameType.EndProcessing))
    return path


def write_tune(meta_dir, stream_id, channels):
    """
    Channel assignments and a tune file, as pysmurf's setup leaves them,
    under ``<meta>/<5 digits>/<stream-id>/<ctime>_uxm_setup/outputs/``.
    """
    tune = Tune(nchans=channels)
    ctime = int(time.time())
    outputs = os.path.join(meta_dir, str(ctime)[:5], stream_id,
                           "%d_uxm_setup" % ctime, "outputs")
    os.makedirs(outputs)
    tune.write_channel_assignments(basedir=outputs)
    tune.write_tune(basedir=outputs)
    return tune


def smurf_status(tune, stream_id, sample_rate):
    """
    The emulator's status dump, as a dict, for this tune; its downsampler
    external, as on site.
    """
    gen = G3FrameGenerator(stream_id, sample_rate, tune, action=ACTION,
                           action_time=time.time())
    frame = gen.get_status_frame(tag=STATUS_TAG)
    status = yaml.load(frame["status"], Loader=yaml.CSafeLoader)
    status["AMCc.SmurfProcessor.Downsampler.DownsamplerMode"] = "External"
    return status


def wait_for(path, streamer, limit=300):
    """
    Send ALIVE five times a second until C{path} exists.
    """
    waited = time.time()
    while not os.path.exists(path):
        if time.time() - waited > limit:
            sys.exit("no %s after %d s" % (path, limit))
        streamer.alive(0.0)
        time.sleep(0.2)


def long_sessions(args, streamer):
    """
    The long mode: session n starts when ``<control>/start<n>`` exists and
    ends when ``<control>/stop<n>`` does; ALIVE five times a second while
    no session runs.  The manifest is written when the last has ended.
    """
    sessions = []
    for n in range(1, args.sessions + 1):
        wait_for(os.path.join(args.control, "start%d" % n), streamer)
        # Session ids are whole seconds: two sessions need two of them.
        while sessions and int(time.time()) <= sessions[-1]["session_id"]:
            streamer.alive(0.0)
            time.sleep(0.2)
        session = streamer.long_session(
            os.path.join(args.control, "stop%d" % n), args.reference)
        sessions.append(session)
        print("Sent session %d: %d Scan frames" % (
            session["session_id"], session["scan_frames"]), flush=True)
    streamer.alive(1.0)
    return sessions


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--go-file")
    parser.add_argument("--control",
                        help="The long mode: a directory in which the test "
                        "starts and stops sessions (start1, stop1, ...).")
    parser.add_argument("--sessions", type=int, default=1,
                        help="Sessions of the long mode.")
    parser.add_argument("--frame-period", type=float, default=FRAME_PERIOD,
                        help="Seconds between Scan frames.")
    parser.add_argument("--reference", required=True,
                        help="Directory of the reference archive.")
    parser.add_argument("--meta", required=True,
                        help="Directory of the SMuRF metadata (tune files).")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--time-per-file", type=float, default=3.0,
                        help="tsagg's --time-per-file, where its rotation "
                        "deadlines fall.")
    parser.add_argument("--stream-id", default="crate1slot2")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--sample-rate", type=float, default=200.0)
    parser.add_argument("--kinds", default=",".join(SESSION_KINDS),
                        help="Comma-separated kinds of session to send.")
    args = parser.parse_args()
    if (args.go_file is None) == (args.control is None):
        parser.error("either --go-file or --control")
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in SESSION_KINDS:
            parser.error("unknown kind of session %r" % kind)

    tune = write_tune(args.meta, args.stream_id, args.channels)
    status = smurf_status(tune, args.stream_id, args.sample_rate)
    sender = core.G3NetworkSender(hostname="*", port=args.port)
    streamer = Streamer(sender, args.stream_id, tune, status,
                        args.sample_rate, np.random.default_rng(7),
                        frame_period=args.frame_period)
    print("Listening on port %d" % args.port, flush=True)

    if args.control:
        sessions = long_sessions(args, streamer)
    else:
        wait_for(args.go_file, streamer, limit=120)
        # The receiver is accepted when a frame is sent: let it be, before
        # the first session starts.
        streamer.alive(0.5)
        sessions = []
        for n, kind in enumerate(kinds):
            if n:
                streamer.alive(1.0)
            sessions.append(streamer.session(kind, args.time_per_file,
                                             args.reference))
            print("Sent session %d (%s)" % (sessions[-1]["session_id"],
                                            kind), flush=True)
        streamer.alive(1.0)
    sender(core.G3Frame(core.G3FrameType.EndProcessing))

    manifest = {
        "stream_id": args.stream_id,
        "channels": streamer.channels,
        "frame_period": args.frame_period,
        "time_per_file": args.time_per_file,
        "meta": os.path.abspath(args.meta),
        "reference": os.path.abspath(args.reference),
        "status_tag": STATUS_TAG,
        "sessions": sessions,
    }
    with open(args.manifest + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.rename(args.manifest + ".tmp", args.manifest)
    print("Done", flush=True)


if __name__ == "__main__":
    main()
