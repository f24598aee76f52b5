#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Runs the README's two commands on a brand-new Debian system: a minimal
# mmdebstrap chroot of Debian 12 (or --suite SUITE) with /proc, /sys and
# /dev bound in, a fresh clone of this repository's HEAD inside, and
# nothing carried over from this machine but the download caches (QEMU's
# source package, apt's .deb archives) and ccache. Everything else (build
# dependencies, guest kernels, busybox, the work tree, guest builds, run
# logs) starts from nothing, as on a machine where the project never ran.
#
# Usage: wrapper/fresh-system.sh [--suite SUITE] [--dir DIR] [--keep]
#                                [--no-test]
#   --suite SUITE  Debian suite of the new system (default bookworm)
#   --dir DIR      where the new system goes (default: a new directory
#                  under /var/tmp); it must not exist or be empty
#   --keep         keep the new system afterwards (default: remove it)
#   --no-test      run command one only
#
# Root only. Prints each command's wall time and the closing line of
# command two, and exits non-zero if either command failed. Logs go to
# $QEMU_ZC_STATE/fresh-system/ (default build/state in this repository).
#
# Environment: QEMU_ZC_CACHE (download cache, default ~/.cache/qemu-zc),
# CCACHE_DIR (default ~/.cache/ccache), both shared with the new system.

set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
suite=bookworm
dir=
keep=0
run_test=1

say() { echo "fresh-system: $*"; }
die() { echo "fresh-system: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
    --suite) suite=${2:?--suite needs a suite}; shift ;;
    --dir) dir=${2:?--dir needs a directory}; shift ;;
    --keep) keep=1 ;;
    --no-test) run_test=0 ;;
    -h|--help) sed -n '3,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

[ "$(id -u)" = 0 ] || die "needs root (it creates a chroot and bind mounts)"
cache=${QEMU_ZC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemu-zc}
ccache_dir=${CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccache}
state=${QEMU_ZC_STATE:-$TOP/build/state}/fresh-system
mkdir -p "$cache/src" "$cache/apt-archives/partial" "$ccache_dir" "$state"
git -C "$TOP" rev-parse -q --verify HEAD >/dev/null ||
    die "$TOP is not a git checkout with a commit"
[ -z "$(git -C "$TOP" status --porcelain --untracked-files=no)" ] ||
    say "note: uncommitted changes are not tested: the new system clones HEAD"

if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        mmdebstrap >"$state/apt-install.log" 2>&1 ||
        { apt-get update -q >>"$state/apt-install.log" 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
              --no-install-recommends mmdebstrap >>"$state/apt-install.log" 2>&1; } ||
        { tail -n 20 "$state/apt-install.log" >&2
          die "cannot install mmdebstrap (log: $state/apt-install.log)"; }
fi

# The machine's Debian mirror, as configure-wrapper.sh finds it.
mirror=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
         awk '{print $2}' | grep -v -e security -e '^$' | head -n 1) || true
if [ -z "$mirror" ]; then
    mirror=$(grep -hs -E '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
             grep -v security |
             awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }') || true
fi
[ -n "$mirror" ] || die "cannot find a Debian mirror in /etc/apt/sources.list*"

if [ -z "$dir" ]; then
    dir=$(mktemp -d /var/tmp/qemu-zc-fresh.XXXXXX)
elif [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    die "$dir exists and is not empty"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

mounted() {
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo
}

unmount_all() {
    local m
    # innermost first
    for m in $(mounted | sort -r); do
        umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    [ -z "$(mounted)" ]
}

cleanup() {
    if ! unmount_all; then
        echo "fresh-system: error: still mounted under $dir, not removing it:" >&2
        mounted >&2
        return
    fi
    if [ $keep = 0 ]; then
        rm -rf "$dir"
    else
        say "kept the new system in $dir"
    fi
}
trap cleanup EXIT

say "creating a minimal Debian $suite system in $dir from $mirror"
t0=$(date +%s)
created=0
for attempt in 1 2; do
    # Remove what a failed attempt left before retrying.
    if [ $attempt != 1 ]; then
        unmount_all || die "still mounted under $dir after a failed mmdebstrap"
        rm -rf "$dir" && mkdir -p "$dir"
    fi
    if mmdebstrap --variant=minbase --mode=root "$suite" "$dir" \
            "deb $mirror $suite main" "deb $mirror $suite-updates main" \
            >"$state/mmdebstrap.log" 2>&1; then
        created=1
        break
    fi
    say "mmdebstrap failed (attempt $attempt; log: $state/mmdebstrap.log)"
done
[ $created = 1 ] || { tail -n 20 "$state/mmdebstrap.log" >&2; die "cannot create the new system"; }
say "created in $(($(date +%s) - t0)) s"

cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
# keep downloaded packages in the shared archive cache
echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' \
    >"$dir/etc/apt/apt.conf.d/99qemu-zc-keep-debs"

bind() {
    mkdir -p "$2"
    mount --rbind "$1" "$2"
    mount --make-rslave "$2"
}
mount -t proc proc "$dir/proc"
bind /sys "$dir/sys"
bind /dev "$dir/dev"
mkdir -p "$dir/run/lock"
bind "$cache/apt-archives" "$dir/var/cache/apt/archives"
bind "$cache/src" "$dir/root/.cache/qemu-zc/src"
bind "$ccache_dir" "$dir/root/.cache/ccache"

git clone -q "$TOP" "$dir/root/qemu-zc"
say "cloned $(git -C "$dir/root/qemu-zc" log -1 --format='%h %s')"

# Runs a command in the new system with a clean environment.
in_system() {
    chroot "$dir" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash -c "cd /root/qemu-zc && $1"
}

rc=0
t0=$(date +%s)
say "command one: ./configure-wrapper.sh (log: $state/command-one.log)"
in_system ./configure-wrapper.sh </dev/null >"$state/command-one.log" 2>&1 || rc=$?
t1=$(($(date +%s) - t0))
tail -n 5 "$state/command-one.log" | sed 's/^/    /'
if [ $rc != 0 ]; then
    rm -rf "$state/work-tree-logs" && mkdir -p "$state/work-tree-logs"
    cp "$dir"/root/qemu-zc/build/qemu/.qemu-zc-*.log "$state/work-tree-logs/" 2>/dev/null || true
    echo "fresh-system: command one FAILED (exit $rc) after $t1 s (log: $state/command-one.log)" >&2
    exit 1
fi
say "command one: OK in $t1 s"
[ $run_test = 1 ] || exit 0

t0=$(date +%s)
say "command two: ./configure-wrapper.sh test (log: $state/command-two.log)"
in_system "./configure-wrapper.sh test" </dev/null >"$state/command-two.log" 2>&1 || rc=$?
t2=$(($(date +%s) - t0))
tail -n 25 "$state/command-two.log" | sed 's/^/    /'
closing=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$state/command-two.log" | tail -n 1) || true
say "timings: command one $t1 s, command two $t2 s"
if [ $rc != 0 ] || [ -z "$closing" ]; then
    # keep the test and guest logs: the new system is removed on exit
    rm -rf "$state/meson-logs" "$state/guest-state"
    cp -r "$dir/root/qemu-zc/build/qemu/build/meson-logs" "$state/meson-logs" 2>/dev/null || true
    cp -r "$dir/root/qemu-zc/build/state" "$state/guest-state" 2>/dev/null || true
    echo "fresh-system: command two FAILED (exit $rc) after $t2 s: ${closing:-no closing line} (log: $state/command-two.log)" >&2
    exit 1
fi
say "command two: OK in $t2 s: $closing"
