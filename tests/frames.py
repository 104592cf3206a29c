"""
Frames for tests, built with spt3g.
"""

import struct

import numpy as np

from tsagg import sostream, wire
from tsagg.frames import core, crc_of_pieces, dump_frame

__all__ = ["scan", "observation", "wiring", "flow", "raw", "feed",
           "pipeline_info", "handmade", "acquisition"]


def _stamp(frame, stream_id, session_id, frame_num):
    if stream_id is not None:
        frame["sostream_id"] = stream_id
    if session_id is not None:
        frame["session_id"] = session_id
    if frame_num is not None:
        frame["frame_num"] = frame_num
    return frame


def scan(frame_num=None, stream_id="crate1slot2", session_id=1700000000,
         channels=4, samples=10, seed=None):
    """
    A Scan frame with a small int32 timestream map.
    """
    frame = core.G3Frame(core.G3FrameType.Scan)
    rng = np.random.default_rng(frame_num if seed is None else seed)
    data = rng.integers(-1000, 1000, size=(channels, samples), dtype=np.int32)
    names = ["r%04d" % i for i in range(channels)]
    frame["data"] = core.G3TimestreamMap(
        names, data, core.G3Time(0), core.G3Time(int(core.G3Units.s)))
    return _stamp(frame, stream_id, session_id, frame_num)


def observation(stream_id="crate1slot2", session_id=1700000000, frame_num=0):
    frame = core.G3Frame(core.G3FrameType.Observation)
    frame["start_time"] = core.G3Time(0)
    return _stamp(frame, stream_id, session_id, frame_num)


def wiring(stream_id="crate1slot2", session_id=1700000000, frame_num=1,
           status="{}", dump=None):
    """
    A Wiring (status) frame; C{dump} true for the whole status, false for
    the keys that changed, L{None} for no C{dump} key.
    """
    frame = core.G3Frame(core.G3FrameType.Wiring)
    frame["status"] = status
    if dump is not None:
        frame["dump"] = dump
    return _stamp(frame, stream_id, session_id, frame_num)


def pipeline_info(stream_id="pipeline"):
    frame = core.G3Frame(core.G3FrameType.PipelineInfo)
    return _stamp(frame, stream_id, None, None)


def flow(value, frame_type=core.G3FrameType.none):
    frame = core.G3Frame(frame_type)
    frame["sostream_flowcontrol"] = value
    return frame


def feed(sink, *frames):
    """
    Hand C{frames} to an L{IFrameSink} one at a time, each with its bytes.

    @return: Their bytes, in order.
    """
    sent = []
    for frame in frames:
        data = raw(frame)
        sink.frameReceived(frame, data)
        sent.append(data)
    return sent


def raw(frame):
    """
    The bytes a G3NetworkSender puts on the wire for C{frame}.
    """
    return dump_frame(frame)


def acquisition(scans=3, channels=4, samples=10):
    """
    The raw frames of a file as tsagg writes one: Observation, Wiring, then
    C{scans} Scan frames.
    """
    return ([raw(observation()), raw(wiring())]
            + [raw(scan(i, channels=channels, samples=samples))
               for i in range(2, 2 + scans)])


def handmade(entries, ftype=b"S", flag=1, version=1, count=None, crc=0):
    """
    Serialize a frame by hand, with any (even invalid) header values.

    @param entries: (key bytes, blob bytes) pairs.
    """
    out = [struct.pack("<BIII", flag, version,
                       len(entries) if count is None else count,
                       ord(ftype))]
    for key, blob in entries:
        out.append(struct.pack("<Q", len(key)) + key)
        out.append(struct.pack("<Q", len(blob)) + blob)
    out.append(struct.pack("<I", crc))
    return b"".join(out)


def forged(raw, name, keys=None):
    """
    The frame C{raw} with the type name in the head of its G3Int blobs
    (those of C{keys}, or all) made C{name}: blobs of a G3Int's size that
    are not G3Ints.  Its CRC is right.
    """
    entries = [(key, bytes(blob).replace(b"G3Int", name)
                if keys is None or key in keys else bytes(blob))
               for key, blob in wire.frame_entries(raw)]
    unsigned = handmade(entries, ftype=raw[9:10])
    crc = crc_of_pieces([memoryview(unsigned)], wire.frame_spans(unsigned))
    return handmade(entries, ftype=raw[9:10], crc=crc)


START = sostream.START
END = sostream.END
ALIVE = sostream.ALIVE
CLEANSE = sostream.CLEANSE
