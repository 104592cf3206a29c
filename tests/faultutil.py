"""
Helpers of the fault tests: a sandbox around the data directory, killable
sender processes, a recording service with a fast retry policy, a check of
every file on disk that counts torn files instead of stopping at the first,
and a capture of the log.
"""

import os
import random
import socket
import struct
import subprocess
import sys

from twisted.internet import reactor
from twisted.logger import globalLogPublisher, formatEvent, LogLevel

from tsagg import wire
from tsagg.frames import core, frame_type_code, load_frame
from tsagg.report import recorded_files
from tsagg.service import RecordingService, tcp_endpoint_description

from tests import faultlog
from tests.test_service import fast_retry
from tests.util import ROOT, spawn

__all__ = ["ROOT", "quiet_port", "Sandbox", "check_data_dir", "scans", "spawn_sender",
           "make_service", "LogCapture", "frame_ends", "crc32c", "reframe",
           "g3_blob"]

PEER = os.path.join(ROOT, "tests", "faultpeer.py")


class Sandbox:
    """
    A directory holding the data directory and everything else a test
    makes, so that bytes written outside the data directory can be counted.

    @ivar root: The sandbox.
    @ivar data: The data directory (not made: the recorder makes it).
    @ivar inputs: A directory for the test's own files.
    """

    def __init__(self, testcase):
        self.root = os.path.abspath(testcase.mktemp())
        self.data = os.path.join(self.root, "data")
        self.inputs = os.path.join(self.root, "inputs")
        os.makedirs(self.inputs)
        self._before = None

    def write_input(self, name, data):
        path = os.path.join(self.inputs, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def seal(self):
        """
        Take the snapshot that L{outside} compares with.
        """
        self._before = faultlog.snapshot(self.root)

    def outside(self):
        """
        Bytes written under the sandbox but outside the data directory since
        L{seal}.
        """
        return faultlog.bytes_outside(self.root, self.data, self._before or {})


def quiet_port():
    """
    A free TCP port below the kernel's range of ephemeral ports, so that a
    client retrying every 50 ms can never be given it as its own source port
    (a TCP self-connection) while no sender listens.
    """
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port below %d" % (low,))


def check_data_dir(data_dir):
    """
    Read every file under C{data_dir} with the splitter and with spt3g.

    @return: C{(files, torn)}: C{[(relative path, [raw frames])]} of the
        files that read back whole, and the relative paths of those that do
        not (they end inside a frame, fail a CRC, or spt3g cannot read them).
    """
    files, torn = [], []
    for path in recorded_files(data_dir):
        rel = os.path.relpath(path, data_dir)
        with open(path, "rb") as f:
            data = f.read()
        splitter = wire.FrameSplitter()
        raws = splitter.feed(data)
        ok = splitter.error is None and splitter.buffered == 0
        if ok:
            try:
                for raw in raws:
                    load_frame(raw)
                ok = len(list(core.G3File(path))) == len(raws)
            except Exception:
                ok = False
        if ok:
            files.append((rel, raws))
        else:
            torn.append(rel)
    return files, torn


def scans(raws):
    """
    The Scan frames among raw frames.
    """
    return [r for r in raws if frame_type_code(load_frame(r)) == "S"]


def frame_ends(raws):
    """
    The stream offset one past each frame of a stream made of C{raws}.
    """
    ends, pos = [], 0
    for raw in raws:
        pos += len(raw)
        ends.append(pos)
    return ends


def spawn_sender(testcase, port, stream, cut=None, chunk=0, pace=0.0,
                 seed=0, then="hold"):
    """
    Start L{tests.faultpeer} listening on C{port}; it is killed at cleanup
    if still running.

    @rtype: L{subprocess.Popen}
    """
    argv = [sys.executable, PEER, "--port", str(port), "--stream", stream,
            "--chunk", str(chunk), "--pace", str(pace), "--seed", str(seed),
            "--then", then]
    if cut is not None:
        argv += ["--cut", str(cut)]
    return spawn(testcase, argv, os.path.abspath(testcase.mktemp()),
                 env=dict(os.environ), stdout=subprocess.DEVNULL, cwd=None)


def make_service(testcase, port, data_dir, **kw):
    """
    A L{RecordingService} of 127.0.0.1:C{port} that retries every 50 ms and
    is stopped at cleanup.
    """
    kw.setdefault("fsync", False)
    kw.setdefault("retry_policy", fast_retry)
    kw.setdefault("create_data_dir", True)
    service = RecordingService(
        reactor, tcp_endpoint_description("127.0.0.1", port), data_dir, **kw)
    testcase.addCleanup(lambda: service.running and service.stopService())
    return service


class LogCapture:
    """
    The text of every log event at warning level or above, from now until
    the test ends.
    """

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self._observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event):
        if event.get("log_level") in (LogLevel.warn, LogLevel.error,
                                      LogLevel.critical):
            self.events.append(formatEvent(event))

    def matching(self, text):
        return [e for e in self.events if text in e]


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data, crc=0):
    """
    The CRC of a G3 frame as spt3g computes it: CRC-32C with no initial or
    final inversion, over every key and blob in order.
    """
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def reframe(raw, replace=None, drop=(), add=()):
    """
    The frame C{raw} with some blobs replaced, some keys dropped, some
    entries added, and a valid CRC: hostile content spt3g accepts.

    @param replace: C{{key: blob}} of new blobs for existing keys.
    @param add: C{(key, blob)} pairs to append.
    """
    replace = replace or {}
    entries = [(k, replace.get(k, bytes(b)))
               for k, b in wire.frame_entries(raw) if k not in drop]
    entries += list(add)
    crc = 0
    for key, blob in entries:
        crc = crc32c(blob, crc32c(key, crc))
    from tests.frames import handmade
    return handmade(entries, ftype=bytes([raw[9]]), crc=crc)


def g3_blob(type_name, payload):
    """
    A blob of a G3 object of C{type_name} whose value is C{payload}, laid out
    as spt3g serializes a G3Int or a G3String.
    """
    name = type_name.encode()
    return (b"\x01\x01\x00\x00\x80" + struct.pack("<Q", len(name)) + name
            + b"\x01\x00\x00\x80\x01\x00\x00\x00\x01\x00\x00\x00" + payload)
