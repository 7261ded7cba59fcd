//! Assembles the bundled guests with iced-x86 `code_asm` and writes `guests.rs` into OUT_DIR.
//!
//! Every guest runs its CPL0 code under KVM's instruction emulator on our machines, so the
//! assembled code is decoded again at the end and rejected if it contains an instruction the
//! emulator does not handle (SSE/AVX registers, BMI, popcnt, lzcnt/tzcnt, int n, vmmcall, ...).
//! A guest may mark one CPL3-only region (`src/filter.rs`), where SSE, AES-NI and PCLMULQDQ are
//! allowed and privileged instructions are not.

use iced_x86::code_asm::*;
use std::fmt::Write as _;

#[allow(dead_code)]
mod abi {
    include!("src/abi.rs");
}

mod filter {
    include!("src/filter.rs");
}

#[path = "build/snp_attest.rs"]
mod snp_attest;

#[path = "build/x25519.rs"]
mod x25519;

type R<T> = Result<T, IcedError>;
/// A guest: name, description, assembler.
type GuestSpec = (&'static str, &'static str, fn() -> R<Vec<u8>>);

/// Assembler plus the shared helper routines and a string pool.
struct G {
    a: CodeAssembler,
    strings: Vec<(CodeLabel, Vec<u8>)>,
    print_str: CodeLabel,
    print_hex: CodeLabel,
    hexdigits: CodeLabel,
}

impl G {
    fn new() -> R<Self> {
        let mut a = CodeAssembler::new(64)?;
        let print_str = a.create_label();
        let print_hex = a.create_label();
        let hexdigits = a.create_label();
        Ok(G {
            a,
            strings: Vec::new(),
            print_str,
            print_hex,
            hexdigits,
        })
    }

    /// Prints a constant string (clobbers rax, rcx, rdx, rsi).
    fn puts(&mut self, s: &str) -> R<()> {
        let l = self.a.create_label();
        self.strings.push((l, s.as_bytes().to_vec()));
        self.a.lea(rsi, ptr(l))?;
        self.a.mov(ecx, s.len() as u32)?;
        self.a.call(self.print_str)
    }

    /// Prints the low `digits` hex digits of rax (clobbers nothing but flags).
    fn hex(&mut self, digits: u32) -> R<()> {
        self.a.mov(ecx, digits)?;
        self.a.call(self.print_hex)
    }

    /// Writes `code` to the exit port and parks.
    fn exit(&mut self, code: u8) -> R<()> {
        self.a.mov(al, code as u32)?;
        self.a.mov(dx, abi::EXIT_PORT as u32)?;
        self.a.out(dx, al)?;
        let mut park = self.a.create_label();
        self.a.set_label(&mut park)?;
        self.a.cli()?;
        self.a.hlt()?;
        self.a.jmp(park)
    }

    /// Standard entry: vCPUs other than 0 check in at AP_ONLINE and halt forever.
    /// Falls through to the BSP code.
    fn prologue(&mut self) -> R<()> {
        let mut bsp = self.a.create_label();
        self.a.test(edi, edi)?;
        self.a.jz(bsp)?;
        self.a.mov(rax, abi::AP_ONLINE)?;
        self.a.lock().inc(dword_ptr(rax))?;
        let mut park = self.a.create_label();
        self.a.set_label(&mut park)?;
        self.a.cli()?;
        self.a.hlt()?;
        self.a.jmp(park)?;
        self.a.set_label(&mut bsp)?;
        self.a.nop()
    }

    /// Emits helper routines, the data marker and the string pool; returns the image.
    fn finish(self) -> R<Vec<u8>> {
        self.finish_with(|_| Ok(()))
    }

