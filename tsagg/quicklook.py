"""
A quick look at a few detector channels of the stream being recorded: their
samples, decimated to about a target rate, handed to a feed (Grafana reads
it), at almost no cost to recording.

Scan frames carry their detector data under C{data}, as spt3g's
C{G3TimestreamMap} or as so3g's C{G3SuperTimestream} (what the SMuRF
streamer sends).  spt3g 1.0.2, tsagg's own binding, reads a
C{G3SuperTimestream} as a C{G3TimestreamMap} (compressed or not); so3g's
binding reads its own C{G3SuperTimestream} and a C{G3TimestreamMap} of its
own spt3g, but not one written by spt3g 1.0.2 (a newer class version).  A
frame the running binding cannot read is counted and reported, never
fatal: the quick look only ever reads its own copy of a frame, after the
writer has taken it.

The cost is bounded by real time: a frame is read only while the quick look
has credit, which grows by one second per second and which each frame read
spends by the seconds of data it holds (at least one target period).  A
stream that comes in real time is read whole (every sample decimated to the
target rate); a backlog, a replay or a benchmark that sends faster than real
time is mostly skipped, and frames shorter than a target period are read one
in so many.  Frames are picked by their header's type code, without
deserializing them, and read in a later turn of the reactor, off the write
path.
"""

import math
import re

import numpy as np
from twisted.logger import Logger

from tsagg.frames import BINDING, core, load_frame, raw_type_code

__all__ = ["QuickLook", "Unreadable", "channel_name", "field_name",
           "read_channels", "Decimator", "BINDING"]

#: Ticks of spt3g's clock (C{G3Time.time}) in one second.
TICKS = int(core.G3Units.s)

#: Seconds of data the quick look may read at once after being idle.
MIN_BURST = 2.0

#: Frames waiting to be read at most; more are skipped.
MAX_PENDING = 4

_INVALID = re.compile(r"[^A-Za-z0-9_]")


class Unreadable(ValueError):
    """
    A Scan frame whose detector data the quick look cannot read.
    """


def channel_name(spec):
    """
    The name of a channel as given on the command line or to a Task.

    @param spec: A name as in the frames (C{'r0012'}), or an integer (or
        its digits), which is SMuRF's name for readout channel N,
        C{'r%04d'}.
    @rtype: L{str}
    @raise ValueError: An empty name or a negative number.
    """
    if isinstance(spec, bool):
        raise ValueError("not a channel: %r" % (spec,))
    if isinstance(spec, int) or (isinstance(spec, str)
                                 and spec.strip().isdigit()):
        number = int(spec)
        if number < 0:
            raise ValueError("not a channel: %r" % (spec,))
        return "r%04d" % (number,)
    text = str(spec).strip()
    if not text:
        raise ValueError("an empty channel name")
    if text.startswith("-") and text[1:].isdigit():
        raise ValueError("not a channel: %r" % (spec,))
    return text


def field_name(name):
    """
    A channel's name as an OCS feed field and block name: letters, digits
    and underscores, starting with a letter.
    """
    field = _INVALID.sub("_", name)
    if not field.strip("_")[:1].isalpha():
        field = "ch_" + field
    return field[:255]


