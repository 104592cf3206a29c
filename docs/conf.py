"""
Sphinx configuration of the tsagg docs.  ``make docs`` builds them with
``-W``: a warning fails the build (and CI).
"""

import os
import re
import sys

from docutils import nodes
from docutils.parsers.rst import Directive
from twisted.python.reflect import namedAny

# The docs describe the checkout they sit in, installed or not.
sys.path.insert(0, os.path.abspath(".."))

import tsagg  # noqa: E402

project = "tsagg"
author = "tsagg developers"
copyright = "tsagg developers"
version = release = tsagg.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxarg.ext",
]
exclude_patterns = ["_build"]
html_theme = "sphinx_rtd_theme"
autoclass_content = "both"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False


# tsagg's docstrings are epytext, as Twisted's are; autodoc wants reST.
_FIELD = re.compile(r"^(\s*)@(param|type|ivar|return|rtype|raise)\b\s*"
                    r"([^:]*):", re.M)
_MARKUP = re.compile(r"([LCIB])\{([^{}]*)\}", re.S)
_FIELD_NAMES = {"param": "param", "type": "type", "ivar": "ivar",
                "return": "returns", "rtype": "rtype", "raise": "raises"}


def _markup(match):
    kind, text = match.groups()
    text = " ".join(text.split())
    if kind == "I":
        return "*%s*" % (text,)
    if kind == "B":
        return "**%s**" % (text,)
    return "``%s``" % (text,)


def epytext_to_rest(app, what, name, obj, options, lines):
    text = "\n".join(lines)
    text = _MARKUP.sub(_markup, text)

    def field(match):
        indent, kind, arg = match.groups()
        arg = arg.strip()
        return "%s:%s%s:" % (indent, _FIELD_NAMES[kind],
                             " " + arg if arg else "")
    text = _FIELD.sub(field, text)
    lines[:] = text.split("\n")


class UsageOptions(Directive):
    """
    ``.. usage-options:: module.Options``: the ``--help`` text of a
    ``twisted.python.usage.Options`` class, as a literal block, so the page
    never drifts from the code.
    """

    required_arguments = 1
    has_content = False

    def run(self):
        options = namedAny(self.arguments[0])()
        text = str(options).rstrip()
        return [nodes.literal_block(text, text)]


def setup(app):
    app.connect("autodoc-process-docstring", epytext_to_rest)
    app.add_directive("usage-options", UsageOptions)
