"""
One recording: a reconnecting client of a G3 stream and the writer of its
files, as a Twisted service.  The twistd plugin and the OCS agent both run
this.
"""

import re

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.internet.endpoints import clientFromString
from twisted.logger import Logger
from zope.interface import implementer

from tsagg import wire
from tsagg.connlog import ConnectionLog
from tsagg.diskspace import DEFAULT_MIN_FREE
from tsagg.handoff import DEFAULT_ARCHIVE, FileHandoff
from tsagg.interfaces import IFrameSink
from tsagg.protocol import G3StreamFactory
from tsagg.writer import DataDirError, RotatingWriter

__all__ = ["RecordingService", "RetryPolicy", "tcp_endpoint_description",
           "in_thread_pool", "endpoint_address", "DataDirError"]


def tcp_endpoint_description(address, port, timeout=10):
    """
    The client endpoint string of a TCP sender, with C{:} and C{=} in the
    host (an IPv6 address) escaped.
    """
    host = address.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
    return "tcp:host=%s:port=%d:timeout=%d" % (host, int(port), timeout)


# A colon or an equals sign that no backslash escapes.
_UNESCAPED = re.compile(r"(?<!\\)[:=]")


def _unescape(text):
    return re.sub(r"\\(.)", r"\1", text)


def endpoint_address(description):
    """
    Where a client endpoint string points, as an operator writes it:
    C{'smurf-srv:50000'} for C{'tcp:host=smurf-srv:port=50000:timeout=10'}
    (or C{'tcp:smurf-srv:50000'}); any other kind of endpoint as it is.
    """
    if not description.startswith(("tcp:", "tcp6:")):
        return description
    args = {}
    positional = []
    for part in re.split(r"(?<!\\):", description.split(":", 1)[1]):
        key, eq, value = part.partition("=")
        if eq and not _UNESCAPED.search(key):
            args[key] = _unescape(value)
        else:
            positional.append(_unescape(part))
    host = args.get("host", positional[0] if positional else None)
    port = args.get("port", positional[1] if len(positional) > 1 else None)
    if host is None or port is None:
        return description
    if ":" in host:
        host = "[%s]" % (host,)
    return "%s:%s" % (host, port)


class _QuietClientService(ClientService):
    """
    A C{ClientService} that keeps its own log lines to itself: it would log
    C{"Scheduling retry 1 to connect <TCP4ClientEndpoint object at 0x...>
    in 2.39 seconds."} at every retry.  The L{ConnectionLog} says it in
    words instead.
    """

    _log = Logger(observer=lambda event: None)


class _ReportingEndpoint:
    """
    An endpoint that tells a L{ConnectionLog} why its attempts fail.
    """

    def __init__(self, endpoint, connection_log):
        self._endpoint = endpoint
        self._connection_log = connection_log

    def connect(self, factory):
        d = self._endpoint.connect(factory)

        def failed(failure):
            self._connection_log.connect_failed(failure)
            return failure
        return d.addErrback(failed)


class RetryPolicy:
    """
    When to try the sender again, as C{ClientService}'s C{retryPolicy}.

    A connection that delivered frames and then dropped is tried again at
    once, after C{quick} seconds: a listen-mode C{G3NetworkSender} keeps
    nothing for a receiver that is not connected, so each second away is a
    second of data lost.  Backoff is for attempts that fail: the first
    attempts of a start, and the tries after a quick one that failed,
    wait C{backoff(1)}, C{backoff(2)}, ... as if the quick one had not been
    made.  At most one quick try is made every C{spacing} seconds, so a
    sender that drops every connection as soon as it has sent something
    is not hammered.

    Each delay is told to the L{ConnectionLog}, which says when the next
    try is.

    @ivar backoff: The policy of failed attempts (C{backoffPolicy}).
    @ivar connection_log: The L{ConnectionLog}: its C{ended_after_frames}
        says whether what ended was a connection that delivered frames.
    @ivar clock: The C{IReactorTime} that spaces the quick tries.
    @ivar quick: Seconds before the quick try.
    @ivar spacing: Least seconds between two quick tries.
    """

    def __init__(self, backoff, connection_log, clock, quick=0.05,
                 spacing=10.0):
        self.backoff = backoff
        self.connection_log = connection_log
        self.clock = clock
        self.quick = quick
        self.spacing = spacing
        self._last_quick = None
        # Attempts of this run of failures that were quick tries.
        self._quick_tries = 0

    def __call__(self, attempt):
        """
        @param attempt: Failed attempts in a row, counted by
            C{ClientService}: 1 after a connection ended, or after the first
            attempt failed.
        @return: Seconds until the next attempt.
        """
        if attempt == 1:
            self._quick_tries = 0
            now = self.clock.seconds()
            if self.connection_log.ended_after_frames and (
                    self._last_quick is None
                    or now - self._last_quick >= self.spacing):
                self._last_quick = now
                self._quick_tries = 1
        if attempt == 1 and self._quick_tries:
            delay = self.quick
        else:
            delay = self.backoff(attempt - self._quick_tries)
        self.connection_log.retrying(attempt, delay)
        return delay


