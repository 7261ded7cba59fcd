#!/usr/bin/env bash
# Noise-free companion to measure.sh: instructions executed (valgrind callgrind, Ir) by
# `openssl dgst -sha256` and `sevm owner measure` over the same firmware/kernel/initrd (smaller
# than measure.sh's, 1 + 4 + 16 MiB, to keep valgrind's ~50x slowdown bearable). Valgrind's
# synthetic CPU does not offer the SHA extensions (measured: ~29 instructions per byte, a
# software SHA-256), so both run the same non-SHA-NI libcrypto path: the ratio shows sevm's
# overhead over the pure hash work, not the wall-clock ratio with SHA-NI.
# Usage: callgrind.sh
set -euo pipefail
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
SEVM=${SEVM:-$ROOT/target/release/sevm}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
python3 - "$D" "$ROOT/crates/sevm/samples/sample-ovmf.fd" <<'PY'
import os, sys
d, sample = sys.argv[1], open(sys.argv[2], 'rb').read()
open(d + '/fw.fd', 'wb').write(os.urandom(2**20 - 4096) + sample[-4096:])
open(d + '/kernel', 'wb').write(os.urandom(4 * 2**20))
open(d + '/initrd', 'wb').write(os.urandom(16 * 2**20))
open(d + '/tik.bin', 'wb').write(os.urandom(16))
PY
ir() { valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" "$@" >/dev/null 2>"$D/cg.err" \
       || { cat "$D/cg.err" >&2; exit 1; }; grep -o 'Collected : [0-9]*' "$D/cg.err" | awk '{print $3}'; }
o=$(ir openssl dgst -sha256 "$D/fw.fd" "$D/kernel" "$D/initrd")
s=$(ir "$SEVM" owner measure --firmware "$D/fw.fd" --kernel "$D/kernel" --initrd "$D/initrd" \
      --cmdline console=ttyS0 --tik "$D/tik.bin" --api-major 0 --api-minor 24 --build-id 17 \
      --policy 1 --nonce AAAAAAAAAAAAAAAAAAAAAA==)
echo "| command (1 + 4 + 16 MiB) | instructions (callgrind Ir) | / openssl |"
echo "|---|---|---|"
echo "| \`openssl dgst -sha256\` | $o | 1.00 |"
echo "| \`sevm owner measure\` | $s | $(echo "scale=3; $s / $o" | bc) |"
