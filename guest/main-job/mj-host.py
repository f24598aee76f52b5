#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Host side of guest/main-job/run.sh: runs the VMs and measures them.

  mj-host.py MODE --run DIR --qemu QEMU --firmware DIR --kernel VMLINUZ
             --initrd INITRD --disk IMG --head-sha SHA [--timeout S]

MODE is demo, overcommit or test (see run.sh). Each VM is a q35 TCG guest
with -device iommu-emul, virtio-blk (iommu_platform=on) and virtio-balloon;
guest-init.sh drives the guest side. The host:

- when the guest prints "MJ: inflate-now" (its RAM was dirtied, so every
  guest page is resident in QEMU, and its disk I/O loop is running):
  reads QEMU's /proc/PID/status (VmRSS, VmLck) and the pagemap of the
  guest RAM block pc.ram (HVA from HMP "info ramblock"), and the
  iommu-emul QOM counters; then sets the balloon target over QMP;
- samples the counters while the balloon inflates ("during");
- when the guest prints "MJ: done": measures again ("after"), quits QEMU;
- takes the ballooned guest-physical pages from QEMU's trace event
  virtio_balloon_handle_output (an odd number of events: inflated and
  not deflated since; the host never deflates), maps each
  to its QEMU virtual address in pc.ram and counts the pages whose
  pagemap entry is no longer present: those went back to the host.

