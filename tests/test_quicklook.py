"""
Tests for L{tsagg.quicklook}: the samples published equal the data sent,
decimated, for spt3g's C{G3TimestreamMap} and so3g's C{G3SuperTimestream};
the cost stays within real time; what cannot be read is counted and never
disturbs recording.
"""

import numpy as np
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tsagg.frames import BINDING, core, dump_frame, receive_frame
from tsagg.quicklook import (MIN_BURST, TICKS, QuickLook,
                             channel_name, field_name)

from tests import foreign
from tests import frames as F
from tests.test_service import ServiceTestCase, wait_until
from tests.util import files_and_frames

T0 = 1764912345.0


def map_frames(count, channels=6, samples=200, rate=200.0, t0=T0, seed=3,
               dtype=np.int32, first=0):
    """
    Scan frames of this binding's C{G3TimestreamMap}, one following the
    other on the grid of C{rate}.

    @return: C{(raws, data, times)} as L{foreign.scan_frames}.
    """
    rng = np.random.default_rng(seed)
    names = core.G3VectorString(["r%04d" % i for i in range(channels)])
    raws, datas, times = [], [], []
    for k in range(first, first + count):
        stamps = [int(round((t0 + (k * samples + i) / rate) * TICKS))
                  for i in range(samples)]
        if dtype == np.int32:
            data = rng.integers(-2 ** 20, 2 ** 20, size=(channels, samples),
                                dtype=np.int32)
        else:
            data = rng.standard_normal((channels, samples))
        frame = core.G3Frame(core.G3FrameType.Scan)
        frame["data"] = core.G3TimestreamMap(
            names, data, core.G3Time(stamps[0]), core.G3Time(stamps[-1]))
        frame["frame_num"] = 2 + k
        raws.append(dump_frame(frame))
        datas.append(data)
        times.extend(stamps)
    return raws, np.concatenate(datas, axis=1), np.array(times)


def lazy(raws):
    return [receive_frame(raw) for raw in raws]


class Published:
    """
    The blocks a L{QuickLook} publishes, joined per channel.
    """

    def __init__(self):
        self.blocks = []

    def __call__(self, block):
        self.blocks.append(block)

    def channel(self, name):
        times, values = [], []
        for block in self.blocks:
            if block["block_name"] == name:
                times.extend(block["timestamps"])
                values.extend(block["data"][name])
        return times, values


class QuickLookTestCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.published = Published()

    def quick_look(self, channels=("r0001", "r0004"), target_rate=10.0):
        return QuickLook(self.published, self.clock, channels=channels,
                         target_rate=target_rate)

    def feed(self, look, raws, every=1.0):
        """
        Hand the frames to the quick look one by one, C{every} seconds
        apart, and let it read them.
        """
        for frame in lazy(raws):
            look([frame])
            self.clock.advance(0)
            self.clock.advance(every)

    def assertDecimated(self, data, times, step, channels=(1, 4)):
        for c in channels:
            name = "r%04d" % (c,)
            got_times, got = self.published.channel(name)
            self.assertEqual(got, data[c, ::step].tolist(), name)
            np.testing.assert_allclose(got_times, times[::step] / TICKS,
                                       rtol=0, atol=1e-6)


