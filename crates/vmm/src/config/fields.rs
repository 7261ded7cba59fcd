//! The keys shared by the three formats, their value parsing, and the final checks.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::{
    clip, ConfigError, ConfigSource, OnOffAuto, SevBackend, SevLaunchConfig, ValidationInputs,
    Where, MAX_OWNER_FILE, MAX_VCPUS,
};
use sev_proto::policy::GuestPolicy;
use sev_proto::session::LaunchOwner;
use sev_proto::{SessionBlob, SevCert};

/// Bytes of a P-384 coordinate (the seed's `dh_pub_qx` / `dh_pub_qy`).
const COORD_LEN: usize = 48;
/// Bytes of the session nonce (the seed's `nonce`).
const NONCE_LEN: usize = 16;

/// The P-384 public key `(Qx, Qy)` of the owner's GODH certificate, each as the 48
/// little-endian bytes the certificate stores.
///
/// The certificate is decoded by [`sev_proto::SevCert::parse`] (which knows the format);
/// this adds only what a launch configuration needs: an EC key on P-384. Signatures and the
/// point itself are the firmware's to check (at LAUNCH_START).
pub fn godh_public_key_le(cert: &[u8]) -> Result<([u8; 48], [u8; 48]), String> {
    let c = SevCert::parse(cert).map_err(|e| e.to_string())?;
    c.p384_point_le().map_err(|e| e.to_string())
}

/// The syntax a value was written in (decides how numbers and bools are spelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// QEMU option syntax: everything is a string.
    Qemu,
    /// TOML: typed values.
    Toml,
    /// The `[sev-launch]` file: quoted strings; flags/policy hex without prefix.
    SevLaunch,
}

/// A value as the parser found it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    /// Another TOML type, named.
    Other(&'static str),
}

/// Every key any format knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Field {
    Policy,
    Cbitpos,
    ReducedPhysBits,
    DhCertFile,
    SessionFile,
    Handle,
    KernelHashes,
    SevDevice,
    LegacyVmType,
    DebugSwap,
    Backend,
    PlatformDir,
    Flags,
    DhPubQx,
    DhPubQy,
    Nonce,
    VcpuCount,
    VcpuLength,
    VcpuMask,
}

impl Field {
    /// Maps a QEMU `sev-guest` property name to its field.
    pub(crate) fn from_qemu_property(key: &str) -> Option<Field> {
        Some(match key {
            "policy" => Field::Policy,
            "cbitpos" => Field::Cbitpos,
            "reduced-phys-bits" => Field::ReducedPhysBits,
            "dh-cert-file" => Field::DhCertFile,
            "session-file" => Field::SessionFile,
            "handle" => Field::Handle,
            "kernel-hashes" => Field::KernelHashes,
            "sev-device" => Field::SevDevice,
            "legacy-vm-type" => Field::LegacyVmType,
            "debug-swap" => Field::DebugSwap,
            _ => return None,
        })
    }
}

/// The record the three parsers fill; `finish` turns it into a [`SevLaunchConfig`].
#[derive(Debug, Default)]
pub(crate) struct Raw {
    pub policy: Option<(u32, Where)>,
    pub cbitpos: Option<(u8, Where)>,
    pub reduced_phys_bits: Option<(u8, Where)>,
    pub dh_cert_file: Option<(PathBuf, Where)>,
    pub session_file: Option<(PathBuf, Where)>,
    pub handle: Option<(u32, Where)>,
    pub kernel_hashes: Option<(bool, Where)>,
    pub sev_device: Option<(PathBuf, Where)>,
    pub legacy_vm_type: Option<(OnOffAuto, Where)>,
    pub debug_swap: Option<(bool, Where)>,
    pub backend: Option<(SevBackend, Where)>,
    pub platform_dir: Option<(PathBuf, Where)>,
    pub flags: Option<(u32, Where)>,
    pub dh_pub_qx: Option<(Vec<u8>, Where)>,
    pub dh_pub_qy: Option<(Vec<u8>, Where)>,
    pub nonce: Option<(Vec<u8>, Where)>,
    pub vcpu_count: Option<(u32, Where)>,
    pub vcpu_length: Option<(u32, Where)>,
    pub vcpu_mask: Option<(Vec<u8>, Where)>,
    /// vCPUs from a format's own VM key (TOML `cpus`).
    pub cpus: Option<(u32, Where)>,
}

