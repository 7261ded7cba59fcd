#!/usr/bin/env python3
"""Regenerates the bundled sample images (deterministic; no external inputs).

sample-ovmf.fd   64 KiB stand-in for an AmdSev OVMF build: filler bytes plus a real OVMF
                 footer GUID table (SEV-ES reset block, SEV secret area, SEV hashes area),
                 so `sevm owner measure --kernel ...` can place the kernel-hashes table.
                 It is NOT a bootable firmware.
sample-ovmf-snp.fd
                 64 KiB stand-in for an SNP-capable AmdSev OVMF: the same footer entries plus
                 the OVMF SEV metadata ("ASEV", footer GUID dc886566-...) with SNP_SEC_MEM,
                 SNP_SECRETS, CPUID and SNP_KERNEL_HASHES sections, so that
                 `sevm owner snp measure` and sev-snp-measure --mode snp can run on it.
                 `make_samples.py --snp-ovmf OUT SIZE` writes one of SIZE bytes (benchmarks).
sample-kernel    4 KiB of filler standing in for a bzImage (only its hash matters here).
sample-initrd    2 KiB of filler standing in for an initrd.
"""
import struct, uuid, hashlib, os, sys

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

def sev_image(size, tag, snp):
    """An OVMF-shaped image of `size` bytes; with `snp`, SEV metadata for SNP launches."""
    entries = (
        entry('00f771de-1a7e-4fcb-890e-68c77e2fb44e', struct.pack('<I', 0x0080B004))
        + entry('4c2eb361-7d9b-4cc3-8081-127c90d3d294', struct.pack('<II', 0x810000, 0xC00))
        + entry('7255371f-3a3b-4b04-927b-1da6efa8d454', struct.pack('<II', 0x810C00, 0x400))
    )
    md = b''
    if snp:
        # Sections as OVMF's OvmfSevMetadata.asm lays them out (gpa, size, type).
        items = [(0x800000, 0x9000, 1), (0x809000, 0x2000, 1), (0x80B000, 0x1000, 1),
                 (0x80C000, 0x1000, 2), (0x80D000, 0x1000, 3), (0x80E000, 0x2000, 1),
                 (0x810000, 0x1000, 0x10)]
        md = b'ASEV' + struct.pack('<III', 16 + 12 * len(items), 1, len(items))
        md += b''.join(struct.pack('<III', *it) for it in items)
        # The header sits 0x1000 bytes before the end of the image.
        entries += entry('dc886566-984a-4798-a75e-5585a7bf67cc', struct.pack('<I', 0x1000))
    footer = struct.pack('<H', len(entries) + 18) + guid('96b582de-1fb2-45f7-baea-a366c55a082d')
    table = entries + footer
    tail = b'\x90' * 16 + b'\xeb\xfe' + b'\x00' * 14  # 32 bytes: a reset-vector-like tail
    head = b'sevm sample firmware: not bootable, for measurement demos only\n'
    body = head + filler(tag, size - len(head) - len(table) - len(tail))
    fw = bytearray(body + table + tail)
    if md:
        at = size - 0x1000
        fw[at:at + len(md)] = md
    assert len(fw) == size
    return bytes(fw)

if len(sys.argv) == 4 and sys.argv[1] == '--snp-ovmf':
    size = int(sys.argv[3], 0)
    assert size % 4096 == 0 and size >= 8192, 'SIZE must be a multiple of 4096, at least 8192'
    open(sys.argv[2], 'wb').write(sev_image(size, b'sevm-bench-ovmf', True))
    sys.exit(0)

SIZE = 64 * 1024
open(os.path.join(HERE, 'sample-ovmf.fd'), 'wb').write(sev_image(SIZE, b'sevm-sample-ovmf', False))
open(os.path.join(HERE, 'sample-ovmf-snp.fd'), 'wb').write(sev_image(SIZE, b'sevm-sample-ovmf-snp', True))
open(os.path.join(HERE, 'sample-kernel'), 'wb').write(filler(b'sevm-sample-kernel', 4096))
open(os.path.join(HERE, 'sample-initrd'), 'wb').write(filler(b'sevm-sample-initrd', 2048))
