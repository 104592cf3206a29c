"""
Tests for the fast path of plain data frames, taken a run at a time
(L{tsagg.rules.StreamRules.plain_run}, L{tsagg.acquisitions.Acquisitions.
take_plain}): it takes exactly the frames the frame-by-frame path would take
as plain data, and leaves the rules, the files and the status as that path
would, on every frame type in every state the rules and the writer reach.
"""

import os

from hypothesis import given, settings, strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from tsagg import sostream, wire
from tsagg.frames import raw_type_code, receive_all, unchecked_frame
from tsagg.plaindata import layout_numbers
from tsagg.protocol import G3StreamFactory
from tsagg.writer import RotatingWriter

from tests.test_outage import FakeDisk
from tests.test_rules import _POOL, BETWEEN_FRAMES, Driver
from tests.util import files_and_frames

T0 = 1700000000.25


def _state(rules):
    """
    Everything the rules hold, as plain values.
    """
    state = dict(vars(rules))
    # (How the numbers of the last layout are read: not a decision.)
    state.pop("_layout", None)
    state["frame_nums"] = dict(vars(rules.frame_nums))
    state["metadata"] = dict(vars(rules.metadata))
    return state


def _plain_by_frame(driver, raw):
    session = driver.session if driver.acquiring else None
    return driver.rules.plain(raw_type_code(raw), sostream.FrameFields(raw),
                              session, driver.open)


def _received(raws, split):
    """
    The frames as L{tsagg.frames.LazyFrame}s: cut from one read by the
    splitter, those of one layout sharing its spans, when C{split}; else
    each made alone.
    """
    if not split:
        return [unchecked_frame(raw) for raw in raws]
    found, error = receive_all(wire.FrameSplitter().split(b"".join(raws)))
    assert error is None and len(found) == len(raws)
    return found


class RulesRunTests(unittest.TestCase):
    """
    L{StreamRules.plain_run} against L{StreamRules.plain} and
    L{StreamRules.apply}, a frame at a time.
    """

    def check(self, events):
        by_frame, by_run = Driver(), Driver()
        taken = 0
        for event in events:
            if event[0] == "batch":
                raws = [_POOL[i] for i in event[1]]
                for raw in raws:
                    by_frame.one(raw)
                lazy = _received(raws, event[2])
                i = 0
                while i < len(raws):
                    by_run.one(raws[i])
                    i += 1
                    session = by_run.session if by_run.acquiring else None
                    end = by_run.rules.plain_run(lazy, i, session,
                                                 by_run.open)
                    self.assertTrue(i <= end <= len(raws))
                    # Each frame taken goes on in the open file, as a plain
                    # data frame does.
                    if end > i:
                        by_run.files[-1].extend(raws[i:end])
                    taken += end - i
                    i = end
                    if i < len(raws):
                        # The run stops only where the frame-by-frame path
                        # would not take the next frame.
                        self.assertIsNone(_plain_by_frame(by_run, raws[i]))
            else:
                for d in (by_frame, by_run):
                    d.between(event)
            self.assertEqual(_state(by_run.rules), _state(by_frame.rules))
            self.assertEqual(by_run.files, by_frame.files)
        return taken

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(
        st.tuples(st.just("batch"),
                  st.lists(st.integers(0, len(_POOL) - 1), max_size=8),
                  st.booleans()),
        *BETWEEN_FRAMES), max_size=25))
    def test_same_as_frame_by_frame_in_every_state(self, events):
        self.check(events)

    def test_takes_the_data_that_follows(self):
        # Observation and Wiring, then data frames of the session (two
        # Timepoints): every one is taken, in one run.
        for split in (False, True):
            events = [("batch", [7, 8, 0, 1, 2, 6, 6], split)]
            self.assertEqual(self.check(events), 5)

    def test_takes_numbers_of_any_kind(self):
        # Scan frames of one layout whose frame_num is negative, whose
        # session id is out of range, or whose numbers are not G3Ints: the
        # frame-by-frame path finds no number there, and takes them.
        for split in (False, True):
            events = [("batch", [7, 0, 1, 20, 21, 22, 23, 2], split)]
            self.assertEqual(self.check(events), 7)
            # (None yet: a negative number is none.)
            events = [("batch", [20, 20, 20], split)]
            self.assertEqual(self.check(events), 2)

    def test_stops_where_there_is_something_to_decide(self):
        # Another session's Scan, a flow-control Scan, an END.
        # The run stops there, and the frame after it is not plain either.
        for split in (False, True):
            for other in (3, 16, 14):
                self.assertEqual(
                    self.check([("batch", [7, 0, 1, other, 2], split)]), 2)
            # A rotation due: the next Scan frame opens a new file, and the
            # one after it is taken.
            self.assertEqual(
                self.check([("batch", [7, 0], split), ("rotation",),
                            ("batch", [1, 2], split)]),
                2)


