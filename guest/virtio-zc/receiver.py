#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Independent virtio-zc destination: receive, stall on demand, verify.

Listens on a TCP port, accepts the device's one connection and parses the
stream of docs/specs/virtio-zc.rst ("Destination stream"): 24-byte header
(le32 magic 0x31435a56, le32 len, le64 seq, le64 tag) then len data bytes.

With --stall it accepts but does not read (and its receive buffer is tiny)
until it gets SIGUSR1 or the --control file appears; then it drains.
SIGUSR2 asks it to finish: once nothing has arrived for a second it closes
the connection (the device sees its destination go away) and reports.

Every message is checked against this receiver's own pattern for its tag
(the pattern vzc-tool writes: splitmix64 seeded per tag), and every differing
byte is counted and the first ones printed.  Exit status 0 only if the
stream was well formed (magic, seq 0, 1, 2, ... without gaps, no truncated
message), every message matched, and the --expect / --maybe rules held.
"""

import argparse
import os
import select
import signal
import socket
import struct
import sys
import time

MAGIC = 0x31435a56
HDR = struct.Struct('<IIQQ')
M64 = (1 << 64) - 1
GOLDEN = 0x9e3779b97f4a7c15


def pattern(seed, length):
    """Byte i: byte i%8 (LE) of output i//8+1 of splitmix64 from the seed."""
    s = ((seed * GOLDEN) ^ 0x5a17c0def00dba5e) & M64
    out = bytearray()
    for _ in range((length + 7) // 8):
        s = (s + GOLDEN) & M64
        z = s
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
        z ^= z >> 31
        out += z.to_bytes(8, 'little')
    return bytes(out[:length])


def log(*args):
    print('RECEIVER', *args, flush=True)


def parse_tags(spec):
    """'TAG:LEN,FIRST-LAST:LEN,...' -> {tag: len}"""
    tags = {}
    for item in filter(None, (spec or '').split(',')):
        tag, _, length = item.partition(':')
        first, _, last = tag.partition('-')
        for t in range(int(first, 0), int(last or first, 0) + 1):
            tags[t] = int(length, 0)
    return tags


class Finished(Exception):
    """SIGUSR2 and the stream went quiet; args[0]: inside a message"""


class Receiver:
    def __init__(self, args):
        self.args = args
        self.drain = not args.stall
        self.finish = False
        self.deadline = time.monotonic() + args.timeout
        self.errors = []
        self.seen = {}
        self.next_seq = 0

    def on_signal(self, signum, frame):
        if signum == signal.SIGUSR2:
            self.finish = True
        self.drain = True

    def fail(self, msg):
        self.errors.append(msg)
        log('ERROR', msg)

    def recv_exact(self, conn, n, boundary=False):
        buf = bytearray()
        idle = 0.0
        while len(buf) < n:
            if not select.select([conn], [], [], 0.2)[0]:
                idle += 0.2
                if time.monotonic() > self.deadline:
                    raise socket.timeout()
                if self.finish and idle >= 1.0:
                    raise Finished(len(buf) > 0 or not boundary)
                continue
            idle = 0.0
            chunk = conn.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                return bytes(buf)
            buf += chunk
        return bytes(buf)

    def check(self, seq, tag, data):
        want = pattern(tag, len(data))
        if data == want:
            log(f'MSG seq={seq} tag={tag} len={len(data)} OK')
            return True
        bad = [i for i in range(len(data)) if data[i] != want[i]]
        shown = ' '.join(f'+{i}:{data[i]:02x}/{want[i]:02x}'
                         for i in bad[:8])
        self.fail(f'MSG seq={seq} tag={tag} len={len(data)} MISMATCH '
                  f'{len(bad)} bytes differ (got/want) {shown}')
        return False

    def wait_drain(self, deadline):
        while not self.drain:
            if self.args.control and os.path.exists(self.args.control):
                self.drain = True
                break
            if time.monotonic() > deadline:
                self.fail('timed out while stalled')
                return False
            time.sleep(0.05)
        return True

    def run(self):
        args = self.args
        deadline = self.deadline
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if args.stall:
            # Set before listen(): the accepted socket inherits it, and
            # the advertised window stays tiny.
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                             args.rcvbuf)
        lsock.bind((args.host, args.port))
        lsock.listen(1)
        port = lsock.getsockname()[1]
        if args.port_file:
            with open(args.port_file + '.tmp', 'w') as f:
                f.write(f'{port}\n')
            os.rename(args.port_file + '.tmp', args.port_file)
        log(f'listening {args.host}:{port} stall={int(args.stall)} '
            f'rcvbuf={lsock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}')
        lsock.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            conn, peer = lsock.accept()
        except socket.timeout:
            self.fail('no connection')
            return self.result()
        lsock.close()
        log(f'connected from {peer[0]}:{peer[1]}')
        if not self.wait_drain(deadline):
            return self.result()
        log('draining')
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        try:
            self.read_stream(conn)
        except Finished as e:
            log('closing the connection on request')
            if e.args[0]:
                self.fail('closed in the middle of a message')
        except socket.timeout:
            self.fail('timed out while draining')
        except OSError as e:
            self.fail(f'connection error: {e}')
        conn.close()
        return self.result()

    def read_stream(self, conn):
        while True:
            hdr = self.recv_exact(conn, HDR.size, boundary=True)
            if not hdr:
                log('end of stream')
                return
            if len(hdr) < HDR.size:
                self.fail(f'truncated header ({len(hdr)} bytes) at end')
                return
            magic, length, seq, tag = HDR.unpack(hdr)
            if magic != MAGIC:
                self.fail(f'bad magic 0x{magic:08x} (seq {seq}); '
                          'stream lost')
                return
            if seq != self.next_seq:
                self.fail(f'seq {seq}, expected {self.next_seq}')
            self.next_seq = seq + 1
            data = self.recv_exact(conn, length)
            if len(data) < length:
                self.fail(f'MSG seq={seq} tag={tag} truncated: '
                          f'{len(data)} of {length} bytes')
                return
            self.check(seq, tag, data)
            self.seen.setdefault(tag, []).append(length)

    def result(self):
        expect = parse_tags(self.args.expect)
        maybe = parse_tags(self.args.maybe)
        for tag, length in expect.items():
            got = self.seen.get(tag, [])
            if got != [length]:
                self.fail(f'tag {tag}: expected one message of {length} '
                          f'bytes, got {got}')
        for tag, got in self.seen.items():
            if tag in expect:
                continue
            if tag not in maybe:
                if expect or maybe:
                    self.fail(f'unexpected tag {tag} ({got})')
            elif got != [maybe[tag]]:
                self.fail(f'tag {tag}: at most one message of {maybe[tag]} '
                          f'bytes, got {got}')
        n = sum(len(v) for v in self.seen.values())
        if self.errors:
            log(f'RESULT FAIL messages={n} errors={len(self.errors)}')
            return 1
        log(f'RESULT PASS messages={n}')
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=0,
                    help='0: pick one (see --port-file)')
    ap.add_argument('--port-file', help='write the port number here')
    ap.add_argument('--stall', action='store_true',
                    help='do not read until SIGUSR1 or --control exists')
    ap.add_argument('--control', help='drain once this file exists')
    ap.add_argument('--rcvbuf', type=int, default=4096,
                    help='SO_RCVBUF while stalled (default 4096)')
    ap.add_argument('--expect', help='TAG:LEN,FIRST-LAST:LEN,... must arrive exactly once')
    ap.add_argument('--maybe', help='TAG:LEN,... may arrive (at most once)')
    ap.add_argument('--timeout', type=float, default=300,
                    help='give up after this many seconds')
    ap.add_argument('--pattern', nargs=2, type=int, metavar=('SEED', 'LEN'),
                    help='print the pattern as hex and exit (self-check)')
    args = ap.parse_args()
    if args.pattern:
        print(pattern(*args.pattern).hex())
        return 0
    rx = Receiver(args)
    signal.signal(signal.SIGUSR1, rx.on_signal)
    signal.signal(signal.SIGUSR2, rx.on_signal)
    return rx.run()


if __name__ == '__main__':
    sys.exit(main())
