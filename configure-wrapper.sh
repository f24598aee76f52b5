#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# configure-wrapper.sh: the one entry point of qemu-zc.
#
# Gets QEMU 10.0.13, installs the build dependencies, prepares a git work
# tree (pristine base commit + patches/ applied with git am + the new files
# overlaid), builds it with ninja/ccache, and runs the demo VM or the tests.
# Run with --help for the commands and options.

set -euo pipefail

QEMU_VERSION=10.0.13
DEB_VERSION=1:10.0.13+ds-0+deb13u1
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OVERLAY_DIRS="hw include docs tests system util"

# Defaults; see usage().
cmd=all
qemu_src=
qemu_tarball=
tree=${QEMU_ZC_TREE:-$TOP/build/qemu}
builddir=build
target_list=x86_64-softmmu
cache=${QEMU_ZC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemu-zc}
export_dir=
extra_conf=()
test_args=()
jobs=

usage() {
    cat <<EOF
Usage: $0 [COMMAND] [OPTIONS] [-- EXTRA-CONFIGURE-ARGS]

Commands:
  all        (default) set up, build, then run the demo VM
  setup      install dependencies, fetch QEMU, prepare and configure the tree
  build      setup, then build with ninja (incremental)
  demo       build, then boot a TCG VM with both devices, show them via QMP
  test       build, then run the project's qtests and the upstream subset;
             ends with "N passed, N failed"; extra args after -- are
             meson test names that replace the default list
  lint       checkpatch.pl on the new files and patches/, SPDX lines
  export     same as --export-series DIR
  fresh-system [--keep] [--suite SUITE]
             run commands one and two in a brand-new minimal Debian
             system (mmdebstrap chroot), sharing only the download caches
             and ccache with this machine; root only

Options:
  --qemu-src DIR        use this QEMU 10.0.x source tree (e.g. a git checkout)
  --qemu-tarball FILE   use this QEMU 10.0.x tarball (qemu-10.0.x.tar.xz)
  --tree DIR            work tree location (default: build/qemu in this repo)
  --build-dir NAME      build directory inside the tree (default: build)
  --target-list LIST    QEMU targets (default: x86_64-softmmu)
  --export-series DIR   write an upstream-ready git format-patch series to DIR
  -j N                  ninja parallelism
  -h, --help            this text
Environment:
  QEMU_ZC_CACHE  download cache (default: ~/.cache/qemu-zc)
  QEMU_ZC_STATE  guest demo state: builds, initramfs, logs
                 (default: build/state in this repository)
  QEMU_ZC_GUEST  0 skips the guest demos of the test command
  CCACHE_DIR     ccache directory (ccache's default otherwise)
EOF
}

die() {
    echo "configure-wrapper: error: $*" >&2
    exit 1
}

note() {
    echo "configure-wrapper: $*"
}

while [ $# -gt 0 ]; do
    case "$1" in
    all|setup|build|demo|test|lint) cmd=$1 ;;
    fresh-system) shift; exec "$TOP/wrapper/fresh-system.sh" "$@" ;;
    export) cmd=export ;;
    --qemu-src)
        [ -d "${2:?--qemu-src needs a directory}" ] || die "--qemu-src: no such directory: $2"
        qemu_src=$(cd "$2" && pwd); shift ;;
    --qemu-tarball)
        [ -f "${2:?--qemu-tarball needs a file}" ] || die "--qemu-tarball: no such file: $2"
        qemu_tarball=$(realpath "$2"); shift ;;
    --tree) tree=$(realpath -m "${2:?--tree needs a directory}"); shift ;;
    --build-dir) builddir=${2:?--build-dir needs a name}; shift ;;
    --target-list) target_list=${2:?--target-list needs a list}; shift ;;
    --export-series) cmd=export; export_dir=$(realpath -m "${2:?--export-series needs a directory}"); shift ;;
    -j) jobs=${2:?-j needs a number}; shift ;;
    -j*) jobs=${1#-j} ;;
    -h|--help) usage; exit 0 ;;
    --) shift
        if [ "$cmd" = test ]; then
            test_args=("$@")
        else
            extra_conf=("$@")
        fi
        break ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
