//! The 2016 RFC's `[sev-launch]` file (`--sev-config FILE`).
//!
//! Syntax, as QEMU's `qemu_config_parse` read it: one `[sev-launch]` section, lines of
//! `key = "value"` (values always in double quotes), `#` comment lines, blank lines.
//! Keys: the seed's `flags policy dh_pub_qx dh_pub_qy nonce vcpu_count vcpu_length
//! vcpu_mask`, today's `dh_cert_file session_file`, and sevm's extensions `cbitpos
//! reduced_phys_bits handle kernel_hashes`. See `docs/CONFIG.md` for the mapping.
//! Unlike the 2016 parser, hex values of the wrong length are refused, not copied past
//! the end of a fixed buffer.

use std::collections::BTreeMap;
use std::path::Path;

use super::fields::{Field, Raw, Syntax, Val};
use super::{
    clip, read_config_text, ConfigError, ConfigSource, SevLaunchConfig, ValidationInputs, Where,
};

/// The section name.
pub const SECTION: &str = "sev-launch";

/// Maps a `[sev-launch]` key to its field.
fn field_of(key: &str) -> Option<Field> {
    Some(match key {
        "flags" => Field::Flags,
        "policy" => Field::Policy,
        "dh_pub_qx" => Field::DhPubQx,
        "dh_pub_qy" => Field::DhPubQy,
        "nonce" => Field::Nonce,
        "vcpu_count" => Field::VcpuCount,
        "vcpu_length" => Field::VcpuLength,
        "vcpu_mask" => Field::VcpuMask,
        "dh_cert_file" => Field::DhCertFile,
        "session_file" => Field::SessionFile,
        "cbitpos" => Field::Cbitpos,
        "reduced_phys_bits" => Field::ReducedPhysBits,
        "handle" => Field::Handle,
        "kernel_hashes" => Field::KernelHashes,
        _ => return None,
    })
}

/// Reads and validates a `[sev-launch]` file. Relative file names in it are resolved
/// against the file's directory.
pub fn from_sev_launch_file(
    path: &Path,
    inputs: &ValidationInputs,
) -> Result<SevLaunchConfig, ConfigError> {
    let text = read_config_text(path)?;
    from_sev_launch_str(&text, path, inputs)
}

/// Validates `[sev-launch]` text; `path` names it in errors and gives the directory that
/// relative file names are resolved against.
pub fn from_sev_launch_str(
    text: &str,
    path: &Path,
    inputs: &ValidationInputs,
) -> Result<SevLaunchConfig, ConfigError> {
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    let text = text.strip_prefix('\u{feff}').unwrap_or(text); // a UTF-8 byte order mark
    let mut raw = Raw::default();
    let mut seen: BTreeMap<Field, usize> = BTreeMap::new();
    let mut section_line: Option<usize> = None;
    let at_line = |line: usize, key: &str| Where::Line {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
    };
    for (idx, raw_line) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(ConfigError::Syntax {
                    at: at_line(lineno, ""),
                    msg: format!("section header `{}` lacks its `]`", clip(line)),
                });
            };
            let name = name.trim();
            if name != SECTION {
                return Err(ConfigError::Syntax {
                    at: at_line(lineno, ""),
                    msg: format!(
                        "unknown section `[{}]`; this file has one `[{SECTION}]` section",
                        clip(name)
                    ),
                });
            }
            if let Some(first) = section_line {
                return Err(ConfigError::Syntax {
                    at: at_line(lineno, ""),
                    msg: format!("second `[{SECTION}]` section (the first is at line {first})"),
                });
            }
            section_line = Some(lineno);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::Syntax {
                at: at_line(lineno, ""),
                msg: format!("expected `key = \"value\"`, got `{}`", clip(line)),
            });
        };
        let key = key.trim();
        let value = value.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::Syntax {
                at: at_line(lineno, ""),
                msg: format!("`{}` is not a key name", clip(key)),
            });
        }
        if section_line.is_none() {
            return Err(ConfigError::Syntax {
                at: at_line(lineno, key),
                msg: format!("key outside a section; start the file with `[{SECTION}]`"),
            });
        }
        let Some(field) = field_of(key) else {
            let alt = key.replace('-', "_");
            let hint = if field_of(&alt).is_some() {
                format!("; did you mean `{alt}`?")
            } else {
                format!(
                    "; [{SECTION}] keys: flags, policy, dh_pub_qx, dh_pub_qy, nonce, vcpu_count, \
                     vcpu_length, vcpu_mask, dh_cert_file, session_file, cbitpos, \
                     reduced_phys_bits, handle, kernel_hashes"
                )
            };
            return Err(ConfigError::UnknownKey {
                at: at_line(lineno, key),
                hint,
            });
        };
        let inner = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.contains('"'));
        let Some(inner) = inner else {
            return Err(ConfigError::Syntax {
                at: at_line(lineno, key),
                msg: format!(
                    "value `{}` must be one string in double quotes, as in {key} = \"...\"",
                    clip(value)
                ),
            });
        };
        if let Some(first) = seen.insert(field, lineno) {
            return Err(ConfigError::DuplicateKey {
                at: at_line(lineno, key),
                first: format!("at line {first}"),
            });
        }
        raw.set(
            field,
            Val::Str(inner),
            Syntax::SevLaunch,
            at_line(lineno, key),
            base,
        )?;
    }
    if section_line.is_none() {
        return Err(ConfigError::Syntax {
            at: Where::File {
                file: path.to_path_buf(),
                key: None,
            },
            msg: format!("no `[{SECTION}]` section"),
        });
    }
    let missing_at = |key: &str| Where::File {
        file: path.to_path_buf(),
        key: Some(key.to_string()),
    };
    raw.finish(
        ConfigSource::SevLaunch {
            path: path.to_path_buf(),
        },
        inputs,
        &missing_at,
        false,
    )
}
