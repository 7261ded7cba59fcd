//! Certificate chains: the platform's SEV chain (PDH, PEK, OCA, CEK), the AMD CA chain (ASK,
//! ARK), the full chain file (`sevctl export --full`: PDH ‖ PEK ‖ OCA ‖ CEK ‖ ASK ‖ ARK), chain
//! verification that names the failing link, and AMD's built-in roots.

use super::{CaCert, CertError, SevCert, Usage};
use openssl::ec::EcKey;
use openssl::pkey::Public;
use std::fmt;
use thiserror::Error;

/// One link of the chain, in the order [`verify_full`] checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    /// The ARK is self-signed (and, with a trusted root, is that root).
    ArkSelf,
    /// The ASK is signed by the ARK.
    AskByArk,
    /// The CEK is signed by the ASK.
    CekByAsk,
    /// The OCA is self-signed.
    OcaSelf,
    /// The PEK is signed by the OCA.
    PekByOca,
    /// The PEK is signed by the CEK.
    PekByCek,
    /// The PDH is signed by the PEK.
    PdhByPek,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::ArkSelf => "ARK <- ARK (self)",
            Link::AskByArk => "ASK <- ARK",
            Link::CekByAsk => "CEK <- ASK",
            Link::OcaSelf => "OCA <- OCA (self)",
            Link::PekByOca => "PEK <- OCA",
            Link::PekByCek => "PEK <- CEK",
            Link::PdhByPek => "PDH <- PEK",
        })
    }
}

impl Link {
    /// Every link, in the order [`check_links`] and [`verify_full`] check them: root first, so
    /// the first failing link is the tampered certificate's own signature (a changed body
    /// breaks its own signature before it breaks its children's).
    pub const ALL: [Link; 7] = [
        Link::ArkSelf,
        Link::AskByArk,
        Link::CekByAsk,
        Link::OcaSelf,
        Link::PekByOca,
        Link::PekByCek,
        Link::PdhByPek,
    ];
}

/// The outcome of checking one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCheck {
    /// The link.
    pub link: Link,
    /// `Ok` when its signature verifies.
    pub result: Result<(), CertError>,
}

impl LinkCheck {
    fn of(link: Link, result: Result<(), CertError>) -> Self {
        LinkCheck { link, result }
    }

    fn into_result(self) -> Result<(), ChainError> {
        let link = self.link;
        self.result.map_err(|source| ChainError { link, source })
    }
}

/// The first failing link of `checks`, as an error.
fn first_failure(checks: impl IntoIterator<Item = LinkCheck>) -> Result<(), ChainError> {
    checks.into_iter().try_for_each(LinkCheck::into_result)
}

/// Checks every signature of the platform chain `sev` anchored at the AMD chain `ca`, without
/// stopping at the first failure, in [`Link::ALL`]'s order. The one chain verifier: `sevm owner
/// verify-chain` reports every link from it, [`verify_full`] fails at its first failure.
pub fn check_links(sev: &SevChain, ca: &CaChain) -> Vec<LinkCheck> {
    let mut v = ca.check_links().to_vec();
    v.push(LinkCheck::of(
        Link::CekByAsk,
        sev.cek.verify_signed_by_ca(&ca.ask),
    ));
    v.extend(sev.check_links());
    v
}

/// A chain verification failure, naming the link.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("certificate chain link {link} failed: {source}")]
pub struct ChainError {
    /// The failing link.
    pub link: Link,
    /// Why.
    #[source]
    pub source: CertError,
}

/// Errors of chain decoding.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChainParseError {
    /// A certificate of the chain failed to parse.
    #[error("{chain}: {cert} certificate: {source}")]
    Cert {
        /// Which chain.
        chain: &'static str,
        /// Which certificate.
        cert: &'static str,
        /// The parse error.
        #[source]
        source: CertError,
    },
    /// The buffer has the wrong total length.
    #[error("{chain}: {len} bytes, expected {expected}")]
    Length {
        /// Which chain.
        chain: &'static str,
        /// Bytes given.
        len: usize,
        /// Bytes expected.
        expected: String,
    },
    /// A certificate has an unexpected usage at its position.
    #[error("{chain}: position of the {cert} holds a {found} certificate")]
    WrongUsage {
        /// Which chain.
        chain: &'static str,
        /// Expected certificate.
        cert: &'static str,
        /// Found usage.
        found: String,
    },
}

/// The platform chain: PDH, PEK, OCA, CEK (encoded in that order, 4 × 2084 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SevChain {
    /// Platform Diffie-Hellman key certificate.
    pub pdh: SevCert,
    /// Platform endorsement key certificate.
    pub pek: SevCert,
    /// Owner CA certificate.
    pub oca: SevCert,
    /// Chip endorsement key certificate.
    pub cek: SevCert,
}

