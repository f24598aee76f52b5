#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Real-guest benchmark of iommu-emul against intel-iommu and virtio-iommu
# (issue 10, section 2). One guest kernel (Debian's 6.12,
# linux-image-6.12.*+deb12-amd64: CONFIG_VIRTIO_IOMMU=m, ACPI_VIOT) and one
# workload, under TCG on q35 (512 MiB, 1 vCPU), in five configurations:
#   a  no IOMMU
#   b  intel-iommu (intremap=on), intel_iommu=on iommu.strict=1
#   c  virtio-iommu-pci (VIOT), the kernel's default (lazy) DMA mode
#   d  iommu-emul, guest/iommu-emul-dma driver, iommu.strict=1
#   e  iommu-emul,pin-cache=64M, the driver's default (lazy) unmap
# Workload (bench/real-guest/guest-init.sh): virtio-blk-pci
# (disable-legacy=on,iommu_platform=on, cache=none) on a 64 MiB random
# image: the whole disk read with O_DIRECT at 64 KiB and the first 8 MiB at
# 4 KiB, checked against the host's SHA-256 (untimed), then timed
# `dd iflag=direct of=/dev/null` runs of the same; virtio-net-pci
# (iommu_platform=on) on a tap device in a network namespace of the
# script's own: 16 MiB sent to a receiver on the namespace's host side
# (bench/real-guest/host.py), checked there by SHA-256 on every run.
#
# Rounds interleave the configurations (a b c d e, a b c d e, ...); each
# VM does every timed run REPS times; figures are medians over all runs
# of a configuration. Map+unmap rates: iommu-emul's QOM counters (qom-get
# over QMP) and, for virtio-iommu, virtio_iommu_map/virtio_iommu_unmap
# trace events (-trace to a file; only VM c traces), both read just before
# and after each timed workload, divided by its time. Every VM runs under
# a timeout; a VM that times out, crashes, or fails a data check is
# counted as failed for its configuration and its figures are left out.
#
# Usage: bench/real-guest-bench.sh [-r ROUNDS] [-n REPS] [-c "a b c d e"]
#   -r ROUNDS  interleaved rounds (default 3)
#   -n REPS    timed repetitions of each workload in a VM (default 3)
#   -c CONFIGS the configurations to run (default "a b c d e")
#   -t SECS    timeout of one VM (default 180; a VM takes about 60 s)
# Environment: QEMU (default: this repository's build, built if missing),
#   QEMU_FIRMWARE, KVER (default: the newest installed 6.12.*+deb12-amd64
#   kernel with headers, else the candidate apt offers, installed),
#   PIN_CACHE (e's pin-cache size, default 64M), QEMU_ZC_STATE.
# Needs root (packages on a first run, tap devices in a network namespace).

set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export QZC_NAME=real-guest-bench
# shellcheck source=../guest/common.sh
. "$ROOT/guest/common.sh"
say() { qzc_say "$@"; }
die() { qzc_die "$@"; }

ROUNDS=3
REPS=3
CONFIGS="a b c d e"
VM_TIMEOUT=180
while getopts "r:n:c:t:h" o; do
    case $o in
    r) ROUNDS=$OPTARG ;;
    n) REPS=$OPTARG ;;
    c) CONFIGS=$OPTARG ;;
    t) VM_TIMEOUT=$OPTARG ;;
    *) sed -n '3,41p' "$0" | sed 's/^# \{0,1\}//'; [ "$o" = h ] && exit 0; exit 2 ;;
    esac
done
for c in $CONFIGS; do
    case $c in a|b|c|d|e) ;; *) die "unknown configuration '$c' (a b c d e)" ;; esac
done
case "$ROUNDS$REPS$VM_TIMEOUT" in *[!0-9]*) die "-r, -n and -t take numbers" ;; esac
[ "$(id -u)" = 0 ] || die "run as root: the network path needs tap devices in a network namespace"
PIN_CACHE=${PIN_CACHE:-64M}
DISK_MIB=64
BLK4_MIB=8
NET_MIB=16

STATE=$(qzc_state real-guest-bench)
T_START=$(date +%s)

