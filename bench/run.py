"""
tsagg against spt3g's own C++ reader: the whole benchmark, one command.

    python bench/run.py [--quick] [--out bench/results] [--docs docs/performance.rst]

Runs, on loopback and the local disk:

1. throughput: one sender of identical pre-serialized frames, and as
   receivers (A) ``twistd -n tsagg``, (B) a G3Reader('tcp://') ->
   G3Writer pipeline and (C) a bare copy (recv_into + write, no framing),
   alternating A B C A B C; medians and ratios of MB/s,
   frames/s and receiver CPU seconds per GB, for ~1.6 MB, ~13 MB and ~10 kB
   frames; once more with spt3g's G3NetworkSender as the sender;
2. reactor lag at full ingest (a 10 Hz LoopingCall in tsagg's reactor);
3. 32 SO-rate streams in one process;
4. stop latency in every state, and twistd's exit on SIGTERM mid-stream;
5. peak RSS (VmHWM) with a fast and a deliberately slow disk;
6. (full mode) stage timers (where the reactor's time goes: splitting,
   CRC check, writes, closes) and a py-spy profile of twistd tsagg;
7. the quick look's cost: the agent's recording service with and without a
   quick look on two channels (bench/ql_receiver.py), alternating, as in 1.

Writes results.json, results.md and bench.png under --out, and the docs page
with --docs.  Targets are printed PASS/MISS; nothing is asserted.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
import throughput  # noqa: E402
from common import BENCH_DIR, scan_bytes, warm_page_cache  # noqa: E402

PY = sys.executable
INPROC = os.path.join(BENCH_DIR, "inproc.py")
REPO = os.path.dirname(BENCH_DIR)

#: tsagg, spt3g's C++ reader, and the limit: a bare copy of the bytes.
RECEIVERS = ("tsagg", "cpp", "bare")
#: The parts of a run, for --only.
PARTS = ("throughput", "peer", "lag", "streams", "stop", "rss", "stages",
         "profile", "quicklook")

#: (case, frames per run full, frames per run quick) of the quick look's
#: comparison: runs of a second or more, for a difference of a few percent
#: to stand out of the noise.
QUICK_LOOK_CASES = [("1.6MB", 2000, 1000), ("small", 200000, 100000)]

#: (case, frames per run full, frames per run quick)
THROUGHPUT_CASES = [("1.6MB", 500, 200), ("13MB", 64, 25),
                    ("small", 60000, 20000)]


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def settle():
    """
    Let the disk catch up between runs (deleted files, journal), so that one
    run's writeback is not charged to the next.
    """
    os.sync()
    time.sleep(0.3)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# -- 1. throughput -------------------------------------------------------------

def run_throughput(args, tmp):
    runs = []
    summary = {}
    for case, full, quick in THROUGHPUT_CASES:
        count = quick if args.quick else full
        for i in range(args.runs):
            for kind in RECEIVERS:
                settle()
                r = throughput.run_once(kind, case, count,
                                        os.path.join(tmp, "tp"))
                r["run"] = i
                runs.append(r)
                log("%-5s %-6s run %d: %7.1f MB/s %8.0f frames/s "
                    "%5.2f CPU s/GB" % (kind, case, i, r["MBps"], r["fps"],
                                        r["cpu_s_per_GB"] or -1))
        summary[case] = summarize(
            [r for r in runs if r["case"] == case], count)
    return {"runs": runs, "summary": summary}


def summarize(runs, count):
    out = {"frames_per_run": count}
    for kind in RECEIVERS:
        mine = [r for r in runs if r["receiver"] == kind]
        out[kind] = {
            "MBps": median([r["MBps"] for r in mine]),
            "fps": median([r["fps"] for r in mine]),
            "cpu_s_per_GB": median([r["cpu_s_per_GB"] for r in mine]),
            "faults_per_MB": median([r["faults_per_MB"] for r in mine]),
            "vmhwm_kb": max([r["vmhwm_kb"] or 0 for r in mine] or [0]),
            "runs": len(mine),
            "frame_bytes": mine[0]["frame_bytes"] if mine else None,
        }
    t, c, b = out["tsagg"], out["cpp"], out["bare"]
    if t["runs"]:
        out["ratio_MBps"] = t["MBps"] / c["MBps"] if c["MBps"] else None
        out["ratio_fps"] = t["fps"] / c["fps"] if c["fps"] else None
        out["ratio_cpu"] = (t["cpu_s_per_GB"] / c["cpu_s_per_GB"]
                            if c["cpu_s_per_GB"] else None)
    if t["runs"] and b["runs"]:
        out["bare_ratio_MBps"] = t["MBps"] / b["MBps"] if b["MBps"] else None
        out["bare_ratio_cpu"] = (t["cpu_s_per_GB"] / b["cpu_s_per_GB"]
                                 if b["cpu_s_per_GB"] else None)
    return out


def run_quick_look(args, tmp):
    """
    Recording throughput with the quick look on and off, alternating in
    the order off on on off off on ... (the second run of a pair tends to
    be the faster on this VM, whichever it is), in the same run: medians
    and their ratio.
    """
    runs = []
    summary = {}
    for case, full, quick in QUICK_LOOK_CASES:
        count = quick if args.quick else full
        for i in range(args.runs):
            for kind in (("ql-off", "ql-on"), ("ql-on", "ql-off"))[i % 2]:
                settle()
                status_path = os.path.join(tmp, "ql-status.json")
                if os.path.exists(status_path):
                    os.unlink(status_path)
                r = throughput.run_once(
                    kind, case, count, os.path.join(tmp, "ql"),
                    env={"TSAGG_QL_STATUS": status_path})
                if kind == "ql-on":
                    # The receiver writes it as it stops; give it a moment.
                    for _ in range(50):
                        if os.path.exists(status_path):
                            break
                        time.sleep(0.1)
                    if os.path.exists(status_path):
                        with open(status_path) as f:
                            r["quick_look"] = json.load(f)
                r["run"] = i
                runs.append(r)
                look = r.get("quick_look", {})
                log("%-6s %-6s run %d: %7.1f MB/s %8.0f frames/s%s" % (
                    kind, case, i, r["MBps"], r["fps"],
                    " (quick look read %s frames, skipped %s)" % (
                        look.get("frames_read"), look.get("frames_skipped"))
                    if look else ""))
        mine = [r for r in runs if r["case"] == case]
        off = median([r["MBps"] for r in mine if r["receiver"] == "ql-off"])
        on = median([r["MBps"] for r in mine if r["receiver"] == "ql-on"])
        summary[case] = {
            "frames_per_run": count,
            "off_MBps": off, "on_MBps": on,
            "ratio_MBps": on / off if off else None,
            "off_cpu_s_per_GB": median([r["cpu_s_per_GB"] for r in mine
                                        if r["receiver"] == "ql-off"]),
            "on_cpu_s_per_GB": median([r["cpu_s_per_GB"] for r in mine
                                       if r["receiver"] == "ql-on"]),
            "frames_read": median([r.get("quick_look", {}).get("frames_read")
                                   for r in mine
                                   if r["receiver"] == "ql-on"]),
        }
        log("quick look %s: on/off = %.3f" % (
            case, summary[case]["ratio_MBps"] or float("nan")))
    return {"runs": runs, "summary": summary,
            "channels": throughput.QUICK_LOOK[0],
            "target_rate": float(throughput.QUICK_LOOK[1])}


def run_real_peer(args, tmp):
    """
    Both receivers once more, fed by spt3g's own G3NetworkSender.
    """
    runs = []
    count = 100 if args.quick else 300
    for i in range(1 if args.quick else 2):
        for kind in ("tsagg", "cpp"):
            settle()
            try:
                r = throughput.run_once(kind, "1.6MB", count,
                                        os.path.join(tmp, "peer"),
                                        sender_mode="g3ns")
            except throughput.BenchError as e:
                r = {"receiver": kind, "case": "1.6MB", "sender": "g3ns",
                     "error": str(e)}
            r["run"] = i
            runs.append(r)
            log("G3NetworkSender -> %-5s: %s" % (
                kind, "%.1f MB/s" % r["MBps"] if "MBps" in r else r["error"]))
    return runs


# -- 2..5: in-process runs -------------------------------------------------------

def inproc(mode, tmp, *extra, timeout=600):
    data_dir = os.path.join(tmp, "inproc", "data")
    shutil.rmtree(os.path.dirname(data_dir), ignore_errors=True)
    os.makedirs(data_dir)
    warm_page_cache(data_dir, 2 << 30)
    settle()
    proc = subprocess.run([PY, INPROC, mode, "--data-dir", data_dir]
                          + [str(e) for e in extra],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)
    shutil.rmtree(os.path.dirname(data_dir), ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError("inproc %s failed (%d):\n%s" % (
            mode, proc.returncode, proc.stderr[-3000:]))
    return json.loads(lines[-1])


def run_lag(args, tmp):
    # At 10 Hz, 11 s give over 100 samples, so p99 is not just the maximum.
    # One run's p99 hangs on a few stalls of the disk: the full mode runs
    # each case three times and keeps the run of median p99.
    seconds = 3 if args.quick else 11
    repeats = 1 if args.quick else 3
    out = []
    cases = [("1.6MB", False), ("13MB", False), ("small", False),
             ("1.6MB", True)]
    for case, fsync in cases:
        extra = ["--case", case, "--seconds", seconds,
                 "--time-per-file", 1, "--delete-closed"]
        if fsync:
            extra.append("--fsync")
        runs = []
        for _ in range(repeats):
            r = inproc("ingest", tmp, *extra)
            lag = r["lag"]
            log("lag %-6s fsync %-3s: %6.1f MB/s, p50 %.1f p99 %.1f max "
                "%.1f ms (%d samples)" % (
                    case, "on" if fsync else "off", r["MBps"],
                    lag["p50_ms"], lag["p99_ms"], lag["max_ms"], lag["n"]))
            runs.append(r)
        runs.sort(key=lambda r: r["lag"]["p99_ms"])
        r = runs[len(runs) // 2]
        r["p99_ms_of_runs"] = [x["lag"]["p99_ms"] for x in runs]
        out.append(r)
    return out


def run_streams(args, tmp):
    frames = 10 if args.quick else 30
    r = inproc("streams", tmp, "--streams", 32, "--frames", frames,
               "--fsync", "--time-per-file", 5 if args.quick else 10)
    log("32 streams: %d/%d frames written, %d lost, CPU %.1f%%, lag p99 "
        "%.1f ms" % (r["frames_written"], r["frames_expected"],
                     r["frames_lost"], 100 * r["cpu_share"],
                     r["lag"]["p99_ms"]))
    return r


def run_stop(args, tmp):
    r = inproc("stop", tmp, "--stream-seconds", 1.5 if args.quick else 2.0)
    states = r["states"]
    states.append(twistd_sigterm(tmp))
    for s in states:
        log("stop %-52s %7.1f ms" % (s["state"], 1e3 * s["latency_s"]))
    return states


def twistd_sigterm(tmp):
    """
    twistd tsagg (fsync on, the default) streaming at full speed gets
    SIGTERM: time until the process has exited.
    """
    work = os.path.join(tmp, "sigterm")
    shutil.rmtree(work, ignore_errors=True)
    data_dir = os.path.join(work, "data")
    os.makedirs(data_dir)
    sender = subprocess.Popen(
        [PY, throughput.SENDER, "--case", "1.6MB", "--seconds", "60"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    receiver = None
    try:
        port = json.loads(sender.stdout.readline())["port"]
        receiver = subprocess.Popen(
            throughput.receiver_command("tsagg", port, data_dir, fsync=True),
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        json.loads(sender.stdout.readline())        # accepted
        time.sleep(2.0)
        t0 = time.monotonic()
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(60)
        latency = time.monotonic() - t0
        return {"state": "twistd tsagg streaming 1.6MB frames, SIGTERM to "
                "exit, fsync on", "latency_s": latency,
                "exit_code": receiver.returncode}
    finally:
        for p in (receiver, sender):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def run_rss(args, tmp, lag_runs):
    seconds = 4 if args.quick else 8
    slow = inproc("ingest", tmp, "--case", "13MB", "--seconds", seconds,
                  "--slow-mbps", 20)
    fast = [r for r in lag_runs if r["case"] == "13MB" and not r["fsync"]]
    largest = len(scan_bytes("13MB"))
    out = {"slow": slow, "fast": fast[0] if fast else None,
           "largest_frame": largest}
    log("peak RSS 13MB frames: fast disk %s MB, slow disk (20 MB/s) %.0f MB, "
        "lag on the slow disk p99 %.0f ms" % (
            "%.0f" % (fast[0]["vmhwm_kb"] / 1024) if fast else "?",
            slow["vmhwm_kb"] / 1024, slow["lag"]["p99_ms"]))
    return out


def run_stages(args, tmp):
    """
    Where the reactor's time goes, per call of each stage, for the cases
    where writing weighs most: 13 MB frames, and 1.6 MB frames with fsync.
    """
    out = []
    for case, fsync in (("13MB", False), ("1.6MB", True)):
        extra = ["--case", case, "--seconds", 5, "--time-per-file", 1,
                 "--delete-closed", "--stages"]
        if fsync:
            extra.append("--fsync")
        r = inproc("ingest", tmp, *extra)
        out.append(r)
        log("stages %-6s fsync %-3s: %s" % (
            case, "on" if fsync else "off", ", ".join(
                "%s p50 %.1f p99 %.1f ms" % (name, v["p50_ms"], v["p99_ms"])
                for name, v in r.get("stages", {}).items())))
    return out


def run_profile(args, tmp):
    """
    py-spy on twistd tsagg receiving 1.6 MB and small frames.
    """
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(PY),
                                                 "py-spy")
    if not os.path.exists(spy):
        log("py-spy not installed: no profile")
        return None
    out = {}
    for case, count in (("1.6MB", 1200), ("small", 80000)):
        raw = os.path.join(tmp, "pyspy-%s.txt" % case)
        settle()
        try:
            throughput.run_once("tsagg", case, count,
                                os.path.join(tmp, "prof"),
                                profile=(spy, raw), timeout=300)
        except throughput.BenchError as e:
            log("profile of %s failed: %s" % (case, e))
            continue
        out[case] = report.summarize_pyspy(raw)
        log("py-spy %s: top self time %s" % (
            case, ", ".join("%s %.0f%%" % (f["frame"].split(" (")[0], f["pct"])
                            for f in out[case]["self"][:4])))
    return out


# -- main ----------------------------------------------------------------------

def meta(args):
    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", REPO] + list(cmd),
                                  stdout=subprocess.PIPE, text=True,
                                  stderr=subprocess.DEVNULL).stdout.strip()
        except OSError:
            return None
    import hashlib

    import spt3g
    import twisted
    import tsagg

    def digest(directory):
        h = hashlib.sha256()
        for name in sorted(os.listdir(directory)):
            if name.endswith(".py"):
                with open(os.path.join(directory, name), "rb") as f:
                    h.update(name.encode() + f.read())
        return h.hexdigest()[:12]
    installed = digest(os.path.dirname(tsagg.__file__))
    tree = digest(os.path.join(REPO, "tsagg"))
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "tsagg_dirty": bool(git("status", "--porcelain", "--", "tsagg")),
        "tsagg_from": os.path.dirname(tsagg.__file__),
        "tsagg_installed_sha": installed,
        "tsagg_matches_tree": installed == tree,
        "quick": args.quick, "runs": args.runs,
        "python": platform.python_version(),
        "spt3g": getattr(spt3g, "__version__", "?"),
        "twisted": twisted.__version__,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "command": "make bench" + (" BENCH_ARGS=--quick" if args.quick
                                   else ""),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer and shorter runs, no stage timers or "
                        "profile unless --only names them (about 4 "
                        "minutes; the full run takes about 11)")
    parser.add_argument("--runs", type=int, default=None,
                        help="throughput runs per receiver and case "
                        "(default 5, quick 3)")
    parser.add_argument("--out", default=os.path.join(BENCH_DIR, "results"))
    parser.add_argument("--docs", default=None,
                        help="write the docs page (performance.rst) here")
    parser.add_argument("--only", default=None,
                        help="comma-separated parts: " + ",".join(PARTS))
    parser.add_argument("--no-stages",
                        action="store_true", dest="no_stages",
                        help="no stage timers or profile")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: write the report, plot and "
                        "docs page again from --out's results.json")
    args = parser.parse_args()
    if args.render:
        with open(os.path.join(args.out, "results.json")) as f:
            results = json.load(f)
        results["targets"] = report.targets(results)
        write_outputs(args, results)
        return
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    if parts - set(PARTS):
        parser.error("unknown part(s) %s; the parts: %s" % (
            ",".join(sorted(parts - set(PARTS))), ",".join(PARTS)))
    if args.no_stages or (args.quick and not args.only):
        parts -= {"stages", "profile"}
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "tmp")
    os.makedirs(tmp, exist_ok=True)

    started = time.monotonic()
    results = {"meta": meta(args)}
    log("tsagg %s (commit %s), %s mode" % (
        results["meta"]["tsagg_from"], results["meta"]["commit"],
        "quick" if args.quick else "full"))
    try:
        if "throughput" in parts:
            results["throughput"] = run_throughput(args, tmp)
        if "peer" in parts:
            results["real_peer"] = run_real_peer(args, tmp)
        if "lag" in parts or "rss" in parts:
            results["lag"] = run_lag(args, tmp)
        if "streams" in parts:
            results["streams"] = run_streams(args, tmp)
        if "stop" in parts:
            results["stop"] = run_stop(args, tmp)
        if "rss" in parts:
            results["rss"] = run_rss(args, tmp, results.get("lag", []))
        if "stages" in parts:
            results["stages"] = run_stages(args, tmp)
        if "profile" in parts:
            results["profile"] = run_profile(args, tmp)
        if "quicklook" in parts:
            results["quick_look"] = run_quick_look(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["meta"]["seconds"] = time.monotonic() - started
    results["meta"]["loadavg_end"] = os.getloadavg()
    results["targets"] = report.targets(results)
    write_outputs(args, results)


def write_outputs(args, results):
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    md = report.markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    png = report.plot(results, os.path.join(args.out, "bench.png"))
    if args.docs:
        with open(args.docs, "w") as f:
            f.write(report.rst(results))
    print()
    print(md)
    log("done in %.0f s; wrote %s%s" % (
        results["meta"]["seconds"], args.out,
        "" if png else " (no plot: matplotlib missing)"))


if __name__ == "__main__":
    main()
