"""
The limit of any receiver in Python: the same bytes received with
C{recv_into} into one reused 1 MiB buffer and written to a file as they
came, with no framing, no CRC and no rules.  It costs the kernel's two
copies and the two system calls of each read, and nothing more; tsagg is
measured against it.  Exits when the sender closes the stream.

usage: bare_receiver.py HOST:PORT OUTFILE
"""

import os
import socket
import sys

READ_SIZE = 1 << 20


def main():
    address, outfile = sys.argv[1], sys.argv[2]
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    fd = os.open(outfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    try:
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            done = 0
            while done < n:
                done += os.write(fd, view[done:n])
    finally:
        os.close(fd)
        sock.close()


if __name__ == "__main__":
    main()
