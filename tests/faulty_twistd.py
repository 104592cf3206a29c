"""
``twistd`` with a disk the fault tests control, for process-level tests::

    python tests/faulty_twistd.py -n ... tsagg ...

``TSAGG_TEST_WRITE_RATE`` (bytes per second) makes every write to a ``.g3``
file take as long as a disk of that speed would, its bytes reaching the file
a piece at a time as they would on such a disk (so that a file is seen, and
can be killed, in the middle of one big write); ``TSAGG_TEST_FSYNC_LOG``
names a file to which the path of every ``.g3`` file is appended once its
``fsync`` has returned.
"""

import os
import sys
import time


def _target(fd):
    try:
        return os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        return ""


def install():
    real_writev, real_fsync = os.writev, os.fsync
    rate = float(os.environ.get("TSAGG_TEST_WRITE_RATE", "0"))
    fsync_log = os.environ.get("TSAGG_TEST_FSYNC_LOG")

    if rate > 0:
        piece = 256 << 10

        def writev(fd, buffers):
            if not _target(fd).endswith(".g3"):
                return real_writev(fd, buffers)
            done = 0
            for buffer in buffers:
                view = memoryview(buffer).cast("B")
                for start in range(0, len(view), piece):
                    chunk = view[start:start + piece]
                    time.sleep(len(chunk) / rate)
                    try:
                        written = real_writev(fd, [chunk])
                    except OSError:
                        if done:
                            return done  # as the kernel would: short
                        raise
                    done += written
                    if written < len(chunk):
                        return done
            return done
        os.writev = writev

    if fsync_log:
        def fsync(fd):
            real_fsync(fd)
            path = _target(fd)
            if path.endswith(".g3"):
                with open(fsync_log, "a") as f:
                    f.write(path + "\n")
        os.fsync = fsync


if __name__ == "__main__":
    install()
    from twisted.scripts.twistd import run
    sys.argv = ["twistd"] + sys.argv[1:]
    run()
