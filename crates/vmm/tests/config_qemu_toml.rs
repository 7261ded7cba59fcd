//! QEMU `--object sev-guest` / `--machine` syntax and the TOML file; the three formats agree.

mod config_common;

use std::path::Path;

use config_common::{assert_kind, line_key, make_owner, owner_in, owner_key_lines};
use vmm::config::qemu::{from_qemu_args, from_qemu_object, parse_options};
use vmm::config::sevlaunch::from_sev_launch_str;
use vmm::config::tomlfile::from_toml_str;
use vmm::config::{
    ConfigError, ConfigSource, OnOffAuto, SevBackend, SevLaunchConfig, ValidationInputs, Where,
};

fn inputs_in(dir: &Path) -> ValidationInputs {
    ValidationInputs {
        platform_cbitpos: Some(51),
        cli_cpus: None,
        base_dir: Some(dir.to_path_buf()),
    }
}

/// `--object obj --machine machine` with default validation inputs; when it parses, it must
/// describe an SEV guest.
fn qemu_object(obj: &str, machine: &str) -> Result<SevLaunchConfig, ConfigError> {
    from_qemu_object(obj, machine, &ValidationInputs::default())
        .map(|cfg| cfg.expect("an SEV guest"))
}

fn option_key(e: &ConfigError) -> (String, Option<String>) {
    match e.location() {
        Some(Where::Option { option, key }) => (option.clone(), key.clone()),
        other => panic!("expected an option location, got {other:?} for {e}"),
    }
}

#[test]
fn qemu_full_object() {
    let dir = tempfile::tempdir().unwrap();
    let owner = owner_in(dir.path());
    let obj = "sev-guest,id=sev0,policy=0x5,cbitpos=51,reduced-phys-bits=1,\
               dh-cert-file=godh.b64,session-file=session.b64,handle=7,kernel-hashes=on,\
               sev-device=/dev/sev,legacy-vm-type=auto,debug-swap=yes";
    let cfg = from_qemu_args(
        &["memory-backend-ram,id=mem0,size=1G", obj],
        Some("q35,accel=kvm,confidential-guest-support=sev0"),
        &inputs_in(dir.path()),
    )
    .unwrap()
    .expect("an SEV guest");
    assert_eq!(cfg.policy, 5);
    assert_eq!(cfg.cbitpos, Some(51));
    assert_eq!(cfg.reduced_phys_bits, 1);
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
    assert_eq!(cfg.handle, 7);
    assert!(cfg.kernel_hashes);
    assert!(cfg.debug_swap);
    assert_eq!(cfg.legacy_vm_type, OnOffAuto::Auto);
    assert_eq!(cfg.sev_device, Path::new("/dev/sev"));
    assert_eq!(cfg.source, ConfigSource::QemuObject { id: "sev0".into() });
}

#[test]
fn qemu_minimal_defaults_and_alias() {
    let cfg = qemu_object(
        "sev-guest,id=s,reduced-phys-bits=1",
        "pc,memory-encryption=s",
    )
    .unwrap();
    assert_eq!(cfg.policy, 1, "QEMU's default policy is NODBG");
    assert_eq!(cfg.cbitpos, None);
    assert_eq!(cfg.handle, 0);
    assert!(!cfg.kernel_hashes && !cfg.debug_swap);
    // Explicit qom-type, and both machine spellings naming the same object.
    let obj = "qom-type=sev-guest,id=s,reduced-phys-bits=2,kernel-hashes=false,legacy-vm-type=on";
    let e = qemu_object(obj, "memory-encryption=s,confidential-guest-support=s").unwrap_err();
    assert_kind!(e, ConfigError::DuplicateKey { .. });
    let cfg = qemu_object(obj, "confidential-guest-support=s").unwrap();
    assert_eq!(cfg.reduced_phys_bits, 2);
    assert_eq!(cfg.legacy_vm_type, OnOffAuto::On);
}

#[test]
fn qemu_comma_escape_in_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let owner = make_owner();
    let c = dir.path().join("go,dh.b64");
    let s = dir.path().join("se,ss.b64");
    config_common::write_b64(&c, &owner.cert);
    config_common::write_b64(&s, &owner.session);
    let obj = format!(
        "sev-guest,id=sev0,reduced-phys-bits=1,dh-cert-file={},session-file={}",
        c.display().to_string().replace(',', ",,"),
        s.display().to_string().replace(',', ",,")
    );
    let cfg = qemu_object(&obj, "confidential-guest-support=sev0").unwrap();
    assert_eq!(
        cfg.owner
            .as_ref()
            .map(|o| o.session.to_bytes().to_vec())
            .as_deref(),
        Some(owner.session.as_slice())
    );
    let pairs = parse_options("a,x=1,,2,,,y=", "t").unwrap();
    assert_eq!(
        pairs,
        vec![
            ("t".to_string(), "a".to_string()),
            ("x".to_string(), "1,2,".to_string()),
            ("y".to_string(), String::new())
        ]
    );
}

