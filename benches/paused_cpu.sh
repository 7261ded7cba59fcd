#!/usr/bin/env bash
# CPU use of an idle sevm process, before and after the persistent vCPU threads (issue 11),
# side by side in one run. A measurement, not a test: nothing here asserts a figure.
#
# Scenarios (each: settle 1 s, then utime+stime from /proc/PID/stat and the voluntary context
# switches of all threads over DUR seconds):
#   paused      firmware spinning in `jmp $`, stopped with QMP `stop`
#   idle-qmp    firmware in `cli; hlt` (the vCPU blocks in KVM), QMP monitor attached
#   idle        the same without QMP
#
# Usage: benches/paused_cpu.sh [DUR]   (default 10 s)
#   BEFORE=path/to/old/sevm  the old binary; default: main at 57efe406 built in a temporary
#                            worktree with its own target dir
#   AFTER=path/to/new/sevm   default: this tree's sevm (built, same profile as BEFORE: debug)
#   OUT=dir                  default benches/results; writes $OUT/paused-cpu.md
set -euo pipefail
DUR=${1:-10}
B=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$B")
OUT=${OUT:-$B/results}
BASE_REV=57efe406
mkdir -p "$OUT"
cd "$ROOT"
if [ -z "${AFTER:-}" ]; then
    cargo build -p sevm --bin sevm
    AFTER="${CARGO_TARGET_DIR:-$ROOT/target}/debug/sevm"
fi
if [ -z "${BEFORE:-}" ]; then
    WT=$(mktemp -d)
    git worktree add --detach "$WT/src" "$BASE_REV" >/dev/null
    CARGO_TARGET_DIR="$WT/target" cargo build --manifest-path "$WT/src/Cargo.toml" -p sevm --bin sevm
    BEFORE="$WT/target/debug/sevm"
fi
python3 - "$DUR" "$BEFORE" "$AFTER" "$OUT/paused-cpu.md" "$(git rev-parse --short HEAD)" "$BASE_REV" <<'EOF'
import json, os, socket, subprocess, sys, tempfile, time

dur = float(sys.argv[1])
before, after, out, head, base = sys.argv[2:7]
tck = os.sysconf("SC_CLK_TCK")

def firmware(path, reset):
    fw = bytearray(b"\xf4" * 4096)
    fw[0xff0:0xff0 + len(reset)] = reset
    open(path, "wb").write(fw)

def qmp(sock_path):
    for _ in range(500):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            break
        except OSError:
            time.sleep(0.01)
    else:
        raise SystemExit(f"no QMP socket at {sock_path}")
    f = s.makefile("rw")
    f.readline()
    def cmd(name):
        f.write(json.dumps({"execute": name}) + "\n"); f.flush()
        while True:
            m = json.loads(f.readline())
            if "event" not in m:
                return m
    cmd("qmp_capabilities")
    return s, cmd

def cpu_ticks(pid):
    st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])  # utime + stime (fields 14, 15)

def wakeups(pid):
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            for l in open(f"/proc/{pid}/task/{t}/status"):
                if l.startswith("voluntary_ctxt_switches"):
                    n += int(l.split()[1])
        except OSError:
            pass
    return n

def measure(binary, scenario, d):
    fw = os.path.join(d, f"{scenario}.bin")
    firmware(fw, b"\xeb\xfe" if scenario == "paused" else b"\xfa\xf4\xeb\xfd")
    args = [binary, "run", "--firmware", fw, "--memory", "32M", "--serial", "none",
            "--cpus", "1", "--timeout", str(int(dur) + 60)]
    sock = os.path.join(d, f"{scenario}.sock")
    if scenario != "idle":
        args += ["--qmp", f"unix:{sock}"]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        s = None
        if scenario != "idle":
            s, cmd = qmp(sock)
            if scenario == "paused":
                time.sleep(0.5)
                r = cmd("stop")
                assert r == {"return": {}}, r
                assert cmd("query-status")["return"]["status"] == "paused"
        time.sleep(1.0)
        c0, w0, t0 = cpu_ticks(p.pid), wakeups(p.pid), time.monotonic()
        time.sleep(dur)
        c1, w1, t1 = cpu_ticks(p.pid), wakeups(p.pid), time.monotonic()
        if s is not None:
            s.close()
    finally:
        p.kill()
        p.wait()
    el = t1 - t0
    return 100.0 * (c1 - c0) / tck / el, (w1 - w0) / el

rows = []
with tempfile.TemporaryDirectory() as d:
    for scenario in ["paused", "idle-qmp", "idle"]:
        r = {}
        # Alternate old and new so load changes hit both.
        for name, binary in [("before", before), ("after", after)]:
            r[name] = measure(binary, scenario, d)
        rows.append((scenario, r))
        print(scenario, r, file=sys.stderr)

load = open("/proc/loadavg").read().split()[:3]
with open(out, "w") as f:
    f.write(f"# Idle sevm process CPU use (benches/paused_cpu.sh)\n\n")
    f.write(f"before: main at {base} (`{before}`); after: {head} (`{after}`); both debug builds.\n")
    f.write(f"{dur:g} s per measurement after 1 s settling; CPU = utime+stime of the whole process "
            f"(/proc/PID/stat, {tck} ticks/s, so 0.1% = 1 tick per 10 s); wakeups = voluntary "
            f"context switches of all threads per second. Load average at the end: {' '.join(load)} "
            f"(2 cores shared).\n\n")
    f.write("| scenario | CPU before (% of a core) | CPU after | wakeups/s before | wakeups/s after |\n")
    f.write("|---|---|---|---|---|\n")
    desc = {"paused": "paused (QMP `stop` of a spinning guest)",
            "idle-qmp": "running, guest in `hlt`, QMP attached",
            "idle": "running, guest in `hlt`, no QMP"}
    for scenario, r in rows:
        (cb, wb), (ca, wa) = r["before"], r["after"]
        f.write(f"| {desc[scenario]} | {cb:.2f} | {ca:.2f} | {wb:.1f} | {wa:.1f} |\n")
print(open(out).read())
EOF
