"""
Tests for L{tsagg.writer}: the SO stream rules, the file layout, rotation and
gap on a L{task.Clock}, and write failures.
"""

import errno
import os

from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tsagg import wire
from tsagg.frames import receive_pieces
from tsagg.interfaces import IFrameSink
from tsagg.rotation import GAP, ROTATE, FilePolicy
from tsagg.writer import RotatingWriter

from tests import frames as F
from tests.util import FakeProducer, files_and_frames, types_in

T0 = 1700000000.25
SESSION = 1700000000


class FilePolicyTests(unittest.TestCase):
    """
    The pure decision of when a file closes.
    """

    def setUp(self):
        self.policy = FilePolicy(time_per_file=60, gap_timeout=10)

    def test_nothing_while_young_and_busy(self):
        self.assertIsNone(self.policy.decide(105, 100, 104))

    def test_rotate_when_old(self):
        self.assertEqual(self.policy.decide(160, 100, 159), ROTATE)

    def test_gap_when_silent(self):
        self.assertEqual(self.policy.decide(114, 100, 104), GAP)

    def test_gap_wins_over_rotation(self):
        self.assertEqual(self.policy.decide(170, 100, 150), GAP)

    def test_gap_with_no_file_open(self):
        self.assertEqual(self.policy.decide(114, None, 104), GAP)
        self.assertIsNone(self.policy.decide(113, None, 104))

    def test_deadline_is_the_earlier(self):
        self.assertEqual(self.policy.deadline(100, 155), 160)
        self.assertEqual(self.policy.deadline(100, 104), 114)
        self.assertEqual(self.policy.deadline(None, 104), 114)

    def test_rejects_nonpositive(self):
        self.assertRaises(ValueError, FilePolicy, 0, 10)
        self.assertRaises(ValueError, FilePolicy, 10, -1)


class WriterTestCase(unittest.TestCase):

    time_per_file = 60.0
    gap_timeout = 10.0

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.writer = self.make_writer()
        self.producer = FakeProducer()
        self.writer.streamStarted(self.producer)

    def make_writer(self, **kw):
        kw.setdefault("time_per_file", self.time_per_file)
        kw.setdefault("gap_timeout", self.gap_timeout)
        kw.setdefault("fsync", False)
        return RotatingWriter(self.dir, self.clock, **kw)

    def send(self, *frames, writer=None):
        return F.feed(writer or self.writer, *frames)

    def tick(self, seconds, frames_every=None, frame_num=None):
        self.clock.advance(seconds)

    def files(self):
        return files_and_frames(self.dir)

    def tearDown(self):
        self.writer.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LayoutTests(WriterTestCase):
    """
    Names and directories follow the SO layout.
    """

    def test_provides_sink(self):
        verifyObject(IFrameSink, self.writer)

    def test_path_from_session_and_stream_id(self):
        sent = self.send(F.observation(), F.scan(2), F.scan(3))
        self.writer.close()
        [(path, raws)] = self.files()
        self.assertEqual(path, "17000/crate1slot2/1700000000_000.g3")
        self.assertEqual(raws, sent)

    def test_basename_from_clock_without_session_id(self):
        self.clock.advance(1234)
        self.send(F.scan(1, session_id=0), F.scan(2, session_id=0))
        self.writer.close()
        [(path, _)] = self.files()
        self.assertEqual(path, "17000/crate1slot2/1700001234_000.g3")

    def test_wall_time_names_files_and_dates_frames_the_clock_times(self):
        wall = [T0 + 5678.5]
        writer = self.make_writer(time_per_file=5, wall_time=lambda: wall[0])
        self.addCleanup(writer.close)
        writer.streamStarted(FakeProducer())
        self.send(F.scan(1, session_id=0), writer=writer)
        self.assertEqual(writer.status["last_frame_time"], T0 + 5678.5)
        # The wall clock set back an hour moves no timer.
        wall[0] -= 3600
        self.clock.advance(5)
        self.send(F.scan(2, session_id=0), writer=writer)
        self.assertEqual(writer.status["last_frame_time"], T0 + 2078.5)
        writer.close()
        self.assertEqual([path for path, _ in self.files()],
                         ["17000/crate1slot2/1700005678_000.g3",
                          "17000/crate1slot2/1700005678_001.g3"])

    def test_configured_stream_id_when_frames_have_none(self):
        writer = self.make_writer(default_stream_id="smurf9")
        self.send(F.scan(1, stream_id=None), writer=writer)
        writer.close()
        [(path, _)] = self.files()
        self.assertEqual(path, "17000/smurf9/1700000000_000.g3")

    def test_stream_id_never_from_pipeline_info(self):
        self.send(F.pipeline_info("evil"), F.scan(1, stream_id=None))
        self.writer.close()
        [(path, raws)] = self.files()
        self.assertEqual(path, "17000/unknown/1700000000_000.g3")
        self.assertEqual(types_in(raws), "PS")

    def test_stream_id_from_first_frame_that_has_one(self):
        self.send(F.scan(1, stream_id=None), F.scan(2, stream_id="later"))
        self.writer.close()
        [(path, _)] = self.files()
        self.assertEqual(path, "17000/unknown/1700000000_000.g3")

    def test_frames_written_bit_for_bit(self):
        sent = self.send(*[F.scan(i, channels=50, samples=100)
                           for i in range(10)])
        self.writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(raws, sent)

    def test_existing_file_is_never_overwritten(self):
        target = os.path.join(self.dir, "17000", "crate1slot2")
        os.makedirs(target)
        for n in (0, 1):
            with open(os.path.join(target, "1700000000_%03d.g3" % n), "wb") as f:
                f.write(b"precious")
        self.send(F.scan(1))
        self.writer.close()
        self.assertEqual(sorted(os.listdir(target)),
                         ["1700000000_000.g3", "1700000000_001.g3",
                          "1700000000_002.g3"])
        for n in (0, 1):
            with open(os.path.join(target, "1700000000_%03d.g3" % n), "rb") as f:
                self.assertEqual(f.read(), b"precious")

    def test_rejects_unsafe_configured_stream_id(self):
        for bad in ("../x", "", "a/b", ".hidden"):
            self.assertRaises(ValueError, self.make_writer,
                              default_stream_id=bad)

    def test_status_counts(self):
        self.send(F.observation(), F.scan(1), F.flow(F.ALIVE))
        status = self.writer.status
        self.assertEqual(status["frames_written"], 2)
        self.assertEqual(status["frames_received"], 3)
        self.assertEqual(status["files_written"], 1)
        self.assertEqual(status["flow_control_frames"]["alive"], 1)
        self.assertEqual(status["stream_id"], "crate1slot2")
        self.assertEqual(status["session_id"], SESSION)
        self.assertTrue(status["current_file"].endswith("1700000000_000.g3"))


