"""
Tests for L{tsagg.wire}.
"""

import struct

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from tsagg import wire

from tests import frames as F


def _split(splitter, data, sizes):
    """
    Feed C{data} in chunks of the given sizes (cycling), collect frames.
    """
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.extend(splitter.feed(data[pos:pos + n]))
        pos += n
        i += 1
    return out


class RealFramesTests(unittest.TestCase):
    """
    The splitter finds the frames spt3g serialized.
    """

    def setUp(self):
        self.frames = [F.raw(F.observation()), F.raw(F.wiring())]
        self.frames += [F.raw(F.scan(i, channels=8, samples=50))
                        for i in range(5)]
        self.frames += [F.raw(F.flow(F.END)), F.raw(F.pipeline_info())]
        self.stream = b"".join(self.frames)

    def test_one_read(self):
        self.assertEqual(wire.FrameSplitter().feed(self.stream), self.frames)

    def test_split_gives_the_entries_it_found(self):
        large = F.raw(F.scan(9, channels=100, samples=200))
        self.assertGreater(len(large), 1 << 16)
        frames = self.frames + [large]
        found = wire.FrameSplitter().split(b"".join(frames))
        self.assertEqual([wire.join(pieces) for pieces, _, _ in found],
                         frames)
        for (pieces, size, spans), raw in zip(found, frames):
            self.assertEqual(size, len(raw))
            self.assertEqual(
                [(raw[k:b], raw[b + 8:e]) for k, b, e in spans],
                [(bytes(k), bytes(b)) for k, b in wire.frame_entries(raw)])

    def test_frames_across_reads_come_with_their_entries(self):
        for cut in range(1, len(self.stream)):
            splitter = wire.FrameSplitter()
            found = (splitter.split(self.stream[:cut])
                     + splitter.split(self.stream[cut:]))
            self.assertEqual([wire.join(p) for p, _, _ in found],
                             self.frames)
            for (pieces, size, spans), raw in zip(found, self.frames):
                self.assertEqual(size, sum(len(p) for p in pieces))
                self.assertEqual(
                    [(raw[k:b], raw[b + 8:e]) for k, b, e in spans],
                    [(bytes(k), bytes(b))
                     for k, b in wire.frame_entries(raw)])

    def test_pieces_are_views_of_the_reads(self):
        splitter = wire.FrameSplitter()
        first, rest = self.stream[:100], self.stream[100:]
        self.assertEqual(splitter.split(first), [])
        found = splitter.split(rest)
        self.assertEqual([p.obj for p in found[0][0]], [first, rest])
        self.assertIs(found[1][0][0].obj, rest)

    def test_one_byte_at_a_time(self):
        self.assertEqual(_split(wire.FrameSplitter(), self.stream, [1]),
                         self.frames)

    def test_irregular_chunks(self):
        self.assertEqual(
            _split(wire.FrameSplitter(), self.stream, [7, 1, 300, 13, 4096]),
            self.frames)

    def test_frames_are_bytes(self):
        for frame in wire.FrameSplitter().feed(self.stream):
            self.assertIsInstance(frame, bytes)

    def test_partial_frame_is_held_not_returned(self):
        splitter = wire.FrameSplitter()
        first = len(self.frames[0])
        self.assertEqual(splitter.feed(self.stream[:first + 10]),
                         [self.frames[0]])
        self.assertEqual(splitter.buffered, 10)

    def test_offset_counts_whole_frames(self):
        splitter = wire.FrameSplitter()
        splitter.feed(self.stream[:-1])
        self.assertEqual(splitter.offset,
                         len(self.stream) - len(self.frames[-1]))

    def test_bytearray_input_is_copied(self):
        splitter = wire.FrameSplitter()
        data = bytearray(self.stream[:20])
        splitter.feed(data)
        data[:] = b"\xff" * 20
        self.assertEqual(splitter.feed(self.stream[20:]), self.frames)

    def test_empty_frame(self):
        frame = F.raw(F.flow(F.ALIVE))
        empty = F.handmade([], ftype=b"N")
        self.assertEqual(wire.FrameSplitter().feed(empty + frame),
                         [empty, frame])

    def test_empty_key_and_blob(self):
        frame = F.handmade([(b"", b""), (b"k", b"")])
        self.assertEqual(_split(wire.FrameSplitter(), frame * 2, [1]),
                         [frame, frame])


