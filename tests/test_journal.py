"""
Tests for L{tsagg.journal}: the journal of open files and the repair, at the
next start, of what a recorder killed outright left open.
"""

import os
import subprocess
import sys

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.trial import unittest

from tsagg.journal import JOURNAL_DIR, Journal, recover
from tsagg.scan import scan_file
from tsagg.writer import DataDirError, RotatingWriter

from tests import frames as F
from tests.util import ROOT, files_and_frames, repo_env

# A recorder that dies with a file open: it writes whole frames, then half
# of one, and is killed outright (os._exit: no close, no cleanup).
DIE_MID_FRAME = """
import os, sys
from twisted.internet import defer, task
from tsagg.writer import RotatingWriter
from tests import frames as F
writer = RotatingWriter(sys.argv[1], task.Clock(), fsync=False)
writer.prepare()
for n in range(3):
    frame = F.scan(n + 2)
    writer.frameReceived(frame, F.raw(frame))
half = F.raw(F.scan(9))
os.write(writer._file.fd, half[:len(half) // 2])
print(writer._file.path, flush=True)
os._exit(9)
"""


class JournalTestCase(unittest.TestCase):

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def die_mid_frame(self):
        """
        Run a recorder in a child process that dies with a torn file open.

        @return: The torn file's path.
        """
        out = subprocess.run([sys.executable, "-c", DIE_MID_FRAME, self.dir],
                             cwd=ROOT, env=repo_env(), capture_output=True)
        self.assertEqual(out.returncode, 9, out.stderr.decode())
        return out.stdout.decode().strip()

    def writer(self):
        writer = RotatingWriter(self.dir, task.Clock(), fsync=False)
        self.addCleanup(writer.close)
        return writer


