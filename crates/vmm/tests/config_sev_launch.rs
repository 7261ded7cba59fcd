//! The seed's `[sev-launch]` file: every key, every error kind, the seed's own sample.

mod config_common;

use std::path::{Path, PathBuf};

use config_common::{
    assert_kind, hex, line_key, make_owner, owner_in, owner_key_lines, read_b64, valid_sev_launch,
    write_b64, write_owner_files, Owner,
};
use vmm::config::sevlaunch::{from_sev_launch_file, from_sev_launch_str};
use vmm::config::{ConfigError, ConfigSource, SevLaunchConfig, ValidationInputs};

/// The sample exactly as the 2016 patch's commit message shows it.
const SEED_SAMPLE: &str = "[sev-launch]
flags = \"00000000\"
policy = \"000000\"
dh_pub_qx = \"0123456789abcdef0123456789abcdef\"
dh_pub_qy = \"0123456789abcdef0123456789abcdef\"
nonce = \"0123456789abcdef\"
vcpu_count = \"1\"
vcpu_length = \"30\"
vcpu_mask = \"00ab\"
";

fn inputs() -> ValidationInputs {
    ValidationInputs::default()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// Writes `owner`'s files and a valid `sev.conf` for it into `dir`; returns the config path.
fn write_valid_config(dir: &Path, owner: &Owner) -> PathBuf {
    write_owner_files(dir, owner);
    write(dir, "sev.conf", &valid_sev_launch(owner))
}

/// Writes `text` as `dir/seed.conf`, parses that file (default inputs) and returns the refusal.
#[track_caller]
fn seed_file_refused(dir: &Path, text: &str) -> ConfigError {
    let p = write(dir, "seed.conf", text);
    from_sev_launch_file(&p, &inputs()).expect_err("must be refused")
}

/// Parses `text` as the file `name` (default inputs) and returns the refusal.
#[track_caller]
fn refused(text: &str, name: &str) -> ConfigError {
    from_sev_launch_str(text, Path::new(name), &inputs()).expect_err("must be refused")
}

/// Parses `text` as the file `name` (default inputs); it must be accepted.
#[track_caller]
fn accepted(text: &str, name: &str) -> SevLaunchConfig {
    from_sev_launch_str(text, Path::new(name), &inputs()).expect("must be accepted")
}

/// Runs a valid config for a fresh owner with one line replaced (by key prefix) and returns
/// the error.
#[track_caller]
fn with_line(dir: &Path, replace: &str, by: &str) -> ConfigError {
    with_line_owner(dir, &make_owner(), replace, by)
}

/// [`with_line`] replacing the line of `key` by `key = "value"`.
#[track_caller]
fn with_value(dir: &Path, key: &str, value: &str) -> ConfigError {
    with_line(dir, key, &format!("{key} = \"{value}\""))
}

/// [`with_line`] for a given `owner`.
#[track_caller]
fn with_line_owner(dir: &Path, owner: &Owner, replace: &str, by: &str) -> ConfigError {
    write_owner_files(dir, owner);
    let text: String = valid_sev_launch(owner)
        .lines()
        .map(|l| {
            if l.starts_with(replace) {
                format!("{by}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let p = write(dir, "sev.conf", &text);
    from_sev_launch_file(&p, &inputs()).expect_err("must be refused")
}

#[test]
fn seed_sample_is_refused_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let e = seed_file_refused(dir.path(), SEED_SAMPLE);
    assert_kind!(
        e,
        ConfigError::HexLength {
            got_bytes: 16,
            want_bytes: 48,
            ..
        }
    );
    assert_eq!(line_key(&e), (4, "dh_pub_qx".to_string()));
    let msg = e.to_string();
    assert!(msg.contains("seed.conf:4"), "{msg}");
    assert!(msg.contains("dh_pub_qx"), "{msg}");
}

#[test]
fn seed_sample_nonce_is_refused_too() {
    // With real coordinates, the sample's 8-byte nonce is the next refusal.
    let dir = tempfile::tempdir().unwrap();
    let owner = make_owner();
    let text = SEED_SAMPLE
        .replace(
            "dh_pub_qx = \"0123456789abcdef0123456789abcdef\"",
            &format!("dh_pub_qx = \"{}\"", hex(&owner.qx_le)),
        )
        .replace(
            "dh_pub_qy = \"0123456789abcdef0123456789abcdef\"",
            &format!("dh_pub_qy = \"{}\"", hex(&owner.qy_le)),
        );
    let e = seed_file_refused(dir.path(), &text);
    assert_kind!(
        e,
        ConfigError::HexLength {
            got_bytes: 8,
            want_bytes: 16,
            ..
        }
    );
    assert_eq!(line_key(&e), (6, "nonce".to_string()));
    assert!(e.to_string().contains("seed.conf:6"), "{e}");
}

#[test]
fn valid_file_with_real_certificate_and_session() {
    let dir = tempfile::tempdir().unwrap();
    let owner = make_owner();
    let p = write_valid_config(dir.path(), &owner);
    let cfg = from_sev_launch_file(
        &p,
        &ValidationInputs {
            platform_cbitpos: Some(51),
            cli_cpus: Some(2),
            base_dir: None,
        },
    )
    .unwrap();
    assert_eq!(cfg.policy, 5);
    assert!(cfg.es());
    assert_eq!(
        cfg.owner.as_ref().map(|o| o.godh.encode()).as_deref(),
        Some(owner.cert.as_slice())
    );
    assert_eq!(
        cfg.owner
            .as_ref()
            .map(|o| o.session.to_bytes().to_vec())
            .as_deref(),
        Some(owner.session.as_slice())
    );
    assert_eq!(cfg.vcpus, Some(2));
    assert_eq!(cfg.reduced_phys_bits, 1);
    assert_eq!(cfg.cbitpos, None);
    assert_eq!(cfg.handle, 0);
    assert!(!cfg.kernel_hashes);
    assert_eq!(cfg.source, ConfigSource::SevLaunch { path: p.clone() });
}

#[test]
fn extension_keys_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[sev-launch]\npolicy = \"0x1\"\ncbitpos = \"47\"\nreduced_phys_bits = \"5\"\n\
                handle = \"0x10\"\nkernel_hashes = \"on\"\nvcpu_count = \"4\"\n";
    let cfg = from_sev_launch_str(
        text,
        &dir.path().join("x.conf"),
        &ValidationInputs {
            platform_cbitpos: Some(47),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(cfg.policy, 1);
    assert_eq!(cfg.cbitpos, Some(47));
    assert_eq!(cfg.reduced_phys_bits, 5);
    assert_eq!(cfg.handle, 16);
    assert!(cfg.kernel_hashes);
    assert_eq!(cfg.vcpus, Some(4));
    assert!(cfg.owner.is_none());
    // An empty section: QEMU's default policy, nothing else.
    let cfg = accepted("\u{feff}[sev-launch]\r\n", "e.conf");
    assert_eq!(cfg.policy, 1);
    assert_eq!(cfg.vcpus, None);
}

#[test]
fn coordinates_big_endian_are_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let owner = make_owner();
    let mut be = owner.qx_le;
    be.reverse();
    let e = with_line_owner(
        dir.path(),
        &owner,
        "dh_pub_qx",
        &format!("dh_pub_qx = \"{}\"", hex(&be)),
    );
    assert_kind!(e, ConfigError::Mismatch { .. });
    assert_eq!(line_key(&e), (5, "dh_pub_qx".into()));
    assert!(e.to_string().contains("big-endian"), "{e}");
}

#[test]
fn coordinate_of_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = make_owner();
    let e = with_value(dir.path(), "dh_pub_qy", &hex(&other.qy_le));
    assert_kind!(e, ConfigError::Mismatch { .. });
    assert_eq!(line_key(&e), (6, "dh_pub_qy".into()));
}

#[test]
fn nonce_must_equal_the_session_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let e = with_value(dir.path(), "nonce", &"ab".repeat(16));
    assert_kind!(e, ConfigError::Mismatch { .. });
    assert_eq!(line_key(&e), (7, "nonce".into()));
}

#[test]
fn long_hex_is_refused_not_overflowed() {
    let dir = tempfile::tempdir().unwrap();
    let e = with_value(dir.path(), "dh_pub_qx", &"a".repeat(4000));
    assert_kind!(
        e,
        ConfigError::HexLength {
            got_digits: 4000,
            ..
        }
    );
    let e = with_value(dir.path(), "nonce", &"0".repeat(34));
    assert_kind!(e, ConfigError::HexLength { got_digits: 34, .. });
    let e = with_value(dir.path(), "vcpu_mask", &"f".repeat(1000));
    assert_kind!(e, ConfigError::HexLength { .. });
    assert_eq!(line_key(&e).1, "vcpu_mask");
}

#[test]
fn non_hex_and_odd_hex_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = with_value(dir.path(), "nonce", &format!("{}zz", "0".repeat(30)));
    assert_kind!(e, ConfigError::InvalidValue { .. });
    let e = with_value(dir.path(), "vcpu_mask", "003");
    assert_kind!(e, ConfigError::HexLength { .. });
    let e = with_value(dir.path(), "policy", "-1");
    assert_kind!(e, ConfigError::InvalidValue { .. });
}

#[test]
fn flags_must_be_zero() {
    let dir = tempfile::tempdir().unwrap();
    let e = with_value(dir.path(), "flags", "00000001");
    assert_kind!(e, ConfigError::Unsupported { .. });
    assert_eq!(line_key(&e), (3, "flags".into()));
    let e = with_value(dir.path(), "flags", "000000000");
    assert!(
        matches!(e, ConfigError::InvalidValue { .. }),
        "9 digits: {e}"
    );
}

#[test]
fn policy_range_and_reserved_bits() {
    let dir = tempfile::tempdir().unwrap();
    let e = with_value(dir.path(), "policy", "100000000");
    assert_kind!(e, ConfigError::InvalidValue { .. });
    let e = with_value(dir.path(), "policy", "40");
    assert!(
        matches!(e, ConfigError::OutOfRange { .. }),
        "bit 6 reserved: {e}"
    );
    assert_eq!(line_key(&e), (4, "policy".into()));
}

#[test]
fn vcpu_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let e = with_value(dir.path(), "vcpu_count", "0");
    assert_kind!(e, ConfigError::OutOfRange { .. });
    let e = with_value(dir.path(), "vcpu_count", "5000");
    assert_kind!(e, ConfigError::OutOfRange { .. });
    let e = with_value(dir.path(), "vcpu_count", "x");
    assert_kind!(e, ConfigError::InvalidValue { .. });
    // Mask naming vCPUs 0 and 2 but not 1: sevm cannot leave vCPU 1 out.
    let e = with_value(dir.path(), "vcpu_mask", "05");
    assert_kind!(e, ConfigError::Unsupported { .. });
    assert_eq!(line_key(&e).1, "vcpu_mask");
    // Mask naming 3 vCPUs with vcpu_count 2.
    let e = with_value(dir.path(), "vcpu_mask", "07");
    assert_kind!(e, ConfigError::Unsupported { .. });
    // The 2016 overflow: mask longer than vcpu_length.
    let e = with_value(dir.path(), "vcpu_mask", "0300");
    assert_kind!(e, ConfigError::Conflict { .. });
    assert_eq!(line_key(&e).1, "vcpu_length");
    let e = with_value(dir.path(), "vcpu_length", "0");
    assert_kind!(e, ConfigError::OutOfRange { .. });
    let e = with_value(dir.path(), "vcpu_length", "129");
    assert_kind!(e, ConfigError::OutOfRange { .. });
}