fn check_usage(
    chain: &'static str,
    cert: &'static str,
    got: Usage,
    want: Usage,
) -> Result<(), ChainParseError> {
    if got != want {
        return Err(ChainParseError::WrongUsage {
            chain,
            cert,
            found: got.to_string(),
        });
    }
    Ok(())
}

impl SevChain {
    /// Encoded size.
    pub const LEN: usize = 4 * SevCert::LEN;
    const WHAT: &'static str = "SEV chain (PDH, PEK, OCA, CEK)";

    /// Decodes exactly 8336 bytes; each position must hold the right usage.
    pub fn parse(b: &[u8]) -> Result<Self, ChainParseError> {
        if b.len() != Self::LEN {
            return Err(ChainParseError::Length {
                chain: Self::WHAT,
                len: b.len(),
                expected: Self::LEN.to_string(),
            });
        }
        let names = ["PDH", "PEK", "OCA", "CEK"];
        let usages = [Usage::PDH, Usage::PEK, Usage::OCA, Usage::CEK];
        let mut certs = Vec::with_capacity(4);
        for (i, chunk) in b.chunks(SevCert::LEN).enumerate() {
            let c = SevCert::parse(chunk).map_err(|source| ChainParseError::Cert {
                chain: Self::WHAT,
                cert: names[i],
                source,
            })?;
            check_usage(Self::WHAT, names[i], c.usage, usages[i])?;
            certs.push(c);
        }
        let cek = certs.pop();
        let oca = certs.pop();
        let pek = certs.pop();
        let pdh = certs.pop();
        match (pdh, pek, oca, cek) {
            (Some(pdh), Some(pek), Some(oca), Some(cek)) => Ok(SevChain { pdh, pek, oca, cek }),
            _ => Err(ChainParseError::Length {
                chain: Self::WHAT,
                len: b.len(),
                expected: Self::LEN.to_string(),
            }),
        }
    }

    /// Encodes PDH ‖ PEK ‖ OCA ‖ CEK.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        for c in [&self.pdh, &self.pek, &self.oca, &self.cek] {
            v.extend_from_slice(&c.encode());
        }
        v
    }

    /// Checks OCA self, PEK <- OCA, PEK <- CEK, PDH <- PEK (not the CEK's AMD signature),
    /// every one, in that order.
    pub fn check_links(&self) -> [LinkCheck; 4] {
        [
            LinkCheck::of(Link::OcaSelf, self.oca.verify_self_signed()),
            LinkCheck::of(Link::PekByOca, self.pek.verify_signed_by(&self.oca)),
            LinkCheck::of(Link::PekByCek, self.pek.verify_signed_by(&self.cek)),
            LinkCheck::of(Link::PdhByPek, self.pdh.verify_signed_by(&self.pek)),
        ]
    }

    /// Verifies OCA self, PEK <- OCA, PEK <- CEK, PDH <- PEK (not the CEK's AMD signature).
    pub fn verify(&self) -> Result<(), ChainError> {
        first_failure(self.check_links())
    }
}

/// The AMD CA chain: ASK, ARK (encoded in that order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaChain {
    /// AMD signing key.
    pub ask: CaCert,
    /// AMD root key.
    pub ark: CaCert,
}

impl CaChain {
    const WHAT: &'static str = "CA chain (ASK, ARK)";

    /// Decodes ASK ‖ ARK filling `b` exactly.
    pub fn parse(b: &[u8]) -> Result<Self, ChainParseError> {
        let (c, rest) = Self::parse_prefix(b)?;
        if !rest.is_empty() {
            return Err(ChainParseError::Length {
                chain: Self::WHAT,
                len: b.len(),
                expected: (b.len() - rest.len()).to_string(),
            });
        }
        Ok(c)
    }

    fn parse_prefix(b: &[u8]) -> Result<(Self, &[u8]), ChainParseError> {
        let cert = |name: &'static str| {
            move |source| ChainParseError::Cert {
                chain: Self::WHAT,
                cert: name,
                source,
            }
        };
        let (ask, rest) = CaCert::parse_prefix(b).map_err(cert("ASK"))?;
        check_usage(Self::WHAT, "ASK", ask.usage, Usage::ASK)?;
        let (ark, rest) = CaCert::parse_prefix(rest).map_err(cert("ARK"))?;
        check_usage(Self::WHAT, "ARK", ark.usage, Usage::ARK)?;
        Ok((CaChain { ask, ark }, rest))
    }

    /// Encodes ASK ‖ ARK.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.ask.encode();
        v.extend_from_slice(&self.ark.encode());
        v
    }

    /// Checks ARK self and ASK <- ARK, both, in that order.
    pub fn check_links(&self) -> [LinkCheck; 2] {
        [
            LinkCheck::of(Link::ArkSelf, self.ark.verify_self_signed()),
            LinkCheck::of(Link::AskByArk, self.ask.verify_signed_by(&self.ark)),
        ]
    }

    /// Verifies ARK self and ASK <- ARK.
    pub fn verify(&self) -> Result<(), ChainError> {
        first_failure(self.check_links())
    }
}