# ---- QEMU ------------------------------------------------------------------
if [ -z "${QEMU:-}" ]; then
    QEMU=$ROOT/build/qemu/build/qemu-system-x86_64
    say "building QEMU (./configure-wrapper.sh build; log $STATE/build.log)"
    "$ROOT/configure-wrapper.sh" build >"$STATE/build.log" 2>&1 ||
        { tail -n 30 "$STATE/build.log" >&2; die "the QEMU build failed"; }
fi
if [ -z "${QEMU_FIRMWARE:-}" ]; then
    QEMU_FIRMWARE=$(dirname "$QEMU")/qemu-bundle/usr/local/share/qemu
    [ -d "$QEMU_FIRMWARE" ] || QEMU_FIRMWARE=$(dirname "$QEMU")/share
fi
[ -x "$QEMU" ] || die "no QEMU binary at $QEMU"
"$QEMU" -device help | grep -q '"iommu-emul"' || die "$QEMU has no iommu-emul device"

# ---- guest kernel: Debian's 6.12 -------------------------------------------
newest_612() {
    local k best=
    for k in /boot/vmlinuz-6.12.*+deb12-amd64; do
        [ -r "$k" ] || continue
        k=${k#/boot/vmlinuz-}
        [ -e "/lib/modules/$k/build/Makefile" ] || continue
        best=$(printf '%s\n%s\n' "$best" "$k" | sort -V | tail -n 1)
    done
    echo "$best"
}
if [ -z "${KVER:-}" ]; then
    KVER=$(newest_612)
    if [ -z "$KVER" ]; then
        # the newest 6.12 image apt offers (a package name, not a guess list)
        pkg=$(apt-cache search --names-only '^linux-image-6\.12\..*\+deb12-amd64$' 2>/dev/null |
              cut -d' ' -f1 | grep -v -- '-unsigned$' | sort -V | tail -n 1) || true
        if [ -z "$pkg" ]; then
            say "no 6.12 kernel in the package lists; running apt-get update"
            apt-get update >"$STATE/apt-update.log" 2>&1 || true
            pkg=$(apt-cache search --names-only '^linux-image-6\.12\..*\+deb12-amd64$' 2>/dev/null |
                  cut -d' ' -f1 | grep -v -- '-unsigned$' | sort -V | tail -n 1) || true
        fi
        [ -n "$pkg" ] || die "apt offers no linux-image-6.12.*+deb12-amd64 (is bookworm-backports or bookworm-updates in the sources? set KVER=)"
        KVER=${pkg#linux-image-}
        say "guest kernel $KVER is not installed: installing it (a few minutes, once)"
    fi
fi
qzc_guest_prereqs "$STATE/apt-install.log"
case "$KVER" in 6.12.*) ;; *) say "warning: guest kernel $KVER is not a 6.12 kernel" ;; esac
command -v ip >/dev/null || qzc_apt_install "$STATE/apt-install.log" iproute2
command -v python3 >/dev/null || die "python3 is needed"

