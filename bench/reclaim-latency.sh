#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Reclaim latency per buffer of the page offline engine, one by one and
# all at once, on 4 KiB pages and on transparent huge pages, printed as
# ratios to a memcpy() of the same buffer and to the bare UFFDIO_MOVE +
# UFFDIO_COPY floor, both measured in the same run.
# Usage: bench/reclaim-latency.sh [-n BUFFERS] [-s BUFFER-SIZE] [-r ROUNDS]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/configure-wrapper.sh" build >/dev/null
exec "$top/build/qemu/build/tests/bench/page-offline-bench" "$@"