#[test]
fn vcpu_count_must_agree_with_cli() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_valid_config(dir.path(), &make_owner());
    let e = from_sev_launch_file(
        &p,
        &ValidationInputs {
            cli_cpus: Some(3),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_kind!(e, ConfigError::Mismatch { .. });
    assert_eq!(line_key(&e), (8, "vcpu_count".into()));
    assert!(e.to_string().contains("--cpus 3"), "{e}");
}

#[test]
fn mask_alone_gives_vcpu_count() {
    let cfg = accepted("[sev-launch]\nvcpu_mask = \"0f\"\n", "m.conf");
    assert_eq!(cfg.vcpus, Some(4));
}

#[test]
fn syntax_errors_name_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("policy = \"1\"\n", 1, "outside a section"),
        ("[sev-launch]\npolicy = 1\n", 2, "double quotes"),
        ("[sev-launch]\npolicy = \"1\" \"2\"\n", 2, "double quotes"),
        ("[sev-launch]\njust words\n", 2, "expected"),
        ("[sev-launch\n", 1, "lacks"),
        ("[other]\n", 1, "unknown section"),
        ("[sev-launch]\n[sev-launch]\n", 2, "second"),
        ("[sev-launch]\n bad key = \"1\"\n", 2, "not a key name"),
    ];
    for (text, line, needle) in cases {
        let e = refused(text, "s.conf");
        assert!(matches!(e, ConfigError::Syntax { .. }), "{text:?}: {e}");
        assert_eq!(line_key(&e).0, *line, "{text:?}: {e}");
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
    let e = refused("# nothing\n", "s.conf");
    assert!(e.to_string().contains("no `[sev-launch]` section"), "{e}");
}

