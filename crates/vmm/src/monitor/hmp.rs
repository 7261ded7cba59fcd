//! The subset of QEMU's human monitor reachable through `human-monitor-command`.
//!
//! Output follows QEMU byte for byte where QEMU defines it (`info status`, `info kvm`,
//! `info sev`, `x`/`xp` dumps), with lines ending in `\r\n` as QEMU's monitor emits them.
//! HMP-level mistakes (bad format, unknown command) are output text, not QMP errors, as in QEMU.

use super::{MonitorBackend, MonitorError, RunState};
use std::fmt::Write as _;

/// Largest `x`/`xp` dump in bytes.
const MAX_DUMP: u64 = 1 << 20;

/// Per-session HMP state: QEMU remembers the last `x`/`xp` format and size.
#[derive(Debug, Clone)]
pub struct HmpState {
    fmt: u8,
    size: u32,
}

impl Default for HmpState {
    fn default() -> Self {
        Self { fmt: b'x', size: 4 }
    }
}

/// Run one HMP command line for `cpu`; returns the monitor output.
pub fn run(
    b: &dyn MonitorBackend,
    st: &mut HmpState,
    cpu: u32,
    line: &str,
) -> Result<String, MonitorError> {
    let line = line.trim();
    let (cmd, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim_start()),
        None => (line, ""),
    };
    let out = match cmd {
        "" => String::new(),
        "info" => info(b, cpu, rest),
        "x" => dump(b, st, cpu, rest, false),
        "xp" => dump(b, st, cpu, rest, true),
        "stop" => hmp_result(b.stop()),
        "cont" | "c" => hmp_result(b.cont()),
        "system_reset" => hmp_result(b.system_reset()),
        "system_powerdown" => hmp_result(b.system_powerdown()),
        _ => format!("unknown command: '{cmd}'\n"),
    };
    Ok(crlf(&out))
}

fn hmp_result(r: Result<(), MonitorError>) -> String {
    match r {
        Ok(()) => String::new(),
        Err(e) => format!("Error: {}\n", e.desc()),
    }
}

fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

fn info(b: &dyn MonitorBackend, cpu: u32, what: &str) -> String {
    match what.split_whitespace().next().unwrap_or("") {
        "status" => {
            let s = b.status();
            let mut out = format!(
                "VM status: {}",
                if s == RunState::Running {
                    "running"
                } else {
                    "paused"
                }
            );
            if s != RunState::Running && s != RunState::Paused {
                let _ = write!(out, " ({})", s.as_str());
            }
            out.push('\n');
            out
        }
        "kvm" => format!(
            "kvm support: {}\n",
            if b.query_kvm().enabled {
                "enabled"
            } else {
                "disabled"
            }
        ),
        "sev" => match b.sev_info() {
            Some(i) if i.enabled && i.snp_policy.is_some() => {
                let p = i.snp_policy.unwrap_or(0);
                let onoff = |set: bool| if set { "on" } else { "off" };
                // QEMU's `hmp_info_sev` lines for an SNP guest (SevGuestType_str: sev-snp).
                format!(
                    "SEV type: sev-snp\nstate: {}\nbuild: {}\napi version: {}.{}\ndebug: {}\nSMT allowed: {}\n",
                    i.state.as_str(),
                    i.build_id,
                    i.api_major,
                    i.api_minor,
                    onoff(p & (1 << 19) != 0),
                    onoff(p & (1 << 16) != 0)
                )
            }
            Some(i) if i.enabled => {
                let p = sev_proto::policy::GuestPolicy(i.policy);
                let onoff = |forbidden: bool| if forbidden { "off" } else { "on" };
                format!(
                    "SEV type: SEV\nstate: {}\nbuild: {}\napi version: {}.{}\nhandle: {}\ndebug: {}\nkey-sharing: {}\n",
                    i.state.as_str(),
                    i.build_id,
                    i.api_major,
                    i.api_minor,
                    i.handle,
                    onoff(p.nodbg()),
                    onoff(p.noks())
                )
            }
            _ => "SEV is not enabled\n".into(),
        },
        "registers" => match b.sev_info() {
            Some(i) if i.enabled && super::registers_hidden(i.policy) => {
                format!("Error: {}\n", super::vmsa_refusal(cpu, i.policy).desc())
            }
            _ => match b.registers(cpu) {
                Ok(s) => s,
                Err(e) => format!("Error: {}\n", e.desc()),
            },
        },
        "version" => format!("sevm {}\n", env!("CARGO_PKG_VERSION")),
        "" => "info status|kvm|sev|registers|version\n".into(),
        other => format!("unknown command: 'info {other}'\n"),
    }
}

