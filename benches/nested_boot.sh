#!/usr/bin/env bash
# Linux boot time under sevm vs QEMU `-M microvm`, side by side in the same nested L1
# (tests/nested: QEMU TCG with an emulated AMD SVM CPU, Debian 6.12 as L1 with kvm_amd). Both
# boot the same L2 kernel (the L1 kernel's vmlinuz) and the same initrd, whose /init writes a
# marker and ends the VM through port 0xf4 at once; 512 MiB, 1 vCPU, `console=ttyS0 panic=-1`.
# Rounds alternate which VMM goes first. Each boot is measured with GNU time inside L1: wall
# seconds from exec to exit and peak RSS (KiB). Medians of the boots that reached /init.
#
# Usage: benches/nested_boot.sh [ROUNDS]   (default 10; env as tests/nested/run.sh:
# SEVM_NESTED_CACHE, SEVM_NESTED_SEVM, SEVM_NESTED_L1_CPUS, SEVM_NESTED_L1_MEM, SEVM_NESTED_L1_TCG,
# SEVM_NESTED_L1_APPEND: see tests/nested/lib.sh)
# Writes benches/results/nested-boot/{raw.txt,summary.md} (SEVM_BENCH_OUT to change).
# Needs what tests/nested/install-deps.sh installs, and GNU time (Debian: time) for RSS
# (busybox's `time` reports ru_maxrss four times too large).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
. "$ROOT/tests/nested/lib.sh"
T_START=$SECONDS
ROUNDS=${1:-10}
case $ROUNDS in '' | *[!0-9]*) ndie "ROUNDS=$ROUNDS is not a number" ;; esac
RUN_TIMEOUT=${SEVM_BENCH_RUN_TIMEOUT:-180}
MEM=512M
CMDLINE="console=ttyS0 panic=-1"
OUT=${SEVM_BENCH_OUT:-$ROOT/benches/results/nested-boot}
QDATA=/usr/share/qemu

nested_require "the nested boot benchmark (benches/nested_boot.sh)"
[ -x /usr/bin/time ] || ndie "GNU time is missing at /usr/bin/time (Debian: apt-get install time)"
[ -f "$QDATA/bios-microvm.bin" ] || ndie "$QDATA/bios-microvm.bin is missing (Debian: qemu-system-data)"
QBIN=$(command -v "$QEMU")
WORK=$CACHE/bench-run
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
nlog "kernel $KVER, $ROUNDS rounds, work files in $WORK"
nested_build_sevm
nested_platform

nested_l2_initrd "$WORK/l2.cpio.gz" "$ROOT/benches/nested_boot/l2-init.sh"
nested_l1_root "$ROOT/benches/nested_boot/l1-job.sh" "$WORK/l2.cpio.gz"
nested_copy_with_libs "$QBIN" "$L1ROOT" /usr/bin/qemu-system-x86_64
nested_copy_with_libs /usr/bin/time "$L1ROOT" /usr/bin/time
mkdir -p "$L1ROOT$QDATA"
for f in bios-microvm.bin qboot.rom linuxboot.bin linuxboot_dma.bin pvh.bin kvmvapic.bin; do
    [ -f "$QDATA/$f" ] && cp "$QDATA/$f" "$L1ROOT$QDATA/"
done
{
    echo "ROUNDS=$ROUNDS"
    echo "MEM=$MEM"
    echo "CMDLINE='$CMDLINE'"
    echo "RUN_TIMEOUT=$RUN_TIMEOUT"
} >"$L1ROOT/nested/plan"
nested_cpio "$L1ROOT" "$WORK/l1.cpio"
rm -rf "$L1ROOT"

: >"$WORK/raw.txt"
on_line() {
    case $1 in
    NESTED-L1-*) echo "   L1: ${1#NESTED-}" ;;
    NESTED-BENCH*) echo "   $1" ;;
    NESTED-LOG*) echo "      ${1#* | }" ;;
    esac
    echo "$1" >>"$WORK/raw.txt"
}
qtimeout=$((L1_START_TIMEOUT + 120 + ROUNDS * 2 * (RUN_TIMEOUT + 10)))
attempt=1
while :; do
    nlog "L1 attempt $attempt (QEMU TCG, -smp $L1_CPUS, -m $L1_MEM)"
    : >"$WORK/raw.txt"
    nested_run_l1 "$WORK/l1.cpio" "$WORK/l1-console.log" "$WORK/results.log" \
        $((RUN_TIMEOUT + 60)) "$qtimeout" on_line
    nlog "L1: $L1_STATUS after ${L1_SECS}s ($L1_WHY)"
    [ "$L1_STATUS" = "done" ] && break
    nested_show_console "$WORK/l1-console.log" 40
    if [ "$attempt" != 1 ] || [ "$L1_STATUS" = error ]; then
        ndie "the benchmark's L1 failed"
    fi
    echo "!! RETRY: L1 failed on attempt 1 ($L1_STATUS); the whole benchmark runs once more"
    attempt=2
done

# --- medians
med() { # VMM FIELD -> "median n"
    grep "^NESTED-BENCH vmm=$1 " "$WORK/raw.txt" | grep ' ok=1' | grep -o " $2=[0-9.]*" | cut -d= -f2 |
        sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "- 0"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, NR }'
}
read -r s_secs s_n < <(med sevm secs)
read -r q_secs q_n < <(med qemu secs)
read -r s_rss _ < <(med sevm rss_kib)
read -r q_rss _ < <(med qemu rss_kib)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
r_secs=$(ratio "$s_secs" "$q_secs")
r_rss=$(ratio "$s_rss" "$q_rss")
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
cp "$WORK/raw.txt" "$OUT/raw.txt"
{
    echo "# Linux boot under sevm vs QEMU -M microvm, in a nested L1 (benches/nested_boot.sh)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); repo at $commit (plus uncommitted changes: $(git -C "$ROOT" status --porcelain -- crates | wc -l) files in crates/)"
    echo "- sevm binary: $SEVM${SEVM_NESTED_SEVM:+ (given by SEVM_NESTED_SEVM, not built from this tree)}, sha256 $(sha256sum "$SEVM" | cut -c1-16)"
    echo "- host: $(nproc) CPUs, $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- L1: QEMU $("$QBIN" --version | head -n 1 | awk '{print $4}') TCG thread=$L1_TCG_THREAD, -cpu max,+svm,+npt,phys-bits=48, -smp $L1_CPUS, -m $L1_MEM, Debian $KVER"
    echo "- L2: the same kernel, a busybox initrd whose /init exits through port 0xf4 at once; $MEM, 1 vCPU, \`$CMDLINE\`"
    echo "- each boot: GNU time in L1 around the VMM process (wall from exec to exit, peak RSS); $ROUNDS rounds, alternating which VMM goes first"
    echo
    echo "| VMM | boots reaching /init | median wall (s) | median peak RSS (KiB) |"
    echo "|---|---|---|---|"
    echo "| sevm | $s_n/$ROUNDS | $s_secs | $s_rss |"
    echo "| QEMU -M microvm | $q_n/$ROUNDS | $q_secs | $q_rss |"
    echo "| sevm / QEMU | | $r_secs | $r_rss |"
    echo
    echo "Raw lines (raw.txt): one \`NESTED-BENCH\` line per boot; \`ok=0\` boots (no /init marker, or an unexpected exit) are left out of the medians."
} >"$OUT/summary.md"
cat "$OUT/summary.md"
echo "Total benchmark time: $((SECONDS - T_START)) s"
