"""
Run the frame-handling tests again under the spt3g copy that so3g vendors.

In a Simons Observatory environment so3g is imported first, and then
``from spt3g import core`` gives so3g's boost.python copy.  Importing the
two copies in one process the other way round crashes, so this runs trial in
a child process that imports so3g before anything else.
"""

import os
import subprocess
import sys

from twisted.trial import unittest

from tests.util import ROOT, repo_env

try:
    import importlib.util
    HAVE_SO3G = importlib.util.find_spec("so3g") is not None
except ImportError:  # pragma: no cover
    HAVE_SO3G = False

SUITES = ["tests.test_wire", "tests.test_scan", "tests.test_sostream",
          "tests.test_protocol", "tests.test_writer", "tests.test_integration",
          "tests.test_quicklook"]

_CHILD = (
    "import so3g, sys\n"
    "from twisted.scripts.trial import run\n"
    "sys.argv = ['trial', '--temp-directory', sys.argv[1]] + sys.argv[2:]\n"
    "run()\n"
)


class So3gBindingTests(unittest.TestCase):

    def test_suites_pass_under_so3g(self):
        if not HAVE_SO3G:
            raise unittest.SkipTest("so3g is not installed")
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, os.path.abspath(self.mktemp())]
            + SUITES, cwd=ROOT, env=repo_env(TSAGG_EXPECT_BINDING="so3g"), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=600)
        output = result.stdout.decode("utf-8", "replace")
        summary = [line for line in output.splitlines()
                   if line.startswith(("PASSED", "FAILED"))]
        self.assertEqual(result.returncode, 0, output[-5000:])
        self.assertTrue(summary and summary[-1].startswith("PASSED"),
                        output[-5000:])
