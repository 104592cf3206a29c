"""
Functions of the C library that Python's C{os} module does not offer.
"""

import ctypes

__all__ = ["function"]


def function(name, argtypes):
    """
    The C library's function C{name}, taking C{argtypes} and returning an
    C{int}, with C{errno} kept for C{ctypes.get_errno}; L{None} where the
    system has no such function.

    It is looked up among the symbols the process already has, the C
    library's among them: no search for the library, which may run
    C{ldconfig}.
    """
    try:
        call = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError, TypeError):
        return None
    call.argtypes = argtypes
    call.restype = ctypes.c_int
    return call
