"""
Whether tsagg's archive of long sessions (tests/so/sender.py's long mode)
kept each session whole across breaks and restarts, as SO's readers see it.

Run with the Python of the SO venv::

    .venv-so/bin/python tests/so/continuity.py --archive DIR \\
        --manifest FILE --work DIR [--joined SESSION_ID ...]

Prints a JSON report (``ok``, every check, the failures one line each, and
per session the frames that never reached the archive, with when they
were sent) and exits 1 if a check failed.  G3tSmurf is run as
tests/so/check.py runs it.

The checks, per session:

``files.layout``
    as in tests/so/check.py: ``<session>_NNN.g3`` from 000 without a hole.
``observation.one``
    G3tSmurf made exactly one observation of the session, complete (its end
    found by its own rule), holding every file of the session, with the
    reference's stop and start.  Of a session joined midway it makes none
    (it needs the status dump) or one that is complete.
``status.channels``
    ``SmurfStatus.from_file`` of every file that holds data finds the
    status dump and its channel count.  Not checked for the sessions named
    by ``--joined``: tsagg joined them midway and never saw their dump.
``files.head``
    Every file that holds data begins with the session's Observation and
    its whole status chain: the dump and every diff before the file's first
    Scan frame that reached the archive at all, in order, each bit for bit
    as the sender sent it (for a joined session, whose dump tsagg never
    saw, the chain from the first Wiring frame it received).
``frames.once``
    No frame is written twice: each Scan frame's ``frame_num`` once in the
    session, and no ``frame_num`` twice in one file.
``frames.exact``
    Every frame in the archive is, byte for byte, the frame of its
    ``frame_num`` that the sender sent.
"""

import argparse
import json
import os
import struct
import sys

import so3g  # noqa: F401 -- first: it brings the spt3g it was built with
from check import Checker, index
from sotodlib.io.load_smurf import SmurfStatus
from spt3g import core

_HEADER = struct.Struct("<BIII")
_LENGTH = struct.Struct("<Q")


def raw_frames(path):
    """
    The frames of a G3 file, each as its bytes, split by the wire format.
    """
    with open(path, "rb") as f:
        data = f.read()
    frames, at = [], 0
    while at < len(data):
        start = at
        _, _, entries, _ = _HEADER.unpack_from(data, at)
        at += _HEADER.size
        for _ in range(2 * entries):
            (length,) = _LENGTH.unpack_from(data, at)
            at += _LENGTH.size + length
        at += 4
        frames.append(data[start:at])
    return frames


def decoded(raw):
    frame = core.G3Frame()
    frame.__setstate__(({}, raw))
    return frame


class Frame:
    """
    One frame of a file: its bytes, type code, frame_num and dump flag.
    """

    def __init__(self, raw):
        frame = decoded(raw)
        self.raw = raw
        self.type = {core.G3FrameType.Scan: "S",
                     core.G3FrameType.Observation: "O",
                     core.G3FrameType.Wiring: "W"}.get(frame.type, "?")
        self.frame_num = (int(frame["frame_num"]) if "frame_num" in frame
                          else None)
        self.dump = bool(frame["dump"]) if "dump" in frame else None


