// The instruction filter for the bundled guests' code. Included by `build.rs` (every image is
// checked before it is written) and by `lib.rs` for its tests; no inner attributes here.
//
// Every guest runs its CPL0 code under KVM's instruction emulator on our machines (kvm-pvm), so
// CPL0 code may only use instructions the emulator handles (kvm-on-our-machines.md §5): no
// SSE/AVX registers, BMI, popcnt, lzcnt/tzcnt, `int n`, vmmcall, ... CPL3 code runs natively,
// so a guest may mark one region of its code as CPL3-only with the markers below; there AES-NI,
// PCLMULQDQ and SSE are allowed, but privileged instructions (which would #GP at CPL3) and the
// transitions that do not work on kvm-pvm (`syscall`, `int n`, vmmcall) are not. CPL0 code may
// not branch into the CPL3 region: it is entered only by `iretq`.
//
// Image layout: `[CPL0 code] ["__CPL3__" CPL3 code "__CPL0__" CPL0 code] "__DATA__" data`.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

/// Ends the code of every image; data follows.
pub const DATA_MARKER: &[u8; 8] = b"__DATA__";
/// Starts the (optional) CPL3-only code region.
pub const CPL3_BEGIN: &[u8; 8] = b"__CPL3__";
/// Ends the CPL3-only code region.
pub const CPL3_END: &[u8; 8] = b"__CPL0__";

fn find_once(image: &[u8], marker: &[u8; 8], what: &str) -> Result<Option<usize>, String> {
    let mut hits = image.windows(8).enumerate().filter(|(_, w)| w == marker);
    let first = hits.next().map(|(i, _)| i);
    if hits.next().is_some() {
        return Err(format!("{what} marker appears more than once"));
    }
    Ok(first)
}

fn decode_all(
    bytes: &[u8],
    ip: u64,
    mut check: impl FnMut(&Instruction) -> Result<(), String>,
) -> Result<(), String> {
    let d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
    for ins in d {
        if ins.is_invalid() {
            return Err(format!("undecodable code at {:#x}", ins.ip()));
        }
        check(&ins)?;
    }
    Ok(())
}

const CPL0_BANNED: &[Mnemonic] = &[
    Mnemonic::Int3,
    Mnemonic::Int,
    Mnemonic::Vmmcall,
    Mnemonic::Vmcall,
    Mnemonic::Popcnt,
    Mnemonic::Lzcnt,
    Mnemonic::Tzcnt,
    Mnemonic::Movbe,
    Mnemonic::Rdpid,
    Mnemonic::Rdtscp,
    Mnemonic::Cmpxchg16b,
    Mnemonic::Crc32,
    Mnemonic::Andn,
    Mnemonic::Pdep,
    Mnemonic::Pext,
    Mnemonic::Shlx,
    Mnemonic::Shrx,
    Mnemonic::Sarx,
    Mnemonic::Rorx,
    Mnemonic::Adcx,
    Mnemonic::Adox,
    Mnemonic::Xgetbv,
    Mnemonic::Xsave,
    Mnemonic::Xrstor,
    Mnemonic::Syscall,
];

const CPL3_BANNED: &[Mnemonic] = &[
    Mnemonic::Hlt,
    Mnemonic::Cli,
    Mnemonic::Sti,
    Mnemonic::Lgdt,
    Mnemonic::Lidt,
    Mnemonic::Lldt,
    Mnemonic::Ltr,
    Mnemonic::Invlpg,
    Mnemonic::Invd,
    Mnemonic::Wbinvd,
    Mnemonic::Rdmsr,
    Mnemonic::Wrmsr,
    Mnemonic::Swapgs,
    Mnemonic::Clts,
    Mnemonic::Xsetbv,
    Mnemonic::Syscall,
    Mnemonic::Sysret,
    Mnemonic::Sysenter,
    Mnemonic::Sysexit,
    Mnemonic::Int,
    Mnemonic::Int1,
    Mnemonic::Int3,
    Mnemonic::Into,
    Mnemonic::Vmmcall,
    Mnemonic::Vmcall,
    Mnemonic::Iretq,
];

fn check_cpl0(ins: &Instruction, cpl3: Option<(u64, u64)>) -> Result<(), String> {
    if CPL0_BANNED.contains(&ins.mnemonic()) {
        return Err(format!(
            "{:?} at {:#x} is not emulated at CPL0",
            ins.mnemonic(),
            ins.ip()
        ));
    }
    for i in 0..ins.op_count() {
        match ins.op_kind(i) {
            OpKind::Register => {
                let r = ins.op_register(i);
                if r.is_xmm() || r.is_ymm() || r.is_zmm() {
                    return Err(format!("vector register at {:#x} (CPL0 code)", ins.ip()));
                }
            }
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let t = ins.near_branch_target();
                if let Some((lo, hi)) = cpl3 {
                    if (lo..hi).contains(&t) {
                        return Err(format!(
                            "CPL0 code at {:#x} branches into the CPL3 region ({t:#x})",
                            ins.ip()
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_cpl3(ins: &Instruction) -> Result<(), String> {
    if CPL3_BANNED.contains(&ins.mnemonic()) {
        return Err(format!(
            "{:?} at {:#x} is privileged or broken at CPL3",
            ins.mnemonic(),
            ins.ip()
        ));
    }
    for i in 0..ins.op_count() {
        if ins.op_kind(i) == OpKind::Register {
            let r = ins.op_register(i);
            if r.is_cr() || r.is_dr() || r.is_tr() {
                return Err(format!(
                    "control/debug register access at {:#x} in CPL3 code",
                    ins.ip()
                ));
            }
        }
    }
    Ok(())
}

/// Checks a guest image loaded at `load_addr`: CPL0 code emulator-safe, the CPL3 region (if
/// any) free of privileged instructions and not branched into from CPL0 code.
pub fn check_image(image: &[u8], load_addr: u64) -> Result<(), String> {
    let code_end = find_once(image, DATA_MARKER, "data")?.ok_or("no data marker")?;
    let begin = find_once(&image[..code_end], CPL3_BEGIN, "CPL3 begin")?;
    let end = find_once(&image[..code_end], CPL3_END, "CPL3 end")?;
    let region = match (begin, end) {
        (None, None) => None,
        (Some(b), Some(e)) if b + 8 <= e => Some((b, e)),
        _ => return Err("CPL3 markers missing, unpaired or out of order".into()),
    };
    let ip = |off: usize| load_addr + off as u64;
    match region {
        None => decode_all(&image[..code_end], load_addr, |i| check_cpl0(i, None)),
        Some((b, e)) => {
            let cpl3 = Some((ip(b), ip(e + 8)));
            decode_all(&image[..b], load_addr, |i| check_cpl0(i, cpl3))?;
            decode_all(&image[b + 8..e], ip(b + 8), check_cpl3)?;
            decode_all(&image[e + 8..code_end], ip(e + 8), |i| check_cpl0(i, cpl3))
        }
    }
}
