#!/bin/busybox sh
# /init of the L2 guest of benches/nested_boot.sh: one marker through the kernel log, then the
# VM ends through the exit port 0xf4 (sevm's exit port; QEMU's isa-debug-exit at the same port).
/bin/busybox mkdir -p /proc /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "NESTED-BENCH-L2: init reached uptime=$(/bin/busybox cut -d' ' -f1 /proc/uptime)" >/dev/kmsg
printf '\0' | /bin/busybox dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
echo "NESTED-BENCH-L2: exit port failed" >/dev/kmsg
while :; do /bin/busybox sleep 3600; done
