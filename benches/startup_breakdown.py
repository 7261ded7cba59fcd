#!/usr/bin/env python3
"""Where a short-lived KVM process spends its time from exec to exit (issue 11, start-up).

Runs a command N times under `strace -f -ttt -T` (one process at a time), finds the phase
boundaries in each trace and prints the median of each phase as a Markdown table:

  exec -> main        execve returned ... the end of the dynamic loader's and libc's set-up
                      calls (libraries mapped and relocated), before the program's first own call
  main -> /dev/kvm    Rust/libc start-up and argument/config work up to opening /dev/kvm
  /dev/kvm -> VM      up to KVM_CREATE_VM returning
  VM -> memory        VM set-up up to the first KVM_SET_USER_MEMORY_REGION returning
  memory -> vCPU      up to the first KVM_CREATE_VCPU returning
  vCPU -> first run   vCPU set-up (CPUID, MSRs, registers, kvm_run mapping, thread) up to
                      the first KVM_RUN being entered
  run -> exit_group   the guest's run(s) and the VMM's own exit path
  exit_group -> gone  the kernel tearing the process down (VM, vCPU, memory)

and, separately, the time spent *inside* the named syscalls (strace -T). strace adds a few
microseconds per syscall, so every phase is longer than without it; the phases are for
attribution, the side-by-side wall times of benches/startup.sh are the figures.

Usage: startup_breakdown.py [--runs N] [--json FILE] -- CMD [ARG ...]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile

PHASES = ["exec -> main", "main -> /dev/kvm", "/dev/kvm -> VM", "VM -> memory",
          "memory -> vCPU", "vCPU -> first run", "run -> exit_group", "exit_group -> gone"]
SYSCALLS = ["KVM_CREATE_VM", "KVM_SET_USER_MEMORY_REGION", "KVM_CREATE_VCPU", "KVM_RUN",
            "clone3", "execve"]


def parse(path):
    """(start time, call text, duration in s) per syscall; with -f, a call split into
    "<unfinished ...>" and "<... resumed>" halves is joined (start and text of the first half,
    duration of the second)."""
    ev, pending = [], {}
    for raw in open(path):
        m = re.match(r"^(\d+)\s+([\d.]+) (.*)$", raw.rstrip("\n"))
        if not m:
            continue
        pid, t, rest = m.group(1), float(m.group(2)), m.group(3)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (t, rest)
            continue
        d = re.search(r" <([\d.]+)>$", rest)
        dur = float(d.group(1)) if d else 0.0
        if rest.startswith("<... ") and pid in pending:
            t0, text = pending.pop(pid)
            ev.append((t0, text, dur))
        else:
            ev.append((t, rest, dur))
    ev.sort(key=lambda e: e[0])
    return ev


def first(ev, pred, after=0.0):
    for t, s, d in ev:
        if t >= after and pred(s):
            return t, s, d
    return None


def phases(ev):
    execve = first(ev, lambda s: s.startswith("execve("))
    t_exec = execve[0] + execve[2]
    # The loader (and libc's own start-up) uses only these calls; the program proper starts
    # at the first other call (for Rust, std's poll/sigaction; for the C probe, the /dev/kvm
    # open). "exec -> main" ends where the last of these returned.
    loader = re.compile(r"(brk|arch_prctl|mmap|access|openat|read|fstat|newfstatat|close|pread64|"
                        r"mprotect|munmap|set_tid_address|set_robust_list|rseq|prlimit64|getrandom)\(")
    t_main = t_exec
    for t, s, d in ev:
        if t <= execve[0]:
            continue
        if s.startswith('openat(AT_FDCWD, "/dev/kvm"') or not loader.match(s):
            break
        t_main = t + d

    def done(pred, after):
        e = first(ev, pred, after)
        return None if e is None else e[0] + e[2]

    t_kvm = done(lambda s: s.startswith('openat(AT_FDCWD, "/dev/kvm"'), t_exec)
    t_vm = done(lambda s: "KVM_CREATE_VM" in s, t_exec)
    t_mem = done(lambda s: "KVM_SET_USER_MEMORY_REGION" in s, t_exec)
    t_vcpu = done(lambda s: "KVM_CREATE_VCPU" in s, t_exec)
    run = first(ev, lambda s: "KVM_RUN" in s, t_exec)
    t_run = run[0] if run else None
    ex = first(ev, lambda s: s.startswith("exit_group("), t_exec)
    # The process is gone when its last thread is (the last "+++ exited" line).
    gones = [e for e in ev if e[1].startswith("+++ exited")]
    gone = gones[-1] if gones else None
    pts = [t_exec, t_main, t_kvm, t_vm, t_mem, t_vcpu, t_run, ex[0] if ex else None,
           gone[0] if gone else None]
    if any(p is None for p in pts):
        raise ValueError(f"trace lacks a phase boundary: {pts}")
    out = {name: (b - a) * 1000 for name, a, b in zip(PHASES, pts, pts[1:])}
    # Syscalls started in each phase: strace adds tens of microseconds to each, so a phase
    # with many calls is inflated more than one with few.
    for name, a, b in zip(PHASES, pts, pts[1:]):
        out[f"n {name}"] = sum(1 for t, _, _ in ev if a <= t < b)
    out["total (exec -> gone)"] = (pts[-1] - pts[0]) * 1000
    for sc in SYSCALLS:
        out[f"in {sc}"] = sum(d for t, s, d in ev if sc in s[:60]) * 1000
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json")
    ap.add_argument("cmd", nargs="+")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.runs):
            p = os.path.join(d, f"t{i}")
            r = subprocess.run(["strace", "-f", "-ttt", "-T", "-o", p] + a.cmd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows.append(phases(parse(p)))
            rows[-1]["rc"] = r.returncode
    keys = [k for k in rows[0] if k != "rc" and not k.startswith("n ")]
    print("| phase (under strace) | median (ms) | min (ms) | max (ms) | syscalls (median) |")
    print("|---|---|---|---|---|")
    for k in keys:
        xs = [r[k] for r in rows]
        n = f"{statistics.median(r['n ' + k] for r in rows):.0f}" if "n " + k in rows[0] else ""
        label = k + " (all calls)" if k.startswith("in ") else k
        print(f"| {label} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} | {n} |")
    print(f"\n{a.runs} runs of `{' '.join(a.cmd)}` under `strace -f -ttt -T`; exit codes "
          f"{sorted(set(r['rc'] for r in rows))}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cmd": a.cmd, "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
