//! The `snp-attest` guest: SEV-SNP guest messages (snp-spec-notes §4) with AES-256-GCM at CPL3.
//!
//! CPL0 part (emulated): check CPUID 1 ECX for AES-NI, PCLMULQDQ, SSSE3 and SSE4.1, set
//! CR4.OSFXSR | OSXMMEXCPT, drop to CPL3 with `iretq`. Everything else runs natively at CPL3
//! between the `__CPL3__` / `__CPL0__` markers (see `src/filter.rs`):
//!
//! * AES-256 key expansion with `aeskeygenassist`, one block with `aesenc`/`aesenclast`;
//! * GCM for a 96-bit IV (J0 = IV ‖ 0x00000001), CTR from J0 + 1, GHASH with `pclmulqdq` on
//!   byte-reflected blocks (a 256-bit product shifted left by one and reduced modulo
//!   x^128 + x^7 + x^2 + x + 1 in the reflected domain); tag over the 48 AAD bytes (header
//!   0x30..0x60) and the ciphertext; on decryption the tag is checked (constant time: `pxor` +
//!   `ptest`) before any plaintext is written. Payloads are whole 16-byte blocks (every SNP
//!   message payload is);
//! * MSG_REPORT_REQ (seqno 1), MSG_KEY_REQ (seqno 3), an extended MSG_REPORT_REQ with the
//!   certificate buffer (seqno 5), each through the doorbell at `SNP_GHCB`;
//! * a known-answer mode (SNP_PARAMS flag bit 1) for tests.
//!
//! Secrets (the key schedule, H, the derived key, SHA-256 buffers that held it) are wiped before
//! every exit.

use super::x25519::{self, X};
use super::{abi, emit_sha, emit_sha_data, Sha, G, R};
use iced_x86::code_asm::*;

const NEED_ECX: u32 = (1 << 1) | (1 << 9) | (1 << 19) | (1 << 25);
const RCON: [u32; 7] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40];
const CERT_BUF: u64 = abi::SNP_CERTS_PAGES * 4096;

/// Data labels of the guest.
struct D {
    bswap: CodeLabel,
    rk: CodeLabel,
    hkey: CodeLabel,
    ivblk: CodeLabel,
    ptbuf: CodeLabel,
    keybuf: CodeLabel,
    extbuf: CodeLabel,
    seqno: CodeLabel,
    mtype: CodeLabel,
    reqsize: CodeLabel,
    rspsize: CodeLabel,
    input: CodeLabel,
    out: CodeLabel,
    ext: CodeLabel,
    n: CodeLabel,
    mode: CodeLabel,
    result: CodeLabel,
    code: CodeLabel,
    /// Sealed-secret step (`sevm demo --snp`) and the X25519/HKDF known-answer modes.
    cpuid1: CodeLabel,
    gsk: CodeLabel,
    gpk: CodeLabel,
    nonce: CodeLabel,
    shared: CodeLabel,
    prk: CodeLabel,
    okm: CodeLabel,
    sbuf: CodeLabel,
    ibuf: CodeLabel,
    sec: CodeLabel,
    base9: CodeLabel,
    seed_label: CodeLabel,
    info_label: CodeLabel,
}

/// Code labels of the CPL3 routines.
struct F {
    aes_block: CodeLabel,
    gcm_init: CodeLabel,
    gfmul: CodeLabel,
    ghash_blocks: CodeLabel,
    ghash_tag: CodeLabel,
    ctr: CodeLabel,
    gcm_crypt: CodeLabel,
    seal_req: CodeLabel,
    open_rsp: CodeLabel,
    exchange: CodeLabel,
    report_req: CodeLabel,
    check_report: CodeLabel,
    hexbytes: CodeLabel,
    wipe: CodeLabel,
    fail: CodeLabel,
}

fn l(a: &mut CodeAssembler) -> CodeLabel {
    a.create_label()
}

/// Writes exit code `code` from CPL3 and spins (hlt/cli would #GP at CPL3).
fn exit3(g: &mut G, code: u8) -> R<()> {
    g.a.mov(al, code as u32)?;
    g.a.mov(dx, abi::EXIT_PORT as u32)?;
    g.a.out(dx, al)?;
    let mut spin = l(&mut g.a);
    g.a.set_label(&mut spin)?;
    g.a.jmp(spin)
}

/// Prints `msg`, stores `code` and jumps to the common failure path.
fn fail_with(g: &mut G, f: &F, d: &D, code: u8, msg: &str) -> R<()> {
    g.puts(msg)?;
    g.a.mov(qword_ptr(d.code), code as i32)?;
    g.a.jmp(f.fail)
}

/// Prints `n` bytes at `[reg]` as hex (reg must not be rsi/rcx/rax).
fn print_bytes(g: &mut G, f: &F, base: AsmRegister64, off: i32, n: u32) -> R<()> {
    g.a.lea(rsi, qword_ptr(base + off))?;
    g.a.mov(ecx, n)?;
    g.a.call(f.hexbytes)
}

