#!/usr/bin/env python3
"""Write a flat 64 KiB firmware image that prints one line on COM1 and exits via port 0xf4.

The image ends at 4 GiB in both sevm (`--firmware`, docs/LAYOUT.md) and QEMU (`-bios`), so the
CPU starts in real mode at offset 0xfff0 (CS 0xf000, base 0xffff0000). The reset vector jumps to
offset 0, which writes each byte of the message to port 0x3f8 (`mov al, imm8; out dx, al`),
then writes 0 to port 0xf4 (sevm: exit status 0; QEMU isa-debug-exit: process exit code 1) and
halts. No stack, no data segment, no memory writes: identical work on both VMMs.

Usage: make_flat.py OUT [MESSAGE]
"""
import sys

SIZE = 64 * 1024


def build(message: bytes) -> bytes:
    code = bytearray()
    code += b"\xba\xf8\x03"  # mov dx, 0x3f8
    for ch in message:
        code += bytes([0xB0, ch, 0xEE])  # mov al, ch ; out dx, al
    code += b"\xba\xf4\x00"  # mov dx, 0xf4
    code += b"\xb0\x00\xee"  # mov al, 0 ; out dx, al
    code += b"\xf4\xeb\xfd"  # hlt ; jmp back to hlt
    if len(code) > 0xFFF0:
        raise SystemExit("message too long for a 64 KiB image")
    img = bytearray(b"\xf4" * SIZE)  # fill with hlt
    img[0 : len(code)] = code
    # Reset vector at 0xfff0: jmp near rel16 to IP 0x0000 (16-bit wrap-around).
    disp = (0x0000 - (0xFFF0 + 3)) & 0xFFFF
    img[0xFFF0:0xFFF3] = bytes([0xE9, disp & 0xFF, disp >> 8])
    return bytes(img)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    msg = (sys.argv[2] if len(sys.argv) > 2 else "hello from a flat firmware") + "\r\n"
    with open(sys.argv[1], "wb") as f:
        f.write(build(msg.encode()))
