#!/bin/sh
# Smoke pass of every fuzz target: build them, then run each for a few seconds from its
# committed corpus and past findings (fuzz/corpus/<target>, fuzz/regressions/<target>, copied
# so the repo is not modified).
# Usage: fuzz/smoke.sh [SECONDS]   (default 10). Needs cargo-fuzz; works on stable
# (--sanitizer none). Exits non-zero on a build failure or any crash.
set -eu
secs="${1:-10}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "SKIP: cargo-fuzz not installed (cargo install cargo-fuzz --locked)"
    exit 0
fi
cargo fuzz build --sanitizer none
bin="$here/target/$(rustc -vV | sed -n 's/^host: //p')/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail=0
for t in $(cargo fuzz list); do
    mkdir -p "$work/$t"
    if [ -d "corpus/$t" ]; then
        cp -r "corpus/$t/." "$work/$t/"
    fi
    # Past findings are replayed first, with the corpus (libFuzzer runs every input of the
    # corpus directory before it mutates anything).
    if [ -d "regressions/$t" ]; then
        cp -r "regressions/$t/." "$work/$t/"
    fi
    echo "== $t (${secs}s)"
    # Run the binary built above directly: `cargo fuzz run` would rebuild first.
    if ! "$bin/$t" "$work/$t" \
        -max_total_time="$secs" -max_len=16384 -rss_limit_mb=4096 \
        -artifact_prefix="$work/" -print_final_stats=1 2>"$work/$t.log"; then
        echo "FAIL: $t (log follows)"
        tail -n 40 "$work/$t.log"
        fail=1
    else
        grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units)' "$work/$t.log" || true
    fi
done
exit "$fail"
