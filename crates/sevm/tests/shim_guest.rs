//! `sevm shim --guest`: unmodified `snpguest` 0.11 inside a soft SNP VM, through the guest
//! channel of `sevm run --guest idle --guest-channel S`. The report verifies against the
//! exported chain, has the owner's predicted MEASUREMENT, the request file's REPORT_DATA and
//! snpguest's default VMPL (1); derived keys follow the guest field selection; the
//! certificates of the extended report are the platform's; garbage ioctls get the driver's
//! errors.
//!
//! Needs /dev/kvm, snpguest, python3 and `libsevm_shim.so` beside sevm (`cargo build -p sevm
//! -p sevm-shim`): SKIP without them, a failure when `CI` is set.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEM: &str = "16M";

/// The running VM; killed on drop.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        // SIGTERM: sevm stops the VM cleanly (and removes the channel socket).
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_vm(plat: &Path, sock: &Path) -> Vm {
    let child = sevm()
        .args(["run", "--guest", "idle", "--memory", MEM, "--platform-dir"])
        .arg(plat)
        .args([
            "--object",
            "sev-snp-guest,id=snp0,policy=0x30000,cbitpos=47,reduced-phys-bits=1",
            "--machine",
            "confidential-guest-support=snp0",
            "--serial",
            "none",
            "--timeout",
            "600",
            "--guest-channel",
        ])
        .arg(sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sevm run");
    let vm = Vm(child);
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the guest channel {} never appeared",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    vm
}

fn shim(plat: &Path, sock: &Path) -> Command {
    let mut c = sevm();
    c.arg("shim")
        .arg("--platform-dir")
        .arg(plat)
        .arg("--guest")
        .arg(sock)
        .arg("--");
    c
}

fn predicted() -> String {
    ok(sevm().args([
        "owner", "snp", "measure", "--vmm", "sevm", "--guest", "idle", "--memory", MEM, "--policy",
        "0x30000", "--vcpus", "1",
    ]))
}

/// A Python program doing raw ioctls on /dev/sev-guest; prints one line per case.
const GARBAGE: &str = r#"
import ctypes, errno, fcntl, os, struct
fd = os.open("/dev/sev-guest", os.O_RDWR)
def call(req, arg):
    buf = ctypes.create_string_buffer(arg, len(arg))
    try:
        fcntl.ioctl(fd, req, buf)
        r = "ok"
    except OSError as e:
        r = errno.errorcode[e.errno]
    return r, buf.raw
REPORT, KEY, EXT = 0xC0205300, 0xC0205301, 0xC0205302
req = ctypes.create_string_buffer(112)
resp = ctypes.create_string_buffer(4000)
def arg(ver, rq, rs):
    return struct.pack("<BxxxxxxxQQQ", ver, rq, rs, 0)
ra, sa = ctypes.addressof(req), ctypes.addressof(resp)
r, b = call(REPORT, arg(0, ra, sa)); print("version0", r, hex(struct.unpack_from("<Q", b, 24)[0]))
r, b = call(REPORT, arg(1, 0, sa)); print("nullreq", r, hex(struct.unpack_from("<Q", b, 24)[0]))
r, b = call(REPORT, arg(1, 0x10, sa)); print("badreq", r, hex(struct.unpack_from("<Q", b, 24)[0]))
struct.pack_into("<QI", req, 96, 0x1000, 0x1001)
r, b = call(EXT, arg(1, ra, sa)); print("badcertslen", r, hex(struct.unpack_from("<Q", b, 24)[0]))
struct.pack_into("<QI", req, 96, 0, 0)
r, b = call(EXT, arg(1, ra, sa)); print("probe", r, hex(struct.unpack_from("<Q", b, 24)[0]), struct.unpack_from("<I", req, 104)[0])
r, b = call(0xC0205309, arg(1, ra, sa)); print("unknown", r)
r, b = call(REPORT, arg(1, ra, sa)); print("good", r, struct.unpack_from("<I", resp, 0)[0], struct.unpack_from("<I", resp, 4)[0])
"#;

#[test]
fn snpguest_report_key_and_certificates_through_the_guest_channel() {
    let (Some(_), Some(sg)) = (shim_lib(), snpguest()) else {
        return;
    };
    if !kvm() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (plat, sock, certs) = (
        t.path().join("plat"),
        t.path().join("ch.sock"),
        t.path().join("export"),
    );
    let vm = start_vm(&plat, &sock);

    // snpguest report, as on a guest.
    let (rep, reqf) = (t.path().join("report.bin"), t.path().join("request.bin"));
    ok(shim(&plat, &sock)
        .arg(&sg)
        .args(["report"])
        .arg(&rep)
        .arg(&reqf)
        .arg("--random"));
    let report = std::fs::read(&rep).unwrap();
    let request = std::fs::read(&reqf).unwrap();
    assert_eq!((report.len(), request.len()), (0x4a0, 64));
    assert_eq!(
        &report[0x50..0x90],
        &request[..],
        "REPORT_DATA = request.bin"
    );
    assert_eq!(
        u32::from_le_bytes(report[0x30..0x34].try_into().unwrap()),
        1,
        "VMPL = snpguest's default (1)"
    );
    let m = predicted();
    assert_eq!(
        hex::encode(&report[0x90..0xc0]),
        m,
        "MEASUREMENT = the owner's prediction"
    );
    ok(sevm()
        .args(["platform", "snp", "export", "--platform-dir"])
        .arg(&plat)
        .arg(&certs));
    let (o, so, se) = run(Command::new(&sg)
        .args(["verify", "attestation"])
        .arg(&certs)
        .arg(&rep)
        .args([
            "-m",
            &format!("0x{m}"),
            "-r",
            &format!("0x{}", hex::encode(&request)),
        ]));
    assert!(o.status.success(), "snpguest verify attestation:\n{so}{se}");
    assert!(so.contains("VEK signed the Attestation Report"), "{so}");
    // A second report uses the next sequence numbers (a reused one would be refused).
    let rep2 = t.path().join("report2.bin");
    ok(shim(&plat, &sock)
        .arg(&sg)
        .arg("report")
        .arg(&rep2)
        .arg(&reqf));
    assert_eq!(&std::fs::read(&rep2).unwrap()[0x50..0x90], &request[..]);

    // snpguest key: same selection, same key; another selection, another key.
    let key = |name: &str, gfs: &str| -> Vec<u8> {
        let p = t.path().join(name);
        ok(shim(&plat, &sock)
            .arg(&sg)
            .arg("key")
            .arg(&p)
            .args(["vcek", "-g", gfs]));
        let k = std::fs::read(&p).unwrap();
        assert_eq!(k.len(), 32, "{name}");
        k
    };
    let (k8a, k8b, k0, k9) = (
        key("k8a", "0x8"),
        key("k8b", "0x8"),
        key("k0", "0"),
        key("k9", "0x9"),
    );
    assert_eq!(k8a, k8b, "same field selection, same key");
    assert_ne!(k8a, k0, "measurement selected or not");
    assert_ne!(k8a, k9, "policy added");
    assert_ne!(k0, k9);

    // snpguest certificates: the chain of the extended report (the length probe first).
    let got = t.path().join("got");
    ok(shim(&plat, &sock)
        .arg(&sg)
        .args(["certificates", "pem"])
        .arg(&got));
    let pem = |d: &Path, f: &str| {
        openssl::x509::X509::from_pem(&std::fs::read(d.join(f)).unwrap()).unwrap()
    };
    for f in ["ark.pem", "ask.pem", "vcek.pem"] {
        // The soft ASK signs the VCEK afresh on each export (RSA-PSS salt): same key and
        // subject, possibly another signature.
        let (a, b) = (pem(&got, f), pem(&certs, f));
        assert!(
            a.public_key().unwrap().public_eq(&b.public_key().unwrap()),
            "{f} of the extended report has the exported key"
        );
        assert_eq!(
            a.subject_name().to_der().unwrap(),
            b.subject_name().to_der().unwrap(),
            "{f}"
        );
    }
    let (o, so, se) = run(Command::new(&sg).args(["verify", "certs"]).arg(&got));
    assert!(o.status.success(), "snpguest verify certs:\n{so}{se}");

    // Garbage ioctls: the driver's errors and exitinfo2.
    let py = match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => PathBuf::from("python3"),
        _ => {
            missing::<()>("python3 not found");
            return;
        }
    };
    let out = ok(shim(&plat, &sock).arg(&py).args(["-c", GARBAGE]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "version0 EINVAL 0x0",
            "nullreq EINVAL 0xff",
            "badreq EFAULT 0xff",
            "badcertslen EINVAL 0xff",
            &format!("probe EIO 0x100000000 {}", 4096 * 2),
            "unknown ENOTTY",
            "good ok 0 1184",
        ],
        "{out}"
    );
    drop(vm);
    assert!(!sock.exists(), "the socket goes with the run");
}

