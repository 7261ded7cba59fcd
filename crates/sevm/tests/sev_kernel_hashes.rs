//! SEV measured direct boot (`kernel-hashes=on`): `sevm run --firmware F --kernel K` measures
//! the firmware then the padded kernel-hashes table at the firmware's hashes-area GPA, as
//! QEMU does, so the launch digest equals `sevm owner measure --firmware ... --kernel ...`
//! and sevctl's `measurement build --firmware ... --kernel ...`.

#[path = "sev_common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;

use common::*;

const CMDLINE: &str = "console=ttyS0 root=/dev/vda";

/// `sevm run --firmware FW --kernel KERNEL` for a soft SEV guest (`--object` policy 0 plus
/// `extra`) on the platform in `plat`.
fn run_fw_kernel(fw: &Path, kernel: &Path, extra: &str, plat: &Path) -> Run {
    Run::new()
        .path("--firmware", fw)
        .path("--kernel", kernel)
        .sev(0, extra)
        .platform(plat)
}

#[test]
fn sample_firmware_has_a_usable_hashes_area() {
    let fw = fs::read(samples().join("sample-ovmf.fd")).unwrap();
    let t = sev_proto::ovmf::FooterTable::parse(&fw).unwrap();
    let a = t
        .hashes_area()
        .expect("the sample firmware names a hashes area");
    assert_eq!((a.base, a.size), (0x81_0C00, 0x400));
    assert!(t.supports_kernel_hashes());
}

#[test]
fn kernel_hashes_launch_matches_owner_measure_and_sevctl() {
    let Some((t, plat)) = kvm_plat("kernel_hashes_launch_matches_owner_measure_and_sevctl") else {
        return;
    };
    let Some(sevctl) = sevctl_or_skip("kernel_hashes_launch_matches_owner_measure_and_sevctl")
    else {
        return;
    };
    let chain = export_chain(&plat, t.path());
    let session = sevctl_session(&sevctl, t.path(), "kh", &chain, "1");
    let (fw, kernel, initrd) = (
        samples().join("sample-ovmf.fd"),
        samples().join("sample-kernel"),
        samples().join("sample-initrd"),
    );
    let dump = t.path().join("dump");
    let images = [
        "--firmware",
        s(&fw),
        "--kernel",
        s(&kernel),
        "--initrd",
        s(&initrd),
        "--cmdline",
        CMDLINE,
    ];
    // The sample firmware is not bootable (it spins at the reset vector): stop it after 2 s.
    Run::new()
        .args(&images)
        .sev(1, &format!(",kernel-hashes=on{session}"))
        .platform(&plat)
        .dump(&dump)
        .opt("--timeout", "2")
        .exits(124);

    // The measured ranges: the whole firmware at 4 GiB - size, then exactly 176 bytes at
    // the hashes-area GPA holding the padded table.
    let fw_bytes = fs::read(&fw).unwrap();
    let fw_dump = dump.join(format!("00-firmware-{:#x}.bin", (1u64 << 32) - 0x1_0000));
    assert_eq!(fs::read(&fw_dump).unwrap(), fw_bytes, "{fw_dump:?}");
    use sev_proto::kernel_hashes as kh;
    let table = kh::padded_table(
        &kh::file_hash(&fs::read(&kernel).unwrap()),
        &kh::file_hash(&fs::read(&initrd).unwrap()),
        &kh::cmdline_hash(CMDLINE),
    );
    let t_dump = dump.join("01-kernelhashes-0x810c00.bin");
    assert_eq!(fs::read(&t_dump).unwrap(), table.to_vec(), "{t_dump:?}");
    let measured = fs::read(dump.join("measured.bin")).unwrap();
    assert_eq!(measured, [fw_bytes.as_slice(), &table].concat());

    let digest = read_b64(&dump.join("launch-digest.b64"));
    assert_eq!(digest, openssl::sha::sha256(&measured).to_vec());

    // QEMU's recipe from the owner side.
    let mout = owner_measure(&images);
    assert_eq!(hex::decode(&mout).unwrap(), digest, "{mout}");

    // sevctl computes the digest from the same images and the measurement from the TIK and
    // the launch's MNONCE: it must equal the firmware's LAUNCH_MEASURE.
    let blob = fs::read(dump.join("launch-measure.bin")).unwrap();
    assert_sevctl_measurement(&sevctl, "1", &t.path().join("kh_tik.bin"), &images, &blob);
}

#[test]
fn firmware_without_hashes_guid_is_refused_with_qemus_message() {
    let t = tempfile::tempdir().unwrap();
    let plat = t.path().join("plat");
    // A firmware without an OVMF footer table at all.
    let fw = t.path().join("plain.fd");
    fs::write(&fw, vec![0xf4u8; 0x1_0000]).unwrap();
    let kernel = samples().join("sample-kernel");
    let (_, err) = run_fw_kernel(&fw, &kernel, ",kernel-hashes=on", &plat)
        .opt("--timeout", "2")
        .fails();
    assert!(
        err.contains("SEV: kernel specified but guest firmware has no hashes table GUID"),
        "{err}"
    );

    // A hashes area smaller than the 176-byte table.
    let mut img = fs::read(samples().join("sample-ovmf.fd")).unwrap();
    let guid = sev_proto::ovmf::SEV_HASH_TABLE_RV_GUID.to_bytes_le();
    let at = img.windows(16).position(|w| w == guid).unwrap();
    // The entry is `base u32, size u32, len u16, guid`: the size sits 6 bytes before the GUID.
    img[at - 6..at - 2].copy_from_slice(&0x80u32.to_le_bytes());
    let small = t.path().join("small.fd");
    fs::write(&small, &img).unwrap();
    let (_, err) = run_fw_kernel(&small, &kernel, ",kernel-hashes=on", &plat)
        .opt("--timeout", "2")
        .fails();
    assert!(
        err.contains("SEV: guest firmware hashes table area is invalid (base=0x810c00 size=0x80)"),
        "{err}"
    );

    // Without kernel-hashes=on, firmware and kernel together are refused.
    let (_, err) = run_fw_kernel(&samples().join("sample-ovmf.fd"), &kernel, "", &plat).fails();
    assert!(err.contains("kernel-hashes=on"), "{err}");
}
