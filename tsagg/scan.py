"""
Check a recorded ``.g3`` file frame by frame, in bounded memory: how long its
prefix of whole, valid frames is, what those frames are, and what is wrong
with the rest.

A file that tsagg closed is whole frames only.  A file left open by a killed
process may end in a torn tail, part of a frame; cutting the file back to
L{FileScan.good_bytes} (see L{whole_frames_length}) makes it whole again.
"""

import os
import struct
from collections import Counter

from tsagg import sostream, wire
from tsagg.frames import CorruptFrame, LazyFrame, receive_pieces

__all__ = ["FileScan", "scan_file", "whole_frames_length", "TORN", "CORRUPT",
           "CHUNK_SIZE", "SessionTail", "session_tail"]

#: Bytes read from a file at a time.
CHUNK_SIZE = 4 << 20

#: L{FileScan.problem_kind} of a file that ends inside a frame.
TORN = "torn"
#: L{FileScan.problem_kind} of a file with a frame whose layout or CRC is bad.
CORRUPT = "corrupt"

# Frame types that are data; every other type is metadata.
_DATA_TYPES = frozenset("ST")
# A frame's header (endianness, class version, entries, type code), and the
# lengths of its keys and blobs; its CRC.
_HEADER = struct.Struct("<BIII")
_U64 = struct.Struct("<Q")
_CRC_SIZE = 4
# How many type codes FileScan.first_types keeps.
_FIRST_TYPES = 8


class FileScan:
    """
    The frames of one file, fed in as bytes: no I/O here (L{scan_file} reads
    the file).

    The scan stops at the first problem; the counts describe the frames
    before it.

    @ivar path: The file scanned, or L{None} if the bytes came from elsewhere.
    @ivar check_crc: Whether each frame's CRC is checked, or only its layout.
    @ivar size: Bytes in the file (bytes fed, until L{finish} says more).
    @ivar good_bytes: Length of the longest prefix made of whole frames whose
        layout, and CRC when C{check_crc}, are valid.  It is also the offset
        of the problem, if there is one.
    @ivar frames: How many frames that prefix holds.
    @ivar types: A L{Counter} of their type codes (C{'S'}, C{'O'}, ...).
    @ivar first_types: The type codes of the first frames, up to eight of
        them, as one string (e.g. C{'OWSSSSSS'}).
    @ivar scan_before_metadata: C{True} if a Scan frame comes before any
        metadata frame (a frame whose type is neither Scan nor Timepoint):
        the file does not start with the metadata of its acquisition.
    @ivar problem: L{None}, or what is wrong after C{good_bytes}, in words.
    @ivar problem_kind: L{None}, L{TORN} or L{CORRUPT}.
    """

    def __init__(self, path=None, check_crc=True,
                 max_frame_size=wire.DEFAULT_MAX_FRAME_SIZE):
        """
        @param max_frame_size: Largest frame taken as valid, in bytes.
        """
        self.path = path
        self.check_crc = check_crc
        self.size = 0
        self.good_bytes = 0
        self.frames = 0
        self.types = Counter()
        self.first_types = ""
        self.scan_before_metadata = False
        self.problem = None
        self.problem_kind = None
        self._metadata_seen = False
        self._splitter = wire.FrameSplitter(max_frame_size=max_frame_size)

    @property
    def done(self):
        """
        Whether the scan has stopped at a problem, so that more bytes would
        change nothing but C{size}.
        """
        return self.problem is not None

    def feed(self, data):
        """
        Take the next bytes of the file.

        @param data: L{bytes}.
        """
        self.size += len(data)
        if self.done:
            return
        splitter = self._splitter
        for pieces, size, spans in splitter.split(data):
            if self.check_crc:
                try:
                    frame = receive_pieces(pieces, size, spans)
                except CorruptFrame as e:
                    self._found(CORRUPT, "corrupt frame at offset %d: %s"
                                % (self.good_bytes, e))
                    return
                code = frame.code
            else:
                code = LazyFrame(pieces, size, spans).code
            self._count(code)
            self.good_bytes += size
        if splitter.error is not None:
            self._found(CORRUPT, "corrupt frame at offset %d: %s"
                        % (self.good_bytes, splitter.error))

    def finish(self, size=None):
        """
        The file ends here.

        @param size: The file's size, if more than the bytes fed (the caller
            stopped feeding once the scan was L{done}).
        @return: This scan.
        """
        if size is not None:
            self.size = size
        if not self.done and self.good_bytes < self.size:
            self._found(TORN, "torn tail: %d bytes of an incomplete frame at "
                        "offset %d" % (self.size - self.good_bytes,
                                       self.good_bytes))
        return self

    def _count(self, code):
        self.frames += 1
        self.types[code] += 1
        if len(self.first_types) < _FIRST_TYPES:
            self.first_types += code
        if code not in _DATA_TYPES:
            self._metadata_seen = True
        elif code == "S" and not self._metadata_seen:
            self.scan_before_metadata = True

    def _found(self, kind, message):
        self.problem_kind = kind
        self.problem = message

    def __repr__(self):
        return "<FileScan %r: %d of %d bytes good, %d frames, %s>" % (
            self.path, self.good_bytes, self.size, self.frames,
            self.problem or "no problem")


