//! SEV-SNP launch configuration: QEMU's `--object sev-snp-guest,id=ID,...` with `--machine
//! confidential-guest-support=ID`, and the TOML file's `[sev-snp]` table (the same property
//! names, plus `backend`, `platform-dir` and `guest-channel`), validated into one
//! [`SnpLaunchConfig`].
//!
//! Properties (QEMU's `sev-snp-guest`, defaults as QEMU's): `policy` (u64, default 0x30000),
//! `id-block` (base64 of the 96-byte ID block), `id-auth` (base64 of the 4096-byte ID
//! authentication structure), `author-key-enabled` (bool, off), `host-data` (base64 of 32
//! bytes, zero), `vcek-disabled` (bool, off), `guest-visible-workarounds` (base64 of 16 bytes,
//! zero), `kernel-hashes` (bool, off), `cbitpos`, `reduced-phys-bits` (required in QEMU's
//! syntax, as for `sev-guest`).
//!
//! The policy is checked as the soft firmware (API 1.55) will check it at LAUNCH_START
//! (`snp-spec-notes.md` §2.4): bit 17 set, bits 63:26 clear, and no bit above 20 (the newer
//! ABI's CXL_ALLOW .. PAGE_SWAP_DISABLE are refused as unsupported).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sev_proto::snp::policy::{SnpPolicy, FW_1_55_KNOWN_BITS};

use super::fields::{parse_bool, parse_uint};
use super::qemu::parse_options;
use super::{clip, ConfigError, ConfigSource, SevBackend, ValidationInputs, Where};

/// QEMU's default SNP guest policy: SMT allowed and the reserved bit 17.
pub const DEFAULT_SNP_POLICY: u64 = 0x30000;
/// Size of the ID block.
pub const ID_BLOCK_LEN: usize = 0x60;
/// Size of the ID authentication structure.
pub const ID_AUTH_LEN: usize = 0x1000;
/// Size of HOST_DATA.
pub const HOST_DATA_LEN: usize = 32;
/// Size of the guest-visible workarounds (GOSVW).
pub const GOSVW_LEN: usize = 16;

/// The QEMU object type.
pub const QOM_TYPE: &str = "sev-snp-guest";

/// The validated SNP launch configuration, the same whichever way it was written.
#[derive(Clone, PartialEq, Eq)]
pub struct SnpLaunchConfig {
    /// Guest policy (LAUNCH_START).
    pub policy: u64,
    /// The ID block (LAUNCH_FINISH), 96 bytes.
    pub id_block: Option<Vec<u8>>,
    /// The ID authentication structure (LAUNCH_FINISH), 4096 bytes; with `id_block`.
    pub id_auth: Option<Vec<u8>>,
    /// AUTH_KEY_EN: the ID auth carries an author key.
    pub author_key_enabled: bool,
    /// HOST_DATA (LAUNCH_FINISH).
    pub host_data: [u8; HOST_DATA_LEN],
    /// VCEK_DIS (LAUNCH_FINISH).
    pub vcek_disabled: bool,
    /// GOSVW (LAUNCH_START).
    pub guest_visible_workarounds: [u8; GOSVW_LEN],
    /// Measure the kernel-hashes table (firmware boots).
    pub kernel_hashes: bool,
    /// C-bit position if given; it equals the platform's when the platform's was known.
    pub cbitpos: Option<u8>,
    /// Physical address bits lost to memory encryption.
    pub reduced_phys_bits: u8,
    /// Firmware backend if the configuration says (TOML `backend`).
    pub backend: Option<SevBackend>,
    /// Soft platform directory if the configuration says (TOML `platform-dir`).
    pub platform_dir: Option<PathBuf>,
    /// The guest channel socket if the configuration says (TOML `guest-channel`, as
    /// `sevm run --guest-channel`).
    pub guest_channel: Option<PathBuf>,
    /// Where this came from.
    pub source: ConfigSource,
}

impl std::fmt::Debug for SnpLaunchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpLaunchConfig")
            .field("policy", &format_args!("{:#x}", self.policy))
            .field("id_block", &self.id_block.is_some())
            .field("author_key_enabled", &self.author_key_enabled)
            .field(
                "host_data",
                &self
                    .host_data
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            )
            .field("vcek_disabled", &self.vcek_disabled)
            .field("kernel_hashes", &self.kernel_hashes)
            .field("cbitpos", &self.cbitpos)
            .field("reduced_phys_bits", &self.reduced_phys_bits)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A value as a parser found it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SnpVal<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Other(&'static str),
}

