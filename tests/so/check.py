"""
Read a tsagg archive with SO's own readers and compare what they find with
the reference archive of the same sessions (tests/so/sender.py sends the
sessions and writes the reference with spt3g's G3Writer).

Run with the Python of the SO venv::

    .venv-so/bin/python tests/so/check.py --archive DIR --manifest FILE \\
        --work DIR [--suprsync-db DB --suprsync-archive NAME]

sotodlib's G3tSmurf indexes each archive as the site's update script does
(``index_metadata``, ``index_archive``, then ``update_observation_files``
for every observation), each into a database of its own under --work.
Prints a JSON report (``ok``, every check with its verdict, the failures
one line each, what G3tSmurf recorded) and exits 1 if any check failed.

The checks, per session:

``harness.*``
    The sender kept to its timetable, and G3tSmurf completes the session
    in the reference archive.  A failure here says nothing of tsagg.
``files.layout``
    tsagg's files of the session are ``<5 digits>/<stream-id>/<session>_NNN.g3``,
    numbered from 000 without a hole; no file belongs to no session.
``observation.*``
    G3tSmurf made the observation from tsagg's files (``found``) and found
    its end by its own rule, the end frames in its last file (``complete``;
    no ``force``); its ``stop`` and ``n_samples``, its ``start``, and its
    timing, tag and tuneset are the reference's; every file of the session
    is in it (``files``).
``frames.scan``
    Every Scan frame, in file order, is the reference's: frame_num, the
    sample times of ``data`` (G3 ticks), and every value of ``data``,
    ``primary`` and ``tes_biases``.
``load.file``, ``load.observation``
    ``load_file`` on each file alone gives exactly the reference's samples
    for that stretch (signal, timestamps, every primary field, biases);
    ``load_file`` on all the files of the observation, in G3tSmurf's order,
    gives exactly the reference's whole session.
``status.from_file``
    ``SmurfStatus.from_file`` finds a status dump in each file, with every
    key of the session's dump at its value.
``status.current``
    Each file carries the status as it stood at its first Scan frame (at
    its last frame if it has none): its Wiring frames up to there, applied
    in order, give what the reference's Wiring frames give up to the same
    frame.
``suprsync.rows`` (with --suprsync-db)
    Every file of the archive is in the suprsync database once, with its
    absolute local path, its path relative to the archive as remote path,
    the archive name and its md5; and no other row is there.
"""

import argparse
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import warnings

import numpy as np
import so3g
import yaml
from spt3g import core

warnings.simplefilter("ignore")
logging.disable(logging.WARNING)

from sotodlib.io.load_smurf import (  # noqa: E402
    Files, G3tSmurf, Observations, SmurfStatus, load_file)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suprsync_rows  # noqa: E402

FILE_NAME = re.compile(r"^(\d{5})/([^/]+)/(\d+)_(\d{3})\.g3$")
SUPER_TIMESTREAMS = ("data", "primary", "tes_biases")


class Report:
    """
    The verdict of every check, and what G3tSmurf recorded.
    """

    def __init__(self):
        self.checks = []
        self.observations = {}

    def check(self, name, subject, ok, message=""):
        self.checks.append({"check": name, "subject": subject,
                            "ok": bool(ok), "message": "" if ok else message})
        return ok

    def failures(self):
        return ["%s %s: %s" % (c["check"], c["subject"], c["message"])
                for c in self.checks if not c["ok"]]

    def as_json(self):
        failures = self.failures()
        return {"ok": not failures, "failures": failures,
                "checks": self.checks, "observations": self.observations}


# -- reading files ------------------------------------------------------------

def frames_of(path):
    reader = so3g.G3IndexedReader(path)
    while True:
        frames = reader.Process(None)
        if not frames:
            return
        yield frames[0]


