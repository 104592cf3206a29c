"""
What the fault tests measure, and the record of it that
L{tests.fault_report} turns into the table of ``docs/faults.rst``.

Each fault test calls L{record} once with what it tried and what it found.
When C{TSAGG_FAULT_REPORT} names a file, the record is appended to it as a
line of JSON; otherwise recording does nothing.
"""

import json
import os

__all__ = ["record", "snapshot", "bytes_outside", "PeakRSS", "vm_hwm"]

REPORT_ENV = "TSAGG_FAULT_REPORT"


def record(fault, tried, kept, expected, torn=0, outside=0,
           peak_bytes=None, peak_kind="", note=""):
    """
    Note the outcome of one fault scenario.

    @param fault: What was done, in a few words.
    @param tried: How many times it was done.
    @param kept: Frames on disk that should be there.
    @param expected: Frames that arrived whole (that should be on disk).
    @param torn: Files that do not end at a frame boundary or do not read.
    @param outside: Bytes written outside the data directory.
    @param peak_bytes: Peak memory of the recorder in the scenario.
    @param peak_kind: What C{peak_bytes} measures.
    """
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    entry = dict(fault=fault, tried=tried, kept=kept, expected=expected,
                 torn=torn, outside=outside, peak_bytes=peak_bytes,
                 peak_kind=peak_kind, note=note)
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def snapshot(root):
    """
    C{{path: size}} of every file under C{root}.
    """
    found = {}
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            try:
                found[path] = os.lstat(path).st_size
            except FileNotFoundError:
                pass
    return found


def bytes_outside(root, data_dir, before):
    """
    Bytes of files under C{root} but not under C{data_dir} that are new or
    grew since the snapshot C{before}.
    """
    data_dir = os.path.join(os.path.abspath(data_dir), "")
    total = 0
    for path, size in snapshot(root).items():
        if os.path.abspath(path).startswith(data_dir):
            continue
        total += max(0, size - before.get(path, 0)) if path in before else size
    return total


class PeakRSS:
    """
    How far the resident set of this process grew at its peak inside a
    C{with} block, above its size when the block began (Linux: the peak is
    reset through C{/proc/self/clear_refs}).

    @ivar peak: Bytes once the block has ended, or L{None} where the
        kernel cannot reset the peak.
    """

    def __enter__(self):
        self.peak = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._base = _status_field(os.getpid(), "VmRSS")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc):
        if self._base is not None:
            self.peak = max(0, _status_field(os.getpid(), "VmHWM")
                            - self._base)
        return False


def _status_field(pid, name):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise OSError("no %s for process %d" % (name, pid))


def vm_hwm(pid):
    """
    The peak resident set size of a live process, in bytes (Linux).
    """
    return _status_field(pid, "VmHWM")
