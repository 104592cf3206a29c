"""
Tests for L{tsagg.handoff}: every file closed for good is handed on once,
with its md5, to listeners and to a real socs suprsync database; the md5 and
the database write run off the reactor thread.
"""

import hashlib
import os
import sqlite3
import subprocess
import sys
import time

from twisted.internet import defer, task, threads
from twisted.logger import Logger, LogLevel
from twisted.trial import unittest

from tsagg.frames import unchecked_frame
from tsagg.handoff import FileHandoff
from tsagg.writer import ClosedFile, RotatingWriter

from tests import frames as F
from tests.test_journal import DIE_MID_FRAME
from tests.test_writer import DeferredSync, FailingOpener
from tests.util import ROOT, repo_env

try:
    import socs.db.suprsync  # noqa: F401
except ImportError:
    socs = None


def md5_of(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def suprsync_rows(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT local_path, remote_path, archive_name, "
                         "local_md5sum FROM supersync_v0 ORDER BY id"
                         ).fetchall()


class HandoffTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1700000000)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.records = []

    def record(self, run_blocking=None, suprsync_db=None, **kw):
        kw.setdefault("fsync", False)
        kw.setdefault("gap_timeout", 3600)
        writer = RotatingWriter(self.dir, self.clock, time_per_file=10,
                                run_blocking=run_blocking, **kw)
        handoff = FileHandoff(run_blocking, suprsync_db=suprsync_db)
        handoff.add_listener(self.records.append)
        # As the service joins them.
        handoff.add_listener(lambda record: writer.handed_on(record["path"]))
        writer.add_closed_file_listener(handoff)
        self.addCleanup(writer.close)
        return writer, handoff

    def send(self, writer, *frames):
        F.feed(writer, *frames)


class RecordTests(HandoffTestCase):

    def test_each_closed_file_once_with_its_md5(self):
        writer, _ = self.record()
        self.send(writer, F.observation(), F.wiring(), F.scan(2))
        self.clock.advance(10)
        self.send(writer, F.scan(3), F.scan(5))
        writer.close()
        self.assertEqual([r["path"] for r in self.records],
                         ["17000/crate1slot2/1700000000_000.g3",
                          "17000/crate1slot2/1700000000_001.g3"])
        for r in self.records:
            self.assertEqual(r["md5"],
                             md5_of(os.path.join(self.dir, r["path"])))
            self.assertEqual(r["stream_id"], "crate1slot2")
            self.assertEqual(r["session_id"], 1700000000)
            self.assertEqual(r["size"], os.path.getsize(
                os.path.join(self.dir, r["path"])))
        first, second = self.records
        self.assertEqual((first["frames"], first["scan_frames"]), (3, 1))
        self.assertEqual((second["frames"], second["scan_frames"]), (4, 2))
        self.assertEqual(second["frames_dropped"], 1)
        self.assertEqual(first["frames_dropped"], 0)

    def test_no_md5_when_nobody_wants_it(self):
        writer = RotatingWriter(self.dir, self.clock, fsync=False)
        handoff = FileHandoff(None)
        handoff.add_listener(self.records.append, wants_md5=False)
        writer.add_closed_file_listener(handoff)
        read = []
        self.patch(hashlib, "md5", lambda: read.append(1))
        self.send(writer, F.scan(2))
        writer.close()
        [r] = self.records
        self.assertIsNone(r["md5"])
        self.assertEqual(read, [])

    def test_frame_times_are_those_of_the_frames(self):
        times = (1700000001.5, 1700000001.75, 1700000002.25)
        frames = []
        for n, t in enumerate(times):
            frame = F.scan(n + 2)
            frame["time"] = F.core.G3Time(int(t * 1e8))
            frames.append(frame)
        # One at a time, and received together (written in one go).
        for send in (lambda w: self.send(w, *frames),
                     lambda w: w.framesReceived(
                         [unchecked_frame(F.raw(f)) for f in frames])):
            self.records[:] = []
            writer, _ = self.record()
            send(writer)
            writer.close()
            [r] = self.records
            self.assertEqual((r["first_frame_time"], r["last_frame_time"]),
                             (times[0], times[-1]))

    def test_nothing_before_the_file_is_closed_and_synced(self):
        sync = DeferredSync()
        writer, handoff = self.record(run_blocking=sync, fsync=True)
        self.send(writer, F.scan(2))
        d = writer.close()
        self.assertEqual(self.records, [])
        # The journal's sync and the file's, then the md5: each a job of
        # the thread pool.
        sync.run_all()
        self.successResultOf(d)
        self.assertEqual(self.records, [])
        self.assertEqual(len(sync.jobs), 1)
        sync.run_all()
        self.assertEqual(len(self.records), 1)
        self.successResultOf(handoff.finished())

    def test_a_file_of_nothing_but_replayed_metadata_is_not_handed_on(self):
        opener = FailingOpener()
        opener.failing = False
        real_writev = os.writev
        fail = []

        def writev(fd, views):
            if fail:
                raise OSError(28, "No space left on device")
            return real_writev(fd, views)
        self.patch(os, "writev", writev)
        writer, _ = self.record(opener=opener, min_free=0)
        self.send(writer, F.observation(), F.scan(2))
        writer._acqs.close_file("rotation")
        fail.append(True)
        self.send(writer, F.scan(3))
        self.clock.advance(1)
        fail.clear()
        self.clock.advance(2)
        writer.close()
        paths = [r["path"] for r in self.records]
        self.assertEqual(len(paths), len(set(paths)))
        self.assertEqual(paths, ["17000/crate1slot2/1700000000_000.g3",
                                 "17000/crate1slot2/1700000000_001.g3"])

    def test_a_repaired_file_is_handed_on_once_repaired(self):
        out = subprocess.run([sys.executable, "-c", DIE_MID_FRAME, self.dir],
                             cwd=ROOT, env=repo_env(), capture_output=True)
        path = out.stdout.decode().strip()
        writer, _ = self.record()
        writer.prepare()
        [r] = self.records
        self.assertTrue(r["repaired"])
        self.assertEqual(r["md5"], md5_of(path))
        self.assertEqual(r["scan_frames"], 3)
        self.assertEqual(r["size"], os.path.getsize(path))

    def test_a_failing_md5_is_counted_not_raised(self):
        writer, handoff = self.record()
        self.send(writer, F.scan(2))
        os.unlink(writer.status["current_file"])
        writer.close()
        self.assertEqual(handoff.files_handed_on, 0)
        self.assertEqual(handoff.handoff_errors, 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)


