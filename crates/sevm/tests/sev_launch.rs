//! End-to-end SEV launches under KVM with the soft backend, through the `sevm` binary.

#[path = "sev_common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;

use common::*;

/// `sevm owner measure --vmm sevm --guest cpuid --num-cpus 2 [more]`.
fn measure_cpuid_2(more: &[&str]) -> String {
    owner_measure(
        &[
            &["--vmm", "sevm", "--guest", "cpuid", "--num-cpus", "2"],
            more,
        ]
        .concat(),
    )
}

/// Runs `sevm config check ARGS` and `sevm run ARGS`: both must refuse the configuration
/// (exit 1) before the guest runs. Returns each one's stderr.
fn check_and_run_refuse(args: &[&str]) -> Vec<String> {
    [&["config", "check"][..], &["run"][..]]
        .iter()
        .map(|verb| {
            let (out, err) = sevm_exits(1, &[*verb, args].concat());
            assert!(!out.contains("cpuid 8000001f"), "{out}");
            err
        })
        .collect()
}

#[test]
fn sev_guest_sees_cpuid_leaf_and_status_msr() {
    let Some((_t, plat)) = kvm_plat("sev_guest_sees_cpuid_leaf_and_status_msr") else {
        return;
    };
    let (out, err) = Run::guest("cpuid").sev(0, "").platform(&plat).exits(0);
    // EAX bit 1 (SEV), EBX = cbitpos 47 | reduced-phys-bits 1 << 6 = 0x6f.
    assert!(
        out.contains("cpuid 8000001f eax=00000002 ebx=0000006f"),
        "{out}"
    );
    assert!(out.contains("msr c0010131=0000000000000001"), "{out}");
    // MAXPHYADDR above the C-bit.
    let line = out
        .lines()
        .find(|l| l.starts_with("cpuid 80000008"))
        .unwrap();
    let eax = u32::from_str_radix(&line[19..27], 16).unwrap();
    assert!(eax & 0xff > 47, "{line}");
    assert!(err.contains("launch digest"), "{err}");
}

#[test]
fn plain_run_works_and_exit_status_is_the_guests() {
    if !kvm_or_skip("plain_run_works_and_exit_status_is_the_guests") {
        return;
    }
    let (out, _) = Run::guest("hello").exits(0);
    assert!(out.contains("hello from the sevm bundled guest"), "{out}");
    // The cpuid guest without SEV says so.
    let (out, _) = text(&Run::guest("cpuid").output());
    assert!(out.contains("msr c0010131 not read"), "{out}");
}

#[test]
fn sev_es_measures_vmsas_and_dump_matches_owner_recipe() {
    let Some((t, plat)) = kvm_plat("sev_es_measures_vmsas_and_dump_matches_owner_recipe") else {
        return;
    };
    let dump = t.path().join("dump");
    let (out, err) = Run::guest("cpuid")
        .opt("--cpus", "2")
        .sev(0x5, "")
        .platform(&plat)
        .dump(&dump)
        .exits(0);
    assert!(out.contains("cpuid 8000001f eax=0000000a"), "{out}");
    assert!(out.contains("msr c0010131=0000000000000003"), "{out}");
    // Two VMSAs measured: what KVM builds from the long-mode registers sevm sets (entry point
    // in RIP, C-bit CR3, long mode in EFER/CR0, vCPU index in RDI), not a reset state.
    let v0 = fs::read(dump.join("vmsa-cpu0.bin")).unwrap();
    let v1 = fs::read(dump.join("vmsa-cpu1.bin")).unwrap();
    let q = |o: usize, v: &[u8]| u64::from_le_bytes(v[o..o + 8].try_into().unwrap());
    use sev_proto::vmsa::{CR0, CR3, EFER, RDI, RIP};
    for (i, v) in [&v0, &v1].into_iter().enumerate() {
        assert_eq!(v.len(), 4096);
        assert_eq!(q(RIP, v), 0x10_0000, "vCPU {i} starts at the guest image");
        assert_eq!(q(CR3, v), 0x9000 | 1 << 47, "page tables with the C-bit");
        assert_eq!((q(EFER, v), q(CR0, v)), (0x1500, 0x8000_0031));
        assert_eq!(q(RDI, v), i as u64);
    }
    assert_ne!(
        v0,
        sev_proto::vmsa::qemu_vmsa(true, 0xffff_fff0, 0x80_0f12).to_vec()
    );
    // The concatenated bytes hash to the reported digest, which the owner recipe predicts.
    let digest = hex::encode(measured_sha256(&dump));
    assert!(err.contains(&digest), "{err}");
    assert_eq!(measure_cpuid_2(&["--policy", "5"]), digest);
    // Without ES the digest has no VMSAs, so it differs.
    assert_ne!(measure_cpuid_2(&[]), digest);
    // Ranges are in LAYOUT order.
    assert_eq!(
        dumped_ranges(&dump),
        [
            "00-boottables-0x1000.bin",
            "01-boottables-0x9000.bin",
            "02-bundled-0x100000.bin"
        ]
    );
}

