"""
``tsagg-ls``: what was recorded under a data directory, and whether every
file is whole frames (with valid CRCs, under ``--check``) that start with
their metadata.

Files are read with L{tsagg.scan}, not spt3g, so a torn or corrupt file is
reported, not fatal, and no frame is deserialized.
"""

import argparse
import json
import os
import sys
from collections import Counter

from tsagg import scan

__all__ = ["recorded_files", "file_report", "archive_report", "format_text",
           "make_parser", "main", "TORN", "CORRUPT", "NO_METADATA",
           "UNREADABLE"]

#: C{kind} of a problem: a file that ends inside a frame.
TORN = scan.TORN
#: C{kind} of a problem: a frame whose layout or CRC is bad.
CORRUPT = scan.CORRUPT
#: C{kind} of a problem: a Scan frame before any metadata frame.
NO_METADATA = "no-metadata"
#: C{kind} of a problem: a file or directory that cannot be read.
UNREADABLE = "unreadable"


def recorded_files(data_dir, onerror=None):
    """
    The ``.g3`` files under C{data_dir}, sorted by path.

    @param onerror: Called with the L{OSError} of each directory that
        cannot be listed; by default such directories are skipped silently.
    """
    found = []
    for root, _dirs, files in os.walk(data_dir, onerror=onerror):
        found.extend(os.path.join(root, f) for f in files if f.endswith(".g3"))
    return sorted(found)


def _problem(kind, message, offset=None):
    return {"kind": kind, "offset": offset, "message": message}


def file_report(path, data_dir, check):
    """
    Scan one file and say what is wrong with it.

    @param data_dir: The directory C{path} is shown relative to.
    @param check: Check every frame's CRC, not only the layout.
    @return: A L{dict}: C{path} (relative to C{data_dir}), C{size},
        C{good_bytes}, C{frames}, C{types} (a L{dict} of counts by type
        code), C{first_types}, and C{problems}, a list of L{dict}s with
        C{kind} (L{TORN}, L{CORRUPT}, L{NO_METADATA} or L{UNREADABLE}),
        C{offset} in the file (or L{None}) and C{message}.
    """
    problems = []
    try:
        found = scan.scan_file(path, check_crc=check)
    except OSError as e:
        found = scan.FileScan(path, check)
        problems.append(_problem(UNREADABLE, "cannot read: %s"
                                 % (e.strerror or e,)))
    if found.problem is not None:
        problems.append(_problem(found.problem_kind, found.problem,
                                 found.good_bytes))
    if found.scan_before_metadata:
        problems.append(_problem(
            NO_METADATA, "no metadata at its top: a Scan frame comes before "
            "any metadata frame"))
    return {"path": os.path.relpath(path, data_dir), "size": found.size,
            "good_bytes": found.good_bytes, "frames": found.frames,
            "types": dict(sorted(found.types.items())),
            "first_types": found.first_types, "problems": problems}


def archive_report(data_dir, check):
    """
    Scan every file under C{data_dir}.

    @return: A L{dict}: C{data_dir}, C{crc_checked}, C{files} (each a
        L{file_report}), C{errors} (directories that could not be listed,
        as problems) and C{totals}: C{files}, C{frames}, C{types}, C{bytes},
        C{problems} and C{files_with_problems}.
    """
    errors = []

    def unlisted(e):
        where = os.path.relpath(e.filename, data_dir) if e.filename else "?"
        errors.append(_problem(UNREADABLE, "cannot list %s: %s"
                               % (where, e.strerror or e)))
    files = [file_report(p, data_dir, check)
             for p in recorded_files(data_dir, onerror=unlisted)]
    types = Counter()
    for f in files:
        types.update(f["types"])
    return {
        "data_dir": data_dir,
        "crc_checked": check,
        "files": files,
        "errors": errors,
        "totals": {
            "files": len(files),
            "frames": sum(f["frames"] for f in files),
            "types": dict(sorted(types.items())),
            "bytes": sum(f["size"] for f in files),
            "problems": len(errors) + sum(len(f["problems"]) for f in files),
            "files_with_problems": sum(1 for f in files if f["problems"]),
        },
    }


def _kinds(types):
    return " ".join("%s:%d" % kv for kv in sorted(types.items()))


def _plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def format_text(report):
    """
    The report as lines for an operator: one line per file (path, bytes,
    frames, counts by type), each problem indented under its file, then
    the totals and, after a check, its verdict.
    """
    files = report["files"]
    width = max([len(f["path"]) for f in files] + [0])
    lines = []
    for f in files:
        lines.append("%-*s %12d bytes %7d frames  %s"
                     % (width, f["path"], f["size"], f["frames"],
                        _kinds(f["types"])))
        lines.extend("    %s" % p["message"] for p in f["problems"])
    lines.extend(p["message"] for p in report["errors"])
    totals = report["totals"]
    lines.append("%s, %s (%s), %s" % (
        _plural(totals["files"], "file"), _plural(totals["frames"], "frame"),
        _kinds(totals["types"]), _plural(totals["bytes"], "byte")))
    if report["crc_checked"]:
        if totals["problems"]:
            lines.append("check: %s (in %d of %s)" % (
                _plural(totals["problems"], "problem"),
                totals["files_with_problems"],
                _plural(totals["files"], "file")))
        else:
            lines.append("check: clean: every frame whole with a valid CRC, "
                         "every file starting with metadata")
    return lines


def make_parser():
    """
    The command line of C{tsagg-ls}.

    @rtype: L{argparse.ArgumentParser}
    """
    parser = argparse.ArgumentParser(
        prog="tsagg-ls",
        description="List the .g3 files recorded under DATA_DIR (paths "
                    "relative to it, sizes, frames by type) and what is "
                    "wrong with any of them: a torn tail, a corrupt frame, "
                    "a Scan frame before any metadata frame, a file or "
                    "directory that cannot be read.")
    parser.add_argument(
        "--check", action="store_true",
        help="verify every frame's CRC too, not only its layout, and exit "
             "with status 1 if any problem is found")
    parser.add_argument(
        "--json", action="store_true",
        help="print one JSON document instead of the table")
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="the data directory of a recorder")
    return parser


def main(argv=None):
    """
    The C{tsagg-ls} command.

    @param argv: The arguments, C{sys.argv[1:]} by default.
    @return: The exit status: 0, 1 if C{--check} found a problem, 2 on a
        usage error or a data directory that cannot be listed (missing, not
        a directory, not readable).
    """
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        # --help, or a usage error argparse has already printed.
        return e.code
    try:
        os.listdir(args.data_dir)
    except OSError as e:
        print("tsagg-ls: cannot list %s: %s" % (args.data_dir, e.strerror),
              file=sys.stderr)
        return 2
    report = archive_report(args.data_dir, args.check)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in format_text(report):
            print(line)
    return 1 if args.check and report["totals"]["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