def read_channels(frame, names, key="data"):
    """
    The sample times and the samples of some channels of a Scan frame.

    @param frame: A C{G3Frame}.
    @param names: The channels wanted.
    @param key: The frame's key of the detector data.
    @return: C{(times, rows)}: the times as spt3g ticks since 1970 (an
        C{int64} array), and a L{dict} of the wanted channels found, each an
        array of samples.
    @raise Unreadable: There is no data, or the binding cannot read it.
    """
    try:
        data = frame[key]
    except KeyError:
        raise Unreadable("no %r in the frame" % (key,))
    except RuntimeError as e:
        raise Unreadable(_first_line(e))
    if hasattr(data, "n_samples") and hasattr(data, "keys"):
        # G3TimestreamMap; and G3SuperTimestream under spt3g 1.0.2.
        n = int(data.n_samples)
        start, stop = data.start.time, data.stop.time
        if n > 1:
            times = start + (np.arange(n, dtype=np.int64) * (stop - start)
                             ) // (n - 1)
        else:
            times = np.full(n, start, dtype=np.int64)
        present = set(data.keys())
        rows = {name: np.asarray(data[name]) for name in names
                if name in present}
    elif hasattr(data, "names") and hasattr(data, "times") \
            and hasattr(data, "data"):
        # so3g's G3SuperTimestream, under so3g's binding.
        index = {name: i for i, name in enumerate(data.names)}
        wanted = [name for name in names if name in index]
        times = np.array([t.time for t in data.times], dtype=np.int64)
        rows = {}
        if wanted:
            samples = data.data
            rows = {name: samples[index[name]] for name in wanted}
    else:
        raise Unreadable("%r is a %s, not a timestream map"
                         % (key, type(data).__name__))
    for name, row in rows.items():
        if len(row) != len(times):
            raise Unreadable("channel %s has %d samples for %d times"
                             % (name, len(row), len(times)))
    return times, rows


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Decimator:
    """
    Which samples of consecutive frames to keep: every C{step}-th one, the
    step carried on from one frame to the next when they follow each other,
    and begun at the first sample of a frame that does not (a gap, or
    frames skipped).

    @ivar step: The decimation of the last frame.
    @ivar dt: The time between its samples, in ticks (L{None} until a frame
        of more than one sample).
    """

    def __init__(self):
        self.step = None
        self.dt = None
        self._last_time = None
        # Samples since the last one kept, at the end of the last frame.
        self._since = 0

    def reset(self):
        """
        Forget the last frame: the next one begins anew.
        """
        self._last_time = None

    def indices(self, times, target_rate):
        """
        The samples to keep of the next frame.

        @param times: Its sample times, in ticks.
        @param target_rate: Samples per second wanted.
        @return: A L{range} of indices into C{times}.
        """
        n = len(times)
        if n == 0:
            return range(0)
        if n > 1 and times[-1] > times[0]:
            dt = (int(times[-1]) - int(times[0])) / (n - 1)
        else:
            dt = self.dt
        if dt:
            rate = TICKS / dt
            self.step = max(1, int(round(rate / target_rate)))
        elif self.step is None:
            self.step = 1
        step = self.step
        follows = (self._last_time is not None and dt
                   and abs(int(times[0]) - self._last_time - dt) <= dt / 2)
        if follows:
            first = (step - (self._since + 1) % step) % step
        else:
            first = 0
            self._since = 0
        kept = range(first, n, step)
        if len(kept):
            self._since = n - 1 - kept[-1]
        else:
            self._since += n
        self._last_time = int(times[-1])
        self.dt = dt
        return kept


