"""
Outages longer than the idle timeout, seen from outside: ``twistd tsagg``
(default options, but for a short idle timeout) recording a session that
spt3g's own C{G3NetworkSender} (C{tsagg-sim}) streams at about 2 MB/s, while
its data file system fills up, turns read-only or freezes.

Each outage lasts C{TSAGG_FAULT_OUTAGE} seconds (4 by default; ``make
faults`` runs 60), longer than the idle timeout, and then ends.  Every Scan
frame must be on disk exactly once and in order, in files that all begin
with the metadata, over one connection that was never dropped; over the
outage tsagg's CPU, RSS and log lines are measured for the table of
docs/faults.rst.
"""

import os
import signal
import subprocess
import time

from twisted.trial import unittest

from tsagg.frames import load_frame

from tests import faultlog
from tests.faultutil import check_data_dir
from tests.test_faults_disk import mount_tmpfs
from tests.test_integration import free_port
from tests.test_twistd import twistd_command
from tests.util import log_of, poll_until, spawn, spawn_sim, types_in

OUTAGE = float(os.environ.get("TSAGG_FAULT_OUTAGE", "4"))
# Before and after the outage, seconds of streaming.
AROUND = 3.0
IDLE_TIMEOUT = 2.0
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run(argv):
    subprocess.run(argv, check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT)


class OutageTestCase(unittest.TestCase):

    def record_through(self, fault, begin, end, data, extra=()):
        """
        Record a session through an outage of the data directory C{data}:
        C{begin()} starts it once frames are on disk, C{end()} ends it
        C{OUTAGE} seconds later.

        @return: The log of twistd.
        """
        logs = os.path.abspath(self.mktemp())
        os.makedirs(logs)
        port = free_port()
        duration = OUTAGE + 2 * AROUND + 2
        # 256 channels x 100 samples x 4 bytes, 20 frames a second: 2 MB/s.
        sim = spawn_sim(self, port, os.path.join(logs, "sim.log"),
                        channels=256, sample_rate=2000, frame_rate=20,
                        duration=duration, lead_in=3)
        tw = spawn(self, twistd_command() + [
            "-n", "--pidfile=", "--logfile=-", "tsagg", "--address",
            "127.0.0.1", "--port", str(port), "--data-dir", data,
            "--idle-timeout", str(IDLE_TIMEOUT)] + list(extra),
            os.path.join(logs, "twistd.log"))
        poll_until(self, lambda: "Connected to" in log_of(tw), 30,
                   "twistd to connect")
        poll_until(self, lambda: "Opened" in log_of(tw), 30,
                   "the session to begin")
        time.sleep(AROUND)
        cpu0, rss0 = cpu_seconds(tw.pid), rss_bytes(tw.pid)
        lines0 = log_of(tw).count("\n")
        begin()
        try:
            started = time.monotonic()
            peak = rss0
            while time.monotonic() - started < OUTAGE:
                time.sleep(0.2)
                peak = max(peak, rss_bytes(tw.pid))
            cpu = (cpu_seconds(tw.pid) - cpu0) / (time.monotonic() - started)
            lines = log_of(tw).count("\n") - lines0
        finally:
            end()
        poll_until(self, lambda: sim.poll() is not None, duration + 60,
                   "the session to end")
        poll_until(self, lambda: "(end)" in log_of(tw), 60,
                   "tsagg to write every held frame")
        tw.send_signal(signal.SIGTERM)
        tw.wait(timeout=30)
        log = log_of(tw)
        sent = int(log_of(sim).split("Sent ")[1].split()[0])
        kept = self.check(data, sent)
        per_minute = lines * 60.0 / OUTAGE
        faultlog.record(
            "%s for %d s, G3NetworkSender at 2 MB/s" % (fault, OUTAGE),
            tried=1, kept=kept, expected=sent, torn=0, outside=0,
            peak_bytes=peak - rss0, peak_kind="RSS growth of twistd",
            note="CPU %.1f%% of a core, %.0f log lines a minute"
            % (100 * cpu, per_minute))
        self.assertEqual(log.count("Connected to"), 1, "the connection was "
                         "dropped")
        self.assertLess(cpu, 0.10)
        self.assertLess(peak - rss0, 64 << 20)
        self.assertLessEqual(per_minute, max(30, 3 * 60 / OUTAGE))
        return log

    def check(self, data, sent):
        """
        Every Scan frame of the session once, in order, in files that begin
        with the metadata; nothing torn.

        @return: The number of Scan frames on disk.
        """
        files, torn = check_data_dir(data)
        self.assertEqual(torn, [])
        nums = []
        for path, raws in files:
            self.assertEqual(types_in(raws)[:2], "OW", path)
            nums += [load_frame(r)["frame_num"] for r in raws
                     if types_in([r]) == "S"]
        self.assertEqual(nums, list(range(2, 2 + sent)))
        return len(nums)