    /// Like [`G::finish`], with extra data emitted after the data marker.
    fn finish_with(mut self, data: impl FnOnce(&mut CodeAssembler) -> R<()>) -> R<Vec<u8>> {
        let a = &mut self.a;
        // print_str: rsi = ptr, rcx = len.
        a.set_label(&mut self.print_str)?;
        a.mov(dx, abi::COM1 as u32)?;
        let mut l = a.create_label();
        let mut done = a.create_label();
        a.set_label(&mut l)?;
        a.test(rcx, rcx)?;
        a.jz(done)?;
        a.lodsb()?;
        a.out(dx, al)?;
        a.dec(rcx)?;
        a.jmp(l)?;
        a.set_label(&mut done)?;
        a.ret()?;

        // print_hex: rax = value, ecx = number of digits (1..=16). Preserves registers.
        a.set_label(&mut self.print_hex)?;
        a.push(rax)?;
        a.push(rbx)?;
        a.push(rcx)?;
        a.push(rdx)?;
        a.push(rsi)?;
        a.push(rdi)?;
        a.mov(rbx, rax)?;
        a.mov(esi, ecx)?;
        a.lea(rdi, ptr(self.hexdigits))?;
        let mut hl = a.create_label();
        a.set_label(&mut hl)?;
        a.dec(esi)?;
        a.lea(ecx, dword_ptr(rsi * 4))?;
        a.mov(rax, rbx)?;
        a.shr(rax, cl)?;
        a.and(eax, 0xf)?;
        a.mov(al, byte_ptr(rdi + rax))?;
        a.mov(dx, abi::COM1 as u32)?;
        a.out(dx, al)?;
        a.test(esi, esi)?;
        a.jnz(hl)?;
        a.pop(rdi)?;
        a.pop(rsi)?;
        a.pop(rdx)?;
        a.pop(rcx)?;
        a.pop(rbx)?;
        a.pop(rax)?;
        a.ret()?;

        a.db(filter::DATA_MARKER)?;
        data(a)?;
        a.set_label(&mut self.hexdigits)?;
        a.db(b"0123456789abcdef")?;
        for (mut lab, bytes) in std::mem::take(&mut self.strings) {
            a.set_label(&mut lab)?;
            a.db(&bytes)?;
        }
        a.assemble(abi::LOAD_ADDR)
    }
}

fn hello() -> R<Vec<u8>> {
    let mut g = G::new()?;
    g.prologue()?;
    g.a.mov(r12, rsi)?; // vCPU count
    g.puts("hello from the sevm bundled guest\n")?;
    let mut single = g.a.create_label();
    g.a.cmp(r12, 1)?;
    g.a.jbe(single)?;
    // Wait (bounded) until every AP has checked in.
    g.a.mov(r13, 200_000u64)?;
    g.a.mov(rbx, abi::AP_ONLINE)?;
    let mut wait = g.a.create_label();
    let mut waited = g.a.create_label();
    g.a.set_label(&mut wait)?;
    g.a.mov(eax, dword_ptr(rbx))?;
    g.a.inc(eax)?;
    g.a.cmp(rax, r12)?;
    g.a.jae(waited)?;
    g.a.dec(r13)?;
    g.a.jnz(wait)?;
    g.a.set_label(&mut waited)?;
    g.a.nop()?;
    g.puts("cpus online: ")?;
    g.a.mov(eax, dword_ptr(rbx))?;
    g.a.inc(eax)?;
    g.hex(2)?;
    g.puts("\n")?;
    g.a.set_label(&mut single)?;
    // Leave through CPL3: iretq to the user code segment (0x23/0x2b of the VMM's GDT) and
    // write the exit port from ring 3, which the TSS I/O bitmap allows. This checks the
    // GDT, TSS and user-accessible page tables the VMM builds.
    let mut user = g.a.create_label();
    g.a.mov(rax, rsp)?;
    g.a.push(0x2b)?;
    g.a.push(rax)?;
    g.a.push(0x2)?;
    g.a.push(0x23)?;
    g.a.lea(rax, ptr(user))?;
    g.a.push(rax)?;
    g.a.iretq()?;
    g.a.set_label(&mut user)?;
    g.exit(0)?;
    g.finish()
}

