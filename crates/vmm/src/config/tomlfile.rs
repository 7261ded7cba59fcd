//! The TOML configuration file.
//!
//! Top-level VM keys (all optional): `memory` (MiB as an integer, or a string such as
//! `"512M"`/`"2G"`), `cpus`, `guest` (a bundled guest's name), `firmware`, `kernel`,
//! `initrd`, `cmdline`. A `[sev]` table takes QEMU's `sev-guest` property names in
//! kebab-case: `policy cbitpos reduced-phys-bits dh-cert-file session-file handle
//! kernel-hashes sev-device legacy-vm-type debug-swap`, plus `backend` (`"soft"`/`"hw"`)
//! and `platform-dir`. Numbers may be TOML integers or strings (`"0x5"`). Relative file
//! names resolve against the TOML file's directory. Unknown and duplicate keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::fields::{parse_uint, Field, Raw, Syntax, Val};
use super::{
    check_cli_cpus, check_vm_cpus, clip, line_of, read_config_text, ConfigError, ConfigSource,
    SevLaunchConfig, ValidationInputs, Where,
};

/// The VM keys of a TOML file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSettings {
    /// Guest RAM, MiB.
    pub memory_mib: Option<u64>,
    /// vCPUs.
    pub cpus: Option<u32>,
    /// A bundled guest's name (exclusive with `firmware`/`kernel`).
    pub guest: Option<String>,
    /// A raw firmware image (must exist).
    pub firmware: Option<PathBuf>,
    /// A Linux kernel (must exist).
    pub kernel: Option<PathBuf>,
    /// An initrd (must exist; needs `kernel`).
    pub initrd: Option<PathBuf>,
    /// The kernel command line (needs `kernel`).
    pub cmdline: Option<String>,
    /// `disk = ["path=FILE,readonly=on", ...]`: virtio-blk disks, as `--disk` spells them.
    pub disks: Vec<super::devices::DiskConfig>,
    /// `net = ["tap=NAME,mac=MAC", ...]`: virtio-net cards, as `--net`.
    pub nets: Vec<super::devices::NetConfig>,
    /// `vsock = "cid=N,uds=PATH"`: the vsock device, as `--vsock`.
    pub vsock: Option<super::devices::VsockConfig>,
}

/// A parsed TOML file: VM settings and, if it has a `[sev]` table, the SEV launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlConfig {
    /// The top-level VM keys.
    pub vm: VmSettings,
    /// The `[sev]` table, validated.
    pub sev: Option<SevLaunchConfig>,
    /// The `[sev-snp]` table, validated (exclusive with `[sev]`).
    pub snp: Option<super::snp::SnpLaunchConfig>,
}

type SpVal = Spanned<toml::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    memory: Option<SpVal>,
    cpus: Option<SpVal>,
    guest: Option<SpVal>,
    firmware: Option<SpVal>,
    kernel: Option<SpVal>,
    initrd: Option<SpVal>,
    cmdline: Option<SpVal>,
    disk: Option<SpVal>,
    net: Option<SpVal>,
    vsock: Option<SpVal>,
    sev: Option<BTreeMap<Spanned<String>, SpVal>>,
    #[serde(rename = "sev-snp")]
    sev_snp: Option<BTreeMap<Spanned<String>, SpVal>>,
}

/// The `[sev]` table takes QEMU's `sev-guest` property names plus sevm's two backend keys.
fn field_of(key: &str) -> Option<Field> {
    Field::from_qemu_property(key).or(match key {
        "backend" => Some(Field::Backend),
        "platform-dir" => Some(Field::PlatformDir),
        _ => None,
    })
}

fn as_val(v: &toml::Value) -> Val<'_> {
    match v {
        toml::Value::String(s) => Val::Str(s),
        toml::Value::Integer(i) => Val::Int(*i),
        toml::Value::Boolean(b) => Val::Bool(*b),
        toml::Value::Float(_) => Val::Other("float"),
        toml::Value::Datetime(_) => Val::Other("datetime"),
        toml::Value::Array(_) => Val::Other("array"),
        toml::Value::Table(_) => Val::Other("table"),
    }
}

/// Reads and validates a TOML configuration file.
pub fn from_toml_file(path: &Path, inputs: &ValidationInputs) -> Result<TomlConfig, ConfigError> {
    let text = read_config_text(path)?;
    from_toml_str(&text, path, inputs)
}

