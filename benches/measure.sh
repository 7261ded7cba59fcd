#!/usr/bin/env bash
# Benchmark 1 (issue 2): whole-process wall time and peak RSS of `sevm owner measure` over a 4 MiB
# firmware (random bytes ending in the real OVMF footer table of crates/sevm/samples/sample-ovmf.fd),
# a 16 MiB kernel and a 64 MiB initrd, side by side (alternating) with `openssl dgst -sha256` over
# the same three files (the limit: one SHA-256 pass) and `sevctl measurement build` (same inputs).
# Timed by alternate.py (ms resolution, where /usr/bin/time has 10 ms). Usage: measure.sh [RUNS] [JSON]; needs
# `cargo build --release -p sevm`.
set -euo pipefail
RUNS=${1:-21}
JSON=${2:-/dev/null}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
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
IMG="--firmware $D/fw.fd --kernel $D/kernel --initrd $D/initrd --cmdline console=ttyS0"
PAR="--tik $D/tik.bin --api-major 0 --api-minor 24 --build-id 17 --policy 1 --nonce AAAAAAAAAAAAAAAAAAAAAA=="
# Both tools must agree on the measurement before we time them.
a=$("$SEVM" owner measure $IMG $PAR)
if [ -x "$SEVCTL" ]; then
    b=$("$SEVCTL" measurement build $IMG $PAR)
    [ "$a" = "$b" ] || { echo "sevm and sevctl disagree: $a vs $b" >&2; exit 1; }
    echo "sevm and sevctl agree: $a"
    SC=("sevctl measurement build=$SEVCTL measurement build $IMG $PAR")
else
    echo "SKIP sevctl: not installed"; SC=()
fi
python3 "$B/alternate.py" --runs "$RUNS" --json "$JSON" -- \
    "openssl dgst -sha256=openssl dgst -sha256 $D/fw.fd $D/kernel $D/initrd" \
    "sevm owner measure=$SEVM owner measure $IMG $PAR" "${SC[@]}"
