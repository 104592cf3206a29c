"""
The TimestreamAggregator OCS Agent: the recording service of L{tsagg.service},
run as the process C{stream} inside OCS's own reactor, with a status feed for
Grafana, a quick look at a few detector channels, and OCS's C{degraded} flag
while the recording does not do its job.
"""

import os

import txaio
from ocs import ocs_agent, site_config
from twisted.internet import defer, task
from twisted.logger import Logger

from tsagg.agentargs import make_parser, service_maker, str_to_bool
from tsagg.clock import MonotonicClock
from tsagg.feeds import DETECTOR_FEED, Feeds
from tsagg.memory import keep_freed_memory
from tsagg.quicklook import QuickLook
from tsagg.service import DataDirError

__all__ = ["TimestreamAggregator", "make_parser", "service_maker", "main",
           "str_to_bool"]

class TimestreamAggregator:
    """
    Record the G3 stream of one SMuRF streamer (a spt3g
    C{G3NetworkSender}) into rotating C{.g3} files.

    The recording runs in the reactor of the agent: the Process is
    registered with C{blocking=False} and drives a
    L{RecordingService}, so no worker thread is involved and a stop takes
    effect at once.

    While it runs, the agent publishes a record of the recording to the
    C{recorder} feed every C{feed_interval} seconds, the quick look's
    samples to the C{detectors} feed, and sets C{session.degraded} while
    the recording does not do its job (L{Feeds}, L{Health}).

    @ivar agent: The C{ocs.ocs_agent.OCSAgent}.
    @ivar service: The L{RecordingService} of the running session, or
        L{None} when idle.
    @ivar address: Where the sender is, as C{host:port}.
    @ivar data_dir: The directory the files are written under.
    @ivar quick_look: The L{QuickLook} that watches the recordings' frames,
        or L{None}.
    @ivar feeds: The agent's L{Feeds}, and the C{degraded} flag of its
        Process.
    """

    log = Logger()

    def __init__(self, agent, make_service, address, data_dir, clock=None,
                 status_interval=1.0, wall_time=None, quick_look=None,
                 feed_interval=5.0, degraded_after=15.0):
        """
        @param agent: The C{OCSAgent} the process is registered with; the
            feeds are registered with it here.
        @param make_service: Called with no argument at each start of the
            process; returns a new L{RecordingService}.
        @param address: C{host:port} of the sender, for C{session.data}.
        @param data_dir: The data directory, for C{session.data}.
        @param clock: The C{IReactorTime} of the status updates; the global
            reactor by default.
        @param status_interval: Seconds between updates of C{session.data}
            (and of C{session.degraded}).
        @param wall_time: Returns the unix time, the C{timestamp} of
            C{session.data} and of the feeds; C{clock.seconds} by default.
        @param quick_look: The L{QuickLook} that C{make_service}'s services
            show their frames to, which the Tasks set up.
        @param feed_interval: Seconds between records of the status feed.
        @param degraded_after: Seconds without a connection after which the
            recording counts as degraded (L{Health}).
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.agent = agent
        self.address = address
        self.data_dir = data_dir
        self.service = None
        self.quick_look = quick_look
        self._make_service = make_service
        self._clock = clock
        self._wall_time = clock.seconds if wall_time is None else wall_time
        self._status_interval = status_interval
        self.feeds = Feeds(agent, clock, self._wall_time, address,
                           feed_interval=feed_interval,
                           degraded_after=degraded_after, log=self.log)
        # Fired to end the running session.
        self._stop_requested = None
        # Deferreds to fire once the running session has ended.
        self._waiting = []
        # A stop that came before the session's start function ran.
        self._stopped_early = None

    def start_aggregation(self, session, params):
        """stream()

        **Process** - Connect to the sender at ``--address``:``--port`` and
        write every frame it sends into rotating files under ``--data-dir``,
        by the SO stream rules, until stopped.  The connection is made again
        at once when it drops after delivering frames, and with exponential
        backoff after tries that fail.  Stopping closes
        the current file at a frame boundary and ends the Process at once.

        While it runs, a record of the recording goes to the ``recorder``
        feed every ``--feed-interval`` seconds, the samples of the
        ``--monitored-channels`` to the ``detectors`` feed, and
        ``session.degraded`` is set while the recording does not do its job:
        not connected for ``--degraded-after`` seconds, writing failing,
        frames held or lost, free space below ``--min-free``.

        Notes:
            The session data is the live status of the recording, updated
            once a second, for example::

                >>> response.session['data']
                {'timestamp': 1764912461.0,
                 'address': 'smurf-stream-sim:50000',
                 'data_dir': '/data/',
                 'running': True,
                 'endpoint': 'tcp:host=smurf-stream-sim:port=50000:timeout=10',
                 'connected': True,
                 'peer': '172.18.0.4:50000',
                 'connections': 1,
                 'reconnects': 0,
                 'bytes_received': 1731234,
                 'bad_frames': 0,
                 'idle_timeouts': 0,
                 'last_stream_error': None,
                 'connection_trouble': None,
                 'breaks': 0,
                 'frames_missed_in_breaks': 0,
                 'current_file': '/data/17649/crate1slot2/1764912345_000.g3',
                 'current_file_age': 115.2,
                 'last_file': None,
                 'stream_id': 'crate1slot2',
                 'session_id': 1764912345,
                 'files_written': 1,
                 'frames_written': 1034,
                 'bytes_written': 1730000,
                 'frames_received': 1041,
                 'flow_control_frames': {'alive': 5, 'start': 1, 'end': 0,
                                         'cleanse': 0},
                 'frames_dropped_upstream': 0,
                 'frames_held': 0,
                 'bytes_held': 0,
                 'outage_seconds': None,
                 'frames_lost': 0,
                 'write_errors': 0,
                 'files_vanished': 0,
                 'slow_writes': 0,
                 'slowest_write': 0.004,
                 'last_frame_time': 1764912460.2,
                 'last_error': None,
                 'free_bytes': 1834593214464,
                 'free_floor_bytes': 19923665715,
                 'degraded_reasons': [],
                 'quick_look': {'binding': 'spt3g',
                                'channels': ['r0012', 'r0345'],
                                'target_rate': 10.0,
                                'decimation': 20,
                                'frames_read': 116,
                                'frames_skipped': 0,
                                'unreadable_frames': 0,
                                'samples_published': 2320,
                                'missing_channels': [],
                                'last_error': None}}

            ``connected`` tells whether the sender is connected now and
            ``peer`` which address it has (or last had); ``reconnects``
            counts connections after the first; ``connection_trouble``
            says what keeps the recording from its sender (``'connection
            refused'``, ``'no data for 30 s'``).  ``breaks`` counts
            connections lost while a session was in progress, and
            ``frames_missed_in_breaks`` the frames they cost the sessions
            that went on.  ``current_file`` is the
            file being written (``None`` between acquisitions) and
            ``last_file`` the one closed last.  ``frames_dropped_upstream``
            counts frames missing from jumps of ``frame_num``;
            ``bad_frames`` streams dropped for a corrupt frame.
            ``last_frame_time`` is the unix time the last frame arrived.
            ``last_error`` is the text of the latest write or stream error.
            ``outage_seconds`` is how long writing has failed (``None``
            while it works), with ``frames_held`` and ``bytes_held`` waiting
            for the disk; ``free_bytes`` is the free space of the data file
            system (the blocks reserved ahead of the open file counted as
            free) and ``free_floor_bytes`` the floor kept free on it
            (``--min-free``). ``degraded_reasons`` says why
            ``session.degraded`` is set (empty when it is not), and
            ``quick_look`` what the quick look does (see the
            ``set_monitored_channels`` Task). A data directory that is
            missing or cannot be written ends the Process at once with
            ``ok=False`` and the reason.
        """
        return self._run(session)

    @defer.inlineCallbacks
    def _run(self, session):
        if self._stopped_early is session:
            self._stopped_early = None
            return False, "Stopped before recording began."
        service = self._make_service()
        service.handoff.add_listener(self.feeds.publish_file)
        try:
            service.prepare()
        except DataDirError as e:
            return False, "Cannot record: %s." % (e,)
        self._stop_requested = defer.Deferred()
        self.service = service
        self.feeds.start(self._clock.seconds(), service.status)
        updates = task.LoopingCall(self._update_data, session, service)
        updates.clock = self._clock
        try:
            service.startService()
            updates.start(self._status_interval, now=True)
            self.feeds.start_records(service)
            yield self._stop_requested
        finally:
            try:
                yield service.stopService()
            finally:
                if updates.running:
                    updates.stop()
                if self.quick_look is not None:
                    self.quick_look.stop()
                self.feeds.stop(session)
                self._update_data(session, service)
                self.service = None
                self._stop_requested = None
                waiting, self._waiting = self._waiting, []
                for d in waiting:
                    d.callback(None)
        status = service.status
        return True, ("Recording stopped: %d files, %d frames, %d bytes."
                      % (status["files_written"], status["frames_written"],
                         status["bytes_written"]))

    def stop_aggregation(self, session, params):
        """
        Stop the C{stream} Process: stop connecting, drop the connection and
        close the current file at a frame boundary.

        @return: A L{Deferred} that fires with C{(ok, message)} at once; the
            Process itself ends as soon as the file is closed.
        """
        if self._stop_requested is None:
            if session.status == "starting":
                self._stopped_early = session
                return defer.succeed((True, "Stop requested before start."))
            return defer.succeed((False, "Not recording."))
        if session.status == "running":
            session.set_status("stopping")
        if not self._stop_requested.called:
            self._stop_requested.callback(None)
        return defer.succeed((True, "Stopping the recording."))

    @ocs_agent.param("channels", type=list)
    def set_monitored_channels(self, session, params):
        """set_monitored_channels(channels)

        **Task** - Choose the channels of the quick look: their samples,
        decimated to the target rate, go to the ``detectors`` feed, one
        block per channel, from the next Scan frame on (also while
        recording).  An empty list turns the quick look off.

        Parameters:
            channels (list): Channel names as in the frames (``'r0012'``),
                or readout channel numbers (``12`` is ``'r0012'``).

        Notes:
            The session data is the quick look's settings, for example::

                >>> response.session['data']
                {'timestamp': 1764912461.0,
                 'channels': ['r0012', 'r0345'],
                 'target_rate': 10.0}
        """
        look = self.quick_look
        if look is None:
            return False, "This agent has no quick look."
        try:
            look.set_channels(params["channels"])
        except ValueError as e:
            return False, "Channels not changed: %s." % (e,)
        self._quick_look_data(session)
        if not look.channels:
            return True, "Quick look off."
        return True, "Quick look at %s." % (", ".join(look.channels),)

    @ocs_agent.param("target_rate", type=float)
    def set_target_rate(self, session, params):
        """set_target_rate(target_rate)

        **Task** - Set the rate the quick look decimates to, in samples per
        second per channel, from the next Scan frame on (also while
        recording).  Samples are kept every ``round(sample rate /
        target_rate)`` samples.

        Parameters:
            target_rate (float): Samples per second wanted; positive.

        Notes:
            The session data is the quick look's settings, as for
            ``set_monitored_channels``.
        """
        look = self.quick_look
        if look is None:
            return False, "This agent has no quick look."
        try:
            look.set_target_rate(params["target_rate"])
        except ValueError as e:
            return False, "Target rate not changed: %s." % (e,)
        self._quick_look_data(session)
        return True, "Quick look at %g samples per second." % (
            look.target_rate,)

    def shutdown(self):
        """
        Close the current file before the reactor stops.

        @return: A L{Deferred} that fires once no recording runs.
        """
        if self._stop_requested is None:
            return defer.succeed(None)
        ended = defer.Deferred()
        self._waiting.append(ended)
        if not self._stop_requested.called:
            self._stop_requested.callback(None)
        return ended

    def _quick_look_data(self, session):
        session.data = {"timestamp": self._wall_time(),
                        "channels": list(self.quick_look.channels),
                        "target_rate": self.quick_look.target_rate}

    def _update_data(self, session, service):
        status = service.status
        if service.running:
            self.feeds.update_degraded(session, status)
        data = {"timestamp": self._wall_time(),
                "address": self.address,
                "data_dir": self.data_dir}
        data.update(status)
        data["degraded_reasons"] = self.feeds.degraded_reasons
        if self.quick_look is not None:
            data["quick_look"] = self.quick_look.status
        session.data = data


def main(args=None):
    """
    Run the agent: the entry point of the C{ocs.plugins} registry, which
    C{ocs-agent-cli} calls.

    @param args: The command line, C{sys.argv[1:]} by default; the SCF
        instance's C{arguments} are added by C{site_config}.
    """
    txaio.start_logging(level=os.environ.get("LOGLEVEL", "info"))
    args = site_config.parse_args(agent_class="TimestreamAggregator",
                                  parser=make_parser(), args=args)
    from twisted.internet import reactor
    keep_freed_memory()
    agent, runner = ocs_agent.init_site_agent(args)
    # Timers on the monotonic clock, the status stamped with the wall time.
    clock = MonotonicClock(reactor)
    quick_look = QuickLook(
        lambda block: agent.publish_to_feed(DETECTOR_FEED, block), clock,
        channels=args.monitored_channels, target_rate=args.target_rate)
    aggregator = TimestreamAggregator(
        agent, service_maker(args, reactor, clock, watch_frames=quick_look),
        address="%s:%d" % (args.address, args.port),
        data_dir=args.data_dir, clock=clock, wall_time=reactor.seconds,
        quick_look=quick_look, feed_interval=args.feed_interval,
        degraded_after=args.degraded_after)
    agent.register_process("stream", aggregator.start_aggregation,
                           aggregator.stop_aggregation, blocking=False,
                           startup=args.auto_start)
    agent.register_task("set_monitored_channels",
                        aggregator.set_monitored_channels, blocking=False)
    agent.register_task("set_target_rate", aggregator.set_target_rate,
                        blocking=False)
    # OCS stops the process on SIGINT and SIGTERM; this also covers a
    # reactor stopped any other way.
    reactor.addSystemEventTrigger("before", "shutdown", aggregator.shutdown)
    runner.run(agent, auto_reconnect=True)


if __name__ == "__main__":
    main()