class HostileIdentifierTests(WriterTestCase):
    """
    Stream and session ids from the network never steer a write outside the
    data directory.
    """

    def assertRecordedUnder(self, expected_dir, **kw):
        frame = F.scan(1, **kw)
        self.send(frame)
        self.writer.close()
        [(path, raws)] = self.files()
        self.assertEqual(os.path.dirname(path), expected_dir)
        self.assertEqual(raws, [F.raw(frame)])

    def test_traversal(self):
        self.assertRecordedUnder("17000/_.._x", stream_id="../../x")

    def test_dot_dot(self):
        self.assertRecordedUnder("17000/unknown", stream_id="..")

    def test_absolute(self):
        self.assertRecordedUnder("17000/_abs", stream_id="/abs")

    def test_slash(self):
        self.assertRecordedUnder("17000/a_b", stream_id="a/b")

    def test_empty(self):
        self.assertRecordedUnder("17000/unknown", stream_id="")

    def test_control_characters(self):
        self.assertRecordedUnder("17000/a_b", stream_id="a\n\x00\x1bb")

    def test_very_long(self):
        self.assertRecordedUnder("17000/" + "x" * 64, stream_id="x" * 100000)

    def test_stream_id_of_wrong_type(self):
        frame = F.scan(1, stream_id=None)
        frame["sostream_id"] = 42
        self.send(frame)
        self.writer.close()
        [(path, _)] = self.files()
        self.assertEqual(os.path.dirname(path), "17000/unknown")

    def test_session_id_of_wrong_type(self):
        frame = F.scan(1, session_id=None)
        frame["session_id"] = "../../etc"
        self.send(frame)
        self.writer.close()
        [(path, _)] = self.files()
        self.assertEqual(path, "17000/crate1slot2/1700000000_000.g3")

    def test_negative_and_huge_session_ids(self):
        self.clock.advance(5)
        self.send(F.scan(1, session_id=-5))
        self.send(F.flow(F.START))
        self.send(F.scan(1, session_id=10 ** 15))
        self.writer.close()
        self.assertEqual([p for p, _ in self.files()],
                         ["17000/crate1slot2/1700000005_000.g3",
                          "17000/crate1slot2/1700000005_001.g3"])

    def test_symlink_in_data_dir_is_not_followed(self):
        outside = self.mktemp()
        os.makedirs(outside)
        os.symlink(os.path.abspath(outside), os.path.join(self.dir, "17000"))
        self.send(F.scan(1))
        self.assertEqual(os.listdir(outside), [])
        self.assertIn("outside the data directory",
                      self.writer.status["last_error"])
        self.assertEqual(self.writer.status["frames_held"], 1)
        self.assertTrue(self.producer.paused)
        # The operator removes the link; the frame goes to disk.
        os.remove(os.path.join(self.dir, "17000"))
        self.clock.advance(1)
        self.assertEqual(self.writer.status["frames_held"], 0)
        self.assertFalse(self.producer.paused)
        self.writer.close()
        [(path, _)] = self.files()
        self.assertEqual(path, "17000/crate1slot2/1700000000_000.g3")