def closed_files(directory, count):
    """
    C{count} small files in C{directory}, as the writer hands them on.
    """
    files = []
    for n in range(count):
        relative = "17000/crate1slot2/%d_000.g3" % (1700000000 + n,)
        path = os.path.join(directory, "f%d.g3" % (n,))
        with open(path, "wb") as f:
            f.write(b"frame %d" % (n,))
        files.append(ClosedFile(path, relative, "crate1slot2",
                                1700000000 + n, 7, 1, 1))
    return files


class NothingToDoTests(unittest.TestCase):
    """
    With no md5 and no suprsync wanted, a file's record goes to its
    listeners at once: no thread, no backlog.
    """

    def test_the_record_is_handed_on_at_once_without_a_thread(self):
        def no_thread(job):
            raise AssertionError("a thread was asked for")
        handoff = FileHandoff(no_thread)
        records = []
        handoff.add_listener(records.append, wants_md5=False)
        handoff(ClosedFile("/nowhere/a.g3", "a/b/1_000.g3", "b", 1, 7, 1, 1))
        self.assertEqual([r["path"] for r in records], ["a/b/1_000.g3"])
        self.assertIsNone(records[0]["md5"])
        self.assertEqual(handoff.status["handoff_backlog"], 0)
        self.successResultOf(handoff.finished())

    def test_after_a_stop_it_still_costs_nothing_and_loses_nothing(self):
        handoff = FileHandoff(None)
        records = []
        handoff.add_listener(records.append, wants_md5=False)
        handoff.stop()
        handoff(ClosedFile("/nowhere/a.g3", "a/b/1_000.g3", "b", 1, 7, 1, 1))
        self.assertEqual(len(records), 1)
        self.assertEqual(handoff.files_left, 0)