#[test]
fn unknown_and_duplicate_keys() {
    let e = refused(
        "[sev-launch]\npolicy = \"1\"\nreduced-phys-bits = \"1\"\n",
        "s.conf",
    );
    assert_kind!(e, ConfigError::UnknownKey { .. });
    assert_eq!(line_key(&e), (3, "reduced-phys-bits".into()));
    assert!(e.to_string().contains("reduced_phys_bits"), "hint: {e}");
    let e = refused("[sev-launch]\ntype = \"encrypted\"\n", "s.conf");
    assert_kind!(e, ConfigError::UnknownKey { .. });
    let e = refused("[sev-launch]\npolicy = \"1\"\n\npolicy = \"1\"\n", "s.conf");
    assert_kind!(e, ConfigError::DuplicateKey { .. });
    assert_eq!(line_key(&e), (4, "policy".into()));
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn owner_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    // Missing certificate file.
    let e = with_value(dir.path(), "dh_cert_file", "nope.b64");
    assert_kind!(e, ConfigError::MissingFile { .. });
    assert_eq!(line_key(&e), (11, "dh_cert_file".into()));
    assert!(e.to_string().contains("nope.b64"), "{e}");
    // Not base64.
    std::fs::write(dir.path().join("bad.b64"), "not base64 !!!").unwrap();
    let e = with_value(dir.path(), "session_file", "bad.b64");
    assert_kind!(e, ConfigError::OwnerFile { .. });
    assert_eq!(line_key(&e).1, "session_file");
    // Wrong size.
    write_b64(&dir.path().join("short.b64"), &[0u8; 100]);
    let e = with_value(dir.path(), "session_file", "short.b64");
    assert!(e.to_string().contains("100 bytes"), "{e}");
    // A certificate on the wrong curve.
    let mut owner = make_owner();
    owner.cert[0x10] = 1;
    let e = with_line_owner(dir.path(), &owner, "policy", "policy = \"1\"");
    assert_kind!(e, ConfigError::OwnerFile { .. });
    assert!(e.to_string().contains("curve"), "{e}");
    // A certificate without a session, a session without a certificate.
    let e = with_line(dir.path(), "session_file", "");
    assert_kind!(e, ConfigError::Conflict { .. });
    assert_eq!(line_key(&e).1, "dh_cert_file");
    let dir2 = tempfile::tempdir().unwrap();
    owner_in(dir2.path());
    let e = from_sev_launch_str(
        "[sev-launch]\nsession_file = \"session.b64\"\n",
        &dir2.path().join("c.conf"),
        &inputs(),
    )
    .unwrap_err();
    assert_kind!(e, ConfigError::Conflict { .. });
}

