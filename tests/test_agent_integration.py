"""
The agent as operators run it, with nothing faked: a crossbar router, the
agent started by ``ocs-agent-cli`` from a site config file, spt3g's own
``G3NetworkSender`` streaming SO sessions (``tsagg-sim``), and an
``OCSClient`` that starts, watches and stops the C{stream} Process.

crossbar comes from its own virtual environment (``make test`` builds it);
the test finds it through C{$TSAGG_CROSSBAR}, beside this Python or on the
C{PATH}, and is skipped, saying why, when there is none, unless
C{$TSAGG_REQUIRE_CROSSBAR} is set, as ``make test`` sets it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from twisted.internet import defer, reactor, task, threads
from twisted.logger import Logger
from twisted.trial import unittest

from tests.test_integration import free_port
from tests.util import files_and_frames, types_in
from tsagg.frames import load_frame

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


class AgentIntegrationTests(unittest.TestCase):

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
        for tool in ("ocs-agent-cli", "ocs-local-support", "tsagg-sim"):
            if find_executable(tool) is None:
                self.fail("%s is not installed; pip install . first" % tool)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.processes = Processes(self.dir)
        self.addCleanup(self.processes.stop_all)
        self.hub_port = free_port()
        self.sender_port = free_port()
        self.env = dict(os.environ, OCS_CONFIG_DIR=self.dir,
                        LOGLEVEL="info", PYTHONUNBUFFERED="1")
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

    def start_sender(self, lead_in=1):
        """
        spt3g's G3NetworkSender, through C{tsagg-sim}: one long session
        after C{lead_in} seconds of ALIVE.
        """
        self.processes.start(
            "sender", [find_executable("tsagg-sim"),
                       "--port", str(self.sender_port),
                       "--lead-in", str(lead_in),
                       "--duration", "300", "--frame-rate", "10",
                       "--channels", "16", "--stream-id", STREAM_ID],
            self.env)

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

    # -- the tests -----------------------------------------------------------

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
        for (path, raws), totals in zip(files, (final, session2["data"])):
            types = types_in(raws)
            # Each file stands alone: metadata first, then the data.
            self.assertEqual(types[:2], "OW", path)
            self.assertEqual(set(types[2:]), {"S"}, path)
            self.assertEqual(len(raws), totals["frames_written"])
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
