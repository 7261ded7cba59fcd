#!/usr/bin/env python3
"""Benchmark 5: `sevm demo` broken down by step, from the step durations it prints
(`[N] title: detail (X ms)`). One cold run on a fresh platform directory (the soft platform
generates its keys), then RUNS warm runs on the same directory; medians per step and each
step's share of the median total. Usage: demo.py SEVM [RUNS]
"""
import re
import statistics
import subprocess
import sys
import tempfile

STEP = re.compile(r"^\[(\d+)\] ([^:]+): .*\(([\d.]+) ms\)$")
TOTAL = re.compile(r"^sevm demo: OK \(([\d.]+) ms\)$")


def run(sevm, pdir):
    p = subprocess.run([sevm, "demo", "--platform-dir", pdir], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"sevm demo failed ({p.returncode}): {p.stdout}{p.stderr}")
    steps, total = {}, None
    for line in p.stdout.splitlines():
        if m := STEP.match(line):
            title = line[len(f"[{m[1]}] "):].split(":")[0] + ": " + \
                line.split(": ", 2)[1][:60] if line.count(": ") >= 2 else m[2]
            steps[int(m[1])] = (title, float(m[3]))
        elif m := TOTAL.match(line):
            total = float(m[1])
    if not steps or total is None:
        raise SystemExit(f"no step durations in sevm demo output:\n{p.stdout}")
    return steps, total


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    sevm, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 11
    with tempfile.TemporaryDirectory() as d:
        cold, cold_total = run(sevm, d + "/p")
        warm = [run(sevm, d + "/p") for _ in range(runs)]
    total = statistics.median(t for _, t in warm)
    print(f"| step | cold run (ms) | warm median of {runs} (ms) | warm min–max (ms) | share of warm total |")
    print("|---|---|---|---|---|")
    for n in sorted(cold):
        xs = [w[n][1] for w, _ in warm]
        m = statistics.median(xs)
        print(f"| [{n}] {cold[n][0]} | {cold[n][1]:.1f} | {m:.1f} | {min(xs):.1f}–{max(xs):.1f} | {m / total:.0%} |")
    print(f"| **total** (as printed) | {cold_total:.1f} | {total:.1f} | "
          f"{min(t for _, t in warm):.1f}–{max(t for _, t in warm):.1f} | 100% |")


if __name__ == "__main__":
    main()
