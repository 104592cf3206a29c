"""
``tsagg-ls``: what was recorded under a data directory, read back with
spt3g.
"""

import os
import sys
from collections import Counter

from tsagg.frames import core, frame_type_code

__all__ = ["recorded_files", "summarize", "main"]


def recorded_files(data_dir):
    """
    The ``.g3`` files under C{data_dir}, sorted by path.
    """
    found = []
    for root, _dirs, files in os.walk(data_dir):
        found.extend(os.path.join(root, f) for f in files if f.endswith(".g3"))
    return sorted(found)


def summarize(path):
    """
    Read one file through and count its frames by type.

    @return: A L{dict} with C{path}, C{size}, C{frames} (total) and C{types}
        (a L{Counter} of type codes).
    """
    types = Counter()
    for frame in core.G3File(path):
        types[frame_type_code(frame)] += 1
    return {"path": path, "size": os.path.getsize(path),
            "frames": sum(types.values()), "types": types}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: tsagg-ls DATA_DIR", file=sys.stderr)
        return 2
    data_dir = argv[0]
    total = Counter()
    files = recorded_files(data_dir)
    for path in files:
        s = summarize(path)
        total.update(s["types"])
        kinds = " ".join("%s:%d" % kv for kv in sorted(s["types"].items()))
        print("%-60s %10d bytes %5d frames  %s"
              % (os.path.relpath(path, data_dir), s["size"], s["frames"], kinds))
    print("%d files, %d frames (%s), %d bytes"
          % (len(files), sum(total.values()),
             " ".join("%s:%d" % kv for kv in sorted(total.items())),
             sum(os.path.getsize(p) for p in files)))
    return 0
