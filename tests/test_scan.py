"""
Tests for L{tsagg.scan}: the prefix of whole, valid frames of a file, and
what is wrong after it.
"""

import os

from twisted.trial import unittest

from tsagg import scan, wire
from tsagg.frames import core

from tests import frames as F


def flip_blob_byte(raw):
    """
    C{raw} with one byte of its last blob flipped: its layout intact, its
    CRC wrong.
    """
    key, blob = wire.frame_entries(raw)[-1]
    at = len(raw) - 4 - len(blob) // 2
    mutated = bytearray(raw)
    mutated[at] ^= 0xFF
    return bytes(mutated)


class ScanFileTests(unittest.TestCase):

    def setUp(self):
        # The last Scan frame is large enough to span reads of small chunks.
        self.frames = F.acquisition(scans=1) + [
            F.raw(F.scan(9, channels=50, samples=400))]
        self.whole = b"".join(self.frames)

    def write(self, data):
        path = self.mktemp() + ".g3"
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_clean_file_is_good_to_its_end(self):
        path = self.write(self.whole)
        found = scan.scan_file(path)
        self.assertEqual(
            (found.size, found.good_bytes, found.frames, found.problem,
             found.problem_kind),
            (len(self.whole), len(self.whole), 4, None, None))
        self.assertEqual(found.types, {"O": 1, "W": 1, "S": 2})
        self.assertEqual(found.first_types, "OWSS")
        self.assertFalse(found.scan_before_metadata)

    def test_spt3g_reads_every_frame_of_a_file_without_problem(self):
        path = self.write(self.whole)
        found = scan.scan_file(path)
        self.assertIsNone(found.problem)
        self.assertEqual(len(list(core.G3File(path))), found.frames)

    def test_chunk_size_does_not_change_the_result(self):
        path = self.write(self.whole)

        def result(found):
            return (found.size, found.good_bytes, found.frames, found.types,
                    found.first_types, found.problem)
        expected = result(scan.scan_file(path))
        self.assertEqual(expected[:3], (len(self.whole),) * 2 + (4,))
        for chunk_size in (1, 7, 1000, 4096):
            self.assertEqual(
                result(scan.scan_file(path, chunk_size=chunk_size)),
                expected, "chunk_size %d" % chunk_size)

    def test_torn_tail_good_bytes_are_the_whole_frames_before_it(self):
        last = self.frames[-1]
        torn = self.whole[:-(len(last) // 2)]
        path = self.write(torn)
        found = scan.scan_file(path, chunk_size=1000)
        before = len(self.whole) - len(last)
        self.assertEqual((found.size, found.good_bytes, found.frames),
                         (len(torn), before, 3))
        self.assertEqual(found.problem_kind, scan.TORN)
        self.assertEqual(
            found.problem,
            "torn tail: %d bytes of an incomplete frame at offset %d"
            % (len(torn) - before, before))

    def test_torn_inside_a_header(self):
        torn = self.whole + self.frames[0][:5]
        found = scan.scan_file(self.write(torn))
        self.assertEqual((found.good_bytes, found.problem_kind),
                         (len(self.whole), scan.TORN))

    def test_truncated_to_whole_frames_length_spt3g_reads_it_all(self):
        path = self.write(self.whole[:-100])
        length = scan.whole_frames_length(path)
        self.assertEqual(length, len(self.whole) - len(self.frames[-1]))
        os.truncate(path, length)
        self.assertIsNone(scan.scan_file(path).problem)
        self.assertEqual(len(list(core.G3File(path))), 3)

    def test_whole_frames_length_of_a_clean_file_is_its_size(self):
        path = self.write(self.whole)
        self.assertEqual(scan.whole_frames_length(path), len(self.whole))

    def test_crc_mismatch_ends_the_good_prefix(self):
        frames = list(self.frames)
        frames[2] = flip_blob_byte(frames[2])
        data = b"".join(frames)
        path = self.write(data)
        found = scan.scan_file(path)
        at = len(frames[0]) + len(frames[1])
        self.assertEqual((found.size, found.good_bytes, found.frames),
                         (len(data), at, 2))
        self.assertEqual(found.problem_kind, scan.CORRUPT)
        self.assertTrue(found.problem.startswith(
            "corrupt frame at offset %d: Recorded CRC" % at), found.problem)
        self.assertEqual(scan.whole_frames_length(path), at)

    def test_crc_mismatch_in_a_frame_across_reads(self):
        frames = list(self.frames)
        frames[-1] = flip_blob_byte(frames[-1])
        found = scan.scan_file(self.write(b"".join(frames)), chunk_size=1000)
        self.assertEqual(
            (found.good_bytes, found.problem_kind),
            (len(self.whole) - len(frames[-1]), scan.CORRUPT))

    def test_without_crc_check_only_the_layout_counts(self):
        frames = list(self.frames)
        frames[2] = flip_blob_byte(frames[2])
        data = b"".join(frames)
        found = scan.scan_file(self.write(data), check_crc=False)
        self.assertEqual((found.good_bytes, found.frames, found.problem),
                         (len(data), 4, None))

    def test_bad_layout_is_corrupt(self):
        data = self.whole + b"\0" * 100
        found = scan.scan_file(self.write(data))
        self.assertEqual((found.good_bytes, found.frames, found.problem_kind),
                         (len(self.whole), 4, scan.CORRUPT))
        self.assertEqual(
            found.problem, "corrupt frame at offset %d: endianness flag is "
            "0x00, not 0x01" % len(self.whole))

    def test_frame_over_the_size_limit_is_corrupt(self):
        found = scan.scan_file(self.write(self.whole),
                               max_frame_size=len(self.frames[-1]) - 1)
        self.assertEqual((found.frames, found.problem_kind), (3, scan.CORRUPT))
        self.assertIn("exceeds the limit", found.problem)

    def test_empty_file_has_no_problem(self):
        found = scan.scan_file(self.write(b""))
        self.assertEqual((found.size, found.good_bytes, found.frames,
                          found.problem), (0, 0, 0, None))

    def test_missing_file_raises(self):
        self.assertRaises(OSError, scan.scan_file, self.mktemp())


class MetadataFirstTests(unittest.TestCase):
    """
    C{scan_before_metadata}: does a Scan frame come before any frame that is
    neither Scan nor Timepoint?
    """

    def scanned(self, frames):
        found = scan.FileScan()
        found.feed(b"".join(F.raw(f) for f in frames))
        return found.finish()

    def timepoint(self):
        return core.G3Frame(core.G3FrameType.Timepoint)

    def test_metadata_then_scan(self):
        self.assertFalse(self.scanned(
            [F.observation(), F.scan(1)]).scan_before_metadata)

    def test_scan_first(self):
        self.assertTrue(self.scanned(
            [F.scan(1), F.observation()]).scan_before_metadata)

    def test_timepoint_is_not_metadata(self):
        self.assertTrue(self.scanned(
            [self.timepoint(), F.scan(1), F.observation()]
        ).scan_before_metadata)

    def test_timepoint_then_metadata_then_scan(self):
        self.assertFalse(self.scanned(
            [self.timepoint(), F.wiring(), F.scan(1)]).scan_before_metadata)

    def test_no_scan_at_all(self):
        self.assertFalse(self.scanned(
            [self.timepoint(), F.observation()]).scan_before_metadata)

    def test_first_types_keeps_eight(self):
        found = self.scanned([F.observation()] + [F.scan(i) for i in range(9)])
        self.assertEqual(found.first_types, "OSSSSSSS")


class FileScanTests(unittest.TestCase):
    """
    L{scan.FileScan} is fed bytes, with no I/O.
    """

    def test_bytes_after_a_problem_change_nothing_but_the_size(self):
        frames = F.acquisition(scans=1)
        found = scan.FileScan()
        found.feed(flip_blob_byte(frames[0]))
        self.assertTrue(found.done)
        found.feed(b"".join(frames))
        found.finish()
        self.assertEqual((found.good_bytes, found.frames, found.problem_kind),
                         (0, 0, scan.CORRUPT))
        self.assertEqual(found.size,
                         len(frames[0]) + len(b"".join(frames)))

    def test_finish_with_the_size_of_what_was_not_fed(self):
        raw = F.acquisition(scans=1)[0]
        found = scan.FileScan()
        found.feed(raw)
        found.finish(len(raw) + 10)
        self.assertEqual((found.size, found.good_bytes, found.problem_kind),
                         (len(raw) + 10, len(raw), scan.TORN))
