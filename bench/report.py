"""
Turn the benchmark's results into targets (PASS/MISS), a Markdown report, a
PNG plot and the docs page.
"""

import collections
import re

MB = 1e6
MIB = 1 << 20


def _f(value, fmt="%.1f", none="n/a"):
    return none if value is None else fmt % value


# -- py-spy -------------------------------------------------------------------

_LINE = re.compile(r":\d+\)$")


def summarize_pyspy(path, top=12):
    """
    Self and inclusive time per function from py-spy's raw (collapsed
    stacks) output.  Lines are merged into their function.
    """
    self_t = collections.Counter()
    incl = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(n)
            total += n
            frames = [_LINE.sub(")", fr) for fr in stack.split(";")]
            self_t[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}

    def rows(counter, keep=lambda name: True):
        return [{"frame": name, "pct": 100.0 * n / total}
                for name, n in counter.most_common() if keep(name)][:top]
    return {"samples": total, "self": rows(self_t),
            "inclusive": rows(incl, lambda name: "tsagg/" in name)}


# -- targets ---------------------------------------------------------------------

def _status(ok):
    if ok is None:
        return "n/a"
    return "PASS" if ok else "MISS"


def targets(results):
    """
    Every target of the issue, for tsagg as it is.
    """
    out = []

    def add(measure, target, value, ok):
        out.append({"measure": measure, "target": target, "value": value,
                    "status": _status(ok)})

    def check(value, good):
        return None if value is None else good(value)

    summary = results.get("throughput", {}).get("summary", {})
    for case, least in (("1.6MB", 1.1), ("13MB", 1.0)):
        s = summary.get(case)
        if s:
            r = s.get("ratio_MBps")
            add("throughput tsagg / C++, %s frames" % case, ">= %.1f" % least,
                _f(r, "%.2f"), check(r, lambda v: v >= least))
    for case, most in (("1.6MB", 0.8), ("13MB", 0.8), ("small", 0.6)):
        s = summary.get(case)
        if s:
            r = s.get("ratio_cpu")
            add("CPU s/GB tsagg / C++, %s frames" % case, "<= %.1f" % most,
                _f(r, "%.2f"), check(r, lambda v: v <= most))
    s = summary.get("1.6MB")
    if s and "bare_ratio_cpu" in s:
        r = s["bare_ratio_cpu"]
        add("CPU s/GB tsagg / bare copy, 1.6MB frames", "<= 1.3",
            _f(r, "%.2f"), check(r, lambda v: v <= 1.3))
    s = summary.get("small")
    if s:
        r = s.get("ratio_fps")
        add("frames/s tsagg / C++, ~10 kB frames", ">= 0.8", _f(r, "%.2f"),
            check(r, lambda v: v >= 0.8))
    for r in results.get("lag", []):
        p99 = r["lag"]["p99_ms"]
        add("reactor lag p99 at full ingest, %s frames, fsync %s"
            % (r["case"], "on" if r["fsync"] else "off"), "<= 20 ms",
            _f(p99, "%.1f ms"), check(p99, lambda v: v <= 20.0))
    st = results.get("streams")
    if st:
        p99 = st["lag"]["p99_ms"]
        add("32 SO-rate streams: frames lost", "0", "%d" % st["frames_lost"],
            st["frames_lost"] == 0)
        add("32 SO-rate streams: reactor lag p99", "<= 20 ms",
            _f(p99, "%.1f ms"), check(p99, lambda v: v <= 20.0))
    stop = results.get("stop")
    if stop:
        worst = max(stop, key=lambda s: s["latency_s"])
        add("stop latency, worst state (%s)" % worst["state"], "<= 1 s",
            "%.3f s" % worst["latency_s"], worst["latency_s"] <= 1.0)
    ql = results.get("quick_look", {}).get("summary", {})
    for case, q in ql.items():
        r = q.get("ratio_MBps")
        add("throughput with quick look on / off, %s frames" % case,
            ">= 0.95", _f(r, "%.2f"), check(r, lambda v: v >= 0.95))
    rss = results.get("rss")
    if rss:
        limit = 256 * MIB + 3 * rss["largest_frame"]
        hwm = rss["slow"]["vmhwm_kb"] * 1024
        add("peak RSS, slow disk (13 MB frames)",
            "<= %.0f MiB" % (limit / MIB), "%.0f MiB" % (hwm / MIB),
            hwm <= limit)
        if rss.get("fast"):
            hwm = rss["fast"]["vmhwm_kb"] * 1024
            add("peak RSS, fast disk (13 MB frames)",
                "<= %.0f MiB" % (limit / MIB), "%.0f MiB" % (hwm / MIB),
                hwm <= limit)
    return out


