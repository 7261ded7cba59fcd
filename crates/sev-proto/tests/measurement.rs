//! Launch digests and measurements: sev-spec-notes.md §10.3 (sev crate vectors), VECTORS.md B
//! (sevctl measurement build), and the sevctl VMSAs byte for byte.

mod common;
use common::{b64, read, testdata, to_b64};
use sev_proto::kernel_hashes::{cmdline_hash, file_hash, padded_table};
use sev_proto::measure::{expected_launch_digest, measurement, LaunchDigest, LaunchMeasure};
use sev_proto::ovmf::{Area, FooterTable};
use sev_proto::vmsa::{cpu_sig, qemu_vmsa, qemu_vmsas, VmsaProfile};

const SEVCTL_OVMF: &str = "sevctl/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9";

#[test]
fn ovmf_footer_of_amdsev_fixture() {
    let Some(td) = testdata() else { return };
    let fw = read(&td, "sev-crate/measurement/ovmf_AmdSev_suffix.bin");
    let t = FooterTable::parse(&fw).unwrap();
    assert_eq!(t.es_reset_addr(), Some(0x0080_B004));
    assert_eq!(
        t.secret_area(),
        Some(Area {
            base: 0x81_0000,
            size: 0xC00
        })
    );
    assert_eq!(
        t.hashes_area(),
        Some(Area {
            base: 0x81_0C00,
            size: 0x400
        })
    );
    assert_eq!(t.sev_metadata_offset(), Some(0x554));
    assert!(t.supports_kernel_hashes());
    // The table re-encodes to the bytes it was parsed from.
    let enc = t.encode().unwrap();
    assert_eq!(&fw[fw.len() - 32 - enc.len()..fw.len() - 32], &enc[..]);

    let x64 =
        FooterTable::parse(&read(&td, "sev-crate/measurement/ovmf_OvmfX64_suffix.bin")).unwrap();
    assert!(!x64.supports_kernel_hashes());
    assert_eq!(x64.secret_area(), None);

    assert!(FooterTable::parse(&[0u8; 4096]).is_err());
    assert!(FooterTable::parse(&fw[..40]).is_err());
}

fn ld_sev(
    fw: &[u8],
    kernel: Option<&[u8]>,
    initrd: Option<&[u8]>,
    append: Option<&str>,
) -> [u8; 32] {
    let table = kernel.map(|k| {
        padded_table(
            &file_hash(k),
            &file_hash(initrd.unwrap_or(b"")),
            &cmdline_hash(append.unwrap_or("")),
        )
    });
    expected_launch_digest(fw, table.as_ref().map(|t| &t[..]), &[])
}

#[test]
fn sev_crate_launch_digest_vectors() {
    let Some(td) = testdata() else { return };
    let amd = read(&td, "sev-crate/measurement/ovmf_AmdSev_suffix.bin");
    let x64 = read(&td, "sev-crate/measurement/ovmf_OvmfX64_suffix.bin");
    assert_eq!(
        hex::encode(ld_sev(
            &amd,
            Some(b""),
            Some(b""),
            Some("console=ttyS0 loglevel=7")
        )),
        "82a3ee5d537c3620628270c292ae30cb40c3c878666a7890ee7ef2a08fb535ff"
    );
    assert_eq!(
        hex::encode(ld_sev(&amd, Some(b""), None, None)),
        "77f613d7bbcdf12a73782ea9e88b0172aeda50d1a54201cb903594ff52846898"
    );
    assert_eq!(
        hex::encode(ld_sev(&x64, None, None, None)),
        "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da"
    );
    // sevctl vs sev crate cross-check from VECTORS.md B.
    let k = read(&td, "sevctl/measurement/vmlinuz-fake");
    let i = read(&td, "sevctl/measurement/initrd-fake");
    assert_eq!(
        hex::encode(ld_sev(
            &amd,
            Some(&k),
            Some(&i),
            Some("foo bar baz fake kernel=cmdline")
        )),
        "e9355141a33411775f945f57440fa46ca104098985900c011331e68225004b25"
    );
}

#[test]
fn sev_es_launch_digest_vectors() {
    let Some(td) = testdata() else { return };
    let amd = read(&td, "sev-crate/measurement/ovmf_AmdSev_suffix.bin");
    let reset = FooterTable::parse(&amd).unwrap().es_reset_addr().unwrap();
    let table = padded_table(&file_hash(b""), &file_hash(b""), &cmdline_hash(""));
    let sig = 0x800F12; // EPYC-v4
    assert_eq!(sig, cpu_sig(23, 1, 2));
    let one = qemu_vmsas(VmsaProfile::QemuFpu, 1, reset, sig);
    let bsp = hex::encode(openssl::sha::sha256(&one[0]));
    assert!(
        bsp.starts_with("8295cef5") && bsp.ends_with("788c"),
        "{bsp}"
    );
    assert_eq!(
        hex::encode(expected_launch_digest(&amd, Some(&table), &one)),
        "13810ae661ea11e2bb205621f582fee268f0367c8f97bc297b7fadef3e12002c"
    );
    let four = qemu_vmsas(VmsaProfile::QemuFpu, 4, reset, sig);
    let ap = hex::encode(openssl::sha::sha256(&four[1]));
    assert!(ap.starts_with("7ff723da") && ap.ends_with("2c95"), "{ap}");
    assert_eq!(four[0], one[0]);
    assert!(four[1..].iter().all(|v| v == &four[1]));
    assert_eq!(
        hex::encode(expected_launch_digest(&amd, Some(&table), &four)),
        "0dccbcaba8e90b261bd0d2e1863a2f9da714768b7b2a19363cd6ae35aa90de91"
    );
}

