"""
Process-wide memory tuning for a recorder of multi-megabyte frames.

Each received frame is a few megabytes of fresh memory.  glibc serves such
blocks with mmap and hands them back with munmap, or trims the heap after
each one, so every frame costs page faults on all its pages: measured, this
halves tsagg's throughput.  Telling glibc to keep freed memory makes the
next frame reuse the same pages.  Only the process shells (``twistd tsagg``
and the OCS agent) call this; a library does not set process-wide policy.
"""

import ctypes

from twisted.logger import Logger

from tsagg import libc

__all__ = ["keep_freed_memory"]

log = Logger()

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20   # glibc's ceiling on 64-bit systems

_mallopt = libc.function("mallopt", [ctypes.c_int, ctypes.c_int])


def keep_freed_memory(trim_threshold=1 << 30,
                      mmap_threshold=_MMAP_THRESHOLD_MAX):
    """
    Ask glibc to keep freed memory for reuse instead of returning it to the
    kernel after every frame.

    Blocks of up to C{mmap_threshold} bytes come from the heap, and the heap
    is trimmed only past C{trim_threshold} bytes free.  Memory stays bounded
    by the largest working set (a few frames), as the benchmark shows.

    @return: C{True} if glibc took the settings; C{False} elsewhere (no
        glibc, e.g. musl or macOS), which changes nothing else.
    """
    if _mallopt is None:
        return False
    ok = (_mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
          and _mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1)
    if not ok:
        log.warn("glibc refused the memory settings; frames will cost "
                 "page faults")
    return ok
