#!/bin/busybox sh
# /init of the L2 guest that sevm boots inside L1 (tests/nested/run.sh). It reports, one fact a
# line, what the harness in L1 checks:
#   - facts go through the kernel log (/dev/kmsg, which printk puts on the serial console even
#     when COM1 has no interrupt), each prefixed `NESTED-L2:`;
#   - one line goes through user space to the console (`NESTED-L2-ECHO ...`): it appears on
#     sevm's serial output only if user-space console writes work;
#   - one line is read from the console (sevm's stdin) and reported back through the kernel log.
# Then it ends the VM through sevm's exit port 0xf4.
/bin/busybox mkdir -p /proc /sys /dev /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin

kmsg() { echo "NESTED-L2: $*" >/dev/kmsg; }

kmsg "init reached"
# User space to the console: the harness looks for this exact line.
echo "NESTED-L2-ECHO user-space-console-ok"
# The line leaves through the 8250's interrupt-driven transmit buffer, up to 16 bytes an
# interrupt; a printk (kmsg below, or from another vCPU) between two of those bursts lands in the
# middle of it and the harness no longer finds it whole (seen once with 2 vCPUs). Let it drain.
sleep 1

kmsg "nproc=$(nproc)"
kmsg "online=$(cat /sys/devices/system/cpu/online 2>/dev/null)"
kmsg "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
kmsg "uptime=$(cut -d' ' -f1 /proc/uptime)"
dmesg | grep -E 'Memory Encryption Features active|SEV: Status|Hypervisor detected|APIC: |smpboot: Total|x86: Booted up|clocksource: Switched to' |
    while IFS= read -r line; do kmsg "dmesg: $line"; done

if [ -n "${nestdev:-}" ]; then
    # A device check (`nestdev=KIND` on the command line): tests/nested/l2-devices.sh drives
    # the virtio device and reports; no stdin line.
    # shellcheck disable=SC1091 # in the initramfs (tests/nested/devices.sh puts it there)
    . /nested-dev/l2-devices.sh
else
    # Input: the harness writes one line to sevm's stdin after it sees this marker. (No stty
    # here: changing the console's settings waits for its output to drain, which never happens
    # when COM1 has no working interrupt; `read -t` gives up by itself.)
    kmsg "waiting-for-input"
    line=""
    # shellcheck disable=SC3045 # busybox ash has read -t
    if read -r -t 30 line </dev/console; then
        kmsg "input=$line"
    else
        kmsg "input-timeout"
    fi
fi

kmsg "done"
printf '\0' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
# The exit port did not end the VM: say so and stop here.
kmsg "exit-port-failed"
while :; do sleep 3600; done
