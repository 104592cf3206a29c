"""
Tests for L{tsagg.clock}: the calls of a L{MonotonicClock} on a fake
monotonic time and on the real one, and in child processes whose wall clock
is stepped an hour back and forward (libfaketime).
"""

import json
import subprocess
import sys

from twisted.internet import defer, reactor, task
from twisted.internet.error import AlreadyCalled
from twisted.internet.interfaces import IReactorTime
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tsagg import clock as clock_module
from tsagg.clock import MonotonicClock

from tests.util import WallClock, spawn


class FakeMonotonic:
    """
    A monotonic time that moves only when told to.
    """

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class MonotonicClockTestCase(unittest.TestCase):
    """
    A L{MonotonicClock} in a L{MemoryReactorClock}, on a fake monotonic
    time: the reactor holds the clock's C{timerfd} as a reader, and
    L{wake} does what the reactor does when it becomes readable.
    """

    def setUp(self):
        if clock_module._timerfd_create is None:
            raise unittest.SkipTest("the system has no timerfd")
        self.reactor = MemoryReactorClock()
        self.monotonic = FakeMonotonic()
        self.clock = MonotonicClock(self.reactor, monotonic=self.monotonic)
        self.made = []
        self.addCleanup(self.cancel_all)

    def cancel_all(self):
        # Closes the timerfd.
        for call in self.clock.getDelayedCalls():
            call.cancel()

    def note(self, name):
        self.made.append(name)

    def wake(self, seconds=0.0):
        """
        Let C{seconds} of monotonic time pass, then wake the clock.
        """
        self.monotonic.now += seconds
        for reader in list(self.reactor.getReaders()):
            reader.doRead()

    def readers(self):
        return list(self.reactor.getReaders())