class SampleTests(QuickLookTestCase):

    def test_timestream_map_decimated(self):
        raws, data, times = map_frames(5)
        look = self.quick_look(target_rate=10.0)
        self.feed(look, raws)
        self.assertDecimated(data, times, 20)
        self.assertEqual(look.status["decimation"], 20)
        self.assertEqual(look.status["frames_read"], 5)
        self.assertEqual(look.status["samples_published"], 2 * 50)

    def test_super_timestream_decimated(self):
        """
        so3g's G3SuperTimestream, made under so3g's binding, as the SMuRF
        streamer sends it.  spt3g 1.0.2 reads it as a G3TimestreamMap.
        """
        raws, data, times = foreign.scan_frames(self, "super")
        look = self.quick_look(target_rate=10.0)
        self.feed(look, raws)
        self.assertEqual(look.status["unreadable_frames"], 0,
                         look.status["last_error"])
        self.assertDecimated(data, times, 20)

    def test_step_carries_over_frame_boundaries(self):
        # 200 samples a frame, a step of 30: the phase runs on.
        raws, data, times = map_frames(4)
        look = self.quick_look(target_rate=200 / 30)
        self.feed(look, raws)
        self.assertDecimated(data, times, 30)

    def test_every_sample_at_the_full_rate(self):
        raws, data, times = map_frames(2, samples=50)
        look = self.quick_look(target_rate=1000.0)
        self.feed(look, raws, every=0.25)
        self.assertDecimated(data, times, 1)

    def test_a_gap_begins_at_the_next_frames_first_sample(self):
        before, data1, times1 = map_frames(2)
        after, data2, times2 = map_frames(2, first=5)
        look = self.quick_look(target_rate=200 / 30)
        self.feed(look, before + after)
        got_times, _ = self.published.channel("r0001")
        expected = np.concatenate([times1[::30], times2[::30]]) / TICKS
        np.testing.assert_allclose(got_times, expected, rtol=0, atol=1e-6)

    def test_float_data_leaves_out_what_is_not_finite(self):
        _, data, times = map_frames(1, dtype=np.float64)
        data[1, 20] = np.nan
        data[1, 40] = np.inf
        names = core.G3VectorString(["r%04d" % i for i in range(6)])
        fresh = core.G3Frame(core.G3FrameType.Scan)
        fresh["data"] = core.G3TimestreamMap(
            names, data, core.G3Time(int(times[0])),
            core.G3Time(int(times[-1])))
        look = self.quick_look(channels=["r0001"], target_rate=10.0)
        self.feed(look, [dump_frame(fresh)])
        got_times, got = self.published.channel("r0001")
        kept = [i for i in range(0, 200, 20) if i not in (20, 40)]
        self.assertEqual(got, data[1, kept].tolist())
        np.testing.assert_allclose(got_times, times[kept] / TICKS, atol=1e-6)

    def test_blocks_are_one_per_channel_with_ocs_names(self):
        raws, _, _ = map_frames(1)
        look = self.quick_look(channels=[1, "r0004"], target_rate=10.0)
        self.feed(look, raws)
        self.assertEqual({b["block_name"] for b in self.published.blocks},
                         {"r0001", "r0004"})
        for block in self.published.blocks:
            self.assertEqual(list(block["data"]), [block["block_name"]])
            self.assertEqual(len(block["timestamps"]), 10)
            for value in block["data"][block["block_name"]]:
                self.assertIs(type(value), int)


class ChoiceTests(QuickLookTestCase):
    """
    Which frames are read: Scan frames only, and only as many as real time
    allows.
    """

    def test_other_frames_are_not_read(self):
        look = self.quick_look()
        look(lazy([F.raw(F.observation()), F.raw(F.wiring()),
                   F.raw(F.flow(F.ALIVE))]))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(look.status["frames_read"], 0)

    def test_no_channels_no_work(self):
        look = self.quick_look(channels=())
        raws, _, _ = map_frames(2)
        look(lazy(raws))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(look.status["frames_skipped"], 0)

    def test_reading_waits_for_a_later_turn_of_the_reactor(self):
        look = self.quick_look()
        raws, _, _ = map_frames(1)
        look(lazy(raws))
        self.assertEqual(self.published.blocks, [])
        self.clock.advance(0)
        self.assertNotEqual(self.published.blocks, [])

    def test_faster_than_real_time_is_mostly_skipped(self):
        """
        A hundred seconds of data at once (a backlog, a replay, the
        benchmark) costs the reading of a burst's worth of frames.
        """
        raws, _, _ = map_frames(100, channels=2, samples=200)
        look = self.quick_look(channels=["r0001"])
        for frame in lazy(raws):
            look([frame])
            self.clock.advance(0)
            self.clock.advance(0.001)
        status = look.status
        self.assertLessEqual(status["frames_read"], MIN_BURST + 2)
        self.assertEqual(status["frames_read"] + status["frames_skipped"],
                         100)

    def test_short_frames_are_read_at_the_target_rate(self):
        # 100 frames a second of 2 samples each, 5 samples a second wanted.
        raws, _, _ = map_frames(1000, channels=2, samples=2)
        look = self.quick_look(channels=["r0001"], target_rate=5.0)
        self.feed(look, raws, every=0.01)
        # 10 s: a burst, then one frame per target period.
        read = look.status["frames_read"]
        self.assertGreaterEqual(read, 50)
        self.assertLessEqual(read, 50 + MIN_BURST * 5 + 2)


