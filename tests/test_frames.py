"""
Tests for L{tsagg.frames}: tsagg's CRC check agrees with spt3g's, and frames
are deserialized only when used.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from tsagg import frames, sostream, wire
from tsagg.frames import CorruptFrame, LazyFrame, load_frame, receive_frame

from tests import frames as F

SMALL = F.raw(F.scan(1, channels=3, samples=5))
LARGE = F.raw(F.scan(2, channels=200, samples=100))


def spt3g_accepts(raw):
    try:
        load_frame(raw)
        return True
    except CorruptFrame:
        return False


def tsagg_accepts(raw):
    try:
        receive_frame(raw)
        return True
    except CorruptFrame:
        return False


class ReceiveTests(unittest.TestCase):

    def test_good_frames_accepted(self):
        for raw in (SMALL, LARGE, F.raw(F.flow(F.START)),
                    F.handmade([], ftype=b"N", crc=0)):
            self.assertIsInstance(receive_frame(raw), LazyFrame)

    def test_crc_mismatch_names_both_values(self):
        bad = SMALL[:-4] + b"\0\0\0\0"
        e = self.assertRaises(CorruptFrame, receive_frame, bad)
        self.assertIn("does not match", str(e))

    def test_not_loaded_until_used(self):
        frame = receive_frame(LARGE)
        self.assertIsNone(frame._frame)
        self.assertEqual(frame["frame_num"], 2)
        self.assertIsNotNone(frame._frame)
        self.assertIn("data", frame)
        self.assertEqual(frame.type, load_frame(LARGE).type)

    def test_raw_type_code(self):
        self.assertEqual(frames.raw_type_code(SMALL), "S")
        self.assertEqual(frames.raw_type_code(F.raw(F.wiring())), "W")


def layout_ok(raw):
    """
    Whether the splitter cuts C{raw} as exactly one frame.
    """
    splitter = wire.FrameSplitter()
    return splitter.feed(raw) == [raw] and splitter.error is None


def flipped(raw, pos, bit):
    mutated = bytearray(raw)
    mutated[pos] ^= 1 << bit
    return bytes(mutated)


class AgreementTests(unittest.TestCase):
    """
    One bit flipped anywhere: where the splitter takes the layout (a flipped
    length it refuses, before spt3g would try to allocate it), tsagg's CRC
    check takes the frame exactly when spt3g does.
    """

    def assertAgree(self, mutated):
        if not layout_ok(mutated):
            return False
        self.assertEqual(tsagg_accepts(mutated), spt3g_accepts(mutated))
        return True

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([SMALL, LARGE]), st.data())
    def test_bit_flip(self, raw, data):
        pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        bit = data.draw(st.integers(min_value=0, max_value=7))
        self.assertAgree(flipped(raw, pos, bit))

    def test_every_flip_of_a_small_frame(self):
        compared = sum(self.assertAgree(flipped(SMALL, pos, bit))
                       for pos in range(len(SMALL)) for bit in range(8))
        # Most flips land in keys, blobs and the CRC, where spt3g decides.
        self.assertGreater(compared, 0.8 * 8 * len(SMALL))


def _pieces_at(raw, cuts):
    """
    A frame split by the splitter at the given offsets, as C{(pieces,
    size, spans)}.
    """
    splitter = wire.FrameSplitter()
    found = []
    for lo, hi in zip([0] + cuts, cuts + [len(raw)]):
        found += splitter.split(raw[lo:hi])
    return found[0]


class PiecesTests(unittest.TestCase):
    """
    A frame that came in pieces is checked and read without joining them,
    to the same result as its joined bytes.
    """

    def test_crc_over_pieces_is_the_crc_of_the_frame(self):
        for raw in (SMALL, F.raw(F.wiring(dump=True))):
            recorded = int.from_bytes(raw[-4:], "little")
            for cut in range(1, len(raw)):
                pieces, size, spans = _pieces_at(raw, [cut])
                self.assertEqual(frames.crc_of_pieces(pieces, spans),
                                 recorded)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.integers(1, len(LARGE) - 1), max_size=6, unique=True))
    def test_crc_over_any_pieces(self, cuts):
        pieces, size, spans = _pieces_at(LARGE, sorted(cuts))
        self.assertEqual(len(pieces), len(cuts) + 1)
        self.assertEqual(frames.crc_of_pieces(pieces, spans),
                         int.from_bytes(LARGE[-4:], "little"))

    def test_a_flipped_bit_in_any_piece_is_found(self):
        bad = flipped(LARGE, len(LARGE) // 2, 3)
        pieces, size, spans = _pieces_at(bad, [100, len(bad) // 2 + 1])
        self.assertRaises(CorruptFrame, frames.receive_pieces, pieces, size,
                          spans)

    def test_fields_from_pieces_are_the_fields_of_the_frame(self):
        raw = F.raw(F.wiring(dump=True))
        whole = sostream.FrameFields(raw)
        for cut in range(1, len(raw)):
            frame = frames.receive_pieces(*_pieces_at(raw, [cut]))
            fields = sostream.FrameFields.of(frame)
            for key in ("frame_num", "session_id", "sostream_id", "dump"):
                self.assertEqual(fields[key], whole[key])
            self.assertEqual(frame.code, "W")
            self.assertEqual(frame.raw, raw)

    def test_not_joined_unless_asked(self):
        frame = frames.receive_pieces(*_pieces_at(LARGE, [1000]))
        sostream.FrameFields.of(frame)
        self.assertIsNone(frame._raw)
        self.assertEqual(frame.raw, LARGE)

    def test_fields_of_each_layout_are_its_own(self):
        first = F.handmade([(b"a", b"xyz"), (b"frame_num", b"12345678")])
        other = F.handmade([(b"a", b"xyz"), (b"xrame_num", b"12345678")])
        stream = first + first + other
        found = wire.FrameSplitter().split(stream)
        blobs = [sostream.FrameFields.of(LazyFrame(*f)).blob("frame_num")
                 for f in found]
        self.assertEqual([None if b is None else bytes(b) for b in blobs],
                         [b"12345678", b"12345678", None])


def _outcome(call):
    try:
        return ("value", call())
    except Exception as e:
        return ("raises", type(e))


class RepeatedLayoutTests(unittest.TestCase):
    """
    A frame whose layout repeats the frame before it (the common case, read
    through the layout's cached groups and slices) is checked and read as
    a frame seen for the first time is.
    """

    def check(self, raw):
        first, again = wire.FrameSplitter().split(raw + raw)
        self.assertIs(again[2], first[2])
        recorded = int.from_bytes(raw[-4:], "little")
        whole = sostream.FrameFields(raw)
        for _ in range(2):
            # The first time fills the caches; the second reads from them.
            for found in (first, again):
                pieces, size, spans = found
                self.assertEqual(frames.crc_of_pieces(pieces, spans),
                                 recorded)
                fields = sostream.FrameFields.of(LazyFrame(*found))
                for key in sostream.SO_KEYS:
                    key = key.decode("ascii")
                    self.assertEqual(key in fields, key in whole)
                    blob = fields.blob(key)
                    self.assertEqual(None if blob is None else bytes(blob),
                                     whole.blob(key))
                    self.assertEqual(_outcome(lambda: fields[key]),
                                     _outcome(lambda: whole[key]))
                spt3g_frame = load_frame(raw)
                for read in (sostream.frame_num, sostream.session_id):
                    self.assertEqual(read(fields), read(spt3g_frame))
        # A read of it three times over, checked at once; a bad CRC in the
        # third.
        found = wire.FrameSplitter().split(raw * 3)
        received, error = frames.receive_all(found)
        self.assertIsNone(error)
        self.assertEqual([(f.raw, f.code) for f in received],
                         [(raw, chr(raw[9]))] * 3)
        bad = raw[:-4] + (recorded ^ 1).to_bytes(4, "little")
        received, error = frames.receive_all(
            wire.FrameSplitter().split(raw * 2 + bad))
        self.assertEqual([f.raw for f in received], [raw] * 2)
        self.assertIsInstance(error, CorruptFrame)

    def test_every_kind_of_frame(self):
        from tests.test_rules import _POOL
        for raw in _POOL + [SMALL, LARGE]:
            self.check(raw)

    def test_numbers_of_every_kind(self):
        for key in ("frame_num", "session_id"):
            for value in (0, 7, -1, 1 << 40, 10 ** 10, 1700000000, True,
                          "12", 2.5, None):
                scan = F.scan(1)
                if key in scan:
                    del scan[key]
                if value is not None:
                    scan[key] = value
                self.check(F.raw(scan))

    def test_a_blob_the_size_of_a_g3int_is_not_always_one(self):
        scan = F.raw(F.scan(1))
        for name in (b"G3Inx", b"G4Int"):
            raw = F.forged(scan, name)
            self.assertIsNone(sostream.frame_num(sostream.FrameFields(raw)))
            self.check(raw)

    def test_a_bad_crc_in_a_repeated_layout(self):
        bad = flipped(SMALL, len(SMALL) - 10, 2)
        found = wire.FrameSplitter().split(SMALL + SMALL + bad + SMALL)
        self.assertEqual(len({id(spans) for _, _, spans in found}), 1)
        received, error = frames.receive_all(found)
        self.assertEqual([f.raw for f in received], [SMALL, SMALL])
        self.assertEqual([f.code for f in received], ["S", "S"])
        self.assertIsInstance(error, CorruptFrame)
        self.assertIn("does not match", str(error))
        self.assertEqual(frames.receive_all(found[:2])[1], None)