/// Why an address expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AddrError {
    /// Not a number / sum of numbers (QEMU's wording).
    InvalidChar,
    /// The value is below zero (e.g. `-1`, `0x10-0x20`).
    Negative,
    /// A number or the result does not fit in 64 bits.
    TooLarge,
}

/// Parse an address: decimal, 0x-hex or 0-octal terms joined by `+`/`-` (a leading `-` is a
/// unary minus). The value must lie in 0..=u64::MAX: nothing wraps.
fn parse_addr(s: &str) -> Result<u64, AddrError> {
    let s = s.trim();
    let term = |t: &str| -> Result<i128, AddrError> {
        let t = t.trim();
        let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))
        {
            (h, 16)
        } else if t.len() > 1 && t.starts_with('0') {
            (&t[1..], 8)
        } else {
            (t, 10)
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return Err(AddrError::InvalidChar);
        }
        u64::from_str_radix(digits, radix)
            .map(i128::from)
            .map_err(|_| AddrError::TooLarge)
    };
    let mut total: i128 = 0;
    let mut neg = false;
    let mut start = 0;
    let mut first = true;
    for (i, ch) in s.char_indices().chain(std::iter::once((s.len(), '+'))) {
        if ch != '+' && ch != '-' {
            continue;
        }
        let t = &s[start..i];
        if first && ch == '-' && t.trim().is_empty() {
            // Unary minus on the first term.
        } else {
            let v = term(t)?;
            total = if neg { total - v } else { total + v };
            if total > i128::from(u64::MAX) {
                return Err(AddrError::TooLarge);
            }
        }
        first = false;
        neg = ch == '-';
        start = i + ch.len_utf8();
    }
    u64::try_from(total).map_err(|_| AddrError::Negative)
}

/// `x /FMT ADDR` (virtual, `physical` false) and `xp /FMT ADDR` (physical).
fn dump(b: &dyn MonitorBackend, st: &mut HmpState, cpu: u32, args: &str, physical: bool) -> String {
    let name = if physical { "xp" } else { "x" };
    let (mut count, mut fmt, mut size): (u64, Option<u8>, Option<u32>) = (1, None, None);
    let mut rest = args;
    if let Some(f) = args.strip_prefix('/') {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let spec = &f.as_bytes()[..end];
        rest = &f[end..];
        let digits = spec.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            match std::str::from_utf8(&spec[..digits])
                .ok()
                .and_then(|d| d.parse().ok())
            {
                Some(c) => count = c,
                None => return format!("{name}: count too large\n"),
            }
        }
        for &c in &spec[digits..] {
            match c {
                b'o' | b'd' | b'u' | b'x' | b'i' | b'c' => fmt = Some(c),
                b'b' => size = Some(1),
                b'h' => size = Some(2),
                b'w' => size = Some(4),
                b'g' | b'L' => size = Some(8),
                other => return format!("invalid char in format: '{}'\n", other as char),
            }
        }
    }
    let fmt = fmt.unwrap_or(st.fmt);
    if fmt == b'i' {
        return format!("{name}: format 'i' (disassembly) is not supported\n");
    }
    let size = size.unwrap_or(st.size);
    st.fmt = fmt;
    st.size = size;
    if rest.trim().is_empty() {
        return format!("{name}: address expected\n");
    }
    let addr = match parse_addr(rest) {
        Ok(a) => a,
        Err(AddrError::InvalidChar) => return "invalid char in expression\n".into(),
        Err(AddrError::Negative) => {
            return format!(
                "{name}: address '{}' is negative (addresses are 0 to 0xffffffffffffffff)\n",
                rest.trim()
            )
        }
        Err(AddrError::TooLarge) => {
            return format!(
                "{name}: address '{}' is out of range (addresses are 0 to 0xffffffffffffffff)\n",
                rest.trim()
            )
        }
    };
    let len = match count.checked_mul(u64::from(size)) {
        Some(l) if l <= MAX_DUMP => l,
        _ => return format!("{name}: dump larger than {MAX_DUMP} bytes\n"),
    };
    format_dump(addr, len, size, fmt, |a, l| {
        if physical {
            b.read_guest_phys(a, l)
        } else {
            b.read_guest_virt(cpu, a, l)
        }
    })
}