fn cpuid_line(g: &mut G, leaf: u32, name: &str) -> R<()> {
    g.a.mov(eax, leaf)?;
    g.a.xor(ecx, ecx)?;
    g.a.cpuid()?;
    g.a.mov(r8, rax)?;
    g.a.mov(r9, rbx)?;
    g.a.mov(r10, rcx)?;
    g.a.mov(r11, rdx)?;
    g.puts(&format!("cpuid {name} eax="))?;
    g.a.mov(rax, r8)?;
    g.hex(8)?;
    g.puts(" ebx=")?;
    g.a.mov(rax, r9)?;
    g.hex(8)?;
    g.puts(" ecx=")?;
    g.a.mov(rax, r10)?;
    g.hex(8)?;
    g.puts(" edx=")?;
    g.a.mov(rax, r11)?;
    g.hex(8)?;
    g.puts("\n")
}

fn cpuid() -> R<Vec<u8>> {
    let mut g = G::new()?;
    g.prologue()?;
    // Only read leaves KVM reports as present.
    g.a.mov(eax, 0x8000_0000u32)?;
    g.a.xor(ecx, ecx)?;
    g.a.cpuid()?;
    g.a.mov(r14d, eax)?;
    g.puts("cpuid 80000000 max=")?;
    g.a.mov(eax, r14d)?;
    g.hex(8)?;
    g.puts("\n")?;
    let mut no8 = g.a.create_label();
    g.a.cmp(r14d, 0x8000_0008u32)?;
    g.a.jb(no8)?;
    cpuid_line(&mut g, 0x8000_0008, "80000008")?;
    g.a.set_label(&mut no8)?;
    g.a.nop()?;
    let mut no_sev = g.a.create_label();
    let mut end = g.a.create_label();
    g.a.cmp(r14d, 0x8000_001fu32)?;
    g.a.jb(no_sev)?;
    cpuid_line(&mut g, 0x8000_001f, "8000001f")?;
    g.a.test(r8d, 2)?; // EAX bit 1: SEV
    g.a.jz(no_sev)?;
    g.a.mov(ecx, 0xc001_0131u32)?;
    g.a.rdmsr()?;
    g.a.shl(rdx, 32)?;
    g.a.mov(eax, eax)?;
    g.a.or(rax, rdx)?;
    g.a.mov(r15, rax)?;
    g.puts("msr c0010131=")?;
    g.a.mov(rax, r15)?;
    g.hex(16)?;
    g.puts("\n")?;
    g.a.jmp(end)?;
    g.a.set_label(&mut no_sev)?;
    g.puts("msr c0010131 not read: no SEV in cpuid 8000001f\n")?;
    g.a.set_label(&mut end)?;
    g.exit(0)?;
    g.finish()
}

fn reset() -> R<Vec<u8>> {
    let mut g = G::new()?;
    g.prologue()?;
    g.a.mov(rbx, abi::RESET_COUNTER)?;
    g.a.inc(dword_ptr(rbx))?;
    g.puts("reset guest: boot ")?;
    g.a.mov(eax, dword_ptr(rbx))?;
    g.hex(2)?;
    g.puts("\n")?;
    let mut done = g.a.create_label();
    g.a.cmp(dword_ptr(rbx), abi::RESET_TIMES)?;
    g.a.ja(done)?;
    g.a.mov(al, 0xfeu32)?;
    g.a.mov(dx, abi::I8042_CMD as u32)?;
    g.a.out(dx, al)?;
    let mut park = g.a.create_label();
    g.a.set_label(&mut park)?;
    g.a.jmp(park)?;
    g.a.set_label(&mut done)?;
    g.puts("reset guest: done\n")?;
    g.exit(0)?;
    g.finish()
}

/// Runs until stopped from outside: prints one line, then every vCPU (APs too) increments
/// its own u64 at `TICKS + 8 * index` in a loop, so a host can see each vCPU make progress.
fn ticker() -> R<Vec<u8>> {
    let mut g = G::new()?;
    let mut count = g.a.create_label();
    g.a.mov(r12, rdi)?; // vCPU index
    g.a.test(r12, r12)?;
    g.a.jnz(count)?;
    g.puts("ticker: counting\n")?;
    g.a.set_label(&mut count)?;
    g.a.mov(rbx, abi::TICKS)?;
    g.a.lea(rbx, qword_ptr(rbx + r12 * 8))?;
    let mut lp = g.a.create_label();
    g.a.set_label(&mut lp)?;
    g.a.inc(qword_ptr(rbx))?;
    g.a.jmp(lp)?;
    g.finish()
}

