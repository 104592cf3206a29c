"""
``python -m tsagg.demo``: stream a simulated SO session into ``twistd
tsagg`` for a few seconds, stop it with SIGTERM, and show and check what
was recorded.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from tsagg import report


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _twistd():
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    return [script] if os.path.exists(script) else [
        sys.executable, "-c",
        "import sys; from twisted.scripts.twistd import run; run()"]


def _wait_for_line(path, text, proc, timeout):
    deadline = time.monotonic() + timeout
    while True:
        with open(path, errors="replace") as f:
            if text in f.read():
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("tsagg demo: the simulator did not start; see "
                             + path)
        time.sleep(0.05)


def main(data_dir="demo-data", seconds=10.0, time_per_file=3.0):
    port = _free_port()
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(data_dir)
    log_path = os.path.join(data_dir, "twistd.log")
    print("tsagg demo: a simulated SMuRF stream on port %d, recorded by "
          "twistd tsagg into %s/ (files of %g s)" % (port, data_dir,
                                                     time_per_file))
    sim_log_path = os.path.join(data_dir, "sim.log")
    with open(sim_log_path, "wb") as sim_log:
        sim = subprocess.Popen(
            [sys.executable, "-m", "tsagg.simulator", "--port", str(port),
             "--channels", "256", "--frame-rate", "10", "--duration",
             str(seconds), "--lead-in", "3"],
            stdout=sim_log, stderr=subprocess.STDOUT)
    # Start the recorder once the sender listens, so that it connects at its
    # first attempt, well before the session begins.
    _wait_for_line(sim_log_path, "Listening on port", sim, timeout=30)
    with open(log_path, "wb") as log:
        tw = subprocess.Popen(
            _twistd() + ["-n", "--pidfile=", "--logfile=-", "tsagg",
                         "--address", "127.0.0.1", "--port", str(port),
                         "--data-dir", data_dir, "--create-data-dir",
                         "--time-per-file",
                         str(time_per_file)],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            sim.wait(timeout=seconds + 30)
            time.sleep(0.5)
        finally:
            start = time.monotonic()
            tw.send_signal(signal.SIGTERM)
            tw.wait(timeout=30)
            stopped = time.monotonic() - start
            if sim.poll() is None:
                sim.kill()
                sim.wait()
    # After its clean shutdown, twistd ends itself with the signal it got,
    # as a program stopped by a signal is expected to.
    how = ("by the signal, after a clean shutdown"
           if tw.returncode == -signal.SIGTERM
           else "with status %s" % (tw.returncode,))
    print("twistd stopped %.2f s after SIGTERM, %s; its log is %s"
          % (stopped, how, log_path))
    print()
    return report.main(["--check", data_dir])


if __name__ == "__main__":
    sys.exit(main())
