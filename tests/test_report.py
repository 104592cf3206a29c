"""
Tests for L{tsagg.report}, the C{tsagg-ls} command.
"""

import io
import json
import os
import subprocess
import sys

from twisted.trial import unittest

from tsagg import report

from tests import frames as F
from tests.test_scan import flip_blob_byte
from tests.util import repo_env

GOOD = "17000/crate1slot2/1700000000_000.g3"
GOOD_TOO = "17000/crate1slot2/1700000000_001.g3"
TORN = "17000/crate1slot2/1700000100_000.g3"
CORRUPT = "17000/crate1slot2/1700000200_000.g3"
SCAN_FIRST = "17000/crate1slot2/1700000300_000.g3"


class TsaggLsTests(unittest.TestCase):

    def setUp(self):
        self.data_dir = self.mktemp()
        os.mkdir(self.data_dir)
        self.frames = F.acquisition(scans=3)
        self.whole = b"".join(self.frames)

    def put(self, rel, data):
        path = os.path.join(self.data_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def clean_archive(self):
        self.put(GOOD, self.whole)
        self.put(GOOD_TOO, b"".join(self.frames[:2]))

    def torn(self):
        """
        The acquisition with its last frame cut in the middle.
        """
        return self.whole[:-(len(self.frames[-1]) // 2)]

    def ls(self, *argv):
        """
        Run C{tsagg-ls} in this process.

        @return: Its exit status, stdout and stderr.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = report.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def run_json(self, *argv):
        status, out, err = self.ls("--json", *argv)
        return status, json.loads(out)

    # -- the listing --------------------------------------------------------

    def test_lists_each_file_relative_with_size_frames_and_types(self):
        self.clean_archive()
        status, out, err = self.ls(self.data_dir)
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(
            lines[0].split(),
            [GOOD, str(len(self.whole)), "bytes", "5", "frames",
             "O:1", "S:3", "W:1"])
        self.assertEqual(lines[1].split()[:5],
                         [GOOD_TOO, str(len(self.frames[0])
                                        + len(self.frames[1])),
                          "bytes", "2", "frames"])
        self.assertEqual(
            lines[2], "2 files, 7 frames (O:2 S:3 W:2), %d bytes"
            % (len(self.whole) + len(self.frames[0]) + len(self.frames[1])))

    def test_only_g3_files_sorted(self):
        self.put(GOOD_TOO, self.whole)
        self.put(GOOD, self.whole)
        self.put("17000/crate1slot2/notes.txt", b"not a frame")
        self.assertEqual(
            report.recorded_files(self.data_dir),
            [os.path.join(self.data_dir, p) for p in (GOOD, GOOD_TOO)])

    def test_empty_data_dir(self):
        status, out, err = self.ls(self.data_dir)
        self.assertEqual((status, out, err),
                         (0, "0 files, 0 frames (), 0 bytes\n", ""))

    def test_torn_file_is_listed_with_its_tear(self):
        self.put(TORN, self.torn())
        status, out, err = self.ls(self.data_dir)
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertIn(" 4 frames ", lines[0])
        good = len(self.whole) - len(self.frames[-1])
        self.assertEqual(
            lines[1].strip(),
            "torn tail: %d bytes of an incomplete frame at offset %d"
            % (len(self.torn()) - good, good))

    def test_listing_alone_does_not_check_crcs(self):
        frames = list(self.frames)
        frames[3] = flip_blob_byte(frames[3])
        self.put(CORRUPT, b"".join(frames))
        status, out, err = self.ls(self.data_dir)
        self.assertEqual(status, 0)
        self.assertEqual(len(out.splitlines()), 2)

    # -- --check ------------------------------------------------------------

    def test_check_of_a_clean_archive_exits_0(self):
        self.clean_archive()
        status, out, err = self.ls("--check", self.data_dir)
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.splitlines()[-1].startswith("check: clean"), out)

    def test_check_of_a_torn_file_exits_1(self):
        self.clean_archive()
        self.put(TORN, self.torn())
        status, out, err = self.ls("--check", self.data_dir)
        self.assertEqual(status, 1)
        self.assertIn("torn tail: ", out)
        self.assertEqual(out.splitlines()[-1],
                         "check: 1 problem (in 1 of 3 files)")

    def test_check_finds_a_crc_mismatch(self):
        frames = list(self.frames)
        frames[3] = flip_blob_byte(frames[3])
        self.put(CORRUPT, b"".join(frames))
        status, out, err = self.ls("--check", self.data_dir)
        self.assertEqual(status, 1)
        at = len(frames[0]) + len(frames[1]) + len(frames[2])
        self.assertIn(
            "    corrupt frame at offset %d: Recorded CRC" % at, out)
        self.assertIn(" 3 frames ", out.splitlines()[0])

    def test_check_finds_a_file_that_starts_with_a_scan_frame(self):
        self.put(SCAN_FIRST, b"".join(self.frames[2:] + self.frames[:2]))
        status, out, err = self.ls("--check", self.data_dir)
        self.assertEqual(status, 1)
        self.assertIn("    no metadata at its top: a Scan frame comes before "
                      "any metadata frame", out)

    def test_check_finds_a_file_it_cannot_read(self):
        os.makedirs(os.path.join(self.data_dir, "17000"))
        os.symlink("nowhere", os.path.join(self.data_dir, "17000/gone.g3"))
        status, out, err = self.ls("--check", self.data_dir)
        self.assertEqual(status, 1)
        self.assertIn("    cannot read: No such file or directory", out)

    def test_check_finds_a_directory_it_cannot_list(self):
        self.clean_archive()
        hidden = os.path.join(self.data_dir, "17001")
        os.mkdir(hidden)
        scandir = os.scandir

        def refusing(path):
            # What listing a directory without permission gives, even to
            # root, who may list any.
            if path == hidden:
                raise PermissionError(13, "Permission denied", path)
            return scandir(path)
        self.patch(os, "scandir", refusing)
        status, out, err = self.ls("--check", self.data_dir)
        self.assertEqual(status, 1)
        self.assertIn("\ncannot list 17001: Permission denied\n", out)

    # -- --json -------------------------------------------------------------

    def test_json_gives_files_fields_problems_and_totals(self):
        self.clean_archive()
        self.put(TORN, self.torn())
        self.put(SCAN_FIRST, b"".join(self.frames[2:] + self.frames[:2]))
        status, doc = self.run_json("--check", self.data_dir)
        self.assertEqual(status, 1)
        self.assertEqual(doc["data_dir"], self.data_dir)
        self.assertTrue(doc["crc_checked"])
        files = {f["path"]: f for f in doc["files"]}
        self.assertEqual(sorted(files), sorted([GOOD, GOOD_TOO, TORN,
                                                SCAN_FIRST]))
        self.assertEqual(files[GOOD], {
            "path": GOOD, "size": len(self.whole),
            "good_bytes": len(self.whole), "frames": 5,
            "types": {"O": 1, "S": 3, "W": 1}, "first_types": "OWSSS",
            "problems": []})
        good = len(self.whole) - len(self.frames[-1])
        [torn] = files[TORN]["problems"]
        self.assertEqual((torn["kind"], torn["offset"]),
                         (report.TORN, good))
        self.assertEqual(files[TORN]["good_bytes"], good)
        [headless] = files[SCAN_FIRST]["problems"]
        self.assertEqual(headless["kind"], report.NO_METADATA)
        self.assertEqual(doc["errors"], [])
        self.assertEqual(doc["totals"], {
            "files": 4, "frames": 5 + 2 + 4 + 5,
            "types": {"O": 4, "S": 8, "W": 4},
            "bytes": sum(f["size"] for f in files.values()),
            "problems": 2, "files_with_problems": 2})

    def test_json_without_check(self):
        self.clean_archive()
        status, doc = self.run_json(self.data_dir)
        self.assertEqual(status, 0)
        self.assertFalse(doc["crc_checked"])
        self.assertEqual(doc["totals"]["files"], 2)

    # -- the command line ---------------------------------------------------

    def test_help_exits_0_with_usage(self):
        status, out, err = self.ls("--help")
        self.assertEqual(status, 0)
        self.assertTrue(
            out.startswith("usage: tsagg-ls [-h] [--check] [--json] DATA_DIR"),
            out)
        self.assertIn("--check", out)

    def test_missing_data_dir_exits_2_with_one_line(self):
        missing = self.mktemp()
        status, out, err = self.ls(missing)
        self.assertEqual(
            (status, out, err),
            (2, "", "tsagg-ls: cannot list %s: No such file or directory\n"
             % missing))

    def test_data_dir_that_is_a_file_exits_2(self):
        path = self.put(GOOD, self.whole)
        status, out, err = self.ls(path)
        self.assertEqual(
            (status, out, err),
            (2, "", "tsagg-ls: cannot list %s: Not a directory\n" % path))

    def test_no_data_dir_is_a_usage_error(self):
        status, out, err = self.ls()
        self.assertEqual((status, out), (2, ""))
        self.assertIn("the following arguments are required: DATA_DIR", err)


class EntryPointTests(unittest.TestCase):

    def test_console_script_exit_status_and_output(self):
        """
        Run as the console script runs it: C{sys.exit(main())} in a process
        of its own.
        """
        data_dir = self.mktemp()
        os.makedirs(os.path.join(data_dir, "17000"))
        whole = b"".join(F.acquisition(scans=2))
        with open(os.path.join(data_dir, "17000", "a_000.g3"), "wb") as f:
            f.write(whole[:-10])
        result = subprocess.run(
            [sys.executable, "-c",
             "import sys; from tsagg.report import main; sys.exit(main())",
             "--check", data_dir],
            env=repo_env(), capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stderr), (1, ""))
        self.assertIn("17000/a_000.g3", result.stdout)
        self.assertIn("torn tail: ", result.stdout)