#[test]
fn qemu_bools() {
    for (v, want) in [
        ("on", true),
        ("yes", true),
        ("true", true),
        ("off", false),
        ("no", false),
        ("false", false),
    ] {
        let obj = format!("sev-guest,id=a,reduced-phys-bits=1,kernel-hashes={v}");
        let cfg = qemu_object(&obj, "confidential-guest-support=a").unwrap();
        assert_eq!(cfg.kernel_hashes, want, "{v}");
    }
    let e = qemu_object(
        "sev-guest,id=a,reduced-phys-bits=1,kernel-hashes=On",
        "confidential-guest-support=a",
    )
    .unwrap_err();
    assert_kind!(e, ConfigError::InvalidValue { .. });
    assert_eq!(option_key(&e).1.as_deref(), Some("kernel-hashes"));
}

#[test]
fn qemu_errors_name_option_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("sev-guest,id=a", "reduced-phys-bits", "missing required"),
        ("sev-guest,id=a,reduced-phys-bits=0", "reduced-phys-bits", "out of range"),
        ("sev-guest,id=a,reduced-phys-bits=64", "reduced-phys-bits", "out of range"),
        ("sev-guest,id=a,reduced-phys-bits=1,cbitpos=47", "cbitpos", "platform"),
        ("sev-guest,id=a,reduced-phys-bits=1,cbitpos=64", "cbitpos", "out of range"),
        ("sev-guest,id=a,reduced-phys-bits=1,policy=0x100000000", "policy", "out of range"),
        ("sev-guest,id=a,reduced-phys-bits=1,policy=010", "policy", "octal"),
        ("sev-guest,id=a,reduced-phys-bits=1,policy=0x40", "policy", "reserved"),
        ("sev-guest,id=a,reduced-phys-bits=1,handle=-1", "handle", "invalid value"),
        ("sev-guest,id=a,reduced-phys-bits=1,reduced_phys_bits=1", "reduced_phys_bits", "did you mean `reduced-phys-bits`"),
        ("sev-guest,id=a,reduced-phys-bits=1,bogus=1", "bogus", "unknown key"),
        ("sev-guest,id=a,reduced-phys-bits=1,policy=1,policy=1", "policy", "duplicate"),
        ("sev-guest,id=a,reduced-phys-bits=1,debug-swap=on", "debug-swap", "SEV-ES"),
        ("sev-guest,id=a,reduced-phys-bits=1,legacy-vm-type=maybe", "legacy-vm-type", "on, off or auto"),
        ("sev-guest,id=a,reduced-phys-bits=1,sev-device=", "sev-device", "invalid value"),
        ("sev-guest,id=a,reduced-phys-bits=1,dh-cert-file=/nonexistent/c.b64,session-file=/nonexistent/s.b64", "dh-cert-file", "cannot read file"),
        ("sev-guest,id=1a,reduced-phys-bits=1", "id", "object id"),
    ];
    let inputs = ValidationInputs {
        platform_cbitpos: Some(51),
        ..Default::default()
    };
    for (obj, key, needle) in cases {
        let e = from_qemu_object(obj, "confidential-guest-support=a", &inputs).unwrap_err();
        let (option, k) = option_key(&e);
        assert!(option.starts_with("--object "), "{obj}: {e}");
        assert_eq!(k.as_deref(), Some(*key), "{obj}: {e}");
        assert!(e.to_string().contains(needle), "{obj}: {e}");
    }
}

