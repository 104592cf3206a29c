"""
Tests for L{tsagg.tap} and the C{twistd tsagg} plugin.
"""

import os
import signal
import subprocess

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from tsagg import tap
from tsagg.clock import MonotonicClock
from tsagg.service import RecordingService


def data_dir(testcase):
    path = testcase.mktemp()
    os.makedirs(path)
    return path


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
                  data_dir(self), "--time-per-file", "3", "--no-fsync",
                  "--min-free", "2G"),
            reactor=reactor)
        service = service.recording
        self.assertIsInstance(service, RecordingService)
        self.assertEqual(service.writer.min_free.bytes_of(1), 2 << 30)
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
                  data_dir(self)), reactor=reactor)
        service.startService()
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.2", 7))
        service.stopService()

    def test_ipv6_address(self):
        reactor = MemoryReactorClock()
        service = tap.makeService(
            parse("--address", "::1", "--data-dir", data_dir(self)),
            reactor=reactor)
        service.startService()
        self.assertEqual(reactor.tcpClients[0][:2], ("::1", 50000))
        service.stopService()


    def test_the_floor_defaults_to_one_percent(self):
        options = parse("--data-dir", "x")
        self.assertEqual(options["min-free"].bytes_of(1000), 10)

    def test_a_bad_floor_is_a_usage_error(self):
        self.assertRaises(usage.UsageError, parse, "--min-free", "lots")


class FailFastTests(unittest.TestCase):
    """
    A data directory that cannot be used ends twistd before it connects,
    with one line that says why.
    """

    def assertFailsFast(self, path, why):
        reactor = MemoryReactorClock()
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(parse("--data-dir", path), reactor=reactor)
        message = str(caught.exception.code)
        self.assertTrue(message.startswith("tsagg: "), message)
        self.assertIn(why, message)
        self.assertNotIn("\n", message)
        self.assertEqual(reactor.tcpClients, [])

    def test_missing_data_dir(self):
        self.assertFailsFast(os.path.abspath(self.mktemp()), "does not exist")

    def test_data_dir_that_is_a_file(self):
        path = self.mktemp()
        open(path, "w").close()
        self.assertFailsFast(path, "is not a directory")

    def test_read_only_data_dir(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m",
                                 "tmpfs", path], capture_output=True)
        if result.returncode != 0:
            raise unittest.SkipTest("cannot mount a tmpfs here: %s"
                                    % result.stderr.decode().strip())
        self.addCleanup(subprocess.run, ["umount", "-l", path])
        self.assertFailsFast(path, "Read-only file system")

    def test_create_data_dir_makes_it(self):
        path = os.path.join(os.path.abspath(self.mktemp()), "a", "b")
        reactor = MemoryReactorClock()
        service = tap.makeService(parse("--data-dir", path,
                                        "--create-data-dir"), reactor=reactor)
        self.assertTrue(os.path.isdir(path))
        service.startService()
        self.assertEqual(len(reactor.tcpClients), 1)
        return service.stopService()


class FakeReactor:
    running = True

    def __init__(self):
        self.calls = []
        self.stopped = False

    def callFromThread(self, f, *args):
        self.calls.append((f, args))

    def stop(self):
        self.stopped = True


class HangupTests(unittest.TestCase):

    def test_sighup_stops_the_reactor_as_sigterm_does(self):
        reactor = FakeReactor()
        hangup = tap.StopOnHangup(reactor)
        hangup.startService()
        self.addCleanup(hangup.stopService)
        os.kill(os.getpid(), signal.SIGHUP)
        [(f, args)] = reactor.calls
        self.assertFalse(reactor.stopped)
        f(*args)
        self.assertTrue(reactor.stopped)

    def test_the_handler_before_comes_back_at_stop(self):
        before = signal.getsignal(signal.SIGHUP)
        hangup = tap.StopOnHangup(FakeReactor())
        hangup.startService()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), before)
        hangup.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)


class PluginTests(unittest.TestCase):

    def test_plugin_is_found(self):
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("tsagg", makers)
        self.assertIsInstance(makers["tsagg"].options(), tap.Options)