#[test]
fn demo_succeeds_and_tamper_fails_without_releasing_the_secret() {
    let Some((_t, plat)) = kvm_plat("demo_succeeds_and_tamper_fails_without_releasing_the_secret")
    else {
        return;
    };
    let (out, _) = sevm_exits(0, &["demo", "--platform-dir", s(&plat)]);
    assert!(out.contains("verify the launch measurement: OK"), "{out}");
    assert!(out.contains("guest| secret entry"), "{out}");
    assert!(out.contains("sevm demo: OK"), "{out}");
    let (out, _) = sevm_exits(1, &["demo", "--tamper", "--platform-dir", s(&plat)]);
    assert!(out.contains("MISMATCH"), "{out}");
    assert!(out.contains("no secret released"), "{out}");
    assert!(!out.contains("inject the secret"), "{out}");
    assert!(!out.contains("guest|"), "{out}");
}

/// A `[sev-launch]` section of the owner files `dir/own_godh.b64` and `dir/own_session.b64`.
fn sev_launch_conf(dir: &Path) -> String {
    let godh = read_b64(&dir.join("own_godh.b64"));
    let session = read_b64(&dir.join("own_session.b64"));
    format!(
        "[sev-launch]\nflags = \"00000000\"\npolicy = \"00000001\"\n\
         dh_pub_qx = \"{}\"\ndh_pub_qy = \"{}\"\nnonce = \"{}\"\n\
         vcpu_count = \"1\"\nvcpu_length = \"1\"\nvcpu_mask = \"01\"\n\
         dh_cert_file = \"own_godh.b64\"\nsession_file = \"own_session.b64\"\n",
        hex::encode(&godh[0x14..0x14 + 48]),
        hex::encode(&godh[0x5c..0x5c + 48]),
        hex::encode(&session[..16]),
    )
}

#[test]
fn seed_sample_refused_and_real_owner_files_launch() {
    let Some((t, plat)) = kvm_plat("seed_sample_refused_and_real_owner_files_launch") else {
        return;
    };
    let seed = t.path().join("seed.conf");
    fs::write(
        &seed,
        "[sev-launch]\nflags = \"00000000\"\npolicy = \"000000\"\n\
         dh_pub_qx = \"0123456789abcdef0123456789abcdef\"\n\
         dh_pub_qy = \"0123456789abcdef0123456789abcdef\"\nnonce = \"0123456789abcdef\"\n\
         vcpu_count = \"1\"\nvcpu_length = \"30\"\nvcpu_mask = \"00ab\"\n",
    )
    .unwrap();
    let seed_args = [
        "--guest",
        "cpuid",
        "--sev-config",
        s(&seed),
        "--platform-dir",
        s(&plat),
    ];
    for err in check_and_run_refuse(&seed_args) {
        assert!(err.contains("seed.conf:4"), "{err}");
        assert!(err.contains("dh_pub_qx"), "{err}");
    }
    // The same section with real owner files from `sevm owner session`.
    let chain = export_chain(&plat, t.path());
    owner_session(t.path(), "own", &chain, "1");
    let conf = t.path().join("real.conf");
    fs::write(&conf, sev_launch_conf(t.path())).unwrap();
    let conf_args = [
        "--guest",
        "cpuid",
        "--sev-config",
        s(&conf),
        "--platform-dir",
        s(&plat),
    ];
    let (out, _) = sevm_exits(0, &[&["config", "check"][..], &conf_args].concat());
    assert!(out.contains("owner certificate and session: yes"), "{out}");
    let (out, err) = sevm_exits(0, &[&["run"][..], &conf_args].concat());
    assert!(out.contains("msr c0010131=0000000000000001"), "{out}");
    assert!(err.contains("policy 0x1"), "{err}");
}

