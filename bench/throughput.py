"""
One throughput run: a sender process, a receiver process (twistd tsagg, or
spt3g's G3Reader -> G3Writer), the clock from the sender's first byte to the
last byte on disk, and the receiver's CPU seconds over the same span.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from common import (BENCH_DIR, bytes_on_disk, cpu_seconds, minor_faults,
                    proc_status_kb, warm_page_cache)

PY = sys.executable
TWISTD = os.path.join(os.path.dirname(PY), "twistd")
SENDER = os.path.join(BENCH_DIR, "sender.py")
CPP = os.path.join(BENCH_DIR, "cpp_receiver.py")
INPROC = os.path.join(BENCH_DIR, "inproc.py")
#: The fixes recommended for tsagg, as bench-only prototypes (inproc.py).
PROTO_FIXES = "mallopt,bufsize=1048576,writev,lazyload"


class BenchError(RuntimeError):
    pass


def _read_json(proc, key, timeout):
    """
    Read JSON lines from a process's stdout until one has C{key}.
    """
    deadline = time.monotonic() + timeout
    while True:
        line = proc.stdout.readline()
        if not line:
            raise BenchError("process %d ended before saying %r"
                             % (proc.pid, key))
        msg = json.loads(line)
        if key in msg:
            return msg
        if time.monotonic() > deadline:
            raise BenchError("no %r from process %d" % (key, proc.pid))


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
    if kind == "tsagg":
        cmd = [TWISTD, "-n", "--pidfile=", "--logfile",
               os.path.join(os.path.dirname(data_dir), "twistd.log"),
               "tsagg", "--address", "127.0.0.1", "--port", str(port),
               "--data-dir", data_dir, "--time-per-file", "3600"]
        if not fsync:
            cmd.append("--no-fsync")
        return cmd
    if kind == "tsagg-proto":
        # tsagg with the recommended fixes prototyped from bench code.
        return [PY, INPROC, "receive", "--port", str(port), "--data-dir",
                data_dir, "--exp", PROTO_FIXES]
    return [PY, CPP, "127.0.0.1:%d" % port, os.path.join(data_dir, "out.g3")]


def run_once(kind, case, count, workdir, sender_mode="plain", timeout=120,
             env=None, profile=None):
    """
    Stream C{count} frames of C{case} to one receiver and time it.

    @param kind: C{'tsagg'}, C{'cpp'} or C{'tsagg-proto'}.
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
        hello = _read_json(sender, "port", 60)
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
            _read_json(sender, "accepted", 30)
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
        t0 = _read_json(sender, "t0", 10)["t0"]
        # Sleep on the pipe (no CPU) while the sender works; it finishes at
        # most a socket buffer ahead of the receiver.
        _read_json(sender, "t1", timeout)
        deadline = time.monotonic() + timeout
        while True:
            on_disk = bytes_on_disk(data_dir)
            if on_disk >= expected:
                t_end = time.monotonic()
                break
            if time.monotonic() > deadline:
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
