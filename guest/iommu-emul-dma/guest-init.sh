#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# /init of the iommu_emul_dma demo VM (see run-demo.sh). The kernel passes
# the demo's parameters from its command line as environment variables:
#   demo      full | strict | bench
#   blk_sha   SHA-256 of the whole disk /dev/vda
#   head_sha  SHA-256 of all but its last MiB (which the guest overwrites)
#   nvme_sha  SHA-256 of the NVMe disk /dev/nvme0n1
#   hp_sha    SHA-256 of the disk the host hot-plugs on request (/dev/vdb)
#   net_sha   SHA-256 of the host's /blob
#   http_port port of the host's HTTP server (10.0.2.2 / 10.0.3.2)
#   ied_args  extra insmod arguments of iommu_emul_dma.ko ("none": do not load it)
#   bench_runs  bench: dd repetitions (default 3)
# Prints "demo: PASS name" / "demo: FAIL name: why" lines, then
# "demo: done", and waits for the host to read the counters and quit.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmp /tmp

say() { echo "demo: $*"; }
pass() { echo "demo: PASS $*"; }
fail() { echo "demo: FAIL $*"; }
ok() { # ok NAME WHY COMMAND...: PASS if COMMAND succeeds
    n=$1 w=$2
    shift 2
    if "$@"; then pass "$n"; else fail "$n: $w"; fi
}

