"""
Keep a long full-speed run off the disk: every half second, remove each file
under DATA_DIR except the newest one of its directory (the one being
written).  Runs as its own process so that unlinking gigabytes is charged to
neither the receiver's CPU nor its reactor.

usage: deleter.py DATA_DIR
"""

import os
import sys
import time


def main():
    root = sys.argv[1]
    while True:
        for dirpath, _dirs, files in os.walk(root):
            names = sorted(f for f in files if f.endswith(".g3"))
            for name in names[:-1]:
                try:
                    os.unlink(os.path.join(dirpath, name))
                except OSError:
                    pass
        time.sleep(0.5)


if __name__ == "__main__":
    main()