class LayoutNumbersTests(unittest.TestCase):
    """
    L{layout_numbers} reads a repeated layout's numbers as the frame's
    fields read them, and L{StreamRules.plain_run} reads its frames so.
    """

    def test_read_as_the_fields_read_them(self):
        read_some = 0
        for raw in _POOL:
            (frame,) = _received([raw], True)
            numbers = layout_numbers(frame)
            fields = sostream.FrameFields.of(frame)
            if numbers is None:
                self.assertFalse(
                    isinstance(fields.g3int("session_id"), int)
                    and isinstance(fields.g3int("frame_num"), int)
                    and frame.code == "S", raw)
                continue
            read, session_first = numbers
            values = read(frame.pieces[0], 0)
            if session_first:
                session, head, num = values
            else:
                head, num, session = values
            self.assertEqual(head == sostream.G3INT_HEAD,
                             fields.g3int("frame_num") is not None)
            if head == sostream.G3INT_HEAD:
                self.assertEqual(num, fields.g3int("frame_num"))
            if fields.g3int("session_id") is not None:
                self.assertEqual(session, fields.g3int("session_id"))
            read_some += 1
        self.assertGreaterEqual(read_some, 8)

    def test_not_of_a_layout(self):
        # Made alone, or in more than one piece: no layout's spans.
        raw = _POOL[0]
        self.assertIsNone(layout_numbers(unchecked_frame(raw)))
        splitter = wire.FrameSplitter()
        found = splitter.split(raw[:100]) + splitter.split(raw[100:])
        (frame,), _ = receive_all(found)
        self.assertIsNone(layout_numbers(frame))

    def test_a_layout_is_looked_at_once(self):
        d = Driver()
        d.one(_POOL[7])
        lazy = _received([_POOL[i] for i in [0, 1, 2] * 10], True)
        seen = []
        real = sostream.FrameFields.of
        self.patch(sostream.FrameFields, "of",
                   lambda frame: seen.append(frame) or real(frame))
        self.assertEqual(d.rules.plain_run(lazy, 0, d.session, d.open), 30)
        self.assertEqual(seen, lazy[:1])
        self.assertEqual(d.rules.frame_nums.highest, 9)


class _Recorder:
    """
    A writer fed through the real protocol, over a L{StringTransport}.
    """

    def __init__(self, data_dir, fast):
        os.makedirs(data_dir)
        self.dir = data_dir
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.disk = FakeDisk()
        self.writer = RotatingWriter(data_dir, self.clock, time_per_file=60,
                                     gap_timeout=10, fsync=False,
                                     statvfs=self.disk,
                                     free_check_interval=0)
        self.closed = []
        self.writer.add_closed_file_listener(
            lambda closed: self.closed.append(
                {key: value for key, value in vars(closed).items()
                 if key != "path"}))
        if not fast:
            acqs = self.writer._acqs
            acqs.take_plain = lambda frames, start: start
        self.factory = G3StreamFactory(self.writer, self.clock,
                                       idle_timeout=None)
        self.protocol = None
        self.connect()

    def connect(self):
        if self.protocol is not None:
            self.protocol.connectionLost(Failure(ConnectionDone()))
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 4536)))

    def view(self):
        status = {key: value.replace(self.dir, "<dir>")
                  if isinstance(value, str) else value
                  for key, value in self.writer.status.items()
                  # Measured, not decided:
                  if key not in ("slowest_write", "free_bytes")}
        # (The file system is looked at whenever nothing is queued.)
        return (files_and_frames(self.dir), self.closed, status,
                self.disk.calls,
                _state(self.writer.rules))


class WriterRunTests(unittest.TestCase):
    """
    A writer with the fast path and one without, fed the same bytes in the
    same reads, write the same files and report the same status.
    """

    def check(self, events):
        base = self.mktemp()
        fast, slow = (_Recorder(os.path.join(base, name), name == "fast")
                      for name in ("fast", "slow"))
        for event in events:
            for r in (fast, slow):
                if event[0] == "reads":
                    data = b"".join(_POOL[i] for i in event[1])
                    cut = event[2] % (len(data) + 1)
                    for chunk in (data[:cut], data[cut:]):
                        if chunk:
                            r.protocol.dataReceived(chunk)
                    r.clock.advance(0)
                elif event[0] == "connect":
                    r.connect()
                elif event[0] == "read-only":
                    r.disk.read_only = event[1]
                else:
                    r.clock.advance(event[1])
            self.assertEqual(fast.view(), slow.view())
        for r in (fast, slow):
            r.writer.close()
        self.assertEqual(fast.view(), slow.view())
        return fast.writer.status

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.one_of(
        st.tuples(st.just("reads"),
                  st.lists(st.integers(0, len(_POOL) - 1), max_size=10),
                  st.integers(0, 1 << 20)),
        st.tuples(st.just("connect")),
        st.tuples(st.just("read-only"), st.booleans()),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 9, 11, 61]))),
        max_size=12))
    def test_same_files_and_status(self, events):
        self.check(events)

    def test_files_of_a_session(self):
        scans = [0, 1, 2, 6, 0, 1]
        status = self.check([("reads", [7, 8] + scans, 10 ** 6),
                             ("advance", 61), ("reads", scans, 3000),
                             ("connect",), ("reads", [7, 8] + scans, 5000)])
        self.assertEqual(status["frames_received"], 22)
