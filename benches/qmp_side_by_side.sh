#!/usr/bin/env bash
# QMP query-status round trips from one Python client, alternating in blocks of 10 calls,
# against QEMU's QMP (microvm, paused with -S) and three sevm QMP servers: `sevm run --paused
# --qmp` with a real KVM VM (plain, and SEV on the soft backend, paused after LAUNCH_MEASURE),
# both booting the same flat firmware as QEMU, and crates/vmm/examples/qmp_fake (the same
# monitor code over the fake backend, no VM). Usage: qmp_side_by_side.sh [CALLS]
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
# The real VMs wait paused; their stdin is a FIFO this script holds open (an SEV launch reads a
# secret line from stdin; EOF would only mean "no secret"), closed when the script exits.
mkfifo "$D/stdin"
exec 3<>"$D/stdin"
"$ROOT/target/release/sevm" run --memory 128M --firmware "$D/flat.bin" --paused \
    --qmp "unix:$D/vm.sock" <"$D/stdin" >"$D/vm.log" 2>&1 & pids+=($!)
"$ROOT/target/release/sevm" run --memory 128M --firmware "$D/flat.bin" --paused \
    --qmp "unix:$D/sev.sock" --platform-dir "$D/platform" \
    --object sev-guest,id=sev0,policy=0x0,cbitpos=47,reduced-phys-bits=1 \
    --machine confidential-guest-support=sev0 <"$D/stdin" >"$D/sev.log" 2>&1 & pids+=($!)
qemu-system-x86_64 -M microvm -accel kvm -S -nodefaults -display none -bios "$D/flat.bin" \
    -qmp "unix:$D/qemu.sock,server=on,wait=off" 2>"$D/qemu.log" & pids+=($!)
for _ in $(seq 600); do
    [ -S "$D/sevm.sock" ] && [ -S "$D/qemu.sock" ] && [ -S "$D/vm.sock" ] && [ -S "$D/sev.sock" ] && break
    sleep 0.1
done
for s in sevm qemu vm sev; do
    [ -S "$D/$s.sock" ] || { echo "no QMP socket $s.sock"; cat "$D"/*.log; exit 1; }
done
python3 "$B/qmp_latency.py" --calls "$CALLS" "qemu microvm QMP=$D/qemu.sock" \
    "sevm run --qmp (KVM VM, paused)=$D/vm.sock" \
    "sevm run --qmp (SEV soft, paused after LAUNCH_MEASURE)=$D/sev.sock" \
    "sevm QMP (qmp_fake, no VM)=$D/sevm.sock"
