#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# virtio-zc demo in a real VM: stall -> reclaim -> rewrite -> drain.
#
# Builds the guest driver and vzc-tool against the guest kernel, packs a
# busybox initramfs, starts receiver.py stalled, boots a q35 TCG VM with
# -device virtio-zc pointing at it, runs guest-init.sh inside, lets the
# receiver drain when the guest prints VZC-DRAIN, and checks both sides.
# Exit 0 only if every check passed.
#
# run-demo.sh --negative: a self-check of the checker.  The guest rewrites
# a buffer while the device still holds it (what the spec forbids), and
# the demo passes only if the receiver reports the changed bytes.
#
# Environment:
#   QEMU       qemu-system-x86_64 with virtio-zc
#              (default: build/qemu/build/qemu-system-x86_64 of the repo)
#   QEMU_DATA  firmware directory for -L
#              (default: build/qemu/build/qemu-bundle/usr/local/share/qemu)
#   KVER       guest kernel release (default: the one Debian's
#              linux-image-amd64 points at, installed when missing)
#   DEMO_TIMEOUT  seconds for the whole VM run (default 300)
#   QEMU_ZC_STATE  state root (default build/state in this repository);
#              builds, initramfs and run logs go to $QEMU_ZC_STATE/virtio-zc

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
QEMU=${QEMU:-$ROOT/build/qemu/build/qemu-system-x86_64}
QEMU_DATA=${QEMU_DATA:-$ROOT/build/qemu/build/qemu-bundle/usr/local/share/qemu}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-300}
MODE=normal
case "${1:-}" in
"") ;;
--negative) MODE=negative ;;
*) echo "usage: $0 [--negative]" >&2; exit 2 ;;
esac

QZC_NAME=run-demo
# shellcheck source=guest/common.sh
. "$HERE/../common.sh"
say() { qzc_say "$@"; }
die() { qzc_die "$@"; }

[ -x "$QEMU" ] || die "no QEMU at $QEMU (set QEMU=)"
[ -d "$QEMU_DATA" ] || die "no firmware directory $QEMU_DATA (set QEMU_DATA=)"
CACHE=$(qzc_state virtio-zc)
qzc_guest_prereqs "$CACHE/apt-install.log"
BUSYBOX=$QZC_BUSYBOX
command -v python3 >/dev/null || die "the receiver needs python3"

# ---- build (out of the source tree) ----
B=$CACHE/build-$KVER
mkdir -p "$B"
cp "$HERE"/virtio_zc.c "$HERE"/virtio_zc_user.h "$HERE"/vzc-tool.c \
   "$HERE"/Makefile "$B"/
say "building virtio_zc.ko for $KVER and vzc-tool in $B"
make -s -C "/lib/modules/$KVER/build" M="$B" modules > "$B/build.log" 2>&1 ||
    { cat "$B/build.log" >&2; die "module build failed"; }
if grep -qi 'warning' "$B/build.log"; then
    cat "$B/build.log" >&2; die "module build has warnings"
fi
make -s -C "$B" tool > "$B/tool.log" 2>&1 ||
    { cat "$B/tool.log" >&2; die "vzc-tool build failed"; }

# ---- initramfs ----
I=$B/initramfs
rm -rf "$I"
mkdir -p "$I"/{bin,lib/modules,proc,sys,dev,tmp}
cp "$BUSYBOX" "$I/bin/busybox"
for a in sh mount insmod sleep echo cat grep sed tail readlink basename dmesg poweroff sync; do
    ln -s busybox "$I/bin/$a"
done
# virtio_pci is a module in 6.1 and built in in 6.12: guest-init.sh
# loads the modules that are there, in this order.
: >"$I/lib/modules/order"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci; do
    if qzc_copy_module "$m" "$I/lib/modules"; then
        echo "$m" >>"$I/lib/modules/order"
    fi
done
cp "$B/virtio_zc.ko" "$I/lib/modules/"
cp "$B/vzc-tool" "$I/bin/"
cp "$HERE/guest-init.sh" "$I/init"
chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) > "$B/initramfs.gz"

# ---- run ----
# Keep the logs of the last few runs only (none on a first run).
qzc_prune "$CACHE" run. 5
RUN=$(mktemp -d "$CACHE/run.XXXXXX")
RX_LOG=$RUN/receiver.log
SERIAL=$RUN/serial.log
QEMU_LOG=$RUN/qemu.log
RX_PID=
QEMU_PID=
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
    [ -n "$RX_PID" ] && kill "$RX_PID" 2>/dev/null || true
}
trap cleanup EXIT

# Tags 1 and 2 must arrive exactly once; 3, 4, 5 and 100-179 may (a message the
# device takes back before writing its first byte is never sent).
if [ $MODE = normal ]; then
    rx_args=(--expect 1:300000,2:200000
             --maybe 3:65536,4:131072,5:131072,100-179:4096)
else
    rx_args=(--expect 1:300000)
fi
python3 "$HERE/receiver.py" --stall --port 0 --port-file "$RUN/port" \
    "${rx_args[@]}" --timeout "$DEMO_TIMEOUT" > "$RX_LOG" 2>&1 &
