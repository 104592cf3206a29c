"""
The connection side of the log, in the operator's words: one line per change
of state (connecting, connected, disconnected and why, the next try), and a
trouble that repeats (a sender that refuses every try, a peer that never
sends) logged once, then summarized once a minute and when it ends.  A
connection lost during a session is a break: one line when it is lost, one
when the session goes on.
"""

from twisted.internet import error
from twisted.logger import Logger

from tsagg.writepath import duration_text

__all__ = ["ConnectionLog", "connect_failure_text", "loss_text",
           "delay_text"]

#: Seconds between the summaries of a trouble that goes on.
SUMMARY_INTERVAL = 60.0

#: Seconds after a reconnect within which the session lost in a break is
#: expected to go on; after them the reconnect is logged as any other.
RESUME_WITHIN = 10.0


def connect_failure_text(failure):
    """
    Why a connection attempt failed, in a few words.

    @param failure: The L{Failure} of the endpoint's C{connect}.
    """
    value = failure.value
    if isinstance(value, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, (error.TCPTimedOutError, error.TimeoutError)):
        return "no answer (timed out)"
    if isinstance(value, error.DNSLookupError):
        return "host name not found"
    if isinstance(value, error.NoRouteError):
        return "no route to the host"
    if isinstance(value, error.ConnectError) and value.osError:
        return str(value.osError).strip().rstrip(".")
    text = str(value).strip().rstrip(".")
    return text or type(value).__name__


def loss_text(reason):
    """
    Why an established connection ended, when the protocol did not end it
    itself.

    @param reason: The L{Failure} given to C{connectionLost}.
    """
    if reason.check(error.ConnectionDone):
        return "the sender closed the connection"
    if reason.check(error.ConnectionLost):
        return "the connection was lost"
    text = str(reason.value).strip().rstrip(".")
    return text or type(reason.value).__name__


def delay_text(seconds):
    """
    A retry delay: C{'2.4 s'} under ten seconds, C{'27 s'} above.
    """
    if seconds < 10:
        return "%.1f s" % (seconds,)
    return duration_text(seconds)


class _Trouble:
    """
    A condition that keeps a recording from its sender: a connect failure
    or a disconnect, for the same reason each time.
    """

    def __init__(self, text, connect_failure, now):
        self.text = text
        self.connect_failure = connect_failure
        self.since = now
        self.reported_at = now
        self.count = 1

    def summary(self, now):
        """
        How long it lasted and how often it happened, for the line that
        ends it.
        """
        if self.connect_failure:
            unit = "try" if self.count == 1 else "tries"
        else:
            unit = "time" if self.count == 1 else "times"
        return "after %s (%s, %d %s)" % (duration_text(now - self.since),
                                         self.text, self.count, unit)


class _Break:
    """
    A connection lost while a session was in progress, until that session
    goes on or the new connection turns out not to continue it.

    @ivar session: The session id in progress when it was lost.
    @ivar since: When it was lost.
    @ivar announced: Whether its first line was written.
    @ivar connected_at: When a connection came back, or L{None} while none
        is up.
    """

    def __init__(self, session, since):
        self.session = session
        self.since = since
        self.announced = False
        self.connected_at = None


def _frames(count):
    return "1 frame" if count == 1 else "%d frames" % (count,)