ied_ko=/iommu_emul_dma.ko
ied_dir() { for d in /sys/kernel/debug/iommu_emul_dma/*/; do [ -d "$d" ] && echo "$d"; done; }
status() { cat "$(ied_dir)status" 2>/dev/null; }
loaded() { grep -q "^$1 " /proc/modules; }

load_drivers() {
    # in dependency order (run-demo.sh wrote it); built-in ones are absent
    for m in $(cat /lib/modules/order); do
        loaded "$m" || insmod "/lib/modules/$m.ko" || say "insmod $m failed"
    done
}

unload_drivers() {
    for m in virtio_net net_failover failover e1000e virtio_blk nvme; do
        loaded "$m" && { rmmod "$m" || say "rmmod $m failed"; }
    done
}

wait_for() { # wait_for FILE SECONDS
    i=0
    while [ ! -e "$1" ] && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

wait_gone() {
    i=0
    while [ -e "$1" ] && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    [ ! -e "$1" ]
}

attached() { status | grep -q "^dev $1 "; }

blk_read() { # blk_read NAME BS [head]: the whole disk (or all but its last
              # MiB, which the write check changes), O_DIRECT, checked
    if [ "${3:-}" = head ]; then
        bs_b=$(( $(echo "$2" | sed 's/k$//') * 1024 ))
        cnt="count=$(( ($(cat /sys/block/vda/size) * 512 - 1048576) / bs_b ))"
        want=$head_sha
    else
        cnt=
        want=$blk_sha
    fi
    # shellcheck disable=SC2086
    s=$(dd if=/dev/vda bs="$2" $cnt iflag=direct 2>/tmp/dd.err | sha256sum | cut -d' ' -f1)
    if [ "$s" = "$want" ]; then
        pass "$1 ($(tail -n1 /tmp/dd.err))"
    else
        fail "$1: sha256 $s, expected $want ($(cat /tmp/dd.err))"
    fi
}

netif_of() { # the interface whose driver is $1
    for i in /sys/class/net/*; do
        drv=$(basename "$(readlink "$i/device/driver")" 2>/dev/null)
        [ "$drv" = "$1" ] && { basename "$i"; return; }
    done
}

net_check() { # net_check DRIVER SUBNET-PREFIX
    ifc=$(netif_of "$1")
    if [ -z "$ifc" ]; then fail "net-$1: no interface"; return; fi
    ifconfig "$ifc" "$2.15" netmask 255.255.255.0 up
    s=$(timeout 120 wget -q -O - "http://$2.2:$http_port/blob" | sha256sum | cut -d' ' -f1)
    if [ "$s" = "$net_sha" ]; then pass "net-rx-$1 ($ifc)"; else fail "net-rx-$1: sha256 $s"; fi
    s=$(timeout 120 wget -q -O - --post-file /tmp/up.b64 "http://$2.2:$http_port/sum")
    if [ "$s" = "$up_sha" ]; then pass "net-tx-$1 ($ifc)"; else fail "net-tx-$1: host got sha256 '$s', sent $up_sha"; fi
    ifconfig "$ifc" down
}

edu_test() {
    dmesg -c >/dev/null
    echo 1 >"$(ied_dir)edu_test" || say "edu_test reported failures"
    dmesg | sed -n 's/.*iommu_emul_dma: test: \(PASS\|FAIL\|note\)/\1/p' | sed 's/^/demo: edu: /'
    dmesg | grep -q 'iommu_emul_dma: test: SUMMARY [1-9][0-9]* passed, 0 failed' &&
        pass "edu-test" || fail "edu-test: see the edu lines"
}

kernel_clean() {
    if dmesg | grep -E 'BUG|WARNING|Oops|Call Trace' >/tmp/bad; then
        sed 's/^/demo: kernel: /' /tmp/bad
        fail "kernel-log: BUG/WARNING/Oops"
    else
        pass "kernel-log (no BUG/WARNING/Oops)"
    fi
}

finish() {
    status | sed 's/^/demo: status: /'
    say "done"
    # the host reads the counters over QMP, then quits QEMU
    while :; do sleep 60; done
}

say "kernel $(uname -r), demo=$demo, cmdline: $(cat /proc/cmdline)"
dmesg -n 1

if [ "$ied_args" != none ]; then
    # shellcheck disable=SC2086
    ok insmod "insmod failed" insmod $ied_ko $ied_args
    dmesg | grep -E 'iommu_emul_dma' | sed 's/^\[[^]]*\] /demo: kernel: /'
fi

case "$demo" in
bench)
    load_drivers
    wait_for /dev/vda 30 || fail "bench: no /dev/vda"
    wait_for /dev/nvme0n1 30 || fail "bench: no /dev/nvme0n1"
    # busybox dd prints no timing: /proc/uptime (10 ms ticks) around it
    r=0
    while [ $r -lt "${bench_runs:-3}" ]; do
        r=$((r + 1))
        for spec in vda:64k:2048 vda:4k:4096 nvme0n1:64k:2048; do
            dev=${spec%%:*} bs=${spec#*:} cnt=${bs#*:} bs=${bs%:*}
            name=$bs
            [ "$dev" = vda ] || name=$dev-$bs
            t0=$(cut -d' ' -f1 /proc/uptime)
            if dd if=/dev/$dev of=/dev/null bs=$bs count=$cnt iflag=direct 2>/tmp/dd.err; then
                t1=$(cut -d' ' -f1 /proc/uptime)
                say "bench $name bytes $(( ${bs%k} * 1024 * cnt )) centiseconds $(( ${t1%.*}${t1#*.} - ${t0%.*}${t0#*.} ))"
            else
                say "bench $name failed: $(cat /tmp/dd.err)"
            fi
        done
    done
    finish
    ;;
esac

case "$ied_args" in
*passthrough=1*) want_unmap= ;;
*) want_unmap=$( [ "$demo" = strict ] && echo strict || echo lazy ) ;;
esac
ok attached-at-load "edu 00:07.0 not translated" attached 0000:00:07.0
status | grep -q "^unmap: $want_unmap " && pass "unmap-mode-$want_unmap" ||
    fail "unmap-mode-$want_unmap: $(status | grep '^unmap')"

load_drivers
ok virtio-blk-probe "no /dev/vda" wait_for /dev/vda 30
ok virtio-blk-translated "00:04.0 not translated" attached 0000:00:04.0
blk_read blk-read-64k 64k
blk_read blk-read-4k 4k

# nvme maps its requests with dma_map_sg: a 64 KiB O_DIRECT read of a
# user buffer is a 16-entry sg list, one ring doorbell
ok nvme-probe "no /dev/nvme0n1" wait_for /dev/nvme0n1 30
ok nvme-translated "00:08.0 not translated" attached 0000:00:08.0
m0=$(status | sed -n 's/^maps: //p') d0=$(status | sed -n 's/^doorbells: //p')
s=$(dd if=/dev/nvme0n1 bs=64k iflag=direct 2>/tmp/dd.err | sha256sum | cut -d' ' -f1)
m1=$(status | sed -n 's/^maps: //p') d1=$(status | sed -n 's/^doorbells: //p')
[ "$s" = "$nvme_sha" ] && pass "nvme-read-64k" || fail "nvme-read-64k: sha256 $s ($(cat /tmp/dd.err))"
if status | grep -q '^bus-addr: hpa'; then
    # max_mapping_size is 4 KiB: nvme then caps its requests at 4 KiB
    say "SKIP nvme-sg-batched: hpa mode, one-page requests ($((m1 - m0)) MAPs in $((d1 - d0)) doorbells)"
elif [ $((d1 - d0)) -gt 0 ] && [ $(( (m1 - m0) / (d1 - d0) )) -ge 4 ]; then
    pass "nvme-sg-batched ($((m1 - m0)) MAPs in $((d1 - d0)) doorbells)"
else
    fail "nvme-sg-batched: $((m1 - m0)) MAPs in $((d1 - d0)) doorbells"
fi
s=$(dd if=/dev/nvme0n1 bs=4k iflag=direct 2>/tmp/dd.err | sha256sum | cut -d' ' -f1)
[ "$s" = "$nvme_sha" ] && pass "nvme-read-4k" || fail "nvme-read-4k: sha256 $s ($(cat /tmp/dd.err))"

# a write that goes through the IOMMU too: the last MiB, read back
dd if=/dev/urandom of=/tmp/up bs=64k count=16 2>/dev/null
up_sha=$(sha256sum /tmp/up | cut -d' ' -f1)
base64 /tmp/up >/tmp/up.b64
sectors=$(cat /sys/block/vda/size)
seek=$((sectors / 128 - 16))
dd if=/tmp/up of=/dev/vda bs=64k seek=$seek oflag=direct conv=fsync 2>/dev/null
s=$(dd if=/dev/vda bs=64k skip=$seek count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$s" = "$up_sha" ] && pass "blk-write-readback" || fail "blk-write-readback: $s"
say "wrote-last-mib $up_sha"

edu_test

if [ "$demo" = full ]; then
    if [ "$net" = 1 ]; then
        ok virtio-net-translated "00:05.0 not translated" attached 0000:00:05.0
        ok e1000e-translated "00:06.0 not translated" attached 0000:00:06.0
        net_check virtio_net 10.0.2
        net_check e1000e 10.0.3
    else
        say "SKIP network checks (no network peer on the host)"
    fi

    # QEMU hot-plug behind a PCIe root port: translated before its driver
    # binds (bus notifier), detached when it goes
    dmesg -c >/dev/null
    say "request device_add"
    ok hotplug-add "no /dev/vdb within 60 s" wait_for /dev/vdb 60
    ok hotplug-translated "01:00.0 not translated" attached 0000:01:00.0
    s=$(dd if=/dev/vdb bs=64k iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$s" = "$hp_sha" ] && pass "hotplug-read" || fail "hotplug-read: sha256 $s"
    say "request device_del"
    ok hotplug-del "/dev/vdb stays" wait_gone /dev/vdb 60
    i=0
    while ! dmesg | grep -q '0000:01:00.0: iommu_emul_dma: removed' && [ $i -lt 100 ]; do
        sleep 0.1; i=$((i + 1))
    done
    dmesg | grep -q '0000:01:00.0: iommu_emul_dma: removed' &&
        pass "hotplug-del-detached" || fail "hotplug-del-detached: no message"

    # the driver refuses to go while mappings are live (virtio-blk's rings)
    if rmmod iommu_emul_dma 2>/dev/null; then
        fail "unload-refused-while-mapped: rmmod succeeded"
        insmod $ied_ko $ied_args
    else
        pass "unload-refused-while-mapped"
    fi

    # removal detaches the domain, a new function is translated before bind
    dmesg -c >/dev/null
    echo 1 >/sys/bus/pci/devices/0000:00:04.0/remove
    ok pci-remove "/dev/vda stays" wait_gone /dev/vda 30
    dmesg | grep -q '0000:00:04.0: iommu_emul_dma: removed' &&
        pass "pci-remove-detached" || fail "pci-remove-detached: no message"
    echo 1 >/sys/bus/pci/rescan
    ok pci-rescan "no /dev/vda" wait_for /dev/vda 30
    ok pci-rescan-translated "00:04.0 not translated" attached 0000:00:04.0
    blk_read blk-read-after-rescan 64k head

    # unload and load again
    unload_drivers
    sleep 1
    ok rmmod "rmmod iommu_emul_dma failed: $(status | grep -E '^(live|dev)')" rmmod iommu_emul_dma
    # shellcheck disable=SC2086
    ok reinsmod "insmod failed" insmod $ied_ko $ied_args
    load_drivers
    ok reload-blk "no /dev/vda" wait_for /dev/vda 30
    ok reload-translated "00:04.0 not translated" attached 0000:00:04.0
    blk_read blk-read-after-reload 64k head
fi

if [ "$demo" = strict ]; then
    # passthrough=1: nothing translated, direct DMA works
    unload_drivers
    sleep 1
    ok rmmod "rmmod iommu_emul_dma failed" rmmod iommu_emul_dma
    ok insmod-passthrough "insmod failed" insmod $ied_ko passthrough=1
    status | grep -q '^attached: 0$' && pass "passthrough-none-attached" ||
        fail "passthrough-none-attached: $(status | grep '^attached')"
    load_drivers
    ok passthrough-blk "no /dev/vda" wait_for /dev/vda 30
    blk_read blk-read-passthrough 64k head
    status | grep -q '^maps: 0$' && pass "passthrough-no-maps" ||
        fail "passthrough-no-maps: $(status | grep '^maps')"
fi

dmesg | grep -E 'iommu_emul_dma.*(DMA fault|removed|left|failed)' | head -n 20 |
    sed 's/^\[[^]]*\] /demo: kernel: /'
kernel_clean
finish
