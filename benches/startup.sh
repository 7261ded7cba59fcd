#!/usr/bin/env bash
# Start-up benchmark (issue 11): whole-process wall time, start to exit, of
#   - kvm-min: the minimal KVM process (benches/tools/c/kvm_min.c: open /dev/kvm, create a VM,
#     one 4 KiB slot and one vCPU, run to the first exit, which is a port write to 0xf4),
#   - `sevm run --guest hello` (the bundled 64-bit guest: prints a line on COM1, exits via 0xf4),
#   - QEMU `-M microvm` with the tiny flat firmware of benches/fw/make_flat.py (prints a line on
#     COM1, exits via isa-debug-exit at 0xf4),
# alternating in one run (benches/alternate.py, rotating which goes first); also
# `sevm --version` (process start, dynamic linking and exit of the same binary, no KVM) and
# kvm-min with an interrupt controller: --split-irqchip (local APIC only, as sevm creates for
# the bundled guests), --irqchip (local APIC, PIC and IOAPIC before the memory slot, as sevm
# creates for firmware and Linux) and --irqchip-late (the same after the memory slot). If
# SEVM_BEFORE names another sevm binary, `sevm run --guest hello` of that build is a further
# command (before/after of a change in the same run).
# Then the breakdown: LD_DEBUG=statistics of sevm (the dynamic loader's own clock) and
# benches/startup_breakdown.py (phases from exec to exit under strace) for sevm and kvm-min.
# Also runs the same commands under hyperfine -N if it is installed (not interleaved).
# Writes $OUT/startup.md and the raw samples $OUT/startup.json, $OUT/startup-hyperfine.json,
# $OUT/startup-breakdown-*.json.
#
# Needs: /dev/kvm (read-write), cargo (unless SEVM names a built sevm), a C compiler (`cc`),
# python3, GNU time (/usr/bin/time, Debian package `time`), strace, qemu-system-x86_64
# (Debian: qemu-system-x86); optional: hyperfine.
# Usage: startup.sh [RUNS]   (default 31; env OUT, SEVM, SEVM_BEFORE, QEMU, CARGO_TARGET_DIR)
set -euo pipefail
RUNS=${1:-31}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
OUT=${OUT:-$B/results}
TGT=${CARGO_TARGET_DIR:-$ROOT/target}
QEMU=${QEMU:-qemu-system-x86_64}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
mkdir -p "$OUT"

need() { command -v "$1" >/dev/null || { echo "startup.sh: $1 not found ($2)" >&2; exit 1; }; }
need cc "a C compiler, for benches/tools/c/kvm_min.c"
need python3 "Debian: python3"
need /usr/bin/time "GNU time; Debian: apt-get install time"
need strace "Debian: apt-get install strace"
need "$QEMU" "Debian: apt-get install qemu-system-x86"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "startup.sh: /dev/kvm is not readable and writable" >&2; exit 1; }

if [ -z "${SEVM:-}" ]; then
    need cargo "or set SEVM to a built sevm binary"
    ( cd "$ROOT" && CARGO_TARGET_DIR="$TGT" cargo build --release -q -p sevm )
    SEVM=$TGT/release/sevm
fi
cc -O2 -Wall -Wextra -Werror -o "$D/kvm_min" "$B/tools/c/kvm_min.c"
python3 "$B/fw/make_flat.py" "$D/flat.bin"

MEM=128M
MIN="$D/kvm_min"
HELLO="$SEVM run --memory $MEM --guest hello"
QCMD="$QEMU -M microvm -accel kvm -m $MEM -bios $D/flat.bin -nodefaults -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4"

# Each command must do its job before it is timed.
for a in "" --split-irqchip --irqchip --irqchip-late; do $MIN $a || { echo "kvm_min $a failed" >&2; exit 1; }; done
out=$($HELLO 2>&1) || { echo "sevm run --guest hello failed: $out" >&2; exit 1; }
out=$($QCMD 2>/dev/null) || rc=$?
[ "${rc:-0}" = 1 ] && grep -q "hello from a flat firmware" <<<"$out" \
    || { echo "QEMU did not run the flat image (rc ${rc:-0}): $out" >&2; exit 1; }

