"""
The agent as operators run it, with nothing faked: a crossbar router, the
agent started by ``ocs-agent-cli`` from a site config file, spt3g's own
``G3NetworkSender`` streaming SO sessions (``tsagg-sim``, with spt3g's
``G3TimestreamMap`` or so3g's ``G3SuperTimestream`` data), an
``OCSClient`` that starts, watches and stops the C{stream} Process, and
``ocs-client-cli listen`` subscribed to the agent's feeds.

Every child process imports this tree's tsagg (C{PYTHONPATH}), whatever
tsagg is installed.

crossbar comes from its own virtual environment (``make test`` builds it);
the test finds it through C{$TSAGG_CROSSBAR}, beside this Python or on the
C{PATH}, and is skipped, saying why, when there is none, unless
C{$TSAGG_REQUIRE_CROSSBAR} is set, as ``make test`` sets it.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from twisted.internet import defer, reactor, task, threads
from twisted.logger import Logger
from twisted.trial import unittest

from tests.foreign import have_so3g
from tests.test_integration import free_port
from tests.util import files_and_frames, repo_env, types_in
from tsagg.frames import load_frame, raw_type_code
from tsagg.quicklook import TICKS, read_channels

log = Logger()

INSTANCE = "timestream-agg"
STREAM_ID = "crate1slot2"


def find_executable(name):
    """
    A console script of this environment (beside C{sys.executable}), or
    else one on the C{PATH}.
    """
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which(name)


def find_crossbar():
    return os.environ.get("TSAGG_CROSSBAR") or find_executable("crossbar")


class Processes:
    """
    The subprocesses of one test, each in a session of its own so that its
    children (crossbar's workers) end with it.
    """

    def __init__(self, directory):
        self.directory = directory
        self.running = []

    def start(self, name, argv, env):
        out = open(os.path.join(self.directory, name + ".log"), "wb")
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.running.append((name, proc))
        return proc

    def output(self, name):
        with open(os.path.join(self.directory, name + ".log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, name, timeout=15.0):
        """
        Ask one process group to end (SIGINT, as OCS agents expect), and kill
        it if it has not ended after C{timeout} seconds.

        @return: The exit code.
        """
        for n, proc in self.running:
            if n == name:
                self.running.remove((n, proc))
                return self._end(proc, signal.SIGINT, timeout)

    def stop_all(self):
        while self.running:
            name, proc = self.running.pop()
            self._end(proc, signal.SIGTERM, 10.0)

    def _end(self, proc, sig, timeout):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (the leader gone or not) is killed.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return proc.wait()


def site_config_data(hub_port, crossbar, cbdir, instances):
    return {
        "hub": {"wamp_server": "ws://127.0.0.1:%d/ws" % hub_port,
                "wamp_http": "http://127.0.0.1:%d/call" % hub_port,
                "wamp_realm": "test_realm",
                "address_root": "observatory"},
        "hosts": {"localhost": {
            "crossbar": {"config-dir": cbdir, "bin": crossbar},
            "log-dir": None,
            "agent-instances": instances,
        }},
    }


def poll(predicate, timeout, what, step=0.25):
    """
    Call C{predicate} in a thread until it returns something true.

    @return: A L{Deferred} that fires with that value.
    """
    deadline = reactor.seconds() + timeout

    @defer.inlineCallbacks
    def run():
        last = None
        while reactor.seconds() < deadline:
            try:
                value = yield threads.deferToThread(predicate)
            except Exception as e:
                last = e
            else:
                if value:
                    return value
            yield task.deferLater(reactor, step, lambda: None)
        raise AssertionError("%s: not within %s s (last error: %r)"
                             % (what, timeout, last))
    return run()


class AgentTestCase(unittest.TestCase):
    """
    The pieces: crossbar, senders, agents, clients and a feed listener,
    each a process of its own, all ended with the test.
    """

    timeout = 150

    def setUp(self):
        self.crossbar = find_crossbar()
        if self.crossbar is None:
            reason = ("crossbar is not installed: `make test` installs it "
                      "into its own venv, or set TSAGG_CROSSBAR to its "
                      "executable")
            if os.environ.get("TSAGG_REQUIRE_CROSSBAR"):
                self.fail(reason)
            raise unittest.SkipTest(reason)
        if not os.access(self.crossbar, os.X_OK):
            self.fail("TSAGG_CROSSBAR=%s is not an executable" % self.crossbar)
        for tool in ("ocs-agent-cli", "ocs-local-support", "ocs-client-cli",
                     "tsagg-sim"):
            if find_executable(tool) is None:
                self.fail("%s is not installed; pip install . first" % tool)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.processes = Processes(self.dir)
        self.addCleanup(self.processes.stop_all)
        self.hub_port = free_port()
        self.sender_port = free_port()
        self.env = repo_env(OCS_CONFIG_DIR=self.dir, LOGLEVEL="info",
                            PYTHONUNBUFFERED="1")
        self.clients = {}

    # -- the pieces -----------------------------------------------------------

    def write_site_config(self, instances):
        """
        The SCF at C{$OCS_CONFIG_DIR/default.yaml} (JSON is YAML).
        """
        cbdir = os.path.join(self.dir, "crossbar")
        os.makedirs(cbdir, exist_ok=True)
        self.scf = os.path.join(self.dir, "default.yaml")
        with open(self.scf, "w") as f:
            json.dump(site_config_data(self.hub_port, self.crossbar, cbdir,
                                       instances), f, indent=2)
        return cbdir

    def original_block(self, instance_id, data_dir, auto_start):
        """
        The original agent's documented SCF block, pointed at this test's
        sender and data directory.
        """
        return {"agent-class": "TimestreamAggregator",
                "instance-id": instance_id,
                "arguments": [["--auto-start", auto_start],
                              ["--time-per-file", "3600"],
                              ["--data-dir", data_dir],
                              ["--create-data-dir", True],
                              ["--port", str(self.sender_port)],
                              ["--address", "127.0.0.1"]]}

    @defer.inlineCallbacks
    def start_crossbar(self, cbdir):
        subprocess.run(
            [find_executable("ocs-local-support"), "generate_crossbar_config",
             "--site-file", self.scf, "--site-host", "localhost"],
            env=self.env, check=True, stdout=subprocess.DEVNULL)
        config = os.path.join(cbdir, "config.json")
        with open(config) as f:
            text = f.read()
        # crossbar 26 refuses a WebSocket auto_ping_size under 12; the
        # template of ocs 0.12 has 4.
        self.assertIn('"auto_ping_size": 4', text)
        with open(config, "w") as f:
            f.write(text.replace('"auto_ping_size": 4',
                                 '"auto_ping_size": 12'))
        self.processes.start(
            "crossbar", [self.crossbar, "start", "--cbdir", cbdir], self.env)
        import requests
        url = "http://127.0.0.1:%d/call" % (self.hub_port,)
        yield poll(lambda: requests.post(url, json={}, timeout=2)
                   .status_code < 500, 60, "crossbar answering")

    def start_sender(self, lead_in=1, port=None, name="sender",
                     super_timestream=False, stream_id=STREAM_ID):
        """
        spt3g's G3NetworkSender, through C{tsagg-sim}: one long session
        after C{lead_in} seconds of ALIVE, of 16 channels at 200 Hz in
        frames of 20 samples; with C{super_timestream}, so3g's
        G3SuperTimestream data, under so3g's binding.
        """
        if super_timestream:
            command = [sys.executable, "-c", "import so3g, sys; from "
                       "tsagg.simulator import main; sys.exit(main())",
                       "--super-timestream"]
        else:
            command = [find_executable("tsagg-sim")]
        self.processes.start(
            name, command + ["--port", str(port or self.sender_port),
                             "--lead-in", str(lead_in),
                             "--duration", "300", "--frame-rate", "10",
                             "--sample-rate", "200",
                             "--channels", "16", "--stream-id", stream_id],
            self.env)

    def listen(self, selector):
        """
        C{ocs-client-cli listen --json}: a client subscribed to the feeds
        that C{selector} matches (C{..} is a wildcard).
        """
        self.processes.start(
            "listener", [find_executable("ocs-client-cli"), "listen",
                         "--json", selector], self.env)

    def feed_messages(self, instance_id, feed):
        """
        What the listener received so far on one feed of one agent: the
        blocks of each message, as OCS publishes a recorded feed.
        """
        topic = "observatory.%s.feeds.%s" % (instance_id, feed)
        messages = []
        for line in self.processes.output("listener").splitlines():
            if not line.startswith("{"):
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message["topic"] == topic:
                blocks, feed_info = message["message"]
                messages.append((blocks, feed_info))
        return messages

    def block_rows(self, instance_id, feed, block_name):
        """
        Every C{(timestamp, {field: value})} the listener received in one
        block of one feed, in order.
        """
        rows = []
        for blocks, _ in self.feed_messages(instance_id, feed):
            block = blocks.get(block_name)
            if block is None:
                continue
            for i, t in enumerate(block["timestamps"]):
                rows.append((t, {k: v[i] for k, v in block["data"].items()}))
        return rows

    def start_agent(self, instance_id):
        self.processes.start(
            instance_id, [find_executable("ocs-agent-cli"), "--instance-id",
                          instance_id, "--site-host", "localhost"],
            self.env)

    @defer.inlineCallbacks
    def client(self, instance_id):
        """
        An C{OCSClient} of the agent, once the agent is on the bus.
        """
        from ocs.ocs_client import OCSClient

        def connect():
            return OCSClient(instance_id, args=["--site-file", self.scf,
                                                "--site-host", "localhost"])
        client = yield poll(connect, 60, "agent %s on the bus"
                            % (instance_id,))
        return client

    def call(self, f, *args, **kw):
        """
        A blocking C{OCSClient} call, in a thread.
        """
        return threads.deferToThread(f, *args, **kw)

    @defer.inlineCallbacks
    def wait_for_data(self, client, predicate, what, timeout=30):
        def check():
            reply = client.stream.status()
            data = reply.session.get("data") or {}
            return data if predicate(data) else None
        data = yield poll(check, timeout, what)
        return data

    @defer.inlineCallbacks
    def timed_stop(self, client):
        """
        Stop the Process and wait for it to end.

        @return: The seconds from the stop call to the Process being
            done, and the final session.
        """
        def stop():
            began = time.monotonic()
            reply = client.stream.stop()
            assert reply.status == 0, reply
            reply = client.stream.wait(timeout=5)
            return time.monotonic() - began, reply
        elapsed, reply = yield self.call(stop)
        log.info("stream stop took {elapsed:.3f} s", elapsed=elapsed)
        self.assertEqual(reply.session["status"], "done", reply)
        self.assertTrue(reply.session["success"], reply)
        return elapsed, reply.session

    def assert_agent_log_clean(self, name):
        text = self.processes.output(name)
        for sign in ("CRASH", "Unhandled error", "Unhandled Error"):
            self.assertNotIn(sign, text, text[-4000:])



class AgentIntegrationTests(AgentTestCase):

    @defer.inlineCallbacks
    def test_records_live_and_stops_within_a_second(self):
        data_dir = os.path.join(self.dir, "data")
        cbdir = self.write_site_config(
            [self.original_block(INSTANCE, data_dir, True)])
        yield self.start_crossbar(cbdir)
        # Long enough for the agent to be up and connected before the
        # session begins, so that it records the session from its START.
        self.start_sender(lead_in=10)
        self.start_agent(INSTANCE)
        client = yield self.client(INSTANCE)

        # --auto-start True (JSON true in the SCF): recording already.
        first = yield self.wait_for_data(
            client, lambda d: d.get("frames_written", 0) >= 10,
            "frames recorded")
        self.assertTrue(first["connected"])
        self.assertEqual(first["stream_id"], STREAM_ID)
        self.assertEqual(first["address"], "127.0.0.1:%d"
                         % (self.sender_port,))
        session_id = first["session_id"]
        expected = os.path.join(data_dir, str(session_id)[:5], STREAM_ID,
                                "%d_000.g3" % (session_id,))
        self.assertEqual(first["current_file"], expected)
        # Live: the counters move while we watch.
        later = yield self.wait_for_data(
            client, lambda d: d["frames_written"] > first["frames_written"]
            and d["timestamp"] > first["timestamp"], "session.data updated")
        self.assertGreater(later["bytes_written"], first["bytes_written"])

        elapsed, session = yield self.timed_stop(client)
        self.assertLess(elapsed, 1.0)
        final = session["data"]
        self.assertIsNone(final["current_file"])
        self.assertEqual(final["last_file"], expected)

        # Start after stop: a new connection, a new file of the same
        # acquisition basename, the first one left as it was.
        size_before = os.path.getsize(expected)
        reply = yield self.call(client.stream.start)
        self.assertEqual(reply.status, 0, reply)
        second = yield self.wait_for_data(
            client, lambda d: d.get("frames_written", 0) >= 5
            and d.get("current_file"), "recording again")
        self.assertEqual(second["current_file"],
                         expected.replace("_000.g3", "_001.g3"))
        elapsed2, session2 = yield self.timed_stop(client)
        self.assertLess(elapsed2, 1.0)
        self.assertEqual(os.path.getsize(expected), size_before)

        files = files_and_frames(data_dir)
        self.assertEqual([path for path, _ in files],
                         [os.path.relpath(p, data_dir) for p in
                          (expected, expected.replace("_000", "_001"))])
        scan_numbers = []
        # The start after the stop goes on with the session in progress:
        # its file begins with tsagg's own Observation and Wiring (replayed,
        # so not counted as frames received), and the sender's identical
        # replay of them is not written again.
        replayed = (0, 2)
        for (path, raws), totals, ours in zip(
                files, (final, session2["data"]), replayed):
            types = types_in(raws)
            # Each file stands alone: metadata first, then the data.
            self.assertEqual(types[:2], "OW", path)
            self.assertEqual(set(types[2:]), {"S"}, path)
            self.assertEqual(len(raws), totals["frames_written"] + ours)
            self.assertEqual(sum(map(len, raws)), totals["bytes_written"])
            scan_numbers.extend(load_frame(r)["frame_num"] for r in raws
                                if types_in([r]) == "S")
        self.assertEqual(scan_numbers, sorted(set(scan_numbers)))
        self.assertEqual(final["flow_control_frames"]["start"], 1)
        self.assertEqual(final["frames_dropped_upstream"], 0)
        for totals in (final, session2["data"]):
            self.assertEqual(totals["bad_frames"], 0)
            self.assertIsNone(totals["last_error"])
        self.assertEqual(self.processes.stop(INSTANCE), 0)
        self.assert_agent_log_clean(INSTANCE)

    @defer.inlineCallbacks
    def test_auto_start_false_stays_idle_until_started(self):
        data_dir = os.path.join(self.dir, "data")
        cbdir = self.write_site_config(
            [self.original_block(INSTANCE, data_dir, False)])
        yield self.start_crossbar(cbdir)
        self.start_sender()
        self.start_agent(INSTANCE)
        client = yield self.client(INSTANCE)
        # The sender streams all along; the agent must not connect.
        yield task.deferLater(reactor, 3.0, lambda: None)
        reply = yield self.call(client.stream.status)
        self.assertEqual(reply.session, {}, reply)
        self.assertFalse(os.path.exists(data_dir))

        reply = yield self.call(client.stream.start)
        self.assertEqual(reply.status, 0, reply)
        yield self.wait_for_data(
            client, lambda d: d.get("frames_written", 0) >= 3,
            "recording once started")
        elapsed, session = yield self.timed_stop(client)
        self.assertLess(elapsed, 1.0)
        [(path, raws)] = files_and_frames(data_dir)
        self.assertEqual(len(raws), session["data"]["frames_written"])
        self.assertEqual(self.processes.stop(INSTANCE), 0)
        self.assert_agent_log_clean(INSTANCE)


SO3G_INSTANCE = "timestream-agg-so3g"

#: The quick look and the feeds of the tests below.
QUICK_LOOK_ARGS = [["--monitored-channels", "r0001", "7"],
                   ["--target-rate", "20"],
                   ["--feed-interval", "1"]]


class AgentFeedTests(AgentTestCase):
    """
    What a client subscribed to the agent's feeds sees, what
    C{session.degraded} says, and what the agent logs, under
    C{ocs-agent-cli} with a crossbar router.
    """

    def block(self, instance_id, data_dir, port, *arguments):
        return {"agent-class": "TimestreamAggregator",
                "instance-id": instance_id,
                "arguments": [["--auto-start", True],
                              ["--data-dir", data_dir],
                              ["--create-data-dir", True],
                              ["--port", str(port)],
                              ["--address", "127.0.0.1"]]
                + [list(a) for a in arguments]}

    def recorded_channels(self, data_dir, names):
        """
        The samples of C{names} in every Scan frame recorded under
        C{data_dir}, in order: the sent data, as tsagg's binding reads it.

        @return: The sample times in seconds, and C{{name: [values]}}.
        """
        times, values = [], {name: [] for name in names}
        for _, raws in files_and_frames(data_dir):
            for raw in raws:
                if raw_type_code(raw) != "S":
                    continue
                t, rows = read_channels(load_frame(raw), names)
                times.extend((t / TICKS).tolist())
                for name in names:
                    values[name].extend(rows[name].tolist())
        return times, values

    def check_quick_look(self, instance_id, data_dir):
        """
        The samples on the C{detectors} feed are the recorded data, every
        tenth sample (200 Hz to 20 Hz), from the first Scan frame on.
        """
        names = ["r0001", "r0007"]
        times, values = self.recorded_channels(data_dir, names)
        self.assertGreater(len(times), 400)
        for name in names:
            rows = self.block_rows(instance_id, "detectors", name)
            got_times = [t for t, _ in rows]
            got = [fields[name] for _, fields in rows]
            # The last frames may still have been on their way at the stop.
            self.assertGreater(len(got), 0.8 * len(times) / 10, name)
            self.assertEqual(got, values[name][::10][:len(got)], name)
            for t, expected in zip(got_times, times[::10]):
                self.assertAlmostEqual(t, expected, places=5)

    def check_status_records(self, instance_id):
        rows = self.block_rows(instance_id, "recorder", "recorder")
        self.assertGreaterEqual(len(rows), 4, rows)
        stamps = [t for t, _ in rows]
        for gap in [b - a for a, b in zip(stamps, stamps[1:])]:
            self.assertLess(abs(gap - 1.0), 0.5, stamps)
        later = rows[-1][1]
        self.assertIs(later["connected"], True)
        self.assertIs(later["degraded"], False)
        self.assertIs(later["file_open"], True)
        # 10 Scan frames and about 0.03 MB a second.
        self.assertGreater(later["frames_written_per_s"], 5)
        self.assertGreater(later["written_mb_per_s"], 0.01)
        self.assertLess(later["seconds_since_last_frame"], 2)
        self.assertEqual(later["frames_lost"], 0)
        disk = self.block_rows(instance_id, "recorder", "disk")
        self.assertTrue(disk and disk[-1][1]["free_bytes"] > 0)
        feed = self.feed_messages(instance_id, "recorder")[0][1]
        self.assertTrue(feed["record"])
        self.assertEqual(feed["agg_params"], {"frame_length": 60})

    @defer.inlineCallbacks
    def test_status_feed_and_quick_look_of_both_data_types(self):
        if not have_so3g():
            raise unittest.SkipTest("so3g is not installed")
        map_dir = os.path.join(self.dir, "data-map")
        super_dir = os.path.join(self.dir, "data-super")
        super_port = free_port()
        cbdir = self.write_site_config([
            self.block(INSTANCE, map_dir, self.sender_port,
                       *QUICK_LOOK_ARGS),
            self.block(SO3G_INSTANCE, super_dir, super_port,
                       *QUICK_LOOK_ARGS)])
        yield self.start_crossbar(cbdir)
        self.listen("observatory..feeds.")
        # The agents connect before the sessions begin.
        self.start_sender(lead_in=8)
        self.start_sender(lead_in=8, port=super_port, name="so3g-sender",
                          super_timestream=True)
        self.start_agent(INSTANCE)
        self.start_agent(SO3G_INSTANCE)
        clients = {}
        for instance in (INSTANCE, SO3G_INSTANCE):
            clients[instance] = yield self.client(instance)
        for instance, client in clients.items():
            data = yield self.wait_for_data(
                client, lambda d: d.get("frames_written", 0) >= 60,
                "%s recording" % (instance,), timeout=60)
            look = data["quick_look"]
            self.assertEqual(look["binding"], "spt3g")
            self.assertEqual(look["channels"], ["r0001", "r0007"])
            self.assertEqual(look["unreadable_frames"], 0, look)
            self.assertEqual(look["decimation"], 10)
        yield poll(lambda: len(self.block_rows(
            SO3G_INSTANCE, "recorder", "recorder")) >= 4, 30,
            "status records on the feed")
        for instance, client in clients.items():
            _, session = yield self.timed_stop(client)
            self.assertFalse(session["degraded"])
        # What was in flight reaches the listener.
        yield task.deferLater(reactor, 1.0, lambda: None)
        for instance, data_dir in ((INSTANCE, map_dir),
                                   (SO3G_INSTANCE, super_dir)):
            self.check_status_records(instance)
            self.check_quick_look(instance, data_dir)
            self.assertEqual(self.processes.stop(instance), 0)
            self.assert_agent_log_clean(instance)

    @defer.inlineCallbacks
    def test_degraded_and_the_log_of_a_refused_reconnecting_recording(self):
        data_dir = os.path.join(self.dir, "data")
        cbdir = self.write_site_config([
            self.block(INSTANCE, data_dir, self.sender_port,
                       ["--degraded-after", "3"])])
        yield self.start_crossbar(cbdir)
        # No sender yet: refused, again and again.
        self.start_agent(INSTANCE)
        client = yield self.client(INSTANCE)

        def session():
            return client.stream.status().session

        def degraded(value):
            return lambda: (lambda s: s if s.get("degraded") is value
                            else None)(session())
        refused = yield poll(degraded(True), 30, "degraded, no sender")
        [reason] = refused["data"]["degraded_reasons"]
        self.assertRegex(reason, r"^not connected to 127\.0\.0\.1:%d for "
                         r"\d+ s: connection refused$" % (self.sender_port,))

        self.start_sender(lead_in=1)
        yield poll(degraded(False), 60, "recording, not degraded")
        yield self.wait_for_data(client,
                                 lambda d: d.get("frames_written", 0) > 10,
                                 "frames recorded")

        # The sender goes away: degraded within the grace period.
        self.processes.stop("sender")
        gone = time.monotonic()
        down = yield poll(degraded(True), 30, "degraded, sender gone",
                          step=0.1)
        elapsed = time.monotonic() - gone
        log.info("degraded {elapsed:.1f} s after the sender went away",
                 elapsed=elapsed)
        self.assertGreaterEqual(elapsed, 2.5)
        self.assertLess(elapsed, 3 + 2.5)
        self.assertTrue(any(r.startswith("not connected") for r in
                            down["data"]["degraded_reasons"]))

        # Back again: cleared.
        self.start_sender(lead_in=1, name="sender-again")
        yield poll(degraded(False), 60, "not degraded once the sender is "
                   "back")
        elapsed, final = yield self.timed_stop(client)
        self.assertFalse(final["degraded"])

        # The quick look's Tasks, through OCS.
        reply = yield self.call(client.set_monitored_channels,
                                channels=["r0002", 3])
        self.assertEqual(reply.status, 0, reply)
        reply = yield self.call(client.set_monitored_channels.wait)
        self.assertTrue(reply.session["success"], reply)
        self.assertEqual(reply.session["data"]["channels"],
                         ["r0002", "r0003"])
        reply = yield self.call(client.set_target_rate, target_rate=5)
        reply = yield self.call(client.set_target_rate.wait)
        self.assertTrue(reply.session["success"], reply)
        self.assertEqual(reply.session["data"]["target_rate"], 5.0)
        reply = yield self.call(client.set_target_rate, target_rate=-1)
        reply = yield self.call(client.set_target_rate.wait)
        self.assertFalse(reply.session["success"], reply)
        self.assertEqual(self.processes.stop(INSTANCE), 0)
        self.assert_agent_log_clean(INSTANCE)

        text = self.processes.output(INSTANCE)
        address = "127.0.0.1:%d" % (self.sender_port,)
        self.assertIn("Connecting to %s, recording into" % (address,), text)
        self.assertIn("Cannot connect to %s: connection refused; next try "
                      "in " % (address,), text)
        self.assertRegex(text, r"Connected to %s after \d+ s \(connection "
                         r"refused, \d+ tries\)" % (address,))
        # The sender went away in the middle of its session: a break,
        # tried again at once.
        self.assertRegex(text, r"Connection to %s lost during session \d+: "
                         r"the sender closed the connection; next try in "
                         r"0\.1 s" % (re.escape(address),))
        self.assertIn("Degraded: not connected to %s for" % (address,), text)
        self.assertIn("No longer degraded: recording as it should", text)
        # Many refusals, logged once each time the trouble began (and
        # summarized at most once a minute).
        self.assertLessEqual(text.count("Cannot connect to"), 3, text)
        # Up to the agent's own shutdown: as it leaves, OCS's connection
        # to crossbar (a ClientService of autobahn's) may still log
        # Twisted's "Scheduling retry 1 to connect <TCP4ClientEndpoint
        # object at 0x...>"; that one is not the recording's.
        recording = text.split("caught SIGINT")[0]
        for noise in ("Scheduling retry", "Starting factory",
                      "Stopping factory", "object at 0x"):
            self.assertNotIn(noise, recording)
