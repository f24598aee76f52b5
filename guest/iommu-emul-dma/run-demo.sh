#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Unmodified PCI drivers through iommu-emul, in TCG VMs (q35, 512 MiB).
#
# Builds iommu_emul_dma.ko against the guest kernel, packs a busybox
# initramfs with it and the kernel's own virtio / e1000e modules, and boots:
#
#   lazy VM   (default unmap mode): virtio-blk (iommu_platform=on, O_DIRECT
#             reads of the whole disk at 64 KiB and 4 KiB checked against
#             the host file's SHA-256, a write read back), virtio-net and
#             e1000e (HTTP download and upload through QEMU's user network,
#             checked on both sides), the edu self-test (coherent,
#             streaming and sg DMA land; a DMA_TO_DEVICE mapping is
#             read-only; a page whose mapping was removed is not reached
#             and the fault is recorded), rmmod refused while mappings are
#             live, PCI remove + rescan, rmmod + insmod;
#   strict VM (iommu.strict=1 on the kernel command line): virtio-blk,
#             the edu self-test (an unmapped page is unreachable as soon
#             as dma_unmap returns), then passthrough=1.
#
# It prints one PASS/FAIL line per check and iommu-emul's QOM counters
# (qom-get over QMP), and exits 0 only if every check passed.
#
#   run-demo.sh                 both VMs
#   run-demo.sh lazy|strict     one of them
#   run-demo.sh bench [N]       throughput: N (default 3) VMs each of no
#                               IOMMU, lazy and strict, interleaved; dd
#                               O_DIRECT of 128 MiB at 64 KiB and 16 MiB at
#                               4 KiB, 3 runs per VM; prints the medians,
#                               iommu-emul's and the driver's counters
#
# Environment:
#   QEMU          qemu-system-x86_64 (default build/qemu/build/qemu-system-x86_64)
#   QEMU_FIRMWARE -L directory (default the build's qemu-bundle share dir)
#   KVER          guest kernel release (default: the one linux-image-amd64
#                 points at; installed with its headers when missing, as root)
#   DEMO_TIMEOUT  seconds one VM may run (default 600)
#   IOMMU_PROPS   extra iommu-emul properties, e.g. ",bus-addr=gpa"
#   IED_ARGS      extra iommu_emul_dma.ko parameters, e.g. "use_msix=0"
#   GUEST_RAM     "shm": guest RAM from a file in /dev/shm (4 KiB host
#                 pages, scattered: in hpa mode multi-page MAPs then meet
#                 NOT_CONTIGUOUS); default anonymous memory
#   BENCH_CONFIGS bench: the configurations (default "none lazy strict";
#                 also lazy-readhead, strict-readhead: read_head=1)
#   QEMU_ZC_STATE state root (default build/state of this repository);
#                 builds, initramfs and run logs go to
#                 $QEMU_ZC_STATE/iommu-emul-dma

set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NAME=iommu-emul-dma/run-demo

say() { echo "$NAME: $*"; }
die() { echo "$NAME: error: $*" >&2; exit 1; }
# shellcheck source=guest/common.sh
QZC_NAME=$NAME
. "$HERE/../common.sh"
trap 'echo "$NAME: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

what=${1:-all}
case "$what" in
all|lazy|strict|bench) ;;
-h|--help) sed -n '3,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "$NAME: unknown argument '$what' (all, lazy, strict, bench [N])" >&2; exit 2 ;;
esac
bench_vms=${2:-3}
BENCH_CONFIGS=${BENCH_CONFIGS:-none lazy strict}

QEMU=${QEMU:-$ROOT/build/qemu/build/qemu-system-x86_64}
if [ -z "${QEMU_FIRMWARE:-}" ]; then
    QEMU_FIRMWARE=$(dirname "$QEMU")/qemu-bundle/usr/local/share/qemu
    [ -d "$QEMU_FIRMWARE" ] || QEMU_FIRMWARE=$(dirname "$QEMU")/share
fi
DEMO_TIMEOUT=${DEMO_TIMEOUT:-600}
STATE=${QEMU_ZC_STATE:-$ROOT/build/state}/iommu-emul-dma
mkdir -p "$STATE" || die "cannot create the state directory $STATE"
STATE=$(cd "$STATE" && pwd)

[ -x "$QEMU" ] || die "no QEMU binary at $QEMU (build it with ./configure-wrapper.sh build, or set QEMU=)"
[ -d "$QEMU_FIRMWARE" ] || die "no firmware directory $QEMU_FIRMWARE (set QEMU_FIRMWARE=)"
command -v python3 >/dev/null || die "python3 is needed (QMP client, HTTP server)"

