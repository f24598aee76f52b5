#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Host side of bench/real-guest-bench.sh.

  host.py receiver PORTFILE LOG
      TCP receiver on 0.0.0.0 (the bench runs it in a network namespace
      of its own, where the guest reaches it through a tap device): reads
      each connection to EOF, answers "BYTES SHA256\\n" and appends the
      same line to LOG. Writes its port to PORTFILE. Stops after 2 hours.

  host.py control SERIAL-LOG QMP-SOCKET CTL-SOCKET OUT TIMEOUT [TRACE]
      Drives one VM: whenever the guest prints "bench: snap NAME" on its
      console (SERIAL-LOG), records the counters as "snap NAME KEY VALUE"
      lines in OUT, then lets the guest go on by sending one byte on its
      second serial port (CTL-SOCKET). The counters are iommu-emul's QOM
      counters (if /machine/peripheral/iommu0 is an iommu-emul) and, with
      TRACE, the number of virtio_iommu_map / virtio_iommu_unmap trace
      lines in that file so far. On "bench: done" it quits QEMU over QMP
      and exits 0; it exits 1 if QEMU goes away first or TIMEOUT seconds
      pass. With RG_PERF=FILE:PID in the environment it runs
      "perf record -p PID" over the 64 KiB window (blk64-start to
      blk64-end) into FILE.
"""

import hashlib
import json
import os
import signal
import subprocess
import socket
import socketserver
import sys
import threading
import time

EMUL_PROPS = ["maps", "unmaps", "mlock-calls", "munlock-calls",
              "pin-cache-hits", "pin-cache-misses", "pin-cache-evictions",
              "pinned-pages", "mappings", "faults"]


class Receiver(socketserver.StreamRequestHandler):
    log = None

    def handle(self):
        h = hashlib.sha256()
        n = 0
        while True:
            b = self.request.recv(1 << 16)
            if not b:
                break
            h.update(b)
            n += len(b)
        line = "%d %s\n" % (n, h.hexdigest())
        with open(self.log, "a") as f:
            f.write(line)
        try:
            self.request.sendall(line.encode())
        except OSError:
            pass


def receiver(portfile, log):
    Receiver.log = log
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("0.0.0.0", 0), Receiver)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(portfile + ".tmp", portfile)
    threading.Timer(7200, srv.shutdown).start()
    srv.serve_forever()


class Qmp:
    def __init__(self, path, deadline):
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.time() > deadline:
                    raise SystemExit("control: no QMP socket")
                time.sleep(0.1)
        self.s.settimeout(60)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, arguments=None):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("QMP connection closed")
            r = json.loads(line)
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError("%s: %s" % (name, r["error"]))


def count_trace(path):
    m = u = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                if b"virtio_iommu_map " in line:
                    m += 1
                elif b"virtio_iommu_unmap " in line:
                    u += 1
    except FileNotFoundError:
        pass
    return m, u


def control(serial, qmp_path, ctl_path, out, timeout, trace=None):
    deadline = time.time() + timeout
    qmp = Qmp(qmp_path, deadline)
    emul = False
    try:
        emul = qmp.cmd("qom-get", {"path": "/machine/peripheral/iommu0",
                                   "property": "type"}) == "iommu-emul"
    except RuntimeError:
        pass
    ctl = None
    while ctl is None:
        try:
            ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            ctl.connect(ctl_path)
        except OSError:
            ctl.close()
            ctl = None
            if time.time() > deadline:
                raise SystemExit("control: no control socket")
            time.sleep(0.1)
    pos = 0
    buf = b""
    # RG_PERF=FILE:PID: perf record of PID over the 64 KiB window
    perf = os.environ.get("RG_PERF", "").split(":") or None
    perf = perf if len(perf) == 2 else None
    perf_proc = None
    with open(out, "a") as o:
        while time.time() < deadline:
            try:
                with open(serial, "rb") as f:
                    f.seek(pos)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            pos += len(data)
            buf += data
            lines = buf.split(b"\n")
            buf = lines.pop()
            for raw in lines:
                line = raw.decode(errors="replace").strip("\r")
                if line.startswith("bench: snap "):
                    name = line.split()[2]
                    if perf and name == "blk64-end" and perf_proc:
                        perf_proc.send_signal(signal.SIGINT)
                        perf_proc.wait()
                        perf_proc = None
                    try:
                        if emul:
                            for p in EMUL_PROPS:
                                v = qmp.cmd("qom-get", {
                                    "path": "/machine/peripheral/iommu0",
                                    "property": p})
                                o.write("snap %s %s %s\n" % (name, p, v))
                        if trace:
                            m, u = count_trace(trace)
                            o.write("snap %s trace-map %d\n" % (name, m))
                            o.write("snap %s trace-unmap %d\n" % (name, u))
                        o.write("snap %s t %.3f\n" % (name, time.time()))
                        o.flush()
                        if perf and name == "blk64-start":
                            perf_proc = subprocess.Popen(
                                ["perf", "record", "-q", "-o", perf[0], "-p", perf[1]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                            time.sleep(1)
                        ctl.sendall(b"g")
                    except (EOFError, OSError, RuntimeError) as e:
                        o.write("error %s\n" % e)
                        return 1
                elif line.startswith("bench: done"):
                    try:
                        qmp.cmd("quit")
                    except (EOFError, OSError, RuntimeError):
                        pass
                    return 0
            # QMP events are read and ignored; EOF means QEMU is gone
            qmp.s.settimeout(0.05)
            try:
                if not qmp.s.recv(1 << 16, socket.MSG_PEEK):
                    o.write("error QEMU exited\n")
                    return 1
                qmp.s.settimeout(60)
                qmp.f.readline()
            except socket.timeout:
                pass
            except OSError:
                o.write("error QEMU exited\n")
                return 1
            qmp.s.settimeout(60)
            time.sleep(0.05)
        o.write("error timeout\n")
    return 1


def main():
    a = sys.argv
    if len(a) == 4 and a[1] == "receiver":
        receiver(a[2], a[3])
    elif len(a) in (7, 8) and a[1] == "control":
        sys.exit(control(a[2], a[3], a[4], a[5], float(a[6]),
                         a[7] if len(a) == 8 else None))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
