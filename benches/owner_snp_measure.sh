#!/usr/bin/env bash
# Issue 14 benchmark: whole-process wall time of `sevm owner snp measure --vmm qemu` against
# sev-snp-measure (`--mode snp`, the Python tool, same inputs) and against one
# `openssl dgst -sha384` pass over the same bytes (the OVMF image, the kernel and the initrd),
# side by side in one hyperfine run. Inputs: a 4 MiB OVMF-shaped image with SNP metadata
# (crates/sevm/samples/make_samples.py --snp-ovmf), a 16 MiB kernel and a 64 MiB initrd of random
# bytes, 4 vCPUs of type EPYC-Milan, guest features 0x1.
# Usage: owner_snp_measure.sh [RUNS] [OUTDIR]; needs `cargo build --release -p sevm` (or SEVM=...),
# hyperfine, and sev-snp-measure (SEV_SNP_MEASURE=..., default <repo>/.venv/bin/sev-snp-measure).
set -euo pipefail
RUNS=${1:-15}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
OUT=${2:-$B/results/owner-snp-measure}
SEVM=${SEVM:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sevm}
SSM=${SEV_SNP_MEASURE:-$ROOT/.venv/bin/sev-snp-measure}
for t in "$SEVM" "$SSM"; do [ -x "$t" ] || { echo "not found: $t" >&2; exit 1; }; done
command -v hyperfine >/dev/null || { echo "hyperfine not installed" >&2; exit 1; }
mkdir -p "$OUT"
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
python3 "$ROOT/crates/sevm/samples/make_samples.py" --snp-ovmf "$D/ovmf.fd" $((4 * 1024 * 1024))
head -c $((16 * 1024 * 1024)) /dev/urandom > "$D/kernel"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$D/initrd"
COMMON="--vcpus 4 --vcpu-type EPYC-Milan --guest-features 0x1 --kernel $D/kernel --initrd $D/initrd"
S="$SEVM owner snp measure --firmware $D/ovmf.fd $COMMON --cmdline console=ttyS0"
P="$SSM --mode snp --ovmf $D/ovmf.fd $COMMON --append console=ttyS0"
O="openssl dgst -sha384 $D/ovmf.fd $D/kernel $D/initrd"
# Both tools must agree before they are timed.
a=$($S); b=$($P)
[ "$a" = "$b" ] || { echo "sevm and sev-snp-measure disagree: $a vs $b" >&2; exit 1; }
echo "sevm and sev-snp-measure agree: $a" | tee "$OUT/agree.txt"
{ date -u '+%Y-%m-%d %H:%M UTC'; uname -r; nproc; uptime; grep -m1 'model name' /proc/cpuinfo;
  grep -o -m1 -w sha_ni /proc/cpuinfo || echo "no sha_ni"; "$SEVM" --version; "$SSM" --version;
  openssl version; hyperfine --version; } > "$OUT/machine.txt" 2>&1
hyperfine --warmup 2 --runs "$RUNS" -N \
    --export-markdown "$OUT/results.md" --export-json "$OUT/results.json" \
    -n "openssl dgst -sha384 (one pass)" "$O" \
    -n "sevm owner snp measure" "$S" \
    -n "sev-snp-measure --mode snp" "$P"
python3 - "$OUT/results.json" <<'PY' | tee "$OUT/ratios.md"
import json, sys
r = {x['command']: x for x in json.load(open(sys.argv[1]))['results']}
o = r['openssl dgst -sha384 (one pass)']['median']
s = r['sevm owner snp measure']['median']
p = r['sev-snp-measure --mode snp']['median']
print('| ratio (medians) | value | goal |')
print('|---|---|---|')
print(f'| sevm / sev-snp-measure | {s / p:.3f} | <= 0.1 |')
print(f'| sevm / openssl dgst -sha384 | {s / o:.3f} | <= 1.1 |')
print(f'\nmedians: openssl {o*1000:.1f} ms, sevm {s*1000:.1f} ms, sev-snp-measure {p*1000:.1f} ms')
PY
