#!/usr/bin/env python3
"""Turn the LAUNCH_UPDATE_DATA results into Markdown tables (stdout) and an SVG plot of
LAUNCH_UPDATE_DATA time against image size.

Reads the alternating runs of benches/tools launch-alt (JSON lines: typed, openssl::sha::sha256,
EVP SHA-256; medians in ns) and the criterion results of `cargo bench -p sev-firmware --bench
launch_update` (target/criterion/launch_update_data/<series>/<size>/new/estimates.json, median
ns; adds the raw, encrypting command path). Standard library only.
Usage: launch_report.py LAUNCH_ALT.jsonl TARGET_DIR OUT.svg
"""
import json
import math
import os
import sys

SERIES = [("alt_typed", "LAUNCH_UPDATE_DATA, typed API (alternating runs)", "#c0392b"),
          ("alt_sha", "one-core SHA-256, openssl::sha (alternating runs)", "#2471a3"),
          ("raw_encrypting", "LAUNCH_UPDATE_DATA, raw command, encrypts in PA space (criterion)", "#8e44ad")]
CRITERION = ["typed", "openssl_sha256", "raw_encrypting"]


def load_alt(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return rows


def load(target):
    base = os.path.join(target, "criterion", "launch_update_data")
    data = {}
    for key in CRITERION:
        d = os.path.join(base, key)
        if not os.path.isdir(d):
            continue
        for size in os.listdir(d):
            f = os.path.join(d, size, "new", "estimates.json")
            if size.isdigit() and os.path.exists(f):
                with open(f) as fh:
                    e = json.load(fh)
                data.setdefault(key, {})[int(size)] = e["median"]["point_estimate"]
    return data


def human(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def alt_table(rows):
    print("| size | LAUNCH_UPDATE_DATA median | MB/s | SHA-256 (openssl::sha) median | MB/s | EVP SHA-256 median | **ratio to SHA-256** (throughput) | ratio to EVP |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = lambda ns: f"{ns / 1e6:.3f} ms" if ns >= 1e5 else f"{ns / 1e3:.1f} µs"
    for r in rows:
        print(f"| {human(r['size'])} | {fmt(r['typed_ns'])} | {r['typed_mbps']:.0f} | {fmt(r['sha256_ns'])} | "
              f"{r['sha256_mbps']:.0f} | {fmt(r['evp_ns'])} | **{r['ratio']:.2f}** | {r['ratio_evp']:.2f} |")


def table(data):
    sha = data.get("openssl_sha256", {})
    print("| size | typed: median | typed MB/s | SHA-256 median | SHA-256 MB/s | typed / SHA-256 throughput | raw (encrypting) MB/s | raw / SHA-256 |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sorted(data.get("typed", {})):
        t = data["typed"][size]
        s = sha.get(size)
        r = data.get("raw_encrypting", {}).get(size)
        mbs = lambda ns: size / (ns / 1e9) / 1e6
        fmt = lambda ns: f"{ns / 1e6:.3f} ms" if ns >= 1e5 else f"{ns / 1e3:.1f} µs"
        print(f"| {human(size)} | {fmt(t)} | {mbs(t):.0f} | {fmt(s) if s else '–'} | "
              f"{mbs(s):.0f} | {s / t:.2f} | "
              f"{(f'{mbs(r):.0f}' if r else '–')} | {(f'{s / r:.2f}' if r else '–')} |")


def svg(data, out):
    W, H, L, R, T, B = 720, 440, 80, 20, 40, 110
    pts = [(s, v) for k in data for s, v in data[k].items()]
    xs = [math.log10(s) for s, _ in pts]
    ys = [math.log10(v / 1e6) for _, v in pts]  # ms
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys))
    X = lambda lx: L + (lx - x0) / (x1 - x0) * (W - L - R)
    Y = lambda ly: H - B - (ly - y0) / (y1 - y0) * (H - T - B)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">Soft firmware LAUNCH_UPDATE_DATA time vs image size (log-log, medians)</text>']
    for e in range(y0, y1 + 1):
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{Y(e):.1f}" y2="{Y(e):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{Y(e) + 4:.1f}" text-anchor="end">{10.0 ** e:g} ms</text>')
    for s in sorted({s for s, _ in pts}):
        o.append(f'<line y1="{T}" y2="{H - B}" x1="{X(math.log10(s)):.1f}" x2="{X(math.log10(s)):.1f}" stroke="#eee"/>')
        o.append(f'<text x="{X(math.log10(s)):.1f}" y="{H - B + 16}" text-anchor="middle">{human(s)}</text>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - B + 34}" text-anchor="middle">bytes per LAUNCH_UPDATE_DATA</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#444"/>')
    for i, (key, label, color) in enumerate(SERIES):
        if key not in data:
            continue
        p = sorted(data[key].items())
        path = " ".join(f"{X(math.log10(s)):.1f},{Y(math.log10(v / 1e6)):.1f}" for s, v in p)
        o.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for s, v in p:
            o.append(f'<circle cx="{X(math.log10(s)):.1f}" cy="{Y(math.log10(v / 1e6)):.1f}" r="3" fill="{color}"/>')
        ly = H - B + 54 + i * 16
        o.append(f'<line x1="{L}" x2="{L + 24}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
        o.append(f'<text x="{L + 30}" y="{ly}">{label}</text>')
    o.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    rows = load_alt(sys.argv[1])
    print("Alternating (benches/tools launch-alt):\n")
    alt_table(rows)
    d = load(sys.argv[2])
    if "typed" in d:
        print("\nCriterion (cargo bench -p sev-firmware --bench launch_update; not alternating):\n")
        table(d)
    plot = {"alt_typed": {r["size"]: r["typed_ns"] for r in rows},
            "alt_sha": {r["size"]: r["sha256_ns"] for r in rows}}
    if "raw_encrypting" in d:
        plot["raw_encrypting"] = d["raw_encrypting"]
    svg(plot, sys.argv[3])