# -- Markdown --------------------------------------------------------------------

def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def throughput_rows(results):
    rows = []
    summary = results.get("throughput", {}).get("summary", {})
    for case, s in summary.items():
        t, c = s["tsagg"], s["cpp"]
        b = s.get("bare", {})
        rows.append([
            "%s (%s B)" % (case, t["frame_bytes"]),
            _f(t["MBps"], "%.0f"), _f(c["MBps"], "%.0f"),
            _f(b.get("MBps"), "%.0f"),
            _f(s.get("ratio_MBps"), "**%.2f**"),
            _f(s.get("bare_ratio_MBps"), "%.2f"),
            _f(t["fps"], "%.0f"), _f(c["fps"], "%.0f"),
            _f(s.get("ratio_fps"), "%.2f"),
            _f(t["cpu_s_per_GB"], "%.2f"), _f(c["cpu_s_per_GB"], "%.2f"),
            _f(b.get("cpu_s_per_GB"), "%.2f"),
            _f(s.get("ratio_cpu"), "**%.2f**"),
            _f(s.get("bare_ratio_cpu"), "**%.2f**"),
            _f(t["faults_per_MB"], "%.0f"), _f(c["faults_per_MB"], "%.0f"),
            "%.0f / %.0f" % (t["vmhwm_kb"] / 1024, c["vmhwm_kb"] / 1024),
        ])
    return rows


THROUGHPUT_HEADER = ["frames", "tsagg MB/s", "C++ MB/s", "bare MB/s",
                     "tsagg / C++", "tsagg / bare",
                     "tsagg frames/s", "C++ frames/s", "ratio",
                     "tsagg CPU s/GB", "C++ CPU s/GB", "bare CPU s/GB",
                     "tsagg / C++", "tsagg / bare",
                     "tsagg faults/MB", "C++ faults/MB",
                     "VmHWM MiB tsagg / C++"]


