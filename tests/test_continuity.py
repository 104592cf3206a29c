"""
Tests for a session that goes on across a broken connection and a restart
(L{tsagg.rules}, L{tsagg.acquisitions}, L{tsagg.scan.session_tail}), on a
L{task.Clock}: the sender's replay recognised, the metadata and the whole
status chain at the top of every later file, the frames a break cost, and a
session joined midway said so.
"""

import os

from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from tsagg.handoff import FileHandoff
from tsagg.rules import StreamRules
from tsagg.scan import session_tail
from tsagg.sostream import FrameFields

from tests import frames as F
from tests.test_writer import WriterTestCase
from tests.util import types_in

SESSION = 1700000000


def start(session_id=SESSION, frame_num=None):
    """
    A START frame; C{session_id} L{None} for one that names no session.
    """
    return F._stamp(F.flow(F.START), None, session_id, frame_num)


def dump(frame_num=1, status="{a: 1, b: 2}"):
    return F.wiring(frame_num=frame_num, status=status, dump=True)


def diff(frame_num, status):
    return F.wiring(frame_num=frame_num, status=status, dump=False)


class RulesTests(unittest.TestCase):
    """
    The pure decisions about the sender's replay.
    """

    def setUp(self):
        self.rules = StreamRules()

    def plan(self, frame, acquisition_session=SESSION, file_open=False):
        raw = F.raw(frame)
        return self.rules.plan(raw, raw[9:10].decode(), FrameFields(raw),
                               acquisition_session, file_open)

    def go(self, frame, **kw):
        plan = self.plan(frame, **kw)
        self.rules.apply(plan)
        if plan.metadata:
            self.rules.written(F.raw(frame), plan)
        return plan

    def recorded_then_broken(self):
        self.rules.stream_started(keep_metadata=False)
        self.go(start(), acquisition_session=None)
        self.go(F.observation(), acquisition_session=None)
        self.go(dump())
        self.go(F.scan(2))
        self.go(diff(3, "{a: 5}"))
        self.go(F.scan(4))
        self.rules.stream_started(keep_metadata=False, continuing=True)

    def test_a_replayed_start_of_the_session_ends_nothing(self):
        self.recorded_then_broken()
        plan = self.go(start())
        self.assertIsNone(plan.end)
        self.assertEqual(len(self.rules.replay(self.plan(F.scan(9)))), 3)

    def test_a_replayed_start_naming_no_session_waits_for_the_next_frame(self):
        self.recorded_then_broken()
        self.assertIsNone(self.go(start(session_id=None)).end)
        plan = self.go(F.observation())
        self.assertIsNone(plan.end)
        self.assertTrue(plan.duplicate)

    def test_a_replayed_start_of_another_session_forgets_the_metadata(self):
        self.recorded_then_broken()
        self.go(start(session_id=None))
        plan = self.plan(F.observation(session_id=SESSION + 100))
        self.assertEqual(plan.end, "start")
        self.rules.apply(plan)
        self.assertEqual(self.rules.replay(self.plan(F.scan(9))), [])

    def test_a_start_later_on_the_connection_is_live(self):
        self.recorded_then_broken()
        self.go(F.flow(F.ALIVE))
        self.assertEqual(self.plan(start()).end, "start")

    def test_replayed_metadata_identical_to_ours_is_not_written(self):
        self.recorded_then_broken()
        self.go(start())
        for frame in (F.observation(), diff(3, "{a: 5}")):
            plan = self.go(frame)
            self.assertTrue(plan.duplicate)
            self.assertFalse(plan.write)

    def test_a_replayed_diff_we_do_not_hold_joins_the_chain(self):
        self.recorded_then_broken()
        self.go(start())
        self.go(F.observation())
        later = diff(6, "{b: 7}")
        plan = self.go(later)
        self.assertFalse(plan.duplicate)
        self.assertTrue(plan.write)
        replay = self.rules.replay(self.plan(F.scan(9)))
        self.assertEqual(types_in(replay), "OWWW")
        self.assertEqual(replay[-1], F.raw(later))

    def test_the_first_live_data_tells_what_the_break_cost(self):
        self.recorded_then_broken()
        self.go(start(frame_num=0))
        self.go(F.observation(frame_num=0))
        # Frames 5 to 8 were sent while no one listened; 6 is replayed.
        self.go(diff(6, "{b: 7}"))
        plan = self.go(F.scan(9))
        self.assertEqual(plan.resumed, 3)
        self.assertFalse(plan.plain_data)
        self.assertEqual(self.rules.dropped, 0)
        self.assertIsNone(self.go(F.scan(10)).resumed)

    def test_a_break_without_an_acquisition_in_progress_costs_nothing(self):
        self.rules.stream_started(keep_metadata=False)
        self.assertIsNone(self.go(F.scan(9), acquisition_session=None).resumed)

    def test_an_acquisition_begun_in_the_replay_joins_midway(self):
        self.rules.stream_started(keep_metadata=False)
        self.go(start(session_id=None), acquisition_session=None)
        self.assertTrue(self.rules.joining)

    def test_an_acquisition_after_a_live_start_does_not(self):
        self.rules.stream_started(keep_metadata=False)
        self.go(F.flow(F.ALIVE), acquisition_session=None)
        self.go(start(), acquisition_session=None)
        self.assertFalse(self.rules.joining)

    def test_restore_takes_the_chain_and_the_last_number(self):
        frames = [F.observation(), dump(), diff(3, "{a: 5}")]
        has_dump = self.rules.restore([F.raw(f) for f in frames], 41)
        self.assertTrue(has_dump)
        self.assertEqual(self.rules.replay(self.plan(F.scan(42))),
                         [F.raw(f) for f in frames])
        self.rules.stream_started(keep_metadata=False, continuing=True)
        self.assertEqual(self.plan(F.scan(45)).resumed, 3)


