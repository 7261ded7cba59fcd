//! The soft SNP certificate chain: a soft ARK and ASK (RSA-4096, RSASSA-PSS SHA-384, MGF1
//! SHA-384, salt 48, as AMD's; `snp-spec-notes.md` §3.3) persisted in `snp-ca.json`, and VCEK
//! certificates with AMD's X.509 extensions for a TCB and CHIP_ID.
//!
//! The names are AMD's (CN `ARK-Milan`, `SEV-Milan`, `SEV-VCEK`) so that tools that classify
//! certificates by CN work, but O and OU say `sevm SOFT ... NOT AMD`: nobody can take these for
//! AMD's. The `openssl` crate cannot sign an X.509 certificate with PSS parameters, so the
//! TBSCertificate is written here in DER and signed with OpenSSL's PSS signer.

use crate::{FwError, Result};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use openssl::x509::{X509NameBuilder, X509};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The CA file in a platform directory.
pub const CA_FILE: &str = "snp-ca.json";
/// The product the soft chain is named for.
pub const PRODUCT: &str = "Milan";
/// O of every soft certificate (the non-AMD marker).
pub const SOFT_O: &str = "sevm SOFT SNP firmware - NOT Advanced Micro Devices";
/// OU of every soft certificate.
pub const SOFT_OU: &str = "sevm soft CA - TEST ONLY, NOT AMD";
/// The CRL distribution point AMD's chain names (kept for tools that insist on one).
pub const CRL_URL: &str = "https://kdsintf.amd.com/vcek/v1/Milan/crl";

// ---- minimal DER writer ----

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let be = n.to_be_bytes();
        let skip = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
        out.push(0x80 | (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn int_bytes(be: &[u8]) -> Vec<u8> {
    let skip = be
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(be.len().saturating_sub(1));
    let mut c = Vec::new();
    if be.get(skip).is_some_and(|&b| b & 0x80 != 0) {
        c.push(0);
    }
    c.extend_from_slice(&be[skip..]);
    if c.is_empty() {
        c.push(0);
    }
    der(0x02, &c)
}

fn int(v: u64) -> Vec<u8> {
    int_bytes(&v.to_be_bytes())
}

fn oid(dotted: &[u64]) -> Vec<u8> {
    let mut c = vec![(dotted[0] * 40 + dotted[1]) as u8];
    for &arc in &dotted[2..] {
        let mut tmp = vec![(arc & 0x7F) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7F) as u8);
            v >>= 7;
        }
        tmp.reverse();
        c.extend_from_slice(&tmp);
    }
    der(0x06, &c)
}

fn ext(id: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let crit = if critical { der(0x01, &[0xFF]) } else { vec![] };
    seq(&[&oid(id), &crit, &der(0x04, value)])
}

const SHA384: [u64; 9] = [2, 16, 840, 1, 101, 3, 4, 2, 2];
const AMD: [u64; 7] = [1, 3, 6, 1, 4, 1, 3704];

/// AlgorithmIdentifier of RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48.
fn pss_alg() -> Vec<u8> {
    let h = seq(&[&oid(&SHA384)]);
    let mgf = seq(&[&oid(&[1, 2, 840, 113549, 1, 1, 8]), &h]);
    let params = seq(&[&der(0xA0, &h), &der(0xA1, &mgf), &der(0xA2, &int(48))]);
    seq(&[&oid(&[1, 2, 840, 113549, 1, 1, 10]), &params])
}

/// UTCTime of a Unix time (years 1950..2049).
fn utc_time(secs: i64) -> Vec<u8> {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        y.rem_euclid(100),
        m,
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    der(0x17, s.as_bytes())
}

fn validity(years: i64) -> Result<Vec<u8>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| FwError::InvalidArgument("system clock is before 1970"))?
        .as_secs() as i64;
    let end = (now + years * 365 * 86400).min(2_524_607_999); // UTCTime ends 2049-12-31
    Ok(seq(&[&utc_time(now - 86400), &utc_time(end)]))
}

fn name(cn: &str) -> Result<Vec<u8>> {
    let mut b = X509NameBuilder::new()?;
    for (k, v) in [
        ("OU", SOFT_OU),
        ("C", "US"),
        ("L", "Santa Clara"),
        ("ST", "CA"),
        ("O", SOFT_O),
        ("CN", cn),
    ] {
        b.append_entry_by_text(k, v)?;
    }
    Ok(b.build().to_der()?)
}

fn key_id(spki: &[u8]) -> [u8; 20] {
    openssl::sha::sha1(spki)
}

