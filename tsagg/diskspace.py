"""
The free-space floor of the data file system: how much room tsagg leaves to
the rest of the node.  Below it, tsagg treats the disk as full (it pauses
the stream and holds its frames) before the kernel would say so.
"""

import os
import re

__all__ = ["FreeSpaceFloor", "DEFAULT_MIN_FREE", "free_space", "human_bytes"]

#: The default floor: 1% of the file system.
DEFAULT_MIN_FREE = "1%"

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SPEC = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(%|[kmgt]?)(?:i?b)?\s*$",
                   re.IGNORECASE)


class FreeSpaceFloor:
    """
    A floor of free space: a number of bytes, or a percentage of the file
    system's size.

    @ivar text: The floor as the operator wrote it, e.g. C{'1%'} or
        C{'20G'}.
    """

    def __init__(self, text):
        """
        @param text: C{'N%'} (0 to 100) or a number of bytes with an
            optional unit C{K}, C{M}, C{G} or C{T} (powers of 1024, an
            optional C{B} or C{iB} after it), or an L{int} of bytes.
        @raise ValueError: C{text} is none of these.
        """
        match = _SPEC.match(str(text))
        if match is None:
            raise ValueError("not a size or a percentage: %r (e.g. 1%%, "
                             "500M, 20G)" % (text,))
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit == "%":
            if number > 100:
                raise ValueError("more than 100%%: %r" % (text,))
            self._percent, self._bytes = number, None
        else:
            self._percent, self._bytes = None, int(number * _UNITS[unit])
        self.text = str(text).strip()

    def bytes_of(self, total):
        """
        The floor in bytes on a file system of C{total} bytes.
        """
        if self._bytes is not None:
            return self._bytes
        return int(total * self._percent / 100)

    def __str__(self):
        return self.text

    def __repr__(self):
        return "FreeSpaceFloor(%r)" % (self.text,)


def free_space(path, statvfs=os.statvfs):
    """
    The space an unprivileged writer may still use on the file system of
    C{path}, its size, and whether it is mounted read-only: one C{statvfs}.

    @return: C{(free bytes, total bytes, read-only)}.
    @raise OSError: C{path} cannot be examined.
    """
    st = statvfs(path)
    return (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize,
            bool(getattr(st, "f_flag", 0) & os.ST_RDONLY))


def human_bytes(count):
    """
    A byte count as an operator reads it: C{'1.2 GiB'}.
    """
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return "%d B" % (count,)
    return "%.1f %s" % (value, unit)