class SessionTailTests(unittest.TestCase):

    def test_metadata_and_last_number_of_a_file(self):
        frames = [F.observation(), dump(), F.scan(2), diff(3, "{a: 5}"),
                  F.scan(4)]
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"".join(F.raw(fr) for fr in frames))
        tail = session_tail(path)
        self.assertEqual(tail.metadata,
                         [F.raw(fr) for fr in (frames[0], frames[1], frames[3])])
        self.assertEqual(tail.last_frame_num, 4)

    def test_a_torn_tail_is_not_read(self):
        frames = [F.observation(), F.scan(2)]
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"".join(F.raw(fr) for fr in frames))
            f.write(F.raw(dump())[:50])
        tail = session_tail(path)
        self.assertEqual(tail.metadata, [F.raw(frames[0])])
        self.assertEqual(tail.last_frame_num, 2)


class ContinuityTestCase(WriterTestCase):

    def setUp(self):
        WriterTestCase.setUp(self)
        self.events = []
        self.writer.log = Logger(observer=self.events.append)
        self.resumed = []
        self.writer.on_session_resumed = (
            lambda session, missed: self.resumed.append((session, missed)))

    def lines(self):
        return [formatEvent(e) for e in self.events]

    def session_begins(self):
        return self.send(start(frame_num=0), F.observation(frame_num=0),
                         dump(), F.scan(2), diff(3, "{a: 5}"), F.scan(4))

    def names(self):
        return [os.path.basename(p) for p, _ in self.files()]