/// Signs `tbs` with RSASSA-PSS SHA-384 and wraps it into a Certificate.
fn sign_cert(tbs: &[u8], key: &PKey<Private>) -> Result<X509> {
    let mut s = Signer::new(MessageDigest::sha384(), key)?;
    s.set_rsa_padding(Padding::PKCS1_PSS)?;
    s.set_rsa_mgf1_md(MessageDigest::sha384())?;
    s.set_rsa_pss_saltlen(RsaPssSaltlen::custom(48))?;
    s.update(tbs)?;
    let sig = s.sign_to_vec()?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&sig);
    Ok(X509::from_der(&seq(&[tbs, &pss_alg(), &der(0x03, &bits)]))?)
}

struct Tbs<'a> {
    serial: u64,
    issuer_cn: &'a str,
    subject_cn: &'a str,
    years: i64,
    spki: &'a [u8],
    exts: Vec<Vec<u8>>,
}

fn tbs(t: &Tbs<'_>) -> Result<Vec<u8>> {
    let exts = der(
        0xA3,
        &seq(&t.exts.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    );
    Ok(seq(&[
        &der(0xA0, &int(2)),
        &int(t.serial),
        &pss_alg(),
        &name(t.issuer_cn)?,
        &validity(t.years)?,
        &name(t.subject_cn)?,
        t.spki,
        &exts,
    ]))
}

fn crl_dp() -> Vec<u8> {
    let uri = der(0x86, CRL_URL.as_bytes());
    seq(&[&seq(&[&der(0xA0, &der(0xA0, &uri))])])
}

/// The soft ARK and ASK with their private keys.
pub struct SoftCa {
    ark_key: PKey<Private>,
    ask_key: PKey<Private>,
    /// The self-signed ARK certificate.
    pub ark: X509,
    /// The ASK certificate, signed by the ARK.
    pub ask: X509,
}

impl std::fmt::Debug for SoftCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftCa").finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaFile {
    version: u32,
    ark_key_pem: String,
    ask_key_pem: String,
    ark_der_hex: String,
    ask_der_hex: String,
}

impl SoftCa {
    /// New RSA-4096 keys and certificates.
    pub fn generate() -> Result<Self> {
        let ark_key = PKey::from_rsa(Rsa::generate(4096)?)?;
        let ask_key = PKey::from_rsa(Rsa::generate(4096)?)?;
        let ark_spki = ark_key.public_key_to_der()?;
        let ask_spki = ask_key.public_key_to_der()?;
        let ark_cn = format!("ARK-{PRODUCT}");
        let ask_cn = format!("SEV-{PRODUCT}");
        let ark = sign_cert(
            &tbs(&Tbs {
                serial: 0x10000,
                issuer_cn: &ark_cn,
                subject_cn: &ark_cn,
                years: 25,
                spki: &ark_spki,
                exts: vec![
                    ext(&[2, 5, 29, 15], true, &der(0x03, &[1, 0x06])),
                    ext(&[2, 5, 29, 19], true, &seq(&[&der(0x01, &[0xFF])])),
                    ext(&[2, 5, 29, 14], false, &der(0x04, &key_id(&ark_spki))),
                    ext(&[2, 5, 29, 31], false, &crl_dp()),
                ],
            })?,
            &ark_key,
        )?;
        let ask = sign_cert(
            &tbs(&Tbs {
                serial: 0x10001,
                issuer_cn: &ark_cn,
                subject_cn: &ask_cn,
                years: 25,
                spki: &ask_spki,
                exts: vec![
                    ext(&[2, 5, 29, 15], true, &der(0x03, &[2, 0x04])),
                    ext(&[2, 5, 29, 19], true, &seq(&[&der(0x01, &[0xFF]), &int(0)])),
                    ext(&[2, 5, 29, 14], false, &der(0x04, &key_id(&ask_spki))),
                    ext(
                        &[2, 5, 29, 35],
                        false,
                        &seq(&[&der(0x80, &key_id(&ark_spki))]),
                    ),
                    ext(&[2, 5, 29, 31], false, &crl_dp()),
                ],
            })?,
            &ark_key,
        )?;
        Ok(SoftCa {
            ark_key,
            ask_key,
            ark,
            ask,
        })
    }