pub fn snp_attest() -> R<Vec<u8>> {
    let mut g = G::new()?;
    let mut s = Sha {
        sha256: g.a.create_label(),
        compress: g.a.create_label(),
        state: g.a.create_label(),
        w: g.a.create_label(),
        k: g.a.create_label(),
        h0: g.a.create_label(),
        pad: g.a.create_label(),
        len: g.a.create_label(),
    };
    let a = &mut g.a;
    let mut d = D {
        bswap: l(a),
        rk: l(a),
        hkey: l(a),
        ivblk: l(a),
        ptbuf: l(a),
        keybuf: l(a),
        extbuf: l(a),
        seqno: l(a),
        mtype: l(a),
        reqsize: l(a),
        rspsize: l(a),
        input: l(a),
        out: l(a),
        ext: l(a),
        n: l(a),
        mode: l(a),
        result: l(a),
        code: l(a),
        cpuid1: l(a),
        gsk: l(a),
        gpk: l(a),
        nonce: l(a),
        shared: l(a),
        prk: l(a),
        okm: l(a),
        sbuf: l(a),
        ibuf: l(a),
        sec: l(a),
        base9: l(a),
        seed_label: l(a),
        info_label: l(a),
    };
    let mut x = X::new(a);
    let mut f = F {
        aes_block: l(a),
        gcm_init: l(a),
        gfmul: l(a),
        ghash_blocks: l(a),
        ghash_tag: l(a),
        ctr: l(a),
        gcm_crypt: l(a),
        seal_req: l(a),
        open_rsp: l(a),
        exchange: l(a),
        report_req: l(a),
        check_report: l(a),
        hexbytes: l(a),
        wipe: l(a),
        fail: l(a),
    };

    // ---------------- CPL0 ----------------
    g.prologue()?;
    let mut have = l(&mut g.a);
    g.a.mov(eax, 1u32)?;
    g.a.xor(ecx, ecx)?;
    g.a.cpuid()?;
    g.a.mov(dword_ptr(d.cpuid1), ecx)?;
    g.a.and(ecx, NEED_ECX)?;
    g.a.cmp(ecx, NEED_ECX)?;
    g.a.je(have)?;
    g.puts("snp-attest: CPUID 1 ECX lacks AES-NI, PCLMULQDQ, SSSE3 or SSE4.1\n")?;
    g.exit(abi::SNP_ATTEST_NO_CPU_FEATURES)?;
    g.a.set_label(&mut have)?;
    // SSE at CPL3 needs CR4.OSFXSR (bit 9); OSXMMEXCPT (bit 10) for completeness.
    g.a.mov(rax, cr4)?;
    g.a.or(rax, 0x600)?;
    g.a.mov(cr4, rax)?;
    let mut user = l(&mut g.a);
    g.a.mov(rax, rsp)?;
    g.a.push(0x2b)?;
    g.a.push(rax)?;
    g.a.push(0x2)?;
    g.a.push(0x23)?;
    g.a.lea(rax, ptr(user))?;
    g.a.push(rax)?;
    g.a.iretq()?;
    g.a.db(b"__CPL3__")?;

    // ---------------- CPL3: main ----------------
    g.a.set_label(&mut user)?;
    let mut kat = l(&mut g.a);
    g.a.mov(rbx, abi::SNP_PARAMS)?;
    g.a.test(dword_ptr(rbx), abi::SNP_PARAMS_FLAG_GCM_KAT)?;
    g.a.jnz(kat)?;
    let mut xkat = l(&mut g.a);
    let mut hkat = l(&mut g.a);
    let mut seal = l(&mut g.a);
    g.a.test(dword_ptr(rbx), abi::SNP_PARAMS_FLAG_X25519_KAT)?;
    g.a.jnz(xkat)?;
    g.a.test(dword_ptr(rbx), abi::SNP_PARAMS_FLAG_HKDF_KAT)?;
    g.a.jnz(hkat)?;

    // Secrets page: VERSION ≥ 2, VMPCK0 not all zero.
    let mut sec_ok = l(&mut g.a);
    let mut key_ok = l(&mut g.a);
    g.a.mov(rbx, abi::SNP_SECRETS)?;
    g.a.cmp(dword_ptr(rbx), 2)?;
    g.a.jae(sec_ok)?;
    g.puts("snp-attest: secrets page VERSION ")?;
    g.a.mov(eax, dword_ptr(rbx))?;
    g.hex(8)?;
    fail_with(&mut g, &f, &d, abi::SNP_ATTEST_BAD_SECRETS, " is below 2\n")?;
    g.a.set_label(&mut sec_ok)?;
    g.a.mov(rax, qword_ptr(rbx + 0x20))?;
    g.a.or(rax, qword_ptr(rbx + 0x28))?;
    g.a.or(rax, qword_ptr(rbx + 0x30))?;
    g.a.or(rax, qword_ptr(rbx + 0x38))?;
    g.a.jnz(key_ok)?;
    fail_with(
        &mut g,
        &f,
        &d,
        abi::SNP_ATTEST_ZERO_VMPCK0,
        "snp-attest: VMPCK0 in the secrets page is all zero\n",
    )?;
    g.a.set_label(&mut key_ok)?;
    g.puts("snp-attest: secrets page version ")?;
    g.a.mov(eax, dword_ptr(rbx))?;
    g.hex(8)?;
    g.puts(", VMPCK0 present\n")?;
    g.a.lea(rsi, qword_ptr(rbx + 0x20))?;
    g.a.call(f.gcm_init)?;
    g.a.mov(qword_ptr(d.seqno), 1)?;
    g.a.mov(rbx, abi::SNP_PARAMS)?;
    g.a.test(dword_ptr(rbx), abi::SNP_PARAMS_FLAG_SEALED_SECRET)?;
    g.a.jnz(seal)?;

    // 1. MSG_REPORT_REQ, seqno 1, response written to SNP_REPORT_OUT.
    let mut ok1 = l(&mut g.a);
    g.a.call(f.report_req)?;
    g.a.mov(rax, abi::SNP_REPORT_OUT)?;
    g.a.mov(qword_ptr(d.out), rax)?;
    g.a.mov(qword_ptr(d.ext), 0)?;
    g.a.call(f.exchange)?;
    g.a.test(eax, eax)?;
    g.a.jz(ok1)?;
    g.a.add(eax, abi::SNP_ATTEST_REPORT as u32)?;
    g.a.mov(qword_ptr(d.code), rax)?;
    g.puts("snp-attest: MSG_REPORT_REQ failed\n")?;
    g.a.jmp(f.fail)?;
    g.a.set_label(&mut ok1)?;
    g.a.mov(rbx, abi::SNP_REPORT_OUT)?;
    g.a.mov(r12d, abi::SNP_ATTEST_REPORT as u32)?;
    g.a.call(f.check_report)?;
    g.puts("report version=")?;
    g.a.mov(eax, dword_ptr(rbx + 0x20))?;
    g.hex(8)?;
    g.puts(" policy=")?;
    g.a.mov(rax, qword_ptr(rbx + 0x28))?;
    g.hex(16)?;
    g.puts(" vmpl=")?;
    g.a.mov(eax, dword_ptr(rbx + 0x50))?;
    g.hex(8)?;
    g.puts("\nreport_data=")?;
    print_bytes(&mut g, &f, rbx, 0x20 + 0x50, 64)?;
    g.puts("\nmeasurement=")?;
    print_bytes(&mut g, &f, rbx, 0x20 + 0x90, 48)?;
    g.puts("\nhost_data=")?;
    print_bytes(&mut g, &f, rbx, 0x20 + 0xc0, 32)?;
    g.puts("\n")?;

    // 2. MSG_KEY_REQ, seqno 3: root key VCEK (ROOT_KEY_SELECT 0, KEY_SEL 1), GUEST_FIELD_SELECT
    //    policy | measurement, VMPL 0.
    let mut ok2 = l(&mut g.a);
    let mut key_status_ok = l(&mut g.a);
    g.a.lea(rdi, ptr(d.ptbuf))?;
    g.a.xor(eax, eax)?;
    g.a.mov(ecx, 0x60)?;
    g.a.rep().stosb()?;
    g.a.lea(rdi, ptr(d.ptbuf))?;
    g.a.mov(dword_ptr(rdi), 2)?;
    g.a.mov(qword_ptr(rdi + 8), 0x9)?;
    g.a.mov(qword_ptr(d.mtype), 3)?;
    g.a.mov(qword_ptr(d.reqsize), 0x20)?;
    g.a.mov(qword_ptr(d.rspsize), 0x40)?;
    g.a.lea(rax, ptr(d.ptbuf))?;
    g.a.mov(qword_ptr(d.input), rax)?;
    g.a.lea(rax, ptr(d.keybuf))?;
    g.a.mov(qword_ptr(d.out), rax)?;
    g.a.call(f.exchange)?;
    g.a.test(eax, eax)?;
    g.a.jz(ok2)?;
    g.a.add(eax, abi::SNP_ATTEST_KEY as u32)?;
    g.a.mov(qword_ptr(d.code), rax)?;
    g.puts("snp-attest: MSG_KEY_REQ failed\n")?;
    g.a.jmp(f.fail)?;
    g.a.set_label(&mut ok2)?;
    g.a.lea(rbx, ptr(d.keybuf))?;
    g.a.cmp(dword_ptr(rbx), 0)?;
    g.a.je(key_status_ok)?;
    g.puts("snp-attest: MSG_KEY_RSP STATUS ")?;
    g.a.mov(eax, dword_ptr(rbx))?;
    g.hex(8)?;
    fail_with(
        &mut g,
        &f,
        &d,
        abi::SNP_ATTEST_KEY + abi::SNP_ATTEST_E_STATUS,
        "\n",
    )?;
    g.a.set_label(&mut key_status_ok)?;
    g.a.lea(rsi, qword_ptr(rbx + 0x20))?;
    g.a.mov(ecx, 32)?;
    g.a.call(s.sha256)?;
    g.puts("derived key (root VCEK, guest_field_select=0x9) sha256=")?;
    g.a.lea(rbx, ptr(s.state))?;
    for i in 0..8 {
        g.a.mov(eax, dword_ptr(rbx + i * 4))?;
        g.hex(8)?;
    }
    g.puts("\n")?;
    // The SHA-256 buffers held the key (pad) and words derived from it (w); the key
    // response is not needed any more.
    g.a.xor(eax, eax)?;
    for (lab, n) in [(s.pad, 128u32), (s.w, 256), (d.keybuf, 0x40)] {
        g.a.lea(rdi, ptr(lab))?;
        g.a.mov(ecx, n)?;
        g.a.rep().stosb()?;
    }

    // 3. Extended MSG_REPORT_REQ (0x8000_0012), seqno 5, with the certificate buffer.
    let mut ok3 = l(&mut g.a);
    g.a.mov(rdi, abi::SNP_CERTS)?;
    g.a.xor(eax, eax)?;
    g.a.mov(ecx, CERT_BUF as u32)?;
    g.a.rep().stosb()?;
    g.a.call(f.report_req)?;
    g.a.lea(rax, ptr(d.extbuf))?;
    g.a.mov(qword_ptr(d.out), rax)?;
    g.a.mov(qword_ptr(d.ext), 1)?;
    g.a.call(f.exchange)?;
    g.a.test(eax, eax)?;
    g.a.jz(ok3)?;
    g.a.add(eax, abi::SNP_ATTEST_EXT as u32)?;
    g.a.mov(qword_ptr(d.code), rax)?;
    g.puts("snp-attest: extended MSG_REPORT_REQ failed\n")?;
    g.a.jmp(f.fail)?;
    g.a.set_label(&mut ok3)?;
    g.a.lea(rbx, ptr(d.extbuf))?;
    g.a.mov(r12d, abi::SNP_ATTEST_EXT as u32)?;
    g.a.call(f.check_report)?;
    g.puts("extended report received\n")?;
    // Certificate table: 24-byte entries {GUID, u32 offset, u32 length}, all-zero terminator.
    let mut lp = l(&mut g.a);
    let mut end = l(&mut g.a);
    let mut bad_tbl = l(&mut g.a);
    g.a.mov(r12, abi::SNP_CERTS)?;
    g.a.xor(r13d, r13d)?;
    g.a.set_label(&mut lp)?;
    g.a.imul_3(rax, r13, 24)?;
    g.a.lea(rdx, qword_ptr(rax + 24))?;
    g.a.cmp(rdx, CERT_BUF as i32)?;
    g.a.ja(bad_tbl)?;
    g.a.lea(rbx, qword_ptr(r12 + rax))?;
    g.a.mov(rax, qword_ptr(rbx))?;
    g.a.or(rax, qword_ptr(rbx + 8))?;
    g.a.or(rax, qword_ptr(rbx + 16))?;
    g.a.jz(end)?;
    g.a.mov(eax, dword_ptr(rbx + 16))?;
    g.a.mov(edx, dword_ptr(rbx + 20))?;
    g.a.test(edx, edx)?;
    g.a.jz(bad_tbl)?;
    g.a.add(rax, rdx)?;
    g.a.cmp(rax, CERT_BUF as i32)?;
    g.a.ja(bad_tbl)?;
    g.puts("cert entry ")?;
    for (off, n) in [(0, 4u32), (4, 2), (6, 2), (8, 2), (10, 6)] {
        if off != 0 {
            g.puts("-")?;
        }
        print_bytes(&mut g, &f, rbx, off, n)?;
    }
    g.puts(" offset=")?;
    g.a.mov(eax, dword_ptr(rbx + 16))?;
    g.hex(8)?;
    g.puts(" len=")?;
    g.a.mov(eax, dword_ptr(rbx + 20))?;
    g.hex(8)?;
    g.puts("\n")?;
    g.a.inc(r13)?;
    g.a.jmp(lp)?;
    g.a.set_label(&mut bad_tbl)?;
    fail_with(
        &mut g,
        &f,
        &d,
        abi::SNP_ATTEST_BAD_CERT_TABLE,
        "snp-attest: malformed certificate table (no terminator, empty entry or entry past the buffer)\n",
    )?;
    g.a.set_label(&mut end)?;
    g.puts("cert entries: ")?;
    g.a.mov(rax, r13)?;
    g.hex(2)?;
    g.puts("\nsnp-attest: all checks passed\n")?;
    g.a.call(f.wipe)?;
    exit3(&mut g, 0)?;

    // ---------------- CPL3: known-answer mode ----------------
    g.a.set_label(&mut kat)?;
    let mut kat_bad = l(&mut g.a);
    let mut kat_ok = l(&mut g.a);
    g.a.mov(rbx, abi::SNP_PARAMS)?;
    g.a.movzx(eax, word_ptr(rbx + abi::SNP_PARAMS_KAT_SIZE as i32))?;
    g.a.test(eax, eax)?;
    g.a.jz(kat_bad)?;
    g.a.test(eax, 0xf)?;
    g.a.jnz(kat_bad)?;
    g.a.cmp(eax, abi::SNP_PARAMS_KAT_MAX as u32)?;
    g.a.ja(kat_bad)?;
    g.a.mov(qword_ptr(d.reqsize), rax)?;
    g.a.mov(qword_ptr(d.rspsize), rax)?;
    g.a.movzx(eax, byte_ptr(rbx + abi::SNP_PARAMS_KAT_TYPE as i32))?;
    g.a.mov(qword_ptr(d.mtype), rax)?;
    g.a.mov(rax, qword_ptr(rbx + abi::SNP_PARAMS_KAT_SEQNO as i32))?;
    g.a.mov(qword_ptr(d.seqno), rax)?;
    g.a.lea(rax, qword_ptr(rbx + abi::SNP_PARAMS_KAT_PAYLOAD as i32))?;
    g.a.mov(qword_ptr(d.input), rax)?;
    g.a.mov(rax, abi::SNP_REPORT_OUT)?;
    g.a.mov(qword_ptr(d.out), rax)?;
    g.a.lea(rsi, qword_ptr(rbx + abi::SNP_PARAMS_KAT_KEY as i32))?;
    g.a.call(f.gcm_init)?;
    g.a.call(f.seal_req)?;
    g.a.call(f.open_rsp)?;
    g.a.test(eax, eax)?;
    g.a.jz(kat_ok)?;
    g.a.add(eax, abi::SNP_ATTEST_KAT as u32)?;
    g.a.mov(qword_ptr(d.code), rax)?;
    g.puts("snp-attest: gcm kat: opening the response failed\n")?;
    g.a.jmp(f.fail)?;
    g.a.set_label(&mut kat_ok)?;
    g.puts("snp-attest: gcm kat: sealed and opened\n")?;
    g.a.call(f.wipe)?;
    exit3(&mut g, 0)?;
    g.a.set_label(&mut kat_bad)?;
    fail_with(
        &mut g,
        &f,
        &d,
        abi::SNP_ATTEST_BAD_KAT_PARAMS,
        "snp-attest: gcm kat: size must be a multiple of 16 in 16..=0x800\n",
    )?;

    g.a.set_label(&mut seal)?;
    emit_seal(&mut g, &f, &d, &x, &s)?;
    g.a.set_label(&mut xkat)?;
    emit_xkat(&mut g, &f, &d, &x)?;
    g.a.set_label(&mut hkat)?;
    emit_hkat(&mut g, &f, &d, &x)?;

    // ---------------- CPL3: failure path ----------------
    g.a.set_label(&mut f.fail)?;
    g.puts("snp-attest: FAILED, exit code ")?;
    g.a.mov(rax, qword_ptr(d.code))?;
    g.hex(2)?;
    g.puts("\n")?;
    g.a.call(f.wipe)?;
    g.a.mov(rax, qword_ptr(d.code))?;
    g.a.mov(dx, abi::EXIT_PORT as u32)?;
    g.a.out(dx, al)?;
    let mut spin = l(&mut g.a);
    g.a.set_label(&mut spin)?;
    g.a.jmp(spin)?;

    emit_routines(&mut g, &mut f, &d)?;
    emit_sha(&mut g.a, &mut s)?;
    x25519::emit(&mut g.a, &mut x, &s)?;
    g.a.db(b"__CPL0__")?;

    g.finish_with(|a| {
        emit_sha_data(a, &mut s)?;
        x25519::emit_data(a, &mut x)?;
        for (lab, size) in [
            (&mut d.gsk, 32usize),
            (&mut d.gpk, 32),
            (&mut d.nonce, 32),
            (&mut d.shared, 32),
            (&mut d.prk, 32),
            (&mut d.okm, 32),
            (&mut d.sbuf, 96),
            (&mut d.ibuf, 96),
            (&mut d.sec, abi::SNP_BOX_MAX_SECRET as usize),
        ] {
            a.set_label(lab)?;
            a.db(&vec![0u8; size])?;
        }
        a.set_label(&mut d.base9)?;
        let mut nine = [0u8; 32];
        nine[0] = 9;
        a.db(&nine)?;
        a.set_label(&mut d.seed_label)?;
        a.db(abi::SNP_SEED_LABEL)?;
        a.set_label(&mut d.info_label)?;
        a.db(abi::SNP_HKDF_INFO)?;
        a.set_label(&mut d.cpuid1)?;
        a.dq(&[0u64])?;
        a.set_label(&mut d.bswap)?;
        a.db(&[15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0])?;
        for (lab, size) in [
            (&mut d.rk, 240usize),
            (&mut d.hkey, 16),
            (&mut d.ivblk, 16),
            (&mut d.ptbuf, 0x60),
            (&mut d.keybuf, 0x40),
            (&mut d.extbuf, 0x4c0),
        ] {
            a.set_label(lab)?;
            a.db(&vec![0u8; size])?;
        }
        for lab in [
            &mut d.seqno,
            &mut d.mtype,
            &mut d.reqsize,
            &mut d.rspsize,
            &mut d.input,
            &mut d.out,
            &mut d.ext,
            &mut d.n,
            &mut d.mode,
            &mut d.result,
            &mut d.code,
        ] {
            a.set_label(lab)?;
            a.dq(&[0u64])?;
        }
        Ok(())
    })
}