class ConnectionLog:
    """
    Tell the operator what the connection to one sender does.

    The service calls L{starting} and L{stopping}, the endpoint's failures
    come to L{connect_failed}, the retry policy to L{retrying}, and the
    protocol calls L{connected}, L{receiving} and L{lost}.  Each change of
    state is one line.  A failure or disconnect for the same reason as the
    one before, with no frame received in between, is counted, not logged,
    and summarized once a minute and in the line that ends it.

    A connection lost while the writer has a session in progress
    (C{session()} is not L{None}) is a break, told in two lines::

        Connection to 127.0.0.1:4532 lost during session 1795604518: the connection was lost; next try in 0.1 s
        Connection to 127.0.0.1:4532 back after 0.4 s; session 1795604518 goes on; 1 frame missed

    The second comes when the writer calls L{session_resumed}, at the first
    live data of that session after the reconnect; the reconnect's own
    "Connected" line is not written then.  If the new connection brings
    another session (or, after C{resume_within} seconds of frames, none),
    the "Connected" line is written as after any disconnect.

    @ivar address: The sender, as C{host:port}.
    @ivar clock: The C{IReactorTime} that times troubles.
    @ivar summary_interval: Seconds between the summaries of a trouble that
        goes on.
    @ivar ended_after_frames: Whether what ended last was a connection that
        had delivered frames and that tsagg did not drop for a bad stream
        (rather than a failed attempt): the retry policy tries again at
        once after one.
    @ivar breaks: Connections lost while a session was in progress.
    @ivar frames_missed_in_breaks: Frames of the sessions that went on
        after a break that the breaks cost, as the writer counted them from
        C{frame_num}.
    @ivar resume_within: Seconds after a reconnect in a break within which
        the session is expected to go on.
    """

    log = Logger()

    def __init__(self, address, clock, summary_interval=SUMMARY_INTERVAL,
                 session=None, resume_within=RESUME_WITHIN):
        """
        @param session: Returns the id of the session the writer has in
            progress, or L{None}; without it no loss is a break.
        """
        self.address = address
        self.clock = clock
        self.summary_interval = summary_interval
        self.resume_within = resume_within
        self._session = session
        self._break = None
        self.breaks = 0
        self.frames_missed_in_breaks = 0
        self._trouble = None
        # What ended the last attempt or connection, until the retry is
        # scheduled: (text, whether a connect failure, log level).
        self._ended = None
        self._stopping = False
        # Whether this connection's "connected" line waits for its frames.
        self._awaiting_frames = False
        # Whether the connection up now has delivered frames.
        self._delivered = False
        self.ended_after_frames = False

    @property
    def trouble(self):
        """
        What keeps the recording from its sender now, in a few words (e.g.
        C{'connection refused'}), or L{None}.
        """
        return None if self._trouble is None else self._trouble.text

    @property
    def status(self):
        """
        The breaks in the status::

            {'breaks': 1, 'frames_missed_in_breaks': 1}
        """
        return {"breaks": self.breaks,
                "frames_missed_in_breaks": self.frames_missed_in_breaks}

    def starting(self, data_dir=None):
        """
        Recording begins: the first connection attempt is about to be made.

        @param data_dir: Where the files go, for the line.
        """
        self._stopping = False
        self._trouble = None
        self._ended = None
        self._awaiting_frames = False
        self._delivered = False
        self.ended_after_frames = False
        self._break = None
        if data_dir is None:
            self.log.info("Connecting to {address}", address=self.address)
        else:
            self.log.info("Connecting to {address}, recording into "
                          "{data_dir}", address=self.address,
                          data_dir=data_dir)

    def stopping(self):
        """
        Recording stops: the connection about to end is no trouble, and no
        break.
        """
        self._stopping = True
        self._break = None

    def connect_failed(self, failure):
        """
        A connection attempt failed.

        @param failure: Its L{Failure}.
        """
        self.ended_after_frames = False
        if not self._stopping and not failure.check(
                error.ConnectingCancelledError):
            self._ended = (connect_failure_text(failure), True, "warn")

    def retrying(self, attempt, delay):
        """
        The next attempt is scheduled, after the failure or disconnect
        noted just before: log it, or count it if it repeats.

        @param attempt: Failed attempts in a row (1 after a disconnect).
        @param delay: Seconds until the next attempt.
        """
        ended, self._ended = self._ended, None
        if ended is None:
            ended = ("the connection ended", False, "warn")
        text, connect_failure, level = ended
        now = self.clock.seconds()
        broken = self._break
        if broken is not None and not broken.announced and not connect_failure:
            broken.announced = True
            self._trouble = _Trouble(text, False, now)
            emit = self.log.error if level == "error" else self.log.warn
            emit("Connection to {address} lost during session {session}: "
                 "{text}; next try in {delay}", address=self.address,
                 session=broken.session, text=text, delay=delay_text(delay))
            return
        trouble = self._trouble
        if trouble is not None and trouble.text == text:
            trouble.count += 1
            if now - trouble.reported_at >= self.summary_interval:
                trouble.reported_at = now
                self.log.warn(
                    "Still {what} {address}: {text}, {count} times in "
                    "{duration}; next try in {delay}",
                    what=("cannot connect to" if connect_failure
                          else "no good connection to"),
                    address=self.address, text=text, count=trouble.count,
                    duration=duration_text(now - trouble.since),
                    delay=delay_text(delay))
            return
        self._trouble = _Trouble(text, connect_failure, now)
        emit = self.log.error if level == "error" else self.log.warn
        emit("{what} {address}: {text}; next try in {delay}",
             what="Cannot connect to" if connect_failure else
             "Disconnected from", address=self.address, text=text,
             delay=delay_text(delay))

    def connected(self, peer):
        """
        A connection is up.

        After connect failures, that ends the trouble.  After a disconnect,
        only frames do (L{receiving}): a peer that goes silent or closes
        again and again is connected to each time, and after the second
        time the line waits for its frames.

        @param peer: The peer's address, as text.
        """
        trouble = self._trouble
        self._awaiting_frames = False
        self._delivered = False
        if self._break is not None:
            # Said when the session goes on, or when it turns out not to.
            self._break.connected_at = self.clock.seconds()
            if trouble is not None and trouble.connect_failure:
                self._trouble = None
            return
        if trouble is None or trouble.connect_failure:
            self._trouble = None
            self._say_connected("Connected to {address}", trouble, peer)
        elif trouble.count == 1:
            self._say_connected("Connected to {address}", None, peer)
        else:
            self._awaiting_frames = True

    def receiving(self):
        """
        The first frames of a connection arrived.
        """
        self._delivered = True
        trouble, self._trouble = self._trouble, None
        if self._break is not None:
            return
        if self._awaiting_frames:
            self._awaiting_frames = False
            self._say_connected("Connected to {address}, frames arriving",
                                trouble, None)

    def lost(self, why, partial=0, level="warn"):
        """
        The connection ended.  The line is written when the next try is
        scheduled (L{retrying}), which says when; or at once if recording
        stops and a partial frame was thrown away.

        @param why: Why, in a few words.
        @param partial: Bytes of an incomplete frame thrown away.
        @param level: The level of the line: C{'warn'}, or C{'error'} for a
            stream that broke the rules.
        """
        self._awaiting_frames = False
        self.ended_after_frames = self._delivered and level != "error"
        self._delivered = False
        if self._break is not None:
            self._break.connected_at = None
        elif not self._stopping and self._session is not None:
            session = self._session()
            if session is not None:
                self._break = _Break(session, self.clock.seconds())
                self.breaks += 1
        if self._stopping:
            if partial:
                self.log.info("Disconnected from {address}: recording "
                              "stopped; {partial} bytes of an incomplete "
                              "frame discarded", address=self.address,
                              partial=partial)
            return
        if partial:
            why = "%s; %d bytes of an incomplete frame discarded" % (
                why, partial)
        self._ended = (why, False, level)

    def frames_taken(self):
        """
        The writer took a batch of frames.  After a reconnect in a break,
        a session other than the one lost in progress, or none going on
        within C{resume_within} seconds, ends the break: the reconnect is
        logged as any other.
        """
        broken = self._break
        if broken is None or broken.connected_at is None:
            return
        session = self._session()
        now = self.clock.seconds()
        if ((session is not None and session != broken.session)
                or now - broken.connected_at >= self.resume_within):
            self._break = None
            self._say_connected("Connected to {address}", None, None)

    def session_resumed(self, session_id, missed):
        """
        The first live data of the session in progress came after a
        reconnect (the writer calls this): the break ends.  With no break
        known (the first connection of a start that goes on with a session
        found on disk), the line says only that the session goes on.

        @param session_id: The session that goes on.
        @param missed: Frames the break cost, from C{frame_num}.
        """
        self.frames_missed_in_breaks += missed
        broken, self._break = self._break, None
        self._trouble = None
        if broken is None:
            self.log.info("Session {session} goes on; {missed} missed",
                          session=session_id, missed=_frames(missed))
            return
        self.log.info("Connection to {address} back after {delay}; session "
                      "{session} goes on; {missed} missed",
                      address=self.address,
                      delay=delay_text(self.clock.seconds() - broken.since),
                      session=session_id, missed=_frames(missed))

    def _say_connected(self, format, trouble, peer):
        after = ""
        if trouble is not None:
            after = " " + trouble.summary(self.clock.seconds())
        self.log.info(format + "{after}", address=self.address, after=after,
                      peer=peer)
