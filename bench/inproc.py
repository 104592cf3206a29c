"""
tsagg's RecordingService in this process's reactor, set up as the twistd and
OCS shells set up their process (tsagg.memory.keep_freed_memory), next to a
10 Hz LoopingCall that records its own lateness (the reactor lag an OCS
heartbeat or an operator command would see).

Modes (each prints one JSON line with its results):

  ingest   record one sender at full speed: lag while ingesting, CPU, peak
           RSS (VmHWM), optionally onto a deliberately slow disk, and with
           --stages the time of each stage of a read's way to disk;
  streams  32 services, each fed an SO-rate stream by spt3g's own
           G3NetworkSender (bench/so_senders.py): frames lost, CPU share,
           lag;
  stop     stop latency of a RecordingService in every state.

Bench code only wraps or subclasses tsagg's classes; it never edits them.
"""

import argparse
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (BENCH_DIR, emit, lag_summary, minor_faults,  # noqa: E402
                    proc_status_kb, self_cpu_seconds)

from twisted.internet import defer, task  # noqa: E402

from tsagg.memory import keep_freed_memory  # noqa: E402
from tsagg.service import (RecordingService, in_thread_pool,  # noqa: E402
                           tcp_endpoint_description)
from tsagg.writer import RotatingWriter  # noqa: E402

PY = sys.executable
SENDER = os.path.join(BENCH_DIR, "sender.py")
SO_SENDERS = os.path.join(BENCH_DIR, "so_senders.py")
DELETER = os.path.join(BENCH_DIR, "deleter.py")
LAG_INTERVAL = 0.1


class LagProbe:
    """
    A 10 Hz LoopingCall that notes how late each call runs.

    @ivar samples: C{(time, lateness)} pairs, in seconds.
    """

    def __init__(self, reactor, interval=LAG_INTERVAL):
        self.reactor = reactor
        self.interval = interval
        self.samples = []
        self._loop = task.LoopingCall.withCount(self._tick)
        self._loop.clock = reactor
        self._ticks = 0

    def start(self):
        self._ticks = 0
        self._loop.start(self.interval, now=False)
        self._t0 = self._loop.starttime

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def _tick(self, count):
        now = self.reactor.seconds()
        due = self._t0 + (self._ticks + 1) * self.interval
        self._ticks += count
        self.samples.append((now, max(0.0, now - due)))

    def between(self, start, end):
        return [lag for t, lag in self.samples
                if start is not None and end is not None and start <= t <= end]


class TimedWriter(RotatingWriter):
    """
    A RotatingWriter that notes when the first and last frame arrived and
    fires C{stopped} when the stream ends.
    """

    def __init__(self, *args, **kwargs):
        RotatingWriter.__init__(self, *args, **kwargs)
        self.first_frame = None
        self.last_frame = None
        self.stopped = defer.Deferred()

    def framesReceived(self, frames):
        RotatingWriter.framesReceived(self, frames)
        now = self.clock.seconds()
        if self.first_frame is None:
            self.first_frame = now
        self.last_frame = now

    def streamStopped(self, reason):
        RotatingWriter.streamStopped(self, reason)
        if not self.stopped.called:
            self.stopped.callback(None)


# -- a deliberately slow disk -------------------------------------------------

