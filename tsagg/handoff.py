"""
What happens to a file once it is closed for good: its md5 is computed, the
record of it goes to whoever listens (the OCS agent's C{files} feed), and,
when asked, it is registered for transfer in socs' suprsync database, with
socs' own C{SupRsyncFilesManager}.

When nobody wants an md5 and no suprsync database is given, a closed file's
record goes to its listeners at once, in the reactor thread: no thread, no
queue.  Otherwise the files wait in a bounded backlog, in the order they
closed, and one job at a time takes a batch of them off the reactor thread
(the md5, the database write) and hands them on in that order.  A stop
waits for none of it: the backlog is let go at once (one line says how many
files), a running md5 ends at its next chunk, and the journal of open files
(L{tsagg.journal}) keeps every file not handed on for the next start.
"""

import collections
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
    @ivar files_left: Files left to the next start: let go by a stop, or
        taken when the backlog was full.
    @ivar last_handed_on: The record of the last file handed on, or L{None}.
    @ivar max_backlog: The most files that wait for their md5 or
        registration; a file closed beyond it is left in the journal, for
        the next start.
    @ivar batch_size: The most files one job off the reactor thread takes.
    """

    log = Logger()

    max_backlog = 2000
    batch_size = 64

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
        self._listeners = []
        self._backlog = collections.deque()
        # Whether a batch is off the reactor thread, and whether the drain
        # loop is on the stack (a batch that finishes at once is taken up
        # by the loop, not by a nested call).
        self._running = False
        self._draining = False
        self._idle = []
        self._stopping = False
        # Whether the backlog's overflow was reported since it last drained.
        self._overflowing = False
        self._md5_wanted = suprsync_db is not None
        self.files_handed_on = 0
        self.handoff_errors = 0
        self.files_left = 0
        self.last_handed_on = None

    def add_listener(self, listener, wants_md5=True):
        """
        Call C{listener} with the record (a L{dict}) of each file handed on:
        C{path} (relative to the data directory), C{stream_id},
        C{session_id}, C{size}, C{frames}, C{scan_frames},
        C{first_frame_time}, C{last_frame_time} (unix seconds of the
        frames' C{time}), C{frames_dropped}, C{md5}, C{repaired},
        C{joined_midway} (its session was joined after its status dump, which
        the file lacks) and C{registered} (in suprsync).

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
                "handoff_backlog": len(self._backlog),
                "files_left_for_next_start": self.files_left,
                "suprsync_db": (None if self._suprsync is None
                                else self._suprsync.db_path)}

    def __call__(self, closed):
        """
        Take one L{tsagg.writer.ClosedFile}.
        """
        if not self._md5_wanted:
            self._deliver(closed, None)
            return
        if self._stopping:
            self._leave(1)
            return
        if len(self._backlog) >= self.max_backlog:
            self.files_left += 1
            if not self._overflowing:
                self._overflowing = True
                self.log.warn(
                    "Files close faster than their md5 and registration "
                    "keep up with: {count} wait; {path} and the files "
                    "after it while as many wait are left in the journal, "
                    "for the next start", count=len(self._backlog),
                    path=closed.relative)
            return
        self._backlog.append(closed)
        self._drain()

    def stop(self):
        """
        Give up what is not handed on yet, at once (recording stops): the
        backlog is let go, an md5 running ends at its next chunk, and the
        next start hands the files on, from the journal.
        """
        self._stopping = True
        self._leave(len(self._backlog))
        self._backlog.clear()
        self._notify_idle()

    def resume(self):
        """
        Hand files on again (recording starts).
        """
        self._stopping = False

    def finished(self):
        """
        @return: A L{Deferred} that fires once every file taken so far is
            handed on, or, after L{stop}, once the batch off the reactor
            thread (if any) has returned.
        """
        d = defer.Deferred()
        self._idle.append(d)
        self._notify_idle()
        return d

    def _leave(self, count):
        if not count:
            return
        self.files_left += count
        if count == 1:
            self.log.info("A closed file is left to be handed on at the next "
                          "start")
        else:
            self.log.info("{count} closed files are left to be handed on at "
                          "the next start", count=count)

    def _notify_idle(self):
        if self._running or (self._backlog and not self._stopping):
            return
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    def _drain(self):
        """
        Take batches of the backlog off the reactor thread, one at a time,
        in order; a loop, never a recursion, however long the backlog.
        """
        if self._draining:
            return
        self._draining = True
        try:
            while self._backlog and not self._running and not self._stopping:
                count = min(self.batch_size, len(self._backlog))
                batch = [self._backlog.popleft() for _ in range(count)]
                self._running = True
                if self._run_blocking is None:
                    self._batch_done(self._work(batch), batch)
                else:
                    d = self._run_blocking(lambda: self._work(batch))
                    d.addCallbacks(self._batch_done, self._batch_failed,
                                   callbackArgs=(batch,),
                                   errbackArgs=(batch,))
        finally:
            self._draining = False
        if not self._backlog:
            self._overflowing = False
        self._notify_idle()

    def _work(self, batch):
        """
        Off the reactor thread: the md5 and registration of each file of a
        batch, in order, until a stop.

        @return: One C{(md5, error)} per file done; fewer than the batch
            when stopped.
        """
        suprsync = self._suprsync
        wanted = self._md5_wanted

        def stopping():
            return self._stopping
        results = []
        for closed in batch:
            if stopping():
                break
            try:
                md5 = file_md5(closed.path, stopping) if wanted else None
                if stopping():
                    break
                if suprsync is not None:
                    suprsync.add(closed.path, closed.relative, md5)
            except Stopped:
                break
            except Exception as e:
                results.append((None, e))
                continue
            results.append((md5, None))
        return results

    def _batch_done(self, results, batch):
        self._running = False
        for closed, (md5, error) in zip(batch, results):
            if error is None:
                self._deliver(closed, md5)
            else:
                self.handoff_errors += 1
                self.log.error("Could not hand on {path}: {error}",
                               path=closed.relative, error=error)
        self._leave(len(batch) - len(results))
        self._drain()

    def _batch_failed(self, failure, batch):
        self._running = False
        self.handoff_errors += len(batch)
        self.log.failure("Could not hand on {count} files", failure,
                         count=len(batch))
        self._drain()

    def _deliver(self, closed, md5):
        suprsync = self._suprsync
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
            "joined_midway": closed.joined_midway,
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
