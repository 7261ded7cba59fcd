#!/usr/bin/env bash
# Reproduce every figure in docs/PERFORMANCE.md. Writes Markdown tables and raw samples to
# benches/results/ (OUT) and the plot to docs/launch-scaling.svg (SVG). Needs: cargo, python3,
# qemu-system-x86_64 (Debian), valgrind, openssl, bc, GNU time (/usr/bin/time), /dev/kvm;
# sevctl optional. Usage: benches/run-all.sh [RUNS] (default 21 alternating runs per command).
# Nothing here asserts a time: these are measurements, not tests.
set -euo pipefail
RUNS=${1:-21}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
OUT=${OUT:-$B/results}
SVG=${SVG:-$ROOT/docs/launch-scaling.svg}
mkdir -p "$OUT"
cd "$ROOT"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "sha_ni: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)"
    echo "kernel: $(uname -r)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "openssl: $(openssl version)"
    echo "qemu: $(qemu-system-x86_64 --version | head -1)"
    echo "sevctl: $( (sevctl --version || "$HOME/.cargo/bin/sevctl" --version) 2>/dev/null || echo absent)"
    echo "git: $(git rev-parse --short HEAD)"
} | tee "$OUT/machine.txt"

echo "== build (release)"
cargo build --release -p sevm
cargo build --release -p vmm --example qmp_bench --example qmp_fake
( cd "$B/tools" && cp "$ROOT/Cargo.lock" . && CARGO_TARGET_DIR="$ROOT/target" cargo build --release )

echo "== 1. sevm owner measure vs openssl dgst vs sevctl"
"$B/measure.sh" "$RUNS" "$OUT/measure.json" | tee "$OUT/measure.md"
"$B/callgrind.sh" | tee "$OUT/measure-callgrind.md"

echo "== 2. LAUNCH_UPDATE_DATA vs one-core SHA-256 (alternating, then criterion) + openssl speed"
"$ROOT/target/release/launch-alt" 15 64 | tee "$OUT/launch-alt.jsonl"
cargo bench -p sev-firmware --bench launch_update 2>&1 | tee "$OUT/launch-criterion.txt"
python3 "$B/launch_report.py" "$OUT/launch-alt.jsonl" "$ROOT/target" "$SVG" | tee "$OUT/launch.md"
openssl speed -seconds 2 -evp sha256 2>/dev/null | tail -2 | tee "$OUT/openssl-speed.txt"

echo "== 3. sevm run vs QEMU microvm"
"$B/run_vm.sh" "$RUNS" "$OUT/run.json" | tee "$OUT/run.md"

echo "== 4. QMP query-status latency"
"$ROOT/target/release/examples/qmp_bench" 10000 | tee "$OUT/qmp-bench.txt"
"$B/qmp_side_by_side.sh" 10000 | tee "$OUT/qmp.md"

echo "== 5. sevm demo by step"
if "$ROOT/target/release/sevm" demo --help >/dev/null 2>&1; then
    python3 "$B/demo.py" "$ROOT/target/release/sevm" "$RUNS" | tee "$OUT/demo.md"
else
    echo "sevm demo: not available in this build" | tee "$OUT/demo.md"
fi
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
