"""
Timers that steps of the wall clock do not move: an C{IReactorTime} on the
monotonic clock, for rotation, gaps, idle peers and reconnects.

A reactor schedules its delayed calls at wall-clock times (its C{seconds()}
is C{time.time()}), so a call made before the clock is set back an hour
fires an hour late, and one made before a step forward fires at once.
L{MonotonicClock} keeps calls of its own, at monotonic times, and wakes the
reactor through a Linux C{timerfd} on C{CLOCK_MONOTONIC}.
"""

import ctypes
import heapq
import itertools
import math
import os
import time

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import (IReactorFDSet, IReactorTime,
                                         IReadDescriptor)
from twisted.logger import Logger
from zope.interface import implementer

from tsagg import libc

__all__ = ["MonotonicClock"]

_CLOCK_MONOTONIC = 1
_TFD_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC


class _timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _timespec), ("it_value", _timespec)]


_timerfd_create = libc.function("timerfd_create", [ctypes.c_int, ctypes.c_int])
_timerfd_settime = libc.function(
    "timerfd_settime", [ctypes.c_int, ctypes.c_int,
                        ctypes.POINTER(_itimerspec),
                        ctypes.POINTER(_itimerspec)])


def _os_error():
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))


@implementer(IReactorTime)
class MonotonicClock:
    """
    An C{IReactorTime} whose C{seconds()} is monotonic and whose calls run
    in the reactor's thread at monotonic times, whatever the wall clock
    does.

    Where the system has C{timerfd} and the reactor watches file
    descriptors (C{IReactorFDSet}: the epoll, poll and select reactors),
    the clock wakes through a C{timerfd} on C{CLOCK_MONOTONIC}, armed for
    the earliest call; it is a reader of the reactor, and holds a file
    descriptor, only while a call is pending.  Elsewhere it wakes through
    C{reactor.callLater} and looks at the monotonic time again: a wake-up
    brought forward by a step of the wall clock goes back to sleep, but a
    step back delays the next wake-up by the step.

    As with the reactor, C{callLater} returns a L{DelayedCall} that can be
    cancelled, reset and delayed, from inside a call too; a call scheduled
    from inside a call runs in a later turn of the reactor at the earliest.

    @ivar reactor: The reactor the calls run in.
    """

    log = Logger()

    def __init__(self, reactor, monotonic=time.monotonic):
        """
        @param reactor: The reactor to run the calls in.
        @param monotonic: The source of C{seconds()}.  Anything but
            C{CLOCK_MONOTONIC} (C{time.monotonic}) is for tests: the
            C{timerfd} still counts on C{CLOCK_MONOTONIC}.
        """
        self.reactor = reactor
        self._monotonic = monotonic
        if _timerfd_create is not None and IReactorFDSet.providedBy(reactor):
            self._alarm = _TimerFD(reactor, self._run_due)
        else:
            self._alarm = _ReactorAlarm(reactor, self._run_due)
        # (time, sequence, call): one entry per pending call; calls made
        # or moved while calls run wait in _new until they are done.
        self._heap = []
        self._new = []
        self._sequence = itertools.count()
        self._running = False

    def seconds(self):
        """
        The monotonic time, in seconds from an arbitrary start.
        """
        return self._monotonic()

    def callLater(self, delay, callable, *args, **kw):
        """
        Call C{callable(*args, **kw)} C{delay} seconds from now.

        @return: A L{DelayedCall}.
        """
        if delay < 0:
            raise ValueError("%r is not a delay of 0 s or more" % (delay,))
        call = DelayedCall(self.seconds() + delay, callable, args, kw,
                           self._cancel, self._moved_sooner,
                           seconds=self.seconds)
        self._push(call)
        self._rearm()
        return call

    def getDelayedCalls(self):
        """
        The calls that are neither made nor cancelled.
        """
        return [call for _, _, call in self._heap + self._new]

    def _push(self, call):
        entry = (call.time, next(self._sequence), call)
        if self._running:
            self._new.append(entry)
        else:
            heapq.heappush(self._heap, entry)

    def _remove(self, call):
        # In place: _run_due may be walking the heap.
        self._heap[:] = [e for e in self._heap if e[2] is not call]
        heapq.heapify(self._heap)
        self._new[:] = [e for e in self._new if e[2] is not call]

    def _cancel(self, call):
        self._remove(call)
        self._rearm()

    def _moved_sooner(self, call):
        self._remove(call)
        self._push(call)
        self._rearm()

    def _run_due(self):
        """
        Make every call that is due, then sleep until the next one.
        """
        self._running = True
        try:
            now = self.seconds()
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, call = heapq.heappop(heap)
                if call.delayed_time > 0:
                    call.activate_delay()
                    heapq.heappush(heap, (call.time, next(self._sequence),
                                          call))
                    continue
                call.called = 1
                try:
                    call.func(*call.args, **call.kw)
                except BaseException:
                    self.log.failure("while handling timed call {call!r}",
                                     call=call)
        finally:
            self._running = False
            for entry in self._new:
                heapq.heappush(self._heap, entry)
            del self._new[:]
            self._rearm()

    def _rearm(self):
        if self._running:
            return
        if self._heap:
            self._alarm.arm(max(0.0, self._heap[0][0] - self.seconds()))
        else:
            self._alarm.disarm()


@implementer(IReadDescriptor)
class _TimerFD:
    """
    Wake the reactor after a delay on C{CLOCK_MONOTONIC}: a C{timerfd}, a
    reader of the reactor while it is armed.
    """

    def __init__(self, reactor, expired):
        self._reactor = reactor
        self._expired = expired
        self._fd = None

    def arm(self, delay):
        """
        Call C{expired} once, C{delay} seconds from now, in place of any
        earlier arming.
        """
        if self._fd is None:
            fd = _timerfd_create(_CLOCK_MONOTONIC, _TFD_FLAGS)
            if fd < 0:
                raise _os_error()
            self._fd = fd
            self._reactor.addReader(self)
        # A relative time, which libfaketime (the tests' wall-clock steps)
        # leaves alone; an it_value of zero would disarm the timer.
        ns = max(1, math.ceil(delay * 1e9))
        spec = _itimerspec()
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, 10 ** 9)
        if _timerfd_settime(self._fd, 0, ctypes.byref(spec), None) != 0:
            raise _os_error()

    def disarm(self):
        """
        Call nothing: leave the reactor and close the descriptor.
        """
        if self._fd is not None:
            self._reactor.removeReader(self)
            self._close()

    def _close(self):
        fd, self._fd = self._fd, None
        os.close(fd)

    def fileno(self):
        return -1 if self._fd is None else self._fd

    def doRead(self):
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            # Re-armed since the reactor saw it expire.
            pass
        self._expired()

    def connectionLost(self, reason):
        # The reactor dropped every reader at shutdown.
        if self._fd is not None:
            self._close()

    def logPrefix(self):
        return "MonotonicClock"


class _ReactorAlarm:
    """
    Wake through C{reactor.callLater}, where there is no C{timerfd}: at a
    wall-clock time, so a step back of the wall clock comes late.
    """

    def __init__(self, reactor, expired):
        self._reactor = reactor
        self._expired = expired
        self._call = None

    def arm(self, delay):
        self.disarm()
        self._call = self._reactor.callLater(delay, self._fire)

    def disarm(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self):
        self._call = None
        self._expired()
