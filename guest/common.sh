# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=bash
#
# Shared by the guest demo scripts (sourced, not run). They run on
# machines where nothing ran before, so nothing here may depend on what an
# earlier run left behind: every artefact goes into a state directory, the
# guest kernel is chosen by the distribution's default, not by whatever
# happens to be installed, and every failure says why on stderr.
#
# The sourcing script sets QZC_NAME (its name in messages) and calls
# qzc_state SUBDIR to get its state directory.
#
# Environment:
#   QEMU_ZC_STATE  state root: builds, initramfs, logs (default:
#                  build/state in this repository; .ci/run uses a fresh one)
#   KVER           guest kernel release (default: the one Debian's
#                  linux-image-amd64 depends on, installed when missing)

QZC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

qzc_say() { echo "${QZC_NAME:-guest}: $*"; }
qzc_die() { echo "${QZC_NAME:-guest}: error: $*" >&2; exit 1; }

# Prints the state directory SUBDIR, created.
qzc_state() {
    local d=${QEMU_ZC_STATE:-$QZC_ROOT/build/state}/$1
    mkdir -p "$d" || qzc_die "cannot create the state directory $d"
    (cd "$d" && pwd)
}

# Keeps the newest KEEP directories matching DIR/PREFIX* and removes the
# others; nothing to do (and no error) when there are none.
qzc_prune() {
    local dir=$1 prefix=$2 keep=$3 d all=()
    for d in "$dir/$prefix"*; do
        [ -d "$d" ] && all+=("$d")
    done
    [ ${#all[@]} -gt "$keep" ] || return 0
    # newest first; names are mktemp's, without newlines
    ls -dt "${all[@]}" | tail -n +"$((keep + 1))" | while read -r d; do
        rm -rf "$d"
    done
}

# Installs the Debian packages given, as root, logging to LOG; runs
# apt-get update first when the package lists are missing, and once more
# on a failure (a stale list is the usual cause). Not root: says what to
# run and exits 2.
qzc_apt_install() {
    local log=$1
    shift
    if [ "$(id -u)" != 0 ]; then
        echo "${QZC_NAME:-guest}: missing packages; run as root, or install them with:" >&2
        echo "  sudo apt-get install --no-install-recommends $*" >&2
        exit 2
    fi
    qzc_say "installing $* (first run only; log: $log)"
    : >"$log"
    if [ ! -d /var/lib/apt/lists ] ||
       ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update >>"$log" 2>&1 || true
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "$@" >>"$log" 2>&1; then
        qzc_say "apt-get install failed; running apt-get update and retrying"
        { apt-get update &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
              --no-install-recommends "$@"; } >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2
              qzc_die "apt-get install $* failed (log: $log)"; }
    fi
}

# The kernel release the installed linux-image-amd64 meta-package points
# at, if its image and headers are there.
qzc_default_kver() {
    local dep k
    dep=$(dpkg-query -W -f='${Status} ${Depends}' linux-image-amd64 2>/dev/null) || return 0
    case "$dep" in
    "install ok installed "*) ;;
    *) return 0 ;;
    esac
    k=$(echo "${dep#install ok installed }" | sed -n -E 's/^linux-image-([^ ,(]+).*/\1/p')
    if [ -n "$k" ] && [ -r "/boot/vmlinuz-$k" ] && [ -e "/lib/modules/$k/build/Makefile" ]; then
        echo "$k"
    fi
}

