#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=dash disable=SC2154  # the parameters come from the kernel command line
#
# /init of the main-job VM (see run.sh and mj-host.py). Parameters come
# from the kernel command line as environment variables:
#   mj          demo | overcommit | test (only used in messages)
#   head_sha    SHA-256 of the disk /dev/vda without its last MiB
#   need_mib    MiB the host's balloon takes (guest RAM - balloon target)
#   ied_args    extra insmod arguments of iommu_emul_dma.ko
#
# Steps (each printed as an "MJ: ..." line on the serial console):
#   1. insmod iommu_emul_dma.ko, then the kernel's own virtio_pci,
#      virtio_blk and virtio_balloon: virtio-blk (iommu_platform=on) is
#      translated by iommu-emul from its first DMA on;
#   2. throughput: O_DIRECT read of the disk at 64 KiB, SHA-256 checked;
#   3. fill: dirty nearly all free guest RAM (a tmpfs file), then free it,
#      so that every page the balloon takes was resident in QEMU before;
#   4. disk I/O in a loop in the background (O_DIRECT read of the disk,
#      SHA-256 checked, and a 1 MiB O_DIRECT write read back and checked),
#      "MJ: inflate-now": the host sets the balloon target; the guest waits
#      until MemTotal dropped by need_mib, keeps the I/O going for two
#      more passes, stops it and reports the passes and any error;
#   5. "MJ: done": the host measures, reads the counters and quits QEMU.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs -o size=16m tmp /tmp

say() { echo "MJ: $*"; }
pass() { echo "MJ: PASS $*"; }
fail() { echo "MJ: FAIL $*"; }