/// The CPL3 subroutines.
fn emit_routines(g: &mut G, f: &mut F, d: &D) -> R<()> {
    // report_req: ptbuf = MSG_REPORT_REQ (REPORT_DATA from SNP_PARAMS when flag bit 0 is set,
    // else zero; VMPL 0; KEY_SEL 0); sets the exchange type and sizes.
    {
        let a = &mut g.a;
        a.set_label(&mut f.report_req)?;
        let mut nodata = l(a);
        a.lea(rdi, ptr(d.ptbuf))?;
        a.xor(eax, eax)?;
        a.mov(ecx, 0x60)?;
        a.rep().stosb()?;
        a.mov(rbx, abi::SNP_PARAMS)?;
        a.test(dword_ptr(rbx), abi::SNP_PARAMS_FLAG_REPORT_DATA)?;
        a.jz(nodata)?;
        a.lea(rdi, ptr(d.ptbuf))?;
        a.lea(rsi, qword_ptr(rbx + abi::SNP_PARAMS_REPORT_DATA as i32))?;
        a.mov(ecx, 64)?;
        a.rep().movsb()?;
        a.set_label(&mut nodata)?;
        a.mov(qword_ptr(d.mtype), 5)?;
        a.mov(qword_ptr(d.reqsize), 0x60)?;
        a.mov(qword_ptr(d.rspsize), 0x4c0)?;
        a.lea(rax, ptr(d.ptbuf))?;
        a.mov(qword_ptr(d.input), rax)?;
        a.ret()?;
    }

    // check_report: rbx = decrypted MSG_REPORT_RSP, r12d = exit code base. STATUS 0,
    // REPORT_SIZE 0x4A0, VMPL 0 and REPORT_DATA equal to the request's, else fails.
    {
        g.a.set_label(&mut f.check_report)?;
        let mut st_ok = l(&mut g.a);
        let mut bad = l(&mut g.a);
        g.a.cmp(dword_ptr(rbx), 0)?;
        g.a.je(st_ok)?;
        g.puts("snp-attest: MSG_REPORT_RSP STATUS ")?;
        g.a.mov(eax, dword_ptr(rbx))?;
        g.hex(8)?;
        g.puts("\n")?;
        g.a.lea(eax, dword_ptr(r12 + abi::SNP_ATTEST_E_STATUS as i32))?;
        g.a.mov(qword_ptr(d.code), rax)?;
        g.a.jmp(f.fail)?;
        g.a.set_label(&mut st_ok)?;
        g.a.cmp(dword_ptr(rbx + 4), 0x4a0)?;
        g.a.jne(bad)?;
        g.a.cmp(dword_ptr(rbx + 0x20 + 0x30), 0)?;
        g.a.jne(bad)?;
        g.a.lea(rsi, qword_ptr(rbx + 0x20 + 0x50))?;
        g.a.lea(rdi, ptr(d.ptbuf))?;
        g.a.mov(ecx, 64)?;
        g.a.repe().cmpsb()?;
        g.a.jne(bad)?;
        g.a.ret()?;
        g.a.set_label(&mut bad)?;
        g.puts("snp-attest: MSG_REPORT_RSP: REPORT_SIZE is not 0x4A0 or the report does not echo the request's VMPL and REPORT_DATA\n")?;
        g.a.lea(eax, dword_ptr(r12 + abi::SNP_ATTEST_E_PAYLOAD as i32))?;
        g.a.mov(qword_ptr(d.code), rax)?;
        g.a.jmp(f.fail)?;
    }

    // hexbytes: rsi = bytes, ecx = count. Preserves rbx, r12, r13.
    {
        let a = &mut g.a;
        a.set_label(&mut f.hexbytes)?;
        a.push(rbx)?;
        a.push(r12)?;
        a.mov(rbx, rsi)?;
        a.mov(r12d, ecx)?;
        let mut lp = l(a);
        let mut done = l(a);
        a.set_label(&mut lp)?;
        a.test(r12d, r12d)?;
        a.jz(done)?;
        a.movzx(eax, byte_ptr(rbx))?;
        g.hex(2)?;
        let a = &mut g.a;
        a.inc(rbx)?;
        a.dec(r12d)?;
        a.jmp(lp)?;
        a.set_label(&mut done)?;
        a.pop(r12)?;
        a.pop(rbx)?;
        a.ret()?;
    }

    // wipe: zero the key schedule, H, the key response, the SHA-256 buffers and xmm0..xmm11.
    {
        let a = &mut g.a;
        a.set_label(&mut f.wipe)?;
        a.xor(eax, eax)?;
        for (lab, n) in [
            (d.rk, 240u32),
            (d.hkey, 16),
            (d.keybuf, 0x40),
            (d.gsk, 32),
            (d.shared, 32),
            (d.prk, 32),
            (d.okm, 32),
            (d.sbuf, 96),
            (d.sec, abi::SNP_BOX_MAX_SECRET as u32),
            (d.extbuf, 0x4c0),
        ] {
            a.lea(rdi, ptr(lab))?;
            a.mov(ecx, n)?;
            a.rep().stosb()?;
        }
        for r in [
            xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11,
        ] {
            a.pxor(r, r)?;
        }
        a.ret()?;
    }

    emit_crypto(&mut g.a, f, d)?;
    emit_messages(g, f, d)
}

