"""
Tests for L{tsagg.libc}.
"""

import os

from twisted.trial import unittest

from tsagg import libc


class FunctionTests(unittest.TestCase):

    def test_a_function_of_the_c_library(self):
        getpid = libc.function("getpid", [])
        self.assertEqual(getpid(), os.getpid())

    def test_none_where_the_system_has_no_such_function(self):
        self.assertIsNone(libc.function("tsagg_no_such_function", []))
