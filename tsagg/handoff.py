"""
What happens to a file once it is closed for good: it is logged and
counted, its md5 is computed, the record of it goes to whoever listens (the
OCS agent's C{files} feed), and, when asked, it is registered for transfer
in socs' suprsync database, with socs' own C{SupRsyncFilesManager}.

The md5 and the database write run off the reactor thread, one file at a
time, in the order the files closed.  A stop waits for them only a moment:
the journal of open files (L{tsagg.journal}) keeps a file closed but not yet
handed on, L{stop} ends the md5 of a large file at its next chunk, and the
next start hands on what is left.
"""

import hashlib

from twisted.internet import defer
from twisted.logger import Logger

__all__ = ["FileHandoff", "file_md5", "DEFAULT_ARCHIVE", "Stopped"]

#: The suprsync archive of SO's timestreams.
DEFAULT_ARCHIVE = "timestreams"

_CHUNK = 4 << 20


class Stopped(Exception):
    """
    The hand-off was stopped before it finished.
    """


def file_md5(path, stopping=lambda: False):
    """
    The md5 of a file, as hex; read in chunks (hashlib lets go of the GIL
    for each).

    @param stopping: Returns whether to give up, asked between chunks.
    @raise Stopped: It gave up.
    """
    digest = hashlib.md5()
    with open(path, "rb", buffering=0) as f:
        while True:
            if stopping():
                raise Stopped()
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


class _Suprsync:
    """
    socs' suprsync database, written from one thread at a time.
    """

    def __init__(self, db_path, archive):
        # Imported here: socs is needed only when files are handed to it.
        from socs.db.suprsync import SupRsyncFilesManager
        self._manager_class = SupRsyncFilesManager
        self.db_path = db_path
        self.archive = archive
        self._manager = None

    def add(self, local_path, remote_path, md5):
        if self._manager is None:
            self._manager = self._manager_class(self.db_path)
        self._manager.add_file(local_path, remote_path, self.archive,
                               local_md5sum=md5)


class FileHandoff:
    """
    Hand on each closed file: a listener for
    L{tsagg.writer.RotatingWriter.add_closed_file_listener}.

    @ivar files_handed_on: Files handed on (md5 computed, and registered if
        a suprsync database is given).
    @ivar handoff_errors: Files whose md5 or registration failed.
    @ivar last_handed_on: The record of the last file handed on, or L{None}.
    """

    log = Logger()

    def __init__(self, run_blocking, suprsync_db=None,
                 suprsync_archive=DEFAULT_ARCHIVE):
        """
        @param run_blocking: Runs a function off the reactor thread,
            returning a L{Deferred} of its result; L{None} runs it inline.
        @param suprsync_db: The path of socs' suprsync SQLite database to
            register files in, or L{None} for none.
        @param suprsync_archive: The suprsync archive name.
        @raise ImportError: A database is given, and socs is not installed.
        """
        self._run_blocking = run_blocking
        self._suprsync = (None if suprsync_db is None
                          else _Suprsync(suprsync_db, suprsync_archive))
        self._lock = defer.DeferredLock()
        self._listeners = []
        self._pending = set()
        self._stopping = False
        self._md5_wanted = suprsync_db is not None
        self.files_handed_on = 0
        self.handoff_errors = 0
        self.last_handed_on = None

    def add_listener(self, listener, wants_md5=True):
        """
        Call C{listener} with the record (a L{dict}) of each file handed on:
        C{path} (relative to the data directory), C{stream_id},
        C{session_id}, C{size}, C{frames}, C{scan_frames},
        C{first_frame_time}, C{last_frame_time} (unix seconds of the
        frames' C{time}), C{frames_dropped}, C{md5}, C{repaired} and
        C{registered} (in suprsync).

        @param wants_md5: Whether the listener needs the md5.  The md5 (a
            read of the whole file, about a CPU second per 1.5 GB) is
            computed only when suprsync or a listener needs it; else the
            record's C{md5} is L{None}.
        """
        self._listeners.append(listener)
        if wants_md5:
            self._md5_wanted = True

    @property
    def status(self):
        return {"files_handed_on": self.files_handed_on,
                "handoff_errors": self.handoff_errors,
                "suprsync_db": (None if self._suprsync is None
                                else self._suprsync.db_path)}

    def __call__(self, closed):
        """
        Take one L{tsagg.writer.ClosedFile}.
        """
        d = self._lock.run(self._hand_on, closed)
        self._pending.add(d)
        d.addBoth(self._done, d)

    def _done(self, result, d):
        self._pending.discard(d)
        return result

    def stop(self):
        """
        Give up what is not handed on yet, promptly (recording stops): an
        md5 running ends at its next chunk, and the next start hands the
        files on, from the journal.
        """
        self._stopping = True

    def resume(self):
        """
        Hand files on again (recording starts).
        """
        self._stopping = False

    def finished(self):
        """
        @return: A L{Deferred} that fires once every file taken so far is
            handed on.
        """
        return defer.DeferredList(list(self._pending)).addCallback(
            lambda _: None)

    @defer.inlineCallbacks
    def _hand_on(self, closed):
        suprsync = self._suprsync

        def stopping():
            return self._stopping

        wanted = self._md5_wanted

        def work():
            md5 = file_md5(closed.path, stopping) if wanted else None
            if stopping():
                raise Stopped()
            if suprsync is not None:
                suprsync.add(closed.path, closed.relative, md5)
            return md5
        try:
            if self._stopping:
                raise Stopped()
            if self._run_blocking is None:
                md5 = work()
            else:
                md5 = yield self._run_blocking(work)
        except Stopped:
            self.log.info("{path} is left to be handed on at the next start",
                          path=closed.relative)
            return
        except Exception as e:
            self.handoff_errors += 1
            self.log.error("Could not hand on {path}: {error}",
                           path=closed.relative, error=e)
            return
        record = {
            "path": closed.relative,
            "stream_id": closed.stream_id,
            "session_id": closed.session_id,
            "size": closed.size,
            "frames": closed.frames,
            "scan_frames": closed.scan_frames,
            "first_frame_time": closed.first_frame_time,
            "last_frame_time": closed.last_frame_time,
            "frames_dropped": closed.frames_dropped,
            "md5": md5,
            "repaired": closed.repaired,
            "registered": suprsync is not None,
        }
        self.files_handed_on += 1
        self.last_handed_on = record
        if suprsync is not None:
            self.log.info("Handed {path} to suprsync ({archive}), md5 {md5}",
                          path=closed.relative, archive=suprsync.archive,
                          md5=md5)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                self.log.failure("A listener of closed files failed on "
                                 "{path}", path=closed.relative)

