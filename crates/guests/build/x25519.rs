//! Test-guest X25519 (RFC 7748) and HMAC-SHA256 / HKDF-SHA256 (RFC 2104 / RFC 5869) for the
//! `snp-attest` guest's sealed-secret step. A bare guest has no crates, so these are written
//! here in `code_asm`; they are test-guest code, checked in known-answer modes against the
//! RFC 7748 vectors and against OpenSSL (`crates/vmm/tests/snp_attest.rs`), not a library.
//!
//! Field arithmetic over GF(2^255 - 19) with four 64-bit limbs (values kept below 2^256, not
//! necessarily canonical): `mul`/`adc` schoolbook products, reduction of the high half by
//! 2^256 ≡ 38, carries folded back with `sbb`-made masks. The Montgomery ladder runs 255 fixed
//! steps with a mask-based conditional swap; the inversion is exponentiation by p - 2 (a public
//! exponent). No branch or address depends on the scalar or on the point.
//!
//! All routines run at CPL3 (they use no privileged instruction, and no SSE).

use super::{Sha, R};
use iced_x86::code_asm::*;

/// Offsets of the field elements in the work block (32 bytes each).
const X1: i32 = 0;
const X2: i32 = 32;
const Z2: i32 = 64;
const X3: i32 = 96;
const Z3: i32 = 128;
const FA: i32 = 160;
const AA: i32 = 192;
const FB: i32 = 224;
const BB: i32 = 256;
const FE: i32 = 288;
const FC: i32 = 320;
const FD: i32 = 352;
const DA: i32 = 384;
const CB: i32 = 416;
const A24: i32 = 448;
const KS: i32 = 480;
const INV: i32 = 512;
/// Size of the work block.
pub const WORK: usize = 544;
/// Largest HMAC message (bytes).
pub const HMAC_MAX_MSG: u32 = 192;

/// Labels of the routines and their buffers.
pub struct X {
    pub fe_mul: CodeLabel,
    fe_add: CodeLabel,
    fe_sub: CodeLabel,
    fe_canon: CodeLabel,
    cswap: CodeLabel,
    /// rdi = out (32 bytes), rsi = scalar (32 bytes), rdx = u-coordinate (32 bytes).
    /// Preserves rbx, rbp, r12-r15.
    pub x25519: CodeLabel,
    /// rdi = out (32), rsi = key (32), rdx = message, rcx = length (≤ HMAC_MAX_MSG).
    /// Preserves rbx, rbp, r12-r15.
    pub hmac: CodeLabel,
    /// Work block of the ladder (wiped by `wipe_x`).
    pub work: CodeLabel,
    hbuf: CodeLabel,
    hargs: CodeLabel,
}

impl X {
    pub fn new(a: &mut CodeAssembler) -> Self {
        X {
            fe_mul: a.create_label(),
            fe_add: a.create_label(),
            fe_sub: a.create_label(),
            fe_canon: a.create_label(),
            cswap: a.create_label(),
            x25519: a.create_label(),
            hmac: a.create_label(),
            work: a.create_label(),
            hbuf: a.create_label(),
            hargs: a.create_label(),
        }
    }
}

fn push_callee(a: &mut CodeAssembler) -> R<()> {
    for r in [rbx, rbp, r12, r13, r14, r15] {
        a.push(r)?;
    }
    Ok(())
}

fn pop_callee(a: &mut CodeAssembler) -> R<()> {
    for r in [r15, r14, r13, r12, rbp, rbx] {
        a.pop(r)?;
    }
    Ok(())
}

/// `call f` with rdi = r15 + dst, rsi = r15 + x, rdx = r15 + y.
fn op(a: &mut CodeAssembler, f: CodeLabel, dst: i32, x: i32, y: i32) -> R<()> {
    a.lea(rdi, qword_ptr(r15 + dst))?;
    a.lea(rsi, qword_ptr(r15 + x))?;
    a.lea(rdx, qword_ptr(r15 + y))?;
    a.call(f)
}

