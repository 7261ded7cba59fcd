# The device half of L2's /init (sourced by l2-init.sh when the command line has
# `nestdev=KIND`; the kernel hands unknown `x=y` parameters to init as environment). It loads
# the virtio modules, drives the one device of this check and reports facts through the kernel
# log (`kmsg`, defined by l2-init.sh) for l1-checks.sh's check_dev:
#   blk    read 64 MiB from /dev/vda (blk-read-sha), write 16 MiB of random data at 64 MiB with
#          O_SYNC + sync (blk-write-sha of what was written, blk-write-rc)
#   blkro  the same read; the write must fail (blk-write-rc non-zero), blk-ro from sysfs
#   net    eth0 10.0.2.2/24, ping 10.0.2.1 (net-ping), 32 MiB to L1's nc on port 5001
#          (net-send-sha), 32 MiB from L1's nc on port 5002 (net-recv-sha)
#   vsock  nestio vsock-connect to CID 2 port 5000 (vsock-connect), then a listener on port
#          5001 that L1 reaches through sevm's Unix socket (vsock-listen)
# and for every kind: features=DEV:BIT33 (VIRTIO_F_ACCESS_PLATFORM negotiated, from
# /sys/bus/virtio/devices/*/features), swiotlb-dmesg, swiotlb-hiwater (debugfs).
# shellcheck shell=sh disable=SC3045,SC2013,SC2154 # nestdev comes from the kernel command line

dev_sha() { sha256sum | cut -d' ' -f1; }

dev_load() {
    mkdir -p /tmp
    for m in $(cat /nested-dev/modules.order); do
        insmod "/nested-dev/modules/$m" 2>/tmp/insmod.err || kmsg "dev-insmod-failed=$m $(tr '\n' ' ' </tmp/insmod.err)"
    done
    # The command line's virtio_mmio.device= entries, for the stand-in of
    # CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (l2-tools/README.md).
    devs=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^virtio_mmio\.device=//p' | tr '\n' ',' | sed 's/,$//')
    kmsg "dev-cmdline-devices=$devs"
    insmod /nested-dev/modules/virtio_mmio_cmdline.ko "device=$devs" 2>/tmp/insmod.err ||
        kmsg "dev-insmod-failed=virtio_mmio_cmdline $(tr '\n' ' ' </tmp/insmod.err)"
    dev_wait /sys/bus/virtio/devices/virtio0 20 || kmsg "dev-no-virtio-device"
    dmesg | grep -E 'virtio_mmio|virtio-mmio|virtio_blk|vda' | while IFS= read -r l; do kmsg "dmesg: $l"; done
}

# Waits up to $2 seconds for the path $1 to exist.
dev_wait() {
    i=0
    while [ ! -e "$1" ] && [ "$i" -lt "$(($2 * 5))" ]; do
        sleep 0.2
        i=$((i + 1))
    done
    [ -e "$1" ]
}

dev_blk() {
    if ! dev_wait /sys/block/vda 20; then
        kmsg "blk-found=no"
        return
    fi
    [ -b /dev/vda ] || mknod /dev/vda b "$(cut -d: -f1 /sys/block/vda/dev)" "$(cut -d: -f2 /sys/block/vda/dev)"
    kmsg "blk-found=vda size=$(cat /sys/block/vda/size) ro=$(cat /sys/block/vda/ro)"
    kmsg "blk-ro=$(cat /sys/block/vda/ro)"
    t0=$(cut -d' ' -f1 /proc/uptime)
    kmsg "blk-read-sha=$(dd if=/dev/vda bs=1M count=64 iflag=direct 2>/dev/null | dev_sha)"
    kmsg "blk-read-secs=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')"
    dd if=/dev/urandom of=/tmp/w16 bs=1M count=16 2>/dev/null
    kmsg "blk-write-sha=$(dev_sha </tmp/w16)"
    dd if=/tmp/w16 of=/dev/vda bs=1M seek=64 conv=fsync oflag=direct 2>/tmp/dd.err
    rc=$?
    sync
    kmsg "blk-write-rc=$rc $(tr '\n' ' ' </tmp/dd.err | cut -c1-160)"
    rm -f /tmp/w16
}

dev_net() {
    if ! dev_wait /sys/class/net/eth0 20; then
        kmsg "net-found=no"
        return
    fi
    kmsg "net-found=eth0 mac=$(cat /sys/class/net/eth0/address)"
    ip link set lo up
    ip link set eth0 up
    ip addr add 10.0.2.2/24 dev eth0
    if ping -c 3 -W 5 10.0.2.1 >/tmp/ping.out 2>&1; then
        kmsg "net-ping=ok $(grep -E 'packets|round-trip' /tmp/ping.out | tr '\n' ' ')"
    else
        kmsg "net-ping=fail $(tr '\n' ' ' </tmp/ping.out | cut -c1-200)"
    fi
    dd if=/dev/urandom of=/tmp/tx32 bs=1M count=32 2>/dev/null
    kmsg "net-send-sha=$(dev_sha </tmp/tx32)"
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout 120 nc 10.0.2.1 5001 </tmp/tx32
    kmsg "net-send-rc=$? secs=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')"
    rm -f /tmp/tx32
    # The receiving nc's stdin must not reach EOF (busybox nc then stops): a FIFO held open.
    mkfifo /tmp/hold
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout 120 nc 10.0.2.1 5002 <>/tmp/hold >/tmp/rx32
    kmsg "net-recv-rc=$? bytes=$(wc -c </tmp/rx32) secs=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')"
    kmsg "net-recv-sha=$(dev_sha </tmp/rx32)"
    rm -f /tmp/rx32
}

dev_vsock() {
    if ! dev_wait /sys/bus/virtio/drivers/vmw_vsock_virtio_transport/virtio0 20; then
        kmsg "vsock-found=no"
    fi
    kmsg "vsock-connect=$(timeout 60 nestio vsock-connect 2 5000 1048576 2>&1 | tail -n 1)"
    nestio vsock-listen 5001 1048576 >/tmp/vl.out 2>&1 &
    vl=$!
    dev_wait /tmp/vl.out 5
    sleep 0.5
    kmsg "vsock-listening $(head -n 1 /tmp/vl.out)"
    i=0
    while kill -0 "$vl" 2>/dev/null && [ "$i" -lt 300 ]; do
        sleep 0.2
        i=$((i + 1))
    done
    kill "$vl" 2>/dev/null
    kmsg "vsock-listen=$(tail -n 1 /tmp/vl.out)"
}

dev_report_dma() {
    for d in /sys/bus/virtio/devices/*; do
        [ -f "$d/features" ] || continue
        kmsg "features=$(basename "$d"):$(cut -c34 "$d/features") device=$(cat "$d/device") bits=$(cat "$d/features")"
    done
    kmsg "swiotlb-dmesg=$(dmesg | grep -m1 'software IO TLB' | cut -c1-160)"
    mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
    if [ -f /sys/kernel/debug/swiotlb/io_tlb_used_hiwater ]; then
        kmsg "swiotlb-hiwater=$(cat /sys/kernel/debug/swiotlb/io_tlb_used_hiwater) nslabs=$(cat /sys/kernel/debug/swiotlb/io_tlb_nslabs 2>/dev/null)"
    else
        kmsg "swiotlb-hiwater=none"
    fi
}

dev_load
case $nestdev in
blk | blkro) dev_blk ;;
net) dev_net ;;
vsock) dev_vsock ;;
*) kmsg "dev-unknown-kind=$nestdev" ;;
esac
dev_report_dma
kmsg "dev-done"