@implementer(IFrameSink)
class _WatchedSink:
    """
    An L{IFrameSink} that hands everything to a sink and then shows each
    batch of frames to a watcher, which can never disturb the sink: what
    the watcher raises is logged (once per kind) and forgotten.
    """

    log = Logger()

    def __init__(self, sink, watch):
        self._sink = sink
        self._watch = watch
        self._last_error = None

    @property
    def status(self):
        return self._sink.status

    def streamStarted(self, producer):
        self._sink.streamStarted(producer)

    def framesReceived(self, frames):
        self._sink.framesReceived(frames)
        try:
            self._watch(frames)
        except Exception as e:
            text = "%s: %s" % (type(e).__name__, e)
            if text != self._last_error:
                self._last_error = text
                self.log.failure("The frame watcher failed; recording goes "
                                 "on")

    def streamStopped(self, reason):
        self._sink.streamStopped(reason)

    def close(self):
        return self._sink.close()


def in_thread_pool(reactor):
    """
    A C{run_blocking} for L{RotatingWriter}: it runs a function in the
    reactor's thread pool and returns a L{Deferred} of its result.
    """
    return lambda f: threads.deferToThreadPool(reactor,
                                               reactor.getThreadPool(), f)


class RecordingService(Service):
    """
    Record the G3 stream of one sender into rotating files.

    Reconnects at once after a connection that delivered frames dropped,
    with exponential backoff after failed attempts (C{ClientService},
    L{RetryPolicy}), drops a peer
    that stays silent for C{idle_timeout} seconds, and closes the current
    file at a frame boundary when stopped.  It can be started and stopped
    any number of times.

    Before it connects, L{prepare} checks the data directory and repairs
    the files that a recorder killed outright left open there; a start with
    a data directory that is missing or cannot be written fails at once
    with L{DataDirError}.

    @ivar clock: The C{IReactorTime} of every timer: rotation, gap and
        write retries, the idle timeout and reconnects.  A
        L{tsagg.clock.MonotonicClock} keeps them on time when the wall clock
        is stepped; the reactor's C{seconds()}, the wall time, still names
        files.
    @ivar writer: The L{RotatingWriter}.
    @ivar factory: The L{G3StreamFactory} of the connections.
    @ivar endpoint_description: Where the sender is, as an endpoint string.
    @ivar address: Where the sender is, as the operator reads it
        (C{host:port}).
    @ivar connection_log: The L{ConnectionLog} of the connections.
    """

    log = Logger()

    #: Seconds a stop waits for the hand-off of the files it closed.
    handoff_grace = 0.25
    #: Seconds a stop then waits for the hand-off's work off the reactor
    #: thread to notice it.
    handoff_stop_wait = 1.0

    #: Seconds before the first try after a connection that delivered
    #: frames dropped (L{RetryPolicy}).
    quick_retry = 0.05

    #: Least seconds between two such quick tries.
    quick_retry_spacing = 10.0

    def __init__(self, reactor, endpoint_description, data_dir,
                 time_per_file=600.0, gap_timeout=10.0, idle_timeout=30.0,
                 stream_id="unknown", max_frame_size=wire.DEFAULT_MAX_FRAME_SIZE,
                 fsync=True, retry_policy=None, writer=None,
                 min_free=DEFAULT_MIN_FREE, create_data_dir=False,
                 clock=None, suprsync_db=None,
                 suprsync_archive=DEFAULT_ARCHIVE, watch_frames=None):
        """
        @param retry_policy: Seconds before the next attempt after
            C{attempt} failed ones (C{backoffPolicy(initialDelay=1.0,
            maxDelay=30.0)} by default); see L{RetryPolicy}.
        @param watch_frames: Called with each batch of frames (a L{list} of
            L{tsagg.frames.LazyFrame}s) after the writer took it, e.g. by a
            L{tsagg.quicklook.QuickLook}; what it raises is logged and does
            not disturb recording.
        """
        self._reactor = reactor
        self.clock = reactor if clock is None else clock
        self.endpoint_description = endpoint_description
        self.address = endpoint_address(endpoint_description)
        self.endpoint = clientFromString(reactor, endpoint_description)
        if writer is None:
            writer = RotatingWriter(
                data_dir, self.clock, time_per_file=time_per_file,
                gap_timeout=gap_timeout, default_stream_id=stream_id,
                fsync=fsync, run_blocking=in_thread_pool(reactor),
                min_free=min_free, wall_time=reactor.seconds)
        self.writer = writer
        self.create_data_dir = create_data_dir
        self.handoff = FileHandoff(in_thread_pool(reactor),
                                   suprsync_db=suprsync_db,
                                   suprsync_archive=suprsync_archive)
        writer.add_closed_file_listener(self.handoff)
        self.handoff.add_listener(
            lambda record: writer.handed_on(record["path"]), wants_md5=False)
        self.connection_log = ConnectionLog(
            self.address, self.clock,
            session=lambda: writer.status["session_id"])
        # The writer calls it at the first live data of the session in
        # progress after a reconnect.
        writer.on_session_resumed = self.connection_log.session_resumed
        sink = writer if watch_frames is None else _WatchedSink(writer,
                                                               watch_frames)
        self.factory = G3StreamFactory(sink, self.clock,
                                       idle_timeout=idle_timeout,
                                       max_frame_size=max_frame_size,
                                       connection_log=self.connection_log)
        if retry_policy is None:
            retry_policy = backoffPolicy(initialDelay=1.0, maxDelay=30.0)
        self._retry_policy = retry_policy
        self._client = None

    def prepare(self):
        """
        Check the data directory (making it if C{create_data_dir}) and
        repair what a killed recorder left open in it; nothing more if that
        is done already.

        @raise DataDirError: It is missing or cannot be written; the message
            is one line for the operator.
        """
        return self.writer.prepare(create=self.create_data_dir)

    def startService(self):
        """
        Start recording: L{prepare}, then connect.

        @raise DataDirError: See L{prepare}; the service is not started.
        """
        self.prepare()
        self.handoff.resume()
        Service.startService(self)
        self.writer.start()
        self.connection_log.starting(self.writer.data_dir)
        self._client = _QuietClientService(
            _ReportingEndpoint(self.endpoint, self.connection_log),
            self.factory,
            retryPolicy=RetryPolicy(self._retry_policy, self.connection_log,
                                    self.clock, quick=self.quick_retry,
                                    spacing=self.quick_retry_spacing),
            clock=self.clock)
        self._client.startService()

    def stopService(self):
        """
        Stop connecting, drop the connection, close the file.

        @return: A L{Deferred} that fires when the file is closed.
        """
        Service.stopService(self)
        self.connection_log.stopping()
        client, self._client = self._client, None
        d = client.stopService() if client is not None else defer.succeed(None)
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result):
        d = defer.maybeDeferred(self.writer.close)
        d.addCallback(lambda _: self._hand_off_the_last())
        d.addCallback(lambda _: self.log.info("Recording stopped"))
        return d

    def _hand_off_the_last(self):
        """
        Give the hand-off of the last files C{handoff_grace} seconds, then
        stop it (an md5 of gigabytes must not hold a stop), and wait at most
        C{handoff_stop_wait} more for the batch it has off the reactor
        thread (a suprsync database that does not answer must not hold it
        either): what it did not hand on, the journal keeps, and the next
        start hands on.
        """
        done = defer.Deferred()
        calls = []

        def finish(_):
            for call in calls:
                if call.active():
                    call.cancel()
            if not done.called:
                self.writer.release_journal()
                done.callback(None)

        def stop():
            self.handoff.stop()
            calls.append(self.clock.callLater(self.handoff_stop_wait,
                                              finish, None))
        calls.append(self.clock.callLater(self.handoff_grace, stop))
        self.handoff.finished().addBoth(finish)
        return done

    def whenConnected(self, failAfterFailures=None):
        """
        A L{Deferred} that fires with the protocol of the current connection,
        or of the next one.
        """
        return self._client.whenConnected(failAfterFailures=failAfterFailures)

    @property
    def status(self):
        """
        The live status of the recording, a L{dict} of plain values::

            {'running': True, 'endpoint': 'tcp:host=localhost:port=50000:timeout=10',
             'connected': True, 'peer': '127.0.0.1:50000', 'connections': 1,
             'reconnects': 0, 'bytes_received': 1731234, 'bad_frames': 0,
             'idle_timeouts': 0, 'last_stream_error': None,
             'connection_trouble': None, 'breaks': 0,
             'frames_missed_in_breaks': 0,
             'current_file': '/data/17649/crate1slot2/1764912345_000.g3',
             'last_file': None, 'stream_id': 'crate1slot2',
             'session_id': 1764912345, 'files_written': 1,
             'frames_written': 1034, 'bytes_written': 1730000,
             'frames_received': 1041, 'flow_control_frames': {'alive': 5,
             'start': 1, 'end': 0, 'cleanse': 0},
             'frames_dropped_upstream': 0, 'frames_held': 0, 'frames_lost': 0,
             'write_errors': 0, 'files_vanished': 0, 'slow_writes': 0,
             'slowest_write': 0.004, 'last_frame_time': 1764912460.2,
             'last_error': None}

        C{connection_trouble} says what keeps the recording from its
        sender (C{'connection refused'}, C{'no data for 30 s'}), L{None}
        when nothing does.  C{breaks} counts connections lost while a
        session was in progress, C{frames_missed_in_breaks} the frames of
        sessions that went on after a break that the breaks cost.
        C{files_vanished} counts open files found removed or replaced
        (the data directory deleted or moved aside); C{slow_writes} counts
        writes and syncs that took C{slow_write} seconds or more, and
        C{slowest_write} is the longest, in seconds.
        """
        status = {"running": bool(self.running),
                  "endpoint": self.endpoint_description}
        status.update(self.factory.stats.as_dict())
        status["connection_trouble"] = self.connection_log.trouble
        status.update(self.connection_log.status)
        status.update(self.writer.status)
        status.update(self.handoff.status)
        if status["last_error"] is None:
            status["last_error"] = status["last_stream_error"]
        return status