/// Emits every routine (inside the guest's CPL3 region).
pub fn emit(a: &mut CodeAssembler, x: &mut X, s: &Sha) -> R<()> {
    // fe_mul: [rdi] = [rsi] · [rdx] mod p (below 2^256). rdi may alias either input.
    // Clobbers rax, rcx, rdx, r8-r11; preserves the rest.
    a.set_label(&mut x.fe_mul)?;
    push_callee(a)?;
    a.mov(rbp, rdx)?;
    let t = [r8, r9, r10, r11, r12, r13, r14, r15];
    // Row 0: t[0..5] = a0 · b.
    for j in 0..4i32 {
        a.mov(rax, qword_ptr(rsi))?;
        a.mul(qword_ptr(rbp + 8 * j))?;
        if j > 0 {
            a.add(rax, rcx)?;
            a.adc(rdx, 0)?;
        }
        a.mov(t[j as usize], rax)?;
        a.mov(rcx, rdx)?;
    }
    a.mov(t[4], rcx)?;
    // Rows 1..3: t[i..i+5] += ai · b.
    for i in 1..4i32 {
        a.xor(ecx, ecx)?;
        for j in 0..4i32 {
            a.mov(rax, qword_ptr(rsi + 8 * i))?;
            a.mul(qword_ptr(rbp + 8 * j))?;
            a.add(rax, rcx)?;
            a.adc(rdx, 0)?;
            a.add(t[(i + j) as usize], rax)?;
            a.adc(rdx, 0)?;
            a.mov(rcx, rdx)?;
        }
        a.mov(t[(i + 4) as usize], rcx)?;
    }
    // High half · 38 (five limbs: r12..r15, rcx), added to the low half.
    a.mov(ebx, 38)?;
    for (j, &h) in t[4..].iter().enumerate() {
        a.mov(rax, h)?;
        a.mul(rbx)?;
        if j > 0 {
            a.add(rax, rcx)?;
            a.adc(rdx, 0)?;
        }
        a.mov(h, rax)?;
        a.mov(rcx, rdx)?;
    }
    a.add(r8, r12)?;
    a.adc(r9, r13)?;
    a.adc(r10, r14)?;
    a.adc(r11, r15)?;
    a.adc(rcx, 0)?;
    a.imul_3(rax, rcx, 38)?;
    a.add(r8, rax)?;
    a.adc(r9, 0)?;
    a.adc(r10, 0)?;
    a.adc(r11, 0)?;
    // A carry out here leaves a small value: fold 38 once more (no further carry).
    a.sbb(rax, rax)?;
    a.and(eax, 38)?;
    a.add(r8, rax)?;
    a.adc(r9, 0)?;
    a.adc(r10, 0)?;
    a.adc(r11, 0)?;
    for (i, r) in [r8, r9, r10, r11].into_iter().enumerate() {
        a.mov(qword_ptr(rdi + 8 * i as i32), r)?;
    }
    pop_callee(a)?;
    a.ret()?;

    // fe_add: [rdi] = [rsi] + [rdx] (mod p, below 2^256). Clobbers rax, r8-r11.
    a.set_label(&mut x.fe_add)?;
    a.mov(r8, qword_ptr(rsi))?;
    a.add(r8, qword_ptr(rdx))?;
    a.mov(r9, qword_ptr(rsi + 8))?;
    a.adc(r9, qword_ptr(rdx + 8))?;
    a.mov(r10, qword_ptr(rsi + 16))?;
    a.adc(r10, qword_ptr(rdx + 16))?;
    a.mov(r11, qword_ptr(rsi + 24))?;
    a.adc(r11, qword_ptr(rdx + 24))?;
    for _ in 0..2 {
        a.sbb(rax, rax)?;
        a.and(eax, 38)?;
        a.add(r8, rax)?;
        a.adc(r9, 0)?;
        a.adc(r10, 0)?;
        a.adc(r11, 0)?;
    }
    for (i, r) in [r8, r9, r10, r11].into_iter().enumerate() {
        a.mov(qword_ptr(rdi + 8 * i as i32), r)?;
    }
    a.ret()?;

    // fe_sub: [rdi] = [rsi] - [rdx] (mod p, below 2^256). Clobbers rax, r8-r11.
    a.set_label(&mut x.fe_sub)?;
    a.mov(r8, qword_ptr(rsi))?;
    a.sub(r8, qword_ptr(rdx))?;
    a.mov(r9, qword_ptr(rsi + 8))?;
    a.sbb(r9, qword_ptr(rdx + 8))?;
    a.mov(r10, qword_ptr(rsi + 16))?;
    a.sbb(r10, qword_ptr(rdx + 16))?;
    a.mov(r11, qword_ptr(rsi + 24))?;
    a.sbb(r11, qword_ptr(rdx + 24))?;
    // A borrow means the limbs hold the value + 2^256 ≡ value + 38: take 38 off.
    for _ in 0..2 {
        a.sbb(rax, rax)?;
        a.and(eax, 38)?;
        a.sub(r8, rax)?;
        a.sbb(r9, 0)?;
        a.sbb(r10, 0)?;
        a.sbb(r11, 0)?;
    }
    for (i, r) in [r8, r9, r10, r11].into_iter().enumerate() {
        a.mov(qword_ptr(rdi + 8 * i as i32), r)?;
    }
    a.ret()?;

    // fe_canon: [rdi] reduced to 0..p in place. Clobbers rax, rcx, rdx, r8-r11; preserves the
    // rest.
    a.set_label(&mut x.fe_canon)?;
    a.push(rbx)?;
    a.push(rbp)?;
    for (i, r) in [r8, r9, r10, r11].into_iter().enumerate() {
        a.mov(r, qword_ptr(rdi + 8 * i as i32))?;
    }
    // Twice: v = (v mod 2^255) + 19 · (v >> 255); then v < 2^255.
    for _ in 0..2 {
        a.mov(rax, r11)?;
        a.shr(rax, 63)?;
        a.imul_3(rax, rax, 19)?;
        a.btr(r11, 63)?;
        a.add(r8, rax)?;
        a.adc(r9, 0)?;
        a.adc(r10, 0)?;
        a.adc(r11, 0)?;
    }
    // v ≥ p exactly when v + 19 ≥ 2^255; then v - p = (v + 19) mod 2^255.
    a.mov(rcx, r8)?;
    a.add(rcx, 19)?;
    a.mov(rdx, r9)?;
    a.adc(rdx, 0)?;
    a.mov(rbx, r10)?;
    a.adc(rbx, 0)?;
    a.mov(rbp, r11)?;
    a.adc(rbp, 0)?;
    a.mov(rax, rbp)?;
    a.sar(rax, 63)?;
    a.btr(rbp, 63)?;
    for (hi, lo) in [(rcx, r8), (rdx, r9), (rbx, r10), (rbp, r11)] {
        a.xor(hi, lo)?;
        a.and(hi, rax)?;
        a.xor(lo, hi)?;
    }
    for (i, r) in [r8, r9, r10, r11].into_iter().enumerate() {
        a.mov(qword_ptr(rdi + 8 * i as i32), r)?;
    }
    a.pop(rbp)?;
    a.pop(rbx)?;
    a.ret()?;

    // cswap: rax = 0 or all ones; swaps [rsi] and [rdi] (32 bytes) under the mask.
    // Clobbers rcx, rdx.
    a.set_label(&mut x.cswap)?;
    for i in 0..4i32 {
        a.mov(rcx, qword_ptr(rsi + 8 * i))?;
        a.mov(rdx, qword_ptr(rdi + 8 * i))?;
        a.xor(rdx, rcx)?;
        a.and(rdx, rax)?;
        a.xor(qword_ptr(rsi + 8 * i), rdx)?;
        a.xor(qword_ptr(rdi + 8 * i), rdx)?;
    }
    a.xor(edx, edx)?;
    a.ret()?;

    emit_x25519(a, x)?;
    emit_hmac(a, x, s)
}

