//! A session made by `sevm owner session` unwraps to the TEK/TIK it wrote, checked by an
//! independent implementation: Python with the `cryptography` package, written from the SEV
//! spec notes (the same algorithms as `../shared/reference/kat/e2e_kat.py`).

mod common;
use common::*;

const SCRIPT: &str = r#"
import base64, hashlib, hmac, struct, sys
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

def kdf(key, label, ctx, outlen):
    out = b''; i = 1
    while len(out) < outlen:
        out += hmac.new(key, struct.pack('<I', i) + label + b'\x00' + ctx + struct.pack('<I', outlen * 8), hashlib.sha256).digest()
        i += 1
    return out[:outlen]

LE = lambda b: int.from_bytes(b, 'little')
mode, d = sys.argv[1], sys.argv[2]
pdh = ec.derive_private_key(int(sys.argv[3], 16), ec.SECP384R1())
if mode == 'gen':
    n = pdh.public_key().public_numbers()
    le72 = lambda v: v.to_bytes(48, 'little') + bytes(24)
    body = struct.pack('<IBBHII', 1, 0, 24, 0, 0x1003, 3) + struct.pack('<I', 2) + le72(n.x) + le72(n.y)
    body += bytes(1044 - len(body))
    sig = struct.pack('<II', 0x1000, 0) + bytes(512)
    cert = body + sig + sig
    assert len(cert) == 2084
    open(d + '/pdh.cert', 'wb').write(cert)
    sys.exit(0)
policy = int(sys.argv[4], 0)
g = base64.b64decode(open(d + '/t_godh.b64').read())
assert len(g) == 2084, len(g)
ver, maj, mnr, _, usage, algo = struct.unpack_from('<IBBHII', g, 0)
assert (ver, usage, algo) == (1, 0x1003, 3), (ver, usage, algo)
assert struct.unpack_from('<I', g, 16)[0] == 2, 'GODH curve must be P-384'
q = ec.EllipticCurvePublicNumbers(LE(g[20:68]), LE(g[92:140]), ec.SECP384R1()).public_key()
z = pdh.exchange(ec.ECDH(), q)
s = base64.b64decode(open(d + '/t_session.b64').read())
assert len(s) == 128, len(s)
nonce, wrap_tk, wrap_iv, wrap_mac, policy_mac = s[0:16], s[16:48], s[48:64], s[64:96], s[96:128]
ms = kdf(z, b'sev-master-secret', nonce, 16)
kek = kdf(ms, b'sev-kek', b'', 16); kik = kdf(ms, b'sev-kik', b'', 16)
assert hmac.compare_digest(hmac.new(kik, wrap_tk, hashlib.sha256).digest(), wrap_mac), 'wrap MAC'
dec = Cipher(algorithms.AES(kek), modes.CTR(wrap_iv)).decryptor()
tk = dec.update(wrap_tk) + dec.finalize()
tek, tik = tk[:16], tk[16:]
assert tek == open(d + '/t_tek.bin', 'rb').read(), 'TEK'
assert tik == open(d + '/t_tik.bin', 'rb').read(), 'TIK'
assert hmac.compare_digest(hmac.new(tik, struct.pack('<I', policy), hashlib.sha256).digest(), policy_mac), 'policy MAC'
print('SESSION-OK')
"#;

#[test]
fn our_session_unwraps_in_python() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = d.join("check_session.py");
    std::fs::write(&script, SCRIPT).unwrap();
    for (i, policy) in ["0x1", "0x5", "0x70001", "4294967295"].iter().enumerate() {
        let key = format!("{:02x}", 0x11 + i).repeat(48);
        ok(std::process::Command::new(&py)
            .arg(&script)
            .args(["gen", d.to_str().unwrap(), &key]));
        ok(sevm()
            .args(["owner", "session", "--no-verify", "--name", "t", "--out"])
            .arg(d)
            .arg(d.join("pdh.cert"))
            .arg(policy));
        let p = if policy.starts_with("0x") {
            policy.to_string()
        } else {
            format!("{:#x}", policy.parse::<u64>().unwrap())
        };
        let out = ok(std::process::Command::new(&py).arg(&script).args([
            "check",
            d.to_str().unwrap(),
            &key,
            &p,
        ]));
        assert!(out.contains("SESSION-OK"), "{out}");
    }
}

#[test]
fn session_refuses_an_unverifiable_chain() {
    let Some(td) = testdata() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut chain = std::fs::read(td.join("derived/naples_sev_chain_pdh_pek_oca_cek.bin")).unwrap();
    chain[100] ^= 1; // PDH public key
    let p = dir.path().join("tampered.bin");
    std::fs::write(&p, &chain).unwrap();
    let e = fails(
        sevm()
            .args(["owner", "session", "--out"])
            .arg(dir.path())
            .arg(&p)
            .arg("1"),
    );
    assert!(
        e.contains("PDH <- PEK") && e.contains("tampered.bin"),
        "{e}"
    );
    assert!(!dir.path().join("vm_tek.bin").exists());
    // `owner session --no-verify` of `chain` for `policy`, which must fail.
    let no_verify = |chain: &std::path::Path, policy: &str| {
        fails(
            sevm()
                .args(["owner", "session", "--no-verify", "--out"])
                .arg(dir.path())
                .arg(chain)
                .arg(policy),
        )
    };
    // A policy that does not fit 32 bits.
    let e = no_verify(&p, "0x1ffffffff");
    assert!(e.contains("32 bits"), "{e}");
    // --no-verify still insists that the first certificate is a PDH.
    let pek = dir.path().join("pek-as-pdh.cert");
    std::fs::write(&pek, &chain[2084..2 * 2084]).unwrap();
    let e = no_verify(&pek, "1");
    assert!(e.contains("pek-as-pdh.cert") && e.contains("usage"), "{e}");
    // Garbage is an error naming the file and the field.
    let junk = dir.path().join("junk.cert");
    std::fs::write(&junk, [0x5au8; 2084]).unwrap();
    let e = no_verify(&junk, "1");
    assert!(e.contains("junk.cert") && e.contains("PDH"), "{e}");
}
