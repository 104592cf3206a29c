"""
Run the fault suite and write its table: ``python -m tests.fault_report
[--docs docs/faults.rst] [OUTPUT.md]`` (``make faults``).

Runs trial on the ``tests.test_faults*`` modules with
``TSAGG_FAULT_REPORT`` set, so that each scenario records what it tried and
found (L{tests.faultlog}), and turns the records into a Markdown table,
printed and written to OUTPUT.md when given; with C{--docs}, also into the
reStructuredText page of the docs.  Exits non-zero if a test failed.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from tests import faultlog
from tests.util import ROOT, repo_env

MODULES = ["tests.test_faults", "tests.test_faults_disk",
           "tests.test_faults_outage", "tests.test_faults_process",
           "tests.test_faults_fuzz", "tests.test_faults_storm",
           "tests.test_session_continuity"]


def _mib(value):
    if value is None:
        return "n/a"
    return "%.1f MiB" % (value / 2 ** 20)


def _count(value):
    return "-" if value is None else str(value)


HEADER = ["fault", "times tried", "frames kept / expected", "files torn",
          "bytes outside the data dir", "peak memory"]


def rows(entries):
    for e in entries:
        kept = ("%s / %s" % (_count(e["kept"]), _count(e["expected"]))
                if e["kept"] is not None else "-")
        memory = _mib(e["peak_bytes"])
        if e["peak_bytes"] is not None and e["peak_kind"]:
            memory += " (%s)" % e["peak_kind"]
        fault = e["fault"] + (" - " + e["note"] if e["note"] else "")
        yield [fault, str(e["tried"]), kept, str(e["torn"]),
               str(e["outside"]), memory]


PAGE = """\
.. Written by ``make faults`` (python -m tests.fault_report --docs
   docs/faults.rst); do not edit by hand.

Fault injection
===============

An aggregator at a telescope runs for months: senders restart, networks
drop, disks fill, and a bad or buggy peer can send anything.  The fault
suite (``tests/test_faults*.py``) checks that tsagg loses no frame that
arrived whole, leaves no file torn, writes nothing outside the data
directory, and keeps running.  It runs with the other tests; this command
runs it alone and writes the table below::

    make faults        # or: python -m tests.fault_report --docs docs/faults.rst

Every file is read back with the frame splitter and with spt3g (every CRC
checked).  *Frames kept / expected* counts Scan frames: those on disk
against those that arrived whole.  Peak memory is how far the resident set
grew during the scenario: of the test process for in-process scenarios, of
``twistd`` for the process ones.

{table}
{verdict}

What the faults are
-------------------

Peer death
    A sender process (``tests/faultpeer.py``) is killed with SIGKILL 50
    times in a row, mid-frame, inside a frame header, at a frame boundary,
    while bytes are in flight, or resets the connection; pairs of rounds
    share a session, so reconnects continue an acquisition in ``_001``.
    tsagg (a ``RecordingService`` retrying every 50 ms) reconnects by itself
    and records a last, whole session.
Corrupt stream
    Over a real socket, after good frames: a bad CRC, key or blob lengths up
    to 2^64-1, entry counts of 2^32-1, wrong endianness flags, unknown class
    versions and frame types, random garbage; half a frame then silence
    (idle timeout) or close; a 900 MiB blob declared and 4 MiB sent.  Each
    is dropped, logged and counted in the status, and tsagg reconnects.
Hostile identifiers
    ``sostream_id`` and ``session_id`` as path traversals, absolute paths,
    control characters, 100 kB strings, other G3 types, invalid UTF-8, and
    blobs that declare 1 GiB or 2^40 bytes (which spt3g's own decoder would
    allocate).
Disk faults
    ENOSPC on a real 2 MiB tmpfs, in the middle of a frame, then more space
    (remount); EACCES injected through the writer's ``opener`` (the tests
    run as root, which ignores file modes); the data directory deleted, or
    moved aside and made anew, while a file is open; a file system that
    stalls (slow writes injected).
Backpressure
    ``twistd tsagg`` whose writes are slowed to 25 MB/s by
    ``tests/faulty_twistd.py``, fed about 100 MB as fast as loopback goes.
    Writes run in the reactor, and the socket is paused while any bytes
    wait to be written, so tsagg does not read while it writes; the sender
    waits.  The bound is the frames one socket read completed (one large
    frame, or 1 MiB of small ones) waiting to be written, the frame being
    received, and one socket read (1 MiB), plus frames held while the disk
    fails (those of one read, as the socket is paused at the first
    failure; ``max_held_bytes`` is a last guard).
Outages longer than the idle timeout
    ``twistd tsagg`` on its default options (but ``--idle-timeout 2``)
    records a session that spt3g's ``G3NetworkSender`` (``tsagg-sim``)
    sends at 2 MB/s, while its data file system is full (a real tmpfs
    filled by another file), read-only (a real read-only bind mount laid
    over the data directory) or frozen (``fsfreeze`` on a real ext4 loop
    device: one write blocks until it thaws), for ``TSAGG_FAULT_OUTAGE``
    seconds (60 here, 4 in ``make test``).  tsagg pauses the socket and the
    sender's queue holds the stream; the connection is never dropped.  The
    note gives tsagg's CPU over the outage and its log lines a minute; the
    memory column is its RSS growth.  Every Scan frame of the session must
    be on disk once, in order, in files that all begin with the metadata.
