#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# virtio-zc at the device, through qtest, each figure next to a baseline
# measured in the same run: a reset with stalled buffers in flight
# against an idle reset, on THP-backed guest RAM and on 4 KiB pages
# (each figure names the memory it found under the buffers), and zero
# copy against the copy path. Exits non-zero if a buffer was lost,
# completed twice, changed or mis-sent.
# Usage: bench/virtio-zc-bench.sh [-n STALLED[,STALLED...]] [-s SIZE]
#            [-r REPS] [-m ROUNDS] [-t thp,4k] [-R (no throughput)]
#            [-P (spare-pool at its default, not sized to the buffers)]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/configure-wrapper.sh" build >/dev/null
cd "$top/build/qemu/build"
# libqtest announces every QEMU it starts; keep only the results
QTEST_QEMU_BINARY=./qemu-system-x86_64 tests/qtest/virtio-zc-bench "$@" |
    grep -v '^# starting QEMU'