/// AES-256 and GCM.
fn emit_crypto(a: &mut CodeAssembler, f: &mut F, d: &D) -> R<()> {
    // aes_block: xmm0 = AES-256(rk, xmm0). Clobbers xmm1, r11.
    a.set_label(&mut f.aes_block)?;
    a.lea(r11, ptr(d.rk))?;
    a.movdqu(xmm1, xmmword_ptr(r11))?;
    a.pxor(xmm0, xmm1)?;
    for r in 1..14 {
        a.movdqu(xmm1, xmmword_ptr(r11 + 16 * r))?;
        a.aesenc(xmm0, xmm1)?;
    }
    a.movdqu(xmm1, xmmword_ptr(r11 + 224))?;
    a.aesenclast(xmm0, xmm1)?;
    a.ret()?;

    // gcm_init: rsi = 32-byte key. Expands the 15 round keys into rk and stores the GHASH key
    // H = AES(0) byte-reflected in hkey.
    a.set_label(&mut f.gcm_init)?;
    a.movdqu(xmm1, xmmword_ptr(rsi))?;
    a.movdqu(xmm3, xmmword_ptr(rsi + 16))?;
    a.lea(rdi, ptr(d.rk))?;
    a.movdqu(xmmword_ptr(rdi), xmm1)?;
    a.movdqu(xmmword_ptr(rdi + 16), xmm3)?;
    for (i, rcon) in RCON.iter().enumerate() {
        let i = i as i32 + 1;
        // Even round key: from the previous pair, RotWord(SubWord(w)) ^ rcon.
        a.aeskeygenassist(xmm2, xmm3, *rcon)?;
        a.pshufd(xmm2, xmm2, 0xff)?;
        prefix_xor(a, xmm1)?;
        a.pxor(xmm1, xmm2)?;
        a.movdqu(xmmword_ptr(rdi + 32 * i), xmm1)?;
        if i < 7 {
            // Odd round key: SubWord(w) without rotation or rcon.
            a.aeskeygenassist(xmm2, xmm1, 0)?;
            a.pshufd(xmm2, xmm2, 0xaa)?;
            prefix_xor(a, xmm3)?;
            a.pxor(xmm3, xmm2)?;
            a.movdqu(xmmword_ptr(rdi + 32 * i + 16), xmm3)?;
        }
    }
    a.pxor(xmm0, xmm0)?;
    a.call(f.aes_block)?;
    a.movdqu(xmm8, xmmword_ptr(d.bswap))?;
    a.pshufb(xmm0, xmm8)?;
    a.movdqu(xmmword_ptr(d.hkey), xmm0)?;
    for r in [xmm0, xmm1, xmm2, xmm3, xmm4] {
        a.pxor(r, r)?;
    }
    a.ret()?;

    // gfmul: xmm6 = xmm6 · xmm7 in GF(2^128), both byte-reflected. Clobbers xmm1-5, xmm9-11.
    a.set_label(&mut f.gfmul)?;
    for (dst, imm) in [(xmm1, 0x00), (xmm2, 0x10), (xmm3, 0x01), (xmm4, 0x11)] {
        a.movdqa(dst, xmm6)?;
        a.pclmulqdq(dst, xmm7, imm)?;
    }
    // Middle terms into the low (xmm1) and high (xmm4) halves of the 256-bit product.
    a.pxor(xmm2, xmm3)?;
    a.movdqa(xmm3, xmm2)?;
    a.pslldq(xmm3, 8)?;
    a.psrldq(xmm2, 8)?;
    a.pxor(xmm1, xmm3)?;
    a.pxor(xmm4, xmm2)?;
    // Shift the 256-bit product left by one bit (reflected operands give a product one bit low).
    a.movdqa(xmm5, xmm1)?;
    a.psrld(xmm5, 31)?;
    a.movdqa(xmm9, xmm4)?;
    a.psrld(xmm9, 31)?;
    a.pslld(xmm1, 1)?;
    a.pslld(xmm4, 1)?;
    a.movdqa(xmm10, xmm5)?;
    a.psrldq(xmm10, 12)?;
    a.pslldq(xmm9, 4)?;
    a.pslldq(xmm5, 4)?;
    a.por(xmm1, xmm5)?;
    a.por(xmm4, xmm9)?;
    a.por(xmm4, xmm10)?;
    // Reduce the low half D: D' = D ^ (D<<127 ^ D<<126 ^ D<<121) (the bits that overflow),
    // result = high ^ D' ^ D'>>1 ^ D'>>2 ^ D'>>7.
    a.movdqa(xmm5, xmm1)?;
    a.pslld(xmm5, 31)?;
    a.movdqa(xmm9, xmm1)?;
    a.pslld(xmm9, 30)?;
    a.movdqa(xmm10, xmm1)?;
    a.pslld(xmm10, 25)?;
    a.pxor(xmm5, xmm9)?;
    a.pxor(xmm5, xmm10)?;
    a.movdqa(xmm9, xmm5)?;
    a.psrldq(xmm9, 4)?;
    a.pslldq(xmm5, 12)?;
    a.pxor(xmm1, xmm5)?;
    a.movdqa(xmm11, xmm1)?;
    a.psrld(xmm11, 1)?;
    a.movdqa(xmm2, xmm1)?;
    a.psrld(xmm2, 2)?;
    a.movdqa(xmm3, xmm1)?;
    a.psrld(xmm3, 7)?;
    a.pxor(xmm11, xmm2)?;
    a.pxor(xmm11, xmm3)?;
    a.pxor(xmm11, xmm9)?;
    a.pxor(xmm1, xmm11)?;
    a.pxor(xmm4, xmm1)?;
    a.movdqa(xmm6, xmm4)?;
    a.ret()?;

    // ghash_blocks: rsi = blocks, rcx = count; X (xmm6) absorbs each (xmm7 = H, xmm8 = bswap).
    a.set_label(&mut f.ghash_blocks)?;
    let lp = f.ghash_blocks;
    let mut done = l(a);
    a.test(rcx, rcx)?;
    a.jz(done)?;
    a.movdqu(xmm0, xmmword_ptr(rsi))?;
    a.pshufb(xmm0, xmm8)?;
    a.pxor(xmm6, xmm0)?;
    a.call(f.gfmul)?;
    a.add(rsi, 16)?;
    a.dec(rcx)?;
    a.jmp(lp)?;
    a.set_label(&mut done)?;
    a.ret()?;

    // ghash_tag: r8 = message page, [n] ciphertext blocks at r8+0x60. xmm0 = the tag
    // (GHASH(AAD = r8+0x30..0x60, C) ^ AES(J0)). ivblk must hold the IV.
    a.set_label(&mut f.ghash_tag)?;
    a.movdqu(xmm8, xmmword_ptr(d.bswap))?;
    a.movdqu(xmm7, xmmword_ptr(d.hkey))?;
    a.pxor(xmm6, xmm6)?;
    a.lea(rsi, qword_ptr(r8 + 0x30))?;
    a.mov(ecx, 3)?;
    a.call(f.ghash_blocks)?;
    a.lea(rsi, qword_ptr(r8 + 0x60))?;
    a.mov(rcx, qword_ptr(d.n))?;
    a.call(f.ghash_blocks)?;
    // Length block: len(A) = 384 bits ‖ len(C) bits, big-endian; reflected: A high, C low.
    a.mov(rax, qword_ptr(d.n))?;
    a.shl(rax, 7)?;
    a.movq(xmm0, rax)?;
    a.mov(eax, 384)?;
    a.movq(xmm1, rax)?;
    a.pslldq(xmm1, 8)?;
    a.por(xmm0, xmm1)?;
    a.pxor(xmm6, xmm0)?;
    a.call(f.gfmul)?;
    a.pshufb(xmm6, xmm8)?;
    a.lea(r10, ptr(d.ivblk))?;
    a.mov(dword_ptr(r10 + 12), 0x0100_0000)?;
    a.movdqu(xmm0, xmmword_ptr(r10))?;
    a.call(f.aes_block)?;
    a.pxor(xmm0, xmm6)?;
    a.pxor(xmm6, xmm6)?;
    a.ret()?;

    // ctr: [n] blocks, counter 2.. (J0 + 1); encrypt: r9 → r8+0x60, decrypt: r8+0x60 → r9.
    a.set_label(&mut f.ctr)?;
    let mut go = l(a);
    let mut lp = l(a);
    let mut done = l(a);
    a.mov(rsi, r9)?;
    a.lea(rdi, qword_ptr(r8 + 0x60))?;
    a.cmp(qword_ptr(d.mode), 0)?;
    a.je(go)?;
    a.xchg(rsi, rdi)?;
    a.set_label(&mut go)?;
    a.mov(rcx, qword_ptr(d.n))?;
    a.mov(edx, 2)?;
    a.lea(r10, ptr(d.ivblk))?;
    a.set_label(&mut lp)?;
    a.test(rcx, rcx)?;
    a.jz(done)?;
    a.mov(eax, edx)?;
    a.bswap(eax)?;
    a.mov(dword_ptr(r10 + 12), eax)?;
    a.movdqu(xmm0, xmmword_ptr(r10))?;
    a.call(f.aes_block)?;
    a.movdqu(xmm1, xmmword_ptr(rsi))?;
    a.pxor(xmm0, xmm1)?;
    a.movdqu(xmmword_ptr(rdi), xmm0)?;
    a.add(rsi, 16)?;
    a.add(rdi, 16)?;
    a.inc(edx)?;
    a.dec(rcx)?;
    a.jmp(lp)?;
    a.set_label(&mut done)?;
    a.pxor(xmm0, xmm0)?;
    a.ret()?;

    // gcm_crypt: r8 = message page (header; payload at +0x60), r9 = plaintext buffer, rcx =
    // blocks, edx = 0 seal / 1 open. Seal writes ciphertext and tag into the page; open checks
    // the tag first and writes plaintext only if it verifies. eax = 0, or 1 on a tag mismatch.
    a.set_label(&mut f.gcm_crypt)?;
    let mut seal = l(a);
    let mut mismatch = l(a);
    a.mov(qword_ptr(d.n), rcx)?;
    a.mov(qword_ptr(d.mode), rdx)?;
    a.lea(rdi, ptr(d.ivblk))?;
    a.mov(rax, qword_ptr(r8 + 0x20))?;
    a.mov(qword_ptr(rdi), rax)?;
    a.mov(dword_ptr(rdi + 8), 0)?;
    a.mov(dword_ptr(rdi + 12), 0x0100_0000)?;
    a.cmp(qword_ptr(d.mode), 0)?;
    a.je(seal)?;
    a.call(f.ghash_tag)?;
    a.movdqu(xmm1, xmmword_ptr(r8))?;
    a.pxor(xmm0, xmm1)?;
    a.ptest(xmm0, xmm0)?;
    a.jnz(mismatch)?;
    a.call(f.ctr)?;
    a.xor(eax, eax)?;
    a.ret()?;
    a.set_label(&mut mismatch)?;
    a.pxor(xmm0, xmm0)?;
    a.mov(eax, 1)?;
    a.ret()?;
    a.set_label(&mut seal)?;
    a.call(f.ctr)?;
    a.call(f.ghash_tag)?;
    a.movdqu(xmmword_ptr(r8), xmm0)?;
    a.pxor(xmm0, xmm0)?;
    a.movdqu(xmmword_ptr(r8 + 16), xmm0)?;
    a.xor(eax, eax)?;
    a.ret()
}

