#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Reclaim latency per buffer of the page offline engine, printed as a
# ratio to a memcpy() of the same buffer measured in the same run.
# Usage: bench/reclaim-latency.sh [-n BUFFERS] [-s BUFFER-SIZE]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/configure-wrapper.sh" build >/dev/null
exec "$top/build/qemu/build/tests/bench/page-offline-bench" "$@"