class BacklogTests(unittest.TestCase):
    """
    With work to do, files wait in a bounded backlog that batches drain in
    order, one job off the reactor thread at a time; a stop lets it go at
    once, however long it is.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.sync = DeferredSync()
        self.handoff = FileHandoff(self.sync)
        self.records = []
        self.handoff.add_listener(self.records.append)
        self.events = []
        self.handoff.log = Logger(observer=self.events.append)

    def test_drained_in_order_one_batch_at_a_time(self):
        files = closed_files(self.dir, 200)
        for closed in files:
            self.handoff(closed)
        self.assertEqual(len(self.sync.jobs), 1)
        while self.sync.jobs:
            self.sync.run_all()
            self.assertLessEqual(len(self.sync.jobs), 1)
        self.assertEqual([r["path"] for r in self.records],
                         [c.relative for c in files])
        self.assertEqual([r["md5"] for r in self.records],
                         [md5_of(c.path) for c in files])
        self.successResultOf(self.handoff.finished())

    def test_a_full_backlog_leaves_files_to_the_next_start_with_one_warning(
            self):
        self.handoff.max_backlog = 10
        files = closed_files(self.dir, 100)
        for closed in files:
            self.handoff(closed)
        # The first file went off the reactor thread at once; ten wait.
        self.assertEqual(self.handoff.status["handoff_backlog"], 10)
        self.assertEqual(self.handoff.files_left, 100 - 1 - 10)
        warnings = [e for e in self.events
                    if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        while self.sync.jobs:
            self.sync.run_all()
        self.assertEqual([r["path"] for r in self.records],
                         [c.relative for c in files[:11]])

    def test_a_stop_lets_a_long_backlog_go_at_once_without_recursion(self):
        self.handoff.max_backlog = 30000
        for n in range(30000):
            self.handoff(ClosedFile("/nowhere/%d.g3" % (n,), "a/b/%d_000.g3"
                                    % (n,), "b", n, 7, 1, 1))
        finished = self.handoff.finished()
        self.assertNoResult(finished)
        self.handoff.stop()
        # The batch that is off the reactor thread returns, having done
        # nothing more.
        self.assertNoResult(finished)
        self.sync.run_all()
        self.successResultOf(finished)
        self.assertEqual(self.records, [])
        self.assertEqual(self.handoff.files_left, 30000)
        left = [e for e in self.events if "left to be handed on" in
                e["log_format"]]
        self.assertEqual(len(left), 2)
        self.assertEqual(sum(e.get("count", 1) for e in left), 30000)


class SuprsyncTests(HandoffTestCase):

    def setUp(self):
        if socs is None:
            raise unittest.SkipTest("socs is not installed")
        HandoffTestCase.setUp(self)
        self.db = os.path.abspath(self.mktemp())

    def test_files_are_registered_once_in_a_real_suprsync_db(self):
        writer, _ = self.record(suprsync_db=self.db)
        self.send(writer, F.observation(), F.scan(2))
        self.clock.advance(10)
        self.send(writer, F.scan(3))
        writer.close()
        rows = suprsync_rows(self.db)
        self.assertEqual(len(rows), 2)
        for (local, remote, archive, md5), r in zip(rows, self.records):
            self.assertEqual(local, os.path.join(self.dir, r["path"]))
            self.assertEqual(remote, r["path"])
            self.assertEqual(archive, "timestreams")
            self.assertEqual(md5, md5_of(local))
            self.assertTrue(r["registered"])

    @defer.inlineCallbacks
    def test_registration_runs_in_the_thread_pool(self):
        from twisted.internet import threads
        import threading
        threads_seen = []

        def run_blocking(f):
            def wrapped():
                threads_seen.append(threading.current_thread())
                return f()
            return threads.deferToThread(wrapped)
        writer, handoff = self.record(run_blocking=run_blocking,
                                      suprsync_db=self.db)
        self.send(writer, F.scan(2))
        yield writer.close()
        yield handoff.finished()
        self.assertEqual(len(suprsync_rows(self.db)), 1)
        self.assertTrue(threads_seen)
        self.assertNotIn(threading.main_thread(), threads_seen)


# A recorder that closes a file cleanly but ends before it is handed on (a
# shutdown stopped the md5, say): the journal keeps it.
STOP_BEFORE_HANDOFF = """
import os, sys
from twisted.internet import task
from tsagg.writer import RotatingWriter
from tests import frames as F
writer = RotatingWriter(sys.argv[1], task.Clock(), fsync=True)
writer.add_closed_file_listener(lambda closed: None)
writer.prepare()
for n in range(3):
    frame = F.scan(n + 2)
    writer.frameReceived(frame, F.raw(frame))