fn emit_x25519(a: &mut CodeAssembler, x: &mut X) -> R<()> {
    a.set_label(&mut x.x25519)?;
    push_callee(a)?;
    a.push(rdi)?;
    a.lea(r15, ptr(x.work))?;
    // Scalar, clamped (RFC 7748 decodeScalar25519).
    for i in 0..4i32 {
        a.mov(rax, qword_ptr(rsi + 8 * i))?;
        a.mov(qword_ptr(r15 + KS + 8 * i), rax)?;
    }
    a.and(byte_ptr(r15 + KS), 0xf8)?;
    a.and(byte_ptr(r15 + KS + 31), 0x7f)?;
    a.or(byte_ptr(r15 + KS + 31), 0x40)?;
    // u with the top bit masked (decodeUCoordinate); x1 = x3 = u, x2 = z3 = 1, z2 = 0.
    for i in 0..4i32 {
        a.mov(rax, qword_ptr(rdx + 8 * i))?;
        if i == 3 {
            a.btr(rax, 63)?;
        }
        a.mov(qword_ptr(r15 + X1 + 8 * i), rax)?;
        a.mov(qword_ptr(r15 + X3 + 8 * i), rax)?;
        a.xor(eax, eax)?;
        for f in [X2, Z2, Z3, A24] {
            a.mov(qword_ptr(r15 + f + 8 * i), rax)?;
        }
    }
    a.mov(qword_ptr(r15 + X2), 1)?;
    a.mov(qword_ptr(r15 + Z3), 1)?;
    a.mov(qword_ptr(r15 + A24), 121_665)?;
    // Ladder: r12 = bit index t (254..0, public), r13 = swap.
    a.mov(r12d, 254)?;
    a.xor(r13d, r13d)?;
    let mut step = a.create_label();
    a.set_label(&mut step)?;
    a.mov(eax, r12d)?;
    a.shr(eax, 3)?;
    a.movzx(eax, byte_ptr(r15 + rax + KS))?;
    a.mov(ecx, r12d)?;
    a.and(ecx, 7)?;
    a.shr(eax, cl)?;
    a.and(eax, 1)?;
    a.mov(r14d, eax)?;
    a.xor(r13d, eax)?;
    a.mov(rax, r13)?;
    a.neg(rax)?;
    a.lea(rdi, qword_ptr(r15 + X2))?;
    a.lea(rsi, qword_ptr(r15 + X3))?;
    a.call(x.cswap)?;
    a.lea(rdi, qword_ptr(r15 + Z2))?;
    a.lea(rsi, qword_ptr(r15 + Z3))?;
    a.call(x.cswap)?;
    a.mov(r13d, r14d)?;
    op(a, x.fe_add, FA, X2, Z2)?;
    op(a, x.fe_mul, AA, FA, FA)?;
    op(a, x.fe_sub, FB, X2, Z2)?;
    op(a, x.fe_mul, BB, FB, FB)?;
    op(a, x.fe_sub, FE, AA, BB)?;
    op(a, x.fe_add, FC, X3, Z3)?;
    op(a, x.fe_sub, FD, X3, Z3)?;
    op(a, x.fe_mul, DA, FD, FA)?;
    op(a, x.fe_mul, CB, FC, FB)?;
    op(a, x.fe_add, X3, DA, CB)?;
    op(a, x.fe_mul, X3, X3, X3)?;
    op(a, x.fe_sub, Z3, DA, CB)?;
    op(a, x.fe_mul, Z3, Z3, Z3)?;
    op(a, x.fe_mul, Z3, X1, Z3)?;
    op(a, x.fe_mul, X2, AA, BB)?;
    op(a, x.fe_mul, Z2, A24, FE)?;
    op(a, x.fe_add, Z2, AA, Z2)?;
    op(a, x.fe_mul, Z2, FE, Z2)?;
    a.dec(r12d)?;
    a.jns(step)?;
    a.mov(rax, r13)?;
    a.neg(rax)?;
    a.lea(rdi, qword_ptr(r15 + X2))?;
    a.lea(rsi, qword_ptr(r15 + X3))?;
    a.call(x.cswap)?;
    a.lea(rdi, qword_ptr(r15 + Z2))?;
    a.lea(rsi, qword_ptr(r15 + Z3))?;
    a.call(x.cswap)?;
    // INV = Z2^(p-2): p - 2 = 2^255 - 21 has bits 254..0 set except bits 4 and 2. The
    // exponent is public, so branching on its bits reveals nothing.
    for i in 0..4i32 {
        a.mov(rax, qword_ptr(r15 + Z2 + 8 * i))?;
        a.mov(qword_ptr(r15 + INV + 8 * i), rax)?;
    }
    a.mov(r12d, 253)?;
    let mut inv = a.create_label();
    let mut skip = a.create_label();
    a.set_label(&mut inv)?;
    op(a, x.fe_mul, INV, INV, INV)?;
    a.cmp(r12d, 4)?;
    a.je(skip)?;
    a.cmp(r12d, 2)?;
    a.je(skip)?;
    op(a, x.fe_mul, INV, INV, Z2)?;
    a.set_label(&mut skip)?;
    a.dec(r12d)?;
    a.jns(inv)?;
    op(a, x.fe_mul, X2, X2, INV)?;
    a.lea(rdi, qword_ptr(r15 + X2))?;
    a.call(x.fe_canon)?;
    a.pop(rdi)?;
    for i in 0..4i32 {
        a.mov(rax, qword_ptr(r15 + X2 + 8 * i))?;
        a.mov(qword_ptr(rdi + 8 * i), rax)?;
    }
    // Wipe the work block (the scalar and every intermediate).
    a.lea(rdi, qword_ptr(r15))?;
    a.xor(eax, eax)?;
    a.mov(ecx, WORK as u32)?;
    a.rep().stosb()?;
    for r in [rcx, rdx, rsi, r8, r9, r10, r11] {
        a.xor(r, r)?;
    }
    pop_callee(a)?;
    a.ret()
}

