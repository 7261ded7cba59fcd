# The L1 job of benches/nested_boot.sh (sourced by tests/nested/l1-init.sh; `say` writes to the
# result channel). /nested/plan sets ROUNDS, MEM, CMDLINE, RUN_TIMEOUT. Each round boots the same
# L2 kernel and initrd once under sevm and once under QEMU -M microvm (KVM), alternating which
# goes first, and measures each whole process with GNU time: wall seconds from exec to exit
# (the guest's /init exits at once) and peak RSS. One line per boot:
#   NESTED-BENCH vmm=sevm|qemu round=N secs=S rss_kib=K exit=E ok=0|1
# shellcheck disable=SC1091 # written by benches/nested_boot.sh
. /nested/plan
K=/l2/vmlinuz
I=/l2/initrd.cpio.gz
one() { # VMM ROUND
    out=/tmp/bench-$1.out
    if [ "$1" = sevm ]; then
        timeout -s KILL "$RUN_TIMEOUT" /usr/bin/time -o /tmp/time.out -f "%e %M" \
            /usr/local/bin/sevm run --kernel "$K" --initrd "$I" --cmdline "$CMDLINE" \
            --memory "$MEM" --cpus 1 --on-reset shutdown --timeout "$RUN_TIMEOUT" </dev/null >"$out" 2>&1
        rc=$?
        want=0
    else
        timeout -s KILL "$RUN_TIMEOUT" /usr/bin/time -o /tmp/time.out -f "%e %M" \
            /usr/bin/qemu-system-x86_64 -M microvm -accel kvm -cpu host -m "$MEM" -smp 1 \
            -nodefaults -no-user-config -display none -no-reboot -serial stdio \
            -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
            -kernel "$K" -initrd "$I" -append "$CMDLINE" </dev/null >"$out" 2>&1
        rc=$?
        # isa-debug-exit: QEMU exits with (value << 1) | 1.
        want=1
    fi
    ok=0
    [ "$rc" = "$want" ] && grep -q 'NESTED-BENCH-L2: init reached' "$out" && ok=1
    secs="" rss=""
    # GNU time prints "Command exited with non-zero status N" first when N != 0.
    tail -n 1 /tmp/time.out >/tmp/time.last 2>/dev/null && read -r secs rss </tmp/time.last
    say "NESTED-BENCH vmm=$1 round=$2 secs=${secs:-?} rss_kib=${rss:-?} exit=$rc ok=$ok"
    if [ "$ok" != 1 ]; then
        tail -n 15 "$out" | tr -d '\r' | sed 's/[^[:print:]]/?/g' |
            while IFS= read -r l; do say "NESTED-LOG name=bench-$1-$2 | $l"; done
    fi
    grep -o 'NESTED-BENCH-L2: init reached uptime=[0-9.]*' "$out" | head -n 1 |
        while IFS= read -r l; do say "NESTED-LOG name=bench-$1-$2 | $l"; done
}
r=1
while [ "$r" -le "$ROUNDS" ]; do
    if [ $((r % 2)) = 1 ]; then
        one sevm "$r"
        one qemu "$r"
    else
        one qemu "$r"
        one sevm "$r"
    fi
    r=$((r + 1))
done