# ---- module and initramfs --------------------------------------------------
B=$STATE/build-$KVER
mkdir -p "$B"
cp "$ROOT"/guest/iommu-emul-dma/{Kbuild,Makefile} "$ROOT"/guest/iommu-emul-dma/*.[ch] "$B"/
say "building iommu_emul_dma.ko for $KVER"
make -C "$B" KVER="$KVER" >"$B/make.log" 2>&1 ||
    { cat "$B/make.log" >&2; die "module build failed"; }
I=$B/initramfs
rm -rf "$I"
mkdir -p "$I"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$QZC_BUSYBOX" "$I/bin/busybox"
cp "$B/iommu_emul_dma.ko" "$I/"
cp "$HERE/real-guest/guest-init.sh" "$I/init"
chmod +x "$I/init"
: >"$I/lib/modules/order"
add_module() { # add_module NAME [order]: NAME and its dependencies
    local deps kind path m
    deps=$(modprobe --show-depends -S "$KVER" "$1" 2>&1) ||
        die "kernel $KVER has no module $1: $deps"
    while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        m=$(basename "$path")
        m=${m%%.ko*}
        m=${m//-/_}
        [ -e "$I/lib/modules/$m.ko" ] && continue
        case "$path" in
        *.xz) xz -dc "$path" >"$I/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$path" >"$I/lib/modules/$m.ko" ;;
        *) cp "$path" "$I/lib/modules/$m.ko" ;;
        esac
        if [ "${2:-}" = order ]; then echo "$m" >>"$I/lib/modules/order"; fi
    done <<<"$deps"
    return 0
}
add_module virtio_iommu
for m in virtio_pci virtio_blk virtio_net; do add_module $m order; done
INITRD=$B/initramfs.gz
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) >"$INITRD"

# ---- run directory, disk, network ------------------------------------------
qzc_prune "$STATE" run. 4
RUN=$(mktemp -d "$STATE/run.XXXXXX")
say "run directory $RUN"
DISK=$RUN/disk.img
head -c ${DISK_MIB}M /dev/urandom >"$DISK"
SHA64=$(sha256sum "$DISK" | cut -d' ' -f1)
SHA4=$(head -c ${BLK4_MIB}M "$DISK" | sha256sum | cut -d' ' -f1)

NS_PID=
RCV_PID=
VM_PIDS=()
cleanup() {
    local p
    for p in ${VM_PIDS[@]+"${VM_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
    [ -n "$RCV_PID" ] && kill "$RCV_PID" 2>/dev/null
    [ -n "$NS_PID" ] && kill "$NS_PID" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# QEMU is built without user networking: a tap device in a network
# namespace of this script's own (10.0.2.2 on the host side), with the
# receiver in it; nothing leaves the namespace.
unshare -n sleep 14400 &
NS_PID=$!
for _ in $(seq 50); do
    [ "$(readlink "/proc/$NS_PID/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ] && break
    sleep 0.1
done
NSRUN=(nsenter -t "$NS_PID" -n)
"${NSRUN[@]}" sh -c '
    set -e
    ip link set lo up
    ip tuntap add dev tapb mode tap
    ip addr add 10.0.2.2/24 dev tapb
    ip link set tapb up' >"$RUN/net.log" 2>&1 ||
    { cat "$RUN/net.log" >&2; die "cannot set up the tap device in a network namespace"; }
"${NSRUN[@]}" python3 "$HERE/real-guest/host.py" receiver "$RUN/rcv.port" "$RUN/rcv.log" \
    >"$RUN/rcv.err" 2>&1 &
RCV_PID=$!
for _ in $(seq 100); do [ -s "$RUN/rcv.port" ] && break; sleep 0.1; done
[ -s "$RUN/rcv.port" ] || { cat "$RUN/rcv.err" >&2; die "the receiver did not start"; }
PORT=$(cat "$RUN/rcv.port")

# ---- one VM ----------------------------------------------------------------
# vm CFG ROUND: boots it, lets host.py drive it, leaves
# $RUN/CFG-ROUND.{log.txt,snaps,qemu.log} and returns 0 if it ended well
vm() {
    local cfg=$1 round=$2 n=$1-$2
    local log=$RUN/$n.log qmp=$RUN/$n.qmp ctl=$RUN/$n.ctl
    local machine=q35 append="" load=none dev=() trace=() rc=0 qpid cpid
    case $cfg in
    b) machine=q35,kernel-irqchip=split
       dev=(-device "intel-iommu,intremap=on")
       append="intel_iommu=on iommu.strict=1" ;;
    c) dev=(-device "virtio-iommu-pci,id=iommu0")
       load=virtio_iommu
       trace=(-trace virtio_iommu_map -trace virtio_iommu_unmap -D "$RUN/$n.trace") ;;
    d) dev=(-device "iommu-emul,id=iommu0")
       load=iommu_emul_dma
       append="iommu.strict=1" ;;
    e) dev=(-device "iommu-emul,id=iommu0,pin-cache=$PIN_CACHE")
       load=iommu_emul_dma ;;
    esac
    rm -f "$qmp" "$ctl"
    "${NSRUN[@]}" timeout -k 10 "$VM_TIMEOUT" "$QEMU" -L "$QEMU_FIRMWARE" \
        -accel tcg -machine "$machine" -m 512M -smp 1 \
        -display none -vga none -monitor none -no-reboot \
        -chardev "socket,id=ctl,path=$ctl,server=on,wait=off" \
        -serial "file:$log" -serial chardev:ctl \
        -qmp "unix:$qmp,server=on,wait=off" \
        "${dev[@]}" ${trace[@]+"${trace[@]}"} \
        -kernel "$VMLINUZ" -initrd "$INITRD" \
        -append "console=ttyS0 panic=-1 quiet $append cfg=$cfg load=$load sha64=$SHA64 sha4=$SHA4 reps=$REPS net_port=$PORT net_mib=$NET_MIB blk4_mib=$BLK4_MIB" \
        -drive "if=none,id=d0,file=$DISK,format=raw,cache=none" \
        -device virtio-blk-pci,drive=d0,disable-legacy=on,iommu_platform=on \
        -netdev tap,id=n0,ifname=tapb,script=no,downscript=no \
        -device virtio-net-pci,netdev=n0,disable-legacy=on,iommu_platform=on,romfile= \
        </dev/null >"$RUN/$n.qemu.log" 2>&1 &
    qpid=$!
    VM_PIDS=("$qpid")
    local perf=
    # PROFILE=CFG: perf record of QEMU over the 64 KiB window of that configuration
    if [ "${PROFILE:-}" = "$cfg" ] && command -v perf >/dev/null; then
        sleep 0.5
        perf=$RUN/$n.perf:$(pgrep -P "$qpid" -f qemu-system | head -n 1)
    fi
    RG_PERF=$perf python3 "$HERE/real-guest/host.py" control "$log" "$qmp" "$ctl" "$RUN/$n.snaps" \
        "$VM_TIMEOUT" ${trace[@]+"$RUN/$n.trace"} >>"$RUN/$n.snaps" 2>&1 &
    cpid=$!
    VM_PIDS+=("$cpid")
    local qrc=0
    wait "$cpid" || rc=1
    wait "$qpid" || qrc=$?
    echo "$qrc" >"$RUN/$n.qemu-exit"
    [ "$qrc" = 0 ] || rc=1
    VM_PIDS=()
    tr -d '\r' <"$log" >"$log.txt" 2>/dev/null || : >"$log.txt"
    grep -q '^bench: done' "$log.txt" || rc=1
    grep -q '^bench: FAIL kernel-log' "$log.txt" && rc=1
    return $rc
}

# ---- the rounds ------------------------------------------------------------
R=$RUN/results.txt
: >"$R"
say "guest kernel $KVER; configurations: $CONFIGS; $ROUNDS rounds, $REPS runs per workload and VM; VM timeout ${VM_TIMEOUT}s"
for round in $(seq "$ROUNDS"); do
    for cfg in $CONFIGS; do
        t0=$(date +%s)
        if vm "$cfg" "$round"; then
            # the VM ended well; a workload whose data check failed is
            # left out (and counted), the others are kept
            L=$RUN/$cfg-$round.log.txt
            skip='^$'
            grep -q '^bench: FAIL blk' "$L" && skip="$skip|^blk"
            grep -q '^bench: FAIL net' "$L" && skip="$skip|^net"
            sed -n 's/^bench: result //p' "$L" | grep -Ev "$skip" | sed "s/^/$cfg $round /" >>"$R" || true
            sed -n "s/^bench: drv /$cfg $round drv /p" "$L" >>"$R"
            sed "s/^snap /$cfg $round snap /" "$RUN/$cfg-$round.snaps" | grep " snap " >>"$R" || true
            why=$(grep -m1 '^bench: FAIL' "$L" | sed 's/^bench: //' | head -c 160) || true
            if [ -n "$why" ]; then
                echo "$cfg vm-partial $round $why" >>"$R"
                st="ok, but a workload failed and is left out: $why"
            else
                echo "$cfg vm-ok $round" >>"$R"
                st=ok
            fi
        else
            why=$(grep -m1 -E '^bench: FAIL|^error' "$RUN/$cfg-$round.log.txt" "$RUN/$cfg-$round.snaps" 2>/dev/null |
                  sed 's/^[^:]*://' | head -c 160) || true
            case $(cat "$RUN/$cfg-$round.qemu-exit" 2>/dev/null) in
            124|137) why="timed out after ${VM_TIMEOUT} s${why:+, first: $why}" ;;
            esac
            [ -n "$why" ] || why="no 'bench: done' (crash? tail in $RUN/$cfg-$round.log.txt)"
            echo "$cfg vm-failed $round $why" >>"$R"
            st="FAILED: $why"
        fi
        say "round $round/$ROUNDS config $cfg: $st ($(($(date +%s) - t0)) s)"
    done
done

# ---- figures ---------------------------------------------------------------
python3 - "$R" "$CONFIGS" "$PIN_CACHE" <<'EOF'
import statistics, sys
from collections import defaultdict

path, configs, pin_cache = sys.argv[1], sys.argv[2].split(), sys.argv[3]
names = {"a": "no IOMMU", "b": "intel-iommu strict", "c": "virtio-iommu",
         "d": "iommu-emul strict", "e": "iommu-emul pin-cache=%s lazy" % pin_cache}
runs = defaultdict(list)          # (cfg, workload) -> [MB/s]
vms = defaultdict(lambda: [0, 0, [], 0])  # ok, failed, why, ok but a workload failed
snaps = defaultdict(lambda: defaultdict(dict))  # (cfg, round) -> snap -> key -> value
times = defaultdict(float)        # (cfg, round, workload) -> seconds
ok_rounds = defaultdict(set)
for line in open(path):
    f = line.split()
    if len(f) < 3:
        continue
    cfg = f[0]
    if f[1] == "vm-ok":
        vms[cfg][0] += 1
        ok_rounds[cfg].add(f[2])
    elif f[1] == "vm-partial":
        vms[cfg][3] += 1
        ok_rounds[cfg].add(f[2])
        vms[cfg][2].append("round %s (workload left out): %s" % (f[2], " ".join(f[3:])))
    elif f[1] == "vm-failed":
        vms[cfg][1] += 1
        vms[cfg][2].append("round %s: %s" % (f[2], " ".join(f[3:])))
    elif f[2] in ("snap", "drv"):
        if len(f) >= 6:
            snaps[(cfg, f[1])][f[3]][f[4]] = float(f[5])
    elif len(f) >= 5:
        rnd, wl, nbytes, cs = f[1], f[2], int(f[3]), int(f[4])
        times[(cfg, rnd, wl)] += cs / 100.0
        if cs > 0:
            runs[(cfg, wl)].append(nbytes / (cs / 100.0) / 1e6)

def med(v):
    return statistics.median(v) if v else None

def fmt(x, p=1):
    return "-" if x is None else "%.*f" % (p, x)

wls = [("blk64", "virtio-blk 64 KiB O_DIRECT read"),
       ("blk4", "virtio-blk 4 KiB O_DIRECT read"),
       ("net", "virtio-net TX to host receiver")]
win = {"blk64": ("blk64-start", "blk64-end"), "blk4": ("blk64-end", "blk4-end"),
       "net": ("net-start", "net-end")}
print()
print("Throughput, MB/s (10^6 bytes/s): median over all runs of the configuration,")
print("ratio to (a); [runs]")
hdr = "%-34s" % "workload" + "".join("%20s" % ("(%s)" % c) for c in configs)
print(hdr)
ratios = {}
for wl, title in wls:
    base = med(runs[("a", wl)])
    row = "%-34s" % title
    for c in configs:
        m = med(runs[(c, wl)])
        r = m / base if (m is not None and base) else None
        ratios[(c, wl)] = r
        row += "%20s" % ("%s (%s) [%d]" % (fmt(m), fmt(r, 2), len(runs[(c, wl)])))
    print(row)
print()
print("VMs per configuration: ok / ok but one workload failed its data check (that")
print("workload's figures left out) / failed (timed out, crashed, kernel oops: all left out)")
for c in configs:
    ok, bad, why, part = vms[c]
    print("  (%s) %-30s %d ok, %d workload failed, %d failed" % (c, names[c], ok, part, bad))
    for w in why:
        print("        " + w)

# map+unmap operations per second in each timed window
def rate(c, wl, over=False, dma=False):
    out = []
    s, e = win[wl]
    for rnd in sorted(ok_rounds[c]):
        sn = snaps[(c, rnd)]
        if s not in sn or e not in sn:
            continue
        t = times[(c, rnd, wl)]
        if t <= 0:
            continue
        if c == "c":
            ops = (sn[e]["trace-map"] + sn[e]["trace-unmap"]
                   - sn[s]["trace-map"] - sn[s]["trace-unmap"])
        else:
            ops = sn[e]["maps"] + sn[e]["unmaps"] - sn[s]["maps"] - sn[s]["unmaps"]
            if dma:
                ops += 2 * (sn[e].get("reuses", 0) - sn[s].get("reuses", 0))
        if over:
            ta = med([times[k] for k in times if k[0] == "a" and k[2] == wl
                      and k[1] in ok_rounds["a"]])
            if ta is None or t <= ta:
                continue
            out.append(ops / (t - ta))
        else:
            out.append(ops / t)
    return med(out)

print()
print("Map+unmap operations per second during the timed runs (median per VM window;")
print("iommu-emul: QOM maps+unmaps; virtio-iommu: virtio_iommu_map/unmap trace events),")
print("ratio to (c):")
mu = {}
for wl, title in wls:
    row = "  %-32s" % title
    rc = rate("c", wl) if "c" in configs else None
    for c in [x for x in ("c", "d", "e") if x in configs]:
        r = rate(c, wl)
        mu[(c, wl)] = (r / rc) if (r is not None and rc) else None
        row += "  (%s) %s/s%s" % (c, fmt(r, 0),
                                  "" if c == "c" else " (%s)" % fmt(mu[(c, wl)], 2))
    print(row)

reused = {}
for c in ("d", "e"):
    for rnd in ok_rounds[c]:
        sn = snaps[(c, rnd)]
        if "blk64-start" in sn and "net-end" in sn:
            reused[c] = reused.get(c, 0) + (sn["net-end"].get("reuses", 0)
                                            - sn["blk64-start"].get("reuses", 0))
if any(reused.values()):
    print()
    print("iommu_emul_dma took back queued UNMAPs (reuse=1: a map of the same pages,")
    print("device and permissions with no command): %s MAPs over the timed windows;"
          % ", ".join("(%s) %d" % (c, reused[c]) for c in sorted(reused)))
    print("DMA-API map+unmap operations per second (QOM maps+unmaps + 2 x reuses), ratio to (c):")
    for wl, title in wls:
        row = "  %-32s" % title
        rc = rate("c", wl) if "c" in configs else None
        for c in [x for x in ("d", "e") if x in configs]:
            r = rate(c, wl, dma=True)
            x = (r / rc) if (r is not None and rc) else None
            mu[(c, wl, "dma")] = x
            row += "  (%s) %s/s (%s)" % (c, fmt(r, 0), fmt(x, 2))
        print(row)

print()
print("The same operations per second of time added to (a)'s (ops / (t - t(a)), t(a) the")
print("median window of (a)): the IOMMU's cost per operation, guest and host together:")
for wl, title in wls:
    row = "  %-32s" % title
    rc = rate("c", wl, True) if "c" in configs else None
    for c in [x for x in ("c", "d", "e") if x in configs]:
        r = rate(c, wl, True)
        x = (r / rc) if (r is not None and rc) else None
        mu[(c, wl, "over")] = x
        row += "  (%s) %s/s%s" % (c, fmt(r, 0), "" if c == "c" else " (%s)" % fmt(x, 2))
    print(row)
ra, rc_ = ratios.get(("a", "blk64")), ratios.get(("c", "blk64"))
if ra and rc_:
    print("  (ceiling of the first table's ratio at 64 KiB: an IOMMU costing nothing would")
    print("   reach (a)/(c) = %.2f x virtio-iommu's rate)" % (ra / rc_))

# pin cache: counters over the timed windows of (e)
print()
print("Pin cache of (e), counter differences over the timed windows (all ok VMs summed):")
hits_zero_syscalls = None
clean = [0, 0, 0]                 # windows with hits and no misses: count, hits, syscalls
for wl, title in wls:
    s, e = win[wl]
    tot = defaultdict(float)
    n = 0
    for rnd in sorted(ok_rounds["e"]):
        sn = snaps[("e", rnd)]
        if s not in sn or e not in sn:
            continue
        n += 1
        d = {k: sn[e][k] - sn[s][k] for k in ("pin-cache-hits", "pin-cache-misses",
             "mlock-calls", "munlock-calls", "maps", "unmaps")}
        for k in d:
            tot[k] += d[k]
        if d["pin-cache-hits"] > 0 and d["pin-cache-misses"] == 0:
            clean[0] += 1
            clean[1] += d["pin-cache-hits"]
            clean[2] += d["mlock-calls"] + d["munlock-calls"]
    if not n:
        continue
    print("  %-32s hits %d, misses %d, mlock calls %d, munlock calls %d, maps %d (%d VMs)"
          % (title, tot["pin-cache-hits"], tot["pin-cache-misses"], tot["mlock-calls"],
             tot["munlock-calls"], tot["maps"], n))
if clean[0]:
    print("  windows of one VM with hits and no miss: %d, with %d hits and %d mlock+munlock calls"
          % tuple(clean))
    hits_zero_syscalls = (clean[2] == 0, clean[2], "%d windows, %d hits" % (clean[0], clean[1]))
if "e" in configs:
    for rnd in sorted(ok_rounds["e"]):
        sn = snaps[("e", rnd)]
        if "net-end" in sn:
            print("  VM round %s at the end: pinned-pages %d, faults %d"
                  % (rnd, sn["net-end"]["pinned-pages"], sn["net-end"]["faults"]))
            break

print()
print("Goals:")
def goal(text, ok, fig):
    st = "not measured" if ok is None else ("met" if ok else "MISSED")
    print("  %-58s %-44s %s" % (text, fig, st))
r_e = ratios.get(("e", "blk64"))
goal("(e) >= 0.90 x (a), 64 KiB reads", r_e is not None and r_e >= 0.90 if r_e is not None else None,
     "(e) = %s x (a)" % fmt(r_e, 2))
for o in ("b", "c"):
    r_o = ratios.get((o, "blk64"))
    ok = None if (r_e is None or r_o is None) else r_e > r_o
    goal("(e) ahead of (%s) %s, 64 KiB reads" % (o, names[o]), ok,
         "(e) %s x vs (%s) %s x" % (fmt(r_e, 2), o, fmt(r_o, 2)))
for c in ("d", "e"):
    m = mu.get((c, "blk64"))
    goal("(%s) map+unmap rate >= 3 x virtio-iommu (64 KiB window)" % c,
         None if m is None else m >= 3.0, "(%s) = %s x (c)" % (c, fmt(m, 2)))
for c in ("d", "e"):
    m = mu.get((c, "blk64", "dma"))
    if m is not None and reused.get(c):
        goal("  same, DMA-API operations (reuses counted)", m >= 3.0,
             "(%s) = %s x (c)" % (c, fmt(m, 2)))
for c in ("d", "e"):
    m = mu.get((c, "blk64", "over"))
    goal("  same, per second of added time (second table)",
         None if m is None else m >= 3.0, "(%s) = %s x (c)" % (c, fmt(m, 2)))
if hits_zero_syscalls is None:
    goal("pin-cache hit costs no system call", None,
         "no window with hits and no misses")
else:
    goal("pin-cache hit costs no system call", hits_zero_syscalls[0],
         "%d mlock+munlock calls in a hits-only window (%s)"
         % (hits_zero_syscalls[1], hits_zero_syscalls[2]))
EOF
say "raw results: $R; logs in $RUN"
say "wall time $(( $(date +%s) - T_START )) s; load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