/// `x ^= x << 32; x ^= x << 64; x ^= x << 96` (each word becomes the xor of it and the words
/// below it), with xmm4 as scratch.
fn prefix_xor(a: &mut CodeAssembler, x: AsmRegisterXmm) -> R<()> {
    a.movdqa(xmm4, x)?;
    for _ in 0..3 {
        a.pslldq(xmm4, 4)?;
        a.pxor(x, xmm4)?;
    }
    Ok(())
}

/// Message routines: seal_req, open_rsp, exchange.
fn emit_messages(g: &mut G, f: &mut F, d: &D) -> R<()> {
    // seal_req: the request page gets a header (seqno, type, version 1, size, VMPCK 0) and the
    // sealed [input] payload of [reqsize] bytes.
    {
        let a = &mut g.a;
        a.set_label(&mut f.seal_req)?;
        a.mov(rdi, abi::SNP_REQ_PAGE)?;
        a.xor(eax, eax)?;
        a.mov(ecx, 4096)?;
        a.rep().stosb()?;
        a.mov(rdi, abi::SNP_REQ_PAGE)?;
        a.mov(rax, qword_ptr(d.seqno))?;
        a.mov(qword_ptr(rdi + 0x20), rax)?;
        a.mov(byte_ptr(rdi + 0x30), 1)?;
        a.mov(byte_ptr(rdi + 0x31), 1)?;
        a.mov(word_ptr(rdi + 0x32), 0x60)?;
        a.mov(rax, qword_ptr(d.mtype))?;
        a.mov(byte_ptr(rdi + 0x34), al)?;
        a.mov(byte_ptr(rdi + 0x35), 1)?;
        a.mov(rax, qword_ptr(d.reqsize))?;
        a.mov(word_ptr(rdi + 0x36), ax)?;
        a.mov(r8, rdi)?;
        a.mov(r9, qword_ptr(d.input))?;
        a.mov(rcx, qword_ptr(d.reqsize))?;
        a.shr(rcx, 4)?;
        a.xor(edx, edx)?;
        a.call(f.gcm_crypt)?;
        a.ret()?;
    }

    // open_rsp: checks the response page's header (ALGO 1, HDR_VERSION 1, HDR_SIZE 0x60,
    // MSG_TYPE = type + 1, MSG_VERSION 1, MSG_VMPCK 0, MSG_SEQNO = seqno + 1, MSG_SIZE =
    // [rspsize]) and opens it into [out]; on success seqno += 2. eax = 0 or an SNP_ATTEST_E_*.
    {
        g.a.set_label(&mut f.open_rsp)?;
        let mut badhdr = l(&mut g.a);
        let mut badseq = l(&mut g.a);
        let mut badsize = l(&mut g.a);
        let mut badtag = l(&mut g.a);
        g.a.mov(rbx, abi::SNP_RESP_PAGE)?;
        g.a.cmp(byte_ptr(rbx + 0x30), 1)?;
        g.a.jne(badhdr)?;
        g.a.cmp(byte_ptr(rbx + 0x31), 1)?;
        g.a.jne(badhdr)?;
        g.a.cmp(word_ptr(rbx + 0x32), 0x60)?;
        g.a.jne(badhdr)?;
        g.a.mov(rax, qword_ptr(d.mtype))?;
        g.a.inc(eax)?;
        g.a.cmp(byte_ptr(rbx + 0x34), al)?;
        g.a.jne(badhdr)?;
        g.a.cmp(byte_ptr(rbx + 0x35), 1)?;
        g.a.jne(badhdr)?;
        g.a.cmp(byte_ptr(rbx + 0x3c), 0)?;
        g.a.jne(badhdr)?;
        g.a.mov(rax, qword_ptr(d.seqno))?;
        g.a.inc(rax)?;
        g.a.cmp(qword_ptr(rbx + 0x20), rax)?;
        g.a.jne(badseq)?;
        g.a.movzx(eax, word_ptr(rbx + 0x36))?;
        g.a.cmp(rax, qword_ptr(d.rspsize))?;
        g.a.jne(badsize)?;
        g.a.mov(r8, rbx)?;
        g.a.mov(r9, qword_ptr(d.out))?;
        g.a.mov(rcx, qword_ptr(d.rspsize))?;
        g.a.shr(rcx, 4)?;
        g.a.mov(edx, 1)?;
        g.a.call(f.gcm_crypt)?;
        g.a.test(eax, eax)?;
        g.a.jnz(badtag)?;
        g.a.add(qword_ptr(d.seqno), 2)?;
        g.a.xor(eax, eax)?;
        g.a.ret()?;
        g.a.set_label(&mut badhdr)?;
        g.puts("snp-attest: response header: unexpected ALGO, HDR_VERSION, HDR_SIZE, MSG_TYPE, MSG_VERSION or MSG_VMPCK\n")?;
        g.a.mov(eax, abi::SNP_ATTEST_E_HEADER as u32)?;
        g.a.ret()?;
        g.a.set_label(&mut badseq)?;
        g.puts("snp-attest: response MSG_SEQNO ")?;
        g.a.mov(rax, qword_ptr(rbx + 0x20))?;
        g.hex(16)?;
        g.puts(" is not the request's + 1\n")?;
        g.a.mov(eax, abi::SNP_ATTEST_E_SEQNO as u32)?;
        g.a.ret()?;
        g.a.set_label(&mut badsize)?;
        g.puts("snp-attest: response MSG_SIZE ")?;
        g.a.movzx(eax, word_ptr(rbx + 0x36))?;
        g.hex(4)?;
        g.puts(" is not the expected size\n")?;
        g.a.mov(eax, abi::SNP_ATTEST_E_SIZE as u32)?;
        g.a.ret()?;
        g.a.set_label(&mut badtag)?;
        g.puts("snp-attest: response AES-256-GCM tag mismatch\n")?;
        g.a.mov(eax, abi::SNP_ATTEST_E_TAG as u32)?;
        g.a.ret()?;
    }

    // exchange: seal_req, ring the doorbell (plain or, with [ext], extended with the
    // certificate buffer), check the result, open_rsp. eax = 0 or an SNP_ATTEST_E_*.
    {
        g.a.set_label(&mut f.exchange)?;
        let mut plain = l(&mut g.a);
        let mut novmm = l(&mut g.a);
        let mut nofw = l(&mut g.a);
        g.a.call(f.seal_req)?;
        g.a.mov(rdi, abi::SNP_RESP_PAGE)?;
        g.a.xor(eax, eax)?;
        g.a.mov(ecx, 4096)?;
        g.a.rep().stosb()?;
        g.a.mov(rbx, abi::SNP_GHCB)?;
        g.a.mov(eax, 0x8000_0011u32)?;
        g.a.add(rax, qword_ptr(d.ext))?;
        g.a.mov(qword_ptr(rbx), rax)?;
        g.a.mov(rax, abi::SNP_REQ_PAGE)?;
        g.a.mov(qword_ptr(rbx + 8), rax)?;
        g.a.mov(rax, abi::SNP_RESP_PAGE)?;
        g.a.mov(qword_ptr(rbx + 0x10), rax)?;
        g.a.xor(eax, eax)?;
        g.a.mov(qword_ptr(rbx + 0x18), rax)?;
        g.a.mov(qword_ptr(rbx + 0x20), rax)?;
        g.a.cmp(qword_ptr(d.ext), 0)?;
        g.a.je(plain)?;
        g.a.mov(rax, abi::SNP_CERTS)?;
        g.a.mov(qword_ptr(rbx + 0x18), rax)?;
        g.a.mov(qword_ptr(rbx + 0x20), abi::SNP_CERTS_PAGES as i32)?;
        g.a.set_label(&mut plain)?;
        g.a.mov(dx, abi::SNP_DOORBELL_PORT as u32)?;
        g.a.out(dx, al)?;
        g.a.mov(rax, qword_ptr(rbx + 0x10))?;
        g.a.mov(qword_ptr(d.result), rax)?;
        g.a.shr(rax, 32)?;
        g.a.jz(novmm)?;
        g.puts("snp-attest: guest request: VMM error ")?;
        g.a.mov(rax, qword_ptr(d.result))?;
        g.a.shr(rax, 32)?;
        g.hex(8)?;
        g.puts(" (certificate pages needed: ")?;
        g.a.mov(rax, qword_ptr(rbx + 0x20))?;
        g.hex(8)?;
        g.puts(")\n")?;
        g.a.mov(eax, abi::SNP_ATTEST_E_VMM as u32)?;
        g.a.ret()?;
        g.a.set_label(&mut novmm)?;
        g.a.mov(eax, dword_ptr(d.result))?;
        g.a.test(eax, eax)?;
        g.a.jz(nofw)?;
        g.puts("snp-attest: guest request: firmware status ")?;
        g.a.mov(eax, dword_ptr(d.result))?;
        g.hex(8)?;
        g.puts("\n")?;
        g.a.mov(eax, abi::SNP_ATTEST_E_FW as u32)?;
        g.a.ret()?;
        g.a.set_label(&mut nofw)?;
        g.a.call(f.open_rsp)?;
        g.a.ret()
    }
}