/// QEMU's `memory_dump` layout over `read`.
fn format_dump(
    mut addr: u64,
    mut len: u64,
    size: u32,
    fmt: u8,
    read: impl Fn(u64, usize) -> Result<Vec<u8>, MonitorError>,
) -> String {
    let mut wsize = size as usize;
    let line_size: u64 = if wsize == 1 { 8 } else { 16 };
    let digits = match fmt {
        b'o' => (wsize * 8).div_ceil(3),
        b'u' | b'd' => (wsize * 8 * 10).div_ceil(33),
        b'c' => {
            wsize = 1;
            0
        }
        _ => wsize * 8 / 4,
    };
    let mut out = String::new();
    while len > 0 {
        let _ = write!(out, "{addr:016x}:");
        let l = len.min(line_size);
        let buf = match read(addr, l as usize) {
            Ok(v) if v.len() == l as usize => v,
            Ok(_) => {
                out.push_str(" Cannot access memory\n");
                break;
            }
            Err(e) => {
                let _ = writeln!(out, " Cannot access memory ({})", e.desc());
                break;
            }
        };
        for w in buf.chunks(wsize) {
            let mut raw = [0u8; 8];
            raw[..w.len()].copy_from_slice(w);
            let v = u64::from_le_bytes(raw);
            out.push(' ');
            match fmt {
                b'o' => {
                    let s = if v == 0 {
                        "0".to_string()
                    } else {
                        format!("0{v:o}")
                    };
                    let _ = write!(out, "{s:>digits$}");
                }
                b'u' => {
                    let _ = write!(out, "{v:>digits$}");
                }
                b'd' => {
                    let sv: i64 = match wsize {
                        1 => v as u8 as i8 as i64,
                        2 => v as u16 as i16 as i64,
                        4 => v as u32 as i32 as i64,
                        _ => v as i64,
                    };
                    let _ = write!(out, "{sv:>digits$}");
                }
                b'c' => printc(&mut out, v as u8),
                _ => {
                    let _ = write!(out, "0x{v:0digits$x}");
                }
            }
        }
        out.push('\n');
        addr = addr.wrapping_add(l);
        len -= l;
    }
    out
}

fn printc(out: &mut String, c: u8) {
    out.push('\'');
    match c {
        b'\'' => out.push_str("\\'"),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        32..=126 => out.push(c as char),
        _ => {
            let _ = write!(out, "\\x{c:02x}");
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(a: u64, l: usize) -> Result<Vec<u8>, MonitorError> {
        Ok((0..l as u64).map(|i| (a + i) as u8).collect())
    }

    #[test]
    fn dump_words_hex_like_qemu() {
        let s = format_dump(0x1000, 24, 4, b'x', mem);
        assert_eq!(
            s,
            "0000000000001000: 0x03020100 0x07060504 0x0b0a0908 0x0f0e0d0c\n\
             0000000000001010: 0x13121110 0x17161514\n"
        );
    }

    #[test]
    fn dump_bytes_decimal_and_chars() {
        let s = format_dump(0xfe, 2, 1, b'd', mem);
        assert_eq!(s, "00000000000000fe:  -2  -1\n");
        let s = format_dump(0x41, 3, 1, b'c', mem);
        assert_eq!(s, "0000000000000041: 'A' 'B' 'C'\n");
        let s = format_dump(0x8, 2, 1, b'o', mem);
        assert_eq!(s, "0000000000000008: 010 011\n");
        let s = format_dump(0, 4, 2, b'u', mem);
        assert_eq!(s, "0000000000000000:   256   770\n");
    }

    #[test]
    fn dump_read_failure_stops() {
        let s = format_dump(0x10, 4, 4, b'x', |_, _| {
            Err(MonitorError::generic("debug disallowed"))
        });
        assert_eq!(
            s,
            "0000000000000010: Cannot access memory (debug disallowed)\n"
        );
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_addr("0x1000"), Ok(0x1000));
        assert_eq!(parse_addr("4096"), Ok(4096));
        assert_eq!(parse_addr("0x1000+16"), Ok(0x1010));
        assert_eq!(parse_addr("0x1000 - 16"), Ok(0xff0));
        assert_eq!(parse_addr("010"), Ok(8));
        assert_eq!(parse_addr("-0"), Ok(0));
        assert_eq!(parse_addr("-16+32"), Ok(16));
        assert_eq!(parse_addr("0xffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_addr("zz"), Err(AddrError::InvalidChar));
        assert_eq!(parse_addr(""), Err(AddrError::InvalidChar));
        assert_eq!(parse_addr("0x"), Err(AddrError::InvalidChar));
        assert_eq!(parse_addr("08"), Err(AddrError::InvalidChar));
        assert_eq!(parse_addr("1+"), Err(AddrError::InvalidChar));
        assert_eq!(parse_addr("1--2"), Err(AddrError::InvalidChar));
        assert_eq!(parse_addr("-1"), Err(AddrError::Negative));
        assert_eq!(parse_addr("0x10-0x20"), Err(AddrError::Negative));
        assert_eq!(parse_addr("0xfffffffffffffffff"), Err(AddrError::TooLarge));
        assert_eq!(parse_addr("18446744073709551616"), Err(AddrError::TooLarge));
        assert_eq!(parse_addr("0xffffffffffffffff+1"), Err(AddrError::TooLarge));
    }
}
