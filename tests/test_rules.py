"""
Tests for L{tsagg.rules}: the SO stream rules as a pure state machine, with
plain frames and no writer, file or clock.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from tsagg import sostream
from tsagg.frames import raw_type_code
from tsagg.rules import Plan, StreamRules

from tests import frames as F


class Driver:
    """
    A writer in miniature: it carries the plans out on a list of files.
    """

    def __init__(self):
        self.rules = StreamRules()
        self.files = []
        self.open = False
        self.session = None
        self.acquiring = False

    def feed(self, *frames):
        for frame in frames:
            self.one(F.raw(frame))

    def one(self, raw):
        plan = self.plan(raw)
        self.rules.apply(plan)
        if plan.end is not None:
            self.open = self.acquiring = False
            self.rules.file_closed()
        elif plan.close is not None:
            self.open = False
            self.rules.file_closed()
        if not plan.write:
            return plan
        if not self.acquiring:
            self.acquiring, self.session = True, plan.session
        if not self.open:
            self.files.append(self.rules.replay(plan))
            self.open = True
        self.files[-1].append(raw)
        if plan.metadata:
            self.rules.written(raw, plan)
        return plan

    def between(self, event):
        """
        What happens to the writer between frames: a C{("connect",
        keep_metadata, continuing)}, a C{("rotation",)} due, or a
        C{("close",)} of the file.
        """
        if event[0] == "connect":
            self.rules.stream_started(event[1], event[2] and self.acquiring)
        elif event[0] == "rotation":
            self.rules.rotation_due = self.open
        else:
            self.open = False
            self.rules.file_closed()

    def plan(self, raw):
        return self.rules.plan(raw, raw_type_code(raw),
                               sostream.FrameFields(raw),
                               self.session if self.acquiring else None,
                               self.open)


class PlanTests(unittest.TestCase):

    def test_planning_changes_nothing(self):
        d = Driver()
        d.feed(F.observation(), F.wiring(), F.scan(2))
        raw = F.raw(F.scan(9))
        d.plan(raw)
        d.rules.rotation_due = True
        first, second = d.plan(raw), d.plan(raw)
        self.assertEqual((first.close, second.close), ("rotation",) * 2)
        self.assertEqual(d.rules.dropped, 0)
        self.assertTrue(d.rules.rotation_due)
        d.rules.apply(first)
        self.assertEqual(d.rules.dropped, 6)
        self.assertFalse(d.rules.rotation_due)

    def test_flow_control_is_never_written(self):
        d = Driver()
        for value, name in [(F.ALIVE, "alive"), (F.CLEANSE, "cleanse")]:
            plan = d.one(F.raw(F.flow(value)))
            self.assertEqual(plan.discard, name)
            self.assertFalse(plan.write)
        self.assertEqual(d.files, [])

    def test_start_and_end_end_the_acquisition(self):
        d = Driver()
        d.feed(F.observation(), F.scan(2))
        self.assertEqual(d.plan(F.raw(F.flow(1))).end, "start")
        self.assertEqual(d.plan(F.raw(F.flow(2))).end, "end")

    def test_end_forgets_the_stream_and_its_metadata(self):
        d = Driver()
        d.feed(F.observation(), F.scan(2), F.flow(2))
        self.assertIsNone(d.rules.stream_id)
        d.feed(F.scan(3, stream_id="other"))
        self.assertEqual(d.rules.stream_id, "other")
        self.assertEqual(d.files[-1], [F.raw(F.scan(3, stream_id="other"))])

    def test_cleanse_does_not_replace_the_metadata(self):
        d = Driver()
        d.feed(F.observation(), F.scan(2))
        cleanse = F.flow(3, frame_type=F.core.G3FrameType.Observation)
        d.feed(cleanse)
        d.rules.rotation_due = True
        d.feed(F.scan(3))
        self.assertEqual(d.files[-1][0], F.raw(F.observation()))

    def test_a_new_session_id_ends_the_acquisition(self):
        d = Driver()
        d.feed(F.scan(2))
        plan = d.plan(F.raw(F.scan(3, session_id=1700000050)))
        self.assertEqual(plan.end, "new session 1700000050")
        self.assertIsNone(d.plan(F.raw(F.scan(3))).end)


class RotationTests(unittest.TestCase):

    def test_due_closes_only_before_data(self):
        d = Driver()
        d.feed(F.observation(), F.scan(2))
        d.rules.rotation_due = True
        for frame in (F.wiring(frame_num=3), F.observation(frame_num=4)):
            self.assertIsNone(d.plan(F.raw(frame)).close)
        self.assertEqual(d.plan(F.raw(F.scan(5))).close, "rotation")

    def test_nothing_to_close_without_a_file(self):
        d = Driver()
        d.rules.rotation_due = True
        self.assertIsNone(d.plan(F.raw(F.scan(2))).close)

    def test_the_close_clears_the_due(self):
        d = Driver()
        d.feed(F.observation(), F.scan(2))
        d.rules.rotation_due = True
        d.feed(F.scan(3))
        self.assertFalse(d.rules.rotation_due)
        self.assertEqual(len(d.files), 2)


class ReplayTests(unittest.TestCase):
    """
    What a new file begins with.
    """

    def rotate(self, d, num):
        d.rules.rotation_due = True
        d.feed(F.scan(num))
        return d.files[-1][:-1]

    def test_the_whole_status_chain_in_order(self):
        d = Driver()
        obs = F.observation()
        dump = F.wiring(frame_num=1, status="all", dump=True)
        diffs = [F.wiring(frame_num=n, status="k%d" % n, dump=False)
                 for n in (3, 5)]
        d.feed(obs, dump, F.scan(2), diffs[0], F.scan(4), diffs[1])
        self.assertEqual(self.rotate(d, 6),
                         [F.raw(obs), F.raw(dump)] + [F.raw(w) for w in diffs])

    def test_a_new_dump_replaces_the_chain(self):
        d = Driver()
        d.feed(F.observation(), F.wiring(status="a", dump=True), F.scan(2),
               F.wiring(frame_num=3, status="b", dump=False))
        new = F.wiring(frame_num=4, status="c", dump=True)
        d.feed(new)
        self.assertEqual(self.rotate(d, 5)[1:], [F.raw(new)])

    def test_a_diff_that_opens_a_file_comes_after_its_chain(self):
        d = Driver()
        dump = F.wiring(status="a", dump=True)
        d.feed(F.observation(), dump, F.scan(2))
        d.open = False
        diff = F.wiring(frame_num=3, status="b", dump=False)
        d.feed(diff)
        self.assertEqual(d.files[-1], [F.raw(F.observation()), F.raw(dump),
                                       F.raw(diff)])

    def test_a_dump_that_opens_a_file_is_not_preceded_by_the_old_one(self):
        d = Driver()
        d.feed(F.observation(), F.wiring(status="a", dump=True), F.scan(2))
        d.open = False
        dump = F.wiring(frame_num=3, status="b", dump=True)
        d.feed(dump)
        self.assertEqual(d.files[-1], [F.raw(F.observation()), F.raw(dump)])

    def test_diffs_with_no_dump_before_them_make_a_chain(self):
        # A session joined midway: every diff since the joining.
        d = Driver()
        diffs = [F.wiring(frame_num=n, status="k%d" % n, dump=False)
                 for n in (1, 3)]
        d.feed(F.observation(), diffs[0], F.scan(2), diffs[1])
        self.assertEqual(self.rotate(d, 4),
                         [F.raw(F.observation())] + [F.raw(x) for x in diffs])

    def test_a_dump_after_diffs_begins_the_chain(self):
        d = Driver()
        diff = F.wiring(frame_num=1, status="k1", dump=False)
        dump = F.wiring(frame_num=3, status="all", dump=True)
        d.feed(F.observation(), diff, F.scan(2), dump)
        self.assertEqual(self.rotate(d, 4),
                         [F.raw(F.observation()), F.raw(dump)])

    def test_wiring_without_a_dump_key_keeps_the_latest(self):
        d = Driver()
        d.feed(F.observation(), F.wiring(status="old"), F.scan(2),
               F.wiring(frame_num=3, status="new"))
        self.assertEqual(self.rotate(d, 4),
                         [F.raw(F.observation()),
                          F.raw(F.wiring(frame_num=3, status="new"))])

    def test_the_types_keep_the_order_of_their_latest_frame(self):
        d = Driver()
        d.feed(F.wiring(status="a", dump=True), F.observation(), F.scan(2),
               F.wiring(frame_num=3, status="b", dump=False))
        replay = self.rotate(d, 4)
        self.assertEqual([raw_type_code(r) for r in replay], ["O", "W", "W"])

    def test_a_new_connection_replays_the_senders_cache_not_ours(self):
        d = Driver()
        d.feed(F.observation(), F.scan(2))
        d.rules.stream_started(keep_metadata=False)
        self.assertEqual(d.rules.replay(d.plan(F.raw(F.scan(3)))), [])
        d = Driver()
        d.feed(F.observation(), F.scan(2))
        d.rules.stream_started(keep_metadata=True)
        self.assertEqual(d.rules.replay(d.plan(F.raw(F.scan(3)))),
                         [F.raw(F.observation())])


def _stamped_start():
    start = F.flow(F.START)
    start["session_id"] = 1700000000
    return start


def _decision(plan):
    """
    Everything a L{Plan} says, as a dict.
    """
    names = [n for n in dir(Plan) if not n.startswith("__")]
    return {n: getattr(plan, n) for n in names + ["code", "_replayed_num"]
            if hasattr(plan, n)}


_TIMEPOINT = F.core.G3Frame(F.core.G3FrameType.Timepoint)
_TIMEPOINT["session_id"] = 1700000000
_TIMEPOINT["frame_num"] = 9
_TIMEPOINT["sostream_id"] = "crate1slot2"

#: Every frame type, of this session, another, none, and flow control of
#: every kind, as data frames and as metadata.
_POOL = [F.raw(f) for f in (
    F.scan(2), F.scan(3), F.scan(9), F.scan(4, session_id=1700000050),
    F.scan(5, session_id=None), F.scan(6, stream_id=None), _TIMEPOINT,
    F.observation(), F.wiring(dump=True), F.wiring(dump=False),
    F.wiring(), F.pipeline_info(), F.flow(F.ALIVE), F.flow(F.START),
    F.flow(F.END), F.flow(F.CLEANSE, F.core.G3FrameType.Observation),
    F.flow(F.START, F.core.G3FrameType.Scan), F.flow(7),
    _stamped_start(), F.scan(0, session_id=0))] + [
    # Of the layout of a plain Scan frame: a negative frame_num, a session
    # id out of range, and numbers that are not G3Ints.
    F.raw(F.scan(-1, seed=1)), F.raw(F.scan(8, session_id=10 ** 10)),
    F.forged(F.raw(F.scan(10)), b"G3Inx", [b"frame_num"]),
    F.forged(F.raw(F.scan(11, session_id=1700000050)), b"G3Inx",
             [b"session_id"]),
    # Flow control in a Scan frame of the session, numbered.
    F.raw(F._stamp(F.flow(F.ALIVE, F.core.G3FrameType.Scan), "crate1slot2",
                   1700000000, 12))]


#: Strategies of L{Driver.between}'s events.
BETWEEN_FRAMES = (
    st.tuples(st.just("connect"), st.booleans(), st.booleans()),
    st.tuples(st.just("rotation")), st.tuples(st.just("close")))


class FastPathTests(unittest.TestCase):
    """
    L{StreamRules.plain}, the fast path, makes the same decision as
    L{StreamRules.plan} whenever it makes one, on every frame type in every
    state the rules reach.
    """

    def check(self, events):
        d = Driver()
        taken = 0
        for event in events:
            if event[0] == "frame":
                raw = _POOL[event[1]]
                fields = sostream.FrameFields(raw)
                session = d.session if d.acquiring else None
                fast = d.rules.plain(raw_type_code(raw), fields, session,
                                     d.open)
                if fast is not None:
                    taken += 1
                    self.assertEqual(_decision(fast),
                                     _decision(d.plan(raw)))
                d.one(raw)
            else:
                d.between(event)
        return taken

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(
        st.tuples(st.just("frame"), st.integers(0, len(_POOL) - 1)),
        *BETWEEN_FRAMES), max_size=40))
    def test_same_decision_in_every_state(self, events):
        self.check(events)

    def test_taken_for_the_data_of_an_acquisition(self):
        events = [("frame", 7), ("frame", 8), ("frame", 0), ("frame", 1),
                  ("frame", 2), ("frame", 6)]
        self.assertEqual(self.check(events), 4)

    def test_not_taken_when_there_is_something_to_decide(self):
        # The metadata opens the file; the first Scan frame goes on in it.
        base = [("frame", 7), ("frame", 0)]
        self.assertEqual(self.check(base), 1)
        for extra in ([("rotation",)], [("close",)],
                      [("connect", False, True)]):
            self.assertEqual(self.check(base + extra + [("frame", 1)]), 1)
        for other in (3, 13, 16):
            self.assertEqual(self.check(base + [("frame", other)]), 1)
        self.assertEqual(self.check([("frame", 5), ("frame", 0)]), 0)
