"""
Tests for L{tsagg.memory}.
"""

from twisted.trial import unittest

from tsagg import memory
from tsagg.memory import keep_freed_memory


class KeepFreedMemoryTests(unittest.TestCase):

    def test_glibc_takes_the_settings(self):
        import platform
        if platform.libc_ver()[0] != "glibc":
            raise unittest.SkipTest("not glibc")
        self.assertTrue(keep_freed_memory())

    def test_no_libc_changes_nothing(self):
        self.patch(memory, "_mallopt", None)
        self.assertFalse(keep_freed_memory())
