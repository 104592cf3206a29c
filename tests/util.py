"""
Helpers shared by the tests.
"""

import os
import subprocess
import sys
import time

from twisted.trial.unittest import SkipTest

from tsagg import wire
from tsagg.frames import core, frame_type_code, load_frame
from tsagg.report import recorded_files

__all__ = ["spawn_sim", "frames_on_disk", "files_and_frames", "types_in", "FakeProducer",
           "recorded_files", "ROOT", "repo_env", "spawn", "log_of", "poll_until",
           "WallClock"]

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


# Run before the child's own program: a shell without job control starts its
# background commands with SIGINT ignored, and a program started so (twistd
# included) keeps it ignored; a child sent SIGINT by a test must not.
_SIGINT_DEFAULT = ("import os, signal, sys; "
                   "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execvp(sys.argv[1], sys.argv[1:])")


def spawn(testcase, argv, log, env=None, stdout=None, cwd=ROOT):
    """
    Start a child process, by default in the repository, killed (if still
    running) and reaped when the test ends.

    @param log: Path of the file that gets its output: stdout and stderr,
        or only stderr when C{stdout} is given.
    @param env: Its environment; L{repo_env} by default.
    @param cwd: Its working directory, or L{None} for the test's own.
    @return: The C{Popen}, with the log's path as C{log_path}.  The child
        starts with SIGINT's default action, whatever this process ignores.
    """
    out = open(log, "wb")
    testcase.addCleanup(out.close)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SIGINT_DEFAULT] + list(argv), cwd=cwd, env=repo_env() if env is None else env,
        stdout=out if stdout is None else stdout,
        stderr=subprocess.STDOUT if stdout is None else out)

    def reap():
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    testcase.addCleanup(reap)
    proc.log_path = log
    return proc


def spawn_sim(testcase, port, log, **options):
    """
    Start C{tsagg-sim} (spt3g's own G3NetworkSender) on C{port} and wait
    until it listens: a receiver started then connects at its first try.

    @param options: Its options, C{frame_rate=20} for C{--frame-rate 20}.
    @return: The C{Popen}.
    """
    argv = [sys.executable, "-m", "tsagg.simulator", "--port", str(port)]
    for name, value in sorted(options.items()):
        argv += ["--" + name.replace("_", "-"), str(value)]
    sim = spawn(testcase, argv, log)
    poll_until(testcase, lambda: "Listening on port" in log_of(sim), 30,
               "the sender to listen")
    return sim


def log_of(proc):
    """
    What the log of a process from L{spawn} holds so far.
    """
    with open(proc.log_path, errors="replace") as f:
        return f.read()


class WallClock:
    """
    The wall clock of child processes run under libfaketime (the
    C{libfaketime} package of the C{test} extra), set while they run: their
    C{time.time()} is the real time plus an offset read from a control file
    at every call, and their monotonic clock is left alone.

    @ivar path: The control file.
    """

    def __init__(self, testcase):
        """
        @raise SkipTest: The platform is not Linux, or libfaketime is not
            installed.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("the wall-clock steps need libfaketime on Linux")
        try:
            import libfaketime
        except ImportError:
            raise SkipTest("libfaketime is not installed (the test extra)")
        _, self._preload = libfaketime.get_reload_information()
        self.path = os.path.abspath(testcase.mktemp())
        self.set("+0")

    def set(self, offset):
        """
        Step the wall clock to C{offset} from the real time, e.g.
        C{'-1h'}, C{'+3600'} or C{'+0'}.
        """
        # Replaced whole: a child reading a half-written file would see no
        # offset at all.
        with open(self.path + ".new", "w") as f:
            f.write(offset + "\n")
        os.replace(self.path + ".new", self.path)

    def env(self):
        """
        The environment of a child process on this wall clock: L{repo_env}
        with libfaketime preloaded.
        """
        env = repo_env(FAKETIME_TIMESTAMP_FILE=self.path,
                       FAKETIME_DONT_FAKE_MONOTONIC=1, **self._preload)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [self._preload["LD_LIBRARY_PATH"]]
            + [p for p in [os.environ.get("LD_LIBRARY_PATH")] if p])
        return env


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