#[test]
fn wrong_session_is_bad_measurement() {
    if !kvm_or_skip("wrong_session_is_bad_measurement") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (p1, p2) = (t.path().join("p1"), t.path().join("p2"));
    // Owner files made for platform p2, used on platform p1.
    let chain = export_chain(&p2, t.path());
    let extra = owner_session(t.path(), "x", &chain, "0");
    let (out, err) = Run::guest("hello").sev(0, &extra).platform(&p1).exits(1);
    assert!(err.contains("LAUNCH_START"), "{err}");
    assert!(err.contains("BAD_MEASUREMENT"), "{err}");
    assert!(!out.contains("hello from"), "{out}");
}

#[test]
fn sevctl_session_launch_matches_sevctl_measurement() {
    let Some((t, plat)) = kvm_plat("sevctl_session_launch_matches_sevctl_measurement") else {
        return;
    };
    let Some(sevctl) = sevctl_or_skip("sevctl_session_launch_matches_sevctl_measurement") else {
        return;
    };
    let chain = export_chain(&plat, t.path());
    let extra = sevctl_session(&sevctl, t.path(), "sc", &chain, "1");
    let dump = t.path().join("dump");
    let (out, _) = Run::guest("secret-reader")
        .sev(1, &extra)
        .platform(&plat)
        .dump(&dump)
        .exits(0);
    assert!(out.contains("no secret"), "{out}");
    let blob = fs::read(dump.join("launch-measure.bin")).unwrap();
    // Digest from the owner recipe and from the dumped bytes.
    let recipe = hex::decode(owner_measure(&[
        "--vmm",
        "sevm",
        "--guest",
        "secret-reader",
    ]))
    .unwrap();
    assert_eq!(recipe, measured_sha256(&dump).to_vec());
    assert_sevctl_measurement(
        &sevctl,
        "1",
        &t.path().join("sc_tik.bin"),
        &["--launch-digest", &b64(&recipe)],
        &blob,
    );
}

/// A minimal ELF64 vmlinux: one PT_LOAD at 0x100000 whose code writes 7 to the exit port.
fn tiny_vmlinux() -> Vec<u8> {
    let code: &[u8] = &[0xb0, 0x07, 0xe6, 0xf4, 0xf4, 0xeb, 0xfe]; // mov al,7; out 0xf4,al; hlt; jmp $
    let mut f = vec![0u8; 0x1000];
    f[..16].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let put = |f: &mut Vec<u8>, off: usize, v: &[u8]| f[off..off + v.len()].copy_from_slice(v);
    put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut f, 18, &0x3eu16.to_le_bytes()); // x86-64
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &0x10_0000u64.to_le_bytes()); // entry
    put(&mut f, 32, &64u64.to_le_bytes()); // phoff
    put(&mut f, 52, &64u16.to_le_bytes()); // ehsize
    put(&mut f, 54, &56u16.to_le_bytes()); // phentsize
    put(&mut f, 56, &1u16.to_le_bytes()); // phnum
    put(&mut f, 58, &64u16.to_le_bytes()); // shentsize
    let ph = 64;
    put(&mut f, ph, &1u32.to_le_bytes()); // PT_LOAD
    put(&mut f, ph + 4, &5u32.to_le_bytes()); // R+X
    put(&mut f, ph + 8, &0x1000u64.to_le_bytes()); // offset
    put(&mut f, ph + 16, &0x10_0000u64.to_le_bytes()); // vaddr
    put(&mut f, ph + 24, &0x10_0000u64.to_le_bytes()); // paddr
    put(&mut f, ph + 32, &(code.len() as u64).to_le_bytes()); // filesz
    put(&mut f, ph + 40, &(code.len() as u64).to_le_bytes()); // memsz
    put(&mut f, ph + 48, &0x1000u64.to_le_bytes()); // align
    f.extend_from_slice(code);
    f
}

