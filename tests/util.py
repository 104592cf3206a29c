"""
Helpers shared by the tests.
"""

import os
import subprocess
import time

from tsagg import wire
from tsagg.frames import core, frame_type_code, load_frame
from tsagg.report import recorded_files

__all__ = ["frames_on_disk", "files_and_frames", "types_in", "FakeProducer",
           "recorded_files", "ROOT", "repo_env", "spawn", "log_of", "poll_until"]

#: The top of the repository.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_env(**extra):
    """
    The environment of a child process that must import this tree's tsagg
    and tests, whatever is installed, plus C{extra} variables.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def spawn(testcase, argv, log, env=None, stdout=None, cwd=ROOT):
    """
    Start a child process, by default in the repository, killed (if still
    running) and reaped when the test ends.

    @param log: Path of the file that gets its output: stdout and stderr,
        or only stderr when C{stdout} is given.
    @param env: Its environment; L{repo_env} by default.
    @param cwd: Its working directory, or L{None} for the test's own.
    @return: The C{Popen}, with the log's path as C{log_path}.
    """
    out = open(log, "wb")
    testcase.addCleanup(out.close)
    proc = subprocess.Popen(
        argv, cwd=cwd, env=repo_env() if env is None else env,
        stdout=out if stdout is None else stdout,
        stderr=subprocess.STDOUT if stdout is None else out)

    def reap():
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    testcase.addCleanup(reap)
    proc.log_path = log
    return proc


def log_of(proc):
    """
    What the log of a process from L{spawn} holds so far.
    """
    with open(proc.log_path, errors="replace") as f:
        return f.read()


def poll_until(testcase, predicate, timeout, what):
    """
    Wait, blocking, for C{predicate()} (of a child process's doing) to be
    true; fail the test after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            testcase.fail("timed out waiting for %s" % what)
        time.sleep(0.05)


def frames_on_disk(path):
    """
    The raw frames of one file, split exactly as written, after checking
    that spt3g reads the whole file too.
    """
    with open(path, "rb") as f:
        data = f.read()
    splitter = wire.FrameSplitter()
    frames = splitter.feed(data)
    assert splitter.error is None, splitter.error
    assert splitter.buffered == 0, "file %s ends inside a frame" % path
    assert sum(len(x) for x in frames) == len(data)
    # spt3g must read it back as well, every frame.
    assert len(list(core.G3File(path))) == len(frames)
    return frames


def files_and_frames(data_dir):
    """
    C{[(path relative to data_dir, [raw frames])]} for every file.
    """
    return [(os.path.relpath(p, data_dir), frames_on_disk(p))
            for p in recorded_files(data_dir)]


def types_in(raws):
    """
    The type codes of raw frames, as one string (e.g. C{'OWSSS'}).
    """
    return "".join(frame_type_code(load_frame(r)) for r in raws)


class FakeProducer:
    """
    An C{IPushProducer} that records what was asked of it.
    """

    def __init__(self):
        self.paused = False
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        self.resumes += 1

    def stopProducing(self):
        pass
