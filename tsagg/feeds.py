"""
The OCS agent's feeds and its C{degraded} flag: the three feeds registered
with OCS, a record of the running recording on C{recorder} every interval,
each file closed for good on C{files}, and C{session.degraded} set, with a
log line, while the recording does not do its job.  What a record holds and
why a recording is degraded is L{tsagg.monitor}'s; this module times and
publishes it.
"""

from twisted.internet import task
from twisted.logger import Logger

from tsagg.monitor import Health, StatusRecords

__all__ = ["Feeds", "STATUS_FEED", "DETECTOR_FEED", "FILES_FEED"]

#: The status feed: one record every --feed-interval seconds.
STATUS_FEED = "recorder"
#: The quick-look feed: a block per monitored channel.
DETECTOR_FEED = "detectors"
#: The files feed: a record per file closed for good (an event feed).
FILES_FEED = "files"
#: The HK aggregator writes the status feed in frames of this many seconds.
STATUS_AGG_PARAMS = {"frame_length": 60}
#: The detector samples are in the timestream files already: Grafana
#: (InfluxDB) only.
DETECTOR_AGG_PARAMS = {"exclude_aggregator": True}


class Feeds:
    """
    The feeds of one agent, and the C{degraded} flag of its C{stream}
    Process.

    The feeds are registered with the agent when this is made.  During a
    run of the recording (from L{start} to L{stop}), a record of its status
    goes to the C{recorder} feed every C{feed_interval} seconds
    (L{StatusRecords}), and L{update_degraded} sets C{session.degraded}
    while the recording does not do its job (L{Health}).  The quick look
    publishes to the C{detectors} feed itself.

    @ivar agent: The C{ocs.ocs_agent.OCSAgent} the feeds are registered
        with.
    @ivar log: Where the lines about the C{degraded} flag and a failing
        publish go.
    """

    log = Logger()

    def __init__(self, agent, clock, wall_time, address, feed_interval=5.0,
                 degraded_after=15.0, log=None):
        """
        @param agent: The C{OCSAgent}; the feeds are registered with it
            here.
        @param clock: The C{IReactorTime} of the records and of the times
            the L{Health} compares.
        @param wall_time: Returns the unix time, the C{timestamp} of the
            feeds' messages.
        @param address: C{host:port} of the sender, for the reasons.
        @param feed_interval: Seconds between records of the status feed.
        @param degraded_after: Seconds without a connection after which the
            recording counts as degraded (L{Health}).
        @param log: A C{Logger} for the lines, the agent's so that they
            carry its namespace; this class's own by default.
        """
        self.agent = agent
        if log is not None:
            self.log = log
        self._clock = clock
        self._wall_time = wall_time
        self._address = address
        self._feed_interval = feed_interval
        self._health = Health(degraded_after)
        self._records = StatusRecords()
        self._publishing = None
        self._publish_error = None
        self._reasons = []
        self._started_wall = None
        agent.register_feed(STATUS_FEED, record=True,
                            agg_params=STATUS_AGG_PARAMS, buffer_time=0)
        agent.register_feed(DETECTOR_FEED, record=True,
                            agg_params=DETECTOR_AGG_PARAMS, buffer_time=0)
        # One record per file closed for good (tsagg.handoff): an event
        # feed, not a time series, so it is not recorded.
        agent.register_feed(FILES_FEED, record=False)

    @property
    def degraded_reasons(self):
        """
        Why the running recording is degraded (a new L{list}), empty when it
        is not, or when none runs.
        """
        return list(self._reasons)

    def start(self, now, status):
        """
        A run of the recording begins: not degraded, not connected yet, and
        the next record's rates are since C{now}.

        @param now: The time, on the clock given.
        @param status: The recording's status now.
        """
        self._started_wall = self._wall_time()
        self._health.start(now)
        self._records.start(now, status)
        self._reasons = []

    def start_records(self, service):
        """
        Publish a record of C{service}'s status to the C{recorder} feed
        every C{feed_interval} seconds, the first one interval from now,
        until L{stop}.

        @param service: The running L{RecordingService}.
        """
        self._publishing = task.LoopingCall(self._publish_status, service)
        self._publishing.clock = self._clock
        self._publishing.start(self._feed_interval, now=False)

    def stop(self, session):
        """
        The run has ended: no more records, and C{session} is not degraded
        (not running is no degraded recording).
        """
        if self._publishing is not None and self._publishing.running:
            self._publishing.stop()
        self._publishing = None
        self._reasons = []
        session.degraded = False

    def update_degraded(self, session, status):
        """
        Set C{session.degraded} by the recording's status now, and log
        when it goes up or down.

        @param status: The running recording's status
            (L{RecordingService.status}).
        """
        reasons = self._health.reasons(self._clock.seconds(), status,
                                       self._address)
        was = bool(self._reasons)
        self._reasons = reasons
        session.degraded = bool(reasons)
        if reasons and not was:
            self.log.warn("Degraded: {reasons}", reasons="; ".join(reasons))
        elif was and not reasons:
            self.log.info("No longer degraded: recording as it should")

    def publish_file(self, record):
        """
        Publish the record of a file closed for good on the C{files} feed:
        a listener of L{tsagg.handoff}.
        """
        self.agent.publish_to_feed(FILES_FEED, {
            "block_name": "files", "timestamp": self._wall_time(),
            "data": dict(record)})

    def _publish_status(self, service):
        now = self._clock.seconds()
        status = service.status
        age = status["current_file_age"]
        wall = self._wall_time()
        blocks = self._records.blocks(now, wall, status,
                                      self._started_wall, age,
                                      bool(self._reasons))
        try:
            for name, fields in blocks.items():
                self.agent.publish_to_feed(STATUS_FEED, {
                    "block_name": name, "timestamp": wall, "data": fields})
        except Exception as e:
            # The next record comes all the same: the feed is news, not a
            # duty of the recording.
            text = "%s: %s" % (type(e).__name__, e)
            if text != self._publish_error:
                self.log.warn("Could not publish to the {feed} feed: "
                              "{error}", feed=STATUS_FEED, error=text)
            self._publish_error = text
        else:
            self._publish_error = None