class ReconnectTests(ContinuityTestCase):
    """
    A broken connection: the session goes on in its next file.
    """

    def reconnect(self):
        self.writer.streamStopped(Failure(ConnectionError("gone")))
        self.writer.streamStarted(self.producer)

    def test_the_next_file_begins_with_the_whole_chain(self):
        sent = self.session_begins()
        self.reconnect()
        # The sender's replay: START, Observation, its latest status diff.
        self.send(start(frame_num=0), F.observation(frame_num=0),
                  diff(3, "{a: 5}"))
        later = self.send(F.scan(5), F.scan(6))
        self.writer.close()
        self.assertEqual(self.names(),
                         ["1700000000_000.g3", "1700000000_001.g3"])
        first, second = [raws for _, raws in self.files()]
        self.assertEqual(first, sent[1:])
        self.assertEqual(second, [sent[1], sent[2], sent[4]] + later)
        self.assertEqual(self.resumed, [(SESSION, 0)])

    def test_a_diff_sent_during_the_break_joins_the_chain(self):
        sent = self.session_begins()
        self.reconnect()
        replayed = self.send(start(frame_num=0), F.observation(frame_num=0),
                             diff(7, "{b: 9}"))
        later = self.send(F.scan(9))
        self.writer.close()
        second = self.files()[1][1]
        self.assertEqual(second, [sent[1], sent[2], sent[4], replayed[2]]
                         + later)
        # Frames 5, 6 and 8 were missed; 7 came in the replay.
        self.assertEqual(self.resumed, [(SESSION, 3)])
        self.assertEqual(self.writer.status["frames_missed_in_breaks"], 3)
        self.assertEqual(self.writer.status["frames_dropped_upstream"], 0)

    def test_one_session_in_the_log(self):
        self.session_begins()
        self.reconnect()
        self.send(start(frame_num=0), F.observation(frame_num=0),
                  diff(3, "{a: 5}"), F.scan(5))
        started = [l for l in self.lines() if "started" in l]
        self.assertEqual(len(started), 1, started)

    def test_a_new_session_after_the_break_begins_anew(self):
        self.session_begins()
        self.reconnect()
        other = SESSION + 100
        new = self.send(start(session_id=other, frame_num=0),
                        F.observation(session_id=other, frame_num=1),
                        F.scan(2, session_id=other))
        self.writer.close()
        self.assertEqual(self.names()[-1], "1700000100_000.g3")
        self.assertEqual(self.files()[-1][1], new[1:])
        self.assertEqual(self.resumed, [])


class RestartTests(ContinuityTestCase):
    """
    A restart: the session goes on from its last file on disk.
    """

    def restart(self):
        self.writer.close()
        self.writer = self.make_writer()
        self.events = []
        self.writer.log = Logger(observer=self.events.append)
        self.writer.prepare()
        self.writer.streamStarted(self.producer)

    def test_the_session_goes_on_in_its_next_file(self):
        sent = self.session_begins()
        self.restart()
        self.send(start(frame_num=0), F.observation(frame_num=0),
                  diff(3, "{a: 5}"))
        later = self.send(F.scan(8))
        self.writer.close()
        self.assertEqual(self.names(),
                         ["1700000000_000.g3", "1700000000_001.g3"])
        self.assertEqual(self.files()[1][1],
                         [sent[1], sent[2], sent[4]] + later)
        [line] = [l for l in self.lines() if "goes on" in l]
        self.assertIn("1700000000_000.g3", line)
        self.assertIn("3 frames missed", line)
        self.assertFalse([l for l in self.lines() if "started" in l])

    def test_a_session_that_ended_is_not_taken_back(self):
        self.session_begins()
        self.send(F.flow(F.END), F.scan(5))
        self.writer.close()
        self.assertEqual(types_in(self.files()[-1][1]), "S")


class MidwayTests(ContinuityTestCase):
    """
    A first start in the middle of a session, with nothing of it on disk.
    """

    def test_joining_midway_is_said_and_marked(self):
        closed = []
        self.writer.add_closed_file_listener(closed.append)
        self.writer.streamStopped(Failure(ConnectionError("new")))
        self.writer.streamStarted(self.producer)
        self.send(start(frame_num=0), F.observation(frame_num=0),
                  diff(30, "{a: 5}"), F.scan(31))
        status = self.writer.status["joined_midway"]
        self.assertIn("joined session 1700000000 of crate1slot2 midway",
                      status)
        [line] = [l for l in self.lines() if "midway" in l]
        self.assertIn("status dump was not seen", line)
        self.writer.close()
        self.assertEqual([c.joined_midway for c in closed], [True])

    def test_the_files_feed_record_says_so(self):
        records = []
        handoff = FileHandoff(None)
        handoff.add_listener(records.append, wants_md5=False)
        self.writer.add_closed_file_listener(handoff)
        self.writer.streamStopped(Failure(ConnectionError("new")))
        self.writer.streamStarted(self.producer)
        self.send(start(frame_num=0), F.observation(frame_num=0),
                  diff(30, "{a: 5}"), F.scan(31))
        self.writer.close()
        self.assertEqual([r["joined_midway"] for r in records], [True])

    def test_a_live_session_is_not_midway(self):
        closed = []
        self.writer.add_closed_file_listener(closed.append)
        self.session_begins()
        self.writer.close()
        self.assertIsNone(self.writer.status["joined_midway"])
        self.assertEqual([c.joined_midway for c in closed], [False])
