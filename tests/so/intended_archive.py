"""
The archive tsagg's writer is meant to write from the sender's sessions,
made from the reference archive: a check of the checker, which must pass
it whole.

Run with the Python of the SO venv::

    .venv-so/bin/python tests/so/intended_archive.py --manifest FILE --out DIR

The rules (shared/DESIGN.md, "Files"): a file opens on the first frame it
gets; once it has been open --time-per-file seconds, it is closed just
before the next Scan frame, so the metadata that follows a session's last
data stays in its last file; and each new file of a session starts with the
latest Wiring dump and every Wiring diff since, then the latest frame of
every other metadata type.  A frame's arrival is its ``time`` (the sender
stamps it when it sends it).
"""

import argparse
import json
import os

import so3g  # noqa: F401 -- first: it brings the spt3g it was built with
from spt3g import core

SCAN = core.G3FrameType.Scan
WIRING = core.G3FrameType.Wiring


def seconds(frame):
    return frame["time"].time / core.G3Units.s


def split_session(frames, time_per_file):
    """
    @return: The frames of each file of one session, in order.
    """
    files = [[]]
    opened = seconds(frames[0])
    wiring = []
    latest = {}
    for frame in frames:
        if (frame.type == SCAN and files[-1]
                and seconds(frame) >= opened + time_per_file):
            opened = seconds(frame)
            files.append(wiring + list(latest.values()))
        files[-1].append(frame)
        if frame.type == WIRING:
            wiring = [frame] if frame["dump"] else wiring + [frame]
        elif frame.type != SCAN:
            latest.pop(frame.type, None)
            latest[frame.type] = frame
    return files


def read(path):
    return [f for f in core.G3File(path)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.manifest) as f:
        manifest = json.load(f)
    for session in manifest["sessions"]:
        frames = read(session["reference"])
        directory = os.path.join(args.out, str(session["session_id"])[:5],
                                 manifest["stream_id"])
        os.makedirs(directory, exist_ok=True)
        for n, content in enumerate(split_session(
                frames, manifest["time_per_file"])):
            writer = core.G3Writer(os.path.join(
                directory, "%d_%03d.g3" % (session["session_id"], n)))
            for frame in content:
                writer(frame)
            writer(core.G3Frame(core.G3FrameType.EndProcessing))


if __name__ == "__main__":
    main()
