"""
Helpers shared by the benchmark scripts: the frames, /proc readings, and the
bytes on disk under a data directory.

Nothing here imports tsagg: the sender and the C++ receiver must not pay for
it, and the in-process runner imports it itself.
"""

import json
import os
import statistics

#: Frame cases: name -> (channels, samples, numpy dtype name).
FRAME_CASES = {
    "small": (10, 120, "float64"),       # ~10 kB: per-frame overhead
    "1.6MB": (1000, 200, "float64"),     # SMuRF-like Scan frame
    "13MB": (4000, 400, "float64"),      # a large one
    "so": (1000, 200, "int32"),          # SO rate: 1000 ch x 200 Hz, 1 s
}

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
STREAM_ID = "bench"
SESSION_ID = 1764912345

_TICK = os.sysconf("SC_CLK_TCK")
_NAMES = {}


def scan_frame(case, frame_num=2, session_id=SESSION_ID, seed=0,
               start_s=0.0, data=None):
    """
    An SO-like Scan frame of the given case (spt3g G3Frame).
    """
    import numpy as np
    from spt3g import core

    channels, samples, dtype = FRAME_CASES[case]
    if channels not in _NAMES:
        _NAMES[channels] = core.G3VectorString(
            ["r%04d" % i for i in range(channels)])
    if data is None:
        rng = np.random.default_rng(seed)
        if dtype == "float64":
            data = rng.standard_normal((channels, samples))
        else:
            data = rng.integers(-2 ** 20, 2 ** 20, size=(channels, samples),
                                dtype=np.int32)
    sec = core.G3Units.s
    start = core.G3Time(int(start_s * sec))
    stop = core.G3Time(int((start_s + 1.0) * sec))
    frame = core.G3Frame(core.G3FrameType.Scan)
    frame["data"] = core.G3TimestreamMap(_NAMES[channels], data, start, stop)
    frame["sostream_id"] = STREAM_ID
    frame["sostream_version"] = 2
    frame["session_id"] = session_id
    frame["frame_num"] = frame_num
    frame["time"] = start
    return frame


def scan_bytes(case):
    """
    The serialized bytes of the case's Scan frame.
    """
    return scan_frame(case)._cereal_dumps()


# -- /proc ---------------------------------------------------------------------

def cpu_seconds(pid):
    """
    User + system CPU seconds of a process (all its threads), or L{None}.
    """
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is the state (field 3); utime, stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


def minor_faults(pid):
    """
    Minor page faults of a process so far, or L{None}.
    """
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[7])


def proc_status_kb(pid, key):
    """
    A C{kB} value of /proc/PID/status (e.g. C{VmHWM}), or L{None}.
    """
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def self_cpu_seconds():
    t = os.times()
    return t.user + t.system


# -- disk --------------------------------------------------------------------

def bytes_on_disk(root):
    """
    Total size of the regular files under C{root}.
    """
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def warm_page_cache(directory, nbytes, chunk=4 << 20):
    """
    Write C{nbytes} to a scratch file under C{directory} and delete it.

    On this kind of VM, memory the guest has not touched lately is handed
    back to the host (virtio-balloon free page reporting, DAMON), and the
    first write into it runs at a fraction of the speed of a write into
    warm memory.  Warming the page cache right before each run gives every
    receiver the same start, whatever ran before it.
    """
    path = os.path.join(directory, ".warm")
    buf = bytes(chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        done = 0
        while done < nbytes:
            done += os.write(fd, buf)
    finally:
        os.close(fd)
        os.unlink(path)


def files_under(root):
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            found.append(os.path.join(dirpath, name))
    return sorted(found)


# -- numbers -------------------------------------------------------------------

def percentile(values, q):
    """
    The C{q}-th percentile (0..100) of C{values}, nearest rank; L{None} if
    empty.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def lag_summary(lags_s):
    """
    p50/p99/max of lateness samples in seconds, as milliseconds.
    """
    if not lags_s:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(lags_s),
            "p50_ms": 1e3 * statistics.median(lags_s),
            "p99_ms": 1e3 * percentile(lags_s, 99),
            "max_ms": 1e3 * max(lags_s)}


def emit(obj):
    """
    Print one JSON line on stdout for the driver and flush it.
    """
    print(json.dumps(obj), flush=True)
