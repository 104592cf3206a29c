"""
Tests for L{tsagg.agent}: the agent's command line, its plugin registry, and
the C{stream} Process driven as OCS drives a non-blocking Process, in this
reactor, against loopback peers.
"""

import argparse
import importlib
import json
import os
from importlib.metadata import entry_points

from ocs import site_config
from ocs.ocs_feed import Feed
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest

from tsagg import agent, plugin
from tsagg.agent import TimestreamAggregator, make_parser, str_to_bool
from tsagg.clock import MonotonicClock
from tsagg.quicklook import QuickLook
from tsagg.service import RecordingService, tcp_endpoint_description

from tests import frames as F
from tests.test_quicklook import Published, map_frames
from tests.test_service import PeerFactory, fast_retry, wait_until
from tests.util import files_and_frames

#: The SCF block of the original agent's documentation, as written there.
ORIGINAL_SCF_BLOCK = {
    "agent-class": "TimestreamAggregator",
    "instance-id": "timestream-agg",
    "arguments": [["--auto-start", True],
                  ["--time-per-file", "3600"],
                  ["--data-dir", "/data/"],
                  ["--port", "50000"],
                  ["--address", "smurf-stream-sim"]],
}


def write_scf(directory, instances):
    """
    Write a site config file with one host, C{localhost}; YAML is a
    superset of JSON, so JSON is written.

    @return: The file's path.
    """
    os.makedirs(directory, exist_ok=True)
    scf = {
        "hub": {"wamp_server": "ws://127.0.0.1:1/ws",
                "wamp_http": "http://127.0.0.1:1/call",
                "wamp_realm": "test_realm",
                "address_root": "observatory"},
        "hosts": {"localhost": {"agent-instances": instances}},
    }
    path = os.path.join(directory, "default.yaml")
    with open(path, "w") as f:
        json.dump(scf, f, indent=2)
    return path


class BooleanTests(unittest.TestCase):

    def test_false_spellings(self):
        for value in (False, "False", "false", "FALSE", "0", 0, "no", "off",
                      " false "):
            self.assertIs(str_to_bool(value), False, value)

    def test_true_spellings(self):
        for value in (True, "True", "true", "TRUE", "1", 1, "yes", "on"):
            self.assertIs(str_to_bool(value), True, value)

    def test_anything_else_is_an_error(self):
        for value in ("", "maybe", "2", "Fasle", None):
            self.assertRaises(argparse.ArgumentTypeError, str_to_bool, value)


class ParserTests(unittest.TestCase):

    def parse(self, *argv):
        return make_parser().parse_args(list(argv))

    def test_defaults_are_the_original_agents(self):
        args = self.parse()
        self.assertIs(args.auto_start, False)
        self.assertEqual(args.time_per_file, 600)
        self.assertEqual(args.data_dir, "/data/")
        self.assertEqual(args.port, 50000)
        self.assertEqual(args.address, "localhost")
        self.assertEqual(args.stream_id, "unknown")
        self.assertEqual(args.gap_timeout, 10)
        self.assertEqual(args.idle_timeout, 30)
        self.assertIs(args.no_fsync, False)

    def test_defaults_of_the_feeds_and_the_quick_look(self):
        args = self.parse()
        self.assertEqual(args.monitored_channels, [])
        self.assertEqual(args.target_rate, 10.0)
        self.assertEqual(args.feed_interval, 5.0)
        self.assertEqual(args.degraded_after, 15.0)

    def test_monitored_channels(self):
        args = self.parse("--monitored-channels", "12", "r0345", "sq1_3")
        self.assertEqual(args.monitored_channels, ["r0012", "r0345", "sq1_3"])
        self.assertRaises(SystemExit, self.parse, "--monitored-channels",
                          "-1")

    def test_auto_start_false_is_false(self):
        for text in ("False", "false", "0"):
            self.assertIs(self.parse("--auto-start", text).auto_start, False)

    def test_auto_start_true_is_true(self):
        for text in ("True", "true", "1"):
            self.assertIs(self.parse("--auto-start", text).auto_start, True)

    def test_auto_start_alone_is_true(self):
        self.assertIs(self.parse("--auto-start").auto_start, True)
        self.assertIs(
            self.parse("--auto-start", "--port", "5").auto_start, True)

    def test_options_are_in_the_agent_options_group(self):
        parser = make_parser()
        [group] = [g for g in parser._action_groups
                   if g.title == "Agent Options"]
        names = {a.dest for a in group._group_actions}
        self.assertTrue({"auto_start", "time_per_file", "data_dir", "port",
                         "address", "stream_id", "gap_timeout",
                         "idle_timeout"} <= names)

    def test_adds_to_a_given_parser(self):
        parser = argparse.ArgumentParser()
        self.assertIs(make_parser(parser), parser)

    def test_bad_values_are_refused(self):
        for argv in (["--auto-start", "maybe"], ["--port", "0"],
                     ["--port", "70000"], ["--time-per-file", "-1"],
                     ["--gap-timeout", "0"], ["--stream-id", "../etc"],
                     ["--stream-id", "a/b"]):
            self.assertRaises(SystemExit, self.parse, *argv)


