//! The bundled `snp-attest` guest on /dev/kvm (a plain VM; the SNP launch itself is the soft
//! firmware's, driven here at its raw interface): a `SoftSnpGuest` is launched with the guest
//! image (NORMAL pages) and a SECRETS page, the firmware-written secrets page is copied to
//! `SNP_SECRETS`, and a test `GuestRequestService` answers the guest's doorbell with the soft
//! guest context (and the soft certificate chain for extended requests). Also the guest's
//! AES-256-GCM against OpenSSL (`sev_proto::snp::msg::seal`) in its known-answer mode.
//! Needs /dev/kvm: without it the tests print SKIP (or fail when CI is set).

mod guest_common;

use guest_common::{bundled_config, require_kvm, Serial};
use guests::abi;
use sev_firmware::snp::ca::SoftCa;
use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpGuest, SoftSnpPlatform};
use sev_firmware::snp::{SnpGuest, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate, SnpPlatform};
use sev_proto::snp::certs::{encode_cert_table, CertTableEntry, GUID_ARK, GUID_ASK, GUID_VCEK};
use sev_proto::snp::measure::PageType;
use sev_proto::snp::msg::{self, KeyReq, KeyRsp, ReportRsp, REPORT_RSP_SIZE};
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::snp::secrets::SecretsPage;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::snp_request::{GuestRequestOutcome, GuestRequestService, PAGE, VMM_ERR_INVALID_LEN};
use vmm::{ExitStatus, LaunchContext, LaunchHooks, Vm};
use zeroize::Zeroizing;

const POLICY: SnpPolicy = SnpPolicy(0x30000);
const HOST_DATA: [u8; 32] = [0x5c; 32];

/// A launched soft SNP guest whose measured pages are the `snp-attest` image.
struct Launched {
    platform: SoftSnpPlatform,
    guest: SoftSnpGuest,
    secrets: Zeroizing<Vec<u8>>,
    _dir: tempfile::TempDir,
}

fn launch() -> Launched {
    let dir = tempfile::tempdir().unwrap();
    let platform = SoftSnpPlatform::open(dir.path(), SoftSnpConfig::default()).unwrap();
    platform.snp_init().unwrap();
    let mut guest = platform.gctx_create().unwrap();
    guest
        .snp_launch_start(&SnpLaunchStart::new(POLICY))
        .unwrap();
    let image = guests::get("snp-attest").unwrap();
    for (i, chunk) in image.bytes.chunks(PAGE).enumerate() {
        let mut page = vec![0u8; PAGE];
        page[..chunk.len()].copy_from_slice(chunk);
        let gpa = image.load_addr + (i * PAGE) as u64;
        guest
            .snp_launch_update(&SnpLaunchUpdate::page(PageType::Normal, gpa), &mut page)
            .unwrap();
    }
    let mut secrets = Zeroizing::new(vec![0u8; PAGE]);
    guest
        .snp_launch_update(
            &SnpLaunchUpdate::page(PageType::Secrets, abi::SNP_SECRETS),
            &mut secrets,
        )
        .unwrap();
    guest
        .snp_launch_finish(&SnpLaunchFinish {
            host_data: HOST_DATA,
            ..SnpLaunchFinish::default()
        })
        .unwrap();
    Launched {
        platform,
        guest,
        secrets,
        _dir: dir,
    }
}

/// Serves the doorbell with the soft guest context; `corrupt` flips one byte of the first
/// response at that offset.
#[derive(Debug)]
struct SoftService {
    guest: Mutex<SoftSnpGuest>,
    cert_table: Vec<u8>,
    corrupt: Option<usize>,
    calls: Mutex<Vec<bool>>,
}

