"""
Fault injection over real sockets: senders killed at random points, corrupt
streams, hostile identifiers.  tsagg runs in this process as a
L{RecordingService}; the peers are real processes or real sockets, and
every file is read back with spt3g.
"""

import os
import random
import signal
import struct

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial import unittest


from tests import faultlog
from tests import frames as F
from tests.faultutil import (LogCapture, Sandbox, check_data_dir,
                             frame_ends, g3_blob, make_service, quiet_port,
                             reframe, scans, spawn_sender)
from tests.test_service import PeerFactory, wait_until
from tests.util import log_of

SESSION = 1700000000


def session_stream(session_id, seed, scan_frames=30, channels=8,
                   samples=200):
    """
    The raw frames of one SO session as a sender sends them after a
    (re)connect: Observation, Wiring, then numbered Scan frames, each with
    data of its own.
    """
    raws = [F.raw(F.observation(session_id=session_id)),
            F.raw(F.wiring(session_id=session_id))]
    for n in range(scan_frames):
        raws.append(F.raw(F.scan(2 + n, session_id=session_id,
                                 channels=channels, samples=samples,
                                 seed=seed * 1000 + n)))
    return raws


class PeerDeathTests(unittest.TestCase):
    """
    The sender dies, many times in a row, at random points: mid-frame,
    inside a header, at a frame boundary, while bytes are in flight, or
    with a reset.  Every frame that arrived whole is on disk exactly once,
    no file is torn, and tsagg reconnects by itself and records the next
    session.
    """

    ROUNDS = 50
    KINDS = ("mid-frame", "in-header", "at-boundary", "in-flight", "reset")

    @defer.inlineCallbacks
    def test_sender_killed_many_times(self):
        seed = int(os.environ.get("TSAGG_FAULT_SEED", "4"))
        rng = random.Random(seed)
        box = Sandbox(self)
        port = quiet_port()
        service = make_service(self, port, box.data, time_per_file=3600,
                               gap_timeout=3600, idle_timeout=60)
        expected_scans = []
        kinds = []
        streams = []
        for n in range(self.ROUNDS + 1):
            # Two rounds share each session: a reconnect in mid-session
            # continues its files, a new one begins new files.
            raws = session_stream(SESSION + n // 2, seed * 100 + n)
            streams.append((raws, box.write_input("round%02d.g3" % n,
                                                  b"".join(raws))))
        box.seal()
        with faultlog.PeakRSS() as peak:
            service.startService()
            for n, (raws, stream) in enumerate(streams):
                if n == self.ROUNDS:
                    kind = "whole session"
                else:
                    kind = self.KINDS[n % len(self.KINDS)]
                kinds.append(kind)
                received = yield self.one_round(service, port, stream, raws,
                                                kind, rng, n)
                whole = [r for r, end in zip(raws, frame_ends(raws))
                         if end <= received]
                expected_scans += scans(whole)
            yield service.stopService()
        files, torn = check_data_dir(box.data)
        on_disk = [r for _, raws in files for r in scans(raws)]
        status = service.status
        faultlog.record(
            "sender SIGKILLed or reset mid-stream (%s), then a whole "
            "session" % ", ".join(self.KINDS), tried=self.ROUNDS,
            kept=len(on_disk), expected=len(expected_scans),
            torn=len(torn), outside=box.outside(), peak_bytes=peak.peak,
            peak_kind="RSS growth")
        self.assertEqual(torn, [])
        self.assertEqual(len(on_disk), len(expected_scans))
        self.assertEqual(on_disk, expected_scans,
                         "scan frames differ (seed %d)" % seed)
        self.assertEqual(status["reconnects"], self.ROUNDS)
        self.assertEqual(status["bad_frames"], 0)
        self.assertEqual(box.outside(), 0)
        # The last round, a whole session, is all there.
        self.assertEqual(on_disk[-30:], scans(raws))

    @defer.inlineCallbacks
    def one_round(self, service, port, stream, raws, kind, rng, n):
        """
        Serve one stream through a sender process and end it by C{kind}.

        @return: A L{Deferred} firing with the bytes tsagg received on the
            connection.
        """
        ends = frame_ends(raws)
        total = ends[-1]
        before = service.status
        connections, received0 = before["connections"], before["bytes_received"]
        self.assertFalse(before["connected"])
        self.assertIsNone(before["current_file"])
        if kind == "mid-frame":
            i = rng.randrange(len(raws))
            start = ends[i] - len(raws[i])
            cut = start + rng.randrange(14, len(raws[i]))
        elif kind == "in-header":
            i = rng.randrange(len(raws))
            cut = ends[i] - len(raws[i]) + rng.randrange(1, 13)
        elif kind == "at-boundary":
            cut = ends[rng.randrange(len(raws))]
        else:
            cut = None
        then = {"reset": "reset", "whole session": "close"}.get(kind, "hold")
        pace = 0.002 if kind == "in-flight" else 0.0
        chunk = 4096 if kind == "in-flight" else 0
        if kind == "reset":
            cut = rng.randrange(total)
        proc = spawn_sender(self, port, stream, cut=cut, chunk=chunk,
                            pace=pace, seed=n, then=then)
        try:
            yield wait_until(
                lambda: service.status["connections"] > connections,
                timeout=30)
        except AssertionError:
            self.fail("round %d (%s): no connection; sender %s: %s"
                      % (n, kind, proc.poll(), log_of(proc)[-2000:]))
        if then == "hold" and cut is not None:
            yield wait_until(lambda: service.status["bytes_received"]
                             - received0 >= cut, timeout=30)
            proc.send_signal(signal.SIGKILL)
        elif kind == "in-flight":
            yield wait_until(lambda: service.status["bytes_received"]
                             > received0, timeout=30)
            yield task.deferLater(reactor, rng.uniform(0.0, 0.1),
                                  lambda: None)
            proc.send_signal(signal.SIGKILL)
        yield wait_until(lambda: not service.status["connected"], timeout=30)
        proc.wait()
        # The file is closed at the disconnect, before the next sender.
        self.assertIsNone(service.status["current_file"])
        return service.status["bytes_received"] - received0

    test_sender_killed_many_times.timeout = 600



def _garbage(seed, size):
    rng = random.Random(seed)
    data = bytearray(rng.getrandbits(8) for _ in range(size))
    return bytes(data)


def _header(flag=1, version=1, count=1, ftype=b"S"):
    return struct.pack("<BIII", flag, version, count, ord(ftype))


_MAX_U64 = 2 ** 64 - 1
_BAD_CRC = bytearray(F.raw(F.scan(90)))
_BAD_CRC[-1] ^= 0x5A

#: name -> (bytes after the good frames, text expected in the error)
CORRUPT = {
    "bad CRC": (bytes(_BAD_CRC), "rejected by spt3g"),
    "key length 2^64-1": (_header() + struct.pack("<Q", _MAX_U64),
                          "KeyTooLong"),
    "blob length 2^64-1": (_header() + struct.pack("<Q", 3) + b"key"
                           + struct.pack("<Q", _MAX_U64), "FrameTooLarge"),
    "blob length 2^40": (_header() + struct.pack("<Q", 3) + b"key"
                         + struct.pack("<Q", 2 ** 40), "FrameTooLarge"),
    "entry count 2^32-1": (_header(count=2 ** 32 - 1), "TooManyEntries"),
    "endianness flag 0": (_header(flag=0), "BadEndianness"),
    "endianness flag 0xff": (_header(flag=0xFF), "BadEndianness"),
    "class version 2": (_header(version=2), "BadClassVersion"),
    "class version 2^32-1": (_header(version=2 ** 32 - 1),
                             "BadClassVersion"),
    "unknown frame type": (_header(ftype=b"q"), "BadFrameType"),
    "random garbage": (_garbage(7, 65536), ": "),
    "garbage after a valid header": (_header(count=3) + _garbage(8, 65536),
                                     ": "),
}

#: How far the resident set may grow in one corrupt-stream case: small
#: frames, one socket read at a time, and nothing sized by a length that
#: came off the wire.
MEMORY_BOUND = 64 << 20


class CorruptStreamTests(unittest.TestCase):
    """
    Corrupt bytes from a peer over a real socket: the connection is dropped
    (or timed out), the event logged and counted, the frames before it kept,
    memory bounded; then tsagg reconnects.
    """

    @defer.inlineCallbacks
    def start(self, idle_timeout=30.0, max_frame_size=1 << 30):
        self.box = Sandbox(self)
        self.box.seal()
        self.peer = PeerFactory()
        self.port = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(self.peer)
        self.addCleanup(self.port.stopListening)
        self.log = LogCapture(self)
        self.service = make_service(
            self, self.port.getHost().port, self.box.data,
            idle_timeout=idle_timeout, max_frame_size=max_frame_size)
        self.service.startService()
        conn = yield self.peer.next_connection()
        return conn

    good = [F.raw(F.observation()), F.raw(F.wiring())] + [
        F.raw(F.scan(n, seed=n)) for n in range(2, 6)]

    @defer.inlineCallbacks
    def finish(self, fault, peak):
        yield self.service.stopService()
        files, torn = check_data_dir(self.box.data)
        kept = [r for _, raws in files for r in raws]
        faultlog.record("corrupt stream: " + fault, tried=1,
                        kept=len(scans(kept)), expected=len(scans(self.good)),
                        torn=len(torn), outside=self.box.outside(),
                        peak_bytes=peak.peak, peak_kind="RSS growth")
        self.assertEqual(torn, [])
        self.assertEqual(kept, self.good)
        self.assertEqual(self.box.outside(), 0)
        if peak.peak is not None:
            self.assertLess(peak.peak, MEMORY_BOUND)

    @defer.inlineCallbacks
    def check_dropped(self, name):
        bad, error = CORRUPT[name]
        with faultlog.PeakRSS() as peak:
            conn = yield self.start()
            conn.transport.write(b"".join(self.good) + bad
                                 + F.raw(F.scan(99)))
            # Dropped, and connected again.
            yield self.peer.next_connection()
        status = self.service.status
        self.assertEqual(status["bad_frames"], 1)
        self.assertIn(error, status["last_stream_error"])
        self.assertGreaterEqual(self.peer.lost, 1)
        self.assertEqual(len(self.log.matching(": bad stream, ")), 1)
        yield self.finish(name, peak)

    @defer.inlineCallbacks
    def test_half_frame_then_silence_times_out(self):
        with faultlog.PeakRSS() as peak:
            conn = yield self.start(idle_timeout=0.5)
            half = F.raw(F.scan(50))
            conn.transport.write(b"".join(self.good) + half[:len(half) // 2])
            yield self.peer.next_connection()
        status = self.service.status
        self.assertEqual(status["idle_timeouts"], 1)
        self.assertEqual(status["bad_frames"], 0)
        self.assertTrue(self.log.matching(": no data for 0.5 s"))
        self.assertTrue(self.log.matching("incomplete frame discarded"))
        yield self.finish("half a frame, then silence (idle timeout)", peak)

    @defer.inlineCallbacks
    def test_half_frame_then_close(self):
        with faultlog.PeakRSS() as peak:
            conn = yield self.start()
            half = F.raw(F.scan(50))
            conn.transport.write(b"".join(self.good) + half[:len(half) // 2])
            conn.transport.loseConnection()
            yield self.peer.next_connection()
        self.assertEqual(self.service.status["bad_frames"], 0)
        self.assertTrue(self.log.matching("incomplete frame discarded"))
        yield self.finish("half a frame, then close", peak)

    @defer.inlineCallbacks
    def test_huge_declared_blob_is_not_allocated(self):
        """
        A blob of 900 MiB, under the frame limit, of which 4 MiB arrive
        before the peer closes: memory follows the bytes received, not the
        length declared.
        """
        with faultlog.PeakRSS() as peak:
            conn = yield self.start()
            partial = (_header() + struct.pack("<Q", 3) + b"key"
                       + struct.pack("<Q", 900 << 20) + b"\0" * (4 << 20))
            conn.transport.write(b"".join(self.good) + partial)
            conn.transport.loseConnection()
            yield self.peer.next_connection()
        self.assertEqual(self.service.status["bad_frames"], 0)
        yield self.finish("900 MiB blob declared, 4 MiB sent, then close",
                          peak)

    @defer.inlineCallbacks
    def test_frame_in_one_byte_writes(self):
        """
        A sender process that writes one byte per send, with Nagle off:
        every frame is recorded.
        """
        box = Sandbox(self)
        stream = box.write_input("stream.g3", b"".join(self.good))
        box.seal()
        port = quiet_port()
        service = make_service(self, port, box.data)
        with faultlog.PeakRSS() as peak:
            service.startService()
            proc = spawn_sender(self, port, stream, chunk=1, then="close")
            yield wait_until(lambda: service.status["connections"] == 1
                             and not service.status["connected"], timeout=60)
            proc.wait()
            yield service.stopService()
        files, torn = check_data_dir(box.data)
        kept = [r for _, raws in files for r in raws]
        faultlog.record("valid frames in 1-byte writes", tried=1,
                        kept=len(scans(kept)), expected=len(scans(self.good)),
                        torn=len(torn), outside=box.outside(),
                        peak_bytes=peak.peak, peak_kind="RSS growth")
        self.assertEqual(kept, self.good)
        self.assertEqual(service.status["bad_frames"], 0)
        self.assertEqual(box.outside(), 0)


def _add_corrupt_case(name):
    def test(self):
        return self.check_dropped(name)
    slug = "".join(c if c.isalnum() else "_" for c in name.lower())
    test.__name__ = "test_dropped_on_" + slug
    test.__doc__ = "%s: dropped, counted, logged; frames before kept." % name
    setattr(CorruptStreamTests, test.__name__, test)


for _name in CORRUPT:
    _add_corrupt_case(_name)


def _string_blob(data):
    return g3_blob("G3String", struct.pack("<Q", len(data)) + data)


def _int_blob(value):
    return g3_blob("G3Int", struct.pack("<q", value))


#: A blob with a valid frame CRC whose type name declares 1 GiB: spt3g's own
#: decoder allocates that much before it fails.
_GREEDY_BLOB = (b"\x01\x01\x00\x00\x80" + struct.pack("<Q", 1 << 30)
                + b"G3String")
#: A G3String that declares 2^40 bytes of text.
_GREEDY_STRING = g3_blob("G3String", struct.pack("<Q", 1 << 40) + b"abc")

_SAFE_PATH = r"^\d{5}/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}/\d{1,10}_\d{3}\.g3$"


class HostileIdentifierTests(unittest.TestCase):
    """
    Stream and session ids from a peer that tries to write elsewhere, or to
    crash or bloat the recorder, over a real socket.  Nothing is written
    outside the data directory; every frame is recorded under a sanitized
    name or the configured stream id.
    """

    def hostile_sessions(self, escape):
        """
        C{[(what, replace)]}: blobs that replace C{sostream_id} and
        C{session_id} in every frame of one session.
        """
        ids = [
            "../../x", "..", ".", "", "a/b", "/", escape, escape + "/../y",
            "x" * 100000, "\x00\x01\x1b[31m\n\t", "crate\\..\\..\\x",
            "\u202e\u00e9\u4e2d/..", "-rf", "~root",
        ]
        cases = [("sostream_id %r" % (i[:40],),
                  {b"sostream_id": _string_blob(i.encode("utf-8"))})
                 for i in ids]
        cases += [
            ("sostream_id as G3Int", {b"sostream_id": _int_blob(5)}),
            ("sostream_id as G3Double",
             {b"sostream_id": g3_blob("G3Double", struct.pack("<d", 1.5))}),
            ("sostream_id not UTF-8",
             {b"sostream_id": _string_blob(b"\xff\xfe/../x")}),
            ("sostream_id declaring a 1 GiB type name",
             {b"sostream_id": _GREEDY_BLOB}),
            ("sostream_id declaring 2^40 bytes",
             {b"sostream_id": _GREEDY_STRING}),
            ("sostream_id of garbage", {b"sostream_id": _garbage(3, 200)}),
            ("session_id as a path",
             {b"session_id": _string_blob(b"../../" + escape.encode())}),
            ("session_id negative", {b"session_id": _int_blob(-5)}),
            ("session_id 2^63-1", {b"session_id": _int_blob(2 ** 63 - 1)}),
            ("session_id as G3Double",
             {b"session_id": g3_blob("G3Double", struct.pack("<d", 1.7e9))}),
            ("session_id declaring a 1 GiB type name",
             {b"session_id": _GREEDY_BLOB}),
            ("frame_num and flow control declaring 1 GiB",
             {b"frame_num": _GREEDY_BLOB}),
        ]
        return cases

    @defer.inlineCallbacks
    def test_hostile_ids_stay_in_the_data_dir(self):
        box = Sandbox(self)
        escape = os.path.join(box.root, "escaped")
        peer = PeerFactory()
        port = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(peer)
        self.addCleanup(port.stopListening)
        service = make_service(self, port.getHost().port, box.data,
                               stream_id="configured")
        cases = self.hostile_sessions(escape)
        sent = []
        box.seal()
        with faultlog.PeakRSS() as peak:
            service.startService()
            conn = yield peer.next_connection()
            for n, (what, replace) in enumerate(cases):
                session = [F.raw(F.flow(F.START))]
                for frame in (F.observation(session_id=SESSION + n),
                              F.scan(2, session_id=SESSION + n, seed=n),
                              F.scan(3, session_id=SESSION + n, seed=n + 1)):
                    raw = reframe(F.raw(frame), replace=replace)
                    session.append(raw)
                    sent.append(raw)
                session.append(F.raw(F.flow(F.END)))
                conn.transport.write(b"".join(session))
            # A flow-control frame whose value is hostile is still flow
            # control: discarded, never written.
            conn.transport.write(reframe(
                F.raw(F.flow(F.ALIVE)),
                replace={b"sostream_flowcontrol": _GREEDY_BLOB}))
            yield wait_until(lambda: service.status["frames_received"]
                             == len(sent) + 2 * len(cases) + 1, timeout=60)
            yield service.stopService()
        files, torn = check_data_dir(box.data)
        kept = [r for _, raws in files for r in raws]
        outside = box.outside()
        faultlog.record("hostile sostream_id / session_id (%d kinds)"
                        % len(cases), tried=len(cases), kept=len(kept),
                        expected=len(sent), torn=len(torn), outside=outside,
                        peak_bytes=peak.peak, peak_kind="RSS growth")
        self.assertEqual(torn, [])
        self.assertEqual(outside, 0)
        self.assertFalse(os.path.lexists(escape))
        self.assertEqual(sorted(kept), sorted(sent))
        for path, _ in files:
            self.assertRegex(path, _SAFE_PATH)
        dirs = {path.split(os.sep)[1] for path, _ in files}
        self.assertIn("configured", dirs)
        self.assertIn("_.._x", dirs)
        self.assertIn("a_b", dirs)
        self.assertEqual(service.status["bad_frames"], 0)
        self.assertEqual(service.status["frames_lost"], 0)
        if peak.peak is not None:
            self.assertLess(peak.peak, MEMORY_BOUND)