/// The full chain: PDH ‖ PEK ‖ OCA ‖ CEK ‖ ASK ‖ ARK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullChain {
    /// The platform part.
    pub sev: SevChain,
    /// The AMD part.
    pub ca: CaChain,
}

impl FullChain {
    /// Decodes a full chain filling `b` exactly.
    pub fn parse(b: &[u8]) -> Result<Self, ChainParseError> {
        if b.len() < SevChain::LEN {
            return Err(ChainParseError::Length {
                chain: "full chain",
                len: b.len(),
                expected: format!("{} + CA chain", SevChain::LEN),
            });
        }
        let sev = SevChain::parse(&b[..SevChain::LEN])?;
        let ca = CaChain::parse(&b[SevChain::LEN..])?;
        Ok(FullChain { sev, ca })
    }

    /// Encodes the full chain.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.sev.encode();
        v.extend_from_slice(&self.ca.encode());
        v
    }
}

/// The verified PDH: its certificate and public key.
#[derive(Clone, Debug)]
pub struct PdhKey {
    /// The PDH certificate.
    pub cert: SevCert,
    /// Its P-384 public key (for ECDH).
    pub key: EcKey<Public>,
}

/// Verifies every link in order (ARK self, ASK <- ARK, CEK <- ASK, OCA self, PEK <- OCA,
/// PEK <- CEK, PDH <- PEK) and returns the PDH key. Without `trusted_ark` the ARK is only checked
/// to be self-signed; with it, the chain's ARK must also equal the trusted one.
pub fn verify_full(chain: &FullChain, trusted_ark: Option<&CaCert>) -> Result<PdhKey, ChainError> {
    if let Some(root) = trusted_ark {
        if root != &chain.ca.ark {
            return Err(ChainError {
                link: Link::ArkSelf,
                source: CertError::UntrustedRoot(chain.ca.ark.fingerprint()),
            });
        }
    }
    first_failure(check_links(&chain.sev, &chain.ca))?;
    let key = chain.sev.pdh.ec_public_key().map_err(|source| ChainError {
        link: Link::PdhByPek,
        source,
    })?;
    Ok(PdhKey {
        cert: chain.sev.pdh.clone(),
        key,
    })
}

/// AMD processor generations with built-in legacy-SEV CA chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Generation {
    /// EPYC 7001 (Zen 1), RSA-2048.
    Naples,
    /// EPYC 7002 (Zen 2), RSA-4096.
    Rome,
    /// EPYC 7003 (Zen 3).
    Milan,
    /// EPYC 9004 (Zen 4).
    Genoa,
    /// EPYC 9005 (Zen 5).
    Turin,
}

impl Generation {
    /// All generations.
    pub const ALL: [Generation; 5] = [
        Generation::Naples,
        Generation::Rome,
        Generation::Milan,
        Generation::Genoa,
        Generation::Turin,
    ];

    /// Lowercase name (`"naples"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Generation::Naples => "naples",
            Generation::Rome => "rome",
            Generation::Milan => "milan",
            Generation::Genoa => "genoa",
            Generation::Turin => "turin",
        }
    }

    /// Parses a lowercase or capitalised name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|g| g.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The generation whose built-in ARK has this key_id, if any.
    pub fn from_ark_key_id(id: &[u8; 16]) -> Option<Self> {
        Self::ALL.iter().copied().find(|g| {
            builtin_ark_ask(*g)
                .map(|c| &c.ark.key_id == id)
                .unwrap_or(false)
        })
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// AMD's real ARK and ASK for a generation (embedded in the `sev` crate).
pub fn builtin_ark_ask(generation: Generation) -> Result<CaChain, CertError> {
    use sev::certs::sev::builtin as b;
    let (ark, ask) = match generation {
        Generation::Naples => (b::naples::ARK, b::naples::ASK),
        Generation::Rome => (b::rome::ARK, b::rome::ASK),
        Generation::Milan => (b::milan::ARK, b::milan::ASK),
        Generation::Genoa => (b::genoa::ARK, b::genoa::ASK),
        Generation::Turin => (b::turin::ARK, b::turin::ASK),
    };
    Ok(CaChain {
        ask: CaCert::parse(ask)?,
        ark: CaCert::parse(ark)?,
    })
}