def scan_record(frame):
    """
    What a Scan frame holds that must arrive exactly: plain values.
    """
    record = {"frame_num": frame["frame_num"]}
    for key in SUPER_TIMESTREAMS:
        ts = frame[key]
        record[key] = (list(ts.names), np.array(ts.times, dtype=np.int64),
                       np.array(ts.data))
    return record


def same_scan(got, want):
    """
    @return: L{None} when the two Scan records are equal, else what differs.
    """
    if got["frame_num"] != want["frame_num"]:
        return "frame_num %s, expected %s" % (got["frame_num"],
                                              want["frame_num"])
    for key in SUPER_TIMESTREAMS:
        names, times, data = got[key]
        wnames, wtimes, wdata = want[key]
        if names != wnames:
            return "%s: channel names differ" % key
        if not np.array_equal(times, wtimes):
            return "%s: sample times differ (%s)" % (key, first_difference(
                times, wtimes))
        if data.dtype != wdata.dtype or not np.array_equal(data, wdata):
            return "%s: values differ (%s)" % (key, first_difference(
                data, wdata))
    return None


def first_difference(got, want):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return "shape %s, expected %s" % (got.shape, want.shape)
    where = np.argwhere(got != want)
    if not len(where):
        return "dtype %s, expected %s" % (got.dtype, want.dtype)
    i = tuple(int(x) for x in where[0])
    return "%d differ, first at %s: %r, expected %r" % (
        len(where), list(i), got[i].item(), want[i].item())


def wiring_status(frame):
    return yaml.load(frame["status"], Loader=yaml.CSafeLoader)


def status_at(frames, until):
    """
    The status that the Wiring frames among C{frames} give, applied in
    order, before the first frame for which C{until(frame)} is true.
    """
    status = {}
    for frame in frames:
        if until(frame):
            break
        if frame.type == core.G3FrameType.Wiring:
            status.update(wiring_status(frame))
    return status


def differing_keys(got, want, keys=None):
    keys = sorted(want) if keys is None else keys
    return [k for k in keys if got.get(k, KeyError) != want[k]]


def loaded(path_or_paths):
    """
    ``load_file``'s arrays: what must be exact, by name.
    """
    aman = load_file(path_or_paths, show_pb=False)
    arrays = {"timestamps": np.asarray(aman.timestamps),
              "signal": np.asarray(aman.signal),
              "biases": np.asarray(aman.biases)}
    for key in aman.primary._fields:
        arrays["primary." + key] = np.asarray(aman.primary[key])
    return arrays


def compare_loaded(got, want, start=0, stop=None):
    """
    @return: What differs between C{got} and the stretch C{start:stop} of
        C{want}, one string per array; empty when all are equal.
    """
    problems = []
    for name in sorted(set(got) | set(want)):
        if name not in got or name not in want:
            problems.append("%s missing" % name)
            continue
        expected = want[name][..., start:stop]
        if (got[name].dtype != expected.dtype
                or not np.array_equal(got[name], expected)):
            problems.append("%s: %s" % (name, first_difference(
                got[name], expected)))
    return problems


# -- G3tSmurf -----------------------------------------------------------------

def index(archive, db_path, meta):
    """
    G3tSmurf over one archive, as the site's update script runs it but
    without C{force}: an observation is complete only if G3tSmurf finds its
    end by its own rule.
    """
    smurf = G3tSmurf(archive, db_path=db_path, meta_path=meta, make_db=True)
    smurf.index_metadata()
    smurf.index_archive(show_pb=False)
    with smurf.Session() as session:
        for obs in session.query(Observations).all():
            smurf.update_observation_files(obs, session)
    return smurf


def complete_if_forced(smurf, obs_id):
    """
    Whether the update script's forced pass (which looks for end frames in
    the last three files) would complete an observation; tried on a copy
    of the database.
    """
    copy = smurf.db_path + ".forced"
    shutil.copyfile(smurf.db_path, copy)
    forced = G3tSmurf(smurf.archive_path, db_path=copy,
                      meta_path=smurf.meta_path)
    with forced.Session() as session:
        obs = forced.get_observation(obs_id, session)
        try:
            forced.update_observation_files(obs, session, force=True)
        except Exception as e:
            return "error: %r" % (e,)
        return obs.stop is not None


