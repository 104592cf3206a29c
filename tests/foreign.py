"""
Scan frames made in a child process under a chosen spt3g binding: so3g's
C{G3SuperTimestream} (which needs so3g's binding), or spt3g 1.0.2's
C{G3TimestreamMap}.  The two bindings cannot share a process, so a test
under one gets the other's frames as bytes, with the samples as that
binding reads them back.
"""

import os
import subprocess
import sys

import numpy as np
from twisted.trial.unittest import SkipTest

from tests.util import ROOT, repo_env

__all__ = ["scan_frames", "have_so3g"]

_CHILD = r'''
import sys
kind, out = sys.argv[1], sys.argv[2]
frames, channels, samples, rate, t0 = (int(sys.argv[3]), int(sys.argv[4]),
                                       int(sys.argv[5]), float(sys.argv[6]),
                                       float(sys.argv[7]))
if kind == "super":
    import so3g
from spt3g import core
import numpy as np

names = ["r%04d" % i for i in range(channels)]
tick = core.G3Units.s
rng = np.random.default_rng(7)
raws, datas, times = [], [], []
for k in range(frames):
    first = k * samples
    stamps = [int(round((t0 + (first + i) / rate) * tick))
              for i in range(samples)]
    data = rng.integers(-2 ** 20, 2 ** 20, size=(channels, samples),
                        dtype=np.int32)
    frame = core.G3Frame(core.G3FrameType.Scan)
    frame["frame_num"] = 2 + k
    if kind == "super":
        ts = so3g.G3SuperTimestream()
        ts.names = names
        ts.times = core.G3VectorTime([core.G3Time(t) for t in stamps])
        ts.data = np.ascontiguousarray(data)
        frame["data"] = ts
        raw = frame.__getstate__()[1]
        back = core.G3Frame()
        back.__setstate__(({}, raw))
        read = np.asarray(back["data"].data)
    else:
        frame["data"] = core.G3TimestreamMap(
            core.G3VectorString(names), data, core.G3Time(stamps[0]),
            core.G3Time(stamps[-1]))
        raw = frame._cereal_dumps()
        read = data
    raws.append(np.frombuffer(raw, dtype=np.uint8))
    datas.append(read)
    times.extend(stamps)
np.savez(out, data=np.concatenate(datas, axis=1), times=np.array(times),
         sizes=np.array([len(r) for r in raws]),
         raw=np.concatenate(raws))
'''

_cache = {}


def have_so3g():
    import importlib.util
    return importlib.util.find_spec("so3g") is not None


def scan_frames(testcase, kind, frames=4, channels=6, samples=200,
                rate=200.0, t0=1764912345.0):
    """
    Scan frames of int32 detector data under C{data}, one following the
    other on the grid of C{rate} from C{t0}.

    @param kind: C{'super'} for so3g's C{G3SuperTimestream} (made under
        so3g's binding), C{'map'} for spt3g 1.0.2's C{G3TimestreamMap}.
    @return: C{(raws, data, times)}: the frames' bytes, the samples as the
        maker's binding reads them back (channels x all samples), and the
        sample times in ticks.
    @raise SkipTest: so3g is not installed.
    """
    if not have_so3g():
        raise SkipTest("so3g is not installed")
    args = (kind, frames, channels, samples, rate, t0)
    if args not in _cache:
        out = os.path.abspath(testcase.mktemp()) + ".npz"
        env = repo_env()
        subprocess.run([sys.executable, "-c", _CHILD, kind, out]
                       + [str(a) for a in args[1:]], cwd=ROOT, env=env,
                       check=True, timeout=120)
        with np.load(out) as f:
            flat = f["raw"].tobytes()
            raws, at = [], 0
            for size in f["sizes"]:
                raws.append(flat[at:at + int(size)])
                at += int(size)
            _cache[args] = (raws, f["data"].copy(), f["times"].copy())
    return _cache[args]
