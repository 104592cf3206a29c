"""
End to end over loopback: spt3g's own G3NetworkSender streams SO sessions,
a RecordingService in this reactor writes them, and the files are read back.
"""

import os
import re
import socket

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tsagg import frames as tsagg_frames
from tsagg.frames import core
from tsagg.service import RecordingService, tcp_endpoint_description
from tsagg.simulator import SessionPlan, Simulator

from tests.test_service import fast_retry, wait_until
from tests.util import files_and_frames, types_in


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BindingTests(unittest.TestCase):

    def test_expected_binding(self):
        """
        The suite runs once with spt3g and once under so3g's copy
        (L{tests.test_bindings}), which sets the variable.
        """
        self.assertEqual(tsagg_frames.BINDING,
                         os.environ.get("TSAGG_EXPECT_BINDING", "spt3g"))


class RealSenderTests(unittest.TestCase):
    """
    Whole SO sessions from a real G3NetworkSender.
    """

    @defer.inlineCallbacks
    def record(self, plan, time_per_file):
        port = free_port()
        sender = core.G3NetworkSender(hostname="*", port=port)
        self.dir = self.mktemp()
        service = RecordingService(
            reactor, tcp_endpoint_description("127.0.0.1", port), self.dir,
            time_per_file=time_per_file, gap_timeout=30, fsync=False,
            retry_policy=fast_retry, create_data_dir=True)
        service.startService()
        try:
            yield service.whenConnected()
            sim = Simulator(sender, reactor, plan, record=True)
            yield sim.run()
            expected = plan.sessions * (2 + plan.frames_per_session)
            yield wait_until(
                lambda: service.status["frames_written"] >= expected)
        finally:
            yield service.stopService()
        return sim, service

    def scans(self, raws):
        return [r for r in raws if types_in([r]) == "S"]

    @defer.inlineCallbacks
    def test_sessions_recorded_by_the_rules(self):
        plan = SessionPlan(channels=16, sample_rate=200, frame_rate=20,
                           duration=2.5, sessions=2, lead_in=1, idle=1,
                           stream_id="crate1slot2")
        sim, service = yield self.record(plan, time_per_file=1.0)
        files = files_and_frames(self.dir)
        sent_scans = self.scans(sim.sent)
        self.assertEqual(len(sent_scans), 2 * plan.frames_per_session)
        # Every Scan frame once, in order, bit for bit.
        on_disk = [r for _, raws in files for r in self.scans(raws)]
        self.assertEqual(on_disk, sent_scans)
        pattern = re.compile(r"^(\d{5})/crate1slot2/((\d+)_(\d{3}))\.g3$")
        sessions = {}
        for path, raws in files:
            m = pattern.match(path)
            self.assertIsNotNone(m, path)
            self.assertEqual(m.group(1), m.group(3)[:5])
            sessions.setdefault(m.group(3), []).append(int(m.group(4)))
            # Each file stands alone, and no flow control is on disk.
            self.assertEqual(types_in(raws)[:2], "OW")
            self.assertEqual(set(types_in(raws)), {"O", "W", "S"})
        self.assertEqual(len(sessions), 2)
        for numbers in sessions.values():
            # Rotation happened; files count up from 000.
            self.assertGreaterEqual(len(numbers), 2)
            self.assertEqual(numbers, list(range(len(numbers))))
        self.assertEqual(service.status["frames_dropped_upstream"], 0)
        self.assertEqual(service.status["bad_frames"], 0)
        self.assertEqual(service.status["flow_control_frames"]["start"], 2)

    @defer.inlineCallbacks
    def test_large_frames(self):
        plan = SessionPlan(channels=1000, sample_rate=200, frame_rate=1,
                           duration=3, sessions=1, lead_in=1, idle=1)
        sim, service = yield self.record(plan, time_per_file=600)
        [(path, raws)] = files_and_frames(self.dir)
        self.assertEqual(self.scans(raws), self.scans(sim.sent))
        self.assertGreater(len(raws[-1]), 800000)