def slow_opener(bytes_per_second, threads):
    """
    An C{opener} for RotatingWriter whose files drain at a fixed rate: the
    writer gets the write end of a pipe, and a thread copies the pipe into
    the real file at C{bytes_per_second}.  A full pipe blocks os.write()
    exactly as a slow disk does.
    """

    def copy(rfd, fd):
        start = time.monotonic()
        done = 0
        try:
            while True:
                data = os.read(rfd, 1 << 16)
                if not data:
                    break
                os.write(fd, data)
                done += len(data)
                ahead = done / bytes_per_second - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            os.close(rfd)
            os.close(fd)

    def opener(path, flags, mode):
        fd = os.open(path, flags, mode)
        rfd, wfd = os.pipe()
        try:
            fcntl.fcntl(wfd, 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MB
        except OSError:
            pass
        t = threading.Thread(target=copy, args=(rfd, fd), daemon=True)
        t.start()
        threads.append(t)
        return wfd

    return opener


# -- stage timers -------------------------------------------------------------

STAGES = {}


def stage_timers(service):
    """
    Wrap the stages of a read's way to disk with timers (bench only: the
    wrappers replace tsagg's functions in this process).
    """
    import tsagg.frames
    import tsagg.protocol
    import tsagg.wire

    def timed(name, func):
        samples = STAGES.setdefault(name, [])

        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return func(*a, **kw)
            finally:
                samples.append(time.perf_counter() - t)
        return wrapper
    tsagg.wire.FrameSplitter.split = timed("split a read into frames",
                                           tsagg.wire.FrameSplitter.split)
    tsagg.protocol.receive_all = timed("receive_all (CRC check of a read)",
                                       tsagg.protocol.receive_all)
    # LazyFrame.load: spt3g deserializing a frame, if anything asks for it.
    tsagg.frames.load_frame = timed("load_frame (spt3g, lazily)",
                                    tsagg.frames.load_frame)
    writer = service.writer
    writer.framesReceived = timed("framesReceived (rules, queue, write)",
                                  writer.framesReceived)
    writer._flush = timed("write (writev) of a batch", writer._flush)
    writer._out.close = timed("close file (the sync runs in a thread)",
                              writer._out.close)
    base = service.factory.protocol

    class Timed(base):
        dataReceived = timed("dataReceived (all of it)", base.dataReceived)
    service.factory.protocol = Timed


def stage_summary():
    out = {}
    for name, samples in STAGES.items():
        if samples:
            s = lag_summary(samples)
            s["total_s"] = sum(samples)
            out[name] = s
    return out


def start_sender(*args):
    proc = subprocess.Popen([PY, SENDER] + list(args), stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    hello = json.loads(proc.stdout.readline())
    return proc, hello


def kill(proc):
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait()


def make_service(reactor, port, data_dir, fsync=False, time_per_file=3600.0,
                 opener=os.open, writer_class=TimedWriter, stream_id="unknown",
                 idle_timeout=30.0):
    # run_blocking as RecordingService sets up the writer it makes itself.
    writer = writer_class(data_dir, reactor, time_per_file=time_per_file,
                          gap_timeout=10.0, default_stream_id=stream_id,
                          fsync=fsync, opener=opener,
                          run_blocking=in_thread_pool(reactor))
    return RecordingService(reactor, tcp_endpoint_description("127.0.0.1",
                                                               port),
                            data_dir, idle_timeout=idle_timeout,
                            writer=writer, create_data_dir=True)


# -- ingest ------------------------------------------------------------------

@defer.inlineCallbacks
def ingest(reactor, args):
    """
    Record a full-speed sender for --seconds; report lag, CPU and VmHWM.
    """
    threads = []
    opener = os.open
    deleter = None
    if args.slow_mbps:
        opener = slow_opener(args.slow_mbps * 1e6, threads)
    sender, hello = start_sender("--case", args.case, "--seconds",
                                 str(args.seconds))
    try:
        service = make_service(reactor, hello["port"], args.data_dir,
                               fsync=args.fsync,
                               time_per_file=args.time_per_file,
                               opener=opener)
        if args.stages:
            stage_timers(service)
        writer = service.writer
        probe = LagProbe(reactor)
        probe.start()
        flt0 = minor_faults(os.getpid())
        service.startService()
        if args.delete_closed:
            deleter = subprocess.Popen([PY, DELETER, args.data_dir])
        cpu0 = self_cpu_seconds()
        yield writer.stopped
        cpu1 = self_cpu_seconds()
        flt1 = minor_faults(os.getpid())
        t_stop = time.monotonic()
        yield service.stopService()
        stop_s = time.monotonic() - t_stop
        probe.stop()
        for t in threads:
            t.join(30)
        status = service.status
        span = ((writer.last_frame - writer.first_frame)
                if writer.first_frame is not None else None)
        lags = probe.between(writer.first_frame, writer.last_frame)
        result = {
            "mode": "ingest", "case": args.case, "fsync": args.fsync,
            "slow_mbps": args.slow_mbps,
            "time_per_file": args.time_per_file,
            "frames": status["frames_written"],
            "bytes": status["bytes_written"],
            "files": status["files_written"],
            "seconds": span,
            "MBps": (status["bytes_written"] / span / 1e6) if span else None,
            "cpu_s": cpu1 - cpu0,
            "cpu_s_per_GB": ((cpu1 - cpu0) / (status["bytes_written"] / 1e9)
                             if status["bytes_written"] else None),
            "faults_per_MB": ((flt1 - flt0) / (status["bytes_written"] / 1e6)
                              if status["bytes_written"] else None),
            "vmhwm_kb": proc_status_kb(os.getpid(), "VmHWM"),
            "stop_s": stop_s,
            "frames_lost": status["frames_lost"],
            "write_errors": status["write_errors"],
            "lag": lag_summary(lags),
        }
        if STAGES:
            result["stages"] = stage_summary()
        emit(result)
    finally:
        kill(sender)
        kill(deleter)


# -- many streams --------------------------------------------------------------

@defer.inlineCallbacks
def streams(reactor, args):
    """
    N services fed by N G3NetworkSenders at SO rate (one frame a second).
    """
    go_file = os.path.join(args.data_dir, "..", "go")
    go_file = os.path.abspath(go_file)
    if os.path.exists(go_file):
        os.unlink(go_file)
    senders = subprocess.Popen(
        [PY, SO_SENDERS, "--streams", str(args.streams), "--frames",
         str(args.frames), "--go-file", go_file],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        ports = json.loads(senders.stdout.readline())["ports"]
        services = []
        for i, port in enumerate(ports):
            s = make_service(reactor, port, args.data_dir, fsync=args.fsync,
                             time_per_file=args.time_per_file,
                             writer_class=RotatingWriter)
            s.startService()
            services.append(s)
        probe = LagProbe(reactor)
        probe.start()
        # Connected and accepted: each has had an ALIVE from its sender.
        deadline = time.monotonic() + 30
        while not all(s.status["flow_control_frames"]["alive"] > 0
                      for s in services):
            if time.monotonic() > deadline:
                raise RuntimeError("senders did not all connect")
            yield task.deferLater(reactor, 0.1, lambda: None)
        open(go_file, "w").close()
        t_go = reactor.seconds()
        cpu0 = self_cpu_seconds()
        expected = args.frames + 2      # Observation, Wiring, Scan frames
        deadline = time.monotonic() + args.frames + 30
        while True:
            yield task.deferLater(reactor, 0.25, lambda: None)
            if all(s.status["frames_written"] >= expected for s in services):
                break
            if time.monotonic() > deadline:
                break
        t_end = reactor.seconds()
        cpu1 = self_cpu_seconds()
        probe.stop()
        statuses = [s.status for s in services]
        yield defer.gatherResults([s.stopService() for s in services])
        written = [st["frames_written"] for st in statuses]
        lost = sum(max(0, expected - w) for w in written)
        lost += sum(st["frames_lost"] for st in statuses)
        result = {
            "mode": "streams", "streams": len(services),
            "frames_per_stream": args.frames, "fsync": args.fsync,
            "time_per_file": args.time_per_file,
            "frames_expected": expected * len(services),
            "frames_written": sum(written),
            "frames_lost": lost,
            "frames_dropped_upstream": sum(st["frames_dropped_upstream"]
                                           for st in statuses),
            "write_errors": sum(st["write_errors"] for st in statuses),
            "files": sum(st["files_written"] for st in statuses),
            "bytes": sum(st["bytes_written"] for st in statuses),
            "seconds": t_end - t_go,
            "cpu_share": (cpu1 - cpu0) / (t_end - t_go),
            "lag": lag_summary(probe.between(t_go, t_end)),
            "vmhwm_kb": proc_status_kb(os.getpid(), "VmHWM"),
        }
        emit(result)
    finally:
        kill(senders)


# -- stop latency ------------------------------------------------------------

@defer.inlineCallbacks
def _wait_for(reactor, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        yield task.deferLater(reactor, 0.05, lambda: None)


@defer.inlineCallbacks
def _timed_stop(reactor, service):
    """
    Stop the service from a timer and measure from the time the timer was
    due (so a busy reactor's lag counts) to the end of stopService.
    """
    due = time.monotonic() + 0.05
    d = defer.Deferred()

    def stop():
        started = time.monotonic()
        service.stopService().addBoth(
            lambda _: d.callback((started, time.monotonic())))
    reactor.callLater(0.05, stop)
    started, ended = yield d
    return {"latency_s": ended - due, "reactor_delay_s": started - due}


@defer.inlineCallbacks
def stop(reactor, args):
    results = []

    def fresh_dir(name):
        d = os.path.join(args.data_dir, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    # 1. Not connected: nothing listens, the service waits in its backoff.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()
    svc = make_service(reactor, closed_port, fresh_dir("refused"))
    svc.startService()
    yield task.deferLater(reactor, 1.5, lambda: None)
    r = yield _timed_stop(reactor, svc)
    r.update(state="not connected (refused, in backoff)",
             connections=svc.factory.stats.connections)
    results.append(r)

    # 2. Connecting: a listener whose accept queue is full never answers
    # the SYN, so the connection attempt hangs.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(blackhole.getsockname())
        fillers.append(c)
    svc = make_service(reactor, blackhole.getsockname()[1],
                       fresh_dir("blackhole"))
    svc.startService()
    yield task.deferLater(reactor, 1.0, lambda: None)
    r = yield _timed_stop(reactor, svc)
    r.update(state="connecting (SYN unanswered)",
             connections=svc.factory.stats.connections)
    results.append(r)
    for c in fillers:
        c.close()
    blackhole.close()

    # 3. Connected, the peer silent.
    sender, hello = start_sender("--idle")
    try:
        svc = make_service(reactor, hello["port"], fresh_dir("idle"))
        svc.startService()
        yield _wait_for(reactor, lambda: svc.factory.stats.connected, 10,
                        "connection")
        yield task.deferLater(reactor, 0.3, lambda: None)
        r = yield _timed_stop(reactor, svc)
        r.update(state="connected, idle",
                 connections=svc.factory.stats.connections)
        results.append(r)
    finally:
        kill(sender)

    # 4. Mid-frame: half of a 13 MB frame, then the sender stalls.
    sender, hello = start_sender("--case", "13MB", "--stall-after",
                                 str(6 << 20))
    try:
        svc = make_service(reactor, hello["port"], fresh_dir("midframe"))
        svc.startService()
        yield _wait_for(reactor,
                        # The last of it may wait below the read's
                        # low-water mark (tsagg.lowwater): 1 MiB at most.
                        lambda: svc.factory.stats.bytes_received >= 5 << 20,
                        10, "half a frame")
        r = yield _timed_stop(reactor, svc)
        r.update(state="mid-frame, sender stalled",
                 connections=svc.factory.stats.connections)
        results.append(r)
    finally:
        kill(sender)

    # 5, 6. Streaming at full speed, without and with fsync on close.
    for fsync, case in ((False, "1.6MB"), (True, "1.6MB"), (False, "13MB")):
        sender, hello = start_sender("--case", case, "--seconds", "60")
        try:
            svc = make_service(reactor, hello["port"],
                               fresh_dir("streaming"), fsync=fsync)
            svc.startService()
            yield _wait_for(reactor, lambda: svc.factory.stats.connected, 10,
                            "connection")
            yield task.deferLater(reactor, args.stream_seconds, lambda: None)
            written = svc.status["bytes_written"]
            r = yield _timed_stop(reactor, svc)
            r.update(state="streaming %s frames at full speed, fsync %s"
                     % (case, "on" if fsync else "off"),
                     bytes_in_file=written,
                     connections=svc.factory.stats.connections)
            results.append(r)
        finally:
            kill(sender)
        shutil.rmtree(os.path.join(args.data_dir, "streaming"),
                      ignore_errors=True)

    # 7. Slow disk, in the middle of a long write.
    threads = []
    sender, hello = start_sender("--case", "13MB", "--seconds", "60")
    try:
        svc = make_service(reactor, hello["port"], fresh_dir("slow"),
                           opener=slow_opener(args.slow_mbps * 1e6, threads))
        svc.startService()
        yield _wait_for(reactor, lambda: svc.status["frames_written"] >= 2,
                        30, "two frames")
        r = yield _timed_stop(reactor, svc)
        r.update(state="slow disk (%g MB/s), 13MB frames" % args.slow_mbps,
                 connections=svc.factory.stats.connections)
        results.append(r)
    finally:
        kill(sender)
    for t in threads:
        t.join(60)
    emit({"mode": "stop", "states": results})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("ingest", "streams", "stop"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--case", default="1.6MB")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--time-per-file", type=float, default=3600.0)
    parser.add_argument("--delete-closed", action="store_true",
                        help="remove closed files while ingesting")
    parser.add_argument("--slow-mbps", type=float, default=0.0,
                        help="a disk that takes this many MB/s")
    parser.add_argument("--stages", action="store_true",
                        help="ingest: time each stage (see stage_timers)")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--stream-seconds", type=float, default=2.0)
    args = parser.parse_args()
    os.makedirs(args.data_dir, exist_ok=True)
    if args.mode == "stop" and not args.slow_mbps:
        args.slow_mbps = 20.0
    # What the process shells (twistd tsagg, the OCS agent) do first.
    keep_freed_memory()
    run = {"ingest": ingest, "streams": streams, "stop": stop}[args.mode]
    task.react(lambda reactor: run(reactor, args))


if __name__ == "__main__":
    main()