class ContinuityChecker(Checker):

    def __init__(self, args, manifest):
        Checker.__init__(self, args, manifest)
        self.joined = set(args.joined)
        self.report.lost = {}

    def run(self):
        args, manifest = self.args, self.manifest
        self.ref = index(manifest["reference"],
                         os.path.join(args.work, "reference.db"),
                         manifest["meta"])
        self.smurf = index(args.archive, os.path.join(args.work, "tsagg.db"),
                           manifest["meta"])
        self.check_layout()
        for s in manifest["sessions"]:
            self.check_continuity(s)
        return self.report

    def check_continuity(self, s):
        r = self.report
        sid = s["session_id"]
        joined = sid in self.joined
        subject = "%d%s" % (sid, " (joined midway)" if joined else "")
        files = self.session_files(sid)
        reference = {f.frame_num: f for f in map(Frame,
                                                 raw_frames(s["reference"]))}
        archive = [(os.path.basename(p), [Frame(raw) for raw in
                                          raw_frames(p)]) for p in files]
        self.check_one_observation(s, subject, files, joined)

        present = set()
        scans_seen = {}
        for name, frames in archive:
            nums = [f.frame_num for f in frames]
            twice = sorted({n for n in nums if nums.count(n) > 1})
            r.check("frames.once", name, not twice,
                    "frame_num %s written twice in the file" % twice)
            for f in frames:
                present.add(f.frame_num)
                if f.type == "S":
                    scans_seen.setdefault(f.frame_num, []).append(name)
            inexact = [f.frame_num for f in frames
                       if f.frame_num not in reference
                       or reference[f.frame_num].raw != f.raw]
            r.check("frames.exact", name, not inexact,
                    "frames %s differ from what the sender sent"
                    % inexact[:10])
        twice = {n: where for n, where in scans_seen.items()
                 if len(where) > 1}
        r.check("frames.once", subject, not twice,
                "Scan frames written more than once: %s" % dict(
                    list(twice.items())[:5]))

        sent = {f["frame_num"]: f for f in s["frames"]
                if f["frame_num"] is not None}
        r.lost[sid] = [{"frame_num": n, "type": sent[n]["type"],
                        "sent": sent[n]["sent"]}
                       for n in sorted(sent) if n not in present]

        for path, (name, frames) in zip(files, archive):
            scans = [i for i, f in enumerate(frames) if f.type == "S"]
            if not scans:
                continue
            self.check_head(s, name, frames[:scans[0]],
                            frames[scans[0]].frame_num, reference, present,
                            joined)
            if not joined:
                status = SmurfStatus.from_file(path)
                r.check("status.channels", name,
                        status.dump_frame
                        and status.num_chans == self.manifest["channels"],
                        "SmurfStatus.from_file: dump_frame %s, num_chans %s "
                        "(the session has %d channels)" % (
                            status.dump_frame, status.num_chans,
                            self.manifest["channels"]))

    def check_head(self, s, name, head, first, reference, present, joined):
        """
        The frames before a file's first Scan frame are the Observation
        and the status chain, as the sender sent them.
        """
        chain = [f for n, f in sorted(reference.items())
                 if f.type == "W" and n < first and n in present]
        observation = [f for n, f in sorted(reference.items())
                       if f.type == "O" and n < first]
        want = observation[-1:] + chain
        got = [f for f in head if f.type in "OW"]
        problems = []
        if not joined and not any(f.dump for f in got):
            problems.append("no status dump")
        if [f.raw for f in got] != [f.raw for f in want]:
            problems.append("begins %s, expected %s" % (
                " ".join("%s%s" % (f.type, f.frame_num) for f in got),
                " ".join("%s%s" % (f.type, f.frame_num) for f in want)))
        self.report.check("files.head", name, not problems,
                          "; ".join(problems))

    def check_one_observation(self, s, subject, files, joined):
        r = self.report
        with self.smurf.Session() as session, self.ref.Session() as ref:
            obs_id = self.obs_id(s)
            ref_obs = self.ref.get_observation(obs_id, ref)
            obs = self.smurf.get_observation(obs_id, session)
            if obs is None:
                # G3tSmurf makes an observation from a status dump: one
                # that tsagg never saw makes none.
                r.check("observation.one", subject, joined,
                        "G3tSmurf made no observation %s" % obs_id)
                return
            problems = []
            if obs.stop is None:
                problems.append("not complete (no end found)")
            elif ref_obs is not None and obs.stop != ref_obs.stop:
                problems.append("stop %s, reference %s" % (obs.stop,
                                                          ref_obs.stop))
            if (not joined and ref_obs is not None
                    and obs.start != ref_obs.start):
                problems.append("start %s, reference %s" % (obs.start,
                                                            ref_obs.start))
            names = sorted(f.name for f in obs.files)
            if names != sorted(files):
                problems.append("holds %s, the session's files are %s" % (
                    [os.path.basename(n) for n in names],
                    [os.path.basename(f) for f in files]))
            r.check("observation.one", subject, not problems,
                    "; ".join(problems))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--joined", type=int, nargs="*", default=[],
                        help="Sessions tsagg joined midway.")
    args = parser.parse_args()
    args.suprsync_db = None
    with open(args.manifest) as f:
        manifest = json.load(f)
    report = ContinuityChecker(args, manifest).run()
    text = report.as_json()
    text["lost"] = report.lost
    print(json.dumps(text, indent=1, default=str))
    for line in text["failures"]:
        print("FAIL " + line, file=sys.stderr)
    sys.exit(0 if text["ok"] else 1)


if __name__ == "__main__":
    main()
