#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the virtio-zc demo initramfs (see run-demo.sh).
#
# Scenario, with the host receiver stalled at first:
#  A. stall -> reclaim -> rewrite: tags 1 (unaligned, default timeout) and
#     3 (16 one-page segments) complete RECLAIMED; the guest still sees its
#     bytes and the guard bytes around them; then it rewrites them.
#  B. reset: tag 4 (long timeout) is taken back by VZC_IOC_RESET: RECLAIMED,
#     flagged as completed by the reset; then rewritten.
#  B2. 80 requests, more than max_inflight, then a reset: each completes
#     once, RECLAIMED or (still in the ring) CANCELED.
#  C. unbind with a request in flight: tag 5 (long timeout) completes for a
#     waiting process when the driver is unbound; the driver is rebound.
#  Then "VZC-DRAIN" asks the host to let the receiver drain, and
#  F. malformed requests (driver checks bypassed): the device answers
#     BAD_REQUEST (or, without a status byte, used length 0), sends nothing.
#  D. plain send: tag 2 with a per-request timeout completes OK.
#  Then "VZC-CLOSE" asks the host to close the receiver, and
#  E. destination loss: dest_state drops to 0, tag 6 completes DEST_ERROR.
# The receiver checks that it saw only the original bytes.
#
# With vzc.mode=negative on the kernel command line it instead breaks the
# driver contract on purpose (rewrites tag 1 while the device holds it), so
# that run-demo.sh --negative can show the receiver catching the change.

export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 0 > /proc/sys/kernel/printk_ratelimit 2>/dev/null

fail=0
T=/bin/vzc-tool
check() {
	echo "VZC-STEP $*"
	if ! "$T" "$@"; then
		echo "VZC-CHECK-FAILED: $*"
		fail=1
	fi
}
# The driver must refuse what the spec forbids a driver to post.
mustfail() {
	echo "VZC-STEP (must fail) $*"
	if "$T" "$@"; then
		echo "VZC-CHECK-FAILED: accepted: $*"
		fail=1
	fi
}
finish() {
	dmesg > /tmp/dmesg
	grep -E 'virtio_zc|virtio-zc' /tmp/dmesg | sed 's/^/VZC-DMESG /'
	if grep -qE 'WARNING:|BUG:|Oops|general protection|Call Trace' /tmp/dmesg; then
		sed 's/^/VZC-DMESG /' /tmp/dmesg | tail -60
		echo "VZC-CHECK-FAILED: kernel warning"
		fail=1
	fi
	if [ $fail = 0 ]; then
		echo "VZC-RESULT PASS"
	else
		echo "VZC-RESULT FAIL"
	fi
	sync
	poweroff -f
}

# run-demo.sh lists the virtio transport modules the kernel does not have
# built in, in load order.
for m in $(cat /lib/modules/order) virtio_zc; do
	arg=
	[ $m = virtio_zc ] && arg=allow_malformed=1
	insmod /lib/modules/$m.ko $arg ||
		{ echo "VZC-CHECK-FAILED: insmod $m"; fail=1; }
done

wait_dev() {
	i=0
	while [ ! -e /dev/virtio-zc0 ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e /dev/virtio-zc0 ] || { echo "VZC-CHECK-FAILED: no /dev/virtio-zc0"; fail=1; }
}
wait_dev
check info

if grep -q 'vzc.mode=negative' /proc/cmdline; then
	# Rewrite while the device holds the request: this may reach the
	# destination (the spec forbids it), and the receiver must notice.
	check fill 4096 300000 1 , send 4096 300000 1 30000 , sleep 300
	check fill 4096 300000 1001
	echo "VZC-DRAIN"
	check wait 1 60000 OK
	echo "VZC-CLOSE"
	finish
fi

mustfail send 0 0 7				# no data
mustfail send 4190000 8192 7			# beyond the pool
mustfail send 0 4096 7 60001			# above max_timeout_ms
mustfail send 0 300 7 0 1			# 300 segments > 254

