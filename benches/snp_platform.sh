#!/usr/bin/env bash
# Soft SNP firmware benchmarks (issue 13), each side by side with its reference in one run:
#   1. LAUNCH_UPDATE throughput over 4 KiB .. 64 MiB of NORMAL pages vs one-core SHA-384 of the
#      same bytes, in process (crates/sev-firmware/examples/snp_bench.rs, OpenSSL's SHA-384), and
#      `openssl dgst -sha384` over files of the same sizes (hyperfine, with the file in page cache)
#      as the command-line reference the issue names; each side timed by wall clock and by the
#      thread's CPU time (the latter ignores waiting for a core on a loaded machine);
#   2. guest request (MSG_REPORT_REQ -> signed, encrypted MSG_REPORT_RSP) latency vs one OpenSSL
#      P-384 signature (in process), plus `openssl speed ecdsap384` for the record.
# Writes $OUT/snp-platform.jsonl, $OUT/snp-platform-dgst.json and $OUT/snp-platform.md.
# Needs: cargo, openssl, hyperfine (Debian: hyperfine). Usage: snp_platform.sh [REPS] (default 9)
set -euo pipefail
REPS=${1:-9}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
OUT=${OUT:-$B/results/snp-platform}
TGT=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$OUT"
for t in cargo openssl hyperfine; do
    command -v "$t" >/dev/null || { echo "snp_platform.sh: $t not found" >&2; exit 1; }
done
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT

(cd "$ROOT" && cargo build --release -q -p sev-firmware --example snp_bench)
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "openssl: $(openssl version)"
} >"$OUT/machine.txt"

"$TGT/release/examples/snp_bench" --reps "$REPS" | tee "$OUT/snp-platform.jsonl"

args=()
for size in 4K 64K 1M 16M 64M; do
    head -c "$size" /dev/urandom >"$D/$size"
    args+=("openssl dgst -sha384 $D/$size")
done
hyperfine -N --warmup 2 --runs "$REPS" --export-json "$OUT/snp-platform-dgst.json" "${args[@]}" >/dev/null
openssl speed -seconds 2 ecdsap384 2>/dev/null | tail -2 >"$OUT/openssl-speed-ecdsap384.txt"

python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "snp-platform.jsonl").read_text().splitlines() if l.strip()]
dg = json.loads((out / "snp-platform-dgst.json").read_text())["results"]
md = ["| bytes | LAUNCH_UPDATE MB/s | SHA-384 MB/s (in process) | ratio (wall) | ratio (thread CPU time) | `openssl dgst -sha384` median ms (whole process) |",
      "|---:|---:|---:|---:|---:|---:|"]
lu = [r for r in rows if r["bench"] == "launch_update"]
for r, d in zip(lu, dg):
    md.append(f"| {r['bytes']} | {r['fw_mb_s']:.1f} | {r['sha384_mb_s']:.1f} | {r['ratio_fw_over_sha']:.2f} | {r['ratio_cpu']:.2f} | {d['median']*1e3:.2f} |")
for r in rows:
    if r["bench"] == "report_request":
        md.append("")
        md.append(f"Report request: median {r['fw_us']:.0f} µs; one P-384 sign {r['p384_sign_us']:.0f} µs; ratio {r['ratio_fw_over_sign']:.2f} ({r['samples']} samples).")
(out / "snp-platform.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
