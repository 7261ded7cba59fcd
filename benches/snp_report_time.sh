#!/usr/bin/env bash
# Issue 14 benchmark: time from `sevm run` to a verified SNP report for the bundled snp-attest
# guest on the soft backend (launch, guest's MSG_REPORT_REQ/KEY_REQ/extended request, report
# written, `sevm owner snp verify-report` with the expected measurement, host data and report
# data), side by side in one hyperfine run with the same launch alone and with `sevm run --guest
# hello` (no SEV) as the floor of a sevm process on this KVM.
# Usage: snp_report_time.sh [RUNS] [OUTDIR]; needs `cargo build --release -p sevm` (or SEVM=...)
# and hyperfine; /dev/kvm.
set -euo pipefail
RUNS=${1:-15}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
OUT=${2:-$B/results/snp-report-time}
SEVM=${SEVM:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sevm}
[ -x "$SEVM" ] || { echo "not found: $SEVM (cargo build --release -p sevm)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine not installed" >&2; exit 1; }
[ -w /dev/kvm ] || { echo "/dev/kvm not usable" >&2; exit 1; }
mkdir -p "$OUT"
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
HD=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
RD=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')
HD64=$(printf '%s' "$HD" | xxd -r -p | base64 -w0)
OBJ="sev-snp-guest,id=snp0,policy=0x30000,cbitpos=47,reduced-phys-bits=1,host-data=$HD64"
"$SEVM" platform snp status --platform-dir "$D/plat" >/dev/null
"$SEVM" platform snp export --platform-dir "$D/plat" "$D/certs" >/dev/null
M=$("$SEVM" owner snp measure --vmm sevm --guest snp-attest --memory 16M --policy 0x30000 --vcpus 1)
RUN="$SEVM run --guest snp-attest --memory 16M --platform-dir $D/plat --object $OBJ --machine confidential-guest-support=snp0 --report-data $RD --report-out $D/r.bin"
VERIFY="$SEVM owner snp verify-report --certs $D/certs --measurement $M --host-data $HD --report-data $RD $D/r.bin"
# The whole flow must pass before it is timed.
$RUN >/dev/null 2>&1 && $VERIFY >/dev/null
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "sevm: $SEVM"
} >"$OUT/machine.txt"
hyperfine --warmup 2 --runs "$RUNS" --export-json "$OUT/results.json" --export-markdown "$OUT/results.md" \
    -n "run snp-attest + verify-report" "$RUN >/dev/null 2>&1 && $VERIFY >/dev/null" \
    -n "run snp-attest" "$RUN >/dev/null 2>&1" \
    -n "run hello (no SEV)" "$SEVM run --guest hello --memory 16M >/dev/null 2>&1"
cat "$OUT/results.md"