class FlowControlTests(WriterTestCase):
    """
    Flow-control frames steer acquisitions and are never written.
    """

    def test_no_flow_control_frame_on_disk(self):
        self.send(F.flow(F.START), F.observation(), F.flow(F.ALIVE),
                  F.scan(2), F.flow(F.END),
                  F.flow(F.CLEANSE, F.core.G3FrameType.Observation))
        self.writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(types_in(raws), "OS")

    def test_start_closes_the_file(self):
        self.send(F.observation(), F.scan(2))
        self.clock.advance(1)
        self.send(F.flow(F.START), F.observation(session_id=SESSION + 1),
                  F.scan(2, session_id=SESSION + 1))
        self.writer.close()
        self.assertEqual([p for p, _ in self.files()],
                         ["17000/crate1slot2/1700000000_000.g3",
                          "17000/crate1slot2/1700000001_000.g3"])

    def test_end_closes_the_file_and_forgets_metadata(self):
        self.send(F.observation(), F.scan(2), F.flow(F.END))
        self.assertIsNone(self.writer.status["current_file"])
        self.send(F.scan(3))
        self.writer.close()
        files = self.files()
        self.assertEqual(len(files), 2)
        self.assertEqual(types_in(files[1][1]), "S")

    def test_cleanse_does_not_replace_metadata(self):
        obs = F.observation()
        self.send(obs, F.scan(2),
                  F.flow(F.CLEANSE, F.core.G3FrameType.Observation))
        self.clock.advance(self.time_per_file)
        self.send(F.scan(3))
        self.writer.close()
        second = self.files()[1][1]
        self.assertEqual(second[0], F.raw(obs))

    def test_alive_does_not_keep_an_acquisition_alive(self):
        self.send(F.scan(1))
        for _ in range(int(self.gap_timeout)):
            self.clock.advance(1)
            self.send(F.flow(F.ALIVE))
        self.assertIsNone(self.writer.status["current_file"])

    def test_data_without_start_is_recorded(self):
        self.send(F.scan(1))
        self.writer.close()
        self.assertEqual(len(self.files()), 1)

    def test_unknown_flow_control_value_is_discarded(self):
        self.send(F.flow(77), F.scan(1))
        self.writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(types_in(raws), "S")

    def test_new_session_id_without_start_is_a_new_acquisition(self):
        self.send(F.scan(1), F.scan(1, session_id=SESSION + 50))
        self.writer.close()
        self.assertEqual([p for p, _ in self.files()],
                         ["17000/crate1slot2/1700000000_000.g3",
                          "17000/crate1slot2/1700000050_000.g3"])