#[test]
fn qemu_syntax_and_wiring_errors() {
    let d = ValidationInputs::default();
    let e = qemu_object(
        "sev-guest,id=a,reduced-phys-bits",
        "confidential-guest-support=a",
    )
    .unwrap_err();
    assert_kind!(e, ConfigError::Syntax { .. });
    let e = qemu_object("sev-guest,id=a,", "confidential-guest-support=a").unwrap_err();
    assert_kind!(e, ConfigError::Syntax { .. });
    let e = qemu_object(
        "sev-guest,id=a,reduced-phys-bits=1",
        "confidential-guest-support=b",
    )
    .unwrap_err();
    assert_kind!(e, ConfigError::Conflict { .. });
    assert!(e.to_string().contains("--machine"), "{e}");
    let args_refused =
        |objects: &[&str], machine: Option<&str>| from_qemu_args(objects, machine, &d).unwrap_err();
    let e = args_refused(&["sev-guest,id=a,reduced-phys-bits=1"], None);
    assert_kind!(e, ConfigError::MissingKey { .. });
    let e = args_refused(
        &[
            "sev-guest,id=a,reduced-phys-bits=1",
            "sev-guest,id=b,reduced-phys-bits=1",
        ],
        Some("confidential-guest-support=a"),
    );
    assert!(e.to_string().contains("not used"), "{e}");
    let e = args_refused(
        &[
            "memory-backend-ram,id=a,size=1G",
            "sev-guest,id=a,reduced-phys-bits=1",
        ],
        Some("confidential-guest-support=a"),
    );
    assert_kind!(e, ConfigError::DuplicateKey { .. });
    let e = args_refused(
        &["memory-backend-ram,id=m,size=1G"],
        Some("confidential-guest-support=m"),
    );
    assert!(e.to_string().contains("not a sev-guest"), "{e}");
    let e = args_refused(
        &[],
        Some("memory-encryption=x,confidential-guest-support=y"),
    );
    assert_kind!(e, ConfigError::Conflict { .. });
    let e = args_refused(
        &["sev-guest,reduced-phys-bits=1"],
        Some("confidential-guest-support=a"),
    );
    assert_eq!(option_key(&e).1.as_deref(), Some("id"));
    // No SEV at all.
    assert!(
        from_qemu_args(&["memory-backend-ram,id=m,size=1G"], Some("q35"), &d)
            .unwrap()
            .is_none()
    );
    assert!(from_qemu_args::<&str>(&[], None, &d).unwrap().is_none());
}

#[test]
fn toml_full_file() {
    let dir = tempfile::tempdir().unwrap();
    let owner = owner_in(dir.path());
    std::fs::write(dir.path().join("bzImage"), b"kernel").unwrap();
    std::fs::write(dir.path().join("initrd.img"), b"initrd").unwrap();
    let text = r#"
memory = "2G"
cpus = 2
kernel = "bzImage"
initrd = "initrd.img"
cmdline = "console=ttyS0"

[sev]
policy = 0x5
cbitpos = 51
reduced-phys-bits = 1
dh-cert-file = "godh.b64"
session-file = "session.b64"
handle = "0x3"
kernel-hashes = true
legacy-vm-type = "off"
debug-swap = false
sev-device = "/dev/sev"
backend = "hw"
platform-dir = "plat"
"#;
    let path = dir.path().join("vm.toml");
    let mut inputs = inputs_in(dir.path());
    inputs.cli_cpus = Some(2);
    let cfg = from_toml_str(text, &path, &inputs).unwrap();
    assert_eq!(cfg.vm.memory_mib, Some(2048));
    assert_eq!(cfg.vm.cpus, Some(2));
    assert_eq!(cfg.vm.kernel, Some(dir.path().join("bzImage")));
    assert_eq!(cfg.vm.initrd, Some(dir.path().join("initrd.img")));
    assert_eq!(cfg.vm.cmdline.as_deref(), Some("console=ttyS0"));
    let sev = cfg.sev.unwrap();
    assert_eq!(sev.policy, 5);
    assert_eq!(sev.cbitpos, Some(51));
    assert_eq!(sev.handle, 3);
    assert!(sev.kernel_hashes);
    assert_eq!(sev.vcpus, Some(2));
    assert_eq!(sev.backend, Some(SevBackend::Hw));
    assert_eq!(sev.platform_dir, Some(dir.path().join("plat")));
    assert_eq!(sev.legacy_vm_type, OnOffAuto::Off);
    assert_eq!(
        sev.owner
            .as_ref()
            .map(|o| o.session.to_bytes().to_vec())
            .as_deref(),
        Some(owner.session.as_slice())
    );
    assert_eq!(sev.source, ConfigSource::Toml { path });
    // No [sev] table: a plain VM.
    let cfg = from_toml_str(
        "guest = \"hello\"\nmemory = 64\n",
        Path::new("p.toml"),
        &Default::default(),
    )
    .unwrap();
    assert!(cfg.sev.is_none());
    assert_eq!(cfg.vm.guest.as_deref(), Some("hello"));
    assert_eq!(cfg.vm.memory_mib, Some(64));
}