done
[ "$cmd" != export ] || [ -n "$export_dir" ] || die "export needs --export-series DIR"
[ -z "$qemu_src" ] || [ -z "$qemu_tarball" ] || die "--qemu-src and --qemu-tarball exclude each other"

B=$tree/$builddir

# ccache: rewrite absolute paths under the tree to relative ones and leave
# the build directory out of the hash, so that a tree at another path (a
# fresh clone) hits the cache.
export CCACHE_BASEDIR=$tree
export CCACHE_NOHASHDIR=true

# ---------------------------------------------------------------------------
# Dependencies

. /etc/os-release 2>/dev/null || true
debian_major=${VERSION_ID:-0}

# "package:command-or-file" pairs: a package is missing if its probe fails.
deps_probe() {
    local ok=1
    missing=()
    for pair in \
        "git:git" "gcc:gcc" "make:make" "pkg-config:pkg-config" \
        "ninja-build:ninja" "flex:flex" "bison:bison" "ccache:ccache" \
        "dpkg-dev:dpkg-source" "python3-venv:/usr/lib/python3.*/ensurepip/__init__.py" \
        "libglib2.0-dev:/usr/lib/x86_64-linux-gnu/pkgconfig/glib-2.0.pc" \
        "libpixman-1-dev:/usr/lib/x86_64-linux-gnu/pkgconfig/pixman-1.pc" \
        "liburing-dev:/usr/include/liburing.h" \
        "libfdt-dev:/usr/include/libfdt.h" "zlib1g-dev:/usr/include/zlib.h" \
        "python3-pycotap:/usr/lib/python3/dist-packages/pycotap/__init__.py" \
        "seabios:/usr/share/seabios/bios-256k.bin" \
        "ipxe-qemu:/usr/lib/ipxe/qemu/efi-virtio.rom" \
        "qemu-system-data:/usr/share/qemu/keymaps/en-us"; do
        local pkg=${pair%%:*} probe=${pair#*:}
        if [[ $probe == /* ]]; then
            # shellcheck disable=SC2086
            compgen -G "$probe" >/dev/null || { missing+=("$pkg"); ok=0; }
        else
            command -v "$probe" >/dev/null || { missing+=("$pkg"); ok=0; }
        fi
    done
    if ! meson_ok; then
        missing+=("meson"); ok=0
    fi
    [ $ok = 1 ]
}

meson_ok() {
    local v
    v=$(/usr/bin/python3 -c 'import mesonbuild.coredata as c; print(c.version)' 2>/dev/null) || return 1
    /usr/bin/python3 - "$v" <<'EOF'
import sys
v = tuple(int(x) for x in sys.argv[1].split('.')[:2])
sys.exit(0 if v >= (1, 5) else 1)
EOF
}

# The deb822 URIs of the machine's main Debian archive (not -security), or of
# the one-line sources.list format.
debian_mirror() {
    local uri
    uri=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
          awk '{print $2}' | grep -v -e security -e '^$' | head -n 1)
    if [ -z "$uri" ]; then
        uri=$(grep -hs -E '^deb(-src)? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
              grep -v security | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }')
    fi
    [ -n "$uri" ] || die "cannot find a Debian mirror in /etc/apt/sources.list*; add one and retry"
    echo "$uri"
}

apt_sources_setup() {
    local mirror changed=0
    mirror=$(debian_mirror)
    if [ "$debian_major" = 12 ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        note "adding bookworm-backports (for meson >= 1.5, python3-pycotap) from $mirror"
        cat >/etc/apt/sources.list.d/qemu-zc-backports.sources <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        changed=1
    fi
    if ! apt_has_trixie_src; then
        note "adding a deb-src entry for trixie (QEMU's source package) from $mirror"
        cat >/etc/apt/sources.list.d/qemu-zc-trixie-src.sources <<EOF
Types: deb-src
URIs: $mirror
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        changed=1
    fi
    if [ $changed = 1 ] || ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        note "apt-get update"
        apt-get update -qq || die "apt-get update failed: no access to the package archive?"
    fi
}

apt_has_trixie_src() {
    grep -rhs -A4 -E '^Types:.*deb-src' /etc/apt/sources.list.d/*.sources | grep -q -E '^Suites:.*\btrixie\b' && return 0
    grep -hs -E '^deb-src .* trixie( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | grep -q .
}

# Splits "missing" into "bp" (from bookworm-backports) and "rest".
split_backports() {
    local p
    for p in "${missing[@]}"; do
        if [ "$debian_major" = 12 ] && { [ "$p" = meson ] || [ "$p" = python3-pycotap ]; }; then
            bp+=("$p/bookworm-backports")
        else
            rest+=("$p")
        fi
    done
}

install_deps() {
    if deps_probe; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        local bp=() rest=()
        split_backports
        echo "configure-wrapper: missing build dependencies: ${missing[*]}" >&2
        echo "Run this once as root: sudo $0 setup" >&2
        echo "or install them yourself:" >&2
        if [ ${#bp[@]} -gt 0 ]; then
            echo "  (add a bookworm-backports entry to your apt sources, then)" >&2
            echo "  sudo apt-get update" >&2
        fi
        echo "  sudo apt-get install ${rest[*]} ${bp[*]}" >&2
        exit 1
    fi
    apt_sources_setup
    local bp=() rest=()
    split_backports
    note "installing: ${missing[*]}"
    # A stale package list (a machine set up long ago) is the usual cause
    # of a failure: update once and retry.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${rest[@]}" "${bp[@]}" >"$cache/apt-install.log" 2>&1; then
        note "apt-get install failed; running apt-get update and retrying"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
              --no-install-recommends "${rest[@]}" "${bp[@]}"; } >>"$cache/apt-install.log" 2>&1 ||
            { tail -n 20 "$cache/apt-install.log" >&2; die "apt-get install failed (log: $cache/apt-install.log)"; }
    fi
    deps_probe || die "still missing after apt-get install: ${missing[*]}"
}

# ---------------------------------------------------------------------------
# QEMU source

check_version() {
    local dir=$1 v
    [ -f "$dir/VERSION" ] || die "$dir is not a QEMU source tree (no VERSION file)"
    v=$(cat "$dir/VERSION")
    case "$v" in
    10.0.*) ;;
    *) die "$dir is QEMU $v; qemu-zc needs QEMU 10.0.x (tested on $QEMU_VERSION)" ;;
    esac
    [ "$v" = "$QEMU_VERSION" ] || note "warning: QEMU $v, tested on $QEMU_VERSION"
}

# Prints the directory of an unpacked QEMU source tree.
fetch_source() {
    if [ -n "$qemu_src" ]; then
        echo "$qemu_src"
        return
    fi
    mkdir -p "$cache/src"
    if [ -n "$qemu_tarball" ]; then
        [ -f "$qemu_tarball" ] || die "no such tarball: $qemu_tarball"
        local key d
        key=$(sha256sum "$qemu_tarball" | cut -c1-16)
        d=$cache/src/tarball-$key
        if [ ! -f "$d/.complete" ]; then
            rm -rf "$d" && mkdir -p "$d"
            tar -xf "$qemu_tarball" -C "$d" --strip-components=1 ||
                die "cannot unpack $qemu_tarball"
            touch "$d/.complete"
        fi
        echo "$d"
        return
    fi
    local d=$cache/src/debian-$QEMU_VERSION
    if [ ! -f "$d/.complete" ]; then
        [ "$(id -u)" = 0 ] || apt_has_trixie_src ||
            die "no deb-src entry for trixie; run as root once, or pass --qemu-src/--qemu-tarball"
        [ "$(id -u)" != 0 ] || apt_sources_setup
        note "fetching Debian's qemu=$DEB_VERSION source package" >&2
        rm -rf "$d.dl" && mkdir -p "$d.dl"
        (cd "$d.dl" && apt-get source -q --only-source "qemu=$DEB_VERSION") >"$cache/apt-source.log" 2>&1 ||
            { [ "$(id -u)" = 0 ] && note "apt-get source failed; running apt-get update and retrying" >&2 &&
              apt-get update -q >>"$cache/apt-source.log" 2>&1 && rm -rf "$d.dl" && mkdir -p "$d.dl" &&
              (cd "$d.dl" && apt-get source -q --only-source "qemu=$DEB_VERSION") >>"$cache/apt-source.log" 2>&1; } ||
            { tail -n 20 "$cache/apt-source.log" >&2
              die "apt-get source qemu=$DEB_VERSION failed (no access to the package archive, or no deb-src for trixie?)"; }
        local u
        u=$(find "$d.dl" -maxdepth 1 -mindepth 1 -type d -name 'qemu-*' | head -n 1)
        [ -n "$u" ] || die "apt-get source left no qemu-* directory (see $cache/apt-source.log)"
        rm -rf "$d" && mv "$u" "$d" && rm -rf "$d.dl"
        touch "$d/.complete"
    fi
    echo "$d"
}

# ---------------------------------------------------------------------------
# Work tree: base commit, patches, overlay

GIT_ID=(-c user.name="qemu-zc developers" -c user.email="qemu-zc-devel@example.org"
        -c commit.gpgsign=false -c core.autocrlf=false)

patch_files() {
    local p
    for p in "$TOP"/patches/*.patch; do
        [ ! -e "$p" ] || echo "$p"
    done
}

patches_hash() {
    patch_files | while read -r p; do basename "$p"; cat "$p"; done |
        sha256sum | cut -c1-32
}

create_tree() {
    local src=$1
    note "creating work tree $tree from $src"
    rm -rf "$tree"
    mkdir -p "$tree"
    # Copy the sources, leaving out VCS data, Debian packaging and builds.
    tar -C "$src" --exclude=./.git --exclude=./debian --exclude=./.pc \
        --exclude='./build' --exclude=./.complete -cf - . | tar -C "$tree" -xf -
    git -C "$tree" init -q -b master
    echo '/.qemu-zc-*' >>"$tree/.git/info/exclude"
    git -C "$tree" "${GIT_ID[@]}" add -A -f
    git -C "$tree" "${GIT_ID[@]}" commit -q -m "QEMU $(cat "$tree/VERSION") (pristine base)"
    git -C "$tree" tag -f qemu-zc-base >/dev/null
}

apply_patches() {
    local p
    git -C "$tree" reset -q --hard qemu-zc-base
    rm -f "$tree/.qemu-zc-patches"
    for p in $(patch_files); do
        if ! git -C "$tree" "${GIT_ID[@]}" am -q --keep-cr "$p" >/dev/null 2>"$tree/.qemu-zc-git-am.log"; then
            cat "$tree/.qemu-zc-git-am.log" >&2
            git -C "$tree" am --abort 2>/dev/null || true
            die "patch does not apply: patches/$(basename "$p")"
        fi
    done
    git -C "$tree" tag -f qemu-zc-patched >/dev/null
    patches_hash >"$tree/.qemu-zc-patches"
    note "applied $(patch_files | wc -l) patches"
}

overlay_files() {
    (cd "$TOP" && for d in $OVERLAY_DIRS; do
        if [ -d "$d" ]; then
            git ls-files --cached --others --exclude-standard -- "$d"
        fi
    done) | sort -u | while read -r f; do
        if [ -f "$TOP/$f" ]; then
            echo "$f"
        fi
    done
}

# Copies changed overlay files only, so unchanged ones keep their mtime and
# ninja rebuilds nothing for them.
overlay() {
    local f n=0 list=$tree/.qemu-zc-overlay
    local new
    new=$(overlay_files)
    if [ -f "$list" ]; then
        # Remove files that left the overlay.
        comm -23 <(sort "$list") <(echo "$new") | while read -r f; do
            if ! git -C "$tree" cat-file -e "HEAD:$f" 2>/dev/null; then
                rm -f "$tree/$f"
            fi
        done
    fi
    while read -r f; do
        [ -n "$f" ] || continue
        if ! cmp -s "$TOP/$f" "$tree/$f"; then
            if git -C "$tree" cat-file -e "qemu-zc-base:$f" 2>/dev/null; then
                die "$f exists in upstream QEMU: change it with a patch in patches/, not in the overlay"
            fi
            mkdir -p "$(dirname "$tree/$f")"
            cp "$TOP/$f" "$tree/$f"
            n=$((n + 1))
        fi
    done <<<"$new"
    echo "$new" >"$list"
    [ $n = 0 ] || note "overlaid $n changed file(s)"
}

prepare_tree() {
    local src want
    want=${qemu_src:-${qemu_tarball:-}}
    if [ ! -d "$tree/.git" ] || ! git -C "$tree" rev-parse -q --verify qemu-zc-base >/dev/null ||
       { [ -n "$want" ] && [ "$want" != "$(cat "$tree/.qemu-zc-source" 2>/dev/null)" ]; }; then
        src=$(fetch_source)
        check_version "$src"
        create_tree "$src"
        echo "${want:-debian:$DEB_VERSION}" >"$tree/.qemu-zc-source"
        apply_patches
    elif [ "$(cat "$tree/.qemu-zc-patches" 2>/dev/null)" != "$(patches_hash)" ]; then
        note "patches/ changed: re-creating the patched tree"
        apply_patches
    fi
    check_version "$tree"
    overlay
}

# ---------------------------------------------------------------------------
# Configure and build

# One configure argument per line: ours, then the extra ones. Extra
# arguments given once stick to their build directory until others are given.
conf_args() {
    local cc=gcc
    if command -v ccache >/dev/null; then
        cc="ccache gcc"
    fi
    printf '%s\n' --cc="$cc" --target-list="$target_list" \
        --python=/usr/bin/python3 --without-default-features \
        --enable-kvm --enable-tcg --disable-docs --disable-download \
        --disable-install-blobs --enable-linux-io-uring
    if [ ${#extra_conf[@]} -gt 0 ]; then
        printf '%s\n' "${extra_conf[@]}"
    elif [ -f "$B/.qemu-zc-extra" ]; then
        cat "$B/.qemu-zc-extra"
    fi
}

configure_tree() {
    local args stamp=$B/.qemu-zc-configure argv=()
    args=$(conf_args)
    if [ -f "$B/build.ninja" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$args" ]; then
        return 0
    fi
    mapfile -t argv < <(conf_args)
    note "configuring $B: ${argv[*]}"
    local keep=""
    [ ! -f "$B/.qemu-zc-extra" ] || keep=$(cat "$B/.qemu-zc-extra")
    rm -rf "$B"
    mkdir -p "$B"
    (cd "$B" && ../configure "${argv[@]}") >"$tree/.qemu-zc-configure-$builddir.log" 2>&1 ||
        { tail -n 30 "$tree/.qemu-zc-configure-$builddir.log" >&2; die "configure failed (log: $tree/.qemu-zc-configure-$builddir.log)"; }
    echo "$args" >"$stamp"
    if [ ${#extra_conf[@]} -gt 0 ]; then
        printf '%s\n' "${extra_conf[@]}" >"$B/.qemu-zc-extra"
    elif [ -n "$keep" ]; then
        echo "$keep" >"$B/.qemu-zc-extra"
    fi
}

link_firmware() {
    local dest=$B/qemu-bundle/usr/local/share/qemu d f
    mkdir -p "$dest"
    for d in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
        [ -d "$d" ] || continue
        for f in "$d"/*; do
            [ -e "$f" ] || continue
            [ -e "$dest/$(basename "$f")" ] || ln -s "$f" "$dest/$(basename "$f")"
        done
    done
}

build() {
    local j=()
    [ -z "$jobs" ] || j=(-j "$jobs")
    note "building in $B"
    ninja -C "$B" "${j[@]}" "$@" >"$tree/.qemu-zc-ninja-$builddir.log" 2>&1 ||
        { grep -a -E -A5 'error|FAILED' "$tree/.qemu-zc-ninja-$builddir.log" | head -n 60 >&2
          die "build failed (log: $tree/.qemu-zc-ninja-$builddir.log)"; }
    link_firmware
}

do_setup() {
    mkdir -p "$cache"
    install_deps
    prepare_tree
    configure_tree
    link_firmware
}

# ---------------------------------------------------------------------------
# Demo, tests, export

# The main job: a real guest whose unmodified virtio-blk driver does its
# DMA through iommu-emul while the balloon takes memory back, then the
# virtio-zc guest demo (guest/main-job/README.md).
do_demo() {
    local qemu=$B/qemu-system-x86_64 help drv
    help=$("$qemu" -device help) || die "$qemu -device help failed"
    for drv in iommu-emul virtio-zc-pci; do
        grep -q "\"$drv\"" <<<"$help" || die "-device help does not list $drv"
    done
    note "launching a TCG guest with -device iommu-emul, then the virtio-zc guest demo"
    QEMU=$qemu QEMU_FIRMWARE=$B/qemu-bundle/usr/local/share/qemu \
        QEMU_DATA=$B/qemu-bundle/usr/local/share/qemu \
        "$TOP/guest/main-job/run.sh" demo
}

# qtests are named without their qtest-ARCH/ prefix; unit tests (test-*)
# by their meson name.
UPSTREAM_TESTS="device-introspect-test qom-test qmp-cmd-test intel-iommu-test amd-iommu-test virtio-balloon-test qos-test"
PROJECT_TESTS="iommu-emul-test virtio-zc-test qemu-zc-fuzz-regress-test test-page-offline"

do_test() {
    local arch=${target_list%%-*} t names=() rebuild=()
    if [ ${#test_args[@]} -gt 0 ]; then
        # meson test rebuilds just what the named tests need
        names=("${test_args[@]}")
    else
        for t in $PROJECT_TESTS $UPSTREAM_TESTS; do
            case "$t" in
            test-*) names+=("$t") ;;
            *) names+=("qtest-$arch/$t") ;;
            esac
        done
        build
        rebuild=(--no-rebuild)
    fi
    local rc=0 guest=
    (cd "$B" && ./pyvenv/bin/meson test "${rebuild[@]}" -t 4 --print-errorlogs \
        --num-processes "${MESON_TESTTHREADS:-2}" "${names[@]}") || rc=$?
    if [ ${#test_args[@]} -eq 0 ]; then
        guest=$B/meson-logs/guest-demos.txt
        run_guest_demos "$guest"
    fi
    /usr/bin/python3 "$TOP/wrapper/tap-summary.py" "$B/meson-logs/testlog.json" \
        $guest || rc=1
    return $rc
}

# The guest drivers of guest/ in TCG VMs against this build: each demo is
# one result, in "NAME RESULT SECONDS LOG" lines of $1 for tap-summary.py.
# QEMU_ZC_GUEST=0 skips them (they install a Debian kernel the first time).
GUEST_DEMOS="guest/run-demo.sh:all guest/virtio-zc/run-demo.sh: guest/iommu-emul-dma/run-demo.sh: guest/main-job/run.sh:test"

run_guest_demos() {
    local out=$1 d script arg log t0 rc
    : >"$out"
    for d in $GUEST_DEMOS; do
        script=${d%%:*} arg=${d#*:}
        log=$B/meson-logs/$(echo "$script" | tr / -).log
        if [ "${QEMU_ZC_GUEST:-1}" = 0 ]; then
            echo "$script SKIP 0 $log" >>"$out"
            continue
        fi
        note "guest demo: $script $arg (log: $log)"
        t0=$(date +%s)
        rc=0
        QEMU=$B/qemu-system-x86_64 \
            QEMU_FIRMWARE=$B/qemu-bundle/usr/local/share/qemu \
            QEMU_DATA=$B/qemu-bundle/usr/local/share/qemu \
            timeout 1200 "$TOP/$script" $arg >"$log" 2>&1 || rc=$?
        tail -n 3 "$log" | sed 's/^/    /'
        echo "$script $([ $rc = 0 ] && echo OK || echo FAIL) $(($(date +%s) - t0)) $log" >>"$out"
    done
}

# Dies unless checkpatch runs and can fail: a checkpatch that cannot start
# (a minimal system has perl-base only, without Term::ANSIColor) prints no
# ERROR line, which would otherwise pass as clean.
lint_selftest() {
    local cp=$1 probe=$tree/.qemu-zc-lint-probe.c
    if ! perl -MTerm::ANSIColor -MEncode -e 1 2>/dev/null; then
        [ "$(id -u)" = 0 ] || die "lint needs perl with its standard modules: sudo apt-get install perl"
        note "installing perl (checkpatch needs its standard modules)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends perl \
            >"$cache/apt-install.log" 2>&1 ||
            { tail -n 20 "$cache/apt-install.log" >&2; die "apt-get install perl failed"; }
    fi
    local out
    printf 'int f(void)\n{\n    return 1;;\n}\n' >"$probe"
    # checkpatch exits 1 when it finds the error: no pipeline under pipefail
    out=$($cp -q -f "$probe" 2>&1) || true
    if ! grep -q '^ERROR' <<<"$out"; then
        rm -f "$probe"
        die "checkpatch does not run: '$cp -f FILE' finds no error in a file that has one"
    fi
    rm -f "$probe"
}

do_lint() {
    local cp="perl $tree/scripts/checkpatch.pl --no-tree --color=never"
    local out rc=0 f nospdx
    lint_selftest "$cp"
    nospdx=$(cd "$TOP" && overlay_files | grep -v '\.json$' |
             while read -r f; do
                 grep -q SPDX-License-Identifier "$f" || echo "$f"
             done)
    if [ -n "$nospdx" ]; then
        echo "lint: files without SPDX-License-Identifier:" $nospdx
        rc=1
    fi
    # Relative paths: checkpatch relaxes some rules for ^tests/.
    out=$(cd "$TOP" && overlay_files | grep -E '\.[ch]$' | xargs -r $cp -q -f 2>&1) || true
    if echo "$out" | grep -q '^ERROR'; then
        echo "$out" | grep -A3 '^ERROR'
        rc=1
    fi
    for f in $(patch_files); do
        out=$($cp -q "$f" 2>&1) || true
        if echo "$out" | grep -q '^ERROR'; then
            echo "$(basename "$f"):"; echo "$out" | grep -A3 '^ERROR'
            rc=1
        fi
    done
    if [ $rc = 0 ]; then
        note "lint: checkpatch clean (0 errors), SPDX lines present"
    else
        die "lint failed"
    fi
}

do_export() {
    /usr/bin/python3 "$TOP/wrapper/export-series.py" --top "$TOP" --tree "$tree" --out "$export_dir"
}

case "$cmd" in
setup) do_setup ;;
build) do_setup; build ;;
demo) do_setup; build; do_demo ;;
all) do_setup; build; do_demo ;;
test) do_setup; do_test ;;
lint) do_setup; do_lint ;;
export) do_setup; do_export ;;
esac