Kill and restart
    ``twistd tsagg`` writing 2 MB frames of a ``G3NetworkSender`` to a slow
    disk is killed with SIGKILL at a moment its file ends inside a frame,
    and started again: the journal of open files (``.tsagg/`` in the data
    directory) tells the new process which file was left open, the torn
    tail is cut off and logged, and the session goes on in ``_001``.
Shutdown
    SIGTERM to ``twistd tsagg`` under full load with 0.5 s files, and SIGINT
    while a frame is half received (SIGHUP, which ends it the same way, is
    tried in ``tests/test_twistd.py``): every file ends at a frame boundary and
    was fsynced (``tests/faulty_twistd.py`` logs each fsync) before exit.
Breaks in a session
    spt3g's ``G3NetworkSender`` in listen mode sends long SMuRF sessions as
    smurf-streamer's SessionManager does (``tests/so/sender.py``: 0.5 s
    Scan frames, a status diff a second, no ALIVE while data flows) to
    ``twistd tsagg --time-per-file 3`` through a relay
    (``tests/relay.py``).  5 s into a session the relay is cut (both
    sides reset) for 0.3 s; or tsagg is stopped (SIGTERM, kill -9) and
    started again; or tsagg first starts 5 s into a session.  sotodlib
    reads the archive (``tests/so/continuity.py``): one complete
    observation per session in G3tSmurf, ``SmurfStatus.from_file`` finding
    the channel count in every file that holds data (but those of a
    session joined midway, whose status dump tsagg never saw), every such
    file beginning with the Observation and the whole status chain bit for
    bit as sent, no frame written twice.  *Frames kept / expected* counts
    the Scan frames of the session against those the sender sent; a cut
    may cost 2 at most, a restart those sent while no tsagg ran.
Session storm
    A hostile sender: spt3g's ``G3NetworkSender`` (``tests/stormsender.py``)
    gives every small Scan frame a new ``session_id``, as fast as ``twistd
    tsagg`` on its default options takes them, so every frame is a file of
    its own.  Once SIGTERM mid-storm; once 2,000 sessions and then
    ``TSAGG_FAULT_STORM`` more (200,000 here, 20,000 in ``make test``),
    with the RSS of twistd read after each, the journal's size watched
    throughout, the log's lines counted, then SIGTERM.  Every file must hold
    its one frame bit for bit (``tsagg.scan`` and a byte compare), the
    journal stay under 256 KiB, RSS grow by at most 16 MiB over the storm,
    the log hold summaries rather than a line per file, and twistd exit
    within 10 s of SIGTERM with no error in its log.  The note gives files
    a second, RSS before and after, the largest journal, log lines a minute
    and the seconds from SIGTERM to exit.
Fuzzing
    Hypothesis mutates a valid SO stream (bit flips, truncations,
    insertions, duplications, deletions, u64 overwrites, random chunking)
    and feeds it through ``G3StreamProtocol`` and a real ``RotatingWriter``
    on a ``task.Clock``: nothing raises, nothing hangs, no timer is left,
    and every frame on disk passes its CRC.
"""


def rst_table(entries):
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [HEADER] + list(rows(entries)):
        lines.append("   * - " + row[0].replace("*", "\\*"))
        lines += ["     - " + cell for cell in row[1:]]
    return "\n".join(lines) + "\n"


def table(entries):
    lines = [
        "| fault | times tried | frames kept / expected | files torn "
        "| bytes outside the data dir | peak memory |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows(entries):
        lines.append("| " + " | ".join(cell.replace("|", "\\|")
                                       for cell in row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    docs = None
    if "--docs" in argv:
        i = argv.index("--docs")
        docs = argv[i + 1]
        del argv[i:i + 2]
    tmp = tempfile.mkdtemp(prefix="tsagg-faults-")
    result = None
    try:
        records = os.path.join(tmp, "records.jsonl")
        env = repo_env(**{faultlog.REPORT_ENV: records})
        result = subprocess.run(
            [sys.executable, "-m", "twisted.trial", "--temp-directory",
             os.path.join(tmp, "trial")] + MODULES, cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        verdict = [line for line in result.stdout.decode(
            "utf-8", "replace").splitlines()
            if line.startswith(("PASSED", "FAILED"))]
        entries = []
        if os.path.exists(records):
            with open(records) as f:
                entries = [json.loads(line) for line in f]
    finally:
        if result is not None and result.returncode == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            sys.stdout.write("trial's files, logs included, are kept in "
                             "%s\n" % (tmp,))
    verdict = "trial: %s" % (verdict[-1] if verdict else "no verdict")
    text = table(entries) + "\n" + verdict + "\n"
    if docs:
        with open(docs, "w") as f:
            f.write(PAGE.format(table=rst_table(entries),
                                verdict="``%s``" % verdict))
    sys.stdout.write(text)
    if argv:
        with open(argv[0], "w") as f:
            f.write(text)
    if result.returncode != 0:
        sys.stdout.write(result.stdout.decode("utf-8", "replace")[-5000:])
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