# ---- packages --------------------------------------------------------------

default_kver() {
    local dep k
    dep=$(dpkg-query -W -f='${Status} ${Depends}' linux-image-amd64 2>/dev/null) || return 0
    case "$dep" in "install ok installed "*) ;; *) return 0 ;; esac
    k=$(echo "${dep#install ok installed }" | sed -n -E 's/^linux-image-([^ ,(]+).*/\1/p')
    if [ -n "$k" ] && [ -r "/boot/vmlinuz-$k" ] && [ -e "/lib/modules/$k/build/Makefile" ]; then
        echo "$k"
    fi
}

pkgs=()
busybox=
for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then busybox=$b; break; fi
done
[ -n "$busybox" ] || pkgs+=(busybox-static)
for c in cpio:cpio make:make gcc:gcc xz:xz-utils modprobe:kmod ip:iproute2; do
    command -v "${c%%:*}" >/dev/null || pkgs+=("${c#*:}")
done
if [ -n "${KVER:-}" ]; then
    [ -r "/boot/vmlinuz-$KVER" ] || pkgs+=("linux-image-$KVER")
    [ -e "/lib/modules/$KVER/build/Makefile" ] || pkgs+=("linux-headers-$KVER")
else
    KVER=$(default_kver)
    [ -n "$KVER" ] || pkgs+=(linux-image-amd64 linux-headers-amd64)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "$NAME: missing packages; run as root, or install them with:" >&2
        echo "  sudo apt-get install --no-install-recommends ${pkgs[*]}" >&2
        exit 2
    fi
    log=$STATE/apt-install.log
    say "installing ${pkgs[*]} (log: $log)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "${pkgs[@]}" >"$log" 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        { apt-get update &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
              --no-install-recommends "${pkgs[@]}"; } >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; die "apt-get install ${pkgs[*]} failed (log: $log)"; }
    fi
    [ -n "$KVER" ] || KVER=$(default_kver)
    [ -n "$busybox" ] || busybox=/bin/busybox
fi
[ -n "$KVER" ] || die "no guest kernel: linux-image-amd64 and linux-headers-amd64 are not both installed (set KVER=)"
VMLINUZ=/boot/vmlinuz-$KVER
[ -r "$VMLINUZ" ] || die "cannot read $VMLINUZ"
[ -e "/lib/modules/$KVER/build/Makefile" ] || die "no headers for $KVER"
[ -x "$busybox" ] || die "no static busybox"

# ---- module ----------------------------------------------------------------

