"""
The checks on option values that both shells share: ``twistd tsagg``
(L{tsagg.tap}) and the OCS agent (L{tsagg.agent}).  Each raises
L{ValueError} with a message an operator can act on.
"""

from tsagg import sostream
from tsagg.diskspace import FreeSpaceFloor

__all__ = ["positive", "port", "stream_id", "min_free"]


def positive(kind):
    """
    A converter of text to a positive C{kind} (L{int} or L{float}).
    """
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError("not a number: %r" % (text,))
        if value <= 0:
            raise ValueError("must be positive: %r" % (text,))
        return value
    convert.__name__ = "positive " + kind.__name__
    convert.coerceDoc = "Must be positive."
    return convert


def port(text):
    """
    A TCP port number, 1 to 65535.
    """
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not a TCP port: %r" % (text,))
    if not 0 < value < 65536:
        raise ValueError("not a TCP port: %r" % (text,))
    return value


def stream_id(text):
    """
    A configured stream id: it must already be one safe directory name.
    """
    if sostream.sanitize_stream_id(text) != text:
        raise ValueError(
            "%r is not a plain directory name of letters, digits, '_', '-' "
            "and '.', not starting with '.'" % (text,))
    return text


def min_free(text):
    """
    A free-space floor: C{'N%'} of the file system, or bytes with an
    optional unit (C{500M}, C{20G}).
    """
    return FreeSpaceFloor(text)
