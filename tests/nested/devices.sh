# The virtio device checks of the nested-KVM harness (issue 15), host side; sourced by run.sh
# after lib.sh. The checks themselves run in L1 (l1-checks.sh, check_dev) and L2
# (l2-devices.sh). What this file adds to the images:
#   - L2 initramfs: the Debian kernel's virtio_mmio, virtio_blk, virtio_net, vsock and
#     vmw_vsock_virtio_transport modules with their dependencies (`modprobe --show-depends`),
#     decompressed; l2-tools/virtio_mmio_cmdline.ko, built here against the same kernel's
#     headers (Debian builds 6.12 without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so the stock
#     virtio_mmio ignores sevm's `virtio_mmio.device=` entries: see l2-tools/README.md);
#     l2-tools/nestio (vsock/Unix socket helper, gcc -static); l2-devices.sh.
#   - L1: tun.ko (for the TAP), nestio.
# Check names: dev-<blk|blkro|net|vsock>-<plain|sev>. Knob: SEVM_NESTED_DEVICES (1: run them;
# 0: leave them out of the matrix).
# shellcheck shell=bash disable=SC2034 # variables set here are read by run.sh

DEVICES=${SEVM_NESTED_DEVICES:-1}
case $DEVICES in 0 | 1) ;; *) ndie "SEVM_NESTED_DEVICES=$DEVICES is not 0 or 1" ;; esac
DEV_KINDS="blk blkro net vsock"
# Seconds one device check's sevm may run (boot, the I/O, the SHA-256s: far slower than a plain
# boot; dev-net-plain took 256 s here at load 17).
DEV_TIMEOUT=${SEVM_NESTED_DEV_TIMEOUT:-600}
case $DEV_TIMEOUT in '' | *[!0-9]*) ndie "SEVM_NESTED_DEV_TIMEOUT=$DEV_TIMEOUT is not a number" ;; esac
DEV_L2_MODULES="virtio_mmio virtio_blk virtio_net vmw_vsock_virtio_transport"

# What the device checks need beyond the rest of the harness, one missing item a line.
nested_dev_missing() {
    [ "$DEVICES" = 1 ] || return 0
    command -v gcc >/dev/null 2>&1 || echo "command gcc (Debian: gcc), for l2-tools/nestio and the module"
    command -v make >/dev/null 2>&1 || echo "command make (Debian: make)"
    [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/libc.a ] ||
        echo "a static libc for gcc -static (Debian: libc6-dev)"
    if [ -n "${KVER:-}" ] && [ ! -f "/usr/src/linux-headers-$KVER/Makefile" ]; then
        echo "the kernel headers /usr/src/linux-headers-$KVER (Debian: linux-headers-$KVER; tests/nested/install-deps.sh installs them)"
    fi
}

# The device checks in the order L1 runs them (none when SEVM_NESTED_DEVICES=0).
nested_dev_checks() {
    [ "$DEVICES" = 1 ] || return 0
    local mode k
    for mode in plain sev; do
        for k in $DEV_KINDS; do
            echo "dev-$k-$mode"
        done
    done
}

# The command line L2 gets for a device check of KIND: CMDLINE, `nestdev=KIND` (for L2's /init)
# and the `virtio_mmio.device=4K@0xd0000000:5` entry sevm appends for its one device
# (docs/LAYOUT.md "virtio devices": first window 0xd0000000, first IRQ 5). The owner measures
# the whole line; DEVCMD_<kind> in the plan is the part before sevm's entry.
dev_user_cmdline() { echo "$CMDLINE nestdev=$1"; }
dev_full_cmdline() { echo "$(dev_user_cmdline "$1") virtio_mmio.device=4K@0xd0000000:5"; }