impl GuestRequestService for SoftService {
    fn guest_request(
        &self,
        req: &[u8; PAGE],
        resp: &mut [u8; PAGE],
        certs: Option<&mut [u8]>,
    ) -> GuestRequestOutcome {
        let mut calls = self.calls.lock().unwrap();
        let first = calls.is_empty();
        calls.push(certs.is_some());
        if let Some(c) = &certs {
            if c.len() < self.cert_table.len() {
                return GuestRequestOutcome {
                    vmm_error: VMM_ERR_INVALID_LEN,
                    cert_pages_needed: self.cert_table.len().div_ceil(PAGE) as u64,
                    ..Default::default()
                };
            }
        }
        let r = self.guest.lock().unwrap().snp_guest_request(req, resp);
        if let Err(e) = r {
            return GuestRequestOutcome {
                fw_error: e.status().map_or(u32::MAX, |s| s.code()),
                ..Default::default()
            };
        }
        if let Some(c) = certs {
            c.fill(0);
            c[..self.cert_table.len()].copy_from_slice(&self.cert_table);
        }
        if let (true, Some(at)) = (first, self.corrupt) {
            resp[at] ^= 0x01;
        }
        GuestRequestOutcome::default()
    }
}

/// Writes the secrets page and SNP_PARAMS into guest memory once the images are placed.
struct Place {
    secrets: Option<Zeroizing<Vec<u8>>>,
    params: Vec<u8>,
    resp_page: Option<Vec<u8>>,
}

impl LaunchHooks for Place {
    fn after_load(&mut self, ctx: &LaunchContext<'_>) -> Result<(), vmm::HookError> {
        if let Some(s) = &self.secrets {
            ctx.memory.write_slice(s, GuestAddress(abi::SNP_SECRETS))?;
        }
        ctx.memory
            .write_slice(&self.params, GuestAddress(abi::SNP_PARAMS))?;
        if let Some(r) = &self.resp_page {
            ctx.memory
                .write_slice(r, GuestAddress(abi::SNP_RESP_PAGE))?;
        }
        Ok(())
    }
}

fn params_with_report_data(rd: &[u8; 64]) -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    p[..4].copy_from_slice(&abi::SNP_PARAMS_FLAG_REPORT_DATA.to_le_bytes());
    let o = abi::SNP_PARAMS_REPORT_DATA as usize;
    p[o..o + 64].copy_from_slice(rd);
    p
}

fn read(mem: &GuestMemoryMmap, gpa: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    mem.read_slice(&mut b, GuestAddress(gpa)).unwrap();
    b
}

/// The soft CA (RSA-4096 keys: generated once per test binary) and the certificate table of
/// `platform` for its reported TCB.
fn cert_table(platform: &SoftSnpPlatform) -> Vec<u8> {
    static CA: std::sync::OnceLock<SoftCa> = std::sync::OnceLock::new();
    let ca = CA.get_or_init(|| SoftCa::generate().unwrap());
    let vcek = platform.vcek_cert(ca, platform.reported_tcb()).unwrap();
    encode_cert_table(&[
        CertTableEntry {
            guid: GUID_ARK,
            data: ca.ark.to_der().unwrap(),
        },
        CertTableEntry {
            guid: GUID_ASK,
            data: ca.ask.to_der().unwrap(),
        },
        CertTableEntry {
            guid: GUID_VCEK,
            data: vcek.to_der().unwrap(),
        },
    ])
    .unwrap()
}

/// One run of `snp-attest` against a fresh soft launch.
struct Attested {
    st: ExitStatus,
    out: String,
    vm: Vm,
    svc: Arc<SoftService>,
    platform: SoftSnpPlatform,
    secrets: Zeroizing<Vec<u8>>,
    /// The launch digest of the soft launch.
    ld: [u8; 48],
}