ied_dir() { for d in /sys/kernel/debug/iommu_emul_dma/*/; do [ -d "$d" ] && echo "$d"; done; }
status() { cat "$(ied_dir)status" 2>/dev/null; }
loaded() { grep -q "^$1 " /proc/modules; }
memtotal() { sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; }
memavail() { sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo; }
# /proc/uptime in 10 ms ticks (busybox dd prints no timing)
ticks() { t=$(cut -d' ' -f1 /proc/uptime); echo $(( ${t%.*}${t#*.} )); }

finish() {
    status | sed 's/^/MJ: status: /'
    say "done"
    # the host measures, reads the counters over QMP, then quits QEMU
    while :; do sleep 60; done
}

say "kernel $(uname -r), mode $mj, $(( $(memtotal) / 1024 )) MiB"
dmesg -n 1

# shellcheck disable=SC2086
if insmod /iommu_emul_dma.ko $ied_args; then
    pass "insmod-iommu_emul_dma (before any device driver)"
else
    fail "insmod-iommu_emul_dma"
    finish
fi
# shellcheck disable=SC2013  # one module name a line
for m in $(cat /lib/modules/order); do
    loaded "$m" || insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done
i=0
while [ ! -e /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -e /dev/vda ]; then
    fail "virtio-blk-probe: no /dev/vda"
    finish
fi
pass "virtio-blk-probe"
if status | grep -q '^dev 0000:00:04.0 '; then
    pass "virtio-blk-translated (00:04.0 DMAs through iommu-emul)"
else
    fail "virtio-blk-translated: $(status | grep -E '^(attached|dev)' | tr '\n' ' ')"
fi
i=0
while ! grep -q '^virtio_balloon ' /proc/modules && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
say "unmap mode: $(status | sed -n 's/^unmap: //p')"

bytes=$(( $(cat /sys/block/vda/size) * 512 ))
head_blocks=$(( (bytes - 1048576) / 65536 ))
last=$(( head_blocks ))

# 2. throughput (to /dev/null: the guest's SHA-256 is slower than the
# disk under TCG), then the same read checked
t0=$(ticks)
dd if=/dev/vda of=/dev/null bs=64k count=$head_blocks iflag=direct 2>/tmp/dd.err
t1=$(ticks)
if grep -q "^$head_blocks+0 records in" /tmp/dd.err; then
    say "tput bytes $((head_blocks * 65536)) centiseconds $((t1 - t0))"
else
    fail "blk-read-64k-tput: $(tr '\n' ' ' </tmp/dd.err)"
fi
s=$(dd if=/dev/vda bs=64k count=$head_blocks iflag=direct 2>/tmp/dd.err | sha256sum | cut -d' ' -f1)
if [ "$s" = "$head_sha" ] && grep -q "^$head_blocks+0 records in" /tmp/dd.err; then
    pass "blk-read-64k (sha256 matches the host's)"
else
    fail "blk-read-64k: sha256 $s, expected $head_sha ($(tr '\n' ' ' </tmp/dd.err))"
fi

meminfo() {
    grep -E '^(MemTotal|MemFree|MemAvailable|Shmem|Slab|SUnreclaim|KernelStack|PageTables|Percpu|VmallocUsed):' /proc/meminfo |
        tr -s ' ' | tr '\n' ' ' | sed "s/^/MJ: meminfo $1: /"
    echo
}
# 3. make every free page resident in QEMU, then free it again
meminfo before-fill
avail=$(( $(memavail) / 1024 ))
fill=$(( avail - 48 ))
if [ $fill -gt 0 ]; then
    mkdir -p /fill
    mount -t tmpfs -o size=${fill}m fill /fill
    t0=$(ticks)
    dd if=/dev/zero of=/fill/f bs=1M count=$fill 2>/dev/null
    rm -f /fill/f
    umount /fill
    say "filled $fill MiB of $avail MiB available in $(( ($(ticks) - t0) / 100 )) s"
fi

# 4. disk I/O in the background while the balloon inflates
io_pass() { # io_pass N: prints "ok N" or "FAIL N what"
    r=ok
    s=$(dd if=/dev/vda bs=64k count=$head_blocks iflag=direct 2>/tmp/io.err | sha256sum | cut -d' ' -f1)
    if ! grep -q "^$head_blocks+0 records in" /tmp/io.err; then
        r="FAIL $1 read-error $(tr '\n' ' ' </tmp/io.err)"
    elif [ "$s" != "$head_sha" ]; then
        r="FAIL $1 read-mismatch $s"
    fi
    dd if=/dev/urandom of=/tmp/w bs=64k count=16 2>/dev/null
    ws=$(sha256sum /tmp/w | cut -d' ' -f1)
    if ! dd if=/tmp/w of=/dev/vda bs=64k seek=$last oflag=direct conv=fsync 2>/tmp/io.err; then
        r="FAIL $1 write-error $(tr '\n' ' ' </tmp/io.err)"
    else
        rs=$(dd if=/dev/vda bs=64k skip=$last count=16 iflag=direct 2>/tmp/io.err | sha256sum | cut -d' ' -f1)
        if ! grep -q '^16+0 records in' /tmp/io.err; then
            r="FAIL $1 readback-error $(tr '\n' ' ' </tmp/io.err)"
        elif [ "$rs" != "$ws" ]; then
            r="FAIL $1 write-mismatch wrote $ws read $rs"
        fi
    fi
    echo "$r" >>/tmp/io.log
}
io_loop() {
    n=0
    while [ ! -e /tmp/stop ]; do
        n=$((n + 1))
        io_pass $n
    done
}
passes() { n=$(grep -c . /tmp/io.log 2>/dev/null); echo "${n:-0}"; }

: >/tmp/io.log
io_loop &
io_pid=$!
m0=$(memtotal)
need=$(( ${need_mib:-0} * 1024 ))
say "inflate-now memtotal $m0 kB, waiting for $need kB to be ballooned"
t0=$(ticks)
last_change=$t0
prev=$m0
while :; do
    sleep 1
    m=$(memtotal)
    now=$(ticks)
    [ "$m" != "$prev" ] && last_change=$now
    prev=$m
    [ $((m0 - m)) -ge "$need" ] && break
    # no progress for 60 s, or 600 s in all: the host will see it short
    [ $((now - last_change)) -ge 6000 ] && break
    [ $((now - t0)) -ge 60000 ] && break
done
dt=$(( $(ticks) - t0 ))
say "inflated $(( (m0 - m) / 1024 )) MiB in $((dt / 100)).$((dt % 100 / 10)) s, memtotal $m kB, $(passes) I/O passes so far"
meminfo inflated
# the I/O goes on for two more passes after the balloon reached its size
p=$(passes)
i=0
while [ "$(passes)" -lt $((p + 2)) ] && [ $i -lt 1200 ]; do sleep 0.5; i=$((i + 1)); done
touch /tmp/stop
wait $io_pid
np=$(passes)
nf=$(grep -c '^FAIL' /tmp/io.log || true)
grep '^FAIL' /tmp/io.log | head -n 5 | sed 's/^/MJ: io: /'
say "io passes $np failed $nf bytes-per-pass $((head_blocks * 65536 + 2 * 1048576))"
if [ "$np" -gt 0 ] && [ "$nf" = 0 ]; then
    pass "disk-io-during-inflation ($np passes, every read and write checked)"
else
    fail "disk-io-during-inflation: $nf of $np passes failed"
fi
if dmesg | grep -E 'I/O error|blk_update_request|BUG|WARNING|Oops|Call Trace|DMA fault' >/tmp/bad; then
    head -n 10 /tmp/bad | sed 's/^/MJ: kernel: /'
    fail "kernel-log: I/O error, DMA fault or BUG/WARNING/Oops"
else
    pass "kernel-log (no I/O error, DMA fault, BUG, WARNING or Oops)"
fi
finish