class RotationTests(WriterTestCase):
    """
    Files rotate on the clock and each starts with the metadata.
    """

    def test_rotation_continues_the_acquisition(self):
        obs, wir = F.observation(), F.wiring()
        self.send(obs, wir, F.scan(2))
        for n in range(3, 3 + 2 * int(self.time_per_file)):
            self.clock.advance(1)
            self.send(F.scan(n))
        self.writer.close()
        files = self.files()
        self.assertEqual([p for p, _ in files],
                         ["17000/crate1slot2/1700000000_%03d.g3" % i
                          for i in range(3)])
        for _, raws in files:
            self.assertEqual(raws[:2], [F.raw(obs), F.raw(wir)])
            self.assertEqual(set(types_in(raws[2:])), {"S"})

    def test_every_scan_frame_once_in_order(self):
        sent = self.send(F.observation())
        scans = []
        for n in range(1, 200):
            self.clock.advance(0.7)
            scans += self.send(F.scan(n))
        self.writer.close()
        on_disk = [r for _, raws in self.files() for r in raws
                   if types_in([r]) == "S"]
        self.assertEqual(on_disk, scans)
        self.assertEqual(len(sent), 1)

    def test_a_file_due_closes_just_before_the_next_scan_frame(self):
        writer = self.make_writer(gap_timeout=3600)
        first = self.send(F.observation(), F.scan(2), writer=writer)
        self.clock.advance(self.time_per_file)
        # Due, but what follows the last data stays with it.
        self.assertIsNotNone(writer.status["current_file"])
        first += self.send(F.wiring(frame_num=3), writer=writer)
        second = self.send(F.scan(4), writer=writer)
        writer.close()
        files = self.files()
        self.assertEqual([raws for _, raws in files],
                         [first, [first[0], first[2]] + second])

    def test_the_end_of_a_session_after_the_deadline_stays_in_its_file(self):
        writer = self.make_writer(gap_timeout=3600)
        sent = self.send(F.observation(), F.scan(2), writer=writer)
        self.clock.advance(self.time_per_file + 1)
        sent += self.send(F.wiring(frame_num=3), F.observation(frame_num=4),
                          writer=writer)
        self.send(F.flow(F.END), writer=writer)
        writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(raws, sent)

    def test_the_gap_timeout_closes_a_file_due_without_data(self):
        self.send(F.scan(1))
        self.clock.advance(self.time_per_file)
        self.send(F.wiring())
        self.clock.advance(self.gap_timeout)
        self.assertIsNone(self.writer.status["current_file"])

    def test_directory_does_not_roll_over(self):
        self.clock.advance(99999 - (T0 % 100000) - 1)  # just before 1700099999
        self.send(F.scan(1, session_id=0))
        for n in range(2, 200):
            self.clock.advance(1)
            self.send(F.scan(n, session_id=0))
        self.writer.close()
        dirs = {os.path.dirname(p) for p, _ in self.files()}
        self.assertEqual(dirs, {"17000/crate1slot2"})
        self.assertGreater(len(self.files()), 2)

    def test_latest_wiring_is_replayed(self):
        self.send(F.observation(), F.wiring(status="old"), F.scan(2),
                  F.wiring(status="new"))
        self.clock.advance(self.time_per_file)
        self.send(F.scan(3))
        self.writer.close()
        second = self.files()[1][1]
        self.assertEqual(second[:2], [F.raw(F.observation()),
                                      F.raw(F.wiring(status="new"))])

    def test_opening_frame_type_not_duplicated(self):
        self.send(F.observation(), F.scan(2))
        self.clock.advance(self.time_per_file)
        obs2 = F.observation(frame_num=9)
        self.send(obs2, F.scan(10))
        self.writer.close()
        second = self.files()[1][1]
        self.assertEqual(types_in(second), "OS")
        self.assertEqual(second[0], F.raw(obs2))


class GapTests(WriterTestCase):
    """
    A silent stream ends its acquisition.
    """

    def test_gap_closes_the_file(self):
        self.send(F.scan(1))
        self.clock.advance(self.gap_timeout - 0.1)
        self.assertIsNotNone(self.writer.status["current_file"])
        self.clock.advance(0.1)
        self.assertIsNone(self.writer.status["current_file"])

    def test_data_after_gap_starts_a_new_acquisition(self):
        obs = F.observation(session_id=0)
        self.send(obs, F.scan(1, session_id=0))
        self.clock.advance(self.gap_timeout + 5)
        self.send(F.scan(2, session_id=0))
        self.writer.close()
        files = self.files()
        self.assertEqual([p for p, _ in files],
                         ["17000/crate1slot2/1700000000_000.g3",
                          "17000/crate1slot2/1700000015_000.g3"])
        self.assertEqual(files[1][1][0], F.raw(obs))

    def test_steady_frames_never_gap(self):
        self.send(F.scan(0))
        for n in range(1, 100):
            self.clock.advance(self.gap_timeout * 0.9)
            self.send(F.scan(n))
            self.assertIsNotNone(self.writer.status["current_file"])


class FrameNumTests(WriterTestCase):
    """
    Jumps of frame_num are counted as frames dropped upstream.
    """

    def test_jump_counted(self):
        self.send(F.scan(1), F.scan(2), F.scan(5), F.scan(6), F.scan(10))
        self.assertEqual(self.writer.status["frames_dropped_upstream"], 5)

    def test_replayed_older_frames_not_counted(self):
        self.send(F.observation(frame_num=0), F.scan(1), F.scan(2),
                  F.observation(frame_num=0), F.scan(3))
        self.assertEqual(self.writer.status["frames_dropped_upstream"], 0)

    def test_new_session_starts_counting_anew(self):
        self.send(F.scan(100), F.flow(F.START), F.scan(0), F.scan(1))
        self.assertEqual(self.writer.status["frames_dropped_upstream"], 0)