fn run_attest(report_data: &[u8; 64], corrupt: Option<usize>) -> Attested {
    let l = launch();
    let ld = l.guest.launch_digest();
    let svc = Arc::new(SoftService {
        cert_table: cert_table(&l.platform),
        guest: Mutex::new(l.guest),
        corrupt,
        calls: Mutex::new(Vec::new()),
    });
    let (mut cfg, serial): (_, Serial) = bundled_config("snp-attest");
    cfg.guest_requests = Some(svc.clone());
    let hooks = Place {
        secrets: Some(l.secrets.clone()),
        params: params_with_report_data(report_data),
        resp_page: None,
    };
    let mut vm = Vm::build_with_hooks(&cfg, Box::new(hooks)).unwrap();
    let t = Instant::now();
    let st = vm.run().unwrap();
    eprintln!("snp-attest ran in {:?}", t.elapsed());
    Attested {
        st,
        out: serial.text(),
        vm,
        svc,
        platform: l.platform,
        secrets: l.secrets,
        ld,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn snp_attest_gets_a_verified_report_a_derived_key_and_the_cert_table() {
    require_kvm!();
    let mut rd = [0u8; 64];
    openssl::rand::rand_bytes(&mut rd).unwrap();
    let Attested {
        st,
        out,
        vm,
        svc,
        platform,
        secrets,
        ld,
    } = run_attest(&rd, None);
    eprintln!("serial:\n{out}");
    assert_eq!(st, ExitStatus::Exited(0), "serial:\n{out}");
    assert_eq!(*svc.calls.lock().unwrap(), vec![false, false, true]);

    // The report as the guest wrote it at SNP_REPORT_OUT (decrypted MSG_REPORT_RSP).
    let rsp = read(vm.guest_memory(), abi::SNP_REPORT_OUT, REPORT_RSP_SIZE);
    let rsp = ReportRsp::from_bytes(&rsp).unwrap();
    assert_eq!(rsp.status, 0);
    let report = rsp.report.unwrap();
    assert_eq!(report.report_data, rd);
    assert_eq!(report.measurement, ld);
    assert_eq!(report.host_data, HOST_DATA);
    assert_eq!(report.policy, POLICY);
    assert_eq!(report.vmpl, 0);
    // Signed by the soft VCEK: by its key and by the public key of its certificate.
    report
        .verify(&platform.vcek_public_key(report.reported_tcb).unwrap())
        .unwrap();
    let table = sev_proto::snp::certs::parse_cert_table(&svc.cert_table).unwrap();
    let vcek = openssl::x509::X509::from_der(&table[2].data).unwrap();
    report.verify(&vcek.public_key().unwrap()).unwrap();
    let mut tampered = report.clone();
    tampered.measurement[0] ^= 1;
    assert!(tampered.verify(&vcek.public_key().unwrap()).is_err());

    // What the guest printed.
    assert!(
        out.contains(&format!("report_data={}\n", hex(&rd))),
        "{out}"
    );
    assert!(
        out.contains(&format!("measurement={}\n", hex(&ld))),
        "{out}"
    );
    assert!(
        out.contains("report version=00000003 policy=0000000000030000 vmpl=00000000"),
        "{out}"
    );
    for guid in [GUID_ARK, GUID_ASK, GUID_VCEK] {
        assert!(out.contains(&format!("cert entry {guid} offset=")), "{out}");
    }
    assert!(out.contains("cert entries: 03\n"), "{out}");
    assert!(out.ends_with("snp-attest: all checks passed\n"), "{out}");

    // The derived key: ask the same guest context again (seqno 7 after the guest's 1, 3, 5)
    // with the same MSG_KEY_REQ and compare SHA-256 with what the guest printed.
    let sp = SecretsPage::from_bytes(&secrets).unwrap();
    let kr = KeyReq {
        root_key_select: false,
        key_sel: 1,
        guest_field_select: 0x9,
        vmpl: 0,
        guest_svn: 0,
        tcb_version: 0,
        launch_mit_vector: None,
    };
    let mut req = msg::seal(&sp.vmpck[0], 7, 3, 1, 0, &kr.to_bytes()).unwrap();
    req.resize(PAGE, 0);
    let mut resp = vec![0u8; PAGE];
    svc.guest
        .lock()
        .unwrap()
        .snp_guest_request(&req, &mut resp)
        .unwrap();
    let (_, pt) = msg::open(&sp.vmpck[0], &resp).unwrap();
    let key = KeyRsp::from_bytes(&pt).unwrap();
    assert_eq!(key.status, 0);
    let want = hex(&openssl::sha::sha256(&key.derived_key[..]));
    assert!(
        out.contains(&format!(
            "derived key (root VCEK, guest_field_select=0x9) sha256={want}\n"
        )),
        "{out}"
    );
    // Never the key itself.
    assert!(!out.contains(&hex(&key.derived_key[..])), "{out}");
}

#[test]
fn snp_attest_without_report_data_asks_for_zeros() {
    require_kvm!();
    let l = launch();
    let svc = Arc::new(SoftService {
        cert_table: cert_table(&l.platform),
        guest: Mutex::new(l.guest),
        corrupt: None,
        calls: Mutex::new(Vec::new()),
    });
    let (mut cfg, serial) = bundled_config("snp-attest");
    cfg.guest_requests = Some(svc);
    let hooks = Place {
        secrets: Some(l.secrets.clone()),
        params: vec![0u8; PAGE],
        resp_page: None,
    };
    let mut vm = Vm::build_with_hooks(&cfg, Box::new(hooks)).unwrap();
    let st = vm.run().unwrap();
    let out = serial.text();
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    let rsp = read(vm.guest_memory(), abi::SNP_REPORT_OUT, REPORT_RSP_SIZE);
    let report = ReportRsp::from_bytes(&rsp).unwrap().report.unwrap();
    assert_eq!(report.report_data, [0u8; 64]);
}

#[test]
fn a_corrupted_response_byte_fails_the_tag_check() {
    require_kvm!();
    // One ciphertext byte of the first response (MSG_REPORT_RSP), and separately one tag byte.
    for at in [msg::HEADER_SIZE + 0x100, 3] {
        let Attested {
            st, out, vm, svc, ..
        } = run_attest(&[7u8; 64], Some(at));
        let code = abi::SNP_ATTEST_REPORT + abi::SNP_ATTEST_E_TAG;
        assert_eq!(st, ExitStatus::Exited(code), "serial:\n{out}");
        assert!(out.contains("tag mismatch"), "{out}");
        assert!(out.contains(&format!("exit code {code:02x}")), "{out}");
        // The guest stopped after the first exchange and released no plaintext.
        assert_eq!(svc.calls.lock().unwrap().len(), 1);
        let rsp = read(vm.guest_memory(), abi::SNP_REPORT_OUT, REPORT_RSP_SIZE);
        assert!(rsp.iter().all(|&b| b == 0), "report area written");
    }
}

#[test]
fn a_zero_secrets_page_is_refused() {
    require_kvm!();
    let mut zero = Zeroizing::new(vec![0u8; PAGE]);
    zero[0] = 3; // VERSION 3, but no VMPCK0
    let (cfg, serial) = bundled_config("snp-attest");
    let hooks = Place {
        secrets: Some(zero),
        params: vec![0u8; PAGE],
        resp_page: None,
    };
    let mut vm = Vm::build_with_hooks(&cfg, Box::new(hooks)).unwrap();
    let st = vm.run().unwrap();
    let out = serial.text();
    assert_eq!(st, ExitStatus::Exited(abi::SNP_ATTEST_ZERO_VMPCK0), "{out}");
    assert!(
        out.contains("VMPCK0 in the secrets page is all zero"),
        "{out}"
    );
}

/// Runs the known-answer mode with `key`, `seqno`, message type 5 and `payload`; the host's
/// response page is OpenSSL's seal of `answer` (type 6, seqno + 1), with `tamper` applied.
fn run_kat(
    key: &[u8; 32],
    seqno: u64,
    payload: &[u8],
    answer: &[u8],
    tamper: impl FnOnce(&mut Vec<u8>),
) -> (ExitStatus, String, Vm) {
    let mut p = vec![0u8; PAGE];
    p[..4].copy_from_slice(&abi::SNP_PARAMS_FLAG_GCM_KAT.to_le_bytes());
    let at = |o: u64| o as usize;
    p[at(abi::SNP_PARAMS_KAT_KEY)..at(abi::SNP_PARAMS_KAT_KEY) + 32].copy_from_slice(key);
    p[at(abi::SNP_PARAMS_KAT_SEQNO)..at(abi::SNP_PARAMS_KAT_SEQNO) + 8]
        .copy_from_slice(&seqno.to_le_bytes());
    p[at(abi::SNP_PARAMS_KAT_TYPE)] = 5;
    p[at(abi::SNP_PARAMS_KAT_SIZE)..at(abi::SNP_PARAMS_KAT_SIZE) + 2]
        .copy_from_slice(&(payload.len() as u16).to_le_bytes());
    p[at(abi::SNP_PARAMS_KAT_PAYLOAD)..at(abi::SNP_PARAMS_KAT_PAYLOAD) + payload.len()]
        .copy_from_slice(payload);
    let mut resp = msg::seal(key, seqno + 1, 6, 1, 0, answer).unwrap();
    resp.resize(PAGE, 0);
    tamper(&mut resp);
    let (cfg, serial) = bundled_config("snp-attest");
    let hooks = Place {
        secrets: None,
        params: p,
        resp_page: Some(resp),
    };
    let mut vm = Vm::build_with_hooks(&cfg, Box::new(hooks)).unwrap();
    let st = vm.run().unwrap();
    (st, serial.text(), vm)
}

#[test]
fn guest_gcm_matches_openssl() {
    require_kvm!();
    for (len, seqno) in [
        (0x60usize, 1u64),
        (0x20, 3),
        (0x4c0, 0x1234_5678_9abc_def1),
        (16, 5),
    ] {
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key).unwrap();
        let mut payload = vec![0u8; len];
        openssl::rand::rand_bytes(&mut payload).unwrap();
        let mut answer = vec![0u8; len];
        openssl::rand::rand_bytes(&mut answer).unwrap();
        let (st, out, vm) = run_kat(&key, seqno, &payload, &answer, |_| {});
        assert_eq!(st, ExitStatus::Exited(0), "len {len:#x}: {out}");
        let want = msg::seal(&key, seqno, 5, 1, 0, &payload).unwrap();
        let got = read(vm.guest_memory(), abi::SNP_REQ_PAGE, want.len());
        assert_eq!(hex(&got), hex(&want), "sealed message, len {len:#x}");
        assert_eq!(
            read(vm.guest_memory(), abi::SNP_REPORT_OUT, len),
            answer,
            "opened message, len {len:#x}"
        );
    }
}

#[test]
fn guest_gcm_refuses_tampered_messages() {
    require_kvm!();
    let key = [0x11u8; 32];
    let payload = [0x22u8; 0x60];
    let answer = [0x33u8; 0x60];
    let kat = |c: u8| abi::SNP_ATTEST_KAT + c;
    type Tamper = fn(&mut Vec<u8>);
    let cases: [(&str, Tamper, u8); 6] = [
        ("tag", |m| m[0] ^= 0x80, kat(abi::SNP_ATTEST_E_TAG)),
        (
            "ciphertext",
            |m| m[0x60 + 0x3f] ^= 1,
            kat(abi::SNP_ATTEST_E_TAG),
        ),
        // AAD byte 0x3D is reserved: the guest does not look at it, only GHASH does.
        ("aad", |m| m[0x3d] ^= 1, kat(abi::SNP_ATTEST_E_TAG)),
        ("seqno", |m| m[0x20] ^= 2, kat(abi::SNP_ATTEST_E_SEQNO)),
        ("type", |m| m[0x34] = 4, kat(abi::SNP_ATTEST_E_HEADER)),
        ("size", |m| m[0x36] = 0x50, kat(abi::SNP_ATTEST_E_SIZE)),
    ];
    for (what, tamper, code) in cases {
        let (st, out, vm) = run_kat(&key, 9, &payload, &answer, tamper);
        assert_eq!(st, ExitStatus::Exited(code), "{what}: {out}");
        assert!(
            read(vm.guest_memory(), abi::SNP_REPORT_OUT, answer.len())
                .iter()
                .all(|&b| b == 0),
            "{what}: plaintext released"
        );
    }
    // Untampered, the same inputs pass (so the failures above are the tampering's).
    let (st, out, _) = run_kat(&key, 9, &payload, &answer, |_| {});
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    // Bad parameters: a size that is not a multiple of 16.
    let (st, out, _) = run_kat(&key, 9, &payload[..0x18], &answer, |_| {});
    assert_eq!(
        st,
        ExitStatus::Exited(abi::SNP_ATTEST_BAD_KAT_PARAMS),
        "{out}"
    );
}

/// Answers every doorbell with a fixed outcome and no response.
#[derive(Debug)]
struct Refuse(GuestRequestOutcome);

impl GuestRequestService for Refuse {
    fn guest_request(
        &self,
        _req: &[u8; PAGE],
        _resp: &mut [u8; PAGE],
        _certs: Option<&mut [u8]>,
    ) -> GuestRequestOutcome {
        self.0
    }
}

fn run_with_service(svc: Arc<dyn GuestRequestService>) -> (ExitStatus, String) {
    let l = launch();
    let (mut cfg, serial) = bundled_config("snp-attest");
    cfg.guest_requests = Some(svc);
    let hooks = Place {
        secrets: Some(l.secrets.clone()),
        params: vec![0u8; PAGE],
        resp_page: None,
    };
    let mut vm = Vm::build_with_hooks(&cfg, Box::new(hooks)).unwrap();
    let st = vm.run().unwrap();
    (st, serial.text())
}

#[test]
fn firmware_and_vmm_errors_get_their_exit_codes() {
    require_kvm!();
    let (st, out) = run_with_service(Arc::new(Refuse(GuestRequestOutcome {
        fw_error: 0x16,
        ..Default::default()
    })));
    let code = abi::SNP_ATTEST_REPORT + abi::SNP_ATTEST_E_FW;
    assert_eq!(st, ExitStatus::Exited(code), "{out}");
    assert!(out.contains("firmware status 00000016"), "{out}");
    let (st, out) = run_with_service(Arc::new(Refuse(GuestRequestOutcome {
        vmm_error: vmm::snp_request::VMM_ERR_BUSY,
        ..Default::default()
    })));
    let code = abi::SNP_ATTEST_REPORT + abi::SNP_ATTEST_E_VMM;
    assert_eq!(st, ExitStatus::Exited(code), "{out}");
    assert!(out.contains("VMM error 00000002"), "{out}");
}

#[test]
fn a_certificate_table_larger_than_the_buffer_fails_the_extended_request() {
    require_kvm!();
    let l = launch();
    // A table needing 6 pages: the buffer has SNP_CERTS_PAGES (4).
    let table = encode_cert_table(&[CertTableEntry {
        guid: GUID_VCEK,
        data: vec![0xab; 5 * PAGE],
    }])
    .unwrap();
    let svc = Arc::new(SoftService {
        cert_table: table,
        guest: Mutex::new(l.guest),
        corrupt: None,
        calls: Mutex::new(Vec::new()),
    });
    let (mut cfg, serial) = bundled_config("snp-attest");
    cfg.guest_requests = Some(svc.clone());
    let hooks = Place {
        secrets: Some(l.secrets.clone()),
        params: vec![0u8; PAGE],
        resp_page: None,
    };
    let mut vm = Vm::build_with_hooks(&cfg, Box::new(hooks)).unwrap();
    let st = vm.run().unwrap();
    let out = serial.text();
    let code = abi::SNP_ATTEST_EXT + abi::SNP_ATTEST_E_VMM;
    assert_eq!(st, ExitStatus::Exited(code), "{out}");
    assert!(
        out.contains("VMM error 00000001 (certificate pages needed: 00000006)"),
        "{out}"
    );
    // The report and key exchanges before it succeeded.
    assert!(out.contains("derived key (root VCEK"), "{out}");
    assert_eq!(*svc.calls.lock().unwrap(), vec![false, false, true]);
}

// ---------------- X25519 and HKDF of the guest (sealed-secret step) ----------------

/// Runs `snp-attest` with `params` as the SNP_PARAMS page and no secrets page.
fn run_params(params: Vec<u8>) -> (ExitStatus, String, Vm) {
    let (cfg, serial) = bundled_config("snp-attest");
    let hooks = Place {
        secrets: None,
        params,
        resp_page: None,
    };
    let mut vm = Vm::build_with_hooks(&cfg, Box::new(hooks)).unwrap();
    let st = vm.run().unwrap();
    (st, serial.text(), vm)
}

/// OpenSSL's X25519; an all-zero result (a low-order u), which OpenSSL refuses to derive, is
/// returned as zeros.
fn ossl_x25519(k: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    use openssl::pkey::{Id, PKey};
    let sk = PKey::private_key_from_raw_bytes(k, Id::X25519).unwrap();
    let pk = PKey::public_key_from_raw_bytes(u, Id::X25519).unwrap();
    let mut d = openssl::derive::Deriver::new(&sk).unwrap();
    d.set_peer(&pk).unwrap();
    match d.derive_to_vec() {
        Ok(v) => v.try_into().unwrap(),
        Err(e) => {
            eprintln!("OpenSSL refused u={} ({e}): a zero result", hex(u));
            [0; 32]
        }
    }
}

fn unhex32(s: &str) -> [u8; 32] {
    assert_eq!(s.len(), 64, "{s}");
    let mut b = [0u8; 32];
    for (i, o) in b.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    b
}

/// Runs the guest's X25519 on up to 60 (scalar, u) cases; returns its outputs.
fn guest_x25519(cases: &[([u8; 32], [u8; 32])], iterations: u32) -> Vec<[u8; 32]> {
    let mut p = vec![0u8; PAGE];
    p[..4].copy_from_slice(&abi::SNP_PARAMS_FLAG_X25519_KAT.to_le_bytes());
    let c = abi::SNP_PARAMS_XKAT_COUNT as usize;
    p[c..c + 4].copy_from_slice(&(cases.len() as u32).to_le_bytes());
    let it = abi::SNP_PARAMS_XKAT_ITER as usize;
    p[it..it + 4].copy_from_slice(&iterations.to_le_bytes());
    for (i, (k, u)) in cases.iter().enumerate() {
        let o = abi::SNP_PARAMS_XKAT_CASES as usize + 64 * i;
        p[o..o + 32].copy_from_slice(k);
        p[o + 32..o + 64].copy_from_slice(u);
    }
    let t = Instant::now();
    let (st, out, vm) = run_params(p);
    eprintln!(
        "guest x25519: {} case(s), {iterations} iteration(s) in {:?}",
        cases.len(),
        t.elapsed()
    );
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert!(out.contains("x25519 kat done"), "{out}");
    let n = if iterations > 0 { 1 } else { cases.len() };
    let got = read(vm.guest_memory(), abi::SNP_REPORT_OUT, 32 * n);
    got.chunks(32).map(|c| c.try_into().unwrap()).collect()
}

#[test]
fn guest_x25519_matches_rfc7748_and_openssl() {
    require_kvm!();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc7748-x25519.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let mut nine = [0u8; 32];
    nine[0] = 9;
    let mut cases = Vec::new();
    let mut want = Vec::new();
    let mut iters = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "kat" | "shared" => {
                let (k, u, o) = (unhex32(f[1]), unhex32(f[2]), unhex32(f[3]));
                assert_eq!(ossl_x25519(&k, &u), o, "OpenSSL disagrees with {line}");
                cases.push((k, u));
                want.push(o);
            }
            "dh" => {
                let (k, o) = (unhex32(f[1]), unhex32(f[2]));
                assert_eq!(ossl_x25519(&k, &nine), o, "OpenSSL disagrees with {line}");
                cases.push((k, nine));
                want.push(o);
            }
            "iter" => iters.push((f[1].parse::<u32>().unwrap(), unhex32(f[2]))),
            other => panic!("{path}: unknown line kind {other}"),
        }
    }
    assert_eq!((cases.len(), iters.len()), (5, 2), "{path}");
    let got = guest_x25519(&cases, 0);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(hex(g), hex(w), "RFC 7748 case {i}");
    }
    for (n, w) in iters {
        let got = guest_x25519(&[(nine, nine)], n);
        assert_eq!(
            hex(&got[0]),
            hex(&w),
            "RFC 7748 §5.2 after {n} iteration(s)"
        );
    }
}

