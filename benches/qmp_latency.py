#!/usr/bin/env python3
"""QMP `query-status` round-trip latency, the same Python client against several QMP servers
side by side: the calls alternate between servers in blocks of 10, so load spikes on this
shared machine hit all of them alike. Each call = write one command line + read one reply line
on a Unix socket. Prints p50/p90/p99/max per server (µs) and the p50/p99 ratios to the first.

Usage: qmp_latency.py [--calls N] NAME=SOCKET_PATH ...   (servers must already be listening)
"""
import argparse
import json
import socket
import time


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rb")  # buffered: readline does not read byte by byte
        greeting = json.loads(self.f.readline())
        if "QMP" not in greeting:
            raise SystemExit(f"{path}: no QMP greeting: {greeting}")
        self.call(b'{"execute":"qmp_capabilities"}\n')

    def call(self, req):
        self.s.sendall(req)
        while True:
            line = self.f.readline()
            if not line:
                raise SystemExit("server closed the connection")
            if b'"event"' not in line:  # skip asynchronous events
                return line


def pct(xs, q):
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs))) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("servers", nargs="+")
    a = ap.parse_args()
    names, clients = [], []
    for s in a.servers:
        n, _, p = s.partition("=")
        names.append(n)
        clients.append(Client(p))
    req = b'{"execute":"query-status"}\n'
    for c in clients:
        for _ in range(200):
            c.call(req)  # warm-up
    lat = [[] for _ in clients]
    block = 10
    for b in range(0, a.calls, block):
        for i, c in enumerate(clients):
            for _ in range(min(block, a.calls - b)):
                t = time.perf_counter()
                r = c.call(req)
                lat[i].append((time.perf_counter() - t) * 1e6)
                if b'"return"' not in r or b'"status"' not in r:
                    raise SystemExit(f"{names[i]}: unexpected reply {r!r}")
    print("| server | calls | p50 (µs) | p90 (µs) | p99 (µs) | max (µs) | p50 / first | p99 / first |")
    print("|---|---|---|---|---|---|---|---|")
    ref = sorted(lat[0])
    for n, l in zip(names, lat):
        l.sort()
        print(f"| {n} | {len(l)} | {pct(l, .5):.1f} | {pct(l, .9):.1f} | {pct(l, .99):.1f} | "
              f"{l[-1]:.0f} | {pct(l, .5) / pct(ref, .5):.2f} | {pct(l, .99) / pct(ref, .99):.2f} |")


if __name__ == "__main__":
    main()