def scan_file(path, check_crc=True, chunk_size=CHUNK_SIZE,
              max_frame_size=wire.DEFAULT_MAX_FRAME_SIZE):
    """
    Scan one file, reading it in chunks: memory stays within C{chunk_size}
    and the largest frame, whatever the file's size.  Reading stops at the
    first bad frame.

    @param check_crc: Check every frame's CRC too, not only its layout.
        Without it, C{good_bytes} counts frames with a bad CRC as good.
    @param max_frame_size: Largest frame taken as valid, in bytes.
    @rtype: L{FileScan}
    @raise OSError: The file cannot be read.
    """
    scan = FileScan(path, check_crc, max_frame_size)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        while not scan.done:
            data = f.read(chunk_size)
            if not data:
                break
            scan.feed(data)
    return scan.finish(max(size, scan.size))


def whole_frames_length(path, max_frame_size=wire.DEFAULT_MAX_FRAME_SIZE):
    """
    The length of the longest prefix of a file made of whole frames whose
    layout and CRC are valid: truncating a file left open by a killed
    process to this length leaves only whole frames in it.

    A file that is whole gives its size.  A frame with a bad CRC in the
    middle of a file ends the prefix as a torn tail does.

    @raise OSError: The file cannot be read.
    """
    return scan_file(path, max_frame_size=max_frame_size).good_bytes


class SessionTail:
    """
    What a session's last file holds for the session to go on after a
    restart (L{session_tail}).

    @ivar metadata: The raw metadata frames (neither Scan nor Timepoint) of
        the file, in order: those at its top, and every later one.
    @ivar last_frame_num: The C{frame_num} of its last frame, or L{None}.
    """

    def __init__(self, metadata, last_frame_num):
        self.metadata = metadata
        self.last_frame_num = last_frame_num


def session_tail(path, max_frame_size=wire.DEFAULT_MAX_FRAME_SIZE):
    """
    Read back a recorded file's metadata frames, bit for bit, and its last
    frame's number, stepping over the blobs of data frames unread: the cost
    is a few small reads a frame, not the file's size.  The walk stops at
    the first frame that is not whole (a file repaired at start has none).

    @rtype: L{SessionTail}
    @raise OSError: The file cannot be read.
    """
    metadata = []
    last = None
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        offset = 0
        while True:
            length, code = _step_over_frame(f, offset, size, max_frame_size)
            if length is None:
                break
            if code not in _DATA_TYPES:
                f.seek(offset)
                raw = f.read(length)
                try:
                    wire.frame_entries(raw)
                except wire.FrameError:
                    break
                metadata.append(raw)
            last = (offset, length)
            offset += length
            f.seek(offset)
        num = None
        if last is not None:
            f.seek(last[0])
            try:
                num = sostream.frame_num(sostream.FrameFields(
                    f.read(last[1])))
            except ValueError:
                # Not a frame after all (wire.FrameError), or its frame_num
                # cannot be read.
                num = None
    return SessionTail(metadata, num)


def _step_over_frame(f, offset, size, max_frame_size):
    """
    The length and type code of the frame at the file's position, found by
    its header and the lengths of its keys and blobs; the position is left
    past it.  C{(None, None)} at the end or at a frame that is not whole.
    """
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None, None
    endianness, version, count, code = _HEADER.unpack(header)
    if (endianness != 1 or version != 1 or code not in wire.FRAME_TYPE_CODES
            or count > wire.DEFAULT_MAX_ENTRIES):
        return None, None
    position = offset + _HEADER.size
    for _ in range(2 * count):
        # A key's length and the key, then a blob's length and the blob.
        length = f.read(_U64.size)
        if len(length) < _U64.size:
            return None, None
        position += _U64.size + _U64.unpack(length)[0]
        if position > size or position - offset > max_frame_size:
            return None, None
        f.seek(position)
    position += _CRC_SIZE
    if position > size:
        return None, None
    return position - offset, chr(code)