class LimitTests(unittest.TestCase):
    """
    Invalid or oversized frames end the stream with a typed error, and the
    frames before them are kept.
    """

    good = F.handmade([(b"a", b"xyz")])

    def assertStreamError(self, data, error, chunks=(1 << 20,), **limits):
        splitter = wire.FrameSplitter(**limits)
        frames = _split(splitter, self.good + data, list(chunks))
        self.assertEqual(frames, [self.good])
        self.assertIsInstance(splitter.error, error)
        self.assertEqual(splitter.error.offset, len(self.good))
        return splitter

    def test_bad_endianness_flag(self):
        self.assertStreamError(F.handmade([], flag=0), wire.BadEndianness)

    def test_bad_class_version(self):
        self.assertStreamError(F.handmade([], version=2),
                               wire.BadClassVersion)

    def test_unknown_frame_type(self):
        self.assertStreamError(F.handmade([], ftype=b"q"), wire.BadFrameType)

    def test_too_many_entries(self):
        self.assertStreamError(F.handmade([], count=0xFFFFFFFF),
                               wire.TooManyEntries)

    def test_key_too_long(self):
        header = F.handmade([], count=1)[:13]
        data = header + struct.pack("<Q", 2 ** 64 - 1)
        self.assertStreamError(data, wire.KeyTooLong)
        self.assertStreamError(data, wire.KeyTooLong, chunks=[1])

    def test_blob_too_long(self):
        header = F.handmade([], count=1)[:13]
        data = header + struct.pack("<Q", 1) + b"k" + struct.pack(
            "<Q", 2 ** 64 - 1)
        self.assertStreamError(data, wire.FrameTooLarge)
        self.assertStreamError(data, wire.FrameTooLarge, chunks=[1])

    def test_frame_over_limit_as_bytes_arrive(self):
        big = F.handmade([(b"k", b"x" * 5000)])
        splitter = self.assertStreamError(big, wire.FrameTooLarge,
                                          chunks=[100], max_frame_size=1000)
        self.assertEqual(splitter.buffered, 0)

    def test_frame_at_limit_is_accepted(self):
        frame = F.handmade([(b"k", b"x" * 100)])
        splitter = wire.FrameSplitter(max_frame_size=len(frame))
        self.assertEqual(_split(splitter, frame, [1]), [frame])
        self.assertEqual(splitter.feed(frame), [frame])

    def test_many_entries_over_limit_by_size(self):
        frame = F.handmade([(b"k", b"")] * 100)
        self.assertStreamError(frame, wire.FrameTooLarge, chunks=[7],
                               max_frame_size=200)

    def test_nothing_after_an_error(self):
        splitter = wire.FrameSplitter()
        splitter.feed(F.handmade([], flag=9))
        self.assertEqual(splitter.feed(self.good), [])

    def test_huge_declared_lengths_allocate_nothing(self):
        """
        A blob that declares 1 GiB, followed by a trickle of bytes, holds
        only the bytes that came.
        """
        header = F.handmade([], count=1)[:13]
        data = header + struct.pack("<Q", 1) + b"k" + struct.pack(
            "<Q", (1 << 30) - 100)
        splitter = wire.FrameSplitter()
        splitter.feed(data)
        splitter.feed(b"x" * 1000)
        self.assertEqual(splitter.buffered, len(data) + 1000)
        self.assertIsNone(splitter.error)


_entry = st.tuples(st.binary(max_size=20), st.binary(max_size=300))
_frame = st.builds(lambda entries, t: F.handmade(entries, ftype=t),
                   st.lists(_entry, max_size=6),
                   st.sampled_from([b"S", b"O", b"W", b"N", b"T"]))


class PropertyTests(unittest.TestCase):
    """
    Whatever the frames and the chunking, the same frames come out.
    """

    @settings(max_examples=300, deadline=None)
    @given(st.lists(_frame, max_size=12),
           st.lists(st.integers(min_value=1, max_value=700), min_size=1,
                    max_size=20))
    def test_any_chunking_yields_the_frames(self, frames, sizes):
        stream = b"".join(frames)
        splitter = wire.FrameSplitter()
        self.assertEqual(_split(splitter, stream, sizes), frames)
        self.assertEqual(splitter.buffered, 0)
        self.assertIsNone(splitter.error)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(_frame, min_size=1, max_size=6), st.data())
    def test_any_prefix_yields_the_whole_frames_in_it(self, frames, data):
        stream = b"".join(frames)
        cut = data.draw(st.integers(min_value=0, max_value=len(stream)))
        whole = []
        total = 0
        for frame in frames:
            if total + len(frame) > cut:
                break
            whole.append(frame)
            total += len(frame)
        splitter = wire.FrameSplitter()
        self.assertEqual(splitter.feed(stream[:cut]), whole)
        self.assertEqual(splitter.buffered, cut - total)