class SiteConfigTests(unittest.TestCase):
    """
    Arguments as OCS gives them: from the SCF, through C{site_config}.
    """

    def parse(self, block, *argv):
        path = write_scf(self.mktemp(), [block])
        return site_config.parse_args(
            agent_class="TimestreamAggregator", parser=make_parser(),
            args=["--site-file", path, "--site-host", "localhost"]
            + list(argv))

    def test_original_scf_block_works_as_written(self):
        args = self.parse(ORIGINAL_SCF_BLOCK)
        self.assertIs(args.auto_start, True)
        self.assertEqual(args.time_per_file, 3600)
        self.assertEqual(args.data_dir, "/data/")
        self.assertEqual(args.port, 50000)
        self.assertEqual(args.address, "smurf-stream-sim")
        self.assertEqual(args.instance_id, "timestream-agg")

    def test_json_false_in_the_scf_is_false(self):
        block = dict(ORIGINAL_SCF_BLOCK,
                     arguments=[["--auto-start", False]])
        self.assertIs(self.parse(block).auto_start, False)

    def test_command_line_overrides_the_scf(self):
        args = self.parse(ORIGINAL_SCF_BLOCK, "--auto-start", "false")
        self.assertIs(args.auto_start, False)


class PluginTests(unittest.TestCase):

    def test_registry_names_the_agent_class(self):
        self.assertEqual(plugin.package_name, "tsagg")
        info = plugin.agents["TimestreamAggregator"]
        module = importlib.import_module(info["module"])
        self.assertIs(getattr(module, info["entry_point"]), agent.main)

    def test_entry_point_is_installed(self):
        """
        C{ocs-agent-cli} finds plugins through the C{ocs.plugins} entry
        point of the installed distribution.
        """
        found = [ep for ep in entry_points(group="ocs.plugins")
                 if ep.name == "tsagg"]
        self.assertEqual(len(found), 1, "tsagg is not installed as an OCS "
                         "plugin; run pip install .")
        self.assertIs(found[0].load(), plugin)


class ServiceMakerTests(unittest.TestCase):

    def test_services_time_on_one_monotonic_clock(self):
        args = make_parser().parse_args(["--data-dir", self.mktemp()])
        make_service = agent.service_maker(args, reactor)
        first, second = make_service(), make_service()
        self.assertIsInstance(first.clock, MonotonicClock)
        self.assertIs(first.clock.reactor, reactor)
        self.assertIs(second.clock, first.clock)
        self.assertEqual(first.writer.wall_time, reactor.seconds)


class FakeAgent:
    """
    The parts of C{ocs.ocs_agent.OCSAgent} the aggregator uses: its feeds,
    and what is published to them, checked as OCS checks a recorded feed's
    messages.
    """

    def __init__(self):
        self.feeds = {}
        self.published = {}

    def register_feed(self, name, record=False, agg_params={},
                      buffer_time=0):
        self.feeds[name] = {"record": record, "agg_params": agg_params,
                            "buffer_time": buffer_time}
        self.published[name] = []

    def publish_to_feed(self, name, message):
        assert name in self.feeds, name
        if self.feeds[name]["record"]:
            for field, value in message["data"].items():
                Feed.verify_data_field_string(field)
                Feed.verify_message_data_type(value)
        self.published[name].append(message)

    def blocks(self, feed, block_name):
        return [m for m in self.published[feed]
                if m["block_name"] == block_name]


