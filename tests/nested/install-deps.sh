#!/usr/bin/env bash
# Installs what the nested-KVM harness (tests/nested/run.sh) needs, from Debian's packages:
#   - qemu-system-x86, busybox-static, cpio, xz-utils, kmod (and zstd if the kernel's modules
#     are zstd-compressed); gcc, make, libc6-dev and the kernel's linux-headers package for
#     the virtio device checks (devices.sh);
#   - the newest `linux-image-6.12*-amd64-unsigned` apt offers, fetched with `apt-get download`
#     and extracted with `dpkg-deb -x` into the cache (nothing is installed into the host's /boot),
#     then `depmod -b`. On bookworm, bookworm-backports is added to apt's sources if neither
#     bookworm nor bookworm-security has a 6.12 kernel.
# Cache: $SEVM_NESTED_CACHE, default <repo>/target/nested-cache. Idempotent: a kernel already
# extracted there is kept. Called by .ci/run; runs as root or through sudo.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${SEVM_NESTED_CACHE:-$ROOT/target/nested-cache}

log() { printf '== nested install-deps: %s\n' "$*"; }
die() { printf 'nested install-deps: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot run apt-get"
    SUDO=sudo
fi
apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        $SUDO apt-get update -q
        apt_updated=1
    fi
}
apt_install() {
    local need=() p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    ((${#need[@]})) || return 0
    apt_update
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
}

apt_install qemu-system-x86 busybox-static cpio xz-utils kmod

# --- the L1/L2 kernel: newest 6.12 amd64 unsigned image package apt offers
newest_612() {
    apt-cache search --names-only '^linux-image-6\.12\.[0-9]+.*-amd64-unsigned$' 2>/dev/null |
        awk '{print $1}' | grep -E '^linux-image-6\.12\.[0-9]+\+[a-z0-9.~+]+-amd64-unsigned$' |
        sort -V | tail -n 1
}

mkdir -p "$CACHE"
if [ -n "${SEVM_NESTED_OFFLINE:-}" ] && [ -s "$CACHE/kernel-version" ]; then
    log "SEVM_NESTED_OFFLINE set: keeping the cached kernel $(cat "$CACHE/kernel-version")"
    exit 0
fi

pkg=$(newest_612)
if [ -z "$pkg" ]; then
    apt_update
    pkg=$(newest_612)
fi
if [ -z "$pkg" ]; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
        src=/etc/apt/sources.list.d/sevm-nested-bookworm-backports.list
        log "no 6.12 kernel in apt's sources: adding bookworm-backports ($src)"
        echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee "$src" >/dev/null
        apt_updated=0
        apt_update
        pkg=$(newest_612)
    fi
fi
[ -n "$pkg" ] || die "apt offers no linux-image-6.12*-amd64-unsigned package (looked with apt-cache search; sources: /etc/apt/sources.list*)"

kver=${pkg#linux-image-}
kver=${kver%-unsigned}
kdir=$CACHE/linux-$kver
if [ -f "$kdir/boot/vmlinuz-$kver" ] && [ -f "$kdir/lib/modules/$kver/modules.dep" ]; then
    log "kernel $kver already extracted in $kdir"
else
    log "apt-get download $pkg"
    rm -rf "$CACHE/deb" "$kdir.tmp"
    mkdir -p "$CACHE/deb"
    # apt-get download drops privileges to _apt when root; give it a directory it can write.
    chmod 0777 "$CACHE/deb"
    (cd "$CACHE/deb" && apt-get download -q "$pkg") ||
        { apt_update; (cd "$CACHE/deb" && apt-get download -q "$pkg"); }
    deb=$(ls "$CACHE"/deb/*.deb)
    log "dpkg-deb -x $(basename "$deb")"
    dpkg-deb -x "$deb" "$kdir.tmp"
    [ -f "$kdir.tmp/boot/vmlinuz-$kver" ] || die "$deb has no boot/vmlinuz-$kver"
    depmod -b "$kdir.tmp" "$kver"
    rm -rf "$kdir"
    mv "$kdir.tmp" "$kdir"
    rm -rf "$CACHE/deb"
fi

# Modules compressed with zstd need zstd to decompress (busybox insmod reads only plain .ko).
if find "$kdir/lib/modules/$kver/kernel/arch/x86/kvm" -name '*.ko.zst' | grep -q .; then
    apt_install zstd
fi
# The virtio device checks (devices.sh) build a small module against this kernel's headers
# (l2-tools/README.md) and a static helper; the headers go to /usr/src, not /boot. Only when
# those checks are on (SEVM_NESTED_DEVICES, default 1; .ci/run sets 0 unless asked).
if [ "${SEVM_NESTED_DEVICES:-1}" != 0 ]; then
    apt_install gcc make libc6-dev "linux-headers-$kver"
fi
echo "$kver" >"$CACHE/kernel-version"
log "kernel $kver ready ($kdir)"
