#!/bin/busybox sh
# /init of L1, the Debian kernel QEMU TCG boots with an emulated AMD SVM CPU
# (tests/nested/run.sh, benches/nested_boot.sh). It loads kvm_amd, reports on the second serial
# port (ttyS1, the harness's result channel) that L1 is up, runs the job the host put in
# /nested/job.sh (the check matrix or the boot benchmark), and powers L1 off.
# Result channel lines all start with `NESTED-`; the host ignores everything else.
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/local/bin
mount -t tmpfs tmpfs /tmp

RES=/dev/ttyS1
stty -F "$RES" raw -echo 2>/dev/null
say() { echo "$*" >"$RES"; }
l1_off() {
    sync
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 3600
}

say "NESTED-L1-BOOTED kernel=$(uname -r) cpus=$(nproc) uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /nested/modules.order); do
    if ! insmod "/nested/modules/$m" 2>/tmp/insmod.err; then
        say "NESTED-L1-ERROR insmod $m failed: $(tr '\n' ' ' </tmp/insmod.err)"
        l1_off
    fi
done
dmesg | grep -iE 'kvm|svm|nested' | while IFS= read -r l; do say "NESTED-L1-LOG $l"; done
if [ ! -c /dev/kvm ]; then
    say "NESTED-L1-ERROR no /dev/kvm after loading $(tr '\n' ' ' </nested/modules.order)"
    l1_off
fi

say "NESTED-L1-START uptime=$(cut -d' ' -f1 /proc/uptime)"
# shellcheck disable=SC1091 # l1-checks.sh or the benchmark's job
. /nested/job.sh
say "NESTED-L1-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
l1_off
