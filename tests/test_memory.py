"""
Tests for L{tsagg.memory}.
"""

import ctypes.util

from twisted.trial import unittest

from tsagg.memory import keep_freed_memory


class KeepFreedMemoryTests(unittest.TestCase):

    def test_glibc_takes_the_settings(self):
        import platform
        if platform.libc_ver()[0] != "glibc":
            raise unittest.SkipTest("not glibc")
        self.assertTrue(keep_freed_memory())

    def test_no_libc_changes_nothing(self):
        self.patch(ctypes.util, "find_library", lambda name: "/nonexistent")
        self.assertFalse(keep_freed_memory())