def markdown(results):
    m = results["meta"]
    out = ["# tsagg vs spt3g's C++ G3Reader -> G3Writer", "",
           "%s, commit %s%s%s, %s mode (%d throughput runs per receiver), "
           "Python %s, spt3g %s, Twisted %s, %d CPUs, load average %.2f at "
           "the start and %.2f at the end (the machine is shared: outside "
           "load shows up as noise). Command: `%s`. Whole run: %.0f s." % (
               m["date"], m["commit"],
               " (tsagg/ modified)" if m.get("tsagg_dirty") else "",
               "" if m.get("tsagg_matches_tree", True) else
               " (the tsagg measured is not the work tree's: %s)"
               % m.get("tsagg_from"),
               "quick" if m["quick"] else "full", m["runs"], m["python"],
               m["spt3g"], m["twisted"], m["cpus"], m["loadavg_start"][0],
               m.get("loadavg_end", [float("nan")])[0],
               m["command"], m.get("seconds", 0)), ""]

    out += ["## Targets", "",
            _table(["measure", "target", "tsagg", ""],
                   [[t["measure"], t["target"], t["value"], t["status"]]
                    for t in results["targets"]]), ""]

    if "throughput" in results:
        out += ["## Throughput: loopback sender -> receiver -> local disk", "",
                "Medians of alternating runs (A = `twistd -n tsagg "
                "--no-fsync`, B = `G3Reader('tcp://') -> G3Writer`, C = a "
                "bare copy, `recv_into` + `write` of the same bytes with no "
                "framing, bench/bare_receiver.py); time "
                "from the sender's first byte to the last byte on disk; CPU "
                "= user+sys of the receiving process over the same span. "
                "G3Writer never fsyncs, so tsagg runs with --no-fsync here. "
                "faults/MB = minor page faults of the receiver per MB. "
                "Each run starts on a warmed page cache (this VM hands idle "
                "memory back to its host; the first write into it is "
                "several times slower, whichever receiver makes it).",
                "", _table(THROUGHPUT_HEADER, throughput_rows(results)), ""]
    peer = results.get("real_peer")
    if peer:
        rows = [[r["receiver"], r.get("run"),
                 _f(r.get("MBps"), "%.0f"), _f(r.get("cpu_s_per_GB"), "%.2f"),
                 r.get("error", "ok")] for r in peer]
        out += ["### The real peer: spt3g's G3NetworkSender, 1.6 MB frames",
                "", _table(["receiver", "run", "MB/s", "CPU s/GB", ""],
                           rows), ""]
    lag = results.get("lag", [])
    if lag:
        rows = [[r["case"], "on" if r["fsync"] else "off",
                 _f(r["MBps"], "%.0f"), _f(r["cpu_s_per_GB"], "%.2f"),
                 _f(r["lag"]["p50_ms"]), _f(r["lag"]["p99_ms"]),
                 _f(r["lag"]["max_ms"]), r["lag"]["n"],
                 "%.0f" % (r["vmhwm_kb"] / 1024),
                 " / ".join(_f(x) for x in r.get("p99_ms_of_runs", []))]
                for r in lag]
        out += ["## Reactor lag at full ingest", "",
                "RecordingService in the bench process, a 10 Hz LoopingCall "
                "in the same reactor; files rotate every second (closed "
                "files are removed by another process). Percentiles are "
                "nearest-rank: with under 100 samples p99 is the maximum. "
                "The full mode runs each case three times and shows the run "
                "of median p99; the last column has the p99 of every run.",
                "",
                _table(["frames", "fsync", "MB/s", "CPU s/GB",
                        "lag p50 ms", "p99 ms", "max ms", "samples",
                        "VmHWM MiB", "p99 ms of each run"], rows),
                ""]
    st = results.get("streams")
    if st:
        out += ["## 32 SO-rate streams in one process", "",
                "32 RecordingServices (fsync on, %g s files) fed by 32 spt3g "
                "G3NetworkSenders, each 1000 channels x 200 samples int32 "
                "once a second, for %d s." % (st["time_per_file"],
                                              st["frames_per_stream"]), "",
                _table(["frames expected", "written", "lost",
                        "dropped upstream", "files", "CPU share of one core",
                        "lag p50 ms", "p99 ms", "max ms", "VmHWM MiB"],
                       [[st["frames_expected"], st["frames_written"],
                         st["frames_lost"], st["frames_dropped_upstream"],
                         st["files"], "%.1f%%" % (100 * st["cpu_share"]),
                         _f(st["lag"]["p50_ms"]), _f(st["lag"]["p99_ms"]),
                         _f(st["lag"]["max_ms"]),
                         "%.0f" % (st["vmhwm_kb"] / 1024)]]), ""]
    stop = results.get("stop")
    if stop:
        out += ["## Stop latency", "",
                "From the moment the stop was due (a timer, so a busy "
                "reactor's delay counts) to stopService()'s Deferred "
                "firing, file closed.", "",
                _table(["state", "latency ms"],
                       [[s["state"], "%.1f" % (1e3 * s["latency_s"])]
                        for s in stop]), ""]
    rss = results.get("rss")
    if rss:
        rows = []
        if rss.get("fast"):
            f = rss["fast"]
            rows.append(["fast (local disk)", _f(f["MBps"], "%.0f"),
                         "%.0f" % (f["vmhwm_kb"] / 1024),
                         _f(f["lag"]["p99_ms"])])
        s = rss["slow"]
        rows.append(["slow (20 MB/s)", _f(s["MBps"], "%.0f"),
                     "%.0f" % (s["vmhwm_kb"] / 1024), _f(s["lag"]["p99_ms"])])
        out += ["## Peak memory, 13 MB frames", "",
                "VmHWM of the recording process; the slow disk is a pipe "
                "drained into the file at 20 MB/s (RotatingWriter's opener).",
                "", _table(["disk", "MB/s", "VmHWM MiB", "lag p99 ms"], rows),
                ""]
    out += _quick_look_md(results)
    stages = results.get("stages")
    if stages:
        rows = []
        for r in stages:
            for name, v in r.get("stages", {}).items():
                rows.append(["%s, fsync %s" % (r["case"],
                                               "on" if r["fsync"] else "off"),
                             name, v["n"], _f(v["p50_ms"], "%.2f"),
                             _f(v["p99_ms"], "%.2f"), _f(v["max_ms"], "%.2f"),
                             _f(v["total_s"], "%.2f")])
            rows.append(["%s, fsync %s" % (r["case"],
                                           "on" if r["fsync"] else "off"),
                         "**reactor lag (10 Hz LoopingCall)**", r["lag"]["n"],
                         _f(r["lag"]["p50_ms"], "%.2f"),
                         _f(r["lag"]["p99_ms"], "%.2f"),
                         _f(r["lag"]["max_ms"], "%.2f"), ""])
        out += ["## Where the reactor's time goes (stage timers)", "",
                "Each call of a stage timed in the reactor thread while "
                "ingesting at full speed, files rotating every second. "
                "Stages nest: dataReceived holds the split, the CRC checks "
                "and framesReceived, which writes the first 1 MiB of the "
                "read's frames (the rest goes in the next reactor turns); "
                "the fsync of a closed file runs in a thread.", "",
                _table(["case", "stage", "calls", "p50 ms", "p99 ms",
                        "max ms", "total s"], rows), ""]
    prof = results.get("profile")
    if prof:
        for case, p in prof.items():
            out += ["## py-spy: twistd tsagg receiving %s frames (%d samples)"
                    % (case, p["samples"]), "",
                    _table(["self %", "function"],
                           [["%.1f" % r["pct"], "`%s`" % r["frame"]]
                            for r in p["self"][:10]]), "",
                    _table(["inclusive %", "tsagg function"],
                           [["%.1f" % r["pct"], "`%s`" % r["frame"]]
                            for r in p["inclusive"][:10]]), ""]
    return "\n".join(out)