#[test]
fn guest_x25519_matches_openssl_on_random_scalars() {
    require_kvm!();
    let mut nine = [0u8; 32];
    nine[0] = 9;
    // Non-canonical u-coordinates (RFC 7748 §5: must be accepted, reduced mod p): p, p + 1,
    // 2^255 - 1 and all-ones (the top bit masked), and 1.
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    let mut p1 = p;
    p1[0] = 0xee;
    let mut top = [0xffu8; 32];
    top[31] = 0x7f;
    let mut one = [0u8; 32];
    one[0] = 1;
    let mut total = 0;
    for run in 0..5 {
        let mut cases = Vec::new();
        for i in 0..60 {
            let mut k = [0u8; 32];
            openssl::rand::rand_bytes(&mut k).unwrap();
            let mut u = [0u8; 32];
            openssl::rand::rand_bytes(&mut u).unwrap();
            let u = match (run, i) {
                (0, 0) => p1,
                (0, 1) => top,
                (0, 2) => [0xff; 32],
                (0, 3) => one,
                (_, i) if i % 4 == 0 => nine,
                _ => u,
            };
            cases.push((k, u));
        }
        let got = guest_x25519(&cases, 0);
        for ((k, u), g) in cases.iter().zip(&got) {
            assert_eq!(hex(g), hex(&ossl_x25519(k, u)), "k={} u={}", hex(k), hex(u));
            total += 1;
        }
    }
    assert_eq!(total, 300);
    // u = p is 0 mod p: the result is zero, which OpenSSL refuses to derive; the guest gives 0.
    let got = guest_x25519(&[([0x42; 32], p)], 0);
    assert_eq!(got[0], [0u8; 32]);
    // Bad parameters: no cases, too many.
    for n in [0u32, abi::SNP_PARAMS_XKAT_MAX + 1] {
        let mut pp = vec![0u8; PAGE];
        pp[..4].copy_from_slice(&abi::SNP_PARAMS_FLAG_X25519_KAT.to_le_bytes());
        let c = abi::SNP_PARAMS_XKAT_COUNT as usize;
        pp[c..c + 4].copy_from_slice(&n.to_le_bytes());
        let (st, out, _) = run_params(pp);
        assert_eq!(
            st,
            ExitStatus::Exited(abi::SNP_ATTEST_BAD_XKAT_PARAMS),
            "{out}"
        );
    }
}