/// Validates TOML text; `path` names it in errors and gives the directory that relative
/// file names are resolved against.
pub fn from_toml_str(
    text: &str,
    path: &Path,
    inputs: &ValidationInputs,
) -> Result<TomlConfig, ConfigError> {
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    let at = |span: std::ops::Range<usize>, key: &str| Where::Line {
        file: path.to_path_buf(),
        line: line_of(text, span.start),
        key: key.to_string(),
    };
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        let msg = e.message().to_string();
        // toml names the key in backticks: "unknown field `x`", "duplicate key `x` in ...".
        let key = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("unknown field") || msg.contains("duplicate key"))
            .unwrap_or("")
            .to_string();
        let where_ = Where::Line {
            file: path.to_path_buf(),
            line,
            key,
        };
        if msg.contains("unknown field") {
            ConfigError::UnknownKey {
                at: where_,
                hint: "; top-level keys: memory, cpus, guest, firmware, kernel, initrd, \
                       cmdline, disk, net, vsock, and the [sev] or [sev-snp] table"
                    .to_string(),
            }
        } else if msg.contains("duplicate key") {
            ConfigError::DuplicateKey {
                at: where_,
                first: "earlier in the same table".to_string(),
            }
        } else {
            ConfigError::Syntax { at: where_, msg }
        }
    })?;

    let mut vm = VmSettings::default();
    let invalid = |v: &SpVal, key: &str, expected: &str| ConfigError::InvalidValue {
        at: at(v.span(), key),
        value: clip(&v.get_ref().to_string()),
        expected: expected.to_string(),
    };
    let string = |v: &SpVal, key: &str| -> Result<String, ConfigError> {
        match v.get_ref() {
            toml::Value::String(s) => Ok(s.clone()),
            _ => Err(invalid(v, key, "a string")),
        }
    };
    let existing_file = |v: &SpVal, key: &str| -> Result<PathBuf, ConfigError> {
        let s = string(v, key)?;
        if s.is_empty() {
            return Err(invalid(v, key, "a file name"));
        }
        let p = PathBuf::from(&s);
        let p = match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        };
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(p),
            Ok(m) => Err(ConfigError::MissingFile {
                at: at(v.span(), key),
                path: p,
                reason: format!(
                    "{}; a regular file is needed",
                    sevm_files::describe(m.file_type()).unwrap_or("is not a regular file")
                ),
            }),
            Err(e) => Err(ConfigError::MissingFile {
                at: at(v.span(), key),
                path: p,
                reason: e.to_string(),
            }),
        }
    };

    if let Some(v) = &doc.memory {
        // The VM's own check (`Vm::build` runs it too), so `config check` refuses what `run`
        // refuses.
        let vm_check = |mib: u64| {
            mib.checked_mul(1 << 20)
                .ok_or_else(|| "the size overflows 64 bits".to_string())
                .and_then(|b| crate::memory::check_memory_size(b).map_err(|e| e.to_string()))
        };
        let mib = match v.get_ref() {
            toml::Value::Integer(i) => u64::try_from(*i).ok(),
            toml::Value::String(s) => parse_size_mib(s)
                .map_err(|e| invalid(v, "memory", &e))
                .map(Some)?,
            _ => {
                return Err(invalid(
                    v,
                    "memory",
                    "MiB as an integer, or \"512M\" / \"2G\"",
                ))
            }
        };
        match mib
            .ok_or_else(|| "a negative size".to_string())
            .and_then(|m| {
                vm_check(m)?;
                Ok(m)
            }) {
            Ok(m) => vm.memory_mib = Some(m),
            Err(why) => {
                return Err(ConfigError::OutOfRange {
                    at: at(v.span(), "memory"),
                    value: clip(&v.get_ref().to_string()),
                    range: format!(
                        "{}..={} MiB, the VM's limits ({why})",
                        crate::layout::RAM_MIN >> 20,
                        crate::layout::RAM_MAX >> 20
                    ),
                })
            }
        }
    }
    if let Some(cli) = inputs.cli_cpus {
        check_cli_cpus(cli)?;
    }
    let mut cpus_raw: Option<(u32, Where)> = None;
    if let Some(v) = &doc.cpus {
        let n = match v.get_ref() {
            toml::Value::Integer(i) => *i,
            _ => return Err(invalid(v, "cpus", "an integer")),
        };
        // `cpus` is the VM's vCPU count, so the VM's limit applies (not only the SEV one).
        let n = u32::from(check_vm_cpus(n, at(v.span(), "cpus"))?);
        if let Some(cli) = inputs.cli_cpus {
            if cli != n {
                return Err(ConfigError::Mismatch {
                    at: at(v.span(), "cpus"),
                    msg: format!("{n} vCPUs here, but --cpus {cli}"),
                });
            }
        }
        vm.cpus = Some(n);
        cpus_raw = Some((n, at(v.span(), "cpus")));
    }
    if let Some(v) = &doc.guest {
        let s = string(v, "guest")?;
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                v,
                "guest",
                "a bundled guest's name (letters, digits, - and _)",
            ));
        }
        vm.guest = Some(s);
    }
    if let Some(v) = &doc.firmware {
        vm.firmware = Some(existing_file(v, "firmware")?);
    }
    if let Some(v) = &doc.kernel {
        vm.kernel = Some(existing_file(v, "kernel")?);
    }
    if let Some(v) = &doc.initrd {
        vm.initrd = Some(existing_file(v, "initrd")?);
    }
    if let Some(v) = &doc.cmdline {
        let s = string(v, "cmdline")?;
        if s.contains('\0') {
            return Err(invalid(v, "cmdline", "text without NUL bytes"));
        }
        vm.cmdline = Some(s);
    }
    // Device specs: the CLI's syntax, one string each (`disk` and `net` take an array).
    let specs = |v: &SpVal, key: &str| -> Result<Vec<String>, ConfigError> {
        match v.get_ref() {
            toml::Value::Array(a) => a
                .iter()
                .map(|e| match e {
                    toml::Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid(v, key, "an array of strings")),
                })
                .collect(),
            _ => Err(invalid(
                v,
                key,
                "an array of strings, e.g. [\"path=disk.img\"]",
            )),
        }
    };
    let spec_err =
        |v: &SpVal, key: &str, e: super::devices::DeviceSpecError| invalid(v, key, &e.what);
    if let Some(v) = &doc.disk {
        for d in specs(v, "disk")? {
            let mut c = super::devices::parse_disk(&d).map_err(|e| spec_err(v, "disk", e))?;
            if let (Some(b), true) = (base, c.path.is_relative()) {
                c.path = b.join(&c.path);
            }
            vm.disks.push(c);
        }
    }
    if let Some(v) = &doc.net {
        for n in specs(v, "net")? {
            vm.nets
                .push(super::devices::parse_net(&n).map_err(|e| spec_err(v, "net", e))?);
        }
    }
    if let Some(v) = &doc.vsock {
        let s = string(v, "vsock")?;
        vm.vsock = Some(super::devices::parse_vsock(&s).map_err(|e| spec_err(v, "vsock", e))?);
    }
    if let (Some(g), true) = (&doc.guest, vm.kernel.is_some() || vm.firmware.is_some()) {
        return Err(ConfigError::Conflict {
            at: at(g.span(), "guest"),
            msg: "a bundled guest excludes firmware and kernel".into(),
        });
    }
    for (name, v) in [("initrd", &doc.initrd), ("cmdline", &doc.cmdline)] {
        if let (Some(v), None) = (v, &vm.kernel) {
            return Err(ConfigError::Conflict {
                at: at(v.span(), name),
                msg: format!("{name} needs kernel"),
            });
        }
    }

    let sev = match &doc.sev {
        None => None,
        Some(table) => {
            let mut raw = Raw::default();
            for (k, v) in table {
                let key = k.get_ref().as_str();
                let where_ = at(k.span(), key);
                let Some(field) = field_of(key) else {
                    let alt = key.replace('_', "-");
                    let hint = if field_of(&alt).is_some() {
                        format!("; did you mean `{alt}` (QEMU's name)?")
                    } else {
                        "; [sev] keys: policy, cbitpos, reduced-phys-bits, dh-cert-file, \
                         session-file, handle, kernel-hashes, sev-device, legacy-vm-type, \
                         debug-swap, backend, platform-dir"
                            .to_string()
                    };
                    return Err(ConfigError::UnknownKey { at: where_, hint });
                };
                raw.set(field, as_val(v.get_ref()), Syntax::Toml, where_, base)?;
            }
            raw.cpus = cpus_raw;
            let missing_at = |key: &str| Where::File {
                file: path.to_path_buf(),
                key: Some(format!("sev.{key}")),
            };
            Some(raw.finish(
                ConfigSource::Toml {
                    path: path.to_path_buf(),
                },
                inputs,
                &missing_at,
                false,
            )?)
        }
    };
    let snp = match &doc.sev_snp {
        None => None,
        Some(table) => {
            if let (Some(_), Some((k, _))) = (&doc.sev, table.iter().next()) {
                return Err(ConfigError::Conflict {
                    at: at(k.span(), k.get_ref()),
                    msg: "a file has either a [sev] table (SEV, SEV-ES) or a [sev-snp] table, \
                          not both"
                        .into(),
                });
            }
            let mut raw = super::snp::SnpRaw::default();
            for (k, v) in table {
                let key = k.get_ref().as_str();
                let where_ = at(k.span(), key);
                let val = match v.get_ref() {
                    toml::Value::String(s) => super::snp::SnpVal::Str(s),
                    toml::Value::Integer(i) => super::snp::SnpVal::Int(*i),
                    toml::Value::Boolean(b) => super::snp::SnpVal::Bool(*b),
                    other => super::snp::SnpVal::Other(other.type_str()),
                };
                raw.set(key, val, where_, base)?;
            }
            let missing_at = |key: &str| Where::File {
                file: path.to_path_buf(),
                key: Some(format!("sev-snp.{key}")),
            };
            Some(raw.finish(
                ConfigSource::Toml {
                    path: path.to_path_buf(),
                },
                inputs,
                &missing_at,
                false,
            )?)
        }
    };
    Ok(TomlConfig { vm, sev, snp })
}

/// Parses `"512M"`, `"2G"`, `"512MiB"`, `"1GiB"` or a bare number (MiB).
fn parse_size_mib(s: &str) -> Result<u64, String> {
    let expected = "a size such as \"512M\" or \"2G\" (MiB if no suffix)";
    let (num, mult) = if let Some(n) = s.strip_suffix("GiB").or_else(|| s.strip_suffix('G')) {
        (n, 1024u64)
    } else if let Some(n) = s.strip_suffix("MiB").or_else(|| s.strip_suffix('M')) {
        (n, 1)
    } else {
        (s, 1)
    };
    let n = parse_uint(num).map_err(|_| expected.to_string())?;
    n.checked_mul(mult).ok_or_else(|| expected.to_string())
}