# `sevm --version`: the same binary's exec, dynamic linking, Rust start-up and exit, no KVM.
# kvm-min --split-irqchip: the floor plus the local-APIC-only irqchip sevm creates for the
# bundled guests; --irqchip: plus the whole in-kernel irqchip (sevm's order for firmware and
# Linux: irqchip, then memory); --irqchip-late: in the other order (memory, then irqchip).
CMDS=("kvm-min=$MIN" "sevm run --guest hello=$HELLO" "qemu microvm -bios flat=$QCMD"
      "sevm --version=$SEVM --version" "kvm-min --split-irqchip=$MIN --split-irqchip"
      "kvm-min --irqchip=$MIN --irqchip" "kvm-min --irqchip-late=$MIN --irqchip-late")
RCS=(0 0 1 0 0 0 0)
if [ -n "${SEVM_BEFORE:-}" ]; then
    CMDS+=("sevm (before) --guest hello=$SEVM_BEFORE run --memory $MEM --guest hello")
    RCS+=(0)
fi

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u '+%Y-%m-%d %H:%M UTC')
TABLE=$(python3 "$B/alternate.py" --runs "$RUNS" --warmup 3 --json "$OUT/startup.json" \
    --expect-rc "${RCS[@]}" -- "${CMDS[@]}")