# Sets KVER (and VMLINUZ) to a guest kernel that has its headers, and
# makes sure the commands the demos use exist, installing what is missing
# as root: the kernel and headers, busybox-static, cpio, make, gcc.
# LOG is the apt log.
qzc_guest_prereqs() {
    local log=$1 pkgs=() b
    QZC_BUSYBOX=
    for b in /bin/busybox /usr/bin/busybox; do
        # a static busybox: ldd finds no libraries
        if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then QZC_BUSYBOX=$b; break; fi
    done
    [ -n "$QZC_BUSYBOX" ] || pkgs+=(busybox-static)
    command -v cpio >/dev/null || pkgs+=(cpio)
    command -v make >/dev/null || pkgs+=(make)
    command -v gcc >/dev/null || pkgs+=(gcc)
    command -v xz >/dev/null || pkgs+=(xz-utils)
    if [ -n "${KVER:-}" ]; then
        [ -r "/boot/vmlinuz-$KVER" ] || pkgs+=("linux-image-$KVER")
        [ -e "/lib/modules/$KVER/build/Makefile" ] || pkgs+=("linux-headers-$KVER")
    else
        KVER=$(qzc_default_kver)
        [ -n "$KVER" ] || pkgs+=(linux-image-amd64 linux-headers-amd64)
    fi
    if [ ${#pkgs[@]} -gt 0 ]; then
        qzc_apt_install "$log" "${pkgs[@]}"
        [ -n "$KVER" ] || KVER=$(qzc_default_kver)
        if [ -z "$QZC_BUSYBOX" ] && [ -x /bin/busybox ]; then
            QZC_BUSYBOX=/bin/busybox
        fi
    fi
    [ -n "$KVER" ] ||
        qzc_die "no guest kernel: linux-image-amd64 and linux-headers-amd64 are not both installed (set KVER=)"
    VMLINUZ=/boot/vmlinuz-$KVER
    [ -r "$VMLINUZ" ] || qzc_die "cannot read $VMLINUZ"
    [ -e "/lib/modules/$KVER/build/Makefile" ] ||
        qzc_die "no headers for $KVER (/lib/modules/$KVER/build)"
    [ -n "$QZC_BUSYBOX" ] || qzc_die "no static busybox (install busybox-static)"
}

# Copies kernel module NAME of $KVER into DIR as NAME.ko, uncompressed.
# Returns 1 if it is built into the kernel, and fails if it is neither.
qzc_copy_module() {
    local name=$1 dir=$2 f
    # -quit, not "| head": head's early exit would fail the pipeline
    f=$(find "/lib/modules/$KVER/kernel" -name "$name.ko*" -print -quit 2>/dev/null) || true
    if [ -z "$f" ]; then
        if grep -q "/$name.ko\$" "/lib/modules/$KVER/modules.builtin" 2>/dev/null; then
            return 1
        fi
        qzc_die "kernel $KVER has no module $name, built in or not"
    fi
    case "$f" in
    *.xz) xz -dc "$f" >"$dir/$name.ko" ;;
    *.zst) zstd -qdc "$f" >"$dir/$name.ko" ;;
    *) cp "$f" "$dir/$name.ko" ;;
    esac || qzc_die "cannot copy $f"
}

# Copies kernel modules TOP... of $KVER with everything they depend on into
# DIR/lib/modules, uncompressed, and appends their names in load order to
# DIR/lib/modules/order (each once). Built-in ones are skipped.
qzc_add_modules() {
    local dir=$1 top deps kind path m
    shift
    touch "$dir/lib/modules/order"
    for top in "$@"; do
        deps=$(modprobe --show-depends -S "$KVER" "$top" 2>&1) ||
            qzc_die "kernel $KVER has no module $top: $deps"
        while read -r kind path _; do
            [ "$kind" = insmod ] || continue      # "builtin NAME"
            m=$(basename "$path")
            m=${m%%.ko*}
            m=${m//-/_}
            grep -qx "$m" "$dir/lib/modules/order" && continue
            case "$path" in
            *.xz) xz -dc "$path" >"$dir/lib/modules/$m.ko" ;;
            *.zst) zstd -qdc "$path" >"$dir/lib/modules/$m.ko" ;;
            *) cp "$path" "$dir/lib/modules/$m.ko" ;;
            esac || qzc_die "cannot copy $path"
            echo "$m" >>"$dir/lib/modules/order"
        done <<<"$deps"
    done
}