class RepairTests(JournalTestCase):

    def test_a_torn_file_is_cut_back_to_its_last_whole_frame(self):
        path = self.die_mid_frame()
        whole = b"".join(F.raw(F.scan(n + 2)) for n in range(3))
        self.assertGreater(os.path.getsize(path), len(whole))
        [repair] = self.writer().prepare()
        self.assertEqual(repair.path, os.path.relpath(path, self.dir))
        self.assertGreater(repair.cut, 0)
        self.assertEqual(repair.size - repair.cut, len(whole))
        self.assertEqual(repair.frames, 3)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), whole)
        self.assertIsNone(scan_file(path).problem)

    def test_the_repair_is_logged_with_the_bytes_cut(self):
        path = self.die_mid_frame()
        size = os.path.getsize(path)
        events = []
        writer = self.writer()
        writer.recovery.log = Logger(observer=events.append)
        writer.prepare()
        [event] = [e for e in events if "Repaired" in e["log_format"]]
        self.assertEqual(event["cut"], size - os.path.getsize(path))
        self.assertEqual(event["path"], os.path.relpath(path, self.dir))

    def test_numbering_goes_on_after_a_repaired_file(self):
        path = self.die_mid_frame()
        writer = self.writer()
        writer.prepare()
        frame = F.scan(20)
        writer.frameReceived(frame, F.raw(frame))
        writer.close()
        names = [os.path.basename(p) for p, _ in files_and_frames(self.dir)]
        self.assertEqual(names, [os.path.basename(path),
                                 "1700000000_001.g3"])

    def test_a_file_closed_cleanly_is_never_touched(self):
        writer = self.writer()
        writer.prepare()
        frame = F.scan(2)
        writer.frameReceived(frame, F.raw(frame))
        writer.close()
        [(relative, _)] = files_and_frames(self.dir)
        path = os.path.join(self.dir, relative)
        # Something else appends to it later: not tsagg's business.
        with open(path, "ab") as f:
            f.write(b"trailing")
        before = os.stat(path)
        self.assertEqual(self.writer().prepare(), [])
        after = os.stat(path)
        self.assertEqual((before.st_size, before.st_mtime_ns),
                         (after.st_size, after.st_mtime_ns))

    def test_a_live_recorders_files_are_left_alone(self):
        live = self.writer()
        live.prepare()
        frame = F.scan(2)
        live.frameReceived(frame, F.raw(frame))
        path = live.status["current_file"]
        # Another recorder starts on the same data directory.
        self.assertEqual(recover(self.dir), [])
        self.assertEqual(len(os.listdir(os.path.join(self.dir, JOURNAL_DIR))),
                         1)
        live.close()
        self.assertEqual(files_and_frames(self.dir),
                         [(os.path.relpath(path, self.dir), [F.raw(frame)])])

    def test_every_stream_directory_is_covered(self):
        # Two recorders of two streams in one data directory die together.
        script = DIE_MID_FRAME.replace("F.scan(n + 2)", "F.scan(n + 2, "
                                       "stream_id=sys.argv[2])")
        script = script.replace("os._exit(9)", "sys.stdin.read(); os._exit(9)")
        children = [subprocess.Popen(
            [sys.executable, "-c", script, self.dir, stream], cwd=ROOT,
            env=repo_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for stream in ("crate1slot2", "crate1slot3")]
        paths = [child.stdout.readline().decode().strip()
                 for child in children]
        for child in children:
            child.stdin.close()
            child.wait()
        repairs = self.writer().prepare()
        self.assertEqual(sorted(r.path for r in repairs),
                         sorted(os.path.relpath(p, self.dir) for p in paths))
        self.assertEqual(len(set(os.path.dirname(p) for p in paths)), 2)
        for path in paths:
            self.assertIsNone(scan_file(path).problem)

    def test_a_journal_cannot_lead_outside_the_data_dir(self):
        outside = os.path.abspath(self.mktemp())
        with open(outside, "wb") as f:
            f.write(F.raw(F.scan(2)) + b"torn")
        os.makedirs(os.path.join(self.dir, JOURNAL_DIR))
        with open(os.path.join(self.dir, JOURNAL_DIR, "journal-1-dead"),
                  "w") as f:
            f.write("open ../%s\nopen %s\n"
                    % (os.path.basename(outside), outside))
        repairs = recover(self.dir)
        self.assertEqual(len(repairs), 2)
        self.assertTrue(all(r.error for r in repairs))
        self.assertEqual(os.path.getsize(outside), len(F.raw(F.scan(2))) + 4)

    def test_the_dead_journal_is_removed(self):
        self.die_mid_frame()
        writer = self.writer()
        writer.prepare()
        self.assertEqual(len(os.listdir(os.path.join(self.dir, JOURNAL_DIR))),
                         1)
        writer.close()
        self.assertEqual(os.listdir(os.path.join(self.dir, JOURNAL_DIR)), [])


class JournalFileTests(JournalTestCase):

    def test_the_journal_is_empty_once_nothing_is_open_or_waiting(self):
        journal = Journal(self.dir)
        self.addCleanup(journal.close)
        journal.opened("a/b/1_000.g3")
        journal.opened("a/b/1_001.g3")
        journal.closed("a/b/1_000.g3", hand_on=False)
        self.assertGreater(os.path.getsize(journal.path), 0)
        journal.closed("a/b/1_001.g3")
        self.assertGreater(os.path.getsize(journal.path), 0)
        self.assertFalse(journal.empty)
        journal.done("a/b/1_001.g3")
        self.assertTrue(journal.empty)
        self.assertEqual(os.path.getsize(journal.path), 0)

    def test_a_journal_with_files_waiting_is_kept_at_close(self):
        journal = Journal(self.dir)
        journal.opened("a/b/1_000.g3")
        journal.closed("a/b/1_000.g3")
        journal.close()
        self.assertTrue(os.path.exists(journal.path))

    def test_closing_removes_it(self):
        journal = Journal(self.dir)
        journal.close()
        self.assertFalse(os.path.exists(journal.path))


class FailFastTests(JournalTestCase):

    def test_missing_data_dir(self):
        writer = RotatingWriter(os.path.join(self.dir, "nope"), task.Clock())
        error = self.assertRaises(DataDirError, writer.prepare)
        self.assertIn("does not exist", str(error))

    def test_missing_data_dir_made_when_asked(self):
        path = os.path.join(self.dir, "a", "b")
        writer = RotatingWriter(path, task.Clock())
        self.addCleanup(writer.close)
        writer.prepare(create=True)
        self.assertTrue(os.path.isdir(path))

    def test_unwritable_data_dir(self):
        os.mkdir(os.path.join(self.dir, JOURNAL_DIR))
        # A journal directory that is a file: nothing can be made in it,
        # as in a data directory that cannot be written.
        os.rmdir(os.path.join(self.dir, JOURNAL_DIR))
        open(os.path.join(self.dir, JOURNAL_DIR), "w").close()
        writer = RotatingWriter(self.dir, task.Clock())
        error = self.assertRaises(DataDirError, writer.prepare)
        self.assertIn("cannot write in the data directory", str(error))


# A recorder whose journal names files open, closed and waiting, and done,
# killed outright at one step of a compaction (argv: data dir, step).
DIE_COMPACTING = """
import os, sys
from tsagg.journal import Journal
from tests import frames as F
data, step = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(data, "17000", "crate1slot2"))
raw = F.raw(F.scan(2))
journal = Journal(data)
journal.compact_at = 1 << 30
def kill(name):
    if name == step:
        os._exit(9)
journal._step = kill
for n in range(300):
    relative = "17000/crate1slot2/%d_000.g3" % (1700000000 + n,)
    with open(os.path.join(data, relative), "wb") as f:
        f.write(raw if n % 7 else raw + raw[:10])
    journal.opened(relative)
    if n % 5 == 4:
        continue
    journal.closed(relative, hand_on=n % 3 == 0)
    if n % 3 == 0 and n % 2 == 0:
        journal.done(relative)
print(journal.size, flush=True)
journal.compact()
os._exit(0)
"""


def compaction_expected():
    """
    The files L{DIE_COMPACTING}'s journal names open, and closed but not
    handed on.
    """
    open_, waiting = [], []
    for n in range(300):
        relative = "17000/crate1slot2/%d_000.g3" % (1700000000 + n,)
        if n % 5 == 4:
            open_.append(relative)
        elif n % 3 == 0 and n % 2 != 0:
            waiting.append(relative)
    return open_, waiting


class CompactionTests(JournalTestCase):
    """
    The journal is compacted as it grows, and a crash at any step of a
    compaction leaves a journal that names exactly what is open and waiting.
    """

    def test_compaction_keeps_only_what_is_open_and_waiting(self):
        journal = Journal(self.dir)
        self.addCleanup(journal.close)
        for n in range(10):
            journal.opened("a/b/%d_000.g3" % (n,))
        journal.closed("a/b/1_000.g3")
        journal.closed("a/b/2_000.g3")
        journal.done("a/b/2_000.g3")
        journal.closed("a/b/3_000.g3", hand_on=False)
        self.assertTrue(journal.compact())
        with open(journal.path) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines, ["open a/b/%d_000.g3" % (n,)
                                 for n in (0, 4, 5, 6, 7, 8, 9)]
                         + ["closed a/b/1_000.g3"])
        self.assertEqual(os.listdir(os.path.join(self.dir, JOURNAL_DIR)),
                         [os.path.basename(journal.path)])

    def test_the_compacted_journal_is_locked_and_appended_to(self):
        journal = Journal(self.dir)
        self.addCleanup(journal.close)
        journal.opened("a/b/0_000.g3")
        journal.compact()
        journal.opened("a/b/1_000.g3")
        # Another recorder starts: the journal's owner runs.
        self.assertEqual(recover(self.dir), [])
        with open(journal.path) as f:
            self.assertEqual(f.read(), "open a/b/0_000.g3\n"
                             "open a/b/1_000.g3\n")

    def test_size_stays_bounded_while_a_file_is_always_open(self):
        journal = Journal(self.dir)
        self.addCleanup(journal.close)
        largest = 0
        journal.opened("17000/crate1slot2/1700000000_000.g3")
        for n in range(1, 20000):
            relative = "17000/crate1slot2/%d_000.g3" % (1700000000 + n,)
            journal.opened(relative)
            previous = "17000/crate1slot2/%d_000.g3" % (1700000000 + n - 1,)
            journal.closed(previous)
            journal.done(previous)
            largest = max(largest, os.path.getsize(journal.path))
        self.assertLessEqual(largest, Journal.compact_at + 100)
        self.assertGreater(journal.compactions, 10)

    def test_many_files_waiting_do_not_make_it_compact_at_every_line(self):
        journal = Journal(self.dir)
        self.addCleanup(journal.close)
        for n in range(5000):
            relative = "a/b/%d_000.g3" % (n,)
            journal.opened(relative)
            journal.closed(relative)
        # 5,000 files wait: some 90 kB of live lines, each line written a
        # few times at most.
        self.assertLess(journal.compactions, 10)

    def die_compacting(self, step):
        out = subprocess.run([sys.executable, "-c", DIE_COMPACTING, self.dir,
                              step], cwd=ROOT, env=repo_env(),
                             capture_output=True)
        self.assertEqual(out.returncode, 9, out.stderr.decode())

    def check_recovery(self):
        open_, waiting = compaction_expected()
        repairs = recover(self.dir)
        self.assertEqual([r.path for r in repairs if r.left_open], open_)
        self.assertEqual([r.path for r in repairs if not r.left_open],
                         waiting)
        self.assertEqual([r.error for r in repairs], [None] * len(repairs))
        # The torn ones among those left open are cut back.
        raw = F.raw(F.scan(2))
        for relative in open_:
            self.assertEqual(os.path.getsize(os.path.join(self.dir,
                                                          relative)),
                             len(raw))
        # No journal, old, new or half-made, is left.
        self.assertEqual(os.listdir(os.path.join(self.dir, JOURNAL_DIR)), [])

    def test_kill_9_once_the_new_journal_is_created(self):
        self.die_compacting("created")
        self.check_recovery()

    def test_kill_9_once_the_new_journal_is_written(self):
        self.die_compacting("written")
        self.check_recovery()

    def test_kill_9_once_the_new_journal_is_synced(self):
        self.die_compacting("synced")
        self.check_recovery()

    def test_kill_9_once_the_new_journal_is_renamed(self):
        self.die_compacting("renamed")
        self.check_recovery()

    def test_kill_9_once_the_directory_is_synced(self):
        self.die_compacting("directory synced")
        self.check_recovery()