class FakeSession:
    """
    The parts of C{ocs.ocs_agent.OpSession} an operation uses; status moves
    only forward, as in OCS.
    """

    ORDER = ["starting", "running", "stopping", "done"]

    def __init__(self, status="running"):
        self.status = status
        self.data = {}
        self.degraded = False

    def set_status(self, status):
        assert self.ORDER.index(status) >= self.ORDER.index(self.status)
        self.status = status


class ProcessTestCase(unittest.TestCase):
    """
    Run the C{stream} Process as OCS runs a non-blocking one: the start
    function in the reactor, its Deferred firing when the Process ends.
    """

    @defer.inlineCallbacks
    def listen(self):
        self.peer = PeerFactory()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"
                                        ).listen(self.peer)
        self.addCleanup(port.stopListening)
        self.port = port
        return port.getHost().port

    def make_aggregator(self, port, retry_policy=fast_retry, endpoint=None,
                        create_data_dir=True, writer=None, watch_frames=None,
                        **kw):
        self.dir = self.mktemp()
        self.services = []
        self.agent = FakeAgent()

        def make_service():
            service = RecordingService(
                reactor, tcp_endpoint_description("127.0.0.1", port),
                self.dir, fsync=False, retry_policy=retry_policy,
                create_data_dir=create_data_dir,
                writer=None if writer is None else writer(),
                watch_frames=watch_frames)
            if endpoint is not None:
                service.endpoint = endpoint
            self.services.append(service)
            return service
        aggregator = TimestreamAggregator(
            self.agent, make_service, address="127.0.0.1:%d" % (port,),
            data_dir=self.dir, status_interval=0.05, **kw)
        self.addCleanup(aggregator.shutdown)
        return aggregator

    def start(self, aggregator):
        session = FakeSession()
        running = aggregator.start_aggregation(session, {})
        return session, running

    @defer.inlineCallbacks
    def connected(self):
        """
        Start the Process against a listening peer, and wait for it to
        connect.

        @return: The aggregator, the session, the Process's Deferred and the
            peer's protocol.
        """
        port = yield self.listen()
        aggregator = self.make_aggregator(port)
        session, running = self.start(aggregator)
        peer = yield self.peer.next_connection()
        return aggregator, session, running, peer

    @defer.inlineCallbacks
    def timed_stop(self, aggregator, session, running):
        """
        Stop as a client would and wait for the Process to end.

        @return: The seconds from the stop request to the end, and the
            Process's C{(ok, message)}.
        """
        began = reactor.seconds()
        ok, message = yield aggregator.stop_aggregation(session, {})
        self.assertTrue(ok, message)
        self.assertEqual(session.status, "stopping")
        result = yield running
        return reactor.seconds() - began, result


