#!/usr/bin/env python3
"""Run several commands side by side, alternating, and report medians as ratios to a reference.

Each round runs every command once, rotating the start position so that no command always runs
first. Wall time is measured around fork+exec+wait (time.perf_counter); CPU time (user + sys) from
wait4(); peak RSS is GNU time's %M (KiB) for that one process. Output: a Markdown table on stdout and,
with --json FILE, the raw samples. The first command is the reference (ratio 1.00).

Usage: alternate.py [--runs N] [--warmup N] [--json FILE] [--expect-rc RC ...] -- NAME=CMD ...
       (CMD is split by the shell's rules, shlex; one NAME=CMD per argument)
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time


RSS_FILE = f"/tmp/alternate-rss.{os.getpid()}"


def run_once(argv):
    # Peak RSS via GNU time, not wait4(): a child forked from this Python process inherits
    # Python's RSS high-water mark across exec (Linux keeps the old mm's hiwater), so wait4
    # would report at least ~15 MiB for /bin/true. GNU time is a small C process (~2 MiB floor,
    # the same for every command); its fork+exec adds well under 1 ms to every wall time alike.
    # CPU time (user + sys, µs resolution) comes from wait4() on GNU time, whose rusage includes
    # the command it waited for; it is less sensitive than wall time to waiting for a CPU.
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", RSS_FILE] + argv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    with open(RSS_FILE) as f:
        last = f.read().strip().splitlines()[-1]
    return dt, int(last), rc, ru.ru_utime + ru.ru_stime


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--expect-rc", type=int, nargs="*", default=None,
                    help="expected exit code per command (default: any)")
    ap.add_argument("cmds", nargs="+")
    a = ap.parse_args()
    cmds = []
    for c in a.cmds:
        name, _, cmd = c.partition("=")
        cmds.append((name, shlex.split(cmd)))
    samples = {n: [] for n, _ in cmds}
    for r in range(a.warmup + a.runs):
        k = r % len(cmds)
        for i, (name, argv) in enumerate(cmds[k:] + cmds[:k]):
            dt, rss, rc, cpu = run_once(argv)
            j = [n for n, _ in cmds].index(name)
            if a.expect_rc is not None and rc != a.expect_rc[j]:
                sys.exit(f"{name}: exit code {rc}, expected {a.expect_rc[j]}: {argv}")
            if r >= a.warmup:
                samples[name].append((dt, rss, rc, cpu))
    ref = cmds[0][0]
    ref_t = statistics.median(s[0] for s in samples[ref])
    ref_m = statistics.median(s[1] for s in samples[ref])
    ref_c = statistics.median(s[3] for s in samples[ref])
    print(f"| command | median wall (ms) | p10–p90 (ms) | median CPU user+sys (ms) | median peak RSS (KiB) "
          f"| wall / {ref} | CPU / {ref} | RSS / {ref} |")
    print("|---|---|---|---|---|---|---|---|")
    out = {}
    for name, argv in cmds:
        ts = [s[0] * 1000 for s in samples[name]]
        ms = [s[1] for s in samples[name]]
        cs = [s[3] * 1000 for s in samples[name]]
        mt, mm, mc = statistics.median(ts), statistics.median(ms), statistics.median(cs)
        print(f"| `{name}` | {mt:.1f} | {pct(ts, .1):.1f}–{pct(ts, .9):.1f} | {mc:.1f} | {mm:,.0f} | "
              f"{mt / (ref_t * 1000):.2f} | {mc / (ref_c * 1000):.2f} | {mm / ref_m:.2f} |")
        out[name] = {"argv": argv, "wall_ms": ts, "cpu_ms": cs, "rss_kib": ms,
                     "rc": [s[2] for s in samples[name]]}
    print(f"\n{a.runs} alternating runs each (after {a.warmup} warm-up rounds), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    os.unlink(RSS_FILE)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