/// Writes the SHA-256 state (8 native u32 words) as the 32-byte digest at [rdi].
fn digest_out(a: &mut CodeAssembler, s: &Sha) -> R<()> {
    a.lea(rsi, ptr(s.state))?;
    for i in 0..8i32 {
        a.mov(eax, dword_ptr(rsi + 4 * i))?;
        a.bswap(eax)?;
        a.mov(dword_ptr(rdi + 4 * i), eax)?;
    }
    Ok(())
}

/// hbuf[0..64] = key ⊕ pad (key: 32 bytes at [rbx + 8] = hargs + 8, zero-extended to 64).
fn pad_key(a: &mut CodeAssembler, x: &X, pad: u64) -> R<()> {
    a.mov(rsi, qword_ptr(rbx + 8))?;
    a.lea(rdi, ptr(x.hbuf))?;
    a.mov(rdx, pad)?;
    for i in 0..4i32 {
        a.mov(rax, qword_ptr(rsi + 8 * i))?;
        a.xor(rax, rdx)?;
        a.mov(qword_ptr(rdi + 8 * i), rax)?;
    }
    for i in 4..8i32 {
        a.mov(qword_ptr(rdi + 8 * i), rdx)?;
    }
    Ok(())
}

fn emit_hmac(a: &mut CodeAssembler, x: &mut X, s: &Sha) -> R<()> {
    // hmac: HMAC-SHA256 with a 32-byte key. hargs: +0 out, +8 key, +16 msg, +24 len.
    a.set_label(&mut x.hmac)?;
    push_callee(a)?;
    a.lea(rbx, ptr(x.hargs))?;
    a.mov(qword_ptr(rbx), rdi)?;
    a.mov(qword_ptr(rbx + 8), rsi)?;
    a.mov(qword_ptr(rbx + 16), rdx)?;
    a.mov(qword_ptr(rbx + 24), rcx)?;
    // Inner: SHA-256((K ⊕ ipad) ‖ msg).
    pad_key(a, x, 0x3636_3636_3636_3636)?;
    a.mov(rsi, qword_ptr(rbx + 16))?;
    a.add(rdi, 64)?;
    a.mov(rcx, qword_ptr(rbx + 24))?;
    a.rep().movsb()?;
    a.lea(rsi, ptr(x.hbuf))?;
    a.mov(rcx, qword_ptr(rbx + 24))?;
    a.add(rcx, 64)?;
    a.call(s.sha256)?;
    // Outer: SHA-256((K ⊕ opad) ‖ inner). sha256 clobbers rbx.
    a.lea(rbx, ptr(x.hargs))?;
    a.lea(rdi, ptr(x.hbuf))?;
    a.add(rdi, 64)?;
    digest_out(a, s)?;
    pad_key(a, x, 0x5c5c_5c5c_5c5c_5c5c)?;
    a.lea(rsi, ptr(x.hbuf))?;
    a.mov(ecx, 96)?;
    a.call(s.sha256)?;
    a.lea(rbx, ptr(x.hargs))?;
    a.mov(rdi, qword_ptr(rbx))?;
    digest_out(a, s)?;
    // Wipe the padded keys, the inner digest and the SHA-256 buffers.
    a.xor(eax, eax)?;
    for (lab, n) in [
        (x.hbuf, 64 + HMAC_MAX_MSG),
        (s.pad, 128),
        (s.w, 256),
        (s.state, 32),
    ] {
        a.lea(rdi, ptr(lab))?;
        a.mov(ecx, n)?;
        a.rep().stosb()?;
    }
    a.xor(edx, edx)?;
    pop_callee(a)?;
    a.ret()
}

/// Data: the work block and the HMAC buffers (after the data marker).
pub fn emit_data(a: &mut CodeAssembler, x: &mut X) -> R<()> {
    a.set_label(&mut x.work)?;
    a.db(&[0u8; WORK])?;
    a.set_label(&mut x.hbuf)?;
    a.db(&[0u8; 64 + HMAC_MAX_MSG as usize])?;
    a.set_label(&mut x.hargs)?;
    a.dq(&[0u64; 4])
}
