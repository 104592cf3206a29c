"""
Tests for L{tsagg.monitor}: the status feed's records and the reasons a
recording is degraded, from plain status values and given times.
"""

from ocs.ocs_feed import Feed
from twisted.trial import unittest

from tsagg.monitor import RECORD_FIELDS, Health, StatusRecords


def status(**kw):
    """
    A recording's status, as L{tsagg.service.RecordingService.status} has
    it, all well unless C{kw} says otherwise.
    """
    s = {"connected": True, "frames_received": 0, "bytes_received": 0,
         "frames_written": 0, "bytes_written": 0, "files_written": 0,
         "frames_dropped_upstream": 0, "frames_lost": 0, "frames_held": 0,
         "write_errors": 0, "bad_frames": 0, "reconnects": 0,
         "last_frame_time": None, "outage_seconds": None, "last_error": None,
         "free_bytes": 50 << 30, "free_floor_bytes": 1 << 30,
         "connection_trouble": None}
    s.update(kw)
    return s


class RecordTests(unittest.TestCase):

    def test_rates_over_the_interval(self):
        records = StatusRecords()
        records.start(100.0, status())
        blocks = records.blocks(
            105.0, 1000.0, status(frames_received=50,
                                  bytes_received=10_000_000,
                                  frames_written=40,
                                  bytes_written=5_000_000),
            990.0, None, False)
        r = blocks["recorder"]
        self.assertEqual(r["frames_received_per_s"], 10.0)
        self.assertEqual(r["received_mb_per_s"], 2.0)
        self.assertEqual(r["frames_written_per_s"], 8.0)
        self.assertEqual(r["written_mb_per_s"], 1.0)
        blocks = records.blocks(
            110.0, 1005.0, status(frames_received=50,
                                  bytes_received=10_000_000,
                                  frames_written=40,
                                  bytes_written=5_000_000),
            990.0, None, False)
        self.assertEqual(blocks["recorder"]["frames_received_per_s"], 0.0)

    def test_fields_follow_the_rules_of_ocs_feeds(self):
        records = StatusRecords()
        records.start(0.0, status())
        blocks = records.blocks(5.0, 1000.0, status(), 990.0, 12.5, True)
        self.assertEqual(tuple(blocks["recorder"]), RECORD_FIELDS)
        for fields in blocks.values():
            for name, value in fields.items():
                Feed.verify_data_field_string(name)
                Feed.verify_message_data_type(value)
                self.assertIsNotNone(value)

    def test_seconds_since_the_last_frame_or_the_start(self):
        records = StatusRecords()
        records.start(0.0, status())
        r = records.blocks(5.0, 1000.0, status(), 990.0, None,
                           False)["recorder"]
        self.assertEqual(r["seconds_since_last_frame"], 10.0)
        r = records.blocks(6.0, 1000.0, status(last_frame_time=999.5),
                           990.0, None, False)["recorder"]
        self.assertEqual(r["seconds_since_last_frame"], 0.5)

    def test_current_file(self):
        records = StatusRecords()
        r = records.blocks(5.0, 1000.0, status(), 990.0, None,
                           False)["recorder"]
        self.assertEqual((r["file_open"], r["current_file_age"]),
                         (False, 0.0))
        r = records.blocks(6.0, 1000.0, status(), 990.0, 42.0,
                           False)["recorder"]
        self.assertEqual((r["file_open"], r["current_file_age"]),
                         (True, 42.0))

    def test_disk_block_only_when_known(self):
        records = StatusRecords()
        blocks = records.blocks(5.0, 1000.0, status(), 990.0, None, False)
        self.assertEqual(blocks["disk"], {"free_bytes": 50 << 30,
                                          "free_floor_bytes": 1 << 30})
        blocks = records.blocks(6.0, 1000.0, status(
            free_bytes=None, free_floor_bytes=None), 990.0, None, False)
        self.assertNotIn("disk", blocks)


class HealthTests(unittest.TestCase):

    def setUp(self):
        self.health = Health(degraded_after=15)
        self.health.start(0.0)

    def reasons(self, now, **kw):
        return self.health.reasons(now, status(**kw), "smurf-srv:50000")

    def test_all_well(self):
        self.assertEqual(self.reasons(1.0), [])

    def test_not_connected_within_the_grace_period(self):
        self.assertEqual(self.reasons(14.0, connected=False), [])

    def test_not_connected_after_the_grace_period(self):
        self.assertEqual(
            self.reasons(15.0, connected=False,
                         connection_trouble="connection refused"),
            ["not connected to smurf-srv:50000 for 15 s: connection "
             "refused"])

    def test_the_grace_period_begins_when_the_connection_drops(self):
        self.assertEqual(self.reasons(100.0), [])
        self.assertEqual(self.reasons(101.0, connected=False), [])
        self.assertEqual(self.reasons(115.0, connected=False), [])
        self.assertEqual(len(self.reasons(116.0, connected=False)), 1)
        self.assertEqual(self.reasons(117.0), [])

    def test_writing_failing(self):
        self.assertEqual(
            self.reasons(1.0, outage_seconds=4.2, frames_held=3,
                         last_error="write failed: No space left"),
            ["writing has failed for 4 s: write failed: No space left",
             "3 frames held, waiting for the disk"])

    def test_below_the_floor(self):
        self.assertEqual(
            self.reasons(1.0, free_bytes=1 << 20, free_floor_bytes=1 << 30),
            ["1.0 MiB free on the data file system, below the floor of "
             "1.0 GiB"])

    def test_frames_lost_count_for_the_grace_period(self):
        self.assertEqual(self.reasons(1.0, frames_lost=2),
                         ["2 frames lost, the last 0 s ago"])
        self.assertEqual(len(self.reasons(15.9, frames_lost=2)), 1)
        self.assertEqual(self.reasons(16.0, frames_lost=2), [])
        self.assertEqual(len(self.reasons(17.0, frames_lost=3)), 1)
