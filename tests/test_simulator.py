"""
Tests for L{tsagg.simulator}, timed by a L{task.Clock}.
"""

from twisted.internet import task
from twisted.trial import unittest

from tsagg import sostream
from tsagg.frames import BINDING, core, frame_type_code
from tsagg.simulator import Options, SessionPlan, Simulator


class SimulatorTests(unittest.TestCase):

    def run_plan(self, plan):
        clock = task.Clock()
        clock.advance(1700000000)
        sent = []
        sim = Simulator(sent.append, clock, plan)
        d = sim.run()
        while not d.called:
            clock.advance(0.05)
        self.successResultOf(d)
        return sim, sent

    def kinds(self, frames):
        out = []
        for f in frames:
            fc = sostream.flow_control(f)
            out.append(frame_type_code(f) if fc is None
                       else sostream.FLOW_CONTROL_NAMES[fc])
        return out

    def test_one_session(self):
        plan = SessionPlan(channels=3, sample_rate=100, frame_rate=10,
                           duration=0.5, sessions=1, lead_in=2, idle=1)
        sim, sent = self.run_plan(plan)
        self.assertEqual(self.kinds(sent),
                         ["alive", "alive", "start", "O", "W",
                          "S", "S", "S", "S", "S",
                          "end", "cleanse", "cleanse", "alive"])
        scans = [f for f in sent if frame_type_code(f) == "S"]
        self.assertEqual([f["frame_num"] for f in scans], [2, 3, 4, 5, 6])
        self.assertEqual(len(scans[0]["data"]), 3)
        self.assertEqual(len(scans[0]["data"]["r0000"]), 10)
        self.assertEqual({f["session_id"] for f in scans}, {1700000002})
        self.assertEqual(sim.scan_frames_sent, 5)

    def test_sessions_get_their_own_ids(self):
        plan = SessionPlan(channels=1, frame_rate=10, duration=0.2,
                           sessions=3, lead_in=0, idle=2)
        _, sent = self.run_plan(plan)
        ids = {f["session_id"] for f in sent if frame_type_code(f) == "O"
               and sostream.flow_control(f) is None}
        self.assertEqual(len(ids), 3)

    def test_samples_follow_on_the_grid_of_the_sample_rate(self):
        plan = SessionPlan(channels=2, sample_rate=200, frame_rate=10,
                           duration=0.5, lead_in=0)
        _, sent = self.run_plan(plan)
        maps = [f["data"] for f in sent if frame_type_code(f) == "S"]
        tick = int(core.G3Units.s / 200)
        for before, after in zip(maps, maps[1:]):
            self.assertEqual(before.n_samples, 20)
            self.assertEqual(before.stop.time - before.start.time, 19 * tick)
            self.assertEqual(after.start.time - before.stop.time, tick)

    def test_super_timestream_needs_so3g(self):
        if BINDING == "so3g":
            raise unittest.SkipTest("so3g's binding is loaded")
        plan = SessionPlan(super_timestream=True)
        self.assertRaises(RuntimeError, Simulator, [].append, task.Clock(),
                          plan)

    def test_options(self):
        options = Options()
        options.parseOptions(["--channels", "1000", "--sessions", "2"])
        plan = options.plan()
        self.assertEqual((plan.channels, plan.sessions), (1000, 2))
        self.assertFalse(plan.super_timestream)
        self.assertRaises(Exception, Options().parseOptions,
                          ["--channels", "0"])
        options = Options()
        options.parseOptions(["--super-timestream"])
        self.assertTrue(options.plan().super_timestream)