/// `guest-channel` in a TOML `[sev-snp]` table opens the channel as `--guest-channel` does
/// (relative to the file's directory, mode 0600), and snpguest gets a report through it.
#[test]
fn the_tomls_guest_channel_is_served() {
    let (Some(_), Some(sg)) = (shim_lib(), snpguest()) else {
        return;
    };
    if !kvm() {
        return;
    }
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("vm.toml");
    std::fs::write(
        &cfg,
        format!(
            "guest = \"idle\"\nmemory = \"{MEM}\"\n[sev-snp]\nplatform-dir = \"plat\"\n\
             cbitpos = 47\nguest-channel = \"ch.sock\"\n"
        ),
    )
    .unwrap();
    let (plat, sock) = (t.path().join("plat"), t.path().join("ch.sock"));
    let child = sevm()
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--serial", "none", "--timeout", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sevm run");
    let _vm = Vm(child);
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the guest channel {} never appeared",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let md = std::fs::metadata(&sock).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let (rep, reqf) = (t.path().join("report.bin"), t.path().join("request.bin"));
    ok(shim(&plat, &sock)
        .arg(&sg)
        .arg("report")
        .arg(&rep)
        .arg(&reqf)
        .arg("--random"));
    let report = std::fs::read(&rep).unwrap();
    assert_eq!(&report[0x50..0x90], &std::fs::read(&reqf).unwrap()[..]);
}
