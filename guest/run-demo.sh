#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Boot a TCG VM with -device iommu-emul and two edu devices, load the independent
# guest driver (guest/iommu-emul) with selftest=1, run the self-test a second
# time through debugfs, reload the driver without MSI-X (polled) for a third
# run, unload it and power off. Exits 0 only if every check of every run
# passed (the polled run skips the two interrupt checks, and only it may).
#
# Usage: guest/run-demo.sh [q35|pc|all]          (default q35)
#
# Environment:
#   QEMU          qemu-system-x86_64 (default build/qemu/build/qemu-system-x86_64)
#   QEMU_FIRMWARE directory for -L (default the build's qemu-bundle share dir,
#                 or <dir of $QEMU>/share)
#   KVER          guest kernel release (default: the one Debian's
#                 linux-image-amd64 points at; installs linux-image-amd64
#                 and linux-headers-amd64 when they are missing)
#   DEMO_TIMEOUT  seconds one VM may run (default 300)
#   IOMMU_PROPS   extra iommu-emul properties, e.g. ",bus-addr=gpa"
#   QEMU_ZC_STATE state root (default build/state in this repository);
#                 builds, initramfs and logs go to $QEMU_ZC_STATE/iommu-emul

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
machines=${1:-q35}
case "$machines" in
q35|pc) ;;
all) machines="q35 pc" ;;
-h|--help)
    sed -n '3,23p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
*)
    echo "run-demo.sh: unknown machine '$machines' (q35, pc or all)" >&2
    exit 2 ;;
esac

QEMU=${QEMU:-$root/build/qemu/build/qemu-system-x86_64}
if [ -z "${QEMU_FIRMWARE:-}" ]; then
    QEMU_FIRMWARE=$(dirname "$QEMU")/qemu-bundle/usr/local/share/qemu
    [ -d "$QEMU_FIRMWARE" ] || QEMU_FIRMWARE=$(dirname "$QEMU")/share
fi
timeout_s=${DEMO_TIMEOUT:-300}

QZC_NAME=run-demo
# shellcheck source=guest/common.sh
. "$here/common.sh"
say() { qzc_say "$@"; }
die() { qzc_die "$@"; }

[ -x "$QEMU" ] || die "no QEMU binary at $QEMU (build it with ./configure-wrapper.sh build, or set QEMU=)"
[ -d "$QEMU_FIRMWARE" ] || die "no firmware directory $QEMU_FIRMWARE (set QEMU_FIRMWARE=)"
state=$(qzc_state iommu-emul)

# --- packages ---------------------------------------------------------------

qzc_guest_prereqs "$state/apt-install.log"
busybox=$QZC_BUSYBOX
vmlinuz=$VMLINUZ

# --- module -----------------------------------------------------------------

# Build in the state directory, not in the source directory, so the tree
# stays clean.
build=$state/build-$KVER
mkdir -p "$build"
cp "$here"/iommu-emul/Makefile "$here"/iommu-emul/Kbuild \
   "$here"/iommu-emul/*.[ch] "$build"/
say "building iommu_emul.ko for $KVER"
make -C "$build" KVER="$KVER" >"$build/make.log" 2>&1 ||
    { cat "$build/make.log" >&2; die "module build failed"; }
if grep -E 'warning:|error:' "$build/make.log"; then
    die "the module builds with warnings (see $build/make.log)"
fi

# --- initramfs --------------------------------------------------------------

initrd=$state/initramfs-$KVER.cpio.gz
rootfs=$state/rootfs-$KVER
rm -rf "$rootfs"
mkdir -p "$rootfs"/{bin,dev,proc,sys}
cp "$busybox" "$rootfs/bin/busybox"
cp "$build/iommu_emul.ko" "$rootfs/"
cat >"$rootfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
echo "demo: kernel $(uname -r)"
for d in /sys/bus/pci/devices/*; do
    id="$(cat "$d/vendor"):$(cat "$d/device")"
    case "$id" in
    0x1af4:0x10f0|0x1234:0x11e8)
        echo "demo: pci ${d##*/} $id reset methods: $(cat "$d/reset_method" 2>/dev/null)" ;;
    esac