class StatusTests(ProcessTestCase):

    @defer.inlineCallbacks
    def test_session_data_is_the_live_status(self):
        aggregator, session, running, peer = yield self.connected()
        peer.transport.write(F.raw(F.observation()) + F.raw(F.scan(1))
                             + F.raw(F.scan(2)))
        yield wait_until(lambda: session.data.get("frames_written") == 3)
        data = session.data
        self.assertTrue(data["connected"])
        self.assertEqual(data["address"],
                         "127.0.0.1:%d" % (self.port.getHost().port,))
        self.assertEqual(data["data_dir"], self.dir)
        self.assertEqual(data["stream_id"], "crate1slot2")
        self.assertEqual(data["session_id"], 1700000000)
        self.assertEqual(data["files_written"], 1)
        self.assertTrue(data["current_file"].endswith(
            os.path.join("17000", "crate1slot2", "1700000000_000.g3")))
        for key in ("bytes_written", "last_frame_time", "reconnects",
                    "frames_dropped_upstream", "bad_frames", "last_error",
                    "timestamp"):
            self.assertIn(key, data)
        # What OCS sends to clients must encode as JSON.
        json.dumps(data)
        peer.transport.write(F.raw(F.scan(3)))
        yield wait_until(lambda: session.data["frames_written"] == 4)
        yield self.timed_stop(aggregator, session, running)

    @defer.inlineCallbacks
    def test_timestamp_is_the_wall_time_and_updates_on_the_clock(self):
        port = yield self.listen()
        aggregator = self.make_aggregator(
            port, clock=MonotonicClock(reactor), wall_time=lambda: 1234.5)
        session, running = self.start(aggregator)
        yield wait_until(lambda: session.data.get("connected"))
        self.assertEqual(session.data["timestamp"], 1234.5)
        yield self.timed_stop(aggregator, session, running)

    @defer.inlineCallbacks
    def test_session_data_after_stop_shows_the_closed_file(self):
        aggregator, session, running, peer = yield self.connected()
        peer.transport.write(F.raw(F.scan(1)))
        yield wait_until(lambda: session.data.get("frames_written") == 1)
        _, (ok, message) = yield self.timed_stop(aggregator, session,
                                                 running)
        self.assertTrue(ok)
        self.assertIn("1 frames", message)
        self.assertIsNone(session.data["current_file"])
        self.assertFalse(session.data["connected"])
        self.assertFalse(session.data["running"])
        self.assertIsNotNone(session.data["last_file"])