writer.close()
os._exit(0)
"""


class NextStartTests(HandoffTestCase):

    def setUp(self):
        if socs is None:
            raise unittest.SkipTest("socs is not installed")
        HandoffTestCase.setUp(self)
        self.db = os.path.abspath(self.mktemp())

    def test_a_file_not_handed_on_is_handed_on_at_the_next_start_once(self):
        out = subprocess.run([sys.executable, "-c", STOP_BEFORE_HANDOFF,
                              self.dir], cwd=ROOT, env=repo_env(),
                             capture_output=True)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        writer, _ = self.record(suprsync_db=self.db)
        writer.prepare()
        [r] = self.records
        self.assertFalse(r["repaired"])
        self.assertEqual(r["scan_frames"], 3)
        writer.close()
        again, _ = self.record(suprsync_db=self.db)
        again.prepare()
        again.close()
        self.assertEqual(len(self.records), 1)
        [(local, remote, _, md5)] = suprsync_rows(self.db)
        self.assertEqual(remote, r["path"])
        self.assertEqual(md5, md5_of(local))
        self.assertEqual(os.listdir(os.path.join(self.dir, ".tsagg")), [])

    def test_a_stopped_hand_off_leaves_the_file_to_the_journal(self):
        sync = DeferredSync()
        writer, handoff = self.record(run_blocking=sync, suprsync_db=self.db)
        writer.prepare()
        self.send(writer, F.scan(2))
        writer.close()
        sync.run_all()
        # The process ends: its md5 stops at the next chunk.
        handoff.stop()
        sync.run_all()
        self.successResultOf(handoff.finished())
        self.assertEqual(self.records, [])
        self.assertEqual(handoff.handoff_errors, 0)
        journals = os.listdir(os.path.join(self.dir, ".tsagg"))
        self.assertEqual(len(journals), 1)
        with open(os.path.join(self.dir, ".tsagg", journals[0])) as f:
            self.assertIn("closed 17000/crate1slot2/1700000000_000.g3",
                          f.read())


class ServiceStopTests(unittest.TestCase):
    """
    A stop waits for the hand-off only C{handoff_grace} seconds; the next
    start hands on the rest.
    """

    @defer.inlineCallbacks
    def listening_peer(self):
        """
        A peer for the services to connect to, listening on loopback.

        @return: A L{Deferred} of C{(peer factory, port number)}.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from tests.test_service import PeerFactory
        peer = PeerFactory()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"
                                        ).listen(peer)
        self.addCleanup(port.stopListening)
        return peer, port.getHost().port

    @defer.inlineCallbacks
    def test_a_stop_leaves_a_slow_hand_off_to_the_next_start(self):
        from tests.faultutil import make_service
        from tests.test_service import wait_until
        data = os.path.abspath(self.mktemp())
        peer, number = yield self.listening_peer()
        first = make_service(self, number, data)
        first.handoff_grace = 0.1

        def slow(work):
            # An md5 of gigabytes: still running when the grace is over.
            def later():
                time.sleep(0.5)
                return work()
            return threads.deferToThread(later)
        first.handoff._run_blocking = slow
        records = []
        first.handoff.add_listener(records.append)
        first.startService()
        conn = yield peer.next_connection()
        conn.transport.write(F.raw(F.observation()) + F.raw(F.scan(2)))
        yield wait_until(lambda: first.status["frames_written"] == 2)
        yield first.stopService()
        self.assertEqual(records, [])
        second = make_service(self, number, data)
        second.handoff.add_listener(records.append)
        second.startService()
        yield wait_until(lambda: len(records) == 1)
        yield second.stopService()
        self.assertEqual(records[0]["path"],
                         "17000/crate1slot2/1700000000_000.g3")
        self.assertEqual(records[0]["scan_frames"], 1)

    @defer.inlineCallbacks
    def test_a_stop_with_thousands_waiting_leaves_each_to_the_next_start(
            self):
        from tests.faultutil import make_service
        from tests.stormsender import storm_frame
        from tests.test_service import wait_until
        data = os.path.abspath(self.mktemp())
        peer, number = yield self.listening_peer()
        first = make_service(self, number, data)
        jobs = []

        def stuck(work):
            # A suprsync database that does not answer, until the test
            # lets it.
            d = defer.Deferred()
            jobs.append((work, d))
            return d
        first.handoff._run_blocking = stuck
        records = []
        first.handoff.add_listener(records.append)
        first.startService()
        conn = yield peer.next_connection()
        count = 3000
        conn.transport.write(b"".join(F.raw(storm_frame(n))
                                      for n in range(count)))
        yield wait_until(lambda: first.status["files_written"] == count,
                         timeout=60)
        # One file is open; one is off the reactor thread (stuck); the
        # backlog is full, and the rest are left in the journal already.
        yield wait_until(lambda: first.status["handoff_backlog"]
                         + first.status["files_left_for_next_start"]
                         == count - 2, timeout=60)
        self.assertEqual(first.status["handoff_backlog"],
                         first.handoff.max_backlog)
        yield first.stopService()
        self.assertEqual(records, [])
        # The job that was stuck answers at last, after the stop.
        for work, d in jobs:
            d.callback(work())
        self.assertEqual(records, [])
        second = make_service(self, number, data)
        # Room for every file found at start.
        second.handoff.max_backlog = count
        second.handoff.add_listener(records.append)
        second.startService()
        yield wait_until(lambda: len(records) == count, timeout=60)
        yield second.stopService()
        self.assertEqual(sorted(r["path"] for r in records),
                         ["17000/crate1slot2/%d_000.g3" % (1700000000 + n,)
                          for n in range(count)])
        self.assertEqual(os.listdir(os.path.join(data, ".tsagg")), [])

    test_a_stop_with_thousands_waiting_leaves_each_to_the_next_start.\
        timeout = 300