class ConnectionTests(WriterTestCase):
    """
    Disconnect and stop close the file at a frame boundary.
    """

    def test_disconnect_closes_the_file(self):
        self.send(F.scan(1))
        self.writer.streamStopped(Failure(Exception("gone")))
        self.assertIsNone(self.writer.status["current_file"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_session_goes_on_over_a_new_connection(self):
        sent = self.send(F.observation(), F.scan(1))
        self.writer.streamStopped(Failure(Exception("gone")))
        self.writer.streamStarted(self.producer)
        sent += self.send(F.scan(2))
        self.writer.close()
        files = self.files()
        self.assertEqual([os.path.basename(p) for p, _ in files],
                         ["1700000000_000.g3", "1700000000_001.g3"])
        self.assertEqual(files[1][1], [sent[0], sent[2]])

    def test_a_new_connection_of_another_session_forgets_metadata(self):
        self.send(F.observation(), F.scan(1))
        self.writer.streamStopped(Failure(Exception("gone")))
        self.writer.streamStarted(self.producer)
        self.send(F.scan(2, session_id=1700000100))
        self.writer.close()
        self.assertEqual(types_in(self.files()[-1][1]), "S")

    def test_close_then_start_again(self):
        self.send(F.scan(1))
        self.writer.close()
        self.writer.start()
        self.send(F.scan(2))
        self.writer.close()
        self.assertEqual(len(self.files()), 2)


class FailingOpener:
    """
    C{os.open} that fails with C{error} while C{failing} is set.
    """

    def __init__(self, error=errno.ENOSPC):
        self.failing = True
        self.error = error
        self.calls = 0

    def __call__(self, path, flags, mode=0o777):
        self.calls += 1
        if self.failing:
            raise OSError(self.error, os.strerror(self.error), path)
        return os.open(path, flags, mode)


class WriteFailureTests(WriterTestCase):
    """
    A failing disk pauses the stream and holds the frames; nothing is lost
    when it comes back.
    """

    def test_failure_holds_frames_and_pauses(self):
        opener = FailingOpener()
        writer = self.make_writer(opener=opener)
        writer.streamStarted(self.producer)
        sent = self.send(F.observation(), F.scan(1), F.scan(2), writer=writer)
        status = writer.status
        self.assertEqual(status["frames_held"], 3)
        self.assertEqual(status["write_errors"], 1)
        self.assertIn("No space left", status["last_error"])
        self.assertTrue(self.producer.paused)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(writer.status["frames_held"], 3)
        opener.failing = False
        self.clock.advance(1)
        self.assertFalse(self.producer.paused)
        self.assertEqual(writer.status["frames_held"], 0)
        writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(raws, sent)

    def test_frames_lost_only_beyond_the_bound(self):
        size = len(F.raw(F.scan(1)))
        writer = self.make_writer(opener=FailingOpener(errno.EACCES),
                                  max_held_bytes=2 * size + size // 2)
        self.send(F.scan(1), F.scan(2), F.scan(3), writer=writer)
        self.assertEqual(writer.status["frames_held"], 2)
        self.assertEqual(writer.status["frames_lost"], 1)
        writer.close()
        self.assertEqual(writer.status["frames_lost"], 3)

    def test_disconnect_while_held_keeps_frames(self):
        opener = FailingOpener()
        writer = self.make_writer(opener=opener)
        writer.streamStarted(self.producer)
        sent = self.send(F.scan(1), writer=writer)
        writer.streamStopped(Failure(Exception("gone")))
        opener.failing = False
        self.clock.advance(1)
        self.assertEqual(writer.status["frames_held"], 0)
        self.assertIsNone(writer.status["current_file"])
        writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(raws, sent)

    def test_write_error_midway_truncates_to_frame_boundary(self):
        self.send(F.scan(1))
        path = self.writer.status["current_file"]
        real_writev = os.writev
        calls = []

        def short_then_fail(fd, views):
            calls.append(len(views))
            if len(calls) == 1:
                return real_writev(fd, [views[0][:10]])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.patch(os, "writev", short_then_fail)
        self.send(F.scan(2))
        self.patch(os, "writev", real_writev)
        self.assertEqual(os.path.getsize(path), len(F.raw(F.scan(1))))
        self.clock.advance(1)
        self.writer.close()
        files = self.files()
        self.assertEqual([len(raws) for _, raws in files], [1, 1])
        self.assertEqual(files[1][1], [F.raw(F.scan(2))])


class ReplayTests(WriterTestCase):
    """
    The metadata a sender replays on each new connection does not count as
    a jump of frame_num.
    """

    def test_replay_after_restart_is_not_a_drop(self):
        writer = self.make_writer()
        writer.streamStarted(self.producer)
        self.send(F.observation(frame_num=0), F.wiring(frame_num=1),
                  F.scan(25), F.scan(26), writer=writer)
        writer.close()
        self.assertEqual(writer.status["frames_dropped_upstream"], 0)

    def test_reconnect_counts_frames_missed_meanwhile(self):
        self.send(F.observation(frame_num=0), F.wiring(frame_num=1),
                  F.scan(2), F.scan(3))
        self.writer.streamStopped(Failure(Exception("gone")))
        self.writer.streamStarted(self.producer)
        self.send(F.observation(frame_num=0), F.wiring(frame_num=1),
                  F.scan(10))
        # A break's frames are missed, not dropped upstream.
        self.assertEqual(self.writer.status["frames_missed_in_breaks"], 6)
        self.assertEqual(self.writer.status["frames_dropped_upstream"], 0)

    def test_start_after_stop_sets_a_new_baseline(self):
        self.send(F.scan(2))
        self.writer.close()
        self.writer.start()
        self.writer.streamStarted(self.producer)
        self.send(F.observation(frame_num=0), F.scan(40))
        self.assertEqual(self.writer.status["frames_dropped_upstream"], 0)


class DeferredSync:
    """
    A C{run_blocking} that runs each job only when the test says so.
    """

    def __init__(self):
        self.jobs = []

    def __call__(self, job):
        d = defer.Deferred()
        self.jobs.append((job, d))
        return d

    def run_all(self):
        jobs, self.jobs = self.jobs, []
        for job, d in jobs:
            try:
                result = job()
            except Exception:
                d.errback()
            else:
                d.callback(result)


def run_failing(job):
    """
    A C{run_blocking} whose every job runs and then reports an I/O error.
    """
    job()
    return defer.succeed((OSError(errno.EIO, "I/O error"), 0.0))


class SyncOffTheReactorTests(WriterTestCase):
    """
    The fsync and close of a finished file go to C{run_blocking}; closing
    the writer waits for them.
    """

    def test_close_waits_for_the_sync(self):
        sync = DeferredSync()
        writer = self.make_writer(run_blocking=sync, fsync=True)
        self.send(F.scan(1), writer=writer)
        d = writer.close()
        self.assertNoResult(d)
        self.assertEqual(len(sync.jobs), 1)
        sync.run_all()
        self.successResultOf(d)
        self.assertIsNone(writer.close())

    def test_rotation_does_not_wait(self):
        sync = DeferredSync()
        writer = self.make_writer(run_blocking=sync, fsync=True)
        self.send(F.scan(1), writer=writer)
        self.clock.advance(self.time_per_file)
        self.send(F.scan(2), writer=writer)
        self.assertEqual(len(sync.jobs), 1)
        self.assertEqual(writer.status["files_written"], 2)
        sync.run_all()
        d = writer.close()
        sync.run_all()
        self.successResultOf(d)
        self.assertEqual(len(self.files()), 2)

    def test_sync_failure_is_reported(self):
        writer = self.make_writer(run_blocking=run_failing, fsync=True)
        self.send(F.scan(1), writer=writer)
        writer.close()
        self.assertIn("I/O error", writer.status["last_error"])


class CountingWritev:
    """
    Wraps C{os.writev}, remembering the bytes asked of each call.
    """

    def __init__(self, testcase):
        self.calls = []
        self.fail_after = None
        self._real = os.writev
        testcase.patch(os, "writev", self)

    def __call__(self, fd, buffers):
        self.calls.append(sum(len(b) for b in buffers))
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._real(fd, buffers)


class WriteQueueTests(WriterTestCase):
    """
    The frames of one batch go to disk in one writev; a frame larger than
    C{write_slice} is written over several reactor turns, with the producer
    paused meanwhile, and files still only end at frame boundaries.
    """

    def sliced(self, write_slice, **kw):
        """
        A writer that writes at most C{write_slice} bytes a turn, streaming.
        """
        writer = self.make_writer(write_slice=write_slice, **kw)
        writer.streamStarted(self.producer)
        return writer

    def lazy(self, *frames):
        from tsagg.frames import receive_frame
        return [receive_frame(F.raw(frame)) for frame in frames]

    def test_one_writev_per_batch(self):
        writev = CountingWritev(self)
        batch = self.lazy(*[F.scan(n) for n in range(2, 12)])
        self.writer.framesReceived(batch)
        self.assertEqual(writev.calls, [sum(len(f.raw) for f in batch)])
        self.assertEqual(self.writer.status["frames_written"], 10)
        self.writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(raws, [f.raw for f in batch])

    def test_large_frame_written_over_several_turns(self):
        writer = self.sliced(256)
        writev = CountingWritev(self)
        batch = self.lazy(F.scan(2), F.scan(3))
        size = sum(len(f.raw) for f in batch)
        writer.framesReceived(batch)
        self.assertEqual(writev.calls, [256])
        self.assertTrue(self.producer.paused)
        self.assertEqual(writer.status["frames_written"], 0)
        self.clock.advance(0)
        self.assertFalse(self.producer.paused)
        self.assertEqual(self.producer.resumes, 1)
        self.assertEqual(sum(writev.calls), size)
        self.assertTrue(all(n <= 256 for n in writev.calls))
        self.assertEqual(writer.status["frames_written"], 2)
        self.assertEqual(writer.status["bytes_written"], size)
        writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(raws, [f.raw for f in batch])

    def test_rotation_waits_for_the_frame_being_written(self):
        writer = self.sliced(100, time_per_file=5)
        writev = CountingWritev(self)
        sent = self.send(F.scan(2), writer=writer)
        path = writer.status["current_file"]
        # The rotation comes due while the frame is half written.
        self.clock.callLater(0, self.clock.advance, 5)
        self.clock.advance(0)
        self.assertEqual(os.path.getsize(path), len(sent[0]))
        # Not one large write to finish the frame before closing.
        self.assertTrue(all(n <= 100 for n in writev.calls), writev.calls)
        more = self.send(F.scan(3), writer=writer)
        self.clock.advance(0)
        self.assertEqual(writer.status["last_file"], path)
        writer.close()
        self.assertEqual([raws for _, raws in self.files()], [sent, more])

    def test_failure_in_a_later_slice_cuts_the_frame_and_holds_it(self):
        writer = self.sliced(256)
        first = self.send(F.scan(2), writer=writer)
        self.clock.advance(0)
        writev = CountingWritev(self)
        writev.fail_after = 1
        second = self.send(F.scan(3), F.scan(4), writer=writer)
        self.clock.advance(0)
        status = writer.status
        self.assertEqual(status["write_errors"], 1)
        self.assertEqual(status["frames_held"], 2)
        self.assertTrue(self.producer.paused)
        [(_, raws)] = self.files()
        self.assertEqual(raws, first)
        writev.fail_after = None
        self.clock.advance(writer.retry_interval)
        self.assertEqual(writer.status["frames_held"], 0)
        self.assertFalse(self.producer.paused)
        writer.close()
        files = self.files()
        self.assertEqual([raws for _, raws in files], [first, second])

    def test_held_frames_keep_their_order_around_metadata(self):
        writev = CountingWritev(self)
        writev.fail_after = 0
        batch = self.lazy(F.scan(2), F.wiring(frame_num=3), F.scan(4))
        self.writer.framesReceived(batch)
        self.assertEqual(self.writer.status["frames_held"], 3)
        writev.fail_after = None
        self.clock.advance(self.writer.retry_interval)
        self.writer.close()
        [(_, raws)] = self.files()
        # Nothing replayed ahead of the frames it came after, nothing twice.
        self.assertEqual(raws, [f.raw for f in batch])

    def test_close_writes_what_is_queued(self):
        writer = self.sliced(64)
        sent = self.send(F.scan(2), F.scan(3), writer=writer)
        writer.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        [(_, raws)] = self.files()
        self.assertEqual(raws, sent)

    def test_disconnect_writes_what_is_queued(self):
        writer = self.sliced(64)
        sent = self.send(F.scan(2), writer=writer)
        writer.streamStopped(Failure(Exception("gone")))
        self.assertIsNone(writer.status["current_file"])
        self.clock.advance(0)
        writer.close()
        [(_, raws)] = self.files()
        self.assertEqual(raws, sent)

    def test_start_frame_waits_for_the_queue(self):
        writer = self.sliced(64)
        sent = self.send(F.scan(2), F.flow(F.START), F.scan(3),
                         writer=writer)
        self.clock.advance(0)
        writer.close()
        files = self.files()
        self.assertEqual([raws for _, raws in files], [sent[:1], sent[2:]])

    def test_failed_write_before_a_start_keeps_the_order(self):
        writev = CountingWritev(self)
        writev.fail_after = 0
        batch = self.lazy(F.scan(2), F.flow(F.START), F.scan(3))
        sent = [f.raw for f in batch]
        self.writer.framesReceived(batch)
        self.assertEqual(self.writer.status["frames_held"], 3)
        writev.fail_after = None
        self.clock.advance(self.writer.retry_interval)
        self.writer.close()
        files = self.files()
        self.assertEqual([raws for _, raws in files], [sent[:1], sent[2:]])

    def test_rejects_a_slice_of_nothing(self):
        self.assertRaises(ValueError, self.make_writer, write_slice=0)


class WritebackTests(WriterTestCase):
    """
    The open file's new data is submitted for write-out off the reactor
    every C{writeback_every} bytes, so that a stop has little left to sync.
    """

    def test_writeback_after_writeback_every_bytes(self):
        sync = DeferredSync()
        size = len(F.raw(F.scan(2)))
        writer = self.make_writer(run_blocking=sync, fsync=True,
                                  writeback_every=2 * size)
        self.send(F.scan(2), writer=writer)
        self.assertEqual(sync.jobs, [])
        self.send(F.scan(3), F.scan(4), writer=writer)
        self.assertEqual(len(sync.jobs), 1)
        # One at a time.
        self.send(F.scan(5), F.scan(6), writer=writer)
        self.assertEqual(len(sync.jobs), 1)
        sync.run_all()
        self.send(F.scan(7), writer=writer)
        self.assertEqual(len(sync.jobs), 1)
        sync.run_all()
        self.assertEqual(writer.status["write_errors"], 0)
        d = writer.close()
        sync.run_all()
        self.successResultOf(d)

    def test_close_waits_for_a_running_writeback(self):
        sync = DeferredSync()
        writer = self.make_writer(run_blocking=sync, fsync=True,
                                  writeback_every=1)
        sent = self.send(F.scan(2), writer=writer)
        [(writeback, _)] = sync.jobs
        d = writer.close()
        # The close is not even started while the write-out is submitted:
        # the file descriptor stays valid for it.
        self.assertEqual(len(sync.jobs), 1)
        sync.run_all()
        self.assertNoResult(d)
        self.assertEqual(len(sync.jobs), 1)
        sync.run_all()
        self.successResultOf(d)
        [(_, raws)] = self.files()
        self.assertEqual(raws, sent)

    def test_writeback_failure_is_reported(self):
        writer = self.make_writer(run_blocking=run_failing, fsync=True,
                                  writeback_every=1)
        self.send(F.scan(2), writer=writer)
        self.assertIn("write-out of", writer.status["last_error"])
        writer.close()

    def test_no_writeback_without_fsync(self):
        sync = DeferredSync()
        writer = self.make_writer(run_blocking=sync, fsync=False,
                                  writeback_every=1)
        self.send(F.scan(2), F.scan(3), writer=writer)
        self.assertEqual(sync.jobs, [])
        writer.close()
        sync.run_all()


class SyncBacklogTests(WriterTestCase):
    """
    Files that close faster than they sync (a new session on every frame)
    build no backlog of closes: past C{Syncer.max_pending} the producer is
    paused until half of them are done.
    """

    def test_reading_pauses_while_closes_wait_and_resumes_once_they_drain(
            self):
        from tests.stormsender import storm_frame
        sync = DeferredSync()
        writer = self.make_writer(run_blocking=sync, fsync=True)
        writer.streamStarted(self.producer)
        limit = writer._out.syncer.max_pending
        for n in range(limit):
            self.send(storm_frame(n), writer=writer)
            self.assertFalse(self.producer.paused, n)
        # One more file closed: as many closes wait as the limit allows.
        self.send(storm_frame(limit), writer=writer)
        self.assertEqual(len(sync.jobs), limit)
        self.assertTrue(self.producer.paused)
        # Half of them done is not enough to read again...
        jobs = sync.jobs
        sync.jobs = jobs[limit // 2 - 1:]
        for job, d in jobs[:limit // 2 - 1]:
            d.callback(job())
        self.assertTrue(self.producer.paused)
        # ... one more is.
        sync.run_all()
        self.assertFalse(self.producer.paused)
        d = writer.close()
        sync.run_all()
        self.successResultOf(d)
        self.assertEqual(len(self.files()), limit + 1)


class PiecesWrittenTests(WriterTestCase):
    """
    Frames are written as the pieces they came in: whatever the reads,
    the file holds the stream's bytes bit for bit.
    """

    def test_split_at_every_byte(self):
        frames = [F.observation(), F.wiring(dump=True), F.scan(2),
                  F.scan(3), F.scan(4)]
        stream = b"".join(F.raw(f) for f in frames)
        for cut in range(1, len(stream)):
            directory = os.path.join(self.dir, str(cut))
            os.makedirs(directory)
            writer = RotatingWriter(directory, self.clock, fsync=False)
            writer.streamStarted(FakeProducer())
            splitter = wire.FrameSplitter()
            for data in (stream[:cut], stream[cut:]):
                writer.framesReceived([receive_pieces(*found) for found in
                                       splitter.split(data)])
            writer.close()
            [(_, written)] = files_and_frames(directory)
            self.assertEqual(b"".join(written), stream, "cut at %d" % cut)
