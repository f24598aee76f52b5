#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The main job: iommu-emul in a real Linux guest, with the balloon.
#
#   run.sh demo        README command one: a q35 TCG guest (Debian kernel)
#                      boots with -device iommu-emul, loads iommu_emul_dma.ko
#                      from the initramfs first; its unmodified virtio-blk
#                      (iommu_platform=on) runs a checksummed disk workload
#                      through iommu-emul while the balloon inflates; prints
#                      throughput, iommu-emul's counters, pinned bytes, faults,
#                      the share of ballooned pages returned to the host and
#                      QEMU's RSS; then runs the virtio-zc demo
#                      (guest/virtio-zc/run-demo.sh). Last line "demo: OK".
#   run.sh overcommit  issue 10 section 3: 1 GiB guest, balloon to 128 MiB
#                      under continuous checksummed disk I/O, with
#                      iommu-emul and with -overcommit mem-lock=on (the
#                      pin-all baseline), side by side.
#   run.sh test        README command two's check: PASS/FAIL lines, exit 1
#                      on any failure.
#
# Environment:
#   QEMU           qemu-system-x86_64 (default build/qemu/build/... of this
#                  repository)
#   QEMU_FIRMWARE  -L directory (also QEMU_DATA; default the build's
#                  qemu-bundle share directory)
#   KVER           guest kernel release (default: the one Debian's
#                  linux-image-amd64 points at; installed with its headers
#                  when missing, as root)
#   MJ_MEM, MJ_TARGET  guest RAM and balloon target in MiB (defaults:
#                  demo 1024/128, overcommit 1024/128, test 512/128)
#   MJ_DISK_MIB    size of the virtio-blk disk (default 32)
#   MJ_TIMEOUT     seconds one VM may run (default 600)
#   MJ_MEMLOCK=1   test only: the negative control, with -overcommit
#                  mem-lock=on; the returned-pages check must FAIL
#   QEMU_ZC_STATE  state root (default build/state); builds, initramfs and
#                  the last 5 run directories go to $QEMU_ZC_STATE/main-job

set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
QZC_NAME=main-job
# shellcheck source=guest/common.sh
. "$HERE/../common.sh"
say() { qzc_say "$@"; }
die() { qzc_die "$@"; }
trap 'echo "main-job: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

mode=${1:-}
case "$mode" in
demo) mem=1024 target=128 ;;
overcommit) mem=1024 target=128 ;;
test) mem=512 target=128 ;;
-h|--help) sed -n '3,/^set -E/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: $0 demo|overcommit|test" >&2; exit 2 ;;
esac
mem=${MJ_MEM:-$mem}
target=${MJ_TARGET:-$target}
T0=$(date +%s)

QEMU=${QEMU:-$ROOT/build/qemu/build/qemu-system-x86_64}
FW=${QEMU_FIRMWARE:-${QEMU_DATA:-$(dirname "$QEMU")/qemu-bundle/usr/local/share/qemu}}
[ -x "$QEMU" ] || die "no QEMU binary at $QEMU (build it with ./configure-wrapper.sh build, or set QEMU=)"
[ -d "$FW" ] || die "no firmware directory $FW (set QEMU_FIRMWARE=)"
command -v python3 >/dev/null || die "python3 is missing"
STATE=$(qzc_state main-job)

# ---- guest kernel and tools (installed on the first run) -------------------

TICKER=
cleanup() {
    [ -n "$TICKER" ] && kill "$TICKER" 2>/dev/null
    return 0
}
trap cleanup EXIT
APTLOG=$STATE/apt-install.log
if [ -z "${KVER:-}" ] && [ -z "$(qzc_default_kver)" ]; then
    say "first run: the guest kernel is missing; installing Debian's linux-image-amd64 and linux-headers-amd64 (a few minutes)"
fi
# a progress line every 10 s while apt-get runs
rm -f "$APTLOG"
(
    while sleep 10; do
        [ -s "$APTLOG" ] || continue
        l=$(grep -E '^(Get:|Unpacking|Setting up|Selecting|Preparing)' "$APTLOG" | tail -n 1 || true)
        echo "main-job:   ... apt-get: $(grep -c '^Get:' "$APTLOG" || true) downloads, ${l:-working}"
    done
) &
TICKER=$!
qzc_guest_prereqs "$APTLOG"
kill "$TICKER" 2>/dev/null || true
TICKER=
command -v modprobe >/dev/null || die "modprobe is missing (install kmod)"

