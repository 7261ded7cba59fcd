#!/usr/bin/env bash
# Whole-process time and peak RSS of `sevm owner measure` over a 4 MiB firmware, 16 MiB kernel
# and 64 MiB initrd, side by side with `openssl dgst -sha256` over the same files (the limit:
# one SHA-256 pass) and `sevctl measurement build`. Runs each command RUNS times, alternating,
# and prints medians. Usage: bench-measure.sh [RUNS] (default 7); needs a release build.
set -euo pipefail
RUNS=${1:-7}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
SEVM=${SEVM:-$ROOT/target/release/sevm}
SEVCTL=${SEVCTL:-$(command -v sevctl || echo "$HOME/.cargo/bin/sevctl")}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
python3 - "$D" "$ROOT/crates/sevm/samples/sample-ovmf.fd" <<'PY'
import os, sys
d, sample = sys.argv[1], open(sys.argv[2], 'rb').read()
open(d + '/fw.fd', 'wb').write(os.urandom(4 * 2**20 - 4096) + sample[-4096:])
open(d + '/kernel', 'wb').write(os.urandom(16 * 2**20))
open(d + '/initrd', 'wb').write(os.urandom(64 * 2**20))
open(d + '/tik.bin', 'wb').write(os.urandom(16))
PY
IMG=(--firmware "$D/fw.fd" --kernel "$D/kernel" --initrd "$D/initrd" --cmdline "console=ttyS0")
PAR=(--tik "$D/tik.bin" --api-major 0 --api-minor 24 --build-id 17 --policy 1 --nonce AAAAAAAAAAAAAAAAAAAAAA==)
run() { /usr/bin/time -f "%e %M" -o "$D/t" "$@" >/dev/null 2>&1; cat "$D/t"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$D/openssl" ; : >"$D/sevm" ; : >"$D/sevctl"
for _ in $(seq "$RUNS"); do
    run openssl dgst -sha256 "$D/fw.fd" "$D/kernel" "$D/initrd" >>"$D/openssl"
    run "$SEVM" owner measure "${IMG[@]}" "${PAR[@]}" >>"$D/sevm"
    if [ -x "$SEVCTL" ]; then run "$SEVCTL" measurement build "${IMG[@]}" "${PAR[@]}" >>"$D/sevctl"; fi
done
o_t=$(cut -d' ' -f1 "$D/openssl" | median); o_m=$(cut -d' ' -f2 "$D/openssl" | median)
s_t=$(cut -d' ' -f1 "$D/sevm" | median); s_m=$(cut -d' ' -f2 "$D/sevm" | median)
printf '%-28s %8s %10s %8s\n' command "time(s)" "RSS(KiB)" "x limit"
printf '%-28s %8s %10s %8s\n' "openssl dgst -sha256" "$o_t" "$o_m" 1.00
printf '%-28s %8s %10s %8s\n' "sevm owner measure" "$s_t" "$s_m" "$(echo "scale=2; $s_t / $o_t" | bc)"
if [ -s "$D/sevctl" ]; then
    c_t=$(cut -d' ' -f1 "$D/sevctl" | median); c_m=$(cut -d' ' -f2 "$D/sevctl" | median)
    printf '%-28s %8s %10s %8s\n' "sevctl measurement build" "$c_t" "$c_m" "$(echo "scale=2; $c_t / $o_t" | bc)"
fi