#[test]
fn toml_errors_name_line_and_key() {
    let d = ValidationInputs {
        platform_cbitpos: Some(51),
        cli_cpus: Some(4),
        base_dir: None,
    };
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[sev]\nreduced_phys_bits = 1\n",
            2,
            "reduced_phys_bits",
            "did you mean `reduced-phys-bits`",
        ),
        ("[sev]\nflags = 0\n", 2, "flags", "unknown key"),
        ("[sev]\npolicy = 1.5\n", 2, "policy", "a number"),
        ("[sev]\npolicy = -1\n", 2, "policy", "out of range"),
        ("[sev]\ncbitpos = 47\n", 2, "cbitpos", "platform"),
        (
            "[sev]\nreduced-phys-bits = 70\n",
            2,
            "reduced-phys-bits",
            "out of range",
        ),
        (
            "[sev]\nkernel-hashes = \"on\"\n",
            2,
            "kernel-hashes",
            "boolean",
        ),
        ("[sev]\nbackend = \"sw\"\n", 2, "backend", "soft or hw"),
        (
            "\n\n[sev]\ndh-cert-file = \"/nonexistent/x\"\nsession-file = \"/nonexistent/y\"\n",
            4,
            "dh-cert-file",
            "cannot read",
        ),
        ("cpus = 2\n", 1, "cpus", "--cpus 4"),
        ("cpus = 0\n", 1, "cpus", "out of range"),
        ("memory = \"lots\"\n", 1, "memory", "size"),
        ("memory = 0\n", 1, "memory", "out of range"),
        ("kernel = \"/nonexistent/bz\"\n", 1, "kernel", "cannot read"),
        ("cmdline = \"x\"\n", 1, "cmdline", "needs kernel"),
        ("guest = \"a b\"\n", 1, "guest", "bundled guest"),
    ];
    let refused = |text: &str| from_toml_str(text, Path::new("vm.toml"), &d).unwrap_err();
    for (text, line, key, needle) in cases {
        let e = refused(text);
        assert_eq!(line_key(&e), (*line, key.to_string()), "{text:?}: {e}");
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
        assert!(e.to_string().contains("vm.toml"), "{text:?}: {e}");
    }
    // Unknown top-level key, duplicate key, bad syntax: line named.
    let e = refused("cpus = 4\nmemroy = 1\n");
    assert_kind!(e, ConfigError::UnknownKey { .. });
    assert_eq!(line_key(&e), (2, "memroy".into()), "{e}");
    let e = refused("[sev]\npolicy = 1\npolicy = 2\n");
    assert_kind!(e, ConfigError::DuplicateKey { .. });
    assert_eq!(line_key(&e), (3, "policy".into()), "{e}");
    let e = refused("[sev\n");
    assert_kind!(e, ConfigError::Syntax { .. });
}

#[test]
fn the_three_formats_agree() {
    let dir = tempfile::tempdir().unwrap();
    let owner = owner_in(dir.path());
    let inputs = inputs_in(dir.path());
    let q = from_qemu_object(
        "sev-guest,id=sev0,policy=0x5,cbitpos=51,reduced-phys-bits=1,dh-cert-file=godh.b64,\
         session-file=session.b64,kernel-hashes=on",
        "confidential-guest-support=sev0",
        &inputs,
    )
    .unwrap()
    .unwrap();
    let t = from_toml_str(
        "[sev]\npolicy = 5\ncbitpos = 51\nreduced-phys-bits = 1\ndh-cert-file = \"godh.b64\"\n\
         session-file = \"session.b64\"\nkernel-hashes = true\n",
        &dir.path().join("vm.toml"),
        &inputs,
    )
    .unwrap()
    .sev
    .unwrap();
    let s = from_sev_launch_str(
        &format!(
            "[sev-launch]\nflags = \"0\"\npolicy = \"5\"\ncbitpos = \"51\"\nreduced_phys_bits = \"1\"\n\
             {}dh_cert_file = \"godh.b64\"\nsession_file = \"session.b64\"\nkernel_hashes = \"on\"\n",
            owner_key_lines(&owner.qx_le, &owner.qy_le, &owner.session)
        ),
        &dir.path().join("sev.conf"),
        &inputs,
    )
    .unwrap();
    let strip = |mut c: vmm::config::SevLaunchConfig| {
        c.source = ConfigSource::QemuObject { id: String::new() };
        c
    };
    assert_eq!(strip(q.clone()), strip(t));
    assert_eq!(strip(q), strip(s));
}

#[test]
fn toml_from_file() {
    use vmm::config::tomlfile::from_toml_file;
    let dir = tempfile::tempdir().unwrap();
    let owner = owner_in(dir.path());
    let p = dir.path().join("vm.toml");
    std::fs::write(
        &p,
        "[sev]\nreduced-phys-bits = 1\ndh-cert-file = \"godh.b64\"\nsession-file = \"session.b64\"\n",
    )
    .unwrap();
    // Relative names resolve against the TOML file's directory, whatever the cwd.
    let cfg = from_toml_file(&p, &ValidationInputs::default()).unwrap();
    assert_eq!(
        cfg.sev
            .unwrap()
            .owner
            .as_ref()
            .map(|o| o.godh.encode())
            .as_deref(),
        Some(owner.cert.as_slice())
    );
    let e = from_toml_file(
        &dir.path().join("missing.toml"),
        &ValidationInputs::default(),
    )
    .unwrap_err();
    assert_kind!(e, ConfigError::ReadConfig { .. });
    assert!(e.to_string().contains("missing.toml"), "{e}");
    std::fs::write(&p, [0xffu8, 0xfe, 0x00]).unwrap();
    let e = from_toml_file(&p, &ValidationInputs::default()).unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");
}
