"""
tsagg: record spt3g G3 frame streams into rotating ``.g3`` files, inside a
Twisted reactor.
"""

__version__ = "0.1.0"
