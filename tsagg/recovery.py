"""
What happens before recording and around the journal: the data directory
checked (or made), the files a recorder killed outright left open repaired
and handed on, and the journal of open files kept as the writer opens and
closes them (L{tsagg.journal}).  It knows nothing of frames.
"""

import os
import re
import stat

from twisted.logger import Logger

from tsagg.files import ClosedFile
from tsagg.journal import Journal, recover
from tsagg.scan import session_tail

__all__ = ["Recovery", "DataDirError"]


class DataDirError(Exception):
    """
    The data directory is missing or cannot be written: recording cannot
    start.  The message is one line, for the operator.
    """


class Recovery:
    """
    The data directory at start, and the journal of one writer's open files.

    @ivar data_dir: The absolute, real path of the data directory.
    @ivar journal: This writer's L{Journal}, once L{prepare}d; L{None}
        before, and after it is closed.
    """

    log = Logger()

    def __init__(self, data_dir, hand_on, wants_hand_on, note_error,
                 run_blocking=None):
        """
        @param hand_on: Called with the L{ClosedFile} of a file found at
            start that is to be handed on.
        @param wants_hand_on: Returns whether anyone takes closed files
            (else nothing waits in the journal to be handed on).
        @param note_error: Called with the message of an error to report
            (a journal that cannot be written).
        @param run_blocking: Runs a blocking call off the reactor (the
            journal's sync), or L{None} to run it here.
        """
        self.data_dir = data_dir
        self.journal = None
        self._hand_on = hand_on
        self._wants_hand_on = wants_hand_on
        self._note_error = note_error
        self._run_blocking = run_blocking

    # -- at start ---------------------------------------------------------

    def prepare(self, create=False):
        """
        Make ready to record: check that the data directory is there and can
        be written, repair the files that a recorder killed outright left
        open in it, hand on what it closed and did not hand on, and begin
        this writer's journal.  Nothing happens if it is ready already.

        @param create: Make the data directory if it does not exist.
        @return: The L{tsagg.journal.Repair}s of the files found.
        @raise DataDirError: The data directory is missing (and not to be
            made) or cannot be written.
        """
        if self.journal is not None:
            return []
        self._check_data_dir(create)
        try:
            repairs = recover(self.data_dir)
            self.journal = Journal(self.data_dir)
        except OSError as e:
            raise DataDirError("cannot write in the data directory %s: %s"
                               % (self.data_dir, e.strerror or e))
        for r in repairs:
            self._repaired(r)
        return repairs

    def _check_data_dir(self, create):
        if os.path.isdir(self.data_dir):
            return
        if not create or os.path.lexists(self.data_dir):
            raise DataDirError(
                "the data directory %s does not exist or is not a "
                "directory" % (self.data_dir,))
        try:
            os.makedirs(self.data_dir)
        except OSError as e:
            raise DataDirError("cannot make the data directory %s: %s"
                               % (self.data_dir, e.strerror or e))
        self.log.info("Made the data directory {path}", path=self.data_dir)

    def _repaired(self, r):
        if r.error is None and not r.left_open:
            self.log.info("{path}, closed by a recorder that stopped before "
                          "it was handed on, is handed on now", path=r.path)
            self._hand_on_found(r)
            return
        if r.error is not None:
            self.log.error("{path}, left open by a recorder that did not "
                           "stop, could not be repaired: {error}",
                           path=r.path, error=r.error)
            return
        if r.cut:
            self.log.warn("Repaired {path}, left open by a recorder that did "
                          "not stop: cut {cut} bytes off its end ({problem}); "
                          "{frames} whole frames kept", path=r.path, cut=r.cut,
                          problem=r.problem, frames=r.frames)
        else:
            self.log.info("{path}, left open by a recorder that did not stop, "
                          "ends with a whole frame ({frames} frames); nothing "
                          "cut", path=r.path, frames=r.frames)
        self._hand_on_found(r)

    def _hand_on_found(self, r):
        """
        Hand on a file found at start: repaired, or closed and not handed
        on by the recorder before.
        """
        if not r.frames or not self._wants_hand_on():
            return
        parts = r.path.split("/")
        basename = parts[-1].rsplit("_", 1)[0]
        session = int(basename) if basename.isdigit() else None
        self.closed(r.path, True)
        self._hand_on(ClosedFile(
            os.path.join(self.data_dir, r.path), r.path, parts[-2], session,
            r.size - r.cut, r.frames, r.scan_frames, repaired=r.left_open))

    # -- a session's files, for it to go on ---------------------------------

    def last_file_of(self, stream_id, basename):
        """
        The last file that this data directory holds of an acquisition, and
        what it holds for the acquisition to go on (L{session_tail}).

        @param stream_id: The stream's directory name (sanitized).
        @param basename: The acquisition's basename (its session id).
        @return: C{(relative path, index, SessionTail)}, or L{None} if there
            is none (or it cannot be read).
        """
        directory = os.path.join(self.data_dir, basename[:5], stream_id)
        try:
            for part in (os.path.dirname(directory), directory):
                if not stat.S_ISDIR(os.lstat(part).st_mode):
                    return None
            names = os.listdir(directory)
        except OSError:
            return None
        pattern = re.compile(re.escape(basename) + r"_([0-9]{3,})\.g3$")
        numbered = [(int(m.group(1)), name) for m, name in
                    ((pattern.match(n), n) for n in names) if m]
        if not numbered:
            return None
        index, name = max(numbered)
        relative = os.path.join(basename[:5], stream_id, name)
        path = os.path.join(directory, name)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return None
            tail = session_tail(path)
        except OSError as e:
            self.log.error("Cannot read {path} back for its session to go "
                           "on: {error}", path=relative, error=e)
            return None
        return relative, index, tail

    # -- the journal, as files open and close --------------------------------

    def opened(self, relative):
        """
        A file opened: named in the journal, synced off the reactor.
        """
        journal = self.journal
        if journal is None:
            return
        try:
            if not os.path.exists(journal.path):
                # The data directory was removed or replaced while
                # recording: begin a journal in the new one.
                journal.close()
                journal = self.journal = Journal(self.data_dir)
            journal.opened(relative)
        except OSError as e:
            self._journal_failed(e)
            return
        if self._run_blocking is None:
            journal.sync_quietly()
        else:
            self._run_blocking(journal.sync_quietly)

    def closed(self, relative, hand_on):
        """
        A file was synced and closed; C{hand_on}: it waits to be handed on.
        """
        if self.journal is None:
            return
        try:
            self.journal.closed(relative, hand_on)
        except OSError as e:
            self._journal_failed(e)

    def handed_on(self, relative, writer_closed):
        """
        A file closed for good was handed on: the journal need not keep it
        for the next start.  Once the writer is closed (C{writer_closed})
        and nothing waits any more, the journal is removed.
        """
        journal = self.journal
        if journal is None:
            return
        try:
            journal.done(relative)
        except OSError as e:
            self._journal_failed(e)
        if writer_closed and journal.empty:
            self.close()

    def close(self, result=None):
        """
        Close the journal once the writer is closed: removed when nothing
        waits to be handed on, else kept for L{handed_on}, or for the next
        start when this process ends first.

        @return: C{result}, so that it may be a callback.
        """
        journal = self.journal
        if journal is not None and (journal.empty
                                    or not self._wants_hand_on()):
            journal.close()
            self.journal = None
        return result

    def release(self):
        """
        Let go of the journal even if files wait in it to be handed on: it
        is kept, unlocked, for the next start to take.
        """
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def _journal_failed(self, error):
        self._note_error("the journal of open files cannot be written: %s"
                         % (error,))