def _quick_look_rows(results):
    ql = results.get("quick_look", {})
    return [[case, q["frames_per_run"], _f(q["off_MBps"], "%.0f"),
             _f(q["on_MBps"], "%.0f"), _f(q["ratio_MBps"], "**%.3f**"),
             _f(q["off_cpu_s_per_GB"], "%.2f"),
             _f(q["on_cpu_s_per_GB"], "%.2f"), _f(q["frames_read"], "%.0f")]
            for case, q in ql.get("summary", {}).items()]


QUICK_LOOK_HEADER = ["frames", "frames a run", "off MB/s", "on MB/s",
                     "on / off", "off CPU s/GB", "on CPU s/GB",
                     "frames read by the quick look"]


def _quick_look_text(results):
    ql = results["quick_look"]
    return ("The OCS agent's recording service (tsagg.agent.service_maker, "
            "bench/ql_receiver.py) with no quick look and with one on "
            "channels %s at %g samples a second, alternating (off on on off "
            "...), in the same run; medians of MB/s from the sender's first "
            "byte to the last byte on disk. The sender sends faster than real time, so the "
            "quick look reads only what its real-time credit allows; every "
            "frame of 1 s of data at the target rate costs it about 1 ms "
            "in the reactor." % (ql["channels"], ql["target_rate"]))


def _quick_look_md(results):
    if "quick_look" not in results:
        return []
    return ["## The quick look's cost", "", _quick_look_text(results), "",
            _table(QUICK_LOOK_HEADER, _quick_look_rows(results)), ""]


# -- reStructuredText (docs/performance.rst) ----------------------------------

def _rst_table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    sep = "  ".join("=" * w for w in widths)
    lines = [sep, "  ".join(str(h).ljust(w) for h, w in zip(header, widths)),
             sep]
    for row in rows:
        lines.append("  ".join(str(c).replace("**", "").replace("`", "")
                               .ljust(w) for c, w in zip(row, widths)))
    lines.append(sep)
    return "\n".join(lines)