def observation_record(obs):
    return {
        "obs_id": obs.obs_id,
        "start": str(obs.start), "stop": str(obs.stop),
        "n_samples": obs.n_samples, "duration": obs.duration,
        "timing": obs.timing, "tag": obs.tag,
        "tunesets": len(obs.tunesets),
        "files": [os.path.basename(f.name)
                  for f in sorted(obs.files, key=lambda f: (f.start, f.name))],
    }


# -- the checks ---------------------------------------------------------------

class Checker:

    def __init__(self, args, manifest):
        self.args = args
        self.manifest = manifest
        self.report = Report()
        self.stream_id = manifest["stream_id"]
        os.makedirs(args.work, exist_ok=True)

    def run(self):
        args, manifest = self.args, self.manifest
        self.ref = index(manifest["reference"],
                         os.path.join(args.work, "reference.db"),
                         manifest["meta"])
        self.smurf = index(args.archive, os.path.join(args.work, "tsagg.db"),
                           manifest["meta"])
        self.check_layout()
        for s in manifest["sessions"]:
            self.check_session(s)
        if args.suprsync_db:
            self.check_suprsync()
        return self.report

    def obs_id(self, session):
        return "obs_%s_%d" % (self.stream_id, session["session_id"])

    def session_files(self, session_id):
        pattern = os.path.join(self.args.archive, str(session_id)[:5],
                               self.stream_id, "%d_*.g3" % session_id)
        return sorted(glob.glob(pattern))

    def check_layout(self):
        r = self.report
        known = {s["session_id"] for s in self.manifest["sessions"]}
        stray = []
        for path in sorted(glob.glob(os.path.join(self.args.archive, "**"),
                                     recursive=True)):
            if not os.path.isfile(path):
                continue
            rel = os.path.relpath(path, self.args.archive)
            m = FILE_NAME.match(rel)
            if (m is None or int(m.group(3)) not in known
                    or m.group(2) != self.stream_id
                    or m.group(3)[:5] != m.group(1)):
                stray.append(rel)
        r.check("files.layout", "archive", not stray,
                "files of no session sent: %s" % stray)
        for s in self.manifest["sessions"]:
            files = self.session_files(s["session_id"])
            numbers = [int(p[-6:-3]) for p in files]
            r.check("files.layout", s["session_id"],
                    numbers == list(range(len(numbers))) and numbers,
                    "files numbered %s, expected 000 up without a hole"
                    % numbers)

    def check_session(self, s):
        r = self.report
        sid = s["session_id"]
        subject = "%d (%s)" % (sid, s["kind"])
        r.check("harness.timing", subject, s["timing"]["ok"],
                "the sender missed its timetable: %s" % s["timing"]["why"])
        ref_session = self.ref.Session()
        ref_obs = self.ref.get_observation(self.obs_id(s), ref_session)
        if not r.check("harness.reference", subject,
                       ref_obs is not None and ref_obs.stop is not None
                       and ref_obs.n_samples == s["samples"],
                       "G3tSmurf does not complete the reference "
                       "observation with %d samples: %s" % (
                           s["samples"], ref_obs and observation_record(
                               ref_obs))):
            return
        files = self.session_files(sid)
        ref_frames = list(frames_of(s["reference"]))
        ref_loaded = loaded(s["reference"])
        self.check_observation(s, subject, ref_obs, files)
        self.check_frames(subject, files, ref_frames)
        self.check_loads(s, subject, files, ref_loaded)
        self.check_status(s, subject, files, ref_frames)
        ref_session.close()

    def check_observation(self, s, subject, ref_obs, files):
        r = self.report
        session = self.smurf.Session()
        obs = self.smurf.get_observation(self.obs_id(s), session)
        records = self.report.observations.setdefault(s["session_id"], {})
        records["reference"] = observation_record(ref_obs)
        if not r.check("observation.found", subject, obs is not None,
                       "G3tSmurf made no observation %s from files %s" % (
                           self.obs_id(s),
                           [os.path.basename(f) for f in files])):
            session.close()
            return
        records["tsagg"] = record = observation_record(obs)
        if obs.stop is None:
            forced = complete_if_forced(self.smurf, obs.obs_id)
            record["complete_if_forced"] = forced
            r.check("observation.complete", subject, False,
                    "G3tSmurf finds no end in the last file by start time, "
                    "%s; files by start time: %s%s" % (
                        record["files"][-1], record["files"],
                        " (its forced update, which searches the last three "
                        "files, would find one)" if forced is True else ""))
        else:
            r.check("observation.complete", subject, True)
            r.check("observation.stop", subject, obs.stop == ref_obs.stop,
                    "stop %s, reference %s" % (obs.stop, ref_obs.stop))
            r.check("observation.n_samples", subject,
                    obs.n_samples == ref_obs.n_samples,
                    "n_samples %s, reference %s" % (obs.n_samples,
                                                    ref_obs.n_samples))
            r.check("observation.start", subject, obs.start == ref_obs.start,
                    "start %s, reference %s (the first file by start time "
                    "is %s)" % (obs.start, ref_obs.start, record["files"][0]))
            want = observation_record(ref_obs)
            other = {k: (record[k], want[k]) for k in ("timing", "tag",
                                                       "tunesets")
                     if record[k] != want[k]}
            r.check("observation.timing_tag_tuneset", subject, not other,
                    "differs from the reference as (tsagg, reference): %s"
                    % other)
        names = sorted(f.name for f in obs.files)
        r.check("observation.files", subject, names == sorted(files),
                "observation holds %s, the session's files are %s" % (
                    [os.path.basename(n) for n in names],
                    [os.path.basename(f) for f in files]))
        session.close()

    def check_frames(self, subject, files, ref_frames):
        want = [scan_record(f) for f in ref_frames
                if f.type == core.G3FrameType.Scan]
        got = []
        for path in files:
            got += [(os.path.basename(path), scan_record(f))
                    for f in frames_of(path) if f.type == core.G3FrameType.Scan]
        problems = []
        if len(got) != len(want):
            problems.append("%d Scan frames, reference %d" % (len(got),
                                                               len(want)))
        for (name, g), w in zip(got, want):
            why = same_scan(g, w)
            if why:
                problems.append("%s frame_num %s: %s" % (name, g["frame_num"],
                                                         why))
        self.report.check("frames.scan", subject, not problems,
                          "; ".join(problems[:5]))

    def check_loads(self, s, subject, files, ref_loaded):
        r = self.report
        start = 0
        for path in files:
            name = os.path.basename(path)
            count = sum(len(f["data"].times) for f in frames_of(path)
                        if f.type == core.G3FrameType.Scan)
            try:
                got = loaded(path)
            except Exception as e:
                r.check("load.file", name, False,
                        "load_file on the file alone raised %r (%d samples "
                        "in it)" % (e, count))
            else:
                problems = compare_loaded(got, ref_loaded, start,
                                          start + count)
                r.check("load.file", name, not problems, "; ".join(problems))
            start += count
        with self.smurf.Session() as session:
            ordered = [f.name for f in session.query(Files).filter(
                Files.name.in_(files)).order_by(Files.start)]
        try:
            got = loaded(ordered)
        except Exception as e:
            r.check("load.observation", subject, False,
                    "load_file on %s raised %r" % (
                        [os.path.basename(f) for f in ordered], e))
            return
        problems = compare_loaded(got, ref_loaded)
        r.check("load.observation", subject, not problems,
                "load_file on %s: %s" % ([os.path.basename(f) for f in ordered],
                                         "; ".join(problems)))

    def check_status(self, s, subject, files, ref_frames):
        r = self.report
        dump = next(f for f in ref_frames
                    if f.type == core.G3FrameType.Wiring and f["dump"])
        dump_status = wiring_status(dump)
        for path in files:
            name = os.path.basename(path)
            status = SmurfStatus.from_file(path)
            problems = []
            if not status.dump_frame:
                problems.append("no Wiring frame with dump in the file")
            if status.session_id != s["session_id"]:
                problems.append("session_id %s" % status.session_id)
            if status.stream_id != self.stream_id:
                problems.append("stream_id %s" % status.stream_id)
            missing = differing_keys(status.status, dump_status)
            if missing:
                problems.append("%d of the dump's %d keys missing or "
                                "different, e.g. %s" % (
                                    len(missing), len(dump_status),
                                    missing[:3]))
            r.check("status.from_file", name, not problems,
                    "; ".join(problems))

            frames = list(frames_of(path))
            scans = [f for f in frames if f.type == core.G3FrameType.Scan]
            if scans:
                first = scans[0]["frame_num"]
                where = "its first Scan frame (frame_num %d)" % first
                got = status_at(frames, lambda f: f is scans[0])
                want = status_at(ref_frames,
                                 lambda f: f.get("frame_num") == first)
            else:
                last = frames[-1]["frame_num"]
                where = "its last frame (frame_num %d; no Scan in it)" % last
                got = status_at(frames, lambda f: False)
                want = status_at(ref_frames,
                                 lambda f: f.get("frame_num", -1) > last)
            wrong = differing_keys(got, want)
            r.check("status.current", name, not wrong,
                    "the status at %s lacks or differs in %d of %d keys, "
                    "e.g. %s" % (where, len(wrong), len(want), wrong[:3]))

    def check_suprsync(self):
        r = self.report
        archive = os.path.abspath(self.args.archive)
        try:
            found = suprsync_rows.rows(self.args.suprsync_db)
        except Exception as e:
            r.check("suprsync.rows", self.args.suprsync_db, False,
                    "cannot read the database: %r" % (e,))
            return
        by_path = {}
        for row in found:
            by_path.setdefault(row["local_path"], []).append(row)
        files = sorted(p for p in glob.glob(os.path.join(archive, "**", "*.g3"),
                                            recursive=True))
        for path in files:
            rel = os.path.relpath(path, archive)
            rows = by_path.pop(path, [])
            problems = []
            if len(rows) != 1:
                problems.append("%d rows" % len(rows))
            with open(path, "rb") as f:
                md5 = hashlib.md5(f.read()).hexdigest()
            for row in rows:
                if row["remote_path"] != rel:
                    problems.append("remote_path %r" % row["remote_path"])
                if row["archive_name"] != self.args.suprsync_archive:
                    problems.append("archive_name %r" % row["archive_name"])
                if row["local_md5sum"] != md5:
                    problems.append("md5 %s, the file's is %s" % (
                        row["local_md5sum"], md5))
            r.check("suprsync.rows", rel, not problems, "; ".join(problems))
        r.check("suprsync.rows", "other rows", not by_path,
                "rows for no file of the archive: %s" % sorted(by_path))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True,
                        help="tsagg's data directory.")
    parser.add_argument("--manifest", required=True,
                        help="What tests/so/sender.py sent (JSON).")
    parser.add_argument("--work", required=True,
                        help="Directory for G3tSmurf's databases.")
    parser.add_argument("--suprsync-db")
    parser.add_argument("--suprsync-archive", default="timestreams")
    parser.add_argument("--report", help="Also write the report here.")
    args = parser.parse_args()
    with open(args.manifest) as f:
        manifest = json.load(f)
    report = Checker(args, manifest).run().as_json()
    text = json.dumps(report, indent=1, default=str)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    print(text)
    for line in report["failures"]:
        print("FAIL " + line, file=sys.stderr)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