fn invalid(at: &Where, value: &str, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        at: at.clone(),
        value: clip(value),
        expected: expected.to_string(),
    }
}

fn val_text(v: Val<'_>) -> String {
    match v {
        Val::Str(s) => s.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Bool(b) => b.to_string(),
        Val::Other(t) => format!("<{t}>"),
    }
}

/// Parses an unsigned number in QEMU's spelling: decimal or `0x` hex. A leading `0`
/// followed by digits is refused: QEMU would read it as octal, people mean decimal.
pub(crate) fn parse_uint(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("a number, got an empty value".into());
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a hex number after 0x".into());
        }
        return u64::from_str_radix(hex, 16).map_err(|_| "a number that fits 64 bits".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("an unsigned decimal or 0x-hex number".into());
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err("no leading zero (QEMU reads it as octal); write decimal or 0x-hex".into());
    }
    s.parse::<u64>()
        .map_err(|_| "a number that fits 64 bits".into())
}

/// Parses the seed's hex numbers (`flags = "00000000"`, `policy = "000000"`): 1 to 8
/// hex digits, an optional `0x` prefix.
fn parse_seed_hex_u32(s: &str) -> Result<u32, String> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "hex digits (the [sev-launch] file writes numbers as hex, e.g. \"00000001\")".into(),
        );
    }
    if digits.len() > 8 {
        return Err(format!(
            "at most 8 hex digits (32 bits), got {}",
            digits.len()
        ));
    }
    u32::from_str_radix(digits, 16).map_err(|_| "a 32-bit hex number".into())
}

/// Parses QEMU's bool spellings: on/off, yes/no, true/false.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "on" | "yes" | "true" => Some(true),
        "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Decodes exactly `want` bytes of hex text (no prefix, even digit count).
fn parse_hex_exact(s: &str, want: usize, at: &Where, note: &str) -> Result<Vec<u8>, ConfigError> {
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(at, s, "hex digits only (0-9, a-f)"));
    }
    if s.len() != want * 2 {
        return Err(ConfigError::HexLength {
            at: at.clone(),
            got_digits: s.len(),
            got_bytes: s.len() / 2,
            want_digits: want * 2,
            want_bytes: want,
            note: note.to_string(),
        });
    }
    decode_hex(s).ok_or_else(|| invalid(at, s, "hex digits"))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let t = std::str::from_utf8(p).ok()?;
            u8::from_str_radix(t, 16).ok()
        })
        .collect()
}

