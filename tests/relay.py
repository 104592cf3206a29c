"""
A TCP relay on loopback that a test cuts and restores, as a network
between a sender and tsagg that breaks for a moment::

    python tests/relay.py --listen PORT --to PORT

It prints ``Relaying 127.0.0.1:L to 127.0.0.1:U`` once it listens, and
relays every connection it accepts to a new connection of its own to the
upstream port, bytes unchanged, both ways.

SIGUSR1 cuts: every relayed connection is reset on both sides at once
(tsagg reads "the connection was lost", the sender's send fails), and new
connections are left in the listen backlog unanswered, as a network that is
down leaves them: the client's connect completes in the kernel, and no byte
comes.  It prints ``Cut: N connections reset``.  SIGUSR2 restores: waiting
connections are accepted and relayed, and it prints ``Restored``.  SIGTERM
ends it.
"""

import argparse
import os
import selectors
import signal
import socket
import struct
import sys

CHUNK = 1 << 20
#: Bytes waiting for one side before the other side is no longer read.
HIGH_WATER = 8 << 20

LOOPBACK = "127.0.0.1"


class Side:
    """
    One socket of a relayed connection, and the bytes waiting for it.
    """

    def __init__(self, sock):
        sock.setblocking(False)
        self.sock = sock
        self.out = bytearray()
        self.peer = None
        self.eof = False


class Relay:

    def __init__(self, listen_port, upstream_port):
        self.upstream = (LOOPBACK, upstream_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, listen_port))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.sides = {}
        self.cut = False
        self.signals = []
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
            signal.signal(signum, lambda n, _: self.signals.append(n))
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.selector.register(self.listener, selectors.EVENT_READ, "listen")

    def run(self):
        while True:
            for key, events in self.selector.select():
                if key.data == "wake":
                    try:
                        self.wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                elif key.data == "listen":
                    self.accept()
                elif key.fileobj in self.sides:
                    self.service(self.sides[key.fileobj], events)
            while self.signals:
                signum = self.signals.pop(0)
                if signum == signal.SIGTERM:
                    return
                if signum == signal.SIGUSR1 and not self.cut:
                    self.do_cut()
                elif signum == signal.SIGUSR2 and self.cut:
                    self.do_restore()
            self.update_interest()

    def accept(self):
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError as e:
            say("Upstream refused: %s" % (e,))
            client.close()
            return
        a, b = Side(client), Side(upstream)
        a.peer, b.peer = b, a
        for side in (a, b):
            self.sides[side.sock] = side
            self.selector.register(side.sock, selectors.EVENT_READ, "side")
        say("Relaying a connection")

    def service(self, side, events):
        if events & selectors.EVENT_WRITE and side.out:
            try:
                sent = side.sock.send(side.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close_pair(side)
                return
            del side.out[:sent]
            if not side.out and side.peer.eof:
                self.close_pair(side)
                return
        if events & selectors.EVENT_READ:
            try:
                data = side.sock.recv(CHUNK)
            except BlockingIOError:
                return
            except OSError:
                self.close_pair(side)
                return
            if not data:
                side.eof = True
                if not side.peer.out:
                    self.close_pair(side)
                return
            side.peer.out += data

    def update_interest(self):
        for sock, side in list(self.sides.items()):
            events = 0
            if not side.eof and len(side.peer.out) < HIGH_WATER:
                events |= selectors.EVENT_READ
            if side.out:
                events |= selectors.EVENT_WRITE
            if events:
                self.selector.modify(sock, events, "side")
            else:
                self.selector.modify(sock, selectors.EVENT_READ, "side")
        listening = "listen" in [k.data for k in
                                 self.selector.get_map().values()]
        if self.cut and listening:
            self.selector.unregister(self.listener)
        elif not self.cut and not listening:
            self.selector.register(self.listener, selectors.EVENT_READ,
                                   "listen")

    def close_pair(self, side, reset=False):
        for s in (side, side.peer):
            if s.sock not in self.sides:
                continue
            del self.sides[s.sock]
            self.selector.unregister(s.sock)
            if reset:
                s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                  struct.pack("ii", 1, 0))
            s.sock.close()

    def do_cut(self):
        self.cut = True
        pairs = [s for s in self.sides.values() if s.sock.fileno() >= 0]
        count = len(pairs) // 2
        for side in pairs:
            self.close_pair(side, reset=True)
        say("Cut: %d connections reset" % (count,))

    def do_restore(self):
        self.cut = False
        say("Restored")


def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--to", type=int, required=True)
    args = parser.parse_args()
    relay = Relay(args.listen, args.to)
    say("Relaying %s:%d to %s:%d (pid %d)" % (LOOPBACK, args.listen, LOOPBACK,
                                              args.to, os.getpid()))
    relay.run()


if __name__ == "__main__":
    main()