RX_PID=$!
for _ in $(seq 100); do
    [ -s "$RUN/port" ] && break
    sleep 0.1
done
[ -s "$RUN/port" ] || { cat "$RX_LOG" >&2; die "receiver did not start"; }
PORT=$(cat "$RUN/port")
say "receiver stalled on 127.0.0.1:$PORT, logs in $RUN"

: > "$SERIAL"
timeout "$DEMO_TIMEOUT" "$QEMU" -L "$QEMU_DATA" -accel tcg -M q35 -m 512M \
    -smp 1 -display none -monitor none -no-reboot \
    -serial "file:$SERIAL" -qmp "unix:$RUN/qmp.sock,server=on,wait=off" \
    -kernel "/boot/vmlinuz-$KVER" -initrd "$B/initramfs.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 vzc.mode=$MODE" \
    -device "virtio-zc,id=zc0,dest=127.0.0.1:$PORT,timeout-ms=300,max-inflight=32,max-segments=254,max-data-len=1048576,sndbuf=4194304" \
    > "$QEMU_LOG" 2>&1 &
QEMU_PID=$!

# The device's QOM counters (docs/system/devices/virtio-zc.rst), printed
# for information: they show that stalled buffers were offlined.
qmp_counters() {
    timeout 20 python3 - "$RUN/qmp.sock" <<'PYEOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile('rw')
def cmd(name, **args):
    f.write(json.dumps({'execute': name, 'arguments': args}) + '\n')
    f.flush()
    while True:
        r = json.loads(f.readline())
        if 'return' in r or 'error' in r:
            return r.get('return', r.get('error'))
json.loads(f.readline())
cmd('qmp_capabilities')
names = ['requests', 'completed', 'sent', 'bytes', 'reclaimed', 'copied',
         'kernel-copied', 'dest-errors', 'bad-requests', 'offline-refused',
         'offline-failed', 'offlined-bytes', 'in-flight']
print('counters: ' + ' '.join(
    f'{n}={cmd("qom-get", path="/machine/peripheral/zc0/virtio-backend", property=n)}'
    for n in names))
PYEOF
}

drained=0
closed=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [ $drained = 0 ] && grep -q '^VZC-DRAIN' "$SERIAL"; then
        say "guest asked for the drain: signalling the receiver"
        kill -USR1 "$RX_PID" 2>/dev/null || true
        drained=1
    fi
    if [ $closed = 0 ] && grep -q '^VZC-CLOSE' "$SERIAL"; then
        qmp_counters > "$RUN/counters.log" 2>&1 || true
        say "guest asked to close the destination"
        kill -USR2 "$RX_PID" 2>/dev/null || true
        closed=1
    fi
    sleep 0.2
done
qemu_rc=0
wait "$QEMU_PID" || qemu_rc=$?
QEMU_PID=
if [ $drained = 0 ]; then
    kill -USR1 "$RX_PID" 2>/dev/null || true
fi
# The receiver ends at the end of the stream; if QEMU never connected,
# do not wait for the receiver's own timeout.
for _ in $(seq 150); do
    kill -0 "$RX_PID" 2>/dev/null || break
    sleep 0.2
done
kill "$RX_PID" 2>/dev/null && say "receiver still running 30 s after QEMU: stopped"
rx_rc=0
wait "$RX_PID" || rx_rc=$?
RX_PID=

echo "----- guest (serial) -----"
tr -d '\r' < "$SERIAL" |
    grep -E '^(VZC-|info:|fill|verify:|send:|wait:|waitdest:|reset:|collect:)' || true
echo "----- device (QMP, before the destination closed) -----"
cat "$RUN/counters.log" 2>/dev/null || true
echo "----- receiver -----"
cat "$RX_LOG"
if [ -s "$QEMU_LOG" ]; then
    echo "----- qemu -----"
    cat "$QEMU_LOG"
fi
echo "-----"

if [ $MODE = negative ]; then
    if grep -q '^VZC-RESULT PASS' "$SERIAL" && [ $rx_rc != 0 ] &&
       grep -q 'tag=1 len=300000 MISMATCH' "$RX_LOG"; then
        say "PASS (negative): the receiver caught the bytes written while the device held the buffer"
        exit 0
    fi
    say "FAIL (negative): the receiver did not catch the rewrite (logs in $RUN)" >&2
    exit 1
fi
ok=1
[ $closed = 1 ] || { say "FAIL: the guest never asked to close" >&2; ok=0; }
[ $qemu_rc = 0 ] || { say "FAIL: QEMU exit status $qemu_rc (124 = timeout)" >&2; ok=0; }
grep -q '^VZC-RESULT PASS' "$SERIAL" || { say "FAIL: guest checks" >&2; ok=0; }
[ $drained = 1 ] || { say "FAIL: the guest never asked for the drain" >&2; ok=0; }
[ $rx_rc = 0 ] || { say "FAIL: receiver" >&2; ok=0; }
if [ $ok = 1 ]; then
    say "PASS (stall -> reclaim -> rewrite -> drain; reset; unbind; plain send)"
    exit 0
fi
say "FAIL (logs in $RUN)" >&2
exit 1