#[test]
fn linux_boot_under_sev_matches_owner_recipe() {
    let Some((t, plat)) = kvm_plat("linux_boot_under_sev_matches_owner_recipe") else {
        return;
    };
    let kernel = t.path().join("vmlinux");
    let initrd = t.path().join("initrd");
    fs::write(&kernel, tiny_vmlinux()).unwrap();
    fs::write(&initrd, vec![0xa5u8; 5000]).unwrap();
    let dump = t.path().join("dump");
    let boot = [
        "--kernel",
        s(&kernel),
        "--initrd",
        s(&initrd),
        "--cmdline",
        "console=ttyS0 quiet",
    ];
    // Exit status 7 is the kernel's exit value.
    Run::new()
        .args(&boot)
        .opt("--memory", "64M")
        .sev(0, "")
        .platform(&plat)
        .dump(&dump)
        .opt("--serial", "none")
        .exits(7);
    let digest = hex::encode(measured_sha256(&dump));
    let vmm = ["--vmm", "sevm"];
    assert_eq!(
        owner_measure(&[&vmm[..], &boot, &["--memory", "64M"]].concat()),
        digest
    );
    // The zero page (E820) depends on the RAM size, so the digest does too.
    assert_ne!(owner_measure(&[&vmm[..], &boot].concat()), digest);
    // Boot tables (2), zero page, command line, kernel, initrd, MP table.
    let kinds = dumped_ranges(&dump);
    assert_eq!(kinds.len(), 7, "{kinds:?}");
}

/// With two vCPUs the MP table (measured) lists both, so the digest differs from one vCPU's,
/// and `owner measure --cpus 2` predicts it. Under an SEV-ES policy the soft backend refuses a
/// Linux launch up front (Linux would take its SEV-ES path and hang), before any launch
/// digest; the owner's SEV-ES prediction still differs from SEV's (the VMSAs).
#[test]
fn linux_boot_with_two_cpus_matches_owner_recipe() {
    let Some((t, plat)) = kvm_plat("linux_boot_with_two_cpus_matches_owner_recipe") else {
        return;
    };
    let kernel = t.path().join("vmlinux");
    fs::write(&kernel, tiny_vmlinux()).unwrap();
    let boot = ["--kernel", s(&kernel), "--cmdline", "console=ttyS0"];
    let vmm = ["--vmm", "sevm"];
    let dump = t.path().join("dump");
    Run::new()
        .args(&boot)
        .opt("--memory", "64M")
        .opt("--cpus", "2")
        .sev(0, "")
        .platform(&plat)
        .dump(&dump)
        .opt("--serial", "none")
        .exits(7);
    let digest = hex::encode(measured_sha256(&dump));
    let mem = ["--memory", "64M"];
    let two = owner_measure(&[&vmm[..], &boot, &mem, &["--cpus", "2"]].concat());
    assert_eq!(two, digest);
    assert_ne!(
        owner_measure(&[&vmm[..], &boot, &mem, &["--cpus", "1"]].concat()),
        digest,
        "the vCPU count is in the MP table"
    );
    let es = owner_measure(&[&vmm[..], &boot, &mem, &["--cpus", "2", "--policy", "5"]].concat());
    assert_ne!(es, two, "SEV-ES adds the VMSAs");
    let (out, err) = Run::new()
        .args(&boot)
        .opt("--memory", "64M")
        .opt("--cpus", "2")
        .sev(5, "")
        .platform(&plat)
        .opt("--serial", "none")
        .exits(1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("cannot run under an SEV-ES policy") && !err.contains("launch digest"),
        "{err}"
    );
}

