# Makes ld_vector.txt: an SNP launch-digest known answer computed with sev-snp-measure's GCTX
# class (pip package sev-snp-measure 0.0.13, module sevsnpmeasure.gctx), one call per page type.
# Run: python3 -m venv /tmp/snpvenv && /tmp/snpvenv/bin/pip install sev-snp-measure==0.0.13
#      /tmp/snpvenv/bin/python ld_vector.py > ld_vector.txt
# Page contents: byte i of page p (p counts pages from 0 across one call) = (i * 7 + p * 13 + salt) & 0xFF.
from sevsnpmeasure.gctx import GCTX


def pattern(pages, salt):
    return bytes(((i % 4096) * 7 + (i // 4096) * 13 + salt) & 0xFF for i in range(pages * 4096))


g = GCTX()
g.update_normal_pages(0x800000, pattern(2, 1))
print("after_normal", g.hex_ld())
g.update_zero_pages(0x809000, 3 * 4096)
print("after_zero", g.hex_ld())
g.update_unmeasured_pages(0x80C000, 4096)
print("after_unmeasured", g.hex_ld())
g.update_secrets_page(0x80D000)
print("after_secrets", g.hex_ld())
g.update_cpuid_page(0x80E000)
print("after_cpuid", g.hex_ld())
# The firmware measures a VMSA with GUEST_TSC_SCALE/OFFSET (0x2F0..0x300) as zero; sev-snp-measure
# hashes the page as given, so the page passed here has them zero already.
vmsa = bytearray(pattern(1, 5))
vmsa[0x2F0:0x300] = bytes(16)
g.update_vmsa_page(bytes(vmsa))
print("after_vmsa", g.hex_ld())