RATIOS=$(python3 - "$OUT/startup.json" <<'PY'
import json, statistics, sys
d = json.load(open(sys.argv[1]))
med = {k: (statistics.median(v["wall_ms"]), statistics.median(v["cpu_ms"])) for k, v in d.items()}
s, m, q = med["sevm run --guest hello"], med["kvm-min"], med["qemu microvm -bios flat"]
print(f"| sevm / kvm-min | {s[0] / m[0]:.2f} | {s[1] / m[1]:.2f} | ≤ 2 |")
print(f"| sevm / QEMU | {s[0] / q[0]:.2f} | {s[1] / q[1]:.2f} | ≤ 0.2 |")
i, l, p = med["kvm-min --irqchip"], med["kvm-min --irqchip-late"], med["kvm-min --split-irqchip"]
print(f"| sevm / kvm-min --split-irqchip | {s[0] / p[0]:.2f} | {s[1] / p[1]:.2f} | |")
print(f"| kvm-min --split-irqchip / kvm-min | {p[0] / m[0]:.2f} | {p[1] / m[1]:.2f} | |")
print(f"| kvm-min --irqchip / kvm-min | {i[0] / m[0]:.2f} | {i[1] / m[1]:.2f} | |")
print(f"| kvm-min --irqchip-late / kvm-min --irqchip | {l[0] / i[0]:.2f} | {l[1] / i[1]:.2f} | |")
b = med.get("sevm (before) --guest hello")
if b:
    print(f"| sevm (this build) / sevm (before) | {s[0] / b[0]:.2f} | {s[1] / b[1]:.2f} | |")
PY
)
# hyperfine, if installed: no GNU time wrapper and no Python fork in the timed path (-N execs
# each command directly), but each command's runs go in one block, not interleaved.
HF="(hyperfine not installed: apt-get install hyperfine)"
if command -v hyperfine >/dev/null; then
    HFARGS=()
    for i in "${!CMDS[@]}"; do
        HFARGS+=(-n "${CMDS[$i]%%=*}" "${CMDS[$i]#*=}")
    done
    hyperfine -N -i --warmup 3 --runs "$RUNS" --style none --export-json "$OUT/startup-hyperfine.json" \
        --export-markdown "$D/hf.md" "${HFARGS[@]}" >/dev/null 2>&1
    HF=$(cat "$D/hf.md"; echo; python3 - "$OUT/startup-hyperfine.json" <<'PY'
import json, statistics, sys
r = {x["command"]: statistics.median(x["times"]) * 1000 for x in json.load(open(sys.argv[1]))["results"]}
s, m, q = r["sevm run --guest hello"], r["kvm-min"], r["qemu microvm -bios flat"]
print("Medians (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()) + ".")
print(f"Ratios of medians: sevm / kvm-min {s / m:.2f}, sevm / QEMU {s / q:.2f}, "
      f"sevm / kvm-min --split-irqchip {s / r['kvm-min --split-irqchip']:.2f}.")
PY
)
fi
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# Breakdown (after the timed runs, so strace does not disturb them).
LDSTATS=$(LD_DEBUG=statistics $HELLO 2>&1 >/dev/null | grep -E "total startup time|time needed for relocation|number of relocations|time needed to load" | sed -E 's/^ *[0-9]+: *//' || true)
BD_SEVM=$(python3 "$B/startup_breakdown.py" --runs 15 --json "$OUT/startup-breakdown-sevm.json" -- $HELLO)
BD_MIN=$(python3 "$B/startup_breakdown.py" --runs 15 --json "$OUT/startup-breakdown-kvm-min.json" -- $MIN)
BD_SPLIT=$(python3 "$B/startup_breakdown.py" --runs 15 --json "$OUT/startup-breakdown-kvm-min-split-irqchip.json" -- $MIN --split-irqchip)
BD_IRQ=$(python3 "$B/startup_breakdown.py" --runs 15 --json "$OUT/startup-breakdown-kvm-min-irqchip.json" -- $MIN --irqchip)
BD_LATE=$(python3 "$B/startup_breakdown.py" --runs 15 --json "$OUT/startup-breakdown-kvm-min-irqchip-late.json" -- $MIN --irqchip-late)
LDD=$(ldd "$SEVM" | sed -E 's/ \(0x[0-9a-f]+\)//' | awk '{print "    " $0}')

{
    echo "# Start-up: sevm run --guest hello vs a minimal KVM process vs QEMU microvm"
    echo
    echo "Written by \`benches/startup.sh $RUNS\`. Commit \`$(git -C "$ROOT" rev-parse --short HEAD)\`$(git -C "$ROOT" diff --quiet HEAD -- crates || echo ' (with uncommitted changes under crates/)'), release build; started $START."
    echo "Load average (1, 5, 15 min): $LOAD0 at the start, $LOAD1 after the timed runs (alternating, then hyperfine); \`nproc\` = $(nproc). $(uname -r); $($QEMU --version | head -1)."
    echo
    echo "## Side by side (alternating)"
    echo
    echo "$TABLE"
    echo
    echo "| ratio of medians | wall | CPU user+sys | goal (wall) |"
    echo "|---|---|---|---|"
    echo "$RATIOS"
    echo
    echo "## hyperfine -N (same commands, each in one block of $RUNS runs after 3 warm-ups; not interleaved)"
    echo
    echo "$HF"
    echo
    echo "## Breakdown"
    echo
    echo "Dynamic loader of \`sevm\` (\`LD_DEBUG=statistics\`, one run; glibc counts TSC cycles; $(grep -m1 'cpu MHz' /proc/cpuinfo | tr -s '\t ' ' ')):"
    echo
    echo '```'
    echo "$LDSTATS"
    echo '```'
    echo
    echo "Shared libraries (\`ldd\`):"
    echo
    echo "$LDD"
    echo
    echo "### \`sevm run --guest hello\`"
    echo
    echo "$BD_SEVM"
    echo
    echo "### kvm-min"
    echo
    echo "$BD_MIN"
    echo
    echo "### kvm-min --split-irqchip (local APIC only, as sevm for the bundled guests)"
    echo
    echo "$BD_SPLIT"
    echo
    echo "### kvm-min --irqchip (whole irqchip before the memory slot, as sevm for firmware and Linux)"
    echo
    echo "$BD_IRQ"
    echo
    echo "### kvm-min --irqchip-late (irqchip after the memory slot)"
    echo
    echo "$BD_LATE"
} | sed "s#$D/#<tmp>/#g" > "$OUT/startup.md"
cat "$OUT/startup.md"
