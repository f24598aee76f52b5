#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Boot a TCG VM with both qemu-zc devices, show them through QMP, quit.

Usage: qmp-demo.py QEMU-BINARY [EXTRA-QEMU-ARGS...]
Exits non-zero if a device is missing or QEMU does not quit cleanly.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

DEVICES = {
    # QOM id: (driver, PCI vendor, PCI device)
    "iommu0": ("iommu-emul", 0x1af4, 0x10f0),
    "zc0": ("virtio-zc", 0x1af4, 0x107d),
}

# QOM path and read-only counters to show, per device
COUNTERS = {
    "iommu0": ("/machine/peripheral/iommu0",
               ["mappings", "pinned-bytes", "maps", "faults",
                "vetoed-discards"]),
    "zc0": ("/machine/peripheral/zc0/virtio-backend",
            ["requests", "sent", "completed", "reclaimed", "copied",
             "in-flight"]),
}


def receiver():
    """A loopback destination for virtio-zc: accepts, then drains."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def run():
        conn, _ = lsock.accept()
        while conn.recv(65536):
            pass
        conn.close()

    threading.Thread(target=run, daemon=True).start()
    return lsock.getsockname()[1]


class QMP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
        self._read()                       # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            line = self.file.readline()
            if not line:
                raise RuntimeError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args}))
        self.file.flush()
        msg = self._read()
        if "error" in msg:
            raise RuntimeError(f"{name}: {msg['error']['desc']}")
        return msg["return"]


def main():
    qemu = sys.argv[1]
    extra = sys.argv[2:]
    helptext = subprocess.run([qemu, "-device", "help"], check=True,
                              capture_output=True, text=True).stdout
    for drv in ("iommu-emul", "virtio-zc-pci"):
        line = next((l for l in helptext.splitlines()
                     if f'name "{drv}"' in l), None)
        if line is None:
            sys.exit(f"qmp-demo: -device help does not list {drv}")
        print("-device help:", line.strip())

    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "qmp.sock")
        args = [qemu, "-machine", "q35", "-accel", "tcg", "-m", "512",
                "-display", "none", "-serial", "none", "-monitor", "none",
                "-qmp", f"unix:{sock},server=on,wait=off"]
        port = receiver()
        args += ["-device", "iommu-emul,id=iommu0",
                 "-device", f"virtio-zc,id=zc0,dest=127.0.0.1:{port}"]
        print("launching:", " ".join(args + extra))
        proc = subprocess.Popen(args + extra)
        for _ in range(300):
            if os.path.exists(sock) or proc.poll() is not None:
                break
            time.sleep(0.1)
        if proc.poll() is not None:
            sys.exit(f"qmp-demo: QEMU exited early with {proc.returncode}")
        qmp = QMP(sock)
        v = qmp.cmd("query-version")["qemu"]
        print(f"QEMU {v['major']}.{v['minor']}.{v['micro']}",
              "status:", qmp.cmd("query-status")["status"])

        pci = {}
        for bus in qmp.cmd("query-pci"):
            for dev in bus["devices"]:
                pci[dev.get("qdev_id", "")] = dev
        ok = True
        for qid, (drv, vendor, device) in DEVICES.items():
            dev = pci.get(qid)
            qom = qmp.cmd("qom-get", path=f"/machine/peripheral/{qid}",
                          property="type")
            if dev is None:
                print(f"qmp-demo: MISSING: {drv} (id {qid}) is not on the "
                      "PCI bus", file=sys.stderr)
                ok = False
                continue
            ids = dev["id"]
            print(f"{drv:12s} id={qid:7s} type={qom:16s} "
                  f"{dev['bus']:02x}:{dev['slot']:02x}.{dev['function']} "
                  f"{ids['vendor']:04x}:{ids['device']:04x} "
                  f"class {dev['class_info']['class']:04x}")
            if (ids["vendor"], ids["device"]) != (vendor, device):
                print(f"qmp-demo: WRONG IDs for {drv}", file=sys.stderr)
                ok = False
            path, names = COUNTERS[qid]
            vals = [f"{n}={qmp.cmd('qom-get', path=path, property=n)}"
                    for n in names]
            print(f"{'':12s} counters: {' '.join(vals)}")
        qmp.cmd("quit")
        rc = proc.wait(timeout=30)
        print("QEMU quit with status", rc)
        if rc != 0:
            sys.exit(f"qmp-demo: QEMU exited with status {rc}")
        if not ok:
            sys.exit(1)
    print("demo: OK")


if __name__ == "__main__":
    main()