/// The property names of `sev-snp-guest` (without `id`).
pub const QEMU_KEYS: [&str; 11] = [
    "policy",
    "id-block",
    "id-auth",
    "author-key-enabled",
    "host-data",
    "vcek-disabled",
    "guest-visible-workarounds",
    "kernel-hashes",
    "cbitpos",
    "reduced-phys-bits",
    "sev-device",
];

/// The record both parsers fill.
#[derive(Default)]
pub(crate) struct SnpRaw {
    policy: Option<(u64, Where)>,
    id_block: Option<(Vec<u8>, Where)>,
    id_auth: Option<(Vec<u8>, Where)>,
    author_key: Option<(bool, Where)>,
    host_data: Option<[u8; HOST_DATA_LEN]>,
    vcek_disabled: bool,
    gosvw: Option<[u8; GOSVW_LEN]>,
    kernel_hashes: bool,
    cbitpos: Option<(u8, Where)>,
    reduced_phys_bits: Option<u8>,
    backend: Option<SevBackend>,
    platform_dir: Option<PathBuf>,
    guest_channel: Option<PathBuf>,
}

fn invalid(at: &Where, value: &str, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        at: at.clone(),
        value: clip(value),
        expected: expected.to_string(),
    }
}

/// Decodes base64 text of exactly `want` bytes; the error names the option and both sizes.
fn b64_exact(s: &str, want: usize, what: &str, at: &Where) -> Result<Vec<u8>, ConfigError> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            invalid(
                at,
                s,
                &format!("base64 of the {want}-byte {what} (not base64: {e})"),
            )
        })?;
    if bytes.len() != want {
        return Err(invalid(
            at,
            s,
            &format!(
                "base64 of the {want}-byte {what}; it decodes to {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Checks an SNP policy as the soft firmware (API 1.55) will at LAUNCH_START, without the
/// platform-dependent parts (SMT, ABI minimum), naming where it was written.
pub fn check_policy(p: u64, at: &Where) -> Result<(), ConfigError> {
    SnpPolicy(p)
        .validate()
        .map_err(|e| ConfigError::OutOfRange {
            at: at.clone(),
            value: format!("{p:#x}"),
            range: format!("a valid SNP guest policy ({e})"),
        })?;
    let unsupported = p & !FW_1_55_KNOWN_BITS & !0xFFFF;
    if unsupported != 0 {
        return Err(ConfigError::Unsupported {
            at: at.clone(),
            msg: format!(
                "policy {p:#x} sets bits {unsupported:#x} (CXL_ALLOW, MEM_AES_256_XTS, RAPL_DIS, \
                 CIPHERTEXT_HIDING, PAGE_SWAP_DISABLE are bits 21..=25), which the SNP firmware \
                 (API 1.55) does not support: it knows bits 0..=20"
            ),
        });
    }
    Ok(())
}

impl SnpRaw {
    /// Sets `key` (a QEMU property name, or `backend` / `platform-dir` / `guest-channel` in
    /// TOML).
    pub(crate) fn set(
        &mut self,
        key: &str,
        val: SnpVal<'_>,
        at: Where,
        base: Option<&Path>,
    ) -> Result<(), ConfigError> {
        let text = match val {
            SnpVal::Str(s) => s.to_string(),
            SnpVal::Int(i) => i.to_string(),
            SnpVal::Bool(b) => b.to_string(),
            SnpVal::Other(t) => format!("<{t}>"),
        };
        let num = |max: u64, range: &str| -> Result<u64, ConfigError> {
            let n = match val {
                SnpVal::Int(i) => u64::try_from(i).map_err(|_| ConfigError::OutOfRange {
                    at: at.clone(),
                    value: text.clone(),
                    range: range.into(),
                })?,
                SnpVal::Str(s) => parse_uint(s).map_err(|e| invalid(&at, s, &e))?,
                _ => return Err(invalid(&at, &text, "a number")),
            };
            if n > max {
                return Err(ConfigError::OutOfRange {
                    at: at.clone(),
                    value: text.clone(),
                    range: range.into(),
                });
            }
            Ok(n)
        };
        let boolean = || -> Result<bool, ConfigError> {
            match val {
                SnpVal::Bool(b) => Ok(b),
                SnpVal::Str(s) => {
                    parse_bool(s).ok_or_else(|| invalid(&at, s, "on/off, yes/no or true/false"))
                }
                _ => Err(invalid(&at, &text, "a boolean")),
            }
        };
        let string = || -> Result<&str, ConfigError> {
            match val {
                SnpVal::Str(s) => Ok(s),
                _ => Err(invalid(&at, &text, "a string")),
            }
        };
        match key {
            "policy" => {
                let p = num(u64::MAX, "a 64-bit SNP guest policy")?;
                check_policy(p, &at)?;
                self.policy = Some((p, at));
            }
            "id-block" => {
                let b = b64_exact(string()?, ID_BLOCK_LEN, "ID block", &at)?;
                self.id_block = Some((b, at));
            }
            "id-auth" => {
                let b = b64_exact(string()?, ID_AUTH_LEN, "ID authentication structure", &at)?;
                self.id_auth = Some((b, at));
            }
            "author-key-enabled" => self.author_key = Some((boolean()?, at)),
            "host-data" => {
                let b = b64_exact(string()?, HOST_DATA_LEN, "HOST_DATA", &at)?;
                let mut h = [0u8; HOST_DATA_LEN];
                h.copy_from_slice(&b);
                self.host_data = Some(h);
            }
            "vcek-disabled" => self.vcek_disabled = boolean()?,
            "guest-visible-workarounds" => {
                let b = b64_exact(
                    string()?,
                    GOSVW_LEN,
                    "guest-visible workarounds (GOSVW)",
                    &at,
                )?;
                let mut g = [0u8; GOSVW_LEN];
                g.copy_from_slice(&b);
                self.gosvw = Some(g);
            }
            "kernel-hashes" => self.kernel_hashes = boolean()?,
            "cbitpos" => {
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
            "reduced-phys-bits" => {
                let n = num(63, "1..=63 (as QEMU checks)")?;
                if n == 0 {
                    return Err(ConfigError::OutOfRange {
                        at,
                        value: text,
                        range: "1..=63 (as QEMU checks)".into(),
                    });
                }
                self.reduced_phys_bits = Some(n as u8);
            }
            "sev-device" => {
                let s = string()?;
                if s.is_empty() {
                    return Err(invalid(&at, s, "a device path such as /dev/sev"));
                }
            }
            "backend" => {
                let s = string()?;
                self.backend =
                    Some(SevBackend::parse(s).ok_or_else(|| invalid(&at, s, "soft or hw"))?);
            }
            "platform-dir" => {
                let s = string()?;
                if s.is_empty() {
                    return Err(invalid(&at, s, "a directory name"));
                }
                let p = PathBuf::from(s);
                self.platform_dir = Some(match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p,
                });
            }
            "guest-channel" => {
                let s = string()?;
                if s.is_empty() {
                    return Err(invalid(&at, s, "a socket path"));
                }
                let p = PathBuf::from(s);
                self.guest_channel = Some(match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p,
                });
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    at,
                    hint: format!("; {QOM_TYPE} properties: {}", QEMU_KEYS.join(", ")),
                })
            }
        }
        Ok(())
    }

    /// The cross-key checks.
    pub(crate) fn finish(
        self,
        source: ConfigSource,
        inputs: &ValidationInputs,
        missing_at: &dyn Fn(&str) -> Where,
        rpb_required: bool,
    ) -> Result<SnpLaunchConfig, ConfigError> {
        if let (Some((c, at)), Some(p)) = (&self.cbitpos, inputs.platform_cbitpos) {
            if *c != p {
                return Err(ConfigError::CbitposMismatch {
                    at: at.clone(),
                    platform: p,
                    requested: *c,
                });
            }
        }
        let reduced_phys_bits = match self.reduced_phys_bits {
            Some(r) => r,
            None if rpb_required => {
                return Err(ConfigError::MissingKey {
                    at: missing_at("reduced-phys-bits"),
                    why: format!("QEMU requires reduced-phys-bits (1..=63) on {QOM_TYPE}"),
                })
            }
            None => 1,
        };
        match (&self.id_block, &self.id_auth) {
            (Some((_, at)), None) => {
                return Err(ConfigError::Conflict {
                    at: at.clone(),
                    msg: "an ID block needs its ID authentication structure: give id-auth too"
                        .into(),
                })
            }
            (None, Some((_, at))) => {
                return Err(ConfigError::Conflict {
                    at: at.clone(),
                    msg: "id-auth authenticates an ID block: give id-block too".into(),
                })
            }
            _ => {}
        }
        if let (Some((true, at)), None) = (&self.author_key, &self.id_block) {
            return Err(ConfigError::Conflict {
                at: at.clone(),
                msg: "author-key-enabled=on needs an ID block and ID auth (the author key \
                      signs the ID key inside id-auth)"
                    .into(),
            });
        }
        if let Some(cli) = inputs.cli_cpus {
            super::check_cli_cpus(cli)?;
        }
        Ok(SnpLaunchConfig {
            policy: self.policy.map_or(DEFAULT_SNP_POLICY, |(p, _)| p),
            id_block: self.id_block.map(|(b, _)| b),
            id_auth: self.id_auth.map(|(b, _)| b),
            author_key_enabled: self.author_key.is_some_and(|(b, _)| b),
            host_data: self.host_data.unwrap_or([0; HOST_DATA_LEN]),
            vcek_disabled: self.vcek_disabled,
            guest_visible_workarounds: self.gosvw.unwrap_or([0; GOSVW_LEN]),
            kernel_hashes: self.kernel_hashes,
            cbitpos: self.cbitpos.map(|(c, _)| c),
            reduced_phys_bits,
            backend: self.backend,
            platform_dir: self.platform_dir,
            guest_channel: self.guest_channel,
            source,
        })
    }
}

/// The `sev-snp-guest` object that `--machine confidential-guest-support=ID` names, validated.
/// `Ok(None)` when the machine names no object or an object of another type (a `sev-guest`:
/// [`super::qemu::from_qemu_args`] takes it). A `sev-snp-guest` the machine does not name is an
/// error, as is one without `--machine`.
pub fn from_qemu_args<S: AsRef<str>>(
    objects: &[S],
    machine: Option<&str>,
    inputs: &ValidationInputs,
) -> Result<Option<SnpLaunchConfig>, ConfigError> {
    let cgs = match machine {
        Some(m) => parse_options(m, "type")
            .ok()
            .and_then(|pairs| {
                pairs
                    .into_iter()
                    .find(|(k, _)| k == "confidential-guest-support" || k == "memory-encryption")
            })
            .map(|(_, v)| v),
        None => None,
    };
    // (id, option text, its key=value pairs)
    type Found = (String, String, Vec<(String, String)>);
    let mut found: Vec<Found> = Vec::new();
    for obj in objects {
        let text = obj.as_ref();
        let option = format!("--object {}", clip(text));
        let Ok(pairs) = parse_options(text, "qom-type") else {
            // The sev-guest parser reports syntax errors with the same text.
            continue;
        };
        if !pairs.iter().any(|(k, v)| k == "qom-type" && v == QOM_TYPE) {
            continue;
        }
        let Some(id) = pairs
            .iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.clone())
        else {
            return Err(ConfigError::MissingKey {
                at: Where::Option {
                    option,
                    key: Some("id".into()),
                },
                why: "every --object needs an id".into(),
            });
        };
        found.push((id, option, pairs));
    }
    let Some(want) = cgs else {
        if let Some((id, option, _)) = found.first() {
            return Err(ConfigError::MissingKey {
                at: Where::Option {
                    option: option.clone(),
                    key: None,
                },
                why: format!(
                    "a {QOM_TYPE} object is used through --machine confidential-guest-support={id}"
                ),
            });
        }
        return Ok(None);
    };
    if let Some((id, option, _)) = found.iter().find(|(id, _, _)| *id != want) {
        return Err(ConfigError::Conflict {
            at: Where::Option {
                option: option.clone(),
                key: Some("id".into()),
            },
            msg: format!("{QOM_TYPE} `{id}` is not used: --machine names `{want}`"),
        });
    }
    let Some((id, option, pairs)) = found.into_iter().next() else {
        return Ok(None);
    };
    let base = inputs.base_dir.as_deref();
    let mut raw = SnpRaw::default();
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for (k, v) in &pairs {
        let at = Where::Option {
            option: option.clone(),
            key: Some(k.clone()),
        };
        if seen.insert(k.clone(), ()).is_some() {
            return Err(ConfigError::DuplicateKey {
                at,
                first: "earlier in the same option".into(),
            });
        }
        if k == "qom-type" || k == "id" {
            continue;
        }
        if !QEMU_KEYS.contains(&k.as_str()) {
            let alt = k.replace('_', "-");
            let hint = if QEMU_KEYS.contains(&alt.as_str()) {
                format!("; did you mean `{alt}`?")
            } else {
                format!("; {QOM_TYPE} properties: {}", QEMU_KEYS.join(", "))
            };
            return Err(ConfigError::UnknownKey { at, hint });
        }
        raw.set(k, SnpVal::Str(v), at, base)?;
    }
    let missing_at = |key: &str| Where::Option {
        option: option.clone(),
        key: Some(key.to_string()),
    };
    raw.finish(ConfigSource::QemuObject { id }, inputs, &missing_at, true)
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(n: usize, byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode(vec![byte; n])
    }

    fn parse(obj: &str) -> Result<Option<SnpLaunchConfig>, ConfigError> {
        from_qemu_args(
            &[obj.to_string()],
            Some("q35,confidential-guest-support=snp0"),
            &ValidationInputs::default(),
        )
    }

    #[test]
    fn qemu_defaults_and_every_property() {
        let c = parse("sev-snp-guest,id=snp0,cbitpos=51,reduced-phys-bits=1")
            .unwrap()
            .unwrap();
        assert_eq!(c.policy, 0x30000);
        assert_eq!(c.id_block, None);
        assert!(!c.author_key_enabled && !c.vcek_disabled && !c.kernel_hashes);
        assert_eq!(c.host_data, [0; 32]);
        assert_eq!(c.guest_visible_workarounds, [0; 16]);
        assert_eq!((c.cbitpos, c.reduced_phys_bits), (Some(51), 1));
        let obj = format!(
            "sev-snp-guest,id=snp0,policy=0xB0000,id-block={},id-auth={},author-key-enabled=on,\
             host-data={},vcek-disabled=on,guest-visible-workarounds={},kernel-hashes=on,\
             cbitpos=51,reduced-phys-bits=5",
            b64(96, 1),
            b64(4096, 2),
            b64(32, 3),
            b64(16, 4)
        );
        let c = parse(&obj).unwrap().unwrap();
        assert_eq!(c.policy, 0xB0000);
        assert_eq!(c.id_block.as_deref(), Some(&[1u8; 96][..]));
        assert_eq!(c.id_auth.as_ref().map(Vec::len), Some(4096));
        assert!(c.author_key_enabled && c.vcek_disabled && c.kernel_hashes);
        assert_eq!(c.host_data, [3; 32]);
        assert_eq!(c.guest_visible_workarounds, [4; 16]);
        assert_eq!(c.reduced_phys_bits, 5);
        assert_eq!(c.source, ConfigSource::QemuObject { id: "snp0".into() });
    }

    #[test]
    fn bad_values_name_the_option_and_key() {
        let base = "sev-snp-guest,id=snp0,cbitpos=51,reduced-phys-bits=1";
        for (extra, key, says) in [
            ("id-block=!!!", "id-block", "not base64"),
            (
                &format!("id-block={}", b64(95, 0)),
                "id-block",
                "decodes to 95 bytes",
            ),
            (&format!("id-auth={}", b64(4095, 0)), "id-auth", "4096-byte"),
            (
                &format!("host-data={}", b64(31, 0)),
                "host-data",
                "32-byte HOST_DATA",
            ),
            (
                &format!("guest-visible-workarounds={}", b64(17, 0)),
                "guest-visible-workarounds",
                "16-byte",
            ),
            ("policy=0x10000", "policy", "bit 17"),
            ("policy=0x230000", "policy", "does not support"),
            ("policy=0x4000030000", "policy", "63:26"),
            ("policy=xyz", "policy", "number"),
            ("vcek-disabled=maybe", "vcek-disabled", "on/off"),
            ("policy=0x30000,policy=0x30000", "policy", "duplicate"),
            ("dh-cert-file=x", "dh-cert-file", "unknown key"),
            (
                &format!("id-block={}", b64(96, 0)),
                "id-block",
                "id-auth too",
            ),
            (
                "author-key-enabled=on",
                "author-key-enabled",
                "needs an ID block",
            ),
        ] {
            let obj = format!("{base},{extra}");
            let e = parse(&obj).unwrap_err().to_string();
            assert!(
                e.contains(&format!("key `{key}`")) && e.contains(says),
                "{extra}: {e}"
            );
        }
        let e = parse("sev-snp-guest,id=snp0,cbitpos=51")
            .unwrap_err()
            .to_string();
        assert!(e.contains("reduced-phys-bits"), "{e}");
        let e = parse("sev-snp-guest,id=snp0,reduced-phys-bits=0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `reduced-phys-bits`") && e.contains("1..=63"),
            "{e}"
        );
    }

    #[test]
    fn toml_table_takes_the_same_keys() {
        let i = ValidationInputs::default();
        let text = format!(
            "guest = \"hello\"\n[sev-snp]\npolicy = 0x30000\nhost-data = \"{}\"\n\
             vcek-disabled = true\nbackend = \"soft\"\nplatform-dir = \"plat\"\n\
             guest-channel = \"run/ch.sock\"\n",
            b64(32, 9)
        );
        let t =
            super::super::tomlfile::from_toml_str(&text, Path::new("/etc/vm.toml"), &i).unwrap();
        let c = t.snp.unwrap();
        assert!(t.sev.is_none());
        assert_eq!(c.policy, 0x30000);
        assert_eq!(c.host_data, [9; 32]);
        assert!(c.vcek_disabled);
        assert_eq!(c.reduced_phys_bits, 1, "not required outside QEMU's syntax");
        assert_eq!(c.platform_dir.as_deref(), Some(Path::new("/etc/plat")));
        assert_eq!(
            c.guest_channel.as_deref(),
            Some(Path::new("/etc/run/ch.sock"))
        );
        for (text, line, key, says) in [
            (
                "[sev-snp]\npolicy = 0x20000\nhost-data = \"AAAA\"\n",
                3,
                "host-data",
                "decodes to 3 bytes",
            ),
            ("[sev-snp]\n\npolicy = 1\n", 3, "policy", "bit 17"),
            (
                "[sev-snp]\nid_block = \"x\"\n",
                2,
                "id_block",
                "unknown key",
            ),
            (
                "[sev-snp]\nvcek-disabled = 1.5\n",
                2,
                "vcek-disabled",
                "a boolean",
            ),
            (
                "[sev-snp]\nguest-channel = \"\"\n",
                2,
                "guest-channel",
                "a socket path",
            ),
            (
                "[sev-snp]\n\nguest-channel = 7\n",
                3,
                "guest-channel",
                "a string",
            ),
            (
                "[sev]\npolicy = 1\n[sev-snp]\npolicy = 0x30000\n",
                4,
                "policy",
                "not both",
            ),
        ] {
            let e = super::super::tomlfile::from_toml_str(text, Path::new("vm.toml"), &i)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("vm.toml:{line}: key `{key}`")) && e.contains(says),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn machine_selects_the_object() {
        let i = ValidationInputs::default();
        let obj = ["sev-snp-guest,id=snp0,reduced-phys-bits=1".to_string()];
        let e = from_qemu_args(&obj, None, &i).unwrap_err().to_string();
        assert!(e.contains("confidential-guest-support=snp0"), "{e}");
        let e = from_qemu_args(&obj, Some("confidential-guest-support=other"), &i)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not used"), "{e}");
        // A sev-guest selected: not ours.
        let both = [
            "sev-guest,id=sev0,reduced-phys-bits=1".to_string(),
            "sev-snp-guest,id=snp0,reduced-phys-bits=1".to_string(),
        ];
        assert!(
            from_qemu_args(&both[..1], Some("confidential-guest-support=sev0"), &i)
                .unwrap()
                .is_none()
        );
        assert!(from_qemu_args(&both, Some("confidential-guest-support=snp0"), &i).is_ok());
        // ... and the sev-guest parser leaves the SNP object alone.
        assert!(super::super::qemu::from_qemu_args(
            &both[1..],
            Some("confidential-guest-support=snp0"),
            &i
        )
        .unwrap()
        .is_none());
        let plat = ValidationInputs {
            platform_cbitpos: Some(51),
            ..ValidationInputs::default()
        };
        let e = from_qemu_args(
            &["sev-snp-guest,id=s,cbitpos=47,reduced-phys-bits=1"],
            Some("confidential-guest-support=s"),
            &plat,
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::CbitposMismatch { .. }), "{e}");
    }
}
