"""
One throughput run: a sender process, a receiver process (twistd tsagg, or
spt3g's G3Reader -> G3Writer), the clock from the sender's first byte to the
last byte on disk, and the receiver's CPU seconds over the same span.
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

from common import (BENCH_DIR, bytes_on_disk, cpu_seconds, minor_faults,
                    proc_status_kb, warm_page_cache)

PY = sys.executable
TWISTD = os.path.join(os.path.dirname(PY), "twistd")
SENDER = os.path.join(BENCH_DIR, "sender.py")
CPP = os.path.join(BENCH_DIR, "cpp_receiver.py")
BARE = os.path.join(BENCH_DIR, "bare_receiver.py")
QL = os.path.join(BENCH_DIR, "ql_receiver.py")

#: The channels and rate of the quick look in the "ql-on" receiver.
QUICK_LOOK = ("r0001,r0007", "10")


class BenchError(RuntimeError):
    pass


class Lines:
    """
    The JSON lines of a process's stdout, read by a thread, so that waiting
    for one can time out and notice a receiver that died.
    """

    def __init__(self, proc):
        self.proc = proc
        self.queue = queue.Queue()
        t = threading.Thread(target=self._read, daemon=True)
        t.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.queue.put(json.loads(line))
            except ValueError:
                pass
        self.queue.put(None)

    def wait_for(self, key, timeout, watch=None, what="receiver"):
        """
        The next message that has C{key}.

        @param watch: A process (the receiver) whose exit is an error.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("no %r from process %d in %g s"
                                 % (key, self.proc.pid, timeout))
            try:
                msg = self.queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                if watch is not None and watch.poll() is not None:
                    raise BenchError("the %s exited (code %s) while waiting "
                                     "for %r" % (what, watch.returncode, key))
                continue
            if msg is None:
                raise BenchError("process %d ended before saying %r"
                                 % (self.proc.pid, key))
            if key in msg:
                return msg


def _stop(proc, sig=signal.SIGTERM, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def receiver_command(kind, port, data_dir, fsync=False):
    """
    The command of a receiver: C{'tsagg'} (twistd tsagg), C{'cpp'}
    (G3Reader -> G3Writer), C{'bare'} (a bare copy, recv_into + write), or the agent's recording service without
    (C{'ql-off'}) or with (C{'ql-on'}) a quick look.
    """
    if kind in ("ql-off", "ql-on"):
        cmd = [PY, QL, "127.0.0.1:%d" % port, data_dir]
        if kind == "ql-on":
            cmd += ["--channels", QUICK_LOOK[0],
                    "--target-rate", QUICK_LOOK[1]]
        return cmd
    if kind == "tsagg":
        cmd = [TWISTD, "-n", "--pidfile=", "--logfile",
               os.path.join(os.path.dirname(data_dir), "twistd.log"),
               "tsagg", "--address", "127.0.0.1", "--port", str(port),
               "--data-dir", data_dir, "--create-data-dir",
               "--time-per-file", "3600"]
        if not fsync:
            cmd.append("--no-fsync")
        return cmd
    script = BARE if kind == "bare" else CPP
    return [PY, script, "127.0.0.1:%d" % port,
            os.path.join(data_dir, "out.g3")]


def run_once(kind, case, count, workdir, sender_mode="plain", timeout=120,
             env=None, profile=None):
    """
    Stream C{count} frames of C{case} to one receiver and time it.

    @param kind: A receiver of L{receiver_command}.
    @param profile: C{(py-spy executable, output path)}: sample the
        receiver with py-spy (raw collapsed stacks) while it receives.
    @return: A L{dict}: seconds, bytes, cpu_s, vmhwm_kb, ...
    """
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    data_dir = os.path.join(workdir, "data")
    os.makedirs(data_dir)
    port = free_port() if sender_mode == "g3ns" else 0
    sender = receiver = spy = None
    try:
        sender = subprocess.Popen(
            [PY, SENDER, "--mode", sender_mode, "--case", case,
             "--count", str(count), "--port", str(port), "--wait-go"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lines = Lines(sender)
        hello = lines.wait_for("port", 60)
        port, frame_bytes = hello["port"], hello["frame_bytes"]
        expected = frame_bytes * count
        warm_page_cache(workdir, int(expected * 1.2))
        os.sync()
        receiver = subprocess.Popen(
            receiver_command(kind, port, data_dir), cwd=workdir,
            stdout=open(os.path.join(workdir, "receiver.out"), "w"),
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})))
        if sender_mode == "plain":
            lines.wait_for("accepted", 30, watch=receiver)
        else:
            # G3NetworkSender accepts only when it sends: give the receiver
            # time to connect (the kernel completes the handshake), then go.
            time.sleep(2.0)
        if receiver.poll() is not None:
            raise BenchError("%s receiver exited early" % kind)
        if profile is not None:
            spy = subprocess.Popen(
                [profile[0], "record", "--pid", str(receiver.pid),
                 "--rate", "250", "--nonblocking", "--format", "raw",
                 "--output", profile[1]],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu0 = cpu_seconds(receiver.pid)
        flt0 = minor_faults(receiver.pid)
        sender.stdin.write("go\n")
        sender.stdin.flush()
        t0 = lines.wait_for("t0", 10)["t0"]
        # Sleep on the pipe (no CPU) while the sender works; it finishes at
        # most a socket buffer ahead of the receiver.
        lines.wait_for("t1", timeout, watch=receiver)
        deadline = time.monotonic() + timeout
        while True:
            on_disk = bytes_on_disk(data_dir)
            if on_disk >= expected:
                t_end = time.monotonic()
                break
            if time.monotonic() > deadline or (
                    receiver.poll() is not None and on_disk < expected
                    and bytes_on_disk(data_dir) < expected):
                raise BenchError("%s wrote %d of %d bytes" % (kind, on_disk,
                                                             expected))
            time.sleep(0.001)
        cpu1 = cpu_seconds(receiver.pid)
        flt1 = minor_faults(receiver.pid)
        hwm = proc_status_kb(receiver.pid, "VmHWM")
        seconds = t_end - t0
        cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        return {
            "receiver": kind, "case": case, "sender": sender_mode,
            "frames": count, "frame_bytes": frame_bytes, "bytes": expected,
            "on_disk": on_disk, "seconds": seconds,
            "MBps": expected / seconds / 1e6, "fps": count / seconds,
            "cpu_s": cpu,
            "cpu_s_per_GB": cpu / (expected / 1e9) if cpu is not None else None,
            "vmhwm_kb": hwm,
            "faults_per_MB": ((flt1 - flt0) / (expected / 1e6)
                              if flt0 is not None and flt1 is not None
                              else None),
        }
    finally:
        _stop(spy, signal.SIGINT, timeout=30)
        _stop(receiver)
        _stop(sender, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)