Exit status 0 only if every check of the mode passed.
"""

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

NAME = "main-job"
PAGE = 4096
COUNTERS = ["mappings", "pinned-pages", "pinned-bytes", "maps", "unmaps",
            "faults", "vetoed-discards", "deferred-discards"]
STEPS = 8             # balloon target steps, STEP_S seconds apart
STEP_S = 2
GOAL = 99.0           # % of unmapped ballooned pages returned (issue 10)


def say(msg=""):
    print(msg if msg.startswith(" ") or not msg else NAME + ": " + msg,
          flush=True)


class VMError(Exception):
    pass


class QMP:
    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise VMError("cannot connect to QMP at " + path)
                time.sleep(0.2)
        self.sock.settimeout(60)
        self.file = self.sock.makefile("rw")
        json.loads(self.file.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise VMError("QMP connection closed during " + name)
            r = json.loads(line)
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise VMError("QMP %s: %s" % (name, r["error"]["desc"]))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmLck", "VmPin"):
                out[k] = int(v.split()[0]) * 1024
    return out


def ramblock(qmp):
    """(HVA, size) of pc.ram from HMP info ramblock."""
    txt = qmp.cmd("human-monitor-command", **{"command-line": "info ramblock"})
    for line in txt.splitlines():
        f = line.split()
        if f and f[0] == "pc.ram":
            # Block Name, PSize (2 words), Offset, Used, Total, HVA, RO
            if f[2] != "KiB" or f[1] != "4":
                raise VMError("pc.ram has %s %s host pages, not 4 KiB"
                              % (f[1], f[2]))
            return int(f[6], 16), int(f[4], 16)
    raise VMError("no pc.ram in info ramblock:\n" + txt)


def pagemap_present(pid, hva, size):
    """bytearray: 1 per 4 KiB page of [hva, hva+size) present in RAM."""
    n = size // PAGE
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(hva // PAGE * 8)
        raw = f.read(n * 8)
    if len(raw) != n * 8:
        raise VMError("short pagemap read")
    present = bytearray(n)
    for i, (e,) in enumerate(struct.iter_unpack("<Q", raw)):
        if e >> 63:
            present[i] = 1
    return present


def thp_pages(pid, hva, size, present):
    """bytearray: 1 per present page backed by a transparent huge page
    (/proc/kpageflags bit 22; needs root for the PFNs), or None."""
    n = size // PAGE
    try:
        with open("/proc/%d/pagemap" % pid, "rb") as f:
            f.seek(hva // PAGE * 8)
            raw = f.read(n * 8)
        kpf = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        return None
    thp = bytearray(n)
    try:
        for i, (e,) in enumerate(struct.iter_unpack("<Q", raw)):
            pfn = e & ((1 << 55) - 1)
            if not present[i] or not (e >> 63) or pfn == 0:
                continue
            fl = os.pread(kpf, 8, pfn * 8)
            if len(fl) == 8 and struct.unpack("<Q", fl)[0] & (1 << 22):
                thp[i] = 1
    finally:
        os.close(kpf)
    return thp


def khugepaged_collapsed():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/khugepaged/"
                  "pages_collapsed") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def counters(qmp):
    return {c: qmp.cmd("qom-get", path="/machine/peripheral/iommu0",
                       property=c) for c in COUNTERS}


def measure(qmp, pid, hva, size):
    m = proc_status(pid)
    m["counters"] = counters(qmp)
    m["balloon"] = qmp.cmd("query-balloon")["actual"]
    m["present"] = pagemap_present(pid, hva, size)
    m["resident"] = sum(m["present"]) * PAGE
    m["collapsed"] = khugepaged_collapsed()
    return m


def serial_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return [ln.rstrip("\r") for ln in data.split("\n")]


def mib(b):
    if b < 1048576:
        return "%d KiB" % (b // 1024)
    return "%.1f MiB" % (b / 1048576.0)


def run_vm(a, name, mem_mib, target_mib, memlock):
    """Boots one VM, returns a dict of results. Raises VMError."""
    run = a.run
    serial = os.path.join(run, name + ".serial.log")
    qlog = os.path.join(run, name + ".qemu.log")
    trace = os.path.join(run, name + ".trace.log")
    sock = os.path.join(run, name + ".qmp")
    for p in (serial, trace, sock):
        if os.path.exists(p):
            os.unlink(p)
    # transparent_hugepage=never: with THP on (Debian's default), the guest
    # raises min_free_kbytes to about 5 % of its RAM (khugepaged's
    # recommended value: 48 MiB of a 1 GiB guest), which a 1 GiB guest
    # ballooned to 128 MiB cannot spare: it runs out of memory.
    append = ("console=ttyS0 panic=-1 quiet transparent_hugepage=never "
              "mj=%s head_sha=%s need_mib=%d"
              % (a.mode, a.head_sha, mem_mib - target_mib))
    args = [a.qemu, "-L", a.firmware, "-accel", "tcg", "-machine", "q35",
            "-m", "%dM" % mem_mib, "-smp", "1", "-display", "none",
            "-vga", "none", "-monitor", "none", "-no-reboot", "-nic", "none",
            "-serial", "file:" + serial,
            "-qmp", "unix:%s,server=on,wait=off" % sock,
            "-kernel", a.kernel, "-initrd", a.initrd, "-append", append,
            "-device", "iommu-emul,id=iommu0,addr=0x3",
            "-drive", "if=none,id=d0,file=%s,format=raw,cache=none" % a.disk,
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on,"
                       "iommu_platform=on,addr=0x4",
            "-device", "virtio-balloon-pci,id=balloon0,addr=0x5",
            "-trace", "enable=virtio_balloon_handle_output",
            "-trace", "enable=ram_block_discard_range", "-D", trace]
    if memlock:
        args += ["-overcommit", "mem-lock=on"]
    with open(os.path.join(run, name + ".cmdline"), "w") as f:
        f.write(" ".join(args) + "\n")
    t_start = time.time()
    deadline = t_start + a.timeout
    with open(qlog, "wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    res = {"name": name, "mem_mib": mem_mib, "target_mib": target_mib,
           "memlock": memlock, "during": []}
    qmp = None
    try:
        qmp = QMP(sock, deadline)
        hva, size = ramblock(qmp)
        if size != mem_mib << 20:
            raise VMError("pc.ram is %d bytes, expected %d MiB"
                          % (size, mem_mib))
        state = "boot"
        last_note = 0
        while True:
            if proc.poll() is not None:
                raise VMError("QEMU exited with status %d before the guest "
                              "finished" % proc.returncode)
            if time.time() > deadline:
                raise VMError("the guest did not finish within %d s"
                              % a.timeout)
            lines = serial_lines(serial)
            if state == "boot" and any(ln.startswith("MJ: inflate-now")
                                       for ln in lines):
                res["before"] = measure(qmp, proc.pid, hva, size)
                # in steps, so that the inflation spans several I/O passes
                steps = [(mem_mib - (mem_mib - target_mib) * (i + 1)
                          // STEPS) << 20 for i in range(STEPS)]
                res["t_balloon"] = t_step = time.time()
                qmp.cmd("balloon", value=steps.pop(0))
                state = "inflating"
            elif state == "inflating":
                c = counters(qmp)
                st = proc_status(proc.pid)
                act = qmp.cmd("query-balloon")["actual"]
                if steps and time.time() - t_step >= STEP_S:
                    t_step = time.time()
                    qmp.cmd("balloon", value=steps.pop(0))
                res["during"].append({"t": time.time(), "counters": c,
                                      "balloon": act, **st})
                if time.time() - last_note >= 10:
                    last_note = time.time()
                    say("  ... %s: guest RAM %d MiB (target %d MiB), "
                        "QEMU RSS %s, iommu-emul pins %s, %d mappings"
                        % (name, act >> 20, target_mib, mib(st["VmRSS"]),
                           mib(c["pinned-bytes"]), c["mappings"]))
                if any(ln.startswith("MJ: done") for ln in lines):
                    res["after"] = measure(qmp, proc.pid, hva, size)
                    res["after_thp"] = thp_pages(proc.pid, hva, size,
                                                 res["after"]["present"])
                    break
            elif any(ln.startswith("MJ: done") for ln in lines):
                raise VMError("the guest finished without inflating")
            time.sleep(1 if state == "boot" else 2)
        qmp.cmd("quit")
    except (VMError, OSError, ValueError) as e:
        res["error"] = str(e)
    finally:
        if qmp:
            qmp.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    res["seconds"] = time.time() - t_start
    all_lines = serial_lines(serial)
    res["serial"] = [ln for ln in all_lines if ln.startswith("MJ: ")]
    # for an error message: the guest's last steps and why it stopped
    res["serial_tail"] = res["serial"][-3:] + [
        ln for ln in all_lines
        if re.search(r"Kernel panic|Out of memory|BUG:|Oops", ln)][:4]
    # The baseline's QEMU prints one error per page it fails to discard:
    # keep the first lines and the count only.
    with open(qlog, "rb") as f:
        qtext = f.read().decode("utf-8", "replace").splitlines()
    res["discard_errors"] = sum(1 for ln in qtext if "iscard" in ln)
    if len(qtext) > 40:
        with open(qlog, "w") as f:
            f.write("\n".join(qtext[:20]) + "\n[... %d more lines; %d lines "
                    "mention discard]\n" % (len(qtext) - 20,
                                            res["discard_errors"]))
    res["qemu_log"] = qtext[:5]
    if "error" in res:
        for k in ("before", "after"):
            if k in res:
                res[k].pop("present", None)
        res.pop("after_thp", None)
        return res
    # ballooned pages from the trace (pc.ram offset = gpa below 4 GiB)
    seen = {}
    other = 0
    # pages of pc.ram that a discard (madvise DONTNEED) succeeded on: the
    # trace event fires only on success
    discarded = bytearray(size // PAGE)
    with open(trace, errors="replace") as f:
        for line in f:
            m = re.search(r"ram_block_discard_range pc\.ram@(0x[0-9a-f]+) "
                          r"\+ 0x([0-9a-f]+):.* ret: 0", line)
            if m:
                first = (int(m.group(1), 16) - hva) // PAGE
                n = int(m.group(2), 16) // PAGE
                for p in range(max(first, 0), min(first + n, len(discarded))):
                    discarded[p] = 1
                continue
            m = re.search(r"section name: (\S+) gpa: 0x([0-9a-f]+)", line)
            if not m:
                continue
            gpa = int(m.group(2), 16)
            if m.group(1) != "pc.ram" or gpa >= size:
                other += 1
                continue
            seen[gpa // PAGE] = seen.get(gpa // PAGE, 0) + 1
    os.unlink(trace)          # ~50 bytes per ballooned page
    # The trace does not say which queue a page came from, but a page
    # alternates: inflated first (the balloon starts empty), then deflated
    # (balloon compaction migrates a ballooned page: it inflates the new
    # page and deflates the old one), and so on. An odd count is a page in
    # the balloon now.
    gpas = [p for p, n in seen.items() if n % 2]
    res["deflated"] = len(seen) - len(gpas)
    before, after = res["before"]["present"], res["after"]["present"]
    res["ballooned"] = len(gpas)
    res["ballooned_other"] = other
    res["resident_before"] = sum(before[p] for p in gpas)
    res["present_after"] = sum(after[p] for p in gpas)
    res["returned"] = res["ballooned"] - res["present_after"]
    # for a closer look: the ballooned pages still present (first 4096)
    res["present_after_gpas"] = ["%#x" % (p * PAGE) for p in
                                 sorted(p for p in gpas if after[p])[:4096]]
    # why a ballooned page is present again: the host's khugepaged may
    # collapse a partly ballooned 2 MiB range back into a huge page
    # (max_ptes_none 511 by default), which makes all of it present
    thp = res.pop("after_thp")
    res["present_after_thp"] = (None if thp is None else
                                sum(thp[p] for p in gpas))
    res["discarded"] = sum(discarded[p] for p in gpas)
    # returned, then made present again by khugepaged: QEMU's discard of
    # the page succeeded, yet it is present at the end, in a huge page
    res["recollapsed"] = (0 if thp is None else
                          sum(1 for p in gpas
                              if discarded[p] and after[p] and thp[p]))
    b, a = res["before"]["collapsed"], res["after"]["collapsed"]
    res["khugepaged_collapsed"] = None if b is None or a is None else a - b
    for k in ("before", "after"):
        del res[k]["present"]
    return res


def parse_guest(res):
    g = {"pass": [], "fail": []}
    for ln in res["serial"]:
        m = re.match(r"MJ: (PASS|FAIL) (.*)", ln)
        if m:
            g["pass" if m.group(1) == "PASS" else "fail"].append(m.group(2))
        m = re.match(r"MJ: tput bytes (\d+) centiseconds (\d+)", ln)
        if m and int(m.group(2)) > 0:
            g["tput"] = int(m.group(1)) / (int(m.group(2)) / 100.0) / 1e6
            g["tput_bytes"] = int(m.group(1))
        m = re.match(r"MJ: io passes (\d+) failed (\d+) bytes-per-pass (\d+)",
                     ln)
        if m:
            g["passes"], g["io_failed"] = int(m.group(1)), int(m.group(2))
            g["pass_bytes"] = int(m.group(3))
        m = re.match(r"MJ: inflated (\d+) MiB in ([\d.]+) s", ln)
        if m:
            g["inflated_mib"] = int(m.group(1))
            g["inflate_s"] = float(m.group(2))
        m = re.match(r"MJ: filled (\d+) MiB", ln)
        if m:
            g["filled_mib"] = int(m.group(1))
    return g


def pct(n, d):
    return 100.0 * n / d if d else 0.0


def share(res):
    """% of the ballooned pages not present at the end."""
    return pct(res["returned"], res["ballooned"])


def share_eff(res):
    """% returned, counting those khugepaged made present again after."""
    return pct(res["returned"] + res["recollapsed"], res["ballooned"])


def max_pinned(res):
    return max([d["counters"]["pinned-bytes"] for d in res["during"]] or [0])


def vm_ok(res, g, problems, label):
    """Common checks; appends reasons to problems."""
    if "error" in res:
        problems.append("%s: %s (logs in the run directory)%s%s"
                        % (label, res["error"],
                           "".join("\n  qemu: " + ln
                                   for ln in res["qemu_log"]),
                           "".join("\n  guest: " + ln
                                   for ln in res["serial_tail"])))
        return False
    for f in g["fail"]:
        problems.append("%s: guest check failed: %s" % (label, f))
    if g.get("passes", 0) == 0:
        problems.append("%s: no disk I/O pass completed" % label)
    if g.get("io_failed", 1) != 0:
        problems.append("%s: %s disk I/O passes failed (I/O error or "
                        "checksum mismatch)" % (label, g.get("io_failed")))
    if res["after"]["counters"]["faults"] != 0:
        problems.append("%s: iommu-emul faults = %d, expected 0"
                        % (label, res["after"]["counters"]["faults"]))
    if res["after"]["counters"]["maps"] == 0:
        problems.append("%s: iommu-emul made no mapping: the disk did not "
                        "DMA through it" % label)
    if res["ballooned"] == 0:
        problems.append("%s: no ballooned page in the trace" % label)
    if res["after"]["balloon"] > res["target_mib"] << 20:
        problems.append("%s: the balloon reached %s only, target %d MiB"
                        % (label, mib(res["after"]["balloon"]),
                           res["target_mib"]))
    return not problems


def describe(res, g):
    b, a = res["before"], res["after"]
    ca = a["counters"]
    say("guest: %s MiB, iommu_emul_dma.ko loaded first, virtio-blk "
        "iommu_platform=on translated by iommu-emul"
        % res["mem_mib"])
    if "tput" in g:
        say("disk: O_DIRECT reads at 64 KiB through iommu-emul: %.1f MB/s "
            "(%s, SHA-256 verified)" % (g["tput"], mib(g["tput_bytes"])))
    say("balloon: %d -> %d MiB in %.0f s while the disk I/O ran: %d passes "
        "of %s (read checked, 1 MiB written and read back), %d failed"
        % (res["mem_mib"], a["balloon"] >> 20, g.get("inflate_s", 0),
           g.get("passes", 0), mib(g.get("pass_bytes", 0)),
           g.get("io_failed", 0)))
    say("iommu-emul: maps %d, unmaps %d, mappings now %d, faults %d, "
        "vetoed discards %d, deferred discards %d"
        % (ca["maps"], ca["unmaps"], ca["mappings"], ca["faults"],
           ca["vetoed-discards"], ca["deferred-discards"]))
    if ca["vetoed-discards"]:
        say("  (%d pages were mapped for DMA when the balloon took them: "
            "kept until unmapped, %d of them discarded then)"
            % (ca["vetoed-discards"], ca["deferred-discards"]))
    say("pinned: before inflation %s, during max %s, after %s"
        % (mib(b["counters"]["pinned-bytes"]), mib(max_pinned(res)),
           mib(ca["pinned-bytes"])))
    say("ballooned pages returned to the host (pagemap not present): "
        "%d of %d (%.2f %%; goal >= %.0f %%); %.2f %% of them were "
        "resident before" % (res["returned"], res["ballooned"], share(res),
                             GOAL, pct(res["resident_before"],
                                       res["ballooned"])))
    if res["present_after"]:
        say("  present at the end: %d ballooned pages; %d of them were "
            "returned and made present again by the host's khugepaged "
            "(collapsed into a huge page): %.2f %% returned counting those"
            % (res["present_after"], res["recollapsed"], share_eff(res)))
    say("QEMU RSS: before %s, after %s; VmLck before %s, after %s"
        % (mib(b["VmRSS"]), mib(a["VmRSS"]), mib(b["VmLck"]),
           mib(a["VmLck"])))


def mode_demo(a):
    res = run_vm(a, "demo", a.mem, a.target, False)
    g = parse_guest(res)
    problems = []
    if vm_ok(res, g, problems, "demo VM"):
        describe(res, g)
        if share_eff(res) < GOAL:
            problems.append("only %.2f %% of the ballooned pages went back "
                            "to the host (goal >= %.0f %%)"
                            % (share_eff(res), GOAL))
    say("demo VM: %.0f s" % res["seconds"])
    return res, problems


def mode_test(a):
    # MJ_MEMLOCK=1: the negative control, with -overcommit mem-lock=on
    # the returned check must fail
    res = run_vm(a, "test", a.mem, a.target,
                 os.environ.get("MJ_MEMLOCK") == "1")
    g = parse_guest(res)
    fails = 0

    def check(name, ok, why=""):
        nonlocal fails
        print("%s %s%s" % ("PASS" if ok else "FAIL", name,
                           "" if ok else ": " + why), flush=True)
        fails += not ok

    if "error" in res:
        check("vm", False, res["error"])
        for ln in res["qemu_log"]:
            print("  qemu: " + ln)
        for ln in res["serial_tail"]:
            print("  guest: " + ln)
        return res, ["test VM: " + res["error"]]
    for p in g["pass"]:
        check("guest: " + p, True)
    for f in g["fail"]:
        check("guest: " + f, False, "in the guest")
    ca = res["after"]["counters"]
    check("virtio-blk DMA went through iommu-emul (maps %d)" % ca["maps"],
          ca["maps"] > 0, "no MAP")
    check("no iommu-emul fault", ca["faults"] == 0,
          "%d faults" % ca["faults"])
    n = res["ballooned"]
    check("balloon inflated (%d pages)" % n,
          n >= (a.mem - a.target) * 256 * 0.99,
          "%d pages, expected about %d" % (n, (a.mem - a.target) * 256))
    check("ballooned pages were resident before (%d of %d)"
          % (res["resident_before"], n),
          n > 0 and pct(res["resident_before"], n) >= 90,
          "the fill did not reach them: the figure would mean nothing")
    check("ballooned pages returned to the host: %d of %d not present at "
          "the end (%.2f %%), %d more returned and made present again by "
          "khugepaged (%.2f %%; >= %.0f %%)"
          % (res["returned"], n, share(res), res["recollapsed"],
             share_eff(res), GOAL),
          n > 0 and share_eff(res) >= GOAL, "pagemap shows them present")
    problems = ["%d checks failed" % fails] if fails else []
    return res, problems


def mode_overcommit(a):
    rows = []
    problems = []
    for label, memlock in (("iommu-emul", False),
                           ("mem-lock=on", True)):
        say("%s VM: %d MiB guest, balloon to %d MiB%s"
            % (label, a.mem, a.target,
               ", -overcommit mem-lock=on" if memlock else ""))
        res = run_vm(a, "overcommit-" + ("memlock" if memlock else "iommu"),
                     a.mem, a.target, memlock)
        g = parse_guest(res)
        p = []
        vm_ok(res, g, p, label + " VM")
        problems += p
        say("%s VM: %.0f s%s" % (label, res["seconds"],
                                 "" if not p else " (failed)"))
        rows.append((label, res, g))
    if any("error" in r for _, r, _ in rows):
        return rows, problems
    print(flush=True)
    print("%s: %-44s %16s %16s" % (NAME, "", rows[0][0], rows[1][0]),
          flush=True)

    def row(name, f):
        print("%s: %-44s %16s %16s" % (NAME, name, f(rows[0][1], rows[0][2]),
                                       f(rows[1][1], rows[1][2])), flush=True)

    row("guest RAM / balloon target",
        lambda r, g: "%d/%d MiB" % (r["mem_mib"], r["target_mib"]))
    row("balloon reached", lambda r, g: mib(r["after"]["balloon"]))
    row("QEMU RSS before inflation", lambda r, g: mib(r["before"]["VmRSS"]))
    row("QEMU RSS after", lambda r, g: mib(r["after"]["VmRSS"]))
    row("VmLck before", lambda r, g: mib(r["before"]["VmLck"]))
    row("VmLck after", lambda r, g: mib(r["after"]["VmLck"]))
    row("ballooned pages (trace)", lambda r, g: str(r["ballooned"]))
    row("  migrated by the guest (not counted)",
        lambda r, g: str(r["deflated"]))
    row("  of them resident before inflation",
        lambda r, g: "%.2f %%" % pct(r["resident_before"], r["ballooned"]))
    row("  returned to the host (pagemap)",
        lambda r, g: "%.2f %%" % share(r))
    row("  discarded by QEMU (trace, madvise succeeded)",
        lambda r, g: "%.2f %%" % pct(r["discarded"], r["ballooned"]))
    row("  returned, then present again (khugepaged)",
        lambda r, g: str(r["recollapsed"]))
    row("  returned, counting those",
        lambda r, g: "%.2f %%" % share_eff(r))
    row("  still pinned by iommu-emul (pages, after)",
        lambda r, g: str(r["after"]["counters"]["pinned-pages"]))
    row("pinned by iommu-emul: max during",
        lambda r, g: mib(max_pinned(r)))
    row("discard errors in QEMU's log", lambda r, g: str(r["discard_errors"]))
    row("vetoed / deferred discards",
        lambda r, g: "%d / %d" % (r["after"]["counters"]["vetoed-discards"],
                                  r["after"]["counters"]["deferred-discards"]))
    row("disk I/O passes (failed)",
        lambda r, g: "%d (%d)" % (g.get("passes", 0), g.get("io_failed", 0)))
    row("I/O errors / checksum mismatches",
        lambda r, g: "none" if g.get("io_failed", 1) == 0 and
        not g["fail"] else "YES")
    row("iommu-emul maps / faults",
        lambda r, g: "%d / %d" % (r["after"]["counters"]["maps"],
                                  r["after"]["counters"]["faults"]))
    say()
    s0, s1 = share_eff(rows[0][1]), share_eff(rows[1][1])
    # Every ballooned page is in the denominator, mapped or not, so this
    # is a lower bound of the share of the unmapped ones.
    say("returned share with iommu-emul: %.2f %% (goal >= %.0f %%): %s"
        % (s0, GOAL, "met" if s0 >= GOAL else "NOT met"))
    say("returned share with -overcommit mem-lock=on: %.2f %% "
        "(expected about 0 %%, as VFIO's pin-all)" % s1)
    if s0 < GOAL:
        problems.append("iommu-emul returned %.2f %% of the ballooned "
                        "pages, goal >= %.0f %%" % (s0, GOAL))
    return rows, problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["demo", "overcommit", "test"])
    for o in ("run", "qemu", "firmware", "kernel", "initrd", "disk",
              "head-sha"):
        ap.add_argument("--" + o, required=True)
    ap.add_argument("--mem", type=int, default=1024)
    ap.add_argument("--target", type=int, default=128)
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()
    fn = {"demo": mode_demo, "test": mode_test,
          "overcommit": mode_overcommit}[a.mode]
    res, problems = fn(a)
    with open(os.path.join(a.run, a.mode + ".json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    for p in problems:
        print(NAME + ": error: " + p, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
