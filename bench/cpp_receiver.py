"""
The baseline receiver: spt3g's own C++ pipeline, G3Reader('tcp://...') ->
G3Writer(file), as the original OCS agent recorded.  Exits when the sender
closes the stream.

usage: cpp_receiver.py HOST:PORT OUTFILE
"""

import sys

from spt3g import core


def main():
    address, outfile = sys.argv[1], sys.argv[2]
    pipe = core.G3Pipeline()
    pipe.Add(core.G3Reader, filename="tcp://" + address)
    pipe.Add(core.G3Writer, filename=outfile)
    pipe.Run()


if __name__ == "__main__":
    main()