class DiskFullTests(OutageTestCase):

    def test_disk_full_longer_than_the_idle_timeout(self):
        mount = os.path.abspath(self.mktemp())
        mount_tmpfs(self, mount, "256m")
        data = os.path.join(mount, "data")
        os.makedirs(data)
        filler = os.path.join(mount, "filler")

        def fill():
            with open(filler, "wb") as f:
                chunk = b"\0" * (1 << 20)
                try:
                    while True:
                        f.write(chunk)
                        f.flush()
                except OSError:
                    pass

        log = self.record_through("disk full (real tmpfs)", fill,
                                  lambda: os.unlink(filler), data)
        self.assertIn("Writing under", log)
        self.assertIn("Writing works again", log)

    test_disk_full_longer_than_the_idle_timeout.timeout = 300


class ReadOnlyTests(OutageTestCase):

    def test_read_only_data_dir_longer_than_the_idle_timeout(self):
        mount = os.path.abspath(self.mktemp())
        mount_tmpfs(self, mount, "256m")
        data = os.path.join(mount, "data")
        os.makedirs(data)
        layered = []

        def read_only():
            # A read-only mount of the data directory laid over it: what an
            # operator's "mount -o remount,ro" does once nothing is open.
            run(["mount", "--bind", "-o", "ro", data, data])
            layered.append(data)

        def writable():
            run(["umount", layered.pop()])
        self.addCleanup(lambda: layered and subprocess.run(
            ["umount", "-l", layered.pop()]))
        log = self.record_through("read-only data directory (real read-only "
                                  "bind mount)", read_only, writable, data)
        self.assertIn("Read-only file system", log)
        self.assertIn("Writing works again", log)

    test_read_only_data_dir_longer_than_the_idle_timeout.timeout = 300


class StallTests(OutageTestCase):

    def test_one_write_stalled_longer_than_the_idle_timeout(self):
        image = os.path.abspath(self.mktemp())
        mount = os.path.abspath(self.mktemp())
        os.makedirs(mount)
        with open(image, "wb") as f:
            f.truncate(512 << 20)
        run(["mkfs.ext4", "-q", image])
        result = subprocess.run(["mount", "-o", "loop", image, mount],
                                capture_output=True)
        if result.returncode != 0:
            raise unittest.SkipTest("cannot mount a loop device here: %s"
                                    % result.stderr.decode().strip())
        self.addCleanup(subprocess.run, ["umount", "-l", mount])
        self.addCleanup(subprocess.run, ["fsfreeze", "-u", mount],
                        capture_output=True)
        data = os.path.join(mount, "data")
        os.makedirs(data)
        # Frozen, the file system blocks every write until it thaws: the
        # write in tsagg's reactor waits, as on a hung disk.
        self.record_through("one write stalled (ext4 frozen with fsfreeze)",
                            lambda: run(["fsfreeze", "-f", mount]),
                            lambda: run(["fsfreeze", "-u", mount]), data)

    test_one_write_stalled_longer_than_the_idle_timeout.timeout = 300