impl Raw {
    /// Sets `field` from `val`, checking its form and range (not yet cross-key rules).
    /// `base` resolves relative file names. Duplicates are the caller's to catch.
    pub(crate) fn set(
        &mut self,
        field: Field,
        val: Val<'_>,
        syntax: Syntax,
        at: Where,
        base: Option<&Path>,
    ) -> Result<(), ConfigError> {
        let text = val_text(val);
        let num = |max: u64, range: &str| -> Result<u64, ConfigError> {
            let n = match val {
                Val::Int(i) => u64::try_from(i).map_err(|_| ConfigError::OutOfRange {
                    at: at.clone(),
                    value: i.to_string(),
                    range: range.to_string(),
                })?,
                Val::Str(s) => parse_uint(s).map_err(|e| invalid(&at, s, &e))?,
                _ => return Err(invalid(&at, &text, "a number")),
            };
            if n > max {
                return Err(ConfigError::OutOfRange {
                    at: at.clone(),
                    value: text.clone(),
                    range: range.to_string(),
                });
            }
            Ok(n)
        };
        let boolean = || -> Result<bool, ConfigError> {
            match (val, syntax) {
                (Val::Bool(b), _) => Ok(b),
                (Val::Str(s), Syntax::Qemu | Syntax::SevLaunch) => {
                    parse_bool(s).ok_or_else(|| invalid(&at, s, "on/off, yes/no or true/false"))
                }
                _ => Err(invalid(&at, &text, "a boolean (true or false)")),
            }
        };
        let string = || -> Result<&str, ConfigError> {
            match val {
                Val::Str(s) => Ok(s),
                _ => Err(invalid(&at, &text, "a string")),
            }
        };
        let path = || -> Result<PathBuf, ConfigError> {
            let s = string()?;
            if s.is_empty() {
                return Err(invalid(&at, s, "a file name"));
            }
            let p = PathBuf::from(s);
            Ok(match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p,
            })
        };
        let hex_str = || -> Result<&str, ConfigError> {
            let s = string()?;
            Ok(s)
        };
        match field {
            Field::Policy => {
                let p = if syntax == Syntax::SevLaunch {
                    parse_seed_hex_u32(string()?).map_err(|e| invalid(&at, &text, &e))?
                } else {
                    num(u32::MAX as u64, "0..=0xffffffff (32-bit policy)")? as u32
                };
                if GuestPolicy(p).reserved_bits() != 0 {
                    return Err(ConfigError::OutOfRange {
                        at,
                        value: format!("{p:#x}"),
                        range: "policy bits 15:6 are reserved and must be zero".into(),
                    });
                }
                self.policy = Some((p, at));
            }
            Field::Cbitpos => {
                let n = num(63, "1..=63")?;
                if n == 0 {
                    return Err(ConfigError::OutOfRange {
                        at,
                        value: text,
                        range: "1..=63".into(),
                    });
                }
                self.cbitpos = Some((n as u8, at));
            }
            Field::ReducedPhysBits => {
                let n = num(63, "1..=63 (as QEMU checks)")?;
                if n == 0 {
                    return Err(ConfigError::OutOfRange {
                        at,
                        value: text,
                        range: "1..=63 (as QEMU checks)".into(),
                    });
                }
                self.reduced_phys_bits = Some((n as u8, at));
            }
            Field::DhCertFile => self.dh_cert_file = Some((path()?, at)),
            Field::SessionFile => self.session_file = Some((path()?, at)),
            Field::Handle => {
                self.handle = Some((num(u32::MAX as u64, "0..=0xffffffff")? as u32, at))
            }
            Field::KernelHashes => self.kernel_hashes = Some((boolean()?, at)),
            Field::SevDevice => {
                let s = string()?;
                if s.is_empty() {
                    return Err(invalid(&at, s, "a device path such as /dev/sev"));
                }
                self.sev_device = Some((PathBuf::from(s), at));
            }
            Field::LegacyVmType => {
                let v = match val {
                    Val::Bool(true) => OnOffAuto::On,
                    Val::Bool(false) => OnOffAuto::Off,
                    Val::Str("auto") => OnOffAuto::Auto,
                    Val::Str(s) => match parse_bool(s) {
                        Some(true) => OnOffAuto::On,
                        Some(false) => OnOffAuto::Off,
                        None => return Err(invalid(&at, s, "on, off or auto")),
                    },
                    _ => return Err(invalid(&at, &text, "on, off or auto")),
                };
                self.legacy_vm_type = Some((v, at));
            }
            Field::DebugSwap => self.debug_swap = Some((boolean()?, at)),
            Field::Backend => {
                let s = string()?;
                let b = SevBackend::parse(s).ok_or_else(|| invalid(&at, s, "soft or hw"))?;
                self.backend = Some((b, at));
            }
            Field::PlatformDir => self.platform_dir = Some((path()?, at)),
            Field::Flags => {
                let f = parse_seed_hex_u32(string()?).map_err(|e| invalid(&at, &text, &e))?;
                if f != 0 {
                    return Err(ConfigError::Unsupported {
                        at,
                        msg: format!(
                            "flags {f:#x}: the 2016 draft passed LAUNCH_START flags to the \
                             firmware without defining any bit, and today's LAUNCH_START has \
                             no flags; only 0 is accepted (ask for SEV-ES with policy bit 2, 0x4)"
                        ),
                    });
                }
                self.flags = Some((f, at));
            }
            Field::DhPubQx | Field::DhPubQy => {
                let note = "; a P-384 coordinate is 48 bytes (the 2016 draft's 16-byte sample is \
                            not a valid key)";
                let v = parse_hex_exact(hex_str()?, COORD_LEN, &at, note)?;
                if field == Field::DhPubQx {
                    self.dh_pub_qx = Some((v, at));
                } else {
                    self.dh_pub_qy = Some((v, at));
                }
            }
            Field::Nonce => {
                let note =
                    "; the session nonce is 16 bytes (the 2016 draft's 8-byte sample is too short)";
                let v = parse_hex_exact(hex_str()?, NONCE_LEN, &at, note)?;
                self.nonce = Some((v, at));
            }
            Field::VcpuCount => {
                let range = format!("1..={MAX_VCPUS}");
                let n = num(MAX_VCPUS as u64, &range)?;
                if n == 0 {
                    return Err(ConfigError::OutOfRange {
                        at,
                        value: text,
                        range,
                    });
                }
                self.vcpu_count = Some((n as u32, at));
            }
            Field::VcpuLength => {
                let max = MAX_VCPUS.div_ceil(8);
                let range = format!("1..={max} bytes (a bitmap of up to {MAX_VCPUS} vCPUs)");
                let n = num(max as u64, &range)?;
                if n == 0 {
                    return Err(ConfigError::OutOfRange {
                        at,
                        value: text,
                        range,
                    });
                }
                self.vcpu_length = Some((n as u32, at));
            }
            Field::VcpuMask => {
                let s = hex_str()?;
                let max = MAX_VCPUS.div_ceil(8) as usize;
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(&at, s, "hex digits, two per byte"));
                }
                if s.len() & 1 == 1 || s.len() > max * 2 {
                    return Err(ConfigError::HexLength {
                        at,
                        got_digits: s.len(),
                        got_bytes: s.len() / 2,
                        want_digits: (s.len() / 2 + 1).min(max) * 2,
                        want_bytes: (s.len() / 2 + 1).min(max),
                        note: format!(
                            "; an even number of digits, at most {} ({max} bytes)",
                            max * 2
                        ),
                    });
                }
                let v = decode_hex(s).ok_or_else(|| invalid(&at, s, "hex digits"))?;
                self.vcpu_mask = Some((v, at));
            }
        }
        Ok(())
    }

    /// The final, cross-key checks; reads the owner's files.
    ///
    /// `missing_at` names the place a missing key is reported at (the file or option).
    /// `rpb_required`: QEMU syntax requires `reduced-phys-bits` (as QEMU does).
    pub(crate) fn finish(
        self,
        source: ConfigSource,
        inputs: &ValidationInputs,
        missing_at: &dyn Fn(&str) -> Where,
        rpb_required: bool,
    ) -> Result<SevLaunchConfig, ConfigError> {
        let policy = self
            .policy
            .as_ref()
            .map(|(p, _)| *p)
            .unwrap_or(super::DEFAULT_POLICY);

        // C-bit position against the platform.
        if let (Some((c, at)), Some(p)) = (&self.cbitpos, inputs.platform_cbitpos) {
            if *c != p {
                return Err(ConfigError::CbitposMismatch {
                    at: at.clone(),
                    platform: p,
                    requested: *c,
                });
            }
        }
        let reduced_phys_bits = match &self.reduced_phys_bits {
            Some((r, _)) => *r,
            None if rpb_required => {
                return Err(ConfigError::MissingKey {
                    at: missing_at("reduced-phys-bits"),
                    why: "QEMU requires reduced-phys-bits (1..=63) on sev-guest".into(),
                })
            }
            None => 1,
        };

        // Owner files: both or neither.
        let godh_cert = match &self.dh_cert_file {
            Some((p, at)) => Some(read_owner_file(p, at, SevCert::LEN, "GODH certificate")?),
            None => None,
        };
        let session = match &self.session_file {
            Some((p, at)) => {
                let b = read_owner_file(p, at, SessionBlob::LEN, "session blob")?;
                let blob = SessionBlob::from_bytes(&b).map_err(|e| ConfigError::OwnerFile {
                    at: at.clone(),
                    path: p.clone(),
                    msg: e.to_string(),
                })?;
                Some(blob)
            }
            None => None,
        };
        match (&self.dh_cert_file, &self.session_file) {
            (Some((_, at)), None) => {
                return Err(ConfigError::Conflict {
                    at: at.clone(),
                    msg: "a GODH certificate needs its launch session: give the session file too"
                        .into(),
                })
            }
            (None, Some((_, at))) => {
                return Err(ConfigError::Conflict {
                    at: at.clone(),
                    msg: "a launch session needs the owner's GODH certificate: give the \
                          certificate file too"
                        .into(),
                })
            }
            _ => {}
        }
        let cert_key = match (&godh_cert, &self.dh_cert_file) {
            (Some(c), Some((p, at))) => {
                Some(godh_public_key_le(c).map_err(|msg| ConfigError::OwnerFile {
                    at: at.clone(),
                    path: p.clone(),
                    msg,
                })?)
            }
            _ => None,
        };
        // What LAUNCH_START gets, decoded here where the files are named.
        let owner = match (&godh_cert, &session, &self.dh_cert_file) {
            (Some(c), Some(blob), Some((p, at))) => Some(LaunchOwner {
                godh: SevCert::parse(c).map_err(|e| ConfigError::OwnerFile {
                    at: at.clone(),
                    path: p.clone(),
                    msg: e.to_string(),
                })?,
                session: blob.clone(),
            }),
            _ => None,
        };

        // Raw coordinates (seed keys): both or neither, and equal to the cert's key.
        match (&self.dh_pub_qx, &self.dh_pub_qy) {
            (Some((_, at)), None) | (None, Some((_, at))) => {
                return Err(ConfigError::Conflict {
                    at: at.clone(),
                    msg: "dh_pub_qx and dh_pub_qy go together".into(),
                })
            }
            (Some((qx, at_x)), Some((qy, at_y))) => {
                let Some((cx, cy)) = &cert_key else {
                    return Err(ConfigError::Conflict {
                        at: at_x.clone(),
                        msg: "today's firmware takes the owner's key inside a certificate: \
                              dh_pub_qx/dh_pub_qy need dh_cert_file (and session_file)"
                            .into(),
                    });
                };
                for (given, want, at, name) in [(qx, cx, at_x, "Qx"), (qy, cy, at_y, "Qy")] {
                    if given.as_slice() != want.as_slice() {
                        let mut reversed = given.clone();
                        reversed.reverse();
                        let hint = if reversed.as_slice() == want.as_slice() {
                            " (it matches big-endian; this key is little-endian, as the \
                             certificate stores it)"
                        } else {
                            ""
                        };
                        return Err(ConfigError::Mismatch {
                            at: at.clone(),
                            msg: format!(
                                "does not equal the certificate's {name} in dh_cert_file{hint}"
                            ),
                        });
                    }
                }
            }
            (None, None) => {}
        }

        // Nonce (seed key): must equal the session's.
        if let Some((n, at)) = &self.nonce {
            let Some(blob) = &session else {
                return Err(ConfigError::Conflict {
                    at: at.clone(),
                    msg: "today's firmware takes the nonce inside the session blob: nonce \
                          needs session_file"
                        .into(),
                });
            };
            if n.as_slice() != blob.nonce {
                return Err(ConfigError::Mismatch {
                    at: at.clone(),
                    msg: "does not equal the nonce in session_file (its first 16 bytes)".into(),
                });
            }
        }

        // vCPUs: --cpus must be a count a VM can have; vcpu_count / cpus / --cpus /
        // vcpu_mask must agree.
        if let Some(cli) = inputs.cli_cpus {
            super::check_cli_cpus(cli)?;
        }
        let mut vcpus: Option<(u32, Where)> = None;
        for cand in [&self.vcpu_count, &self.cpus].into_iter().flatten() {
            match &vcpus {
                None => vcpus = Some(cand.clone()),
                Some((n, _)) if *n != cand.0 => {
                    return Err(ConfigError::Mismatch {
                        at: cand.1.clone(),
                        msg: format!("{} vCPUs here, {n} elsewhere in the file", cand.0),
                    })
                }
                _ => {}
            }
        }
        if let Some((mask, at)) = &self.vcpu_mask {
            let set: u32 = mask.iter().map(|b| b.count_ones()).sum();
            // Bit i (LSB-first, byte 0 = vCPUs 0..7) names vCPU i; sevm launches all vCPUs,
            // so the mask must name exactly vCPUs 0..n-1.
            let n = vcpus.as_ref().map(|(n, _)| *n).unwrap_or(set);
            let contiguous = (0..mask.len() * 8).all(|i| {
                let bit = mask[i / 8] >> (i % 8) & 1 == 1;
                bit == (i < n as usize)
            });
            if !contiguous || n == 0 {
                return Err(ConfigError::Unsupported {
                    at: at.clone(),
                    msg: format!(
                        "vcpu_mask must name exactly vCPUs 0..{} (bit i = vCPU i, byte 0 first): \
                         sevm launches every vCPU and cannot leave some out",
                        n.saturating_sub(1)
                    ),
                });
            }
            if let Some((len, at_len)) = &self.vcpu_length {
                if (*len as usize) < mask.len() {
                    return Err(ConfigError::Conflict {
                        at: at_len.clone(),
                        msg: format!(
                            "vcpu_length {len} is smaller than vcpu_mask's {} bytes (the 2016 \
                             parser overflowed its buffer here)",
                            mask.len()
                        ),
                    });
                }
            }
            if vcpus.is_none() {
                vcpus = Some((n, at.clone()));
            }
        }
        // A count the format can hold (vcpu_count up to MAX_VCPUS, a mask of as many bits) is
        // still refused when no sevm VM can have that many vCPUs, naming the real limit.
        if let Some((n, at)) = &vcpus {
            super::check_vm_cpus(i64::from(*n), at.clone())?;
        }
        if let (Some((len, at)), Some((n, _))) = (&self.vcpu_length, &vcpus) {
            if (*len as usize) < (*n as usize).div_ceil(8) {
                return Err(ConfigError::Conflict {
                    at: at.clone(),
                    msg: format!("vcpu_length {len} bytes cannot hold a mask of {n} vCPUs"),
                });
            }
        }
        if let (Some((n, at)), Some(cli)) = (&vcpus, inputs.cli_cpus) {
            if *n != cli {
                return Err(ConfigError::Mismatch {
                    at: at.clone(),
                    msg: format!("{n} vCPUs here, but --cpus {cli}"),
                });
            }
        }
        let vcpus = vcpus.map(|(n, _)| n).or(inputs.cli_cpus);

        let debug_swap = self.debug_swap.as_ref().map(|(b, _)| *b).unwrap_or(false);
        if let Some((true, at)) = &self.debug_swap {
            if !GuestPolicy(policy).es() {
                return Err(ConfigError::Conflict {
                    at: at.clone(),
                    msg: format!(
                        "debug-swap is an SEV-ES feature, but policy {policy:#x} has no ES bit (0x4)"
                    ),
                });
            }
        }

        Ok(SevLaunchConfig {
            policy,
            cbitpos: self.cbitpos.map(|(c, _)| c),
            reduced_phys_bits,
            owner,
            handle: self.handle.map(|(h, _)| h).unwrap_or(0),
            kernel_hashes: self.kernel_hashes.map(|(b, _)| b).unwrap_or(false),
            vcpus,
            backend: self.backend.map(|(b, _)| b),
            platform_dir: self.platform_dir.map(|(p, _)| p),
            sev_device: self
                .sev_device
                .map(|(p, _)| p)
                .unwrap_or_else(|| PathBuf::from("/dev/sev")),
            legacy_vm_type_at: self.legacy_vm_type.as_ref().map(|(_, at)| at.clone()),
            legacy_vm_type: self.legacy_vm_type.map(|(v, _)| v).unwrap_or_default(),
            debug_swap_at: self.debug_swap.as_ref().map(|(_, at)| at.clone()),
            debug_swap,
            source,
        })
    }
}

