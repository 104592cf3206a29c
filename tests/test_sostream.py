"""
Tests for L{tsagg.sostream}.
"""

from twisted.trial import unittest

from tsagg import sostream
from tsagg.frames import core

from tests import frames as F


class FlowControlTests(unittest.TestCase):

    def test_data_frame(self):
        self.assertIsNone(sostream.flow_control(F.scan(1)))

    def test_values(self):
        for value in (sostream.ALIVE, sostream.START, sostream.END,
                      sostream.CLEANSE):
            self.assertEqual(sostream.flow_control(F.flow(value)), value)

    def test_wrong_type_is_still_flow_control(self):
        frame = core.G3Frame(core.G3FrameType.none)
        frame["sostream_flowcontrol"] = "start"
        self.assertEqual(sostream.flow_control(frame), -1)


class SanitizeTests(unittest.TestCase):

    def test_plain_ids_unchanged(self):
        for good in ("crate1slot2", "stream_sim", "a-b.c"):
            self.assertEqual(sostream.sanitize_stream_id(good), good)

    def test_unsafe_characters_replaced(self):
        self.assertEqual(sostream.sanitize_stream_id("a/b\\c d"), "a_b_c_d")

    def test_leading_dots_dropped(self):
        self.assertEqual(sostream.sanitize_stream_id(".hidden"), "hidden")
        self.assertIsNone(sostream.sanitize_stream_id(".."))
        self.assertIsNone(sostream.sanitize_stream_id("."))

    def test_nothing_usable(self):
        for bad in ("", "///", None, 5, b"bytes"):
            self.assertIsNone(sostream.sanitize_stream_id(bad))

    def test_length_capped(self):
        self.assertEqual(len(sostream.sanitize_stream_id("x" * 1000)), 64)


class FieldTests(unittest.TestCase):

    def test_stream_id_ignored_on_pipeline_info(self):
        self.assertIsNone(sostream.stream_id(F.pipeline_info("p"), "P"))
        self.assertEqual(sostream.stream_id(F.scan(1), "S"), "crate1slot2")

    def test_session_id(self):
        self.assertEqual(sostream.session_id(F.scan(1)), 1700000000)
        self.assertIsNone(sostream.session_id(F.scan(1, session_id=0)))
        self.assertIsNone(sostream.session_id(F.scan(1, session_id=-3)))
        self.assertIsNone(sostream.session_id(F.scan(1, session_id=10 ** 11)))
        self.assertIsNone(sostream.session_id(F.scan(1, session_id=None)))

    def test_frame_num(self):
        self.assertEqual(sostream.frame_num(F.scan(7)), 7)
        frame = F.scan(None)
        frame["frame_num"] = 1.5
        self.assertIsNone(sostream.frame_num(frame))


class FrameNumTrackerTests(unittest.TestCase):

    def test_counts_forward_jumps_only(self):
        t = sostream.FrameNumTracker()
        self.assertEqual([t.see(n) for n in (0, 1, 4, 2, 5, 9, None)],
                         [0, 0, 2, 0, 0, 3, 0])
        self.assertEqual(t.dropped, 5)

    def test_reset_keeps_the_total(self):
        t = sostream.FrameNumTracker()
        t.see(0)
        t.see(10)
        t.reset()
        t.see(0)
        self.assertEqual(t.dropped, 9)


def _blob(value):
    frame = core.G3Frame()
    frame["k"] = value
    return sostream.FrameFields(F.raw(frame), keys={b"k"}).blob("k")


class DecodeBlobTests(unittest.TestCase):
    """
    L{sostream.decode_blob} reads what spt3g wrote, and nothing else.
    """

    def test_ints_of_every_size(self):
        for value in (0, 1, -1, 2 ** 40, -2 ** 63, 2 ** 63 - 1):
            self.assertEqual(sostream.decode_blob(_blob(value)), value)

    def test_a_g3int_head_of_the_wrong_size_is_refused(self):
        blob = bytes(_blob(7))
        for bad in (blob[:-1], blob + b"\0"):
            self.assertRaises(ValueError, sostream.decode_blob, bad)

    def test_other_types(self):
        self.assertEqual(sostream.decode_blob(_blob("crate1slot2")),
                         "crate1slot2")
        self.assertIs(sostream.decode_blob(_blob(True)), True)