class StopTests(ProcessTestCase):
    """
    The Process ends within a second of a stop in every state, and the file
    ends at a frame boundary.
    """

    @defer.inlineCallbacks
    def test_stop_before_the_sender_is_there(self):
        port = yield self.listen()
        yield self.port.stopListening()
        aggregator = self.make_aggregator(
            port, retry_policy=lambda attempt: 3600.0)
        session, running = self.start(aggregator)
        yield wait_until(lambda: session.data.get("connected") is False)
        elapsed, (ok, _) = yield self.timed_stop(aggregator, session,
                                                 running)
        self.assertLess(elapsed, 1.0)
        self.assertTrue(ok)

    @defer.inlineCallbacks
    def test_stop_while_connecting(self):
        attempts = []

        class Hanging:
            def connect(self, factory):
                attempts.append("connecting")
                return defer.Deferred(
                    lambda d: attempts.append("cancelled"))
        aggregator = self.make_aggregator(1, endpoint=Hanging())
        session, running = self.start(aggregator)
        self.assertEqual(attempts, ["connecting"])
        elapsed, _ = yield self.timed_stop(aggregator, session, running)
        self.assertLess(elapsed, 1.0)
        self.assertEqual(attempts, ["connecting", "cancelled"])

    @defer.inlineCallbacks
    def test_stop_while_idle(self):
        aggregator, session, running, _ = yield self.connected()
        yield wait_until(lambda: session.data.get("connected"))
        elapsed, _ = yield self.timed_stop(aggregator, session, running)
        self.assertLess(elapsed, 1.0)
        yield wait_until(lambda: self.peer.lost == 1)

    @defer.inlineCallbacks
    def test_stop_mid_frame_keeps_whole_frames_only(self):
        aggregator, session, running, peer = yield self.connected()
        whole = [F.raw(F.observation()),
                 F.raw(F.scan(1, channels=100, samples=1000))]
        cut = F.raw(F.scan(2, channels=100, samples=1000))
        sent = b"".join(whole) + cut[:len(cut) // 2]
        peer.transport.write(sent)
        # The half frame's bytes may wait in the socket, below the read's
        # low-water mark (tsagg.lowwater): the whole frames are in.
        yield wait_until(
            lambda: aggregator.service.status["frames_received"] == 2)
        elapsed, _ = yield self.timed_stop(aggregator, session, running)
        self.assertLess(elapsed, 1.0)
        [(path, raws)] = files_and_frames(self.dir)
        self.assertEqual(raws, whole)

    @defer.inlineCallbacks
    def test_stop_while_frames_flow(self):
        aggregator, session, running, peer = yield self.connected()
        frame = F.raw(F.scan(1, channels=64, samples=200))
        for _ in range(200):
            peer.transport.write(frame)
        yield wait_until(lambda: session.data.get("frames_written", 0) > 0)
        elapsed, _ = yield self.timed_stop(aggregator, session, running)
        self.assertLess(elapsed, 1.0)
        [(path, raws)] = files_and_frames(self.dir)
        self.assertEqual(set(raws), {frame})

    @defer.inlineCallbacks
    def test_stop_before_the_start_function_ran(self):
        """
        OCS accepts a stop while the session is still C{starting}; the start
        function then ends at once without recording.
        """
        aggregator = self.make_aggregator(1)
        session = FakeSession(status="starting")
        ok, _ = yield aggregator.stop_aggregation(session, {})
        self.assertTrue(ok)
        session.set_status("running")
        ok, message = yield aggregator.start_aggregation(session, {})
        self.assertFalse(ok)
        self.assertEqual(self.services, [])

    @defer.inlineCallbacks
    def test_stop_when_not_recording_is_refused(self):
        aggregator = self.make_aggregator(1)
        ok, message = yield aggregator.stop_aggregation(FakeSession(), {})
        self.assertFalse(ok)

    @defer.inlineCallbacks
    def test_shutdown_ends_the_process_and_closes_the_file(self):
        aggregator, session, running, peer = yield self.connected()
        peer.transport.write(F.raw(F.scan(1)))
        yield wait_until(lambda: session.data.get("frames_written") == 1)
        yield aggregator.shutdown()
        self.assertIsNone(aggregator.service)
        [(path, raws)] = files_and_frames(self.dir)
        self.assertEqual(len(raws), 1)
        ok, _ = yield running
        self.assertTrue(ok)


class FailFastTests(ProcessTestCase):

    @defer.inlineCallbacks
    def test_missing_data_dir_ends_the_process_with_the_reason(self):
        port = yield self.listen()
        aggregator = self.make_aggregator(port, create_data_dir=False)
        session, running = self.start(aggregator)
        ok, message = yield running
        self.assertFalse(ok)
        self.assertIn("does not exist", message)
        self.assertIn(os.path.abspath(self.dir), message)
        self.assertEqual(self.peer.connections, [])


class RestartTests(ProcessTestCase):

    @defer.inlineCallbacks
    def test_start_after_stop_records_again_into_a_new_file(self):
        port = yield self.listen()
        aggregator = self.make_aggregator(port)
        sent = []
        for n in range(3):
            session, running = self.start(aggregator)
            peer = yield self.peer.next_connection()
            raw = F.raw(F.scan(n))
            sent.append(raw)
            peer.transport.write(F.raw(F.observation()) + raw)
            # Later starts take the session back from its last file: the
            # sender's Observation, identical to the one there, is not
            # written again, though the new file begins with it.
            written = 2 if n == 0 else 1
            yield wait_until(
                lambda: session.data.get("frames_written") == written)
            elapsed, (ok, _) = yield self.timed_stop(aggregator, session,
                                                     running)
            self.assertTrue(ok)
        files = files_and_frames(self.dir)
        # Same session id each time: the next free number, never an
        # overwrite.
        self.assertEqual(
            [path for path, _ in files],
            [os.path.join("17000", "crate1slot2", "1700000000_%03d.g3" % n)
             for n in range(3)])
        self.assertEqual([raws for _, raws in files],
                         [[F.raw(F.observation()), raw] for raw in sent])
        self.assertEqual(len(self.services), 3)


class QuickLookTests(ProcessTestCase):
    """
    The quick look publishes to the C{detectors} feed, and the Tasks change
    it while recording.
    """

    def make_quick_look(self, **kw):
        kw.setdefault("channels", ["r0001"])
        kw.setdefault("target_rate", 10.0)
        self.published = Published()
        look = QuickLook(
            lambda block: (self.agent.publish_to_feed("detectors", block),
                           self.published(block)), reactor, **kw)
        return look

    @defer.inlineCallbacks
    def test_samples_on_the_detectors_feed(self):
        look = self.make_quick_look()
        port = yield self.listen()
        aggregator = self.make_aggregator(port, quick_look=look,
                                          watch_frames=look)
        session, running = self.start(aggregator)
        peer = yield self.peer.next_connection()
        raws, data, times = map_frames(2)
        peer.transport.write(b"".join(raws))
        yield wait_until(lambda: look.status["frames_read"] == 2)
        yield wait_until(lambda: session.data.get("quick_look", {}).get(
            "samples_published") == 20)
        yield self.timed_stop(aggregator, session, running)
        got_times, got = self.published.channel("r0001")
        self.assertEqual(got, data[1, ::20].tolist())
        self.assertEqual(len(self.agent.published["detectors"]), 2)
        self.assertEqual(session.data["quick_look"]["channels"], ["r0001"])

    @defer.inlineCallbacks
    def test_tasks_change_the_quick_look_while_recording(self):
        look = self.make_quick_look()
        port = yield self.listen()
        aggregator = self.make_aggregator(port, quick_look=look,
                                          watch_frames=look)
        session, running = self.start(aggregator)
        peer = yield self.peer.next_connection()
        raws, data, _ = map_frames(2)
        peer.transport.write(raws[0])
        yield wait_until(lambda: look.status["frames_read"] == 1)

        task_session = FakeSession()
        ok, message = aggregator.set_monitored_channels(
            task_session, {"channels": [2, "r0003"]})
        self.assertTrue(ok, message)
        self.assertEqual(task_session.data["channels"], ["r0002", "r0003"])
        ok, message = aggregator.set_target_rate(
            task_session, {"target_rate": 20.0})
        self.assertTrue(ok, message)
        self.assertEqual(task_session.data["target_rate"], 20.0)

        peer.transport.write(raws[1])
        yield wait_until(lambda: look.status["frames_read"] == 2)
        yield self.timed_stop(aggregator, session, running)
        self.assertEqual(self.published.channel("r0001")[1],
                         data[1, 0:200:20].tolist())
        self.assertEqual(self.published.channel("r0002")[1],
                         data[2, 200:400:10].tolist())
        self.assertEqual(self.published.channel("r0003")[1],
                         data[3, 200:400:10].tolist())

    def test_tasks_refuse_what_is_no_channel_or_rate(self):
        look = self.make_quick_look()
        aggregator = self.make_aggregator(1, quick_look=look)
        ok, _ = aggregator.set_monitored_channels(FakeSession(),
                                                  {"channels": ["-3"]})
        self.assertFalse(ok)
        self.assertEqual(look.channels, ["r0001"])
        ok, _ = aggregator.set_target_rate(FakeSession(),
                                           {"target_rate": -1.0})
        self.assertFalse(ok)
        self.assertEqual(look.target_rate, 10.0)

    def test_no_channels_turns_it_off(self):
        look = self.make_quick_look()
        aggregator = self.make_aggregator(1, quick_look=look)
        ok, message = aggregator.set_monitored_channels(FakeSession(),
                                                        {"channels": []})
        self.assertTrue(ok)
        self.assertEqual(message, "Quick look off.")
        self.assertEqual(look.channels, [])


class DockerfileTests(unittest.TestCase):
    """
    No Docker engine runs here, so the image is checked for what the docs
    promise and for the install step that CI proves.
    """

    def instructions(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "Dockerfile")) as f:
            text = f.read().replace("\\\n", " ")
        return [line.strip() for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]

    def test_image_runs_the_agent_through_ocs_agent_cli(self):
        lines = self.instructions()
        self.assertEqual(lines[-1],
                         'ENTRYPOINT ["dumb-init", "ocs-agent-cli"]')
        env = " ".join(line for line in lines if line.startswith("ENV "))
        self.assertIn("OCS_CONFIG_DIR=/config", env)
        self.assertTrue(any(line.startswith(
            "RUN pip install --no-cache-dir '.[suprsync]' ")
            for line in lines), lines)
        self.assertTrue(any("chown ocs:ocs /data" in line for line in lines))
