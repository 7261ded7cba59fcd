//! QEMU's syntax: `--object sev-guest,id=sev0,...` and `--machine
//! confidential-guest-support=sev0` (or the old alias `memory-encryption=sev0`).
//!
//! Option syntax as QEMU's keyval parser: comma-separated `key=value`, `,,` stands for a
//! literal comma, the first element may omit its key (`qom-type` for `--object`, `type`
//! for `--machine`). Numbers are decimal or `0x` hex; bools are on/off, yes/no, true/false.
//! Properties of `sev-guest`: `policy cbitpos reduced-phys-bits dh-cert-file session-file
//! handle kernel-hashes sev-device legacy-vm-type debug-swap` (and `id`).

use std::collections::BTreeMap;

use super::fields::{Field, Raw, Syntax, Val};
use super::{clip, ConfigError, ConfigSource, SevLaunchConfig, ValidationInputs, Where};

/// Splits QEMU option text into `(key, value)` pairs. `implied` names the key of a first
/// element written without `=`. `,,` is a literal comma.
pub fn parse_options(text: &str, implied: &str) -> Result<Vec<(String, String)>, String> {
    let mut elems: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                elems.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    elems.push(cur);
    let mut out = Vec::with_capacity(elems.len());
    for (i, e) in elems.into_iter().enumerate() {
        if e.is_empty() {
            return Err(if i == 0 {
                "empty option".to_string()
            } else {
                format!("empty parameter after comma number {i}")
            });
        }
        match e.split_once('=') {
            Some((k, v)) => {
                if k.is_empty()
                    || !k
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                {
                    return Err(format!("`{}` is not a parameter name", clip(k)));
                }
                out.push((k.to_string(), v.to_string()));
            }
            None if i == 0 => out.push((implied.to_string(), e)),
            None => {
                return Err(format!(
                    "expected `=` after parameter `{}` (write key=value)",
                    clip(&e)
                ))
            }
        }
    }
    Ok(out)
}

/// A QEMU object id: a letter, then letters, digits, `-`, `.`, `_`.
fn valid_id(id: &str) -> bool {
    let mut b = id.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
}

struct Parsed {
    id: String,
    raw: Raw,
    option: String,
}