# Builds the module and nestio into DEST.
nested_dev_build() { # DEST
    local dest=$1 b
    mkdir -p "$dest"
    b=$WORK/vmc-build
    rm -rf "$b"
    mkdir -p "$b"
    cp "$NESTED_DIR/l2-tools/virtio_mmio_cmdline.c" "$NESTED_DIR/l2-tools/Kbuild" "$b/"
    make -s -C "/usr/src/linux-headers-$KVER" M="$b" modules >"$WORK/vmc-build.log" 2>&1 ||
        { cat "$WORK/vmc-build.log" >&2; ndie "building l2-tools/virtio_mmio_cmdline.ko against /usr/src/linux-headers-$KVER failed"; }
    cp "$b/virtio_mmio_cmdline.ko" "$dest/"
    rm -rf "$b"
    gcc -static -O2 -Wall -Wextra -Werror -o "$dest/nestio" "$NESTED_DIR/l2-tools/nestio.c" ||
        ndie "gcc -static l2-tools/nestio.c failed"
}

# A module file of the cached kernel, decompressed to DEST/NAME.ko; prints the .ko name.
dev_module_copy() { # PATH DESTDIR
    local m=$1 base
    base=$(basename "$m")
    case $base in
    *.ko.xz) base=${base%.xz} && xz -dc "$m" >"$2/$base" ;;
    *.ko.zst) base=${base%.zst} && zstd -qdc "$m" >"$2/$base" ;;
    *.ko.gz) base=${base%.gz} && gzip -dc "$m" >"$2/$base" ;;
    *) cp "$m" "$2/$base" ;;
    esac
    echo "$base"
}

# Appends to the L2 initramfs INITRD (a gzip'd cpio) a second gzip'd cpio with the device
# modules (/nested-dev/modules, load order in /nested-dev/modules.order), nestio and
# l2-devices.sh. The kernel unpacks concatenated archives in order.
nested_dev_l2_extra() { # INITRD TOOLS
    [ "$DEVICES" = 1 ] || return 0
    local d m base name
    d=$WORK/l2dev-root
    rm -rf "$d"
    mkdir -p "$d/nested-dev/modules" "$d/bin"
    : >"$d/nested-dev/modules.order"
    for name in $DEV_L2_MODULES; do
        for m in $(PATH=$PATH:/sbin modprobe -d "$KDIR" -S "$KVER" --show-depends "$name" | awk '$1 == "insmod" { print $2 }'); do
            base=$(dev_module_copy "$m" "$d/nested-dev/modules")
            grep -qx "$base" "$d/nested-dev/modules.order" || echo "$base" >>"$d/nested-dev/modules.order"
        done
        [ -n "$m" ] || ndie "modprobe --show-depends $name in $KDIR found no module"
    done
    strip --strip-debug -o "$d/nested-dev/modules/virtio_mmio_cmdline.ko" "$2/virtio_mmio_cmdline.ko"
    cp "$2/nestio" "$d/bin/nestio"
    cp "$NESTED_DIR/l2-devices.sh" "$d/nested-dev/l2-devices.sh"
    chmod 0755 "$d/bin/nestio"
    nested_cpio "$d" "$WORK/l2dev.cpio"
    gzip -9n <"$WORK/l2dev.cpio" >>"$1"
    rm -rf "$d" "$WORK/l2dev.cpio"
}

# Adds tun.ko (loaded after kvm_amd) and nestio to the L1 root in L1ROOT.
nested_dev_l1_extra() { # TOOLS
    [ "$DEVICES" = 1 ] || return 0
    local m
    for m in $(PATH=$PATH:/sbin modprobe -d "$KDIR" -S "$KVER" --show-depends tun | awk '$1 == "insmod" { print $2 }'); do
        dev_module_copy "$m" "$L1ROOT/nested/modules" >>"$L1ROOT/nested/modules.order"
    done
    grep -q '^tun.ko$' "$L1ROOT/nested/modules.order" || ndie "modprobe --show-depends tun in $KDIR gave no tun.ko"
    cp "$1/nestio" "$L1ROOT/usr/local/bin/nestio"
    cp "$NESTED_DIR/l1-devices.sh" "$L1ROOT/nested/l1-devices.sh"
}

# The plan lines of the device checks: DEV_TIMEOUT and DEVCMD_<kind>.
nested_dev_plan() {
    [ "$DEVICES" = 1 ] || return 0
    local k
    echo "DEV_TIMEOUT=$DEV_TIMEOUT"
    for k in $DEV_KINDS; do
        echo "DEVCMD_$k='$(dev_user_cmdline "$k")'"
    done
}
