"""
The metadata a new file begins with, so that every file stands alone: the
latest frame of each metadata type, in the order of their latest arrival,
and for Wiring (status) frames the whole status chain: the latest full dump
(C{dump} true) and every diff after it, in order, bit for bit.  A new dump
replaces the chain.  Diffs with no dump before them (a session joined
midway) make a chain of their own, every diff since the joining.  Wiring
frames that carry no C{dump} key are metadata like any other: the latest
is kept.  Pure: raw frames in, raw frames out.
"""

from collections import OrderedDict

__all__ = ["MetadataCache", "DUMP", "DIFF", "PLAIN"]

#: What a Wiring frame is: the whole status, the keys that changed, or a
#: frame that does not say.
DUMP = "dump"
DIFF = "diff"
PLAIN = "plain"

# Frame type code of a Wiring (status) frame.
_WIRING = "W"


class MetadataCache:
    """
    The metadata held for the next file.

    @ivar has_dump: Whether the status chain begins with a full dump.
    """

    def __init__(self):
        # Latest metadata frame of each type but Wiring, in order of
        # arrival: type code -> raw bytes (None in Wiring's place).
        self._latest = OrderedDict()
        self._chain = []
        self.has_dump = False
        # Whether the chain is diffs (after a dump, or with none before).
        self._diffs = False

    def written(self, raw, code, wiring=None):
        """
        A metadata frame is on disk: later files begin with it.

        @param code: Its type code.
        @param wiring: For a Wiring frame, L{DUMP}, L{DIFF} or L{PLAIN}.
        """
        self._latest.pop(code, None)
        if code != _WIRING:
            self._latest[code] = raw
            return
        if wiring == DIFF and self._diffs:
            self._chain.append(raw)
        else:
            self._chain = [raw]
            self.has_dump = wiring == DUMP
        self._diffs = wiring in (DUMP, DIFF)
        # The chain takes the place of the latest Wiring frame among the
        # types, as any other type's latest frame does.
        self._latest[_WIRING] = None

    def replay(self, code, wiring=None):
        """
        The metadata a new file begins with, before the frame that opens it.

        @param code: The type code of the frame that opens the file.  The
            file does not repeat metadata of that type (a new Observation
            replaces the old one; a new status dump replaces the chain),
            but a Wiring diff comes after the chain it adds to.
        @param wiring: For a Wiring frame, what it is.
        @return: The raw frames, in order.
        """
        out = []
        for held, raw in self._latest.items():
            if held != code:
                out.extend(self._chain if held == _WIRING else [raw])
            elif held == _WIRING and wiring == DIFF and self._diffs:
                # The diff adds to the chain: the chain first.
                out.extend(self._chain)
        return out

    def latest(self, code):
        """
        The latest frame held of a type (of Wiring: the chain's last), or
        L{None}.
        """
        if code == _WIRING:
            return self._chain[-1] if self._chain else None
        return self._latest.get(code)

    def forget(self):
        self._latest.clear()
        self._chain = []
        self.has_dump = self._diffs = False
