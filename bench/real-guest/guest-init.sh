#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# /init of the real-guest benchmark VM (bench/real-guest-bench.sh). The
# same guest and workload in every configuration. Parameters come from
# the kernel command line (as environment variables):
#   cfg       a b c d e (only for the log)
#   load      none | virtio_iommu | iommu_emul_dma: loaded before the drivers
#   sha64     SHA-256 of the whole disk /dev/vda
#   sha4      SHA-256 of its first 8 MiB
#   reps      timed repetitions of each workload (default 3)
#   net_port  port of the host's receiver on 10.0.2.2 (0: no network)
#   net_mib   MiB sent per network run (default 16)
#   blk4_mib  MiB read per 4 KiB run (default 8)
# Output lines, all starting with "bench: ":
#   PASS name / FAIL name: why      data checks
#   snap NAME                       the host records the counters, then
#                                   sends one byte on ttyS1 to go on
#   drv NAME reuses N               before it: the iommu_emul_dma driver's
#                                   count of MAPs taken back from queued UNMAPs
#   result WORKLOAD BYTES CENTISECONDS [REPLY]   one timed run
#   done
# Timing: /proc/uptime, 10 ms ticks (busybox dd prints no timing).

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmp /tmp

say() { echo "bench: $*"; }
now() { t=$(cut -d' ' -f1 /proc/uptime); echo "${t%.*}${t#*.}"; }
finish() {
    if dmesg | grep -E 'BUG|WARNING|Oops|Call Trace|blk_update_request|I/O error' >/tmp/bad; then
        sed 's/^/bench: kernel: /' /tmp/bad | head -n 20
        say "FAIL kernel-log: BUG/WARNING/Oops/I/O error"
    fi
    [ -r /sys/kernel/debug/iommu_emul_dma ] &&
        cat /sys/kernel/debug/iommu_emul_dma/*/status 2>/dev/null | sed 's/^/bench: status: /'
    say "done"
    while :; do sleep 3600; done
}

exec 3</dev/ttyS1
stty raw -echo <&3
snap() {
    # iommu_emul_dma: MAPs it served by taking back a queued UNMAP
    for f in /sys/kernel/debug/iommu_emul_dma/*/status; do
        [ -r "$f" ] && say "drv $1 reuses $(sed -n 's/^reuses: //p' "$f")"
    done
    say "snap $1"
    dd bs=1 count=1 <&3 >/dev/null 2>&1
}

case "$load" in
iommu_emul_dma) insmod /iommu_emul_dma.ko || say "FAIL insmod iommu_emul_dma" ;;
virtio_iommu) insmod /lib/modules/virtio_iommu.ko || say "FAIL insmod virtio_iommu" ;;
esac
for m in $(cat /lib/modules/order); do
    grep -q "^$m " /proc/modules || insmod "/lib/modules/$m.ko" || say "FAIL insmod $m"
done
i=0
while [ ! -e /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -e /dev/vda ] || { say "FAIL no /dev/vda"; finish; }
reps=${reps:-3}
blk4_mib=${blk4_mib:-8}
net_mib=${net_mib:-16}

# data checks (untimed; they also warm the pin cache): whole disk at
# 64 KiB, its first blk4_mib MiB at 4 KiB, O_DIRECT, against the host's
# SHA-256
s=$(dd if=/dev/vda bs=64k iflag=direct 2>/tmp/dd.err | sha256sum | cut -d' ' -f1)
[ "$s" = "$sha64" ] && say "PASS blk-64k-data" || say "FAIL blk-64k-data: $s ($(cat /tmp/dd.err))"
s=$(dd if=/dev/vda bs=4k count=$((blk4_mib * 256)) iflag=direct 2>/tmp/dd.err | sha256sum | cut -d' ' -f1)
[ "$s" = "$sha4" ] && say "PASS blk-4k-data" || say "FAIL blk-4k-data: $s ($(cat /tmp/dd.err))"

size=$(( $(cat /sys/block/vda/size) * 512 ))
timed_dd() { # timed_dd NAME BS COUNT
    t0=$(now)
    if dd if=/dev/vda of=/dev/null bs=$2 count=$3 iflag=direct 2>/tmp/dd.err; then
        t1=$(now)
        say "result $1 $(( ${2%k} * 1024 * $3 )) $((t1 - t0))"
    else
        say "FAIL $1-dd: $(cat /tmp/dd.err)"
    fi
}

snap blk64-start
r=0
while [ $r -lt "$reps" ]; do r=$((r + 1)); timed_dd blk64 64k $((size / 65536)); done
snap blk64-end
r=0
while [ $r -lt "$reps" ]; do r=$((r + 1)); timed_dd blk4 4k $((blk4_mib * 256)); done
snap blk4-end

if [ "${net_port:-0}" != 0 ]; then
    ifc=
    for n in /sys/class/net/*; do
        [ "$(basename "$(readlink "$n/device/driver")" 2>/dev/null)" = virtio_net ] && ifc=$(basename "$n")
    done
    if [ -z "$ifc" ]; then
        say "FAIL net: no virtio_net interface"
    else
        ifconfig "$ifc" 10.0.2.15 netmask 255.255.255.0 up
        dd if=/dev/urandom of=/tmp/blob bs=1M count="$net_mib" 2>/dev/null
        want="$((net_mib * 1048576)) $(sha256sum /tmp/blob | cut -d' ' -f1)"
        # one untimed send: ARP, the receiver's first connection
        got=$(timeout 60 nc 10.0.2.2 "$net_port" </tmp/blob)
        if [ "$got" = "$want" ]; then
            say "PASS net-tx-data"
        else
            say "FAIL net-tx-data: host got '$got', sent '$want'"
            reps=0      # the path does not work: no timed runs
        fi
        netinfo() { # packets of the interface, TCP segments out, retransmitted, timeouts
            echo "tx_packets $(cat /sys/class/net/$ifc/statistics/tx_packets)" \
                "rx_packets $(cat /sys/class/net/$ifc/statistics/rx_packets)" \
                "$(awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ { print "out_segs", $12, "retrans_segs", $13 }' /proc/net/snmp)" \
                "$(awk '$1 == "TcpExt:" && !h { for (i = 2; i <= NF; i++) n[i] = $i; h = 1; next }
                        $1 == "TcpExt:" { for (i = 2; i <= NF; i++) if (n[i] == "TCPTimeouts") print "timeouts", $i }' /proc/net/netstat)"
        }
        say "info net-start $(netinfo)"
        snap net-start
        r=0
        while [ $r -lt "$reps" ]; do
            r=$((r + 1))
            t0=$(now)
            got=$(timeout 60 nc 10.0.2.2 "$net_port" </tmp/blob)
            t1=$(now)
            if [ "$got" = "$want" ]; then
                say "result net $((net_mib * 1048576)) $((t1 - t0))"
            else
                # a stuck queue stays stuck: do not wait for it again
                say "FAIL net-tx-run: host got '$got', sent '$want'"
                break
            fi
        done
        say "info net-end $(netinfo)"
        snap net-end
    fi
fi
finish
