//! Robustness: arbitrary input into each parser returns Ok or a located error, never panics.

use std::path::Path;

use proptest::prelude::*;
use vmm::config::qemu::{from_qemu_args, parse_options};
use vmm::config::sevlaunch::from_sev_launch_str;
use vmm::config::tomlfile::from_toml_str;
use vmm::config::{godh_public_key_le, ValidationInputs};

fn inputs() -> ValidationInputs {
    ValidationInputs {
        platform_cbitpos: Some(51),
        cli_cpus: Some(2),
        base_dir: Some("/nonexistent".into()),
    }
}

const SEV_LAUNCH_KEYS: &[&str] = &[
    "flags",
    "policy",
    "dh_pub_qx",
    "dh_pub_qy",
    "nonce",
    "vcpu_count",
    "vcpu_length",
    "vcpu_mask",
    "dh_cert_file",
    "session_file",
    "cbitpos",
    "reduced_phys_bits",
    "handle",
    "kernel_hashes",
    "bogus",
];

const QEMU_KEYS: &[&str] = &[
    "policy",
    "cbitpos",
    "reduced-phys-bits",
    "dh-cert-file",
    "session-file",
    "handle",
    "kernel-hashes",
    "sev-device",
    "legacy-vm-type",
    "debug-swap",
    "id",
    "qom-type",
];

/// Values that exercise the edges: hex of many lengths, numbers, bools, junk.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fA-F]{0,200}",
        "(0x)?[0-9]{0,25}",
        "-?[0-9]{1,30}",
        Just("on".to_string()),
        Just("auto".to_string()),
        ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn sev_launch_random_text(text in ".{0,400}") {
        let _ = from_sev_launch_str(&text, Path::new("r.conf"), &inputs());
    }

    #[test]
    fn sev_launch_random_keys(lines in proptest::collection::vec(
        (proptest::sample::select(SEV_LAUNCH_KEYS), value(), any::<bool>()), 0..12)) {
        let mut text = String::from("[sev-launch]\n");
        for (k, v, quoted) in &lines {
            if *quoted {
                text.push_str(&format!("{k} = \"{v}\"\n"));
            } else {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        if let Err(e) = from_sev_launch_str(&text, Path::new("r.conf"), &inputs()) {
            // Every error is tied to the file.
            prop_assert!(e.location().is_some(), "{e}");
            prop_assert!(e.to_string().contains("r.conf"), "{e}");
        }
    }

    #[test]
    fn toml_random_text(text in ".{0,400}") {
        let _ = from_toml_str(&text, Path::new("r.toml"), &inputs());
    }

    #[test]
    fn toml_random_sev_keys(pairs in proptest::collection::vec(
        (proptest::sample::select(QEMU_KEYS), value(), 0u8..3), 0..10)) {
        let mut text = String::from("[sev]\n");
        for (k, v, kind) in &pairs {
            match kind {
                0 => text.push_str(&format!("{k} = {:?}\n", v)),
                1 => text.push_str(&format!("{k} = {}\n", v.len() as i64 - 20)),
                _ => text.push_str(&format!("{k} = {}\n", v.is_empty())),
            }
        }
        if let Err(e) = from_toml_str(&text, Path::new("r.toml"), &inputs()) {
            prop_assert!(e.to_string().contains("r.toml"), "{e}");
        }
    }

    #[test]
    fn qemu_random_text(obj in ".{0,300}", machine in ".{0,100}") {
        let _ = parse_options(&obj, "qom-type");
        let _ = from_qemu_args(&[obj.as_str()], Some(machine.as_str()), &inputs());
    }

    #[test]
    fn qemu_random_keys(pairs in proptest::collection::vec(
        (proptest::sample::select(QEMU_KEYS), value()), 0..10)) {
        let mut obj = String::from("sev-guest,id=sev0");
        for (k, v) in &pairs {
            obj.push(',');
            obj.push_str(k);
            obj.push('=');
            obj.push_str(&v.replace(',', ",,"));
        }
        if let Err(e) = from_qemu_args(&[obj.as_str()], Some("confidential-guest-support=sev0"), &inputs()) {
            prop_assert!(e.location().is_some(), "{e}");
        }
    }

    #[test]
    fn certificate_reader_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let _ = godh_public_key_le(&bytes);
    }

    #[test]
    fn certificate_reader_random_full_size(bytes in proptest::collection::vec(any::<u8>(), 0x824)) {
        let _ = godh_public_key_le(&bytes);
    }
}