/// `rep movsb` of `n` bytes from `src` to `dst` (labels).
fn copy(a: &mut CodeAssembler, dst: CodeLabel, src: CodeLabel, n: u32) -> R<()> {
    a.lea(rdi, ptr(dst))?;
    a.lea(rsi, ptr(src))?;
    a.mov(ecx, n)?;
    a.rep().movsb()
}

/// Zeroes `n` bytes at label `lab`.
fn zero(a: &mut CodeAssembler, lab: CodeLabel, n: u32) -> R<()> {
    a.lea(rdi, ptr(lab))?;
    a.xor(eax, eax)?;
    a.mov(ecx, n)?;
    a.rep().stosb()
}

/// Calls `x.hmac` with rdi = out, rsi = key, rdx = message (already loaded) and `len`.
fn hmac_labels(
    a: &mut CodeAssembler,
    x: &X,
    out: CodeLabel,
    key: CodeLabel,
    msg: CodeLabel,
    len: u32,
) -> R<()> {
    a.lea(rdi, ptr(out))?;
    a.lea(rsi, ptr(key))?;
    a.lea(rdx, ptr(msg))?;
    a.mov(ecx, len)?;
    a.call(x.hmac)
}

/// On eax ≠ 0 after an exchange: code `base + eax`, message, failure path.
fn check_exchange(g: &mut G, f: &F, d: &D, base: u8, what: &str) -> R<()> {
    let mut ok = l(&mut g.a);
    g.a.test(eax, eax)?;
    g.a.jz(ok)?;
    g.a.add(eax, base as u32)?;
    g.a.mov(qword_ptr(d.code), rax)?;
    g.puts(what)?;
    g.a.jmp(f.fail)?;
    g.a.set_label(&mut ok)
}