#[test]
fn sevctl_vmsas_byte_identical() {
    let Some(td) = testdata() else { return };
    let fw = read(&td, SEVCTL_OVMF);
    let reset = FooterTable::parse(&fw).unwrap().es_reset_addr().unwrap();
    let sig = cpu_sig(25, 1, 1);
    assert_eq!(sig, 0xA00F11);
    let v0 = qemu_vmsa(true, reset, sig);
    let v1 = qemu_vmsa(false, reset, sig);
    assert_eq!(&v0[..], &read(&td, "sevctl/vmsa0.bin")[..]);
    assert_eq!(&v1[..], &read(&td, "sevctl/vmsa1.bin")[..]);
}

fn tik1(td: &std::path::Path) -> [u8; 16] {
    read(td, "sevctl/measurement/tik1.bin").try_into().unwrap()
}

fn blob(
    tik: &[u8; 16],
    api: (u8, u8, u8),
    policy: u32,
    ld: &[u8; 32],
    mnonce: &[u8; 16],
) -> String {
    let m = measurement(tik, api.0, api.1, api.2, policy, ld, mnonce);
    to_b64(
        &LaunchMeasure {
            measure: m,
            mnonce: *mnonce,
        }
        .to_bytes(),
    )
}

#[test]
fn sevctl_measurement_build_vectors() {
    let Some(td) = testdata() else { return };
    let tik = tik1(&td);
    let nonce: [u8; 16] = b64("wxP6tRHCFrFQWxsuqZA8QA==").try_into().unwrap();
    let api = (0x01, 40, 40);

    // 1. Given launch digest.
    let ld: [u8; 32] = b64("xkvRAfyaSizgonxAjZIAkR8TmolUabBKQKb6KJCDDSM=")
        .try_into()
        .unwrap();
    assert_eq!(
        blob(&tik, api, 0x03, &ld, &nonce),
        "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDxA"
    );

    // 2. Firmware only, streamed through the digest in small chunks.
    let fw = read(&td, SEVCTL_OVMF);
    let mut d = LaunchDigest::new();
    for c in fw.chunks(1000) {
        d.update(c);
    }
    let ld = d.finish();
    assert_eq!(
        blob(&tik, api, 0x03, &ld, &nonce),
        "oMDewIouJSpbpNRHj7Mk3p08H2dPZQdsZMU14qIymBnDE/q1EcIWsVBbGy6pkDxA"
    );

    // 3. Firmware + kernel hashes table, with every intermediate.
    let k = read(&td, "sevctl/measurement/vmlinuz-fake");
    let i = read(&td, "sevctl/measurement/initrd-fake");
    let ch = cmdline_hash("foo bar baz fake kernel=cmdline");
    assert!(hex::encode(ch).starts_with("3e8a0b8c") && hex::encode(ch).ends_with("dffd"));
    assert!(hex::encode(file_hash(&i)).starts_with("76fa1a19"));
    let kh = sev_proto::measure::sha256_reader(&mut &k[..]).unwrap();
    assert!(hex::encode(kh).starts_with("af609b31"));
    let table = padded_table(&kh, &file_hash(&i), &ch);
    assert_eq!(
        hex::encode(openssl::sha::sha256(&table)),
        "bd485904c57ecbfa615c56afd8d0aa864121fbb987a78492cc4a417b108991fc"
    );
    let ld = expected_launch_digest(&fw, Some(&table), &[]);
    assert_eq!(
        hex::encode(ld),
        "4b47fec6f851487c33714c8a00a832a1b705ad0a7cac4a647388eccfa9f0c570"
    );
    let raw = sev_proto::measure::measurement_input(api.0, api.1, api.2, 0x03, &ld, &nonce);
    assert_eq!(
        to_b64(&raw),
        "BAEoKAMAAABLR/7G+FFIfDNxTIoAqDKhtwWtCnysSmRziOzPqfDFcMMT+rURwhaxUFsbLqmQPEA="
    );
    assert_eq!(
        blob(&tik, api, 0x03, &ld, &nonce),
        "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA"
    );

    // 4. SEV-ES, 4 vCPUs, the sevctl VMSAs (built here and compared in another test).
    let expected = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny";
    let lm = LaunchMeasure::from_bytes(&b64(expected)).unwrap();
    let reset = FooterTable::parse(&fw).unwrap().es_reset_addr().unwrap();
    let vmsas = qemu_vmsas(VmsaProfile::Qemu, 4, reset, cpu_sig(25, 1, 1));
    let ld = expected_launch_digest(&fw, None, &vmsas);
    assert_eq!(blob(&tik, (1, 49, 6), 0x05, &ld, &lm.mnonce), expected);
    assert!(lm.verify(&tik, 1, 49, 6, 0x05u32, &ld));
    assert!(!lm.verify(&tik, 1, 49, 6, 0x01u32, &ld));
}