class BoundedSizeTests(JournalTestCase):
    """
    However long a stream flows, the journal stays the size of what is open
    and waiting.
    """

    def test_size_over_100000_rotations(self):
        from tsagg.handoff import FileHandoff
        from tests.stormsender import storm_frame
        clock = task.Clock()
        clock.advance(1700000000)
        later = []

        def run_blocking(job):
            # As the thread pool does: a file closes after the next opens.
            d = defer.Deferred()
            later.append((job, d))
            return d
        writer = RotatingWriter(self.dir, clock, fsync=False,
                                run_blocking=run_blocking)
        handoff = FileHandoff(None)
        # As the service joins them: no md5, nothing to wait for.
        handoff.add_listener(lambda record: writer.handed_on(record["path"]),
                             wants_md5=False)
        writer.add_closed_file_listener(handoff)
        writer.prepare()
        self.addCleanup(writer.close)
        journal = writer.recovery.journal
        largest = 0
        for n in range(100000):
            # Every frame a new session: a rotation each.
            frame = storm_frame(n)
            writer.frameReceived(frame, F.raw(frame))
            jobs, later[:] = list(later), []
            for job, d in jobs:
                d.callback(job())
            clock.advance(0.001)
            if n % 100 == 0:
                largest = max(largest, os.path.getsize(journal.path))
        self.assertEqual(writer.status["files_written"], 100000)
        self.assertLess(largest, 256 << 10)
        self.assertGreater(journal.compactions, 100)
        d = writer.close()
        for job, done in later:
            done.callback(job())
        self.successResultOf(d)
        self.assertEqual(os.listdir(os.path.join(self.dir, JOURNAL_DIR)), [])

    test_size_over_100000_rotations.timeout = 600
