#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# wrapper/fuzz.sh: the qemu-zc fuzzing and sanitizer runs.
#
# One clang build with libFuzzer, ASan and UBSan (build/qemu/build-fuzz)
# serves both the fuzz targets of tests/qtest/fuzz/ and the project's
# tests under the sanitizers. See docs/devel/testing/qemu-zc-fuzzing.rst.
#
#   wrapper/fuzz.sh build                 install clang-16 and libFuzzer, build
#   wrapper/fuzz.sh sanitizer-tests       project qtests + unit test, ASan+UBSan
#   wrapper/fuzz.sh smoke [SECONDS]       each target SECONDS (default 60)
#   wrapper/fuzz.sh replay                each target over the checked-in corpus
#   wrapper/fuzz.sh campaign TARGET SECONDS   one sitting of a campaign
#   wrapper/fuzz.sh stats                 the campaign figures so far
#   wrapper/fuzz.sh seeds                 regenerate fuzz/corpus/ seeds
#   wrapper/fuzz.sh list                  the targets
#
# Environment: QEMU_ZC_FUZZ_BUILD (build directory name, default
# build-fuzz), QEMU_ZC_FUZZ_OUT (campaign corpora, crashes and logs,
# default build/fuzz), QEMU_ZC_FUZZ_CC / QEMU_ZC_FUZZ_CXX (default
# clang-16 / clang++-16), QEMU_ZC_FUZZ_JOBS (ninja -j), QEMU_ZC_SAN_QTESTS
# (the qtests of sanitizer-tests), QEMU_ZC_SAN_SKIP (test paths that
# sanitizer-tests leaves out). Every fuzzer runs on one core.

set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_NAME=${QEMU_ZC_FUZZ_BUILD:-build-fuzz}
B=$TOP/build/qemu/$BUILD_NAME
OUT=${QEMU_ZC_FUZZ_OUT:-$TOP/build/fuzz}
CORPUS=$TOP/fuzz/corpus
CC_FUZZ=${QEMU_ZC_FUZZ_CC:-clang-16}
CXX_FUZZ=${QEMU_ZC_FUZZ_CXX:-clang++-16}
FUZZER=$B/qemu-fuzz-x86_64

TARGETS="generic-fuzz-iommu-emul generic-fuzz-virtio-zc generic-fuzz-virtio-zc-listen qemu-zc-iommu-emul-fuzz qemu-zc-virtio-zc-fuzz qemu-zc-iommu-emul-migration-fuzz"

# The project's tests under the sanitizers (QEMU_ZC_SAN_QTESTS picks a
# subset of the qtests, e.g. to leave out iommu-emul-test, the long one)
SAN_QTESTS=${QEMU_ZC_SAN_QTESTS:-iommu-emul-test virtio-zc-test qemu-zc-fuzz-regress-test}
SAN_UNIT="test-page-offline"
# Test paths left out under the sanitizers (glib's -s), space-separated.
# /page-offline/many-bounded bounds the process's VMA count, which ASan's
# own allocator mappings break (187 VMAs for a bound of 167): it runs in
# the ordinary build only, until the test allows for them.
SAN_SKIP=${QEMU_ZC_SAN_SKIP-/page-offline/many-bounded}

note() { echo "fuzz.sh: $*"; }
die() { echo "fuzz.sh: error: $*" >&2; exit 1; }

# The one upstream leak the README documents (migration/file.c keeps the
# file name of a non-multifd file: migration): nothing broader.
lsan_supp() {
    local f=$OUT/lsan.supp
    mkdir -p "$OUT"
    echo "leak:file_start_outgoing_migration" >"$f"
    echo "$f"
}

# Sanitizer options: any report is fatal (UBSan would print and go on).
san_env() {
    export ASAN_OPTIONS=${ASAN_OPTIONS:-fast_unwind_on_malloc=0:detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
    export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(lsan_supp)}
}

# libFuzzer runs: an input that mallocs more than it frees is run again
# under LeakSanitizer (-detect_leaks=1); a run of over 30 s is a hang.
# For readable leak stacks add fast_unwind_on_malloc=0 (much slower).
fuzz_env() {
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
}
FUZZ_ARGS=(-timeout=30 -rss_limit_mb=4096 -print_final_stats=1)