def rst(results):
    m = results["meta"]
    title = "Performance"
    out = [
           ".. The numbers below are written by bench/run.py --docs; "
           "edit the generator, not the numbers.", "",
           title, "=" * len(title), "",
           "tsagg is measured against what the original OCS agent used: "
           "spt3g's C++ ``G3Reader('tcp://host:port')`` feeding a "
           "``G3Writer``.  One sender serves identical pre-serialized frames "
           "over loopback to each receiver in turn (A B A B ...); the time "
           "runs from the sender's first byte to the last byte on disk, and "
           "CPU is user+sys of the receiving process.", "",
           "Run it with::", "",
           "    make bench                      # full, about 11 minutes",
           "    make bench BENCH_ARGS=--quick   # about 4 minutes", "",
           "Each run starts on a warmed page cache: on this VM, memory "
           "left idle is handed back to the host, and the first write "
           "into it is several times slower, whichever receiver makes it.",
           "",
           "It prints every target as PASS or MISS and writes "
           "``bench/results/results.md``, ``results.json`` and "
           "``bench.png``.  The numbers below: %s, commit %s, %s mode, "
           "%d CPUs (load average %.2f at the start, %.2f at the end), "
           "Python %s, spt3g %s, Twisted %s." % (
               m["date"], m["commit"], "quick" if m["quick"] else "full",
               m["cpus"], m["loadavg_start"][0],
               m.get("loadavg_end", [float("nan")])[0], m["python"],
               m["spt3g"], m["twisted"]), ""]
    out += ["Targets", "-------", "",
            _rst_table(["measure", "target", "tsagg", ""],
                       [[t["measure"], t["target"], t["value"], t["status"]]
                        for t in results["targets"]]), ""]
    if "throughput" in results:
        hdr = ["frames", "tsagg MB/s", "C++ MB/s", "bare MB/s",
               "tsagg / C++", "tsagg / bare", "fr/s tsagg / C++",
               "tsagg CPU s/GB", "C++ CPU s/GB", "bare CPU s/GB",
               "tsagg / C++", "tsagg / bare"]
        rows = [r[:6] + r[8:14] for r in throughput_rows(results)]
        out += ["Throughput", "----------", "",
                "Medians of %d alternating runs per receiver; tsagg runs "
                "as ``twistd -n tsagg --no-fsync`` (G3Writer never fsyncs). "
                "The bare copy (``bench/bare_receiver.py``) receives the "
                "same bytes with ``recv_into`` and writes them as they came, "
                "with no framing: the limit of any receiver." % m["runs"],
                "", _rst_table(hdr, rows), ""]
    lag = results.get("lag", [])
    if lag:
        out += ["Reactor lag at full ingest", "--------------------------",
                "", "A 10 Hz ``LoopingCall`` in the reactor that records, "
                "files rotating every second.", "",
                _rst_table(["frames", "fsync", "MB/s", "p50 ms",
                            "p99 ms", "max ms"],
                           [[r["case"], "on" if r["fsync"] else "off",
                             _f(r["MBps"], "%.0f"), _f(r["lag"]["p50_ms"]),
                             _f(r["lag"]["p99_ms"]), _f(r["lag"]["max_ms"])]
                            for r in lag]), ""]
    st = results.get("streams")
    if st:
        out += ["32 SO-rate streams", "------------------", "",
                "One process, 32 services, 32 spt3g ``G3NetworkSender`` peers "
                "(1000 channels x 200 Hz int32, a frame a second, fsync on): "
                "%d of %d frames written, %d lost, %.1f%% of one core, "
                "reactor lag p99 %s ms." % (
                    st["frames_written"], st["frames_expected"],
                    st["frames_lost"], 100 * st["cpu_share"],
                    _f(st["lag"]["p99_ms"])), ""]
    stop = results.get("stop")
    if stop:
        out += ["Stop latency", "------------", "",
                _rst_table(["state", "ms"],
                           [[s["state"], "%.1f" % (1e3 * s["latency_s"])]
                            for s in stop]), ""]
    if "quick_look" in results:
        out += ["The quick look's cost", "---------------------", "",
                _quick_look_text(results), "",
                _rst_table(QUICK_LOOK_HEADER, _quick_look_rows(results)), ""]
    rss = results.get("rss")
    if rss:
        out += ["Peak memory", "-----------", "",
                "VmHWM with 13 MB frames: %s MiB on the local disk, %.0f MiB "
                "on a 20 MB/s disk." % (
                    "%.0f" % (rss["fast"]["vmhwm_kb"] / 1024)
                    if rss.get("fast") else "n/a",
                    rss["slow"]["vmhwm_kb"] / 1024), ""]
    out += [".. image:: ../bench/results/bench.png", "   :width: 100%", "",
            # Written by hand: what the numbers mean and what was tried.
            ".. include:: performance_notes.inc", ""]
    return "\n".join(out)