/// The sealed-secret exchange of `sevm demo --snp` (docs/LAYOUT.md "sealed secret"): an
/// ephemeral X25519 key from the derived key (and RDRAND when CPUID has it), its public key and
/// the owner's nonce as REPORT_DATA, the owner step of the doorbell, the box opened with
/// AES-256-GCM under HKDF-SHA256(nonce, X25519(gsk, owner key), label ‖ gpk ‖ opk).
fn emit_seal(g: &mut G, f: &F, d: &D, x: &X, s: &Sha) -> R<()> {
    let base = abi::SNP_ATTEST_SEAL;
    g.puts("snp-attest: sealed-secret mode\n")?;
    // MSG_KEY_REQ (seqno 1): VCEK root, guest_field_select policy | measurement.
    g.a.lea(rdi, ptr(d.ptbuf))?;
    g.a.xor(eax, eax)?;
    g.a.mov(ecx, 0x60)?;
    g.a.rep().stosb()?;
    g.a.lea(rdi, ptr(d.ptbuf))?;
    g.a.mov(dword_ptr(rdi), 2)?;
    g.a.mov(qword_ptr(rdi + 8), 0x9)?;
    g.a.mov(qword_ptr(d.mtype), 3)?;
    g.a.mov(qword_ptr(d.reqsize), 0x20)?;
    g.a.mov(qword_ptr(d.rspsize), 0x40)?;
    g.a.lea(rax, ptr(d.ptbuf))?;
    g.a.mov(qword_ptr(d.input), rax)?;
    g.a.lea(rax, ptr(d.keybuf))?;
    g.a.mov(qword_ptr(d.out), rax)?;
    g.a.mov(qword_ptr(d.ext), 0)?;
    g.a.call(f.exchange)?;
    check_exchange(g, f, d, base, "snp-attest: MSG_KEY_REQ failed\n")?;
    let mut st_ok = l(&mut g.a);
    g.a.lea(rbx, ptr(d.keybuf))?;
    g.a.cmp(dword_ptr(rbx), 0)?;
    g.a.je(st_ok)?;
    fail_with(
        g,
        f,
        d,
        base + abi::SNP_ATTEST_E_STATUS,
        "snp-attest: MSG_KEY_RSP STATUS is not 0\n",
    )?;
    g.a.set_label(&mut st_ok)?;
    // The nonce, kept privately (REPORT_DATA[32..64] as the VMM passed it).
    g.a.mov(rsi, abi::SNP_PARAMS + abi::SNP_PARAMS_REPORT_DATA + 32)?;
    g.a.lea(rdi, ptr(d.nonce))?;
    g.a.mov(ecx, 32)?;
    g.a.rep().movsb()?;
    // sbuf = label ‖ nonce ‖ 32 RDRAND bytes (zero without RDRAND); r13 = 1 if RDRAND gave all.
    zero(&mut g.a, d.sbuf, 96)?;
    copy(&mut g.a, d.sbuf, d.seed_label, 20)?;
    g.a.lea(rdi, ptr(d.sbuf))?;
    g.a.add(rdi, 20)?;
    g.a.lea(rsi, ptr(d.nonce))?;
    g.a.mov(ecx, 32)?;
    g.a.rep().movsb()?;
    let mut nord = l(&mut g.a);
    g.a.xor(r13d, r13d)?;
    g.a.test(dword_ptr(d.cpuid1), 1 << 30)?;
    g.a.jz(nord)?;
    g.a.lea(rdi, ptr(d.sbuf))?;
    g.a.add(rdi, 52)?;
    for i in 0..4i32 {
        let mut again = l(&mut g.a);
        let mut got = l(&mut g.a);
        g.a.mov(ecx, 100)?;
        g.a.set_label(&mut again)?;
        g.a.rdrand(rax)?;
        g.a.jb(got)?;
        g.a.dec(ecx)?;
        g.a.jnz(again)?;
        g.a.jmp(nord)?;
        g.a.set_label(&mut got)?;
        g.a.mov(qword_ptr(rdi + 8 * i), rax)?;
    }
    g.a.mov(r13d, 1)?;
    g.a.set_label(&mut nord)?;
    // gsk = HMAC-SHA256(derived key at keybuf + 0x20, sbuf).
    g.a.lea(rdi, ptr(d.gsk))?;
    g.a.lea(rsi, ptr(d.keybuf))?;
    g.a.add(rsi, 0x20)?;
    g.a.lea(rdx, ptr(d.sbuf))?;
    g.a.mov(ecx, 84)?;
    g.a.call(x.hmac)?;
    zero(&mut g.a, d.keybuf, 0x40)?;
    zero(&mut g.a, d.sbuf, 96)?;
    let mut with_rd = l(&mut g.a);
    let mut said = l(&mut g.a);
    g.a.test(r13d, r13d)?;
    g.a.jnz(with_rd)?;
    g.puts("x25519 key from the derived key (no RDRAND)\n")?;
    g.a.jmp(said)?;
    g.a.set_label(&mut with_rd)?;
    g.puts("x25519 key from the derived key and RDRAND\n")?;
    g.a.set_label(&mut said)?;
    g.a.lea(rdi, ptr(d.gpk))?;
    g.a.lea(rsi, ptr(d.gsk))?;
    g.a.lea(rdx, ptr(d.base9))?;
    g.a.call(x.x25519)?;
    g.puts("guest x25519 public key=")?;
    g.a.lea(rbx, ptr(d.gpk))?;
    print_bytes(g, f, rbx, 0, 32)?;
    g.puts("\n")?;
    // MSG_REPORT_REQ (seqno 3), REPORT_DATA = gpk ‖ nonce.
    g.a.call(f.report_req)?;
    copy(&mut g.a, d.ptbuf, d.gpk, 32)?;
    g.a.lea(rdi, ptr(d.ptbuf))?;
    g.a.add(rdi, 32)?;
    g.a.lea(rsi, ptr(d.nonce))?;
    g.a.mov(ecx, 32)?;
    g.a.rep().movsb()?;
    g.a.mov(rax, abi::SNP_REPORT_OUT)?;
    g.a.mov(qword_ptr(d.out), rax)?;
    g.a.mov(qword_ptr(d.ext), 0)?;
    g.a.call(f.exchange)?;
    check_exchange(g, f, d, base, "snp-attest: MSG_REPORT_REQ failed\n")?;
    g.a.mov(rbx, abi::SNP_REPORT_OUT)?;
    g.a.mov(r12d, base as u32)?;
    g.a.call(f.check_report)?;
    g.puts("report_data=")?;
    print_bytes(g, f, rbx, 0x20 + 0x50, 64)?;
    g.puts("\nmeasurement=")?;
    print_bytes(g, f, rbx, 0x20 + 0x90, 48)?;
    g.puts("\n")?;
    // The owner step: the VMM relays the report and writes the owner's box.
    g.a.mov(rdi, abi::SNP_BOX)?;
    g.a.xor(eax, eax)?;
    g.a.mov(ecx, 4096)?;
    g.a.rep().stosb()?;
    g.a.mov(rbx, abi::SNP_GHCB)?;
    g.a.mov(rax, abi::SNP_EXIT_OWNER_SECRET)?;
    g.a.mov(qword_ptr(rbx), rax)?;
    g.a.mov(rax, abi::SNP_REPORT_OUT)?;
    g.a.mov(qword_ptr(rbx + 8), rax)?;
    g.a.mov(rax, abi::SNP_BOX)?;
    g.a.mov(qword_ptr(rbx + 0x10), rax)?;
    g.a.mov(dx, abi::SNP_DOORBELL_PORT as u32)?;
    g.a.out(dx, al)?;
    let mut owner_ok = l(&mut g.a);
    g.a.mov(rax, qword_ptr(rbx + 0x10))?;
    g.a.shr(rax, 32)?;
    g.a.jz(owner_ok)?;
    g.puts("snp-attest: the owner released no secret (VMM error ")?;
    g.a.mov(rax, qword_ptr(rbx + 0x10))?;
    g.a.shr(rax, 32)?;
    g.hex(8)?;
    fail_with(g, f, d, base + abi::SNP_ATTEST_E_VMM, ")\n")?;
    g.a.set_label(&mut owner_ok)?;
    // A private copy of the box (header and the largest ciphertext), then its size.
    g.a.mov(rsi, abi::SNP_BOX)?;
    g.a.lea(rdi, ptr(d.extbuf))?;
    g.a.mov(
        ecx,
        (abi::SNP_BOX_CIPHERTEXT + abi::SNP_BOX_MAX_SECRET) as u32,
    )?;
    g.a.rep().movsb()?;
    let mut bad_box = l(&mut g.a);
    let mut size_ok = l(&mut g.a);
    g.a.lea(rbx, ptr(d.extbuf))?;
    g.a.movzx(eax, word_ptr(rbx + abi::SNP_BOX_SIZE as i32))?;
    g.a.test(eax, eax)?;
    g.a.jz(bad_box)?;
    g.a.test(eax, 0xf)?;
    g.a.jnz(bad_box)?;
    g.a.cmp(eax, abi::SNP_BOX_MAX_SECRET as u32)?;
    g.a.ja(bad_box)?;
    g.a.jmp(size_ok)?;
    g.a.set_label(&mut bad_box)?;
    fail_with(
        g,
        f,
        d,
        abi::SNP_ATTEST_SEAL_BAD_BOX,
        "snp-attest: sealed secret: size is not a multiple of 16 in 16..=0x400\n",
    )?;
    g.a.set_label(&mut size_ok)?;
    g.a.mov(qword_ptr(d.reqsize), rax)?;
    // ibuf = info label ‖ gpk ‖ owner public key ‖ 0x01 (HKDF-Expand's first block).
    copy(&mut g.a, d.ibuf, d.info_label, 18)?;
    g.a.lea(rdi, ptr(d.ibuf))?;
    g.a.add(rdi, 18)?;
    g.a.lea(rsi, ptr(d.gpk))?;
    g.a.mov(ecx, 32)?;
    g.a.rep().movsb()?;
    g.a.lea(rsi, qword_ptr(rbx + abi::SNP_BOX_OWNER_PUB as i32))?;
    g.a.mov(ecx, 32)?;
    g.a.rep().movsb()?;
    g.a.mov(byte_ptr(rdi), 1)?;
    // shared = X25519(gsk, owner key); refused if zero (a low-order owner key).
    g.a.lea(rdi, ptr(d.shared))?;
    g.a.lea(rsi, ptr(d.gsk))?;
    g.a.lea(rdx, ptr(d.ibuf))?;
    g.a.add(rdx, 50)?;
    g.a.call(x.x25519)?;
    let mut nonzero = l(&mut g.a);
    g.a.lea(rsi, ptr(d.shared))?;
    g.a.mov(rax, qword_ptr(rsi))?;
    for i in 1..4i32 {
        g.a.or(rax, qword_ptr(rsi + 8 * i))?;
    }
    g.a.jnz(nonzero)?;
    fail_with(
        g,
        f,
        d,
        abi::SNP_ATTEST_SEAL_ZERO_SHARED,
        "snp-attest: sealed secret: X25519 with the owner's key gives zero (refused)\n",
    )?;
    g.a.set_label(&mut nonzero)?;
    hmac_labels(&mut g.a, x, d.prk, d.nonce, d.shared, 32)?;
    hmac_labels(&mut g.a, x, d.okm, d.prk, d.ibuf, 18 + 64 + 1)?;
    zero(&mut g.a, d.prk, 32)?;
    zero(&mut g.a, d.shared, 32)?;
    zero(&mut g.a, d.gsk, 32)?;
    g.a.lea(rsi, ptr(d.okm))?;
    g.a.call(f.gcm_init)?;
    zero(&mut g.a, d.okm, 32)?;
    let mut opened = l(&mut g.a);
    g.a.lea(r8, ptr(d.extbuf))?;
    g.a.lea(r9, ptr(d.sec))?;
    g.a.mov(rcx, qword_ptr(d.reqsize))?;
    g.a.shr(rcx, 4)?;
    g.a.mov(edx, 1)?;
    g.a.call(f.gcm_crypt)?;
    g.a.test(eax, eax)?;
    g.a.jz(opened)?;
    fail_with(
        g,
        f,
        d,
        base + abi::SNP_ATTEST_E_TAG,
        "snp-attest: sealed secret: AES-256-GCM tag mismatch (refused, nothing decrypted)\n",
    )?;
    g.a.set_label(&mut opened)?;
    g.a.lea(rsi, ptr(d.sec))?;
    g.a.mov(rcx, qword_ptr(d.reqsize))?;
    g.a.call(s.sha256)?;
    g.puts("secret sha256=")?;
    g.a.lea(rbx, ptr(s.state))?;
    for i in 0..8 {
        g.a.mov(eax, dword_ptr(rbx + i * 4))?;
        g.hex(8)?;
    }
    g.puts("\nsnp-attest: sealed secret received\n")?;
    zero(&mut g.a, s.pad, 128)?;
    zero(&mut g.a, s.w, 256)?;
    zero(&mut g.a, s.state, 32)?;
    g.a.call(f.wipe)?;
    exit3(g, 0)
}