done
echo "demo: run 1: insmod iommu_emul.ko selftest=1"
insmod /iommu_emul.ko selftest=1 && echo "demo: insmod ok"
dmesg | grep -E 'iommu-emul|iommu_emul' | sed 's/^\[[^]]*\] //'
dmesg -c >/dev/null
for f in /sys/kernel/debug/iommu-emul/*/selftest; do
    [ -e "$f" ] || { echo "demo: no debugfs selftest file"; break; }
    echo "demo: run 2: echo 1 > $f"
    echo 1 >"$f" && echo "demo: debugfs selftest ok"
    dmesg | grep -E 'iommu-emul|iommu_emul' | sed 's/^\[[^]]*\] //'
    dmesg -c >/dev/null
    sed 's/^/demo: status: /' "${f%selftest}status"
done
rmmod iommu_emul && echo "demo: rmmod ok"
echo "demo: run 3: insmod iommu_emul.ko selftest=1 use_msix=0 (polled)"
insmod /iommu_emul.ko selftest=1 use_msix=0 && echo "demo: insmod polled ok"
dmesg | grep -E 'iommu-emul|iommu_emul' | sed 's/^\[[^]]*\] //'
dmesg -c >/dev/null
rmmod iommu_emul && echo "demo: rmmod polled ok"
dmesg | grep -E 'BUG|WARNING|Oops|Call Trace' | sed 's/^/demo: kernel: /'
echo "demo: done"
poweroff -f
EOF
chmod +x "$rootfs/init"
(cd "$rootfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"

# --- VMs --------------------------------------------------------------------

rc=0
for m in $machines; do
    log=$state/demo-$m.log
    say "booting $m (TCG) with -device iommu-emul${IOMMU_PROPS:-} and two edu devices, timeout ${timeout_s}s"
    : >"$log"
    set +e
    timeout -k 10 "$timeout_s" "$QEMU" -L "$QEMU_FIRMWARE" \
        -machine "$m" -accel tcg -m 512M -smp 1 \
        -display none -monitor none -serial "file:$log" -no-reboot \
        -nic none -kernel "$vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 quiet" \
        -device "iommu-emul${IOMMU_PROPS:-}" -device edu -device edu </dev/null
    qrc=$?
    set -e
    tr -d '\r' <"$log" >"$log.txt"
    grep -E '^demo: (pci|run|insmod|debugfs|rmmod|kernel|status)' "$log.txt" || true
    grep -oE 'iommu-emul-selftest: (PASS|FAIL|SKIP|SUMMARY|note:).*' "$log.txt" || true
    summaries=$(grep -cE 'iommu-emul-selftest: SUMMARY' "$log.txt" || true)
    fails=$(grep -cE 'iommu-emul-selftest: FAIL|SUMMARY .* [1-9][0-9]* failed|^demo: kernel:' "$log.txt" || true)
    # the two MSI-X runs must not skip anything
    fails=$((fails + $(grep -E 'iommu-emul-selftest: SUMMARY' "$log.txt" |
                       head -n2 | grep -cvE ' 0 skipped' || true)))
    if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
        echo "run-demo: $m: FAILED: the VM did not power off within ${timeout_s}s (log: $log.txt)" >&2
        rc=1
    elif [ "$qrc" != 0 ]; then
        echo "run-demo: $m: FAILED: QEMU exited with $qrc (log: $log.txt)" >&2
        rc=1
    elif [ "$summaries" != 3 ] || [ "$fails" != 0 ] ||
         ! grep -q '^demo: rmmod polled ok' "$log.txt" ||
         ! grep -q '^demo: done' "$log.txt"; then
        echo "run-demo: $m: FAILED: $summaries of 3 self-test runs finished, $fails failures (log: $log.txt)" >&2
        rc=1
    else
        say "$m: all checks passed in all 3 runs"
    fi
done
exit $rc