    /// Loads `dir/snp-ca.json`, or generates and writes it (mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join(CA_FILE);
        super::load_or_create(
            &path,
            "SNP CA file",
            64 * 1024,
            || {
                let ca = Self::generate()?;
                let pem = |k: &PKey<Private>| -> Result<Zeroizing<String>> {
                    let v = Zeroizing::new(k.private_key_to_pem_pkcs8()?);
                    Ok(Zeroizing::new(String::from_utf8_lossy(&v).into_owned()))
                };
                let (a, s) = (pem(&ca.ark_key)?, pem(&ca.ask_key)?);
                let f = CaFile {
                    version: 1,
                    ark_key_pem: a.to_string(),
                    ask_key_pem: s.to_string(),
                    ark_der_hex: hex::encode(ca.ark.to_der()?),
                    ask_der_hex: hex::encode(ca.ask.to_der()?),
                };
                let json = Zeroizing::new(serde_json::to_vec_pretty(&f).map_err(|e| {
                    FwError::StateFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?);
                let _wipe = (Zeroizing::new(f.ark_key_pem), Zeroizing::new(f.ask_key_pem));
                Ok(json)
            },
            Self::parse,
        )
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| FwError::StateFile {
            path: PathBuf::from(path),
            reason,
        };
        let f: CaFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let (ak, sk) = (Zeroizing::new(f.ark_key_pem), Zeroizing::new(f.ask_key_pem));
        if f.version != 1 {
            return Err(bad(format!("version {} is not 1", f.version)));
        }
        let key = |field: &str, pem: &str| {
            PKey::private_key_from_pem(pem.as_bytes())
                .ok()
                .filter(|k| k.rsa().is_ok_and(|r| r.size() == 512))
                .ok_or_else(|| bad(format!("{field}: not an RSA-4096 private key in PEM")))
        };
        let cert = |field: &str, h: &str| {
            hex::decode(h)
                .ok()
                .and_then(|d| X509::from_der(&d).ok())
                .ok_or_else(|| bad(format!("{field}: not a hex DER X.509 certificate")))
        };
        let ca = SoftCa {
            ark_key: key("ark_key_pem", &ak)?,
            ask_key: key("ask_key_pem", &sk)?,
            ark: cert("ark_der_hex", &f.ark_der_hex)?,
            ask: cert("ask_der_hex", &f.ask_der_hex)?,
        };
        let matches =
            |c: &X509, k: &PKey<Private>| -> Result<bool> { Ok(c.public_key()?.public_eq(k)) };
        if !matches(&ca.ark, &ca.ark_key)? || !matches(&ca.ask, &ca.ask_key)? {
            return Err(bad("a certificate does not match its private key".into()));
        }
        Ok(ca)
    }

    /// A VCEK certificate for the P-384 public key `vcek` at `tcb` (Milan/Genoa layout) with
    /// `chip_id` as hwID, signed by the ASK.
    pub fn vcek_cert(&self, vcek: &PKey<Public>, tcb: u64, chip_id: &[u8; 64]) -> Result<X509> {
        let spki = vcek.public_key_to_der()?;
        let mut exts = amd_tcb_extensions(tcb);
        exts.push(ext(&[&AMD[..], &[1, 4]].concat(), false, chip_id));
        sign_cert(
            &tbs(&Tbs {
                serial: 1,
                issuer_cn: &format!("SEV-{PRODUCT}"),
                subject_cn: "SEV-VCEK",
                years: 7,
                spki: &spki,
                exts,
            })?,
            &self.ask_key,
        )
    }
}

/// The platform file holding the soft ASVK (the VLEK chain's intermediate).
pub const ASVK_FILE: &str = "snp-asvk.json";

/// The soft ASVK (CN `SEV-VLEK-<Product>`, RSA-4096, signed by the soft ARK) with its key,
/// made once per platform directory beside the ARK/ASK.
pub struct SoftAsvk {
    key: PKey<Private>,
    /// The ASVK certificate.
    pub cert: X509,
}

impl std::fmt::Debug for SoftAsvk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftAsvk").finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AsvkFile {
    version: u32,
    asvk_key_pem: String,
    asvk_der_hex: String,
}

impl SoftCa {
    /// A new ASVK signed by this ARK.
    fn make_asvk(&self) -> Result<SoftAsvk> {
        let key = PKey::from_rsa(Rsa::generate(4096)?)?;
        let spki = key.public_key_to_der()?;
        let ark_spki = self.ark_key.public_key_to_der()?;
        let cert = sign_cert(
            &tbs(&Tbs {
                serial: 0x10002,
                issuer_cn: &format!("ARK-{PRODUCT}"),
                subject_cn: &format!("SEV-VLEK-{PRODUCT}"),
                years: 25,
                spki: &spki,
                exts: vec![
                    ext(&[2, 5, 29, 15], true, &der(0x03, &[2, 0x04])),
                    ext(&[2, 5, 29, 19], true, &seq(&[&der(0x01, &[0xFF]), &int(0)])),
                    ext(&[2, 5, 29, 14], false, &der(0x04, &key_id(&spki))),
                    ext(
                        &[2, 5, 29, 35],
                        false,
                        &seq(&[&der(0x80, &key_id(&ark_spki))]),
                    ),
                    ext(&[2, 5, 29, 31], false, &crl_dp()),
                ],
            })?,
            &self.ark_key,
        )?;
        Ok(SoftAsvk { key, cert })
    }