/// Builds the launch configuration from every `--object` option's text and the
/// `--machine` option's text. Objects of other types are left alone (their ids still
/// count for duplicates). Returns `Ok(None)` when there is no SEV guest at all.
/// Relative file names resolve against `inputs.base_dir` (default: current directory).
pub fn from_qemu_args<S: AsRef<str>>(
    objects: &[S],
    machine: Option<&str>,
    inputs: &ValidationInputs,
) -> Result<Option<SevLaunchConfig>, ConfigError> {
    let base = inputs.base_dir.as_deref();
    // --machine
    let mut cgs: Option<(String, Where)> = None;
    if let Some(m) = machine {
        let option = format!("--machine {}", clip(m));
        let at = |k: Option<&str>| Where::Option {
            option: option.clone(),
            key: k.map(str::to_string),
        };
        let pairs =
            parse_options(m, "type").map_err(|msg| ConfigError::Syntax { at: at(None), msg })?;
        for (k, v) in pairs {
            if k != "confidential-guest-support" && k != "memory-encryption" {
                continue; // the rest of --machine is not ours
            }
            if v.is_empty() || !valid_id(&v) {
                return Err(ConfigError::InvalidValue {
                    at: at(Some(&k)),
                    value: clip(&v),
                    expected: "an object id (a letter, then letters, digits, `-`, `.`, `_`)".into(),
                });
            }
            if let Some((prev, prev_at)) = &cgs {
                if *prev != v {
                    return Err(ConfigError::Conflict {
                        at: at(Some(&k)),
                        msg: format!(
                            "names `{}` but {prev_at} already names `{prev}` \
                             (memory-encryption is an alias of confidential-guest-support)",
                            clip(&v)
                        ),
                    });
                }
                return Err(ConfigError::DuplicateKey {
                    at: at(Some(&k)),
                    first: format!("as {prev_at}"),
                });
            }
            cgs = Some((v, at(Some(&k))));
        }
    }

    // --object ...
    let mut ids: BTreeMap<String, (String, String)> = BTreeMap::new(); // id -> (type, option)
    let mut sev: Vec<Parsed> = Vec::new();
    for obj in objects {
        let text = obj.as_ref();
        let option = format!("--object {}", clip(text));
        let at = |k: &str| Where::Option {
            option: option.clone(),
            key: Some(k.to_string()),
        };
        let pairs = parse_options(text, "qom-type").map_err(|msg| ConfigError::Syntax {
            at: Where::Option {
                option: option.clone(),
                key: None,
            },
            msg,
        })?;
        let qom_type = pairs
            .iter()
            .find(|(k, _)| k == "qom-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let id = pairs
            .iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.clone());
        let Some(id) = id else {
            if qom_type == "sev-guest" {
                return Err(ConfigError::MissingKey {
                    at: at("id"),
                    why: "every --object needs an id".into(),
                });
            }
            continue;
        };
        if !valid_id(&id) {
            return Err(ConfigError::InvalidValue {
                at: at("id"),
                value: clip(&id),
                expected: "an object id (a letter, then letters, digits, `-`, `.`, `_`)".into(),
            });
        }
        if let Some((_, first)) = ids.get(&id) {
            return Err(ConfigError::DuplicateKey {
                at: at("id"),
                first: format!("object id `{id}` already used by `{first}`"),
            });
        }
        ids.insert(id.clone(), (qom_type.clone(), option.clone()));
        match qom_type.as_str() {
            "sev-guest" => {}
            // SEV-SNP guests are `config::snp`'s.
            _ => continue,
        }
        let mut raw = Raw::default();
        let mut seen: BTreeMap<String, ()> = BTreeMap::new();
        for (k, v) in &pairs {
            if seen.insert(k.clone(), ()).is_some() {
                return Err(ConfigError::DuplicateKey {
                    at: at(k),
                    first: "earlier in the same option".into(),
                });
            }
            if k == "qom-type" || k == "id" {
                continue;
            }
            let Some(field) = Field::from_qemu_property(k) else {
                let alt = k.replace('_', "-");
                let hint = if Field::from_qemu_property(&alt).is_some() {
                    format!("; did you mean `{alt}`?")
                } else {
                    "; sev-guest properties: policy, cbitpos, reduced-phys-bits, dh-cert-file, \
                     session-file, handle, kernel-hashes, sev-device, legacy-vm-type, debug-swap"
                        .to_string()
                };
                return Err(ConfigError::UnknownKey { at: at(k), hint });
            };
            raw.set(field, Val::Str(v), Syntax::Qemu, at(k), base)?;
        }
        sev.push(Parsed { id, raw, option });
    }

    let Some((want, cgs_at)) = cgs else {
        if let Some(p) = sev.first() {
            return Err(ConfigError::MissingKey {
                at: Where::Option {
                    option: p.option.clone(),
                    key: None,
                },
                why: format!(
                    "a sev-guest object is used through --machine confidential-guest-support={}",
                    p.id
                ),
            });
        }
        return Ok(None);
    };
    if let Some(unused) = sev.iter().find(|p| p.id != want) {
        return Err(ConfigError::Conflict {
            at: Where::Option {
                option: unused.option.clone(),
                key: Some("id".into()),
            },
            msg: format!(
                "sev-guest `{}` is not used: --machine names `{want}`",
                unused.id
            ),
        });
    }
    let Some(chosen) = sev.into_iter().next() else {
        if ids
            .get(&want)
            .is_some_and(|(t, _)| t == super::snp::QOM_TYPE)
        {
            // The machine names an SNP guest: `config::snp::from_qemu_args` takes it.
            return Ok(None);
        }
        let msg = match ids.get(&want) {
            Some((t, _)) => format!("object `{want}` is a `{}`, not a sev-guest", clip(t)),
            None => format!("no --object with id `{want}`"),
        };
        return Err(ConfigError::Conflict { at: cgs_at, msg });
    };
    let option = chosen.option.clone();
    let missing_at = |key: &str| Where::Option {
        option: option.clone(),
        key: Some(key.to_string()),
    };
    chosen
        .raw
        .finish(
            ConfigSource::QemuObject { id: chosen.id },
            inputs,
            &missing_at,
            true,
        )
        .map(Some)
}

/// Convenience for a single `--object` text plus a `--machine` text.
pub fn from_qemu_object(
    object: &str,
    machine: &str,
    inputs: &ValidationInputs,
) -> Result<Option<SevLaunchConfig>, ConfigError> {
    from_qemu_args(&[object], Some(machine), inputs)
}