class FailSoftTests(QuickLookTestCase):

    def test_a_scan_frame_without_data_is_counted(self):
        look = self.quick_look()
        self.feed(look, [dump_frame(core.G3Frame(core.G3FrameType.Scan))])
        self.assertEqual(look.status["unreadable_frames"], 1)
        self.assertEqual(look.status["last_error"], "no 'data' in the frame")

    def test_data_of_another_kind_is_counted(self):
        frame = core.G3Frame(core.G3FrameType.Scan)
        frame["data"] = core.G3Int(3)
        look = self.quick_look()
        self.feed(look, [dump_frame(frame)])
        self.assertEqual(look.status["unreadable_frames"], 1)
        self.assertIn("not a timestream map", look.status["last_error"])

    def test_missing_channels_are_reported(self):
        raws, _, _ = map_frames(1, channels=3)
        look = self.quick_look(channels=["r0001", "r0099"])
        self.feed(look, raws)
        self.assertEqual(look.status["missing_channels"], ["r0099"])
        self.assertEqual(len(self.published.channel("r0001")[1]), 10)

    def test_says_which_binding_it_runs_under(self):
        self.assertEqual(self.quick_look().status["binding"], BINDING)

    def test_frames_of_the_other_binding(self):
        """
        Under spt3g 1.0.2, so3g's G3SuperTimestream is read.  Under so3g's
        binding, a G3TimestreamMap of spt3g 1.0.2 (a newer class version)
        cannot be: it is counted, and nothing breaks.
        """
        if BINDING == "spt3g":
            raws, data, times = foreign.scan_frames(self, "super")
            look = self.quick_look()
            self.feed(look, raws)
            self.assertDecimated(data, times, 20)
        else:
            raws, _, _ = foreign.scan_frames(self, "map")
            look = self.quick_look()
            self.feed(look, raws)
            self.assertEqual(look.status["unreadable_frames"], len(raws))
            self.assertEqual(self.published.blocks, [])


class SettingsTests(unittest.TestCase):

    def test_channel_names(self):
        self.assertEqual(channel_name(12), "r0012")
        self.assertEqual(channel_name("12"), "r0012")
        self.assertEqual(channel_name("r0345"), "r0345")
        self.assertEqual(channel_name(" sq1_ch3 "), "sq1_ch3")
        for bad in ("", "  ", -1, "-3", True):
            self.assertRaises(ValueError, channel_name, bad)

    def test_field_names_follow_ocs_rules(self):
        from ocs.ocs_feed import Feed
        for name in ("r0012", "sq1-ch3", "3rd", "a.b c", "_x"):
            Feed.verify_data_field_string(field_name(name))

    def test_target_rate_must_be_positive(self):
        look = QuickLook([].append, task.Clock())
        for bad in (0, -1, float("nan"), float("inf"), "x"):
            self.assertRaises(ValueError, look.set_target_rate, bad)

    def test_changed_while_running(self):
        clock = task.Clock()
        published = Published()
        look = QuickLook(published, clock, channels=["r0001"],
                         target_rate=10.0)
        raws, data, _ = map_frames(2)
        look(lazy(raws[:1]))
        clock.advance(0)
        look.set_channels([2])
        look.set_target_rate(20.0)
        clock.advance(1)
        look(lazy(raws[1:]))
        clock.advance(0)
        self.assertEqual(published.channel("r0001")[1],
                         data[1, 0:200:20].tolist())
        self.assertEqual(published.channel("r0002")[1],
                         data[2, 200:400:10].tolist())


class RecordingTests(ServiceTestCase):
    """
    With a quick look watching, recording writes exactly what it would
    without one, whatever the quick look makes of the frames.
    """

    @defer.inlineCallbacks
    def test_recording_is_undisturbed(self):
        port = yield self.listen()
        published = Published()
        look = QuickLook(published, reactor, channels=["r0001"],
                         target_rate=10.0)
        service = self.make_service(port, watch_frames=look)
        service.startService()
        conn = yield self.peer.next_connection()
        raws, data, _ = map_frames(3)
        bad = core.G3Frame(core.G3FrameType.Scan)
        bad["data"] = core.G3Int(3)
        sent = [F.raw(F.observation())] + raws[:1] + [dump_frame(bad)] \
            + raws[1:]
        conn.transport.write(b"".join(sent))
        yield wait_until(lambda: service.status["frames_written"] == 5)
        yield wait_until(lambda: look.status["frames_read"]
                         + look.status["unreadable_frames"] == 4)
        yield service.stopService()
        [(path, written)] = files_and_frames(self.dir)
        self.assertEqual(written, sent)
        self.assertEqual(look.status["unreadable_frames"], 1)
        self.assertEqual(published.channel("r0001")[1],
                         data[1, ::20].tolist())

    @defer.inlineCallbacks
    def test_a_failing_watcher_does_not_stop_recording(self):
        port = yield self.listen()

        def broken(frames):
            raise RuntimeError("watcher bug")
        service = self.make_service(port, watch_frames=broken)
        service.startService()
        conn = yield self.peer.next_connection()
        sent = [F.raw(F.observation()), F.raw(F.scan(2)), F.raw(F.scan(3))]
        for raw in sent:
            conn.transport.write(raw)
        yield wait_until(lambda: service.status["frames_written"] == 3)
        yield service.stopService()
        [(path, written)] = files_and_frames(self.dir)
        self.assertEqual(written, sent)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