# -- plot ------------------------------------------------------------------------

def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))

    ax = axes[0][0]
    tp = results.get("throughput")
    kinds = [("tsagg", "twistd tsagg", "tab:blue"),
             ("cpp", "G3Reader -> G3Writer", "tab:orange"),
             ("bare", "bare copy (recv_into + write)", "tab:gray")]
    if tp:
        cases = list(tp["summary"])
        width = 0.8 / len(kinds)
        for key, title in (("MBps", "Throughput"),
                           ("cpu_s_per_GB", "CPU cost")):
            ax = axes[0][0] if key == "MBps" else axes[0][1]
            for j, (kind, label, color) in enumerate(kinds):
                xs = [i + (j - (len(kinds) - 1) / 2) * width
                      for i in range(len(cases))]
                ax.bar(xs, [tp["summary"][c][kind][key] or 0 for c in cases],
                       width, color=color, label=label)
                for i, c in enumerate(cases):
                    pts = [r[key] for r in tp["runs"]
                           if r["case"] == c and r["receiver"] == kind]
                    ax.plot([xs[i]] * len(pts), pts, "k.", ms=3)
            ax.set_xticks(range(len(cases)))
            ax.set_xticklabels(cases)
            ax.set_title(title)
            ax.set_ylabel("MB/s to disk (median, dots = runs)"
                          if key == "MBps" else "receiver CPU s per GB")
        axes[0][0].legend(fontsize=8)

    ax = axes[1][0]
    rows = [("%s%s" % (r["case"], " fsync" if r["fsync"] else ""), r["lag"])
            for r in results.get("lag", [])]
    if results.get("streams"):
        rows.append(("32 streams", results["streams"]["lag"]))
    if results.get("rss"):
        rows.append(("13MB slow disk", results["rss"]["slow"]["lag"]))
    if rows:
        xs = range(len(rows))
        for k, (key, off) in enumerate((("p50_ms", -0.27), ("p99_ms", 0),
                                        ("max_ms", 0.27))):
            ax.bar([x + off for x in xs],
                   [max(r[1][key] or 0, 0.01) for r in rows], 0.27,
                   label=key.replace("_ms", ""))
        ax.axhline(20, color="red", lw=1, ls="--", label="target p99")
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([r[0] for r in rows], rotation=25, ha="right",
                           fontsize=8)
        ax.set_ylabel("LoopingCall lateness, ms")
        ax.set_title("Reactor lag while ingesting")
        ax.legend(fontsize=8)

    ax = axes[1][1]
    stop = results.get("stop", [])
    if stop:
        ax.barh(range(len(stop)), [1e3 * s["latency_s"] for s in stop],
                color="tab:green")
        ax.axvline(1000, color="red", lw=1, ls="--", label="target")
        ax.set_xscale("log")
        ax.set_yticks(range(len(stop)))
        ax.set_yticklabels([s["state"][:48] for s in stop], fontsize=7)
        ax.set_xlabel("ms")
        ax.set_title("Stop latency")
        ax.legend(fontsize=8)
    m = results["meta"]
    fig.suptitle("tsagg vs spt3g C++ pipeline (%s, commit %s, %s)" % (
        m["date"], m["commit"], "quick" if m["quick"] else "full"))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