B=$STATE/build-$KVER
mkdir -p "$B"
cp "$HERE"/Kbuild "$HERE"/Makefile "$HERE"/*.[ch] "$B"/
say "building iommu_emul_dma.ko for $KVER in $B"
make -C "$B" KVER="$KVER" W=1 >"$B/make.log" 2>&1 ||
    { cat "$B/make.log" >&2; die "module build failed"; }
if grep -E 'warning:|error:' "$B/make.log" >&2; then
    die "the module builds with warnings (see $B/make.log)"
fi

# ---- initramfs -------------------------------------------------------------

I=$B/initramfs
rm -rf "$I"
mkdir -p "$I"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$I/bin/busybox"
cp "$B/iommu_emul_dma.ko" "$I/"
cp "$HERE/guest-init.sh" "$I/init"
chmod +x "$I/init"
: >"$I/lib/modules/order"
# the kernel's own drivers, with what they need, in load order
qzc_add_modules "$I" virtio_pci virtio_blk virtio_net e1000e nvme
INITRD=$B/initramfs.gz
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) >"$INITRD"

# ---- runs ------------------------------------------------------------------

# keep the newest 5 run directories (none on a first run)
old=()
for d in "$STATE"/run.*; do [ -d "$d" ] && old+=("$d"); done
if [ ${#old[@]} -gt 5 ]; then
    while read -r d; do rm -rf "$d"; done < <(ls -dt "${old[@]}" | tail -n +6)
fi
RUN=$(mktemp -d "$STATE/run.XXXXXX")
say "run directory $RUN"

HTTP_PID=
QEMU_PID=
NS_PID=
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null
    [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null
    [ -n "$NS_PID" ] && kill "$NS_PID" 2>/dev/null
    return 0
}
trap cleanup EXIT

# The network checks need a peer for the guest's NICs. QEMU is built
# without user networking, so they get tap devices in a network namespace
# of this script's own (root only), holding 10.0.2.2 (virtio-net) and
# 10.0.3.2 (e1000e) and the HTTP helper; nothing leaves the namespace.
NSRUN=()
net_setup() {
    local why
    if [ "$(id -u)" != 0 ]; then
        NET_SKIP="not root: no network namespace for tap devices"
        return 1
    fi
    unshare -n sleep 7200 &
    NS_PID=$!
    for _ in $(seq 50); do
        [ "$(readlink "/proc/$NS_PID/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ] && break
        sleep 0.1
    done
    NSRUN=(nsenter -t "$NS_PID" -n)
    if ! why=$("${NSRUN[@]}" sh -c '
            set -e
            ip link set lo up
            ip tuntap add dev tapv mode tap
            ip tuntap add dev tape mode tap
            ip addr add 10.0.2.2/24 dev tapv
            ip addr add 10.0.3.2/24 dev tape
            ip link set tapv up
            ip link set tape up' 2>&1); then
        NET_SKIP="cannot set up tap devices in a network namespace: $why"
        kill "$NS_PID" 2>/dev/null
        NS_PID=
        NSRUN=()
        return 1
    fi
    return 0
}

COUNTERS="mappings pinned-pages maps unmaps faults invalidations"
RAM_ARGS=(-machine q35)
if [ "${GUEST_RAM:-}" = shm ]; then
    # a directory: QEMU creates and at once unlinks its file there
    RAM_ARGS=(-object memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm,share=off
              -machine q35,memory-backend=ram0)
fi

# vm NAME APPEND IOMMU(0/1) NET(0/1): boots one VM, waits for "demo: done",
# prints the counters, quits. The serial log is $RUN/NAME.log.
vm() {
    local name=$1 append=$2 iommu=$3 net=$4 log=$RUN/$1.log qmp=$RUN/$1.qmp
    local args=() t=0 rc=0
    args=(-L "$QEMU_FIRMWARE" -accel tcg -m 512M -smp 1
          -display none -vga none -monitor none -no-reboot
          "${RAM_ARGS[@]}"
          -serial "file:$log" -qmp "unix:$qmp,server=on,wait=off"
          -kernel "$VMLINUZ" -initrd "$INITRD"
          -append "console=ttyS0 panic=-1 quiet $append"
          -drive "if=none,id=d0,file=$DISK,format=raw,cache=none"
          -device virtio-blk-pci,drive=d0,disable-legacy=on,iommu_platform=on,addr=0x4
          -drive "if=none,id=d1,file=$NVME,format=raw,cache=none"
          -device nvme,drive=d1,serial=iedtest,addr=0x8)
    # a second edu behind a conventional PCI bridge: its requester is the
    # bridge's
    [ "$iommu" = 1 ] && args+=(-device "iommu-emul,id=iommu0,addr=0x3$PIN_PROPS${IOMMU_PROPS:-}"
                               -device "edu,addr=0x7$EDU_PROPS"
                               -device pci-bridge,id=br1,chassis_nr=2,addr=0xa
                               -device "edu,bus=br1,addr=0x1$EDU_PROPS")
    # an empty PCIe root port and a drive for the guest-requested hot-plug
    [ -n "${HPDISK:-}" ] && args+=(-device pcie-root-port,id=rp1,chassis=1,addr=0x9
                                   -drive "if=none,id=d2,file=$HPDISK,format=raw,cache=none")
    if [ "$net" = 1 ]; then
        args+=(-netdev tap,id=n0,ifname=tapv,script=no,downscript=no
               -device virtio-net-pci,netdev=n0,disable-legacy=on,iommu_platform=on,addr=0x5,romfile=
               -netdev tap,id=n1,ifname=tape,script=no,downscript=no
               -device e1000e,netdev=n1,addr=0x6,romfile=)
    else
        args+=(-nic none)
    fi
    local pre=()
    [ "$net" = 1 ] && pre=("${NSRUN[@]}")
    "${pre[@]}" timeout -k 10 "$DEMO_TIMEOUT" "$QEMU" "${args[@]}" </dev/null >"$RUN/$name.qemu.log" 2>&1 &
    QEMU_PID=$!
    local added=0 deleted=0
    while ! grep -q '^demo: done' "$log" 2>/dev/null; do
        if ! kill -0 "$QEMU_PID" 2>/dev/null; then
            rc=1
            break
        fi
        # the guest asks for the hot-plug steps (guest-init.sh)
        if [ $added = 0 ] && grep -q '^demo: request device_add' "$log"; then
            added=1
            python3 "$HERE/host-helper.py" qmp "$qmp" exec device_add \
                '{"driver": "virtio-blk-pci", "id": "hp0", "bus": "rp1", "drive": "d2",
                  "disable-legacy": "on", "iommu_platform": true}' \
                >>"$RUN/$name.hotplug" 2>&1 || echo "device_add failed" >>"$RUN/$name.hotplug"
        fi
        if [ $deleted = 0 ] && grep -q '^demo: request device_del' "$log"; then
            deleted=1
            python3 "$HERE/host-helper.py" qmp "$qmp" exec device_del '{"id": "hp0"}' \
                >>"$RUN/$name.hotplug" 2>&1 || echo "device_del failed" >>"$RUN/$name.hotplug"
        fi
        sleep 1
        t=$((t + 1))
    done
    tr -d '\r' <"$log" >"$log.txt" 2>/dev/null || : >"$log.txt"
    if [ "$rc" = 0 ]; then
        if [ "$iommu" = 1 ]; then
            python3 "$HERE/host-helper.py" qmp "$qmp" qom-get /machine/peripheral/iommu0 \
                $COUNTERS >"$RUN/$name.counters" 2>&1 ||
                echo "qom-get failed: $(cat "$RUN/$name.counters")" >"$RUN/$name.counters"
        fi
        python3 "$HERE/host-helper.py" qmp "$qmp" quit >/dev/null 2>&1 || true
    fi
    wait "$QEMU_PID" 2>/dev/null || rc=$?
    QEMU_PID=
    tr -d '\r' <"$log" >"$log.txt"
    if ! grep -q '^demo: done' "$log.txt"; then
        echo "$NAME: $name: the VM stopped before the end (QEMU exit $rc; log $log.txt)" >&2
        tail -n 30 "$log.txt" >&2
        tail -n 5 "$RUN/$name.qemu.log" >&2
        return 1
    fi
    return 0
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

EDU_PROPS=
HPDISK=
PIN_PROPS=
if [ "$what" = bench ]; then
    DISK=$RUN/disk.img
    head -c 256M /dev/urandom >"$DISK"
    NVME=$RUN/nvme.img
    head -c 128M /dev/urandom >"$NVME"
    results=$RUN/bench.txt
    : >"$results"
    for i in $(seq "$bench_vms"); do
        for cfg in $BENCH_CONFIGS; do
            case $cfg in
            none) app="demo=bench ied_args=none"; iommu=0 ;;
            lazy) app="demo=bench"; iommu=1 ;;
            strict) app="demo=bench iommu.strict=1"; iommu=1 ;;
            lazy-readhead) app="demo=bench ied_args=read_head=1"; iommu=1 ;;
            strict-readhead) app="demo=bench iommu.strict=1 ied_args=read_head=1"; iommu=1 ;;
            *) die "unknown bench configuration $cfg" ;;
            esac
            say "bench VM $i: $cfg"
            if ! vm "bench-$cfg-$i" "$app" "$iommu" 0; then
                echo "$cfg failed-vm" >>"$results"
                continue
            fi
            awk -v c="$cfg" -v i="$i" '
                $1 == "demo:" && $2 == "bench" && $4 == "bytes" && $7 > 0 {
                    printf "%s %s %.1f\n", c, $3, $5 / ($7 / 100) / 1e6 }
                $1 == "demo:" && $2 == "bench" && $4 == "failed:" {
                    print c, "failed-dd", i }' \
                "$RUN/bench-$cfg-$i.log.txt" >>"$results"
            if [ -f "$RUN/bench-$cfg-$i.counters" ]; then
                sed "s/^/$cfg-$i counter /" "$RUN/bench-$cfg-$i.counters" >>"$results"
            fi
            grep -E '^demo: status: (maps|unmaps|doorbells|head-reads|syncs|flushes|map-errors):' \
                "$RUN/bench-$cfg-$i.log.txt" | sed "s/^demo: status: /$cfg-$i driver /" >>"$results" || true
        done
    done
    say "results (MB/s = 10^6 bytes/s; median of all runs of a configuration):"
    for bs in 64k 4k nvme0n1-64k; do
        for cfg in $BENCH_CONFIGS; do
            vals=$(awk -v c="$cfg" -v b="$bs" '$1 == c && $2 == b { print $3 }' "$results" | sort -n)
            n=$(echo "$vals" | grep -c . || true)
            med=$(echo "$vals" | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2); else print "-" }')
            say "  $bs $cfg: median $med MB/s over $n runs ($(echo $vals | tr ' ' ','))"
        done
    done
    grep -E 'failed' "$results" | sed "s|^|$NAME:   |" || true
    grep -E 'counter|driver' "$results" | sed "s|^|$NAME:   |" || true
    say "raw results: $results"
    exit 0
fi

# functional runs
# max-pinned=32M: the edu self-test maps more than that in one sg list
PIN_PROPS=,max-pinned=32M
# In gpa and hpa modes the bus address is where the page is, which edu's
# default 28-bit DMA cannot reach: give it 64 bits there.
EDU_PROPS=
ied_args=${IED_ARGS:-}
case "${IOMMU_PROPS:-}" in
*bus-addr=gpa*|*bus-addr=hpa*)
    EDU_PROPS=,dma_mask=0xffffffffffffffff
    ied_args="$ied_args edu_mask_bits=64" ;;
esac
EDU_ARG=
ied_args=$(echo $ied_args)
[ -z "$ied_args" ] || EDU_ARG="ied_args=\"$ied_args\""
DISK=$RUN/disk.img
head -c 32M /dev/urandom >"$DISK"
NVME=$RUN/nvme.img
head -c 16M /dev/urandom >"$NVME"
HPDISK=$RUN/hotplug.img
head -c 8M /dev/urandom >"$HPDISK"
BLOB=$RUN/blob
head -c 4M /dev/urandom >"$BLOB"
NET_SKIP=
port=0
net=0
if net_setup; then
    "${NSRUN[@]}" python3 "$HERE/host-helper.py" serve "$BLOB" "$RUN/http.port" 0.0.0.0 \
        >"$RUN/http.log" 2>&1 &
    HTTP_PID=$!
    for _ in $(seq 100); do [ -s "$RUN/http.port" ] && break; sleep 0.1; done
    [ -s "$RUN/http.port" ] || { cat "$RUN/http.log" >&2; die "the HTTP helper did not start"; }
    port=$(cat "$RUN/http.port")
    net=1
else
    say "SKIP network checks: $NET_SKIP"
fi

total_pass=0
total_fail=0
runs=()
case "$what" in all) runs=(lazy strict) ;; *) runs=("$what") ;; esac
for r in "${runs[@]}"; do
    blk_sha=$(sha "$DISK")
    head_sha=$(head -c $(($(stat -c %s "$DISK") - 1048576)) "$DISK" | sha256sum | cut -d' ' -f1)
    cp "$DISK" "$RUN/disk-before-$r.img"
    case $r in
    lazy) app="demo=full" ;;
    strict) app="demo=strict iommu.strict=1" ;;
    esac
    say "$r VM: q35 TCG, $KVER, -device iommu-emul${IOMMU_PROPS:-}, virtio-blk, virtio-net, e1000e, edu (timeout ${DEMO_TIMEOUT}s)"
    pass=0
    fail=0
    if vm "$r" "$app blk_sha=$blk_sha head_sha=$head_sha nvme_sha=$(sha "$NVME") hp_sha=$(sha "$HPDISK") net_sha=$(sha "$BLOB") http_port=$port net=$net $EDU_ARG" 1 "$net"; then
        # the guest wrote its last MiB: check it on the host side too
        wrote=$(sed -n 's/^demo: wrote-last-mib //p' "$RUN/$r.log.txt")
        size=$(stat -c %s "$DISK")
        got=$(tail -c 1048576 "$DISK" | sha256sum | cut -d' ' -f1)
        if [ -n "$wrote" ] && [ "$got" = "$wrote" ] &&
           cmp -s -n $((size - 1048576)) "$DISK" "$RUN/disk-before-$r.img"; then
            echo "demo: PASS host-sees-guest-write" >>"$RUN/$r.log.txt"
        else
            echo "demo: FAIL host-sees-guest-write: host $got, guest '$wrote'" >>"$RUN/$r.log.txt"
        fi
    else
        fail=$((fail + 1))
    fi
    rm -f "$RUN/disk-before-$r.img"
    grep -E '^demo: (PASS|FAIL|SKIP|edu: |kernel: )' "$RUN/$r.log.txt" | sed "s/^demo: /$r: /" || true
    if [ -f "$RUN/$r.counters" ]; then
        sed "s/^/$r: iommu-emul counter /" "$RUN/$r.counters"
    fi
    pass=$((pass + $(grep -c '^demo: PASS' "$RUN/$r.log.txt" || true)))
    fail=$((fail + $(grep -c '^demo: FAIL' "$RUN/$r.log.txt" || true)))
    # the fault counter must show the edu self-test's blocked DMA
    if [ -f "$RUN/$r.counters" ] && awk '$1 == "faults" && $2 > 0 { f = 1 } END { exit !f }' "$RUN/$r.counters"; then
        pass=$((pass + 1))
        echo "$r: PASS qom-faults-counted"
    else
        fail=$((fail + 1))
        echo "$r: FAIL qom-faults-counted: no faults counter above 0 (see $RUN/$r.counters)"
    fi
    say "$r: $pass passed, $fail failed (serial log $RUN/$r.log.txt)"
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
done
say "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ] || exit 1