# ---- iommu_emul_dma.ko (guest/iommu-emul-dma) and the initramfs ------------

B=$STATE/build-$KVER
mkdir -p "$B"
# -p: keep the times, so that make rebuilds only what changed
cp -p "$ROOT"/guest/iommu-emul-dma/{Kbuild,Makefile,*.[ch]} "$B"/
say "building iommu_emul_dma.ko (guest/iommu-emul-dma) for $KVER"
make -C "$B" KVER="$KVER" W=1 >"$B/make.log" 2>&1 ||
    { cat "$B/make.log" >&2; die "module build failed"; }
if grep -E 'warning:|error:' "$B/make.log" >&2; then
    die "the module builds with warnings (see $B/make.log)"
fi

I=$B/initramfs
rm -rf "$I"
mkdir -p "$I"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$QZC_BUSYBOX" "$I/bin/busybox"
cp "$B/iommu_emul_dma.ko" "$I/"
cp "$HERE/guest-init.sh" "$I/init"
chmod +x "$I/init"
: >"$I/lib/modules/order"
# the kernel's own drivers with what they need, in load order (built-in
# ones are absent: virtio_pci on 6.12)
qzc_add_modules "$I" virtio_pci virtio_blk virtio_balloon
INITRD=$B/initramfs.gz
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) >"$INITRD"

# ---- the run ----------------------------------------------------------------

qzc_prune "$STATE" run. 5
RUN=$(mktemp -d "$STATE/run.XXXXXX")
DISK=$RUN/disk.img
head -c "$(( ${MJ_DISK_MIB:-32} ))M" /dev/urandom >"$DISK"
HEAD_SHA=$(head -c $(( (${MJ_DISK_MIB:-32} - 1) * 1048576 )) "$DISK" | sha256sum | cut -d' ' -f1)
say "guest kernel $KVER, q35 TCG, 1 vCPU; logs in $RUN"

rc=0
python3 "$HERE/mj-host.py" "$mode" --run "$RUN" --qemu "$QEMU" --firmware "$FW" \
    --kernel "$VMLINUZ" --initrd "$INITRD" --disk "$DISK" --head-sha "$HEAD_SHA" \
    --mem "$mem" --target "$target" --timeout "${MJ_TIMEOUT:-600}" || rc=$?
rm -f "$DISK"

case "$mode" in
demo)
    [ $rc = 0 ] || die "the iommu-emul guest failed (logs in $RUN)"
    say "virtio-zc: guest/virtio-zc/run-demo.sh (stall -> reclaim -> rewrite -> drain)"
    zlog=$RUN/virtio-zc.log
    zrc=0
    QEMU=$QEMU QEMU_DATA=$FW KVER=$KVER "$ROOT/guest/virtio-zc/run-demo.sh" >"$zlog" 2>&1 || zrc=$?
    # its figures: the device's QOM counters, the guest's and the
    # receiver's verdicts, the script's own
    sed -n 's/^counters: /main-job: virtio-zc counters: /p' "$zlog"
    grep -E '^(VZC-RESULT|RECEIVER RESULT|run-demo: (PASS|FAIL))' "$zlog" |
        sed 's/^run-demo: //; s/^/main-job: virtio-zc: /' || true
    if [ $zrc != 0 ]; then
        tail -n 20 "$zlog" >&2
        die "the virtio-zc demo failed (log $zlog)"
    fi
    say "total $(( $(date +%s) - T0 )) s"
    echo "demo: OK"
    ;;
overcommit)
    say "total $(( $(date +%s) - T0 )) s"
    [ $rc = 0 ] || die "overcommit run failed (logs in $RUN)"
    echo "overcommit: OK"
    ;;
test)
    say "total $(( $(date +%s) - T0 )) s"
    [ $rc = 0 ] || die "test failed (logs in $RUN)"
    echo "test: OK"
    ;;
esac