do_build() {
    local missing=()
    command -v "$CC_FUZZ" >/dev/null || missing+=(clang-16)
    [ -e /usr/lib/llvm-16/lib/clang/16/lib/linux/libclang_rt.fuzzer-x86_64.a ] ||
        missing+=(libfuzzer-16-dev libclang-rt-16-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: sudo apt-get install ${missing[*]}"
        note "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >"$OUT.apt.log" 2>&1 ||
            { tail -n 20 "$OUT.apt.log" >&2; die "apt-get install failed"; }
    fi
    local cc=$CC_FUZZ cxx=$CXX_FUZZ
    if command -v ccache >/dev/null; then
        cc="ccache $CC_FUZZ"
        cxx="ccache $CXX_FUZZ"
    fi
    # Tree and configure only: ninja builds just what the fuzzing and the
    # sanitizer run need, not the whole tree
    "$TOP/configure-wrapper.sh" setup --build-dir "$BUILD_NAME" -- \
        "--cc=$cc" "--cxx=$cxx" --enable-fuzzing --enable-asan --enable-ubsan
    note "building the fuzzer and the sanitizer tests in $B"
    ninja -C "$B" ${QEMU_ZC_FUZZ_JOBS:+-j "$QEMU_ZC_FUZZ_JOBS"} \
        qemu-fuzz-x86_64 qemu-system-x86_64 \
        $(for t in $SAN_QTESTS; do echo "tests/qtest/$t"; done) \
        $(for t in $SAN_UNIT; do echo "tests/unit/$t"; done) \
        >"$TOP/build/qemu/.qemu-zc-ninja-$BUILD_NAME-tests.log" 2>&1 ||
        { tail -n 30 "$TOP/build/qemu/.qemu-zc-ninja-$BUILD_NAME-tests.log" >&2; die "build failed"; }
}

need_fuzzer() {
    [ -x "$FUZZER" ] || die "no $FUZZER: run wrapper/fuzz.sh build first"
}

# Run one test binary; fail on its exit status or any sanitizer report.
# Prints its TAP counts on stdout as "PASS FAIL".
run_san_test() {
    local name=$1 bin=$2 log=$OUT/san-$1.log rc=0 p skip=()
    for p in $SAN_SKIP; do
        skip+=(-s "$p")
    done
    (cd "$B" && QTEST_QEMU_BINARY=./qemu-system-x86_64 QEMU_ZC_TEST_PRIVILEGED=${QEMU_ZC_TEST_PRIVILEGED:-} \
        "$bin" --tap -k "${skip[@]}") >"$log" 2>&1 || rc=$?
    local pass fail
    pass=$(grep '^ok ' "$log" | grep -vc '# SKIP' || true)
    fail=$(grep -c '^not ok ' "$log" || true)
    if grep -q -E 'runtime error:|ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer' "$log"; then
        echo "$name: sanitizer report (log: $log):" >&2
        grep -E -A15 'runtime error:|ERROR: .*Sanitizer' "$log" | head -n 40 >&2
        rc=1
    fi
    if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then
        fail=1
    fi
    echo "$pass $fail"
    return 0
}

do_sanitizer_tests() {
    local t total_p=0 total_f=0 p f t0 failed=()
    [ -x "$B/qemu-system-x86_64" ] || die "no $B/qemu-system-x86_64: run wrapper/fuzz.sh build first"
    mkdir -p "$OUT"
    san_env
    for t in $SAN_QTESTS $SAN_UNIT; do
        local bin=tests/qtest/$t
        case "$t" in test-*) bin=tests/unit/$t ;; esac
        t0=$(date +%s)
        read -r p f < <(run_san_test "$t" "$bin")
        printf 'sanitizer %-28s %4d passed %3d failed %5ds\n' "$t" "$p" "$f" $(($(date +%s) - t0))
        total_p=$((total_p + p))
        total_f=$((total_f + f))
        [ "$f" = 0 ] || failed+=("$t")
    done
    echo "sanitizer tests: $total_p passed, $total_f failed"
    [ ${#failed[@]} = 0 ] || die "sanitizer run failed: ${failed[*]} (logs in $OUT)"
}

# Run TARGET with ARGS on corpus dirs; the first dir is written to.
run_fuzzer() {
    local target=$1 max_len=4096; shift
    # a migration stream carries the 4 KiB PCI Express config space
    case "$target" in *migration*) max_len=16384 ;; esac
    fuzz_env
    "$FUZZER" --fuzz-target="$target" "${FUZZ_ARGS[@]}" -max_len=$max_len "$@"
}

do_smoke() {
    local secs=${1:-60} t w log rc failed=()
    need_fuzzer
    mkdir -p "$OUT/smoke"
    for t in $TARGETS; do
        w=$(mktemp -d "$OUT/smoke/$t.XXXXXX")
        log=$OUT/smoke/$t.log
        rc=0
        run_fuzzer "$t" -max_total_time="$secs" -artifact_prefix="$OUT/smoke/$t-" \
            "$w" "$CORPUS/$t" >"$log" 2>&1 || rc=$?
        rm -rf "$w"
        note "smoke $t: $(summary "$log") rc=$rc"
        if [ $rc != 0 ]; then
            grep -E -A20 'ERROR|runtime error|deadly signal|timeout' "$log" | head -n 40 >&2 || true
            failed+=("$t")
        fi
    done
    [ ${#failed[@]} = 0 ] || die "fuzz smoke failed: ${failed[*]} (logs in $OUT/smoke)"
}

do_replay() {
    local t log rc n failed=()
    need_fuzzer
    mkdir -p "$OUT/replay"
    for t in $TARGETS; do
        log=$OUT/replay/$t.log
        n=$(find "$CORPUS/$t" -type f | wc -l)
        rc=0
        # -runs=0: execute every corpus input once, then stop
        run_fuzzer "$t" -runs=0 "$CORPUS/$t" >"$log" 2>&1 || rc=$?
        note "replay $t: $n inputs, $(summary "$log") rc=$rc"
        if [ $rc != 0 ]; then
            grep -E -A20 'ERROR|runtime error|deadly signal|timeout' "$log" | head -n 40 >&2 || true
            failed+=("$t")
        fi
    done
    [ ${#failed[@]} = 0 ] || die "corpus replay failed: ${failed[*]} (logs in $OUT/replay)"
}

# "execs N, cov C, ft F, exec/s E" from a libFuzzer log
summary() {
    local log=$1 execs cov ft eps
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    echo "execs ${execs:-?}, exec/s ${eps:-?}, cov ${cov:-?}, ft ${ft:-?}"
}

do_campaign() {
    local t=${1:?campaign needs a TARGET} secs=${2:?campaign needs SECONDS}
    local dir=$OUT/corpus/$t log t0 t1 rc=0 execs eps cov ft
    need_fuzzer
    mkdir -p "$dir" "$OUT/crashes" "$OUT/logs"
    log=$OUT/logs/$t-$(date +%Y%m%d-%H%M%S).log
    t0=$(date +%s)
    run_fuzzer "$t" -max_total_time="$secs" -artifact_prefix="$OUT/crashes/$t-" \
        "$dir" "$CORPUS/$t" >"$log" 2>&1 || rc=$?
    t1=$(date +%s)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" \
        "${execs:-0}" "${eps:-0}" "${cov:-0}" "${ft:-0}" $((t1 - t0)) "$rc" \
        >>"$OUT/campaign.tsv"
    note "campaign $t: $((t1 - t0)) s, $(summary "$log"), rc=$rc, log $log"
    [ $rc = 0 ] || { grep -E -A30 'ERROR|runtime error|deadly signal' "$log" | head -n 50 >&2 || true; exit 1; }
}

do_stats() {
    [ -f "$OUT/campaign.tsv" ] || die "no campaign yet ($OUT/campaign.tsv)"
    # per target: sittings, executions, wall time, last cov/ft
    awk -F'\t' '{ n[$2]++; e[$2]+=$3; w[$2]+=$7; c[$2]=$5; f[$2]=$6 }
        END { printf "%-36s %8s %12s %9s %8s %6s %6s\n", "target", "sittings",
                     "executions", "wall s", "exec/s", "cov", "ft";
              for (t in n) printf "%-36s %8d %12d %9d %8.0f %6d %6d\n", t, n[t],
                     e[t], w[t], w[t] ? e[t] / w[t] : 0, c[t], f[t] }' "$OUT/campaign.tsv"
}

do_seeds() {
    need_fuzzer
    /usr/bin/python3 "$TOP/fuzz/make-seeds.py" "$CORPUS"
    local t=qemu-zc-iommu-emul-migration-fuzz
    rm -rf "${CORPUS:?}/$t"
    # The target writes streams of device states it sets up, then stops
    fuzz_env
    QEMU_ZC_FUZZ_SEED_DIR=$CORPUS/$t "$FUZZER" --fuzz-target=$t -runs=0 \
        "$(mktemp -d)" >"$OUT.seeds.log" 2>&1 || { tail -n 20 "$OUT.seeds.log" >&2; die "seed generation failed"; }
    du -sh "$CORPUS"
}

# All of the script is read before anything runs (main, then exit on the
# same line): editing it while a long campaign runs cannot break that run.
main() {
mkdir -p "$(dirname "$OUT")"
case "${1:-}" in
build) do_build ;;
sanitizer-tests) do_sanitizer_tests ;;
smoke) do_smoke "${2:-60}" ;;
replay) do_replay ;;
campaign) do_campaign "${2:-}" "${3:-}" ;;
stats) do_stats ;;
seeds) do_seeds ;;
list) echo "$TARGETS" | tr ' ' '\n' ;;
*) sed -n '4,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
}
main "$@"; exit $?