# A. stall -> reclaim -> rewrite
OFF1=4196; LEN1=300000		# unaligned start and end
OFF3=393216; LEN3=65536		# page aligned, split in 16 segments
GUARD=0xa5
check fillbyte $((OFF1 - 100)) $((LEN1 + 300)) $GUARD
check fill $OFF1 $LEN1 1
check fill $OFF3 $LEN3 3
check send $OFF1 $LEN1 1
check send $OFF3 $LEN3 3 0 4096
check wait 1 60000 RECLAIMED
check wait 3 60000 RECLAIMED
# Guarantee 1: the guest's view is unchanged, neighbours included.
check verify $OFF1 $LEN1 1 , verify $OFF3 $LEN3 3
check verifybyte $((OFF1 - 100)) 100 $GUARD , \
      verifybyte $((OFF1 + LEN1)) 200 $GUARD
# Rewrite: none of this may reach the receiver.
check fill $OFF1 $LEN1 1001 , fill $OFF3 $LEN3 1003
check verify $OFF1 $LEN1 1001

# B. device reset takes a stalled request back
OFF4=524288; LEN4=131072
check fill $OFF4 $LEN4 4
check send $OFF4 $LEN4 4 30000
check sleep 200 , reset
check wait 4 0 RECLAIMED
check fill $OFF4 $LEN4 1004

# B2. more requests than max_inflight (32), then a reset: every one
# completes exactly once, RECLAIMED if the device held it (at most 32),
# CANCELED if it was still in the ring.
OFFM=2097152
check fillmany $OFFM 4096 100 80
"$T" sendmany $OFFM 4096 100 80 30000 > /tmp/sendmany || {
	cat /tmp/sendmany; echo "VZC-CHECK-FAILED: sendmany"; fail=1; }
check sleep 300 , info , reset
check collect 100 80 0 RECLAIMED,CANCELED 32
check fillmany $OFFM 4096 1100 80

# C. unbind with a request in flight, then bind again
OFF5=786432; LEN5=131072
check fill $OFF5 $LEN5 5 , send $OFF5 $LEN5 5 30000
"$T" wait 5 -1 RECLAIMED > /tmp/wait5 2>&1 &
waiter=$!
sleep 0.3
DEV=$(basename "$(readlink /sys/class/misc/virtio-zc0/device)")
echo "VZC-STEP unbind $DEV"
echo "$DEV" > /sys/bus/virtio/drivers/virtio_zc/unbind
if wait $waiter; then :; else
	echo "VZC-CHECK-FAILED: completion at unbind"; fail=1
fi
cat /tmp/wait5
grep -q 'flags=0x2' /tmp/wait5 || { echo "VZC-CHECK-FAILED: unbind flag"; fail=1; }
echo "$DEV" > /sys/bus/virtio/drivers/virtio_zc/bind
wait_dev
check info

echo "VZC-DRAIN"

# F. the device's answer to what the spec forbids (driver checks bypassed
# with VZC_SEND_F_*): BAD_REQUEST, or no status without a writable byte,
# and nothing sent (the receiver, reading now, fails on tags 8-13).
check send 0 4096 8 60001 0 1 , wait 8 60000 BAD_REQUEST	# timeout > max
check send 0 4096 9 0 0 2 , wait 9 60000 BAD_REQUEST		# flags != 0
check send 0 300 10 0 1 1 , wait 10 60000 BAD_REQUEST		# 300 segments
check send 0 1048577 11 0 0 1 , wait 11 60000 BAD_REQUEST	# > max_data_len
check send 0 4096 12 0 0 8 , wait 12 60000 BAD_REQUEST		# 2 status bytes
check send 0 4096 13 0 0 4 , wait 13 60000 NO_STATUS		# no status byte

# D. plain send to a draining receiver, per-request timeout
OFF2=1048576; LEN2=200000
check fill $OFF2 $LEN2 2
check send $OFF2 $LEN2 2 30000
check wait 2 60000 OK
check verify $OFF2 $LEN2 2

echo "VZC-CLOSE"

# E. destination loss
check waitdest 0 20000
OFF6=1310720; LEN6=4096
check fill $OFF6 $LEN6 6 , send $OFF6 $LEN6 6 , wait 6 60000 DEST_ERROR
check info
finish