class CallLaterTests(MonotonicClockTestCase):

    def test_is_a_reactor_time(self):
        verifyObject(IReactorTime, self.clock)

    def test_seconds_is_the_monotonic_time(self):
        self.assertEqual(self.clock.seconds(), 1000.0)
        self.monotonic.now = 1234.5
        self.assertEqual(self.clock.seconds(), 1234.5)

    def test_call_is_made_at_its_time_with_its_arguments(self):
        made = []
        self.clock.callLater(2, lambda *a, **kw: made.append((a, kw)),
                             1, 2, x=3)
        self.wake(1.9)
        self.assertEqual(made, [])
        self.wake(0.1)
        self.assertEqual(made, [((1, 2), {"x": 3})])

    def test_calls_are_made_in_order_of_time(self):
        for name, delay in [("c", 3), ("a", 1), ("b", 2), ("a2", 1)]:
            self.clock.callLater(delay, self.note, name)
        self.wake(5)
        self.assertEqual(self.made, ["a", "a2", "b", "c"])

    def test_returns_a_delayed_call_on_the_monotonic_time(self):
        call = self.clock.callLater(2, self.note, "a")
        self.assertEqual(call.getTime(), 1002.0)
        self.assertTrue(call.active())
        self.wake(2)
        self.assertFalse(call.active())

    def test_negative_delay_is_refused(self):
        self.assertRaises(ValueError, self.clock.callLater, -1, self.note,
                          "a")

    def test_cancelled_call_is_not_made(self):
        call = self.clock.callLater(1, self.note, "a")
        self.clock.callLater(2, self.note, "b")
        call.cancel()
        self.wake(3)
        self.assertEqual(self.made, ["b"])

    def test_reset_sooner(self):
        call = self.clock.callLater(10, self.note, "a")
        call.reset(1)
        self.wake(1)
        self.assertEqual(self.made, ["a"])

    def test_reset_later(self):
        call = self.clock.callLater(1, self.note, "a")
        call.reset(5)
        self.wake(1)
        self.assertEqual(self.made, [])
        self.assertEqual(call.getTime(), 1005.0)
        self.wake(4)
        self.assertEqual(self.made, ["a"])

    def test_delay(self):
        call = self.clock.callLater(1, self.note, "a")
        call.delay(2)
        self.wake(2)
        self.assertEqual(self.made, [])
        self.wake(1)
        self.assertEqual(self.made, ["a"])

    def test_negative_delay_brings_a_call_forward(self):
        call = self.clock.callLater(5, self.note, "a")
        call.delay(-4)
        self.wake(1)
        self.assertEqual(self.made, ["a"])

    def test_delayed_calls_are_those_pending(self):
        a = self.clock.callLater(1, self.note, "a")
        b = self.clock.callLater(2, self.note, "b")
        c = self.clock.callLater(3, self.note, "c")
        b.cancel()
        self.assertEqual(set(self.clock.getDelayedCalls()), {a, c})
        self.wake(1)
        self.assertEqual(self.clock.getDelayedCalls(), [c])

    def test_error_in_a_call_is_logged_and_later_calls_are_made(self):
        self.clock.callLater(1, lambda: 1 / 0)
        self.clock.callLater(1, self.note, "b")
        self.wake(1)
        self.assertEqual(self.made, ["b"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class ReaderTests(MonotonicClockTestCase):

    def test_no_reader_before_a_call(self):
        self.assertEqual(self.readers(), [])

    def test_one_reader_while_calls_are_pending(self):
        self.clock.callLater(1, self.note, "a")
        self.clock.callLater(2, self.note, "b")
        [reader] = self.readers()
        self.assertGreaterEqual(reader.fileno(), 0)

    def test_no_reader_once_the_last_call_is_made(self):
        self.clock.callLater(1, self.note, "a")
        self.clock.callLater(2, self.note, "b")
        self.wake(1)
        self.assertEqual(len(self.readers()), 1)
        self.wake(1)
        self.assertEqual(self.readers(), [])

    def test_no_reader_once_the_last_call_is_cancelled(self):
        self.clock.callLater(1, self.note, "a").cancel()
        self.assertEqual(self.readers(), [])

    def test_early_wake_up_makes_nothing(self):
        self.clock.callLater(1, self.note, "a")
        self.wake(0.5)
        self.assertEqual(self.made, [])
        self.assertEqual(len(self.readers()), 1)

    def test_reader_dropped_at_shutdown_comes_back_for_a_new_call(self):
        self.clock.callLater(1, self.note, "a")
        [reader] = self.readers()
        # What the reactor does to every reader when it stops.
        self.reactor.removeReader(reader)
        reader.connectionLost(None)
        self.clock.callLater(2, self.note, "b")
        self.assertEqual(self.readers(), [reader])
        self.wake(2)
        self.assertEqual(self.made, ["a", "b"])


class ReentrancyTests(MonotonicClockTestCase):

    def test_call_made_inside_a_call_waits_for_the_next_wake_up(self):
        self.clock.callLater(
            1, lambda: self.clock.callLater(0, self.note, "inner"))
        self.wake(1)
        self.assertEqual(self.made, [])
        self.assertEqual(len(self.readers()), 1)
        self.wake()
        self.assertEqual(self.made, ["inner"])
        self.assertEqual(self.readers(), [])

    def test_call_cancelled_by_an_earlier_call_is_not_made(self):
        later = self.clock.callLater(2, self.note, "later")
        self.clock.callLater(1, later.cancel)
        self.wake(3)
        self.assertEqual(self.made, [])
        self.assertEqual(self.readers(), [])

    def test_call_reset_by_an_earlier_call(self):
        later = self.clock.callLater(2, self.note, "later")
        self.clock.callLater(1, later.reset, 5)
        self.wake(1)
        self.wake(1)
        self.assertEqual(self.made, [])
        self.wake(4)
        self.assertEqual(self.made, ["later"])

    def test_call_brought_forward_by_an_earlier_call(self):
        later = self.clock.callLater(10, self.note, "later")
        self.clock.callLater(1, later.reset, 0)
        self.wake(1)
        self.wake()
        self.assertEqual(self.made, ["later"])

    def test_call_cannot_cancel_itself(self):
        calls = []
        calls.append(self.clock.callLater(1, lambda: calls[0].cancel()))
        self.wake(1)
        self.assertEqual(len(self.flushLoggedErrors(AlreadyCalled)), 1)
        self.assertEqual(self.readers(), [])


class RealReactorTests(unittest.TestCase):
    """
    A L{MonotonicClock} of the running reactor, on the real monotonic time.
    """

    def clock_readers(self):
        return [r for r in reactor.getReaders()
                if isinstance(r, clock_module._TimerFD)]

    @defer.inlineCallbacks
    def test_calls_are_made_in_order_after_their_delays(self):
        clock = MonotonicClock(reactor)
        start = clock.seconds()
        made = []
        done = defer.Deferred()
        clock.callLater(0.06, lambda: made.append(("b", clock.seconds())))
        clock.callLater(0.03, lambda: made.append(("a", clock.seconds())))
        clock.callLater(0.09, done.callback, None)
        yield done
        # The clock lets go of the reactor once the call returns.
        yield task.deferLater(reactor, 0, lambda: None)
        self.assertEqual([name for name, _ in made], ["a", "b"])
        self.assertGreaterEqual(made[0][1] - start, 0.03)
        self.assertGreaterEqual(made[1][1] - start, 0.06)
        self.assertEqual(self.clock_readers(), [])

    def test_cancelled_calls_leave_the_reactor_clean(self):
        clock = MonotonicClock(reactor)
        call = clock.callLater(10, lambda: None)
        self.assertEqual(len(self.clock_readers()), 1)
        call.cancel()
        self.assertEqual(self.clock_readers(), [])


class WithoutTimerFDTests(unittest.TestCase):
    """
    Where the reactor watches no file descriptor (here a L{task.Clock}),
    the clock wakes through C{reactor.callLater}.
    """

    def setUp(self):
        self.wall = task.Clock()
        self.monotonic = FakeMonotonic()
        self.clock = MonotonicClock(self.wall, monotonic=self.monotonic)
        self.made = []

    def advance(self, seconds):
        self.monotonic.now += seconds
        self.wall.advance(seconds)

    def test_call_is_made_at_its_time(self):
        self.clock.callLater(2, self.made.append, "a")
        self.advance(1.5)
        self.assertEqual(self.made, [])
        self.advance(0.5)
        self.assertEqual(self.made, ["a"])
        self.assertEqual(self.wall.getDelayedCalls(), [])

    def test_wall_step_forward_is_ignored(self):
        self.clock.callLater(2, self.made.append, "a")
        self.wall.advance(3600)
        self.assertEqual(self.made, [])
        self.advance(2)
        self.assertEqual(self.made, ["a"])


class WallClockStepTests(unittest.TestCase):
    """
    In a child process whose wall clock is stepped an hour just after a
    call is made for one second later: the clock's call comes one second
    later by the monotonic time; the reactor's own comes an hour late, or
    at once.
    """

    def made_after(self, offset):
        wall = WallClock(self)
        proc = spawn(self, [sys.executable, "-m", "tests.wallstep", "1.0"],
                     self.mktemp(), env=wall.env(), stdout=subprocess.PIPE)
        self.assertEqual(proc.stdout.readline(), b"scheduled\n")
        wall.set(offset)
        out, _ = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 0)
        return json.loads(out)

    def assert_about(self, value, expected):
        self.assertLess(abs(value - expected), 0.2,
                        "%s is not %s" % (value, expected))

    def assert_on_time(self, call, wall_step):
        self.assert_about(call["monotonic"], 1.0)
        # The step did happen in the child.
        self.assert_about(call["wall"], 1.0 + wall_step)

    def test_one_hour_back(self):
        made = self.made_after("-1h")
        self.assert_on_time(made["clock"], -3600)
        self.assertNotIn("reactor", made)

    def test_one_hour_forward(self):
        made = self.made_after("+1h")
        self.assert_on_time(made["clock"], 3600)
        self.assertLess(made["reactor"]["monotonic"], 0.75)
