"""
Helpers shared by the tests.
"""

import os

from tsagg import wire
from tsagg.frames import core, frame_type_code, load_frame
from tsagg.report import recorded_files

__all__ = ["frames_on_disk", "files_and_frames", "types_in", "FakeProducer",
           "recorded_files"]


def frames_on_disk(path):
    """
    The raw frames of one file, split exactly as written, after checking
    that spt3g reads the whole file too.
    """
    with open(path, "rb") as f:
        data = f.read()
    splitter = wire.FrameSplitter()
    frames = splitter.feed(data)
    assert splitter.error is None, splitter.error
    assert splitter.buffered == 0, "file %s ends inside a frame" % path
    assert sum(len(x) for x in frames) == len(data)
    # spt3g must read it back as well, every frame.
    assert len(list(core.G3File(path))) == len(frames)
    return frames


def files_and_frames(data_dir):
    """
    C{[(path relative to data_dir, [raw frames])]} for every file.
    """
    return [(os.path.relpath(p, data_dir), frames_on_disk(p))
            for p in recorded_files(data_dir)]


def types_in(raws):
    """
    The type codes of raw frames, as one string (e.g. C{'OWSSS'}).
    """
    return "".join(frame_type_code(load_frame(r)) for r in raws)


class FakeProducer:
    """
    An C{IPushProducer} that records what was asked of it.
    """

    def __init__(self):
        self.paused = False
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        self.resumes += 1

    def stopProducing(self):
        pass