class QuickLook:
    """
    Publish the samples of a few channels of the stream, decimated to about
    C{target_rate}; watches the frames of a L{tsagg.service.RecordingService}
    (its C{watch_frames}).

    Each channel's samples go to C{publish} as one block of an OCS feed::

        {'block_name': 'r0012', 'timestamps': [1764912345.0, 1764912345.1],
         'data': {'r0012': [1234, 1240]}}

    with the sample times of the data (unix seconds), and the values as
    numbers; samples that are not finite are left out.

    @ivar channels: The names of the channels shown.
    @ivar target_rate: Samples per second wanted of each.
    @ivar binding: Which spt3g binding reads the frames: C{'spt3g'} or
        C{'so3g'}.
    @ivar clock: The C{IReactorTime} of the credit and of the reads.
    """

    log = Logger()

    def __init__(self, publish, clock, channels=(), target_rate=10.0,
                 key="data"):
        """
        @param publish: Called with each block.
        """
        self._publish = publish
        self.clock = clock
        self.key = key
        self.binding = BINDING
        self.channels = []
        self._fields = {}
        self.target_rate = None
        self.set_target_rate(target_rate)
        self.set_channels(channels)
        self._decimator = Decimator()
        self._credit = MIN_BURST
        self._cap = MIN_BURST
        self._refilled_at = None
        self._cost = 1.0 / self.target_rate
        self._pending = []
        self._call = None
        self.frames_read = 0
        self.frames_skipped = 0
        self.unreadable_frames = 0
        self.samples_published = 0
        self.missing_channels = []
        self.last_error = None

    def set_channels(self, channels):
        """
        Show these channels from now on; none turns the quick look off.

        @param channels: Names or numbers, as L{channel_name} takes them.
        @raise ValueError: One of them is no channel.
        """
        names = []
        for spec in channels:
            name = channel_name(spec)
            if name not in names:
                names.append(name)
        self.channels = names
        self._fields = {name: field_name(name) for name in names}
        self.missing_channels = []

    def set_target_rate(self, rate):
        """
        Decimate to about C{rate} samples per second from now on.

        @raise ValueError: It is not a positive, finite number.
        """
        rate = float(rate)
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError("the target rate must be positive: %r" % (rate,))
        self.target_rate = rate

    @property
    def status(self):
        """
        What the quick look does, for C{session.data}::

            {'binding': 'spt3g', 'channels': ['r0012', 'r0345'],
             'target_rate': 10.0, 'decimation': 20, 'frames_read': 120,
             'frames_skipped': 0, 'unreadable_frames': 0,
             'samples_published': 2400, 'missing_channels': [],
             'last_error': None}

        C{decimation} is the step between samples kept (L{None} before the
        first frame); C{frames_skipped} counts Scan frames not read to keep
        within real time; C{unreadable_frames} those the binding could not
        read (C{last_error} says why).
        """
        return {"binding": self.binding,
                "channels": list(self.channels),
                "target_rate": self.target_rate,
                "decimation": self._decimator.step,
                "frames_read": self.frames_read,
                "frames_skipped": self.frames_skipped,
                "unreadable_frames": self.unreadable_frames,
                "samples_published": self.samples_published,
                "missing_channels": list(self.missing_channels),
                "last_error": self.last_error}

    # -- on the write path: pick the frames due, cheaply ----------------------

    def __call__(self, frames):
        """
        See a batch of received frames; keep those due for a later read.

        @param frames: L{tsagg.frames.LazyFrame}s (anything with C{raw}).
        """
        if not self.channels:
            return
        now = self.clock.seconds()
        if self._refilled_at is not None:
            self._credit = min(self._cap,
                               self._credit + (now - self._refilled_at))
        self._refilled_at = now
        for frame in frames:
            # A frame's bytes are joined only for the frames read.
            code = getattr(frame, "code", None) or raw_type_code(frame.raw)
            if code != "S":
                continue
            if self._credit <= 0 or len(self._pending) >= MAX_PENDING:
                self.frames_skipped += 1
                continue
            self._credit -= self._cost
            self._pending.append(frame.raw)
        if self._pending and self._call is None:
            self._call = self.clock.callLater(0, self._read_pending)

    def stop(self):
        """
        Drop what waits to be read, and forget the last frame.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._pending = []
        self._decimator.reset()

    # -- off the write path: read and publish --------------------------------

    def _read_pending(self):
        self._call = None
        pending, self._pending = self._pending, []
        for raw in pending:
            self._read(raw)

    def _read(self, raw):
        channels = self.channels
        if not channels:
            return
        try:
            frame = load_frame(raw)
            times, rows = read_channels(frame, channels, self.key)
        except Exception as e:
            self._unreadable(e)
            return
        self.frames_read += 1
        n = len(times)
        keep = self._decimator.indices(times, self.target_rate)
        if n:
            seconds = n * self._decimator_period()
            cost = max(seconds, 1.0 / self.target_rate)
            # The frame was charged the last frame's cost when picked.
            self._credit += self._cost - cost
            self._cost = cost
            self._cap = max(MIN_BURST, 2 * seconds)
        self._note_missing([c for c in channels if c not in rows])
        if not len(keep):
            return
        stamps = (times[keep.start:keep.stop:keep.step] / TICKS).tolist()
        for name in channels:
            row = rows.get(name)
            if row is None:
                continue
            values = row[keep.start:keep.stop:keep.step]
            if values.dtype.kind == "f":
                finite = np.isfinite(values)
                if not finite.all():
                    block_times = [t for t, ok in zip(stamps, finite) if ok]
                    values = values[finite]
                else:
                    block_times = stamps
            else:
                block_times = stamps
            if not len(values):
                continue
            field = self._fields[name]
            try:
                self._publish({"block_name": field,
                               "timestamps": list(block_times),
                               "data": {field: values.tolist()}})
            except Exception as e:
                self._failed_publish(e)
                return
            self.samples_published += len(values)

    def _decimator_period(self):
        dt = self._decimator.dt
        return dt / TICKS if dt else 1.0 / self.target_rate

    def _unreadable(self, error):
        self.unreadable_frames += 1
        text = "%s: %s" % (type(error).__name__, _first_line(error)) \
            if not isinstance(error, Unreadable) else str(error)
        if text != self.last_error:
            self.log.warn("The quick look cannot read a Scan frame under "
                          "the {binding} binding ({error}); it skips such "
                          "frames, recording goes on", binding=self.binding,
                          error=text)
        self.last_error = text

    def _failed_publish(self, error):
        text = "publishing failed: %s: %s" % (type(error).__name__,
                                              _first_line(error))
        if text != self.last_error:
            self.log.warn("The quick look could not publish ({error}); "
                          "recording goes on", error=text)
        self.last_error = text

    def _note_missing(self, missing):
        if missing != self.missing_channels:
            if missing:
                self.log.warn("Quick look: no channel {channels} in the "
                              "frames", channels=", ".join(missing))
            self.missing_channels = missing
