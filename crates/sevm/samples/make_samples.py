#!/usr/bin/env python3
"""Regenerates the bundled sample images (deterministic; no external inputs).

sample-ovmf.fd   64 KiB stand-in for an AmdSev OVMF build: filler bytes plus a real OVMF
                 footer GUID table (SEV-ES reset block, SEV secret area, SEV hashes area),
                 so `sevm owner measure --kernel ...` can place the kernel-hashes table.
                 It is NOT a bootable firmware.
sample-kernel    4 KiB of filler standing in for a bzImage (only its hash matters here).
sample-initrd    2 KiB of filler standing in for an initrd.
"""
import struct, uuid, hashlib, os

HERE = os.path.dirname(os.path.abspath(__file__))

def guid(s):
    return uuid.UUID(s).bytes_le

def entry(g, data):
    return data + struct.pack('<H', len(data) + 18) + guid(g)

def filler(tag, n):
    out = b''
    i = 0
    while len(out) < n:
        out += hashlib.sha256(tag + struct.pack('<I', i)).digest()
        i += 1
    return out[:n]

SIZE = 64 * 1024
entries = (
    entry('00f771de-1a7e-4fcb-890e-68c77e2fb44e', struct.pack('<I', 0x0080B004))
    + entry('4c2eb361-7d9b-4cc3-8081-127c90d3d294', struct.pack('<II', 0x810000, 0xC00))
    + entry('7255371f-3a3b-4b04-927b-1da6efa8d454', struct.pack('<II', 0x810C00, 0x400))
)
footer = struct.pack('<H', len(entries) + 18) + guid('96b582de-1fb2-45f7-baea-a366c55a082d')
table = entries + footer
tail = b'\x90' * 16 + b'\xeb\xfe' + b'\x00' * 14  # 32 bytes: a reset-vector-like tail
head = b'sevm sample firmware: not bootable, for measurement demos only\n'
body = head + filler(b'sevm-sample-ovmf', SIZE - len(head) - len(table) - len(tail))
fw = body + table + tail
assert len(fw) == SIZE
open(os.path.join(HERE, 'sample-ovmf.fd'), 'wb').write(fw)
open(os.path.join(HERE, 'sample-kernel'), 'wb').write(filler(b'sevm-sample-kernel', 4096))
open(os.path.join(HERE, 'sample-initrd'), 'wb').write(filler(b'sevm-sample-initrd', 2048))