#[test]
fn toml_config_launches_and_bad_values_name_file_line_key() {
    let Some((t, plat)) = kvm_plat("toml_config_launches_and_bad_values_name_file_line_key") else {
        return;
    };
    let good = t.path().join("vm.toml");
    fs::write(
        &good,
        format!(
            "guest = \"cpuid\"\ncpus = 2\n\n[sev]\npolicy = 0x4\ncbitpos = 47\n\
             reduced-phys-bits = 1\nplatform-dir = \"{}\"\n",
            plat.display()
        ),
    )
    .unwrap();
    let (out, _) = sevm_exits(0, &["config", "check", "--config", s(&good)]);
    assert!(
        out.contains("sev: SEV-ES") && out.contains("cpus: 2"),
        "{out}"
    );
    let (out, _) = sevm_exits(0, &["run", "--config", s(&good)]);
    assert!(out.contains("msr c0010131=0000000000000003"), "{out}");
    // A C-bit that does not match the platform (47) names the file, line and key.
    let bad = t.path().join("bad.toml");
    fs::write(
        &bad,
        format!(
            "guest = \"cpuid\"\n[sev]\npolicy = 0x1\ncbitpos = 51\nreduced-phys-bits = 1\n\
             platform-dir = \"{}\"\n",
            plat.display()
        ),
    )
    .unwrap();
    for err in check_and_run_refuse(&["--config", s(&bad)]) {
        assert!(
            err.contains("bad.toml:4") && err.contains("cbitpos"),
            "{err}"
        );
    }
}

#[test]
fn hw_backend_without_dev_sev_is_a_clear_error() {
    if Path::new("/dev/sev").exists() {
        eprintln!("SKIP hw_backend_without_dev_sev_is_a_clear_error: this host has /dev/sev");
        return;
    }
    let (out, err) = Run::guest("hello")
        .sev(0, "")
        .opt("--sev-backend", "hw")
        .exits(1);
    assert!(err.contains("/dev/sev") && err.contains("hw"), "{err}");
    assert!(!out.contains("hello from"), "{out}");
}

/// `sevm config check` is the dry run of `run`'s builder: the launch digest it prints for an
/// SEV-ES guest with 2 vCPUs is what the owner computes (`owner measure`) and what `run`
/// measured (its `--dump-launch` digest).
#[test]
fn config_check_predicts_the_digest_run_measures() {
    let Some((t, plat)) = kvm_plat("config_check_predicts_the_digest_run_measures") else {
        return;
    };
    let obj = object(0x5, "");
    let out = sevm_stdout(&[
        "config",
        "check",
        "--guest",
        "hello",
        "--cpus",
        "2",
        "--memory",
        "64",
        "--object",
        &obj,
        "--machine",
        MACHINE,
        "--platform-dir",
        s(&plat),
    ]);
    let checked = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("launch digest: "))
        .unwrap_or_else(|| panic!("no launch digest in:\n{out}"))
        .to_string();
    let owner = owner_measure(&[
        "--vmm",
        "sevm",
        "--guest",
        "hello",
        "--policy",
        "0x5",
        "--num-cpus",
        "2",
        "--memory",
        "64",
        "--cbitpos",
        "47",
    ]);
    assert_eq!(checked, owner, "config check vs owner measure");
    let dump = t.path().join("dump");
    Run::guest("hello")
        .opt("--cpus", "2")
        .opt("--memory", "64")
        .sev(0x5, "")
        .platform(&plat)
        .dump(&dump)
        .opt("--serial", "none")
        .exits(0);
    let measured = hex::encode(read_b64(&dump.join("launch-digest.b64")));
    assert_eq!(checked, measured, "config check vs run");
}