/// Runs until stopped from outside without using the CPU: the BSP prints one line, then
/// every vCPU halts with interrupts off (KVM's in-kernel LAPIC keeps a halted vCPU in the
/// kernel; sevm's stop kicks it out). For an SEV-SNP VM whose guest requests come from the
/// host's guest channel (`sevm run --guest-channel`), the VM only has to stay up.
fn idle() -> R<Vec<u8>> {
    let mut g = G::new()?;
    g.prologue()?;
    g.puts("idle: waiting\n")?;
    let mut park = g.a.create_label();
    g.a.set_label(&mut park)?;
    g.a.cli()?;
    g.a.hlt()?;
    g.a.jmp(park)?;
    g.finish()
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Labels of the SHA-256 routine and its buffers.
struct Sha {
    sha256: CodeLabel,
    compress: CodeLabel,
    state: CodeLabel,
    w: CodeLabel,
    k: CodeLabel,
    h0: CodeLabel,
    pad: CodeLabel,
    len: CodeLabel,
}

/// SHA-256 with only integer instructions the KVM emulator handles (no SSE/BMI/rorx).
/// `sha256`: rsi = data, rcx = length; the digest is left in `state` as 8 native u32 words.
fn emit_sha(a: &mut CodeAssembler, s: &mut Sha) -> R<()> {
    // compress: rsi = 64-byte block. Preserves rbx, rcx, rsi, rbp.
    a.set_label(&mut s.compress)?;
    a.push(rbx)?;
    a.push(rcx)?;
    a.push(rsi)?;
    a.push(rbp)?;
    a.lea(rdi, ptr(s.w))?;
    a.xor(ecx, ecx)?;
    let mut l1 = a.create_label();
    a.set_label(&mut l1)?;
    a.mov(eax, dword_ptr(rsi + rcx * 4))?;
    a.bswap(eax)?;
    a.mov(dword_ptr(rdi + rcx * 4), eax)?;
    a.inc(ecx)?;
    a.cmp(ecx, 16)?;
    a.jb(l1)?;
    let mut l2 = a.create_label();
    a.set_label(&mut l2)?;
    a.mov(eax, dword_ptr(rdi + rcx * 4 - 60))?;
    a.mov(ebx, eax)?;
    a.ror(ebx, 7)?;
    a.mov(edx, eax)?;
    a.ror(edx, 18)?;
    a.xor(ebx, edx)?;
    a.shr(eax, 3)?;
    a.xor(ebx, eax)?;
    a.mov(eax, dword_ptr(rdi + rcx * 4 - 8))?;
    a.mov(edx, eax)?;
    a.ror(edx, 17)?;
    a.mov(esi, eax)?;
    a.ror(esi, 19)?;
    a.xor(edx, esi)?;
    a.shr(eax, 10)?;
    a.xor(edx, eax)?;
    a.add(ebx, edx)?;
    a.add(ebx, dword_ptr(rdi + rcx * 4 - 64))?;
    a.add(ebx, dword_ptr(rdi + rcx * 4 - 28))?;
    a.mov(dword_ptr(rdi + rcx * 4), ebx)?;
    a.inc(ecx)?;
    a.cmp(ecx, 64)?;
    a.jb(l2)?;
    let regs = [r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d];
    a.lea(rbp, ptr(s.state))?;
    for (i, r) in regs.iter().enumerate() {
        a.mov(*r, dword_ptr(rbp + (i as i32) * 4))?;
    }
    a.lea(rsi, ptr(s.k))?;
    a.xor(ecx, ecx)?;
    let mut l3 = a.create_label();
    a.set_label(&mut l3)?;
    // T1 = h + S1(e) + ch(e,f,g) + K[i] + W[i]
    a.mov(eax, r12d)?;
    a.ror(eax, 6)?;
    a.mov(ebx, r12d)?;
    a.ror(ebx, 11)?;
    a.xor(eax, ebx)?;
    a.mov(ebx, r12d)?;
    a.ror(ebx, 25)?;
    a.xor(eax, ebx)?;
    a.mov(ebx, r12d)?;
    a.and(ebx, r13d)?;
    a.mov(edx, r12d)?;
    a.not(edx)?;
    a.and(edx, r14d)?;
    a.xor(ebx, edx)?;
    a.add(eax, ebx)?;
    a.add(eax, r15d)?;
    a.add(eax, dword_ptr(rsi + rcx * 4))?;
    a.add(eax, dword_ptr(rdi + rcx * 4))?;
    // T2 = S0(a) + maj(a,b,c)
    a.mov(ebx, r8d)?;
    a.ror(ebx, 2)?;
    a.mov(edx, r8d)?;
    a.ror(edx, 13)?;
    a.xor(ebx, edx)?;
    a.mov(edx, r8d)?;
    a.ror(edx, 22)?;
    a.xor(ebx, edx)?;
    a.mov(edx, r8d)?;
    a.and(edx, r9d)?;
    a.mov(ebp, r8d)?;
    a.and(ebp, r10d)?;
    a.xor(edx, ebp)?;
    a.mov(ebp, r9d)?;
    a.and(ebp, r10d)?;
    a.xor(edx, ebp)?;
    a.add(ebx, edx)?;
    a.mov(r15d, r14d)?;
    a.mov(r14d, r13d)?;
    a.mov(r13d, r12d)?;
    a.mov(r12d, r11d)?;
    a.add(r12d, eax)?;
    a.mov(r11d, r10d)?;
    a.mov(r10d, r9d)?;
    a.mov(r9d, r8d)?;
    a.mov(r8d, eax)?;
    a.add(r8d, ebx)?;
    a.inc(ecx)?;
    a.cmp(ecx, 64)?;
    a.jb(l3)?;
    a.lea(rbp, ptr(s.state))?;
    for (i, r) in regs.iter().enumerate() {
        a.add(dword_ptr(rbp + (i as i32) * 4), *r)?;
    }
    a.pop(rbp)?;
    a.pop(rsi)?;
    a.pop(rcx)?;
    a.pop(rbx)?;
    a.ret()?;

    // sha256: rsi = data, rcx = len.
    a.set_label(&mut s.sha256)?;
    a.mov(qword_ptr(s.len), rcx)?;
    a.lea(rdi, ptr(s.state))?;
    a.lea(rdx, ptr(s.h0))?;
    for i in 0..8 {
        a.mov(eax, dword_ptr(rdx + i * 4))?;
        a.mov(dword_ptr(rdi + i * 4), eax)?;
    }
    let mut full = a.create_label();
    let mut tail = a.create_label();
    a.set_label(&mut full)?;
    a.cmp(rcx, 64)?;
    a.jb(tail)?;
    a.call(s.compress)?;
    a.add(rsi, 64)?;
    a.sub(rcx, 64)?;
    a.jmp(full)?;
    a.set_label(&mut tail)?;
    a.mov(rbx, rcx)?; // remaining bytes
    a.lea(rdi, ptr(s.pad))?;
    a.xor(eax, eax)?;
    a.mov(ecx, 128)?;
    a.rep().stosb()?;
    a.lea(rdi, ptr(s.pad))?;
    a.mov(rcx, rbx)?;
    a.rep().movsb()?;
    a.lea(rdi, ptr(s.pad))?;
    a.mov(byte_ptr(rdi + rbx), 0x80)?;
    let mut one = a.create_label();
    a.mov(edx, 64)?;
    a.cmp(rbx, 56)?;
    a.jb(one)?;
    a.mov(edx, 128)?;
    a.set_label(&mut one)?;
    a.mov(rbx, rdx)?; // padded length: 64 or 128
    a.mov(rax, qword_ptr(s.len))?;
    a.shl(rax, 3)?;
    a.bswap(rax)?;
    a.mov(qword_ptr(rdi + rbx - 8), rax)?;
    a.lea(rsi, ptr(s.pad))?;
    a.call(s.compress)?;
    let mut done = a.create_label();
    a.cmp(rbx, 128)?;
    a.jne(done)?;
    a.lea(rsi, ptr(s.pad))?;
    a.add(rsi, 64)?;
    a.call(s.compress)?;
    a.set_label(&mut done)?;
    a.ret()
}

fn emit_sha_data(a: &mut CodeAssembler, s: &mut Sha) -> R<()> {
    a.set_label(&mut s.k)?;
    a.dd(&K)?;
    a.set_label(&mut s.h0)?;
    a.dd(&H0)?;
    a.set_label(&mut s.state)?;
    a.dd(&[0u32; 8])?;
    a.set_label(&mut s.w)?;
    a.dd(&[0u32; 64])?;
    a.set_label(&mut s.pad)?;
    a.db(&[0u8; 128])?;
    a.set_label(&mut s.len)?;
    a.dq(&[0u64])
}

/// GUID of the EFI secret table header, in bytes_le form.
const SECRET_TABLE_GUID: [u8; 16] = [
    0x42, 0xf5, 0x74, 0x1e, 0xdd, 0x71, 0x66, 0x4d, 0x96, 0x3e, 0xef, 0x42, 0x87, 0xff, 0x17, 0x3b,
];

fn secret_reader() -> R<Vec<u8>> {
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
    let mut guid = g.a.create_label();
    let mut tbl_len = g.a.create_label();
    let mut off = g.a.create_label();
    let mut ent = g.a.create_label();
    let mut ent_len = g.a.create_label();
    let mut count = g.a.create_label();
    let mut no_secret = g.a.create_label();
    let mut bad = g.a.create_label();
    let mut done = g.a.create_label();
    let mut lp = g.a.create_label();

    g.prologue()?;
    // The secret area is read through the identity mapping, which carries the C-bit when
    // the VMM was asked to set one.
    g.a.mov(rsi, abi::SECRET_AREA)?;
    g.a.lea(rdi, ptr(guid))?;
    g.a.mov(ecx, 16)?;
    g.a.repe().cmpsb()?;
    g.a.jne(no_secret)?;
    g.a.mov(rax, abi::SECRET_AREA)?;
    g.a.mov(eax, dword_ptr(rax + 16))?;
    g.a.cmp(rax, 20)?;
    g.a.jb(bad)?;
    g.a.cmp(rax, abi::SECRET_AREA_SIZE as i32)?;
    g.a.ja(bad)?;
    g.a.mov(qword_ptr(tbl_len), rax)?;
    g.a.mov(qword_ptr(off), 20)?;
    g.a.mov(qword_ptr(count), 0)?;

    g.a.set_label(&mut lp)?;
    g.a.mov(rbx, qword_ptr(off))?;
    g.a.lea(rax, qword_ptr(rbx + 20))?;
    g.a.cmp(rax, qword_ptr(tbl_len))?;
    g.a.ja(done)?;
    g.a.mov(rsi, abi::SECRET_AREA)?;
    g.a.add(rsi, rbx)?;
    g.a.mov(qword_ptr(ent), rsi)?;
    g.a.mov(eax, dword_ptr(rsi + 16))?;
    g.a.cmp(rax, 20)?;
    g.a.jb(done)?; // zero padding ends the table
    g.a.lea(rdx, qword_ptr(rbx + rax))?;
    g.a.cmp(rdx, qword_ptr(tbl_len))?;
    g.a.ja(bad)?;
    g.a.mov(qword_ptr(ent_len), rax)?;
    g.a.inc(qword_ptr(count))?;
    g.puts("secret entry ")?;
    // GUID text from bytes_le.
    g.a.mov(rbx, qword_ptr(ent))?;
    g.a.mov(eax, dword_ptr(rbx))?;
    g.hex(8)?;
    g.puts("-")?;
    g.a.movzx(eax, word_ptr(rbx + 4))?;
    g.hex(4)?;
    g.puts("-")?;
    g.a.movzx(eax, word_ptr(rbx + 6))?;
    g.hex(4)?;
    g.puts("-")?;
    for i in 8..16 {
        if i == 10 {
            g.puts("-")?;
        }
        g.a.movzx(eax, byte_ptr(rbx + i))?;
        g.hex(2)?;
    }
    g.puts(" len=")?;
    g.a.mov(rax, qword_ptr(ent_len))?;
    g.a.sub(rax, 20)?;
    g.hex(8)?;
    g.puts(" sha256=")?;
    g.a.mov(rsi, qword_ptr(ent))?;
    g.a.add(rsi, 20)?;
    g.a.mov(rcx, qword_ptr(ent_len))?;
    g.a.sub(rcx, 20)?;
    g.a.call(s.sha256)?;
    g.a.lea(rbx, ptr(s.state))?;
    for i in 0..8 {
        g.a.mov(eax, dword_ptr(rbx + i * 4))?;
        g.hex(8)?;
    }
    g.puts("\n")?;
    g.a.mov(rax, qword_ptr(ent_len))?;
    g.a.add(qword_ptr(off), rax)?;
    g.a.jmp(lp)?;

    g.a.set_label(&mut done)?;
    g.puts("secret entries: ")?;
    g.a.mov(rax, qword_ptr(count))?;
    g.hex(2)?;
    g.puts("\n")?;
    g.exit(0)?;
    g.a.set_label(&mut no_secret)?;
    g.puts("no secret\n")?;
    g.exit(0)?;
    g.a.set_label(&mut bad)?;
    g.puts("bad secret table\n")?;
    g.exit(1)?;

    emit_sha(&mut g.a, &mut s)?;
    g.finish_with(|a| {
        emit_sha_data(a, &mut s)?;
        a.set_label(&mut guid)?;
        a.db(&SECRET_TABLE_GUID)?;
        for l in [&mut tbl_len, &mut off, &mut ent, &mut ent_len, &mut count] {
            a.set_label(l)?;
            a.dq(&[0u64])?;
        }
        Ok(())
    })
}

/// Rejects instructions KVM's emulator cannot run at CPL0 (see kvm-on-our-machines.md §5) and
/// privileged ones in a CPL3 region (`src/filter.rs`).
fn check_emulator_safe(name: &str, image: &[u8]) {
    if let Err(e) = filter::check_image(image, abi::LOAD_ADDR) {
        panic!("guest {name}: {e}");
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/abi.rs");
    println!("cargo:rerun-if-changed=src/filter.rs");
    println!("cargo:rerun-if-changed=build/snp_attest.rs");
    println!("cargo:rerun-if-changed=build/x25519.rs");
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let guests: [GuestSpec; 7] = [
        ("hello", "prints a line on COM1 and exits 0", hello),
        (
            "cpuid",
            "prints CPUID 0x80000008/0x8000001F (at CPL0) and MSR 0xC0010131 when SEV is advertised",
            cpuid,
        ),
        ("reset", "resets itself through port 0x64 a fixed number of times, then exits 0", reset),
        (
            "secret-reader",
            "prints GUID, length and SHA-256 of each EFI secret table entry, or `no secret`",
            secret_reader,
        ),
        (
            "ticker",
            "never exits: every vCPU counts up its own u64 at 0x6100 + 8 * index (for pause/resume tests)",
            ticker,
        ),
        (
            "idle",
            "prints a line, then every vCPU halts until the VM is stopped from outside (an SNP VM for `--guest-channel`)",
            idle,
        ),
        (
            "snp-attest",
            "SEV-SNP guest requests with AES-256-GCM at CPL3: MSG_REPORT_REQ, MSG_KEY_REQ and an extended request through the doorbell; prints the report and the certificate table",
            snp_attest::snp_attest,
        ),
    ];
    let mut src = String::from("/// All bundled guests.\npub static GUESTS: &[Guest] = &[\n");
    for (name, desc, f) in guests {
        let img = f().unwrap_or_else(|e| panic!("assembling guest {name}: {e}"));
        check_emulator_safe(name, &img);
        let file = format!("{out}/{name}.bin");
        std::fs::write(&file, &img).expect("write guest image");
        writeln!(
            src,
            "    Guest {{ name: {name:?}, description: {desc:?}, bytes: include_bytes!({file:?}), load_addr: {:#x}, entry: {:#x} }},",
            abi::LOAD_ADDR,
            abi::LOAD_ADDR
        )
        .expect("fmt");
    }
    src.push_str("];\n");
    std::fs::write(format!("{out}/guests.rs"), src).expect("write guests.rs");
}
