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
import time

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tsagg.frames import core

from tests import faultlog
from tests import frames as F
from tests.faultutil import (LogCapture, Sandbox, check_data_dir,
                             frame_ends, make_service, scans, spawn_sender)
from tests.test_integration import free_port
from tests.test_service import PeerFactory, wait_until

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
        port = free_port()
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
            with open(proc.log_path) as f:
                self.fail("round %d (%s): no connection; sender %s: %s"
                          % (n, kind, proc.poll(), f.read()[-2000:]))
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

