"""
Tests of what the docs say about the code: the map of the house in
docs/development.rst names every module of tsagg/, and only those.
"""

import os
import re

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MapTests(unittest.TestCase):

    def modules_on_the_map(self):
        with open(os.path.join(ROOT, "docs", "development.rst")) as f:
            text = f.read()
        start = text.index("\nThe map of the house\n")
        end = text.index("\nThe design\n", start)
        return set(re.findall(r"\b(\w+)\.py\b", text[start:end]))

    def test_the_map_names_every_module_and_only_those(self):
        modules = {name[:-3] for name in os.listdir(os.path.join(ROOT, "tsagg"))
                   if name.endswith(".py") and name != "__init__.py"}
        self.assertEqual(self.modules_on_the_map() - {"tsagg_plugin"},
                         modules)
