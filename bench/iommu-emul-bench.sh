#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# iommu-emul at the device, through qtest, with 10, 1000 and 10000 live
# mappings: map+unmap operations per second (a batch of commands per
# doorbell) with the pin cache off and on, and the time per page
# translated for a virtio-blk's DMA. With -b REV, the same figures of
# the project at git revision REV, built side by side in
# build/bench-base/REV, and their ratios. Exits non-zero if a command
# failed, a DMA faulted or a request did not complete with status OK.
# Usage: bench/iommu-emul-bench.sh [-b REV] [-r REPS] [-k MAPS] [-q REQS]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rev=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
    -b) rev="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
    esac
done
"$top/configure-wrapper.sh" build >/dev/null
base_qemu=""
if [ -n "$rev" ]; then
    sha=$(git -C "$top" rev-parse --verify "$rev^{commit}")
    base="$top/build/bench-base/${sha:0:12}"
    if [ ! -d "$base/.git" ]; then
        rm -rf "$base"
        git clone -q --shared --no-checkout "$top" "$base"
        git -C "$base" checkout -q --detach "$sha"
    fi
    echo "iommu-emul-bench: building the baseline ${sha:0:12} in $base" >&2
    "$base/configure-wrapper.sh" build >/dev/null
    base_qemu="$base/build/qemu/build/qemu-system-x86_64"
fi
cd "$top/build/qemu/build"
# libqtest announces every QEMU it starts; keep only the results
IOMMU_EMUL_BENCH_BASE_QEMU="$base_qemu" \
QTEST_QEMU_BINARY=./qemu-system-x86_64 \
    tests/qtest/iommu-emul-bench ${args[@]+"${args[@]}"} |
    grep -v '^# starting QEMU'