#[test]
fn guest_hkdf_matches_openssl() {
    require_kvm!();
    use openssl::md::Md;
    use openssl::pkey::{Id, PKey};
    use openssl::pkey_ctx::PkeyCtx;
    for info_len in [0usize, 1, 31, 32, 55, 83, 0x80] {
        let mut salt = [0u8; 32];
        let mut ikm = [0u8; 32];
        let mut info = vec![0u8; info_len];
        openssl::rand::rand_bytes(&mut salt).unwrap();
        openssl::rand::rand_bytes(&mut ikm).unwrap();
        openssl::rand::rand_bytes(&mut info).unwrap();
        let mut p = vec![0u8; PAGE];
        p[..4].copy_from_slice(&abi::SNP_PARAMS_FLAG_HKDF_KAT.to_le_bytes());
        let at = |o: u64| o as usize;
        p[at(abi::SNP_PARAMS_HKAT_SALT)..][..32].copy_from_slice(&salt);
        p[at(abi::SNP_PARAMS_HKAT_IKM)..][..32].copy_from_slice(&ikm);
        p[at(abi::SNP_PARAMS_HKAT_INFO_LEN)..][..4]
            .copy_from_slice(&(info_len as u32).to_le_bytes());
        p[at(abi::SNP_PARAMS_HKAT_INFO)..][..info_len].copy_from_slice(&info);
        let (st, out, vm) = run_params(p);
        assert_eq!(st, ExitStatus::Exited(0), "{out}");
        let got = read(vm.guest_memory(), abi::SNP_REPORT_OUT, 64);
        // PRK = HMAC-SHA256(salt, IKM).
        let key = PKey::hmac(&salt).unwrap();
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        signer.update(&ikm).unwrap();
        let prk = signer.sign_to_vec().unwrap();
        assert_eq!(hex(&got[..32]), hex(&prk), "PRK, info {info_len}");
        // OKM = HKDF-SHA256(salt, IKM, info), 32 bytes.
        let mut ctx = PkeyCtx::new_id(Id::HKDF).unwrap();
        ctx.derive_init().unwrap();
        ctx.set_hkdf_md(Md::sha256()).unwrap();
        ctx.set_hkdf_salt(&salt).unwrap();
        ctx.set_hkdf_key(&ikm).unwrap();
        ctx.add_hkdf_info(&info).unwrap();
        let mut okm = [0u8; 32];
        ctx.derive(Some(&mut okm)).unwrap();
        assert_eq!(hex(&got[32..]), hex(&okm), "OKM, info {info_len}");
    }
    let mut p = vec![0u8; PAGE];
    p[..4].copy_from_slice(&abi::SNP_PARAMS_FLAG_HKDF_KAT.to_le_bytes());
    let o = abi::SNP_PARAMS_HKAT_INFO_LEN as usize;
    p[o..o + 4].copy_from_slice(&(abi::SNP_PARAMS_HKAT_INFO_MAX + 1).to_le_bytes());
    let (st, out, _) = run_params(p);
    assert_eq!(
        st,
        ExitStatus::Exited(abi::SNP_ATTEST_BAD_HKAT_PARAMS),
        "{out}"
    );
}