    /// Loads `dir/snp-asvk.json`, or makes the ASVK with this ARK and writes it (mode 0600).
    /// A file whose certificate this ARK did not sign is refused.
    pub fn asvk_load_or_create(&self, dir: &Path) -> Result<SoftAsvk> {
        let path = dir.join(ASVK_FILE);
        let ark_pub = self.ark.public_key()?;
        super::load_or_create(
            &path,
            "SNP ASVK file",
            32 * 1024,
            || {
                let a = self.make_asvk()?;
                let pem = Zeroizing::new(a.key.private_key_to_pem_pkcs8()?);
                let f = AsvkFile {
                    version: 1,
                    asvk_key_pem: String::from_utf8_lossy(&pem).into_owned(),
                    asvk_der_hex: hex::encode(a.cert.to_der()?),
                };
                let json = Zeroizing::new(serde_json::to_vec_pretty(&f).map_err(|e| {
                    FwError::StateFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?);
                let _wipe = Zeroizing::new(f.asvk_key_pem);
                Ok(json)
            },
            |path, bytes| {
                let bad = |reason: String| FwError::StateFile {
                    path: PathBuf::from(path),
                    reason,
                };
                let f: AsvkFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
                let k = Zeroizing::new(f.asvk_key_pem);
                if f.version != 1 {
                    return Err(bad(format!("version {} is not 1", f.version)));
                }
                let key = PKey::private_key_from_pem(k.as_bytes())
                    .ok()
                    .filter(|k| k.rsa().is_ok_and(|r| r.size() == 512))
                    .ok_or_else(
                        || bad("asvk_key_pem: not an RSA-4096 private key in PEM".into()),
                    )?;
                let cert = hex::decode(&f.asvk_der_hex)
                    .ok()
                    .and_then(|d| X509::from_der(&d).ok())
                    .ok_or_else(|| bad("asvk_der_hex: not a hex DER X.509 certificate".into()))?;
                if !cert.public_key()?.public_eq(&key) {
                    return Err(bad("asvk_der_hex: does not match asvk_key_pem".into()));
                }
                if !cert.verify(&ark_pub)? {
                    return Err(bad("asvk_der_hex: not signed by this platform's ARK".into()));
                }
                Ok(SoftAsvk { key, cert })
            },
        )
    }
}

/// The extensions a VCEK and a VLEK certificate share: structVersion (`.1.1`), productName
/// (`.1.2`) and the TCB SVNs (`.1.3.1`–`.1.3.8`, Milan/Genoa layout: bootloader, TEE, SNP,
/// four spares, microcode) of `tcb`.
fn amd_tcb_extensions(tcb: u64) -> Vec<Vec<u8>> {
    let b = tcb.to_le_bytes();
    let mut exts = vec![
        ext(&[&AMD[..], &[1, 1]].concat(), false, &int(0)),
        ext(
            &[&AMD[..], &[1, 2]].concat(),
            false,
            &der(0x16, format!("{PRODUCT}-B0").as_bytes()),
        ),
    ];
    for (arc, v) in [
        (1, b[0]),
        (2, b[1]),
        (3, b[6]),
        (4, 0),
        (5, 0),
        (6, 0),
        (7, 0),
        (8, b[7]),
    ] {
        exts.push(ext(
            &[&AMD[..], &[1, 3, arc]].concat(),
            false,
            &int(u64::from(v)),
        ));
    }
    exts
}

impl SoftAsvk {
    /// A VLEK certificate (CN `SEV-VLEK`, issuer the ASVK) for the P-384 key `vlek` at `tcb`,
    /// with the cspID extension (`.5`, IA5String) in place of the VCEK's hwID.
    pub fn vlek_cert(&self, vlek: &PKey<Public>, tcb: u64, csp_id: &str) -> Result<X509> {
        let spki = vlek.public_key_to_der()?;
        let mut exts = amd_tcb_extensions(tcb);
        exts.push(ext(
            &[&AMD[..], &[1, 5]].concat(),
            false,
            &der(0x16, csp_id.as_bytes()),
        ));
        sign_cert(
            &tbs(&Tbs {
                serial: 1,
                issuer_cn: &format!("SEV-VLEK-{PRODUCT}"),
                subject_cn: "SEV-VLEK",
                years: 7,
                spki: &spki,
                exts,
            })?,
            &self.key,
        )
    }
}