/// Reads a base64 owner file (as `sevctl session` / `sevm owner session` write them) and
/// checks the decoded size.
fn read_owner_file(
    path: &Path,
    at: &Where,
    want: usize,
    what: &str,
) -> Result<Vec<u8>, ConfigError> {
    // A FIFO or a device (`dh-cert-file=/dev/zero`) is refused without blocking; the size
    // before reading.
    let why = format!("a base64 {what} is much smaller");
    let text = sevm_files::Limit::new(what, MAX_OWNER_FILE)
        .why(&why)
        .allow_empty()
        .read(path)
        .map_err(|e| ConfigError::MissingFile {
            at: at.clone(),
            path: path.to_path_buf(),
            reason: e.reason(),
        })?;
    let compact: Vec<u8> = text
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| ConfigError::OwnerFile {
            at: at.clone(),
            path: path.to_path_buf(),
            msg: format!("not base64 text ({e}); QEMU and sevctl use base64 files"),
        })?;
    if bytes.len() != want {
        return Err(ConfigError::OwnerFile {
            at: at.clone(),
            path: path.to_path_buf(),
            msg: format!("decodes to {} bytes, a {what} is {want}", bytes.len()),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_spellings() {
        assert_eq!(parse_uint("0"), Ok(0));
        assert_eq!(parse_uint("47"), Ok(47));
        assert_eq!(parse_uint("0x2F"), Ok(47));
        assert_eq!(parse_uint("0XfF"), Ok(255));
        assert!(parse_uint("").is_err());
        assert!(parse_uint("0x").is_err());
        assert!(parse_uint("010").unwrap_err().contains("octal"));
        assert!(parse_uint("+1").is_err());
        assert!(parse_uint("1e3").is_err());
        assert!(parse_uint("18446744073709551616").is_err());
        assert_eq!(parse_uint("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn seed_hex_numbers() {
        assert_eq!(parse_seed_hex_u32("00000000"), Ok(0));
        assert_eq!(parse_seed_hex_u32("000000"), Ok(0));
        assert_eq!(parse_seed_hex_u32("10"), Ok(16), "seed numbers are hex");
        assert_eq!(parse_seed_hex_u32("0xffffffff"), Ok(u32::MAX));
        assert!(parse_seed_hex_u32("123456789").is_err());
        assert!(parse_seed_hex_u32("").is_err());
        assert!(parse_seed_hex_u32("0x").is_err());
        assert!(parse_seed_hex_u32("g").is_err());
    }

    #[test]
    fn bools() {
        for t in ["on", "yes", "true"] {
            assert_eq!(parse_bool(t), Some(true));
        }
        for f in ["off", "no", "false"] {
            assert_eq!(parse_bool(f), Some(false));
        }
        assert_eq!(parse_bool("ON"), None);
        assert_eq!(parse_bool("1"), None);
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("00ab"), Some(vec![0, 0xab]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    fn godh_on(nid: openssl::nid::Nid, algo: sev_proto::Algo) -> SevCert {
        let group = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
        let key = openssl::ec::EcKey::generate(&group).unwrap();
        SevCert::new_ec(sev_proto::Usage::PDH, algo, 0, 0, &key).unwrap()
    }

    #[test]
    fn godh_key_fields_come_from_sev_proto() {
        let c = godh_on(openssl::nid::Nid::SECP384R1, sev_proto::Algo::ECDH_SHA256);
        let (qx, qy) = godh_public_key_le(&c.encode()).unwrap();
        // The key the certificate holds, little-endian, as sev-proto decodes it.
        assert_eq!((qx, qy), c.p384_point_le().unwrap());
        assert_ne!(qx, [0; 48]);
        assert_ne!(qx, qy);
        let e = godh_public_key_le(&c.encode()[..100]).unwrap_err();
        assert!(e.contains("truncated") && e.contains("2084"), "{e}");
        let mut bad = c.clone();
        bad.version = 2;
        let e = godh_public_key_le(&bad.encode()).unwrap_err();
        assert!(e.contains("version"), "{e}");
        let p256 = godh_on(
            openssl::nid::Nid::X9_62_PRIME256V1,
            sev_proto::Algo::ECDH_SHA256,
        );
        let e = godh_public_key_le(&p256.encode()).unwrap_err();
        assert!(e.contains("not P-384"), "{e}");
        let mut rsa = c.clone();
        rsa.algo = sev_proto::Algo::RSA_SHA256;
        assert!(rsa
            .p384_point_le()
            .unwrap_err()
            .to_string()
            .contains("not an EC"));
        let mut padded = c.clone();
        padded.pubkey[4 + 48] = 1; // past Qx's 48 bytes, inside its 72-byte field
        let e = godh_public_key_le(&padded.encode()).unwrap_err();
        assert!(e.contains("nonzero bytes beyond"), "{e}");
    }
}