class LinearityTests(unittest.TestCase):
    """
    Work is linear in the bytes received: a multi-megabyte frame in small
    reads keeps one view per read, and joins them once.
    """

    def test_large_frame_in_small_reads(self):
        frame = F.handmade([(b"data", b"\0" * (8 << 20))])
        splitter = wire.FrameSplitter()
        chunk = 1 << 12
        out = []
        for i in range(0, len(frame), chunk):
            out.extend(splitter.feed(frame[i:i + chunk]))
        self.assertEqual(out, [frame])
        # One view per read, no growing buffer that is copied on each read.
        self.assertEqual(splitter._pieces, [])

    def test_parts_per_read(self):
        frame = F.handmade([(b"data", b"\0" * 100000)])
        splitter = wire.FrameSplitter()
        for i in range(0, 50000, 1000):
            splitter.feed(frame[i:i + 1000])
        self.assertEqual(len(splitter._pieces), 50)


class LayoutTests(unittest.TestCase):
    """
    A frame that repeats the layout of the one before it is cut without a
    walk, to the same result; any other is walked.
    """

    def test_frames_of_one_layout_share_their_spans(self):
        frames = [F.raw(F.scan(n, seed=1)) for n in (2, 3, 4)]
        found = wire.FrameSplitter().split(b"".join(frames))
        self.assertEqual([wire.join(p) for p, _, _ in found], frames)
        self.assertIs(found[1][2], found[0][2])
        self.assertIs(found[2][2], found[0][2])

    def test_same_size_other_entries_are_walked(self):
        first = F.handmade([(b"a", b"xyz"), (b"frame_num", b"12345678")])
        for other in (F.handmade([(b"abc", b"x"), (b"frame_num", b"1234567"
                                                   b"8")]),
                      F.handmade([(b"a", b"xyz"), (b"xrame_num", b"1234567"
                                                   b"8")])):
            self.assertEqual(len(other), len(first))
            found = wire.FrameSplitter().split(first + other)
            raw = wire.join(found[1][0])
            self.assertEqual(raw, other)
            self.assertEqual(
                [(raw[k:b], raw[b + 8:e]) for k, b, e in found[1][2]],
                [(bytes(k), bytes(b)) for k, b in wire.frame_entries(other)])

    def test_a_layout_break_is_still_an_error(self):
        good = F.handmade([(b"k", b"x" * 10)])
        bad = bytearray(good)
        bad[0] = 9
        splitter = wire.FrameSplitter()
        self.assertEqual(splitter.feed(good + good + bytes(bad)),
                         [good, good])
        self.assertIsInstance(splitter.error, wire.BadEndianness)


class OwedTests(unittest.TestCase):
    """
    L{wire.FrameSplitter.owed}: the bytes the frame in progress is sure to
    need before its next step; never more than are left of it.
    """

    def test_nothing_at_a_frame_boundary(self):
        splitter = wire.FrameSplitter()
        self.assertEqual(splitter.owed, 0)
        splitter.feed(F.raw(F.scan(1)))
        self.assertEqual(splitter.owed, 0)

    def test_the_rest_of_the_header(self):
        splitter = wire.FrameSplitter()
        splitter.feed(F.handmade([(b"k", b"v")])[:5])
        self.assertEqual(splitter.owed, 13 - 5)

    def test_the_rest_of_a_blob_and_the_next_length(self):
        frame = F.handmade([(b"data", b"\0" * 100000), (b"k", b"v")])
        splitter = wire.FrameSplitter()
        splitter.feed(frame[:1000])
        # The header, a key length and key, a blob length, the blob; then
        # the next key's length.
        blob_end = 13 + 8 + 4 + 8 + 100000
        self.assertEqual(splitter.owed, blob_end + 8 - 1000)

    def test_the_crc(self):
        frame = F.handmade([(b"data", b"\0" * 1000)])
        splitter = wire.FrameSplitter()
        splitter.feed(frame[:-3])
        self.assertEqual(splitter.owed, 3)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(_frame, min_size=1, max_size=6),
           st.lists(st.integers(min_value=1, max_value=700), min_size=1,
                    max_size=20))
    def test_never_more_than_the_frame_has_left(self, frames, sizes):
        ends = []
        total = 0
        for frame in frames:
            total += len(frame)
            ends.append(total)
        stream = b"".join(frames)
        splitter = wire.FrameSplitter()
        pos = 0
        i = 0
        while pos < len(stream):
            n = sizes[i % len(sizes)]
            splitter.feed(stream[pos:pos + n])
            pos = min(pos + n, len(stream))
            i += 1
            frame_end = next(e for e in ends + [len(stream)] if e >= pos)
            owed = splitter.owed
            self.assertLessEqual(owed, frame_end - pos)
            self.assertEqual(owed > 0, splitter.buffered > 0)