/// X25519 known-answer mode (SNP_PARAMS flags bit 2).
fn emit_xkat(g: &mut G, f: &F, d: &D, x: &X) -> R<()> {
    let mut bad = l(&mut g.a);
    let mut iter = l(&mut g.a);
    let mut lp = l(&mut g.a);
    let mut done = l(&mut g.a);
    g.a.mov(rbx, abi::SNP_PARAMS)?;
    g.a.mov(eax, dword_ptr(rbx + abi::SNP_PARAMS_XKAT_COUNT as i32))?;
    g.a.test(eax, eax)?;
    g.a.jz(bad)?;
    g.a.cmp(eax, abi::SNP_PARAMS_XKAT_MAX)?;
    g.a.ja(bad)?;
    g.a.mov(r13d, eax)?;
    g.a.mov(eax, dword_ptr(rbx + abi::SNP_PARAMS_XKAT_ITER as i32))?;
    g.a.test(eax, eax)?;
    g.a.jnz(iter)?;
    g.a.xor(r12d, r12d)?;
    g.a.set_label(&mut lp)?;
    g.a.cmp(r12d, r13d)?;
    g.a.jae(done)?;
    g.a.mov(rax, r12)?;
    g.a.shl(rax, 5)?;
    g.a.mov(rdi, abi::SNP_REPORT_OUT)?;
    g.a.add(rdi, rax)?;
    g.a.shl(rax, 1)?;
    g.a.mov(rsi, abi::SNP_PARAMS + abi::SNP_PARAMS_XKAT_CASES)?;
    g.a.add(rsi, rax)?;
    g.a.lea(rdx, qword_ptr(rsi + 32))?;
    g.a.call(x.x25519)?;
    g.a.inc(r12d)?;
    g.a.jmp(lp)?;
    // RFC 7748 §5.2 iteration: k, u = X25519(k, u), k.
    g.a.set_label(&mut iter)?;
    g.a.mov(r13d, eax)?;
    g.a.mov(rsi, abi::SNP_PARAMS + abi::SNP_PARAMS_XKAT_CASES)?;
    g.a.lea(rdi, ptr(d.gsk))?;
    g.a.mov(ecx, 32)?;
    g.a.rep().movsb()?;
    g.a.lea(rdi, ptr(d.shared))?;
    g.a.mov(ecx, 32)?;
    g.a.rep().movsb()?;
    let mut it = l(&mut g.a);
    g.a.set_label(&mut it)?;
    g.a.lea(rdi, ptr(d.prk))?;
    g.a.lea(rsi, ptr(d.gsk))?;
    g.a.lea(rdx, ptr(d.shared))?;
    g.a.call(x.x25519)?;
    copy(&mut g.a, d.shared, d.gsk, 32)?;
    copy(&mut g.a, d.gsk, d.prk, 32)?;
    g.a.dec(r13d)?;
    g.a.jnz(it)?;
    g.a.mov(rdi, abi::SNP_REPORT_OUT)?;
    g.a.lea(rsi, ptr(d.gsk))?;
    g.a.mov(ecx, 32)?;
    g.a.rep().movsb()?;
    g.a.set_label(&mut done)?;
    g.puts("snp-attest: x25519 kat done\n")?;
    g.a.call(f.wipe)?;
    exit3(g, 0)?;
    g.a.set_label(&mut bad)?;
    fail_with(
        g,
        f,
        d,
        abi::SNP_ATTEST_BAD_XKAT_PARAMS,
        "snp-attest: x25519 kat: count must be 1..=60\n",
    )
}

/// HKDF-SHA256 known-answer mode (SNP_PARAMS flags bit 3).
fn emit_hkat(g: &mut G, f: &F, d: &D, x: &X) -> R<()> {
    let mut bad = l(&mut g.a);
    g.a.mov(rbx, abi::SNP_PARAMS)?;
    g.a.mov(eax, dword_ptr(rbx + abi::SNP_PARAMS_HKAT_INFO_LEN as i32))?;
    g.a.cmp(eax, abi::SNP_PARAMS_HKAT_INFO_MAX)?;
    g.a.ja(bad)?;
    g.a.mov(r13d, eax)?;
    g.a.lea(rsi, qword_ptr(rbx + abi::SNP_PARAMS_HKAT_INFO as i32))?;
    g.a.lea(rdi, ptr(d.sec))?;
    g.a.mov(ecx, r13d)?;
    g.a.rep().movsb()?;
    g.a.mov(byte_ptr(rdi), 1)?;
    g.a.mov(rdi, abi::SNP_REPORT_OUT)?;
    g.a.lea(rsi, qword_ptr(rbx + abi::SNP_PARAMS_HKAT_SALT as i32))?;
    g.a.lea(rdx, qword_ptr(rbx + abi::SNP_PARAMS_HKAT_IKM as i32))?;
    g.a.mov(ecx, 32)?;
    g.a.call(x.hmac)?;
    g.a.mov(rdi, abi::SNP_REPORT_OUT + 0x20)?;
    g.a.mov(rsi, abi::SNP_REPORT_OUT)?;
    g.a.lea(rdx, ptr(d.sec))?;
    g.a.lea(rcx, qword_ptr(r13 + 1))?;
    g.a.call(x.hmac)?;
    g.puts("snp-attest: hkdf kat done\n")?;
    g.a.call(f.wipe)?;
    exit3(g, 0)?;
    g.a.set_label(&mut bad)?;
    fail_with(
        g,
        f,
        d,
        abi::SNP_ATTEST_BAD_HKAT_PARAMS,
        "snp-attest: hkdf kat: info length must be at most 0x80\n",
    )
}
