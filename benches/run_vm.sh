#!/usr/bin/env bash
# Benchmark 3 (issue 4): whole-process wall time (start to guest exit) and peak RSS of sevm
# booting a 64 KiB flat firmware (benches/fw/make_flat.py: prints one line on COM1, writes 0 to
# port 0xf4) vs Debian's QEMU microvm running the same image with -bios, alternating, in one
# run; plus `sevm run --guest hello` (the bundled 64-bit guest). If `sevm run` is not available,
# uses benches/tools vm-run (the vmm library, same code path) and says so.
# Usage: run_vm.sh [RUNS] [JSON]
set -euo pipefail
RUNS=${1:-21}
JSON=${2:-/dev/null}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
SEVM=${SEVM:-$ROOT/target/release/sevm}
QEMU=${QEMU:-qemu-system-x86_64}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
python3 "$B/fw/make_flat.py" "$D/flat.bin"
MEM=128M   # QEMU microvm's default RAM; sevm gets the same
QCMD="$QEMU -M microvm -accel kvm -m $MEM -bios $D/flat.bin -nodefaults -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4"
# QEMU's isa-debug-exit makes the process exit with (value << 1) | 1 = 1.
out=$($QCMD 2>/dev/null) || rc=$?
[ "${rc:-0}" = 1 ] && grep -q "hello from a flat firmware" <<<"$out" || { echo "QEMU did not run the flat image (rc ${rc:-0}): $out" >&2; exit 1; }
if "$SEVM" run --help >/dev/null 2>&1; then
    RUNNER="sevm run"
    FW="$SEVM run --memory $MEM --firmware $D/flat.bin"
    HELLO="$SEVM run --memory $MEM --guest hello"
else
    RUNNER="vm-run (sevm run not available)"
    ( cd "$B/tools" && cp "$ROOT/Cargo.lock" . && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q --bin vm-run )
    FW="$ROOT/target/release/vm-run --memory $MEM --firmware $D/flat.bin"
    HELLO="$ROOT/target/release/vm-run --memory $MEM --guest hello"
fi
echo "runner: $RUNNER"
out=$($FW 2>/dev/null) || { echo "$RUNNER --firmware failed: $out" >&2; exit 1; }
grep -q "hello from a flat firmware" <<<"$out" || { echo "no output from $RUNNER --firmware: $out" >&2; exit 1; }
$HELLO >/dev/null 2>&1 || { echo "$RUNNER --guest hello failed" >&2; exit 1; }
python3 "$B/alternate.py" --runs "$RUNS" --json "$JSON" --expect-rc 1 0 0 -- \
    "qemu microvm -bios flat=$QCMD" \
    "$RUNNER --firmware flat=$FW" \
    "$RUNNER --guest hello=$HELLO"
