#!/usr/bin/env bash
# QMP query-status round trips from one Python client, alternating in blocks of 10 calls,
# against sevm's QMP server (crates/vmm/examples/qmp_fake: the real monitor code over the fake
# backend) and QEMU's QMP (microvm, paused with -S). Usage: qmp_side_by_side.sh [CALLS]
set -euo pipefail
CALLS=${1:-10000}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
D=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
python3 "$B/fw/make_flat.py" "$D/flat.bin"
"$ROOT/target/release/examples/qmp_fake" "unix:$D/sevm.sock" --plain >"$D/fake.log" 2>&1 & pids+=($!)
qemu-system-x86_64 -M microvm -accel kvm -S -nodefaults -display none -bios "$D/flat.bin" \
    -qmp "unix:$D/qemu.sock,server=on,wait=off" 2>"$D/qemu.log" & pids+=($!)
for _ in $(seq 100); do [ -S "$D/sevm.sock" ] && [ -S "$D/qemu.sock" ] && break; sleep 0.1; done
python3 "$B/qmp_latency.py" --calls "$CALLS" "qemu microvm QMP=$D/qemu.sock" "sevm QMP (qmp_fake)=$D/sevm.sock"
