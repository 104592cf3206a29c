"""
Tests for L{tsagg.tap} and the C{twistd tsagg} plugin.
"""

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from tsagg import tap
from tsagg.clock import MonotonicClock
from tsagg.service import RecordingService


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(unittest.TestCase):

    def test_defaults_of_the_original_agent(self):
        options = parse()
        self.assertEqual(options["address"], "localhost")
        self.assertEqual(options["port"], 50000)
        self.assertEqual(options["data-dir"], "/data/")
        self.assertEqual(options["time-per-file"], 600.0)
        self.assertEqual(options["gap-timeout"], 10.0)
        self.assertEqual(options["idle-timeout"], 30.0)

    def test_values(self):
        options = parse("--address", "smurf-stream-sim", "--port", "4536",
                        "--data-dir", "/tmp/x", "--time-per-file", "3",
                        "--stream-id", "crate1slot2", "--gap-timeout", "5")
        self.assertEqual(options["port"], 4536)
        self.assertEqual(options["time-per-file"], 3.0)
        self.assertEqual(options["stream-id"], "crate1slot2")

    def test_rejects_bad_values(self):
        for argv in (["--port", "0"], ["--port", "70000"],
                     ["--port", "x"], ["--time-per-file", "0"],
                     ["--gap-timeout", "-1"], ["--stream-id", "../up"],
                     ["--stream-id", ""], ["--data-dir", ""]):
            self.assertRaises(usage.UsageError, parse, *argv)


class MakeServiceTests(unittest.TestCase):

    def test_service_from_options(self):
        reactor = MemoryReactorClock()
        service = tap.makeService(
            parse("--address", "10.0.0.5", "--port", "4536", "--data-dir",
                  self.mktemp(), "--time-per-file", "3", "--no-fsync"),
            reactor=reactor)
        self.assertIsInstance(service, RecordingService)
        self.assertEqual(service.writer.policy.time_per_file, 3.0)
        self.assertFalse(service.writer.fsync)
        self.assertIsInstance(service.clock, MonotonicClock)
        self.assertIs(service.clock.reactor, reactor)
        self.assertEqual(service.writer.wall_time, reactor.seconds)
        service.startService()
        [(host, port, _factory, timeout, _bind)] = reactor.tcpClients
        self.assertEqual((host, port), ("10.0.0.5", 4536))
        service.stopService()

    def test_endpoint_overrides_address(self):
        reactor = MemoryReactorClock()
        service = tap.makeService(
            parse("--endpoint", "tcp:host=127.0.0.2:port=7", "--data-dir",
                  self.mktemp()), reactor=reactor)
        service.startService()
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.2", 7))
        service.stopService()

    def test_ipv6_address(self):
        reactor = MemoryReactorClock()
        service = tap.makeService(
            parse("--address", "::1", "--data-dir", self.mktemp()),
            reactor=reactor)
        service.startService()
        self.assertEqual(reactor.tcpClients[0][:2], ("::1", 50000))
        service.stopService()


class PluginTests(unittest.TestCase):

    def test_plugin_is_found(self):
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("tsagg", makers)
        self.assertIsInstance(makers["tsagg"].options(), tap.Options)