#[test]
fn seed_keys_need_todays_files() {
    let owner = make_owner();
    let e = refused(
        &format!(
            "[sev-launch]\ndh_pub_qx = \"{}\"\ndh_pub_qy = \"{}\"\n",
            hex(&owner.qx_le),
            hex(&owner.qy_le)
        ),
        "k.conf",
    );
    assert_kind!(e, ConfigError::Conflict { .. });
    assert!(e.to_string().contains("dh_cert_file"), "{e}");
    let e = refused(
        &format!("[sev-launch]\ndh_pub_qx = \"{}\"\n", hex(&owner.qx_le)),
        "k.conf",
    );
    assert!(e.to_string().contains("go together"), "{e}");
    let e = refused(
        &format!("[sev-launch]\nnonce = \"{}\"\n", "00".repeat(16)),
        "k.conf",
    );
    assert_kind!(e, ConfigError::Conflict { .. });
    assert!(e.to_string().contains("session_file"), "{e}");
}

#[test]
fn cbitpos_and_reduced_phys_bits() {
    let e = from_sev_launch_str(
        "[sev-launch]\ncbitpos = \"47\"\n",
        Path::new("c.conf"),
        &ValidationInputs {
            platform_cbitpos: Some(51),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_kind!(
        e,
        ConfigError::CbitposMismatch {
            platform: 51,
            requested: 47,
            ..
        }
    );
    assert_eq!(line_key(&e), (2, "cbitpos".into()));
    for bad in ["0", "64", "99999999999999999999999"] {
        let e = refused(
            &format!("[sev-launch]\nreduced_phys_bits = \"{bad}\"\n"),
            "c.conf",
        );
        assert!(
            matches!(
                e,
                ConfigError::OutOfRange { .. } | ConfigError::InvalidValue { .. }
            ),
            "{bad}: {e}"
        );
        assert_eq!(line_key(&e).1, "reduced_phys_bits");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let e = from_sev_launch_file(Path::new("/nonexistent/sev.conf"), &inputs()).unwrap_err();
    assert_kind!(e, ConfigError::ReadConfig { .. });
    assert!(e.to_string().contains("/nonexistent/sev.conf"), "{e}");
}

/// Owner files as the real `sevctl session` writes them.
#[test]
fn files_from_real_sevctl_session() {
    let home = std::env::var("HOME").unwrap_or_default();
    let sevctl = Path::new(&home).join(".cargo/bin/sevctl");
    let chain = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/derived/naples_sev_chain_pdh_pek_oca_cek.bin");
    for (what, p) in [("sevctl", &sevctl), ("testdata", &chain)] {
        if !p.exists() {
            if std::env::var_os("CI").is_some() {
                panic!("{what} missing at {}", p.display());
            }
            eprintln!("SKIP: {what} missing at {}", p.display());
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let st = std::process::Command::new(&sevctl)
        .current_dir(dir.path())
        .args(["session", "--name", "t"])
        .arg(&chain)
        .arg("1")
        .status()
        .expect("run sevctl");
    assert!(st.success());
    let session = read_b64(&dir.path().join("t_session.b64"));
    let cert = read_b64(&dir.path().join("t_godh.b64"));
    let (qx, qy) = vmm::config::godh_public_key_le(&cert).unwrap();
    let text = format!(
        "[sev-launch]\npolicy = \"1\"\n{}\
         dh_cert_file = \"t_godh.b64\"\nsession_file = \"t_session.b64\"\n",
        owner_key_lines(&qx, &qy, &session)
    );
    let p = write(dir.path(), "sev.conf", &text);
    let cfg = from_sev_launch_file(&p, &inputs()).unwrap();
    assert_eq!(
        cfg.owner
            .as_ref()
            .map(|o| o.session.to_bytes().to_vec())
            .as_deref(),
        Some(session.as_slice())
    );
    assert_eq!(
        cfg.owner.as_ref().map(|o| o.godh.encode()).as_deref(),
        Some(cert.as_slice())
    );
}
