//! Persistence of the soft platform's non-volatile state (the "SPI flash"): the soft
//! ARK/ASK ("sevm soft ARK — NOT AMD"), the CEK and its ASK-signed cert, OCA/PEK/PDH,
//! ownership, chip id and C-bit position.
//!
//! Writes are atomic (temp file + fsync + rename + directory fsync) and every
//! read-modify-write holds an exclusive `flock` on `<dir>/sev-state.lock`, so several
//! processes sharing a directory never tear it. A corrupt or partial file is an error
//! naming the file; it is never replaced by a new identity.
//!
//! The directory holds private keys: it is created 0700 and refused when another user owns it
//! or group/others can write it (they could plant files or links in it). The temp file is
//! made by `tempfile` (`O_CREAT | O_EXCL`, mode 0600, unpredictable name), and a symbolic link
//! in place of the state file, dangling or not, is refused: it is never read, never replaced
//! and never taken for "no state yet" (which would create a new identity). All of this goes
//! through `sevm_files`.
//!
//! Real firmware has one state machine per machine; the soft platform has one per process.
//! What must not diverge is kept in `<dir>/sev-guests.lock`: every process that has live
//! guests holds a shared `flock` on it, and the commands the spec allows only without guests
//! (PLATFORM_RESET, PEK_GEN, PEK_CERT_IMPORT) need it exclusively. So no process changes the
//! PEK, OCA or PDH ownership under another process's running guest.

use crate::error::{FwError, Result};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::Private;
use openssl::rsa::Rsa;
use serde::{Deserialize, Serialize};
use sev_proto::cert::{Algo, CaCert, CertError, SevCert, Usage};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Lock file held shared by every process with live guests (see the module docs).
pub const GUESTS_LOCK_FILE: &str = "sev-guests.lock";

/// Directory of the per-holder guest-count files (for PLATFORM_STATUS across processes).
pub const GUESTS_DIR: &str = "sev-guests.d";

/// A process's (platform handle's) share of the platform while it has guests: a shared
/// `flock` on `sev-guests.lock`, and its guest count published in a count file it holds
/// locked. Dropping it removes the file and releases both locks.
pub(crate) struct GuestsHold {
    _lock: File,
    /// The published count file and its path (absent if it could not be created).
    count: Option<(File, PathBuf)>,
}

impl GuestsHold {
    /// Publishes `n` (best effort: a failed write only makes other processes' status stale).
    pub(crate) fn set_count(&mut self, n: u32) {
        use std::os::unix::fs::FileExt;
        if let Some((f, _)) = &self.count {
            let _ = f.write_all_at(format!("{n:>10}\n").as_bytes(), 0);
        }
    }

    /// The count file's path, if published.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.count.as_ref().map(|(_, p)| p.as_path())
    }
}

impl Drop for GuestsHold {
    fn drop(&mut self) {
        if let Some((_, p)) = &self.count {
            let _ = fs::remove_file(p);
        }
    }
}

/// Serialises the commands that need "no guests anywhere" among themselves.
pub const ADMIN_LOCK_FILE: &str = "sev-admin.lock";

/// Proof that no process had live guests when taken; keeps new launches out while held.
pub(crate) struct NoGuestsHold {
    _guests: File,
    _admin: File,
}

/// State file name inside the platform directory.
pub const STATE_FILE: &str = "sev-state.json";
/// Largest state file read: one is about 20 KiB (two RSA-4096 and five P-384 keys, in hex,
/// and their certificates).
pub const MAX_STATE_FILE: u64 = 1 << 20;
/// Lock file name inside the platform directory.
pub const LOCK_FILE: &str = "sev-state.lock";
/// C-bit positions the soft platform can hold: a guest-physical address bit that page-table
/// entries can carry (below MAXPHYADDR 52) and above 4 GiB. Real parts report 47 or 51.
pub const CBIT_POS_RANGE: std::ops::RangeInclusive<u8> = 32..=51;

/// Name given to the soft root key; it is not AMD's.
pub const SOFT_ARK_NAME: &str = "sevm soft ARK — NOT AMD";
/// Firmware API version and build the model reports.
pub const API: (u8, u8) = (0, 24);
/// Firmware build id.
pub const BUILD: u8 = 17;

/// An EC key and its SEV certificate.
#[derive(Clone)]
pub struct KeyCert {
    /// The private key.
    pub key: EcKey<Private>,
    /// Its SEV certificate.
    pub cert: [u8; SevCert::LEN],
}

/// The platform's persistent identity, in memory.
#[derive(Clone)]
pub struct Identity {
    /// Stable 64-byte chip id (GET_ID).
    pub chip_id: [u8; 64],
    /// C-bit position reported to guests.
    pub cbit_pos: u8,
    /// Soft ARK key.
    pub ark: Rsa<Private>,
    /// Soft ARK cert (AMD CA format, self-signed).
    pub ark_cert: Vec<u8>,
    /// Soft ASK key.
    pub ask: Rsa<Private>,
    /// Soft ASK cert (signed by the ARK).
    pub ask_cert: Vec<u8>,
    /// CEK key and its cert signed by the ASK (what a KDS would serve).
    pub cek: KeyCert,
    /// Owner certificate authority (None after factory reset until INIT).
    pub oca: Option<KeyCert>,
    /// Platform endorsement key.
    pub pek: Option<KeyCert>,
    /// Platform Diffie-Hellman key.
    pub pdh: Option<KeyCert>,
    /// True when the OCA was imported (PEK_CERT_IMPORT).
    pub owner_external: bool,
    /// The imported OCA certificate (its private key is the owner's, not ours).
    pub external_oca: Option<[u8; SevCert::LEN]>,
    /// Counter bumped on every write.
    pub generation: u64,
}

/// A key and cert as stored (hex); the private key is wiped on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeyCertFile {
    key: String,
    cert: String,
}

/// The state file's JSON form; its hex private keys are wiped on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StateFileV1 {
    format: u32,
    ark_name: String,
    chip_id: String,
    cbit_pos: u8,
    ark_key: String,
    ark_cert: String,
    ask_key: String,
    ask_cert: String,
    cek: KeyCertFile,
    oca: Option<KeyCertFile>,
    pek: Option<KeyCertFile>,
    pdh: Option<KeyCertFile>,
    owner_external: bool,
    #[serde(default)]
    external_oca: Option<String>,
    generation: u64,
}

fn kc_out(k: &KeyCert) -> Result<KeyCertFile> {
    Ok(KeyCertFile {
        key: hex::encode(Zeroizing::new(k.key.private_key_to_der()?).as_slice()),
        cert: hex::encode(k.cert),
    })
}

fn gen_keycert(usage: Usage, algo: Algo) -> Result<KeyCert> {
    let group = EcGroup::from_curve_name(Nid::SECP384R1)?;
    let key = EcKey::generate(&group)?;
    let c = SevCert::new_ec(usage, algo, API.0, API.1, &key)?;
    Ok(KeyCert {
        key,
        cert: cert_bytes(&c)?,
    })
}

/// The 2084 encoded bytes of a certificate.
pub(crate) fn cert_bytes(c: &SevCert) -> Result<[u8; SevCert::LEN]> {
    c.encode()
        .try_into()
        .map_err(|_| FwError::InvalidArgument("certificate length"))
}

/// Parse `c`, apply `f` (e.g. a signing step) and store the re-encoded bytes back.
pub(crate) fn edit_cert(
    c: &mut [u8; SevCert::LEN],
    f: impl FnOnce(&mut SevCert) -> std::result::Result<(), CertError>,
) -> Result<()> {
    let mut parsed = SevCert::parse(c)?;
    f(&mut parsed)?;
    *c = cert_bytes(&parsed)?;
    Ok(())
}

/// The P-384 public key of an encoded SEV certificate (parsed and checked by `sev-proto`).
pub(crate) fn cert_ec_key(
    c: &[u8],
) -> std::result::Result<EcKey<openssl::pkey::Public>, CertError> {
    SevCert::parse(c)?.ec_public_key()
}

impl Identity {
    /// Generate a whole new identity (only when the directory holds no state file).
    pub fn generate(cbit_pos: u8) -> Result<Identity> {
        if !CBIT_POS_RANGE.contains(&cbit_pos) {
            return Err(FwError::InvalidArgument(
                "C-bit position outside 32..=51 (CBIT_POS_RANGE)",
            ));
        }
        let ark = Rsa::generate(4096)?;
        let ask = Rsa::generate(4096)?;
        let ark_ca = CaCert::new_self_signed_rsa(&ark, Usage::ARK)?;
        let ask_ca = CaCert::new_signed(&ask, &ark, ark_ca.key_id)?;
        let (ark_cert, ask_cert) = (ark_ca.encode(), ask_ca.encode());
        let mut cek = gen_keycert(Usage::CEK, Algo::ECDSA_SHA256)?;
        edit_cert(&mut cek.cert, |c| {
            (c.api_major, c.api_minor) = (0, 14); // real CEKs are made by API 0.14
            c.sign_with_rsa(&ask, Usage::ASK)
        })?;
        let mut chip_id = [0u8; 64];
        openssl::rand::rand_bytes(&mut chip_id)?;
        let mut id = Identity {
            chip_id,
            cbit_pos,
            ark,
            ark_cert,
            ask,
            ask_cert,
            cek,
            oca: None,
            pek: None,
            pdh: None,
            owner_external: false,
            external_oca: None,
            generation: 0,
        };
        id.ensure_owner_keys()?;
        Ok(id)
    }

    /// INIT's persistent-state step (spec notes §3.5): make a self-signed OCA if none,
    /// a PEK (OCA + CEK signed) if none, a PDH if none. Returns true if anything changed.
    pub fn ensure_owner_keys(&mut self) -> Result<bool> {
        let mut changed = false;
        if self.oca.is_none() {
            let mut oca = gen_keycert(Usage::OCA, Algo::ECDSA_SHA256)?;
            let key = oca.key.clone();
            edit_cert(&mut oca.cert, |c| c.sign_with(&key, Usage::OCA))?;
            self.oca = Some(oca);
            self.pek = None;
            self.owner_external = false;
            self.external_oca = None;
            changed = true;
        }
        if self.pek.is_none() {
            self.new_pek()?;
            changed = true;
        }
        if self.pdh.is_none() {
            self.new_pdh()?;
            changed = true;
        }
        Ok(changed)
    }

    fn new_pek(&mut self) -> Result<()> {
        let oca = self
            .oca
            .as_ref()
            .ok_or(FwError::InvalidArgument("no OCA"))?;
        let mut pek = gen_keycert(Usage::PEK, Algo::ECDSA_SHA256)?;
        edit_cert(&mut pek.cert, |c| {
            c.sign_with(&oca.key, Usage::OCA)?;
            c.sign_with(&self.cek.key, Usage::CEK)
        })?;
        self.pek = Some(pek);
        self.pdh = None;
        Ok(())
    }

    /// Replace the PDH with a new one signed by the PEK.
    pub fn new_pdh(&mut self) -> Result<()> {
        let pek = self
            .pek
            .as_ref()
            .ok_or(FwError::InvalidArgument("no PEK"))?;
        let mut pdh = gen_keycert(Usage::PDH, Algo::ECDH_SHA256)?;
        edit_cert(&mut pdh.cert, |c| c.sign_with(&pek.key, Usage::PEK))?;
        self.pdh = Some(pdh);
        Ok(())
    }

    /// PEK_GEN: new self-signed OCA, new PEK, new PDH; owner back to self.
    pub fn pek_gen(&mut self) -> Result<()> {
        self.external_oca = None;
        self.oca = None;
        self.pek = None;
        self.pdh = None;
        self.ensure_owner_keys()?;
        Ok(())
    }

    /// PLATFORM_RESET: wipe OCA/PEK/PDH and ownership; keep CEK, ARK, ASK, chip id.
    pub fn factory_reset(&mut self) {
        self.oca = None;
        self.pek = None;
        self.pdh = None;
        self.owner_external = false;
        self.external_oca = None;
    }

    /// The OCA certificate in force: the imported one when externally owned.
    pub fn oca_cert(&self) -> Option<[u8; SevCert::LEN]> {
        match (&self.external_oca, &self.oca) {
            (Some(c), _) if self.owner_external => Some(*c),
            (_, Some(o)) => Some(o.cert),
            _ => None,
        }
    }

    fn to_file(&self) -> Result<StateFileV1> {
        let opt = |k: &Option<KeyCert>| k.as_ref().map(kc_out).transpose();
        Ok(StateFileV1 {
            format: 1,
            ark_name: SOFT_ARK_NAME.to_string(),
            chip_id: hex::encode(self.chip_id),
            cbit_pos: self.cbit_pos,
            ark_key: hex::encode(Zeroizing::new(self.ark.private_key_to_der()?).as_slice()),
            ark_cert: hex::encode(&self.ark_cert),
            ask_key: hex::encode(Zeroizing::new(self.ask.private_key_to_der()?).as_slice()),
            ask_cert: hex::encode(&self.ask_cert),
            cek: kc_out(&self.cek)?,
            oca: opt(&self.oca)?,
            pek: opt(&self.pek)?,
            pdh: opt(&self.pdh)?,
            owner_external: self.owner_external,
            external_oca: self.external_oca.map(hex::encode),
            generation: self.generation,
        })
    }

    fn from_file(f: StateFileV1, path: &Path) -> Result<Identity> {
        let bad = |reason: String| FwError::StateFile {
            path: path.to_path_buf(),
            reason,
        };
        if f.format != 1 {
            return Err(bad(format!("unknown format {}", f.format)));
        }
        let unhex =
            |field: &str, s: &str| hex::decode(s).map_err(|e| bad(format!("field {field}: {e}")));
        // Private key DER, wiped on drop.
        let unhex_key = |field: &str, s: &str| unhex(field, s).map(Zeroizing::new);
        let kc = |field: &str, k: &KeyCertFile| -> Result<KeyCert> {
            let key = EcKey::private_key_from_der(&unhex_key(field, &k.key)?)
                .map_err(|e| bad(format!("field {field}.key: {e}")))?;
            let c: [u8; SevCert::LEN] = unhex(field, &k.cert)?
                .try_into()
                .map_err(|_| bad(format!("field {field}.cert: wrong length")))?;
            let pubk = cert_ec_key(&c).map_err(|e| bad(format!("field {field}.cert: {e}")))?;
            if pubk.public_key_to_der()? != key.public_key_to_der()? {
                return Err(bad(format!("field {field}: key does not match cert")));
            }
            Ok(KeyCert { key, cert: c })
        };
        let opt =
            |field: &str, k: &Option<KeyCertFile>| k.as_ref().map(|k| kc(field, k)).transpose();
        let chip_id: [u8; 64] = unhex("chip_id", &f.chip_id)?
            .try_into()
            .map_err(|_| bad("field chip_id: wrong length".into()))?;
        let rsa = |field: &str, s: &str| {
            Rsa::private_key_from_der(&unhex_key(field, s)?)
                .map_err(|e| bad(format!("field {field}: {e}")))
        };
        if !CBIT_POS_RANGE.contains(&f.cbit_pos) {
            return Err(bad(format!(
                "field cbit_pos: {} is not a usable C-bit position ({}..={})",
                f.cbit_pos,
                CBIT_POS_RANGE.start(),
                CBIT_POS_RANGE.end()
            )));
        }
        Ok(Identity {
            chip_id,
            cbit_pos: f.cbit_pos,
            ark: rsa("ark_key", &f.ark_key)?,
            ark_cert: unhex("ark_cert", &f.ark_cert)?,
            ask: rsa("ask_key", &f.ask_key)?,
            ask_cert: unhex("ask_cert", &f.ask_cert)?,
            cek: kc("cek", &f.cek)?,
            oca: opt("oca", &f.oca)?,
            pek: opt("pek", &f.pek)?,
            pdh: opt("pdh", &f.pdh)?,
            owner_external: f.owner_external,
            external_oca: match &f.external_oca {
                Some(h) => {
                    let c: [u8; SevCert::LEN] = unhex("external_oca", h)?
                        .try_into()
                        .map_err(|_| bad("field external_oca: wrong length".into()))?;
                    cert_ec_key(&c).map_err(|e| bad(format!("field external_oca: {e}")))?;
                    Some(c)
                }
                None => None,
            },
            generation: f.generation,
        })
    }
}

/// The platform directory holding the state file and its lock.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FwError + '_ {
    move |source| FwError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens (creating it, no following of a final symbolic link) a lock or count file of the
/// platform directory, mode 0600.
fn open_lock_file(p: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .map_err(io(p))
}

impl Store {
    /// Open (creating the directory 0700 if needed) a store. Does not read the state.
    /// A directory that is not one, belongs to another user or is writable by group or
    /// others is refused (see the module docs).
    pub fn new(dir: &Path) -> Result<Store> {
        sevm_files::create_private_dir(dir, "SEV platform directory").map_err(FwError::File)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// Path of the state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn lock(&self, exclusive: bool) -> Result<File> {
        let p = self.dir.join(LOCK_FILE);
        let f = open_lock_file(&p)?;
        if exclusive {
            f.lock().map_err(io(&p))?;
        } else {
            f.lock_shared().map_err(io(&p))?;
        }
        Ok(f)
    }

    fn open_guests_lock(&self) -> Result<File> {
        open_lock_file(&self.dir.join(GUESTS_LOCK_FILE))
    }

    /// A shared hold on the guests lock: "this process has live guests". Waits while another
    /// process holds it exclusively (a PLATFORM_RESET or PEK_GEN in progress). Also publishes
    /// this holder's guest count under `<dir>/sev-guests.d/` for other processes'
    /// PLATFORM_STATUS ([`GuestsHold::set_count`], [`Store::other_guests`]).
    pub(crate) fn hold_guests(&self) -> Result<GuestsHold> {
        let lock = self.open_guests_lock()?;
        lock.lock_shared()
            .map_err(io(&self.dir.join(GUESTS_LOCK_FILE)))?;
        // The count file only informs other processes' PLATFORM_STATUS: failing to create it
        // (a full disk) must not fail the launch.
        let count = match self.publish_count() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("cannot publish the guest count for other processes: {e}");
                None
            }
        };
        // The holder writes its count once its guest exists (an empty file counts 0).
        Ok(GuestsHold { _lock: lock, count })
    }

    fn publish_count(&self) -> Result<(File, PathBuf)> {
        let d = self.dir.join(GUESTS_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(io(&d))?;
        let mut tag = [0u8; 8];
        openssl::rand::rand_bytes(&mut tag)?;
        let name = format!("{}-{}", std::process::id(), hex::encode(tag));
        // Created under a temporary name, locked, then renamed: a reader never sees an
        // unlocked count file of a live holder (an unlocked one is stale and removed).
        let tmp = d.join(format!(".{name}.tmp"));
        let path = d.join(format!("{name}.count"));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let locked = file.lock().map_err(io(&tmp));
        if let Err(e) = locked.and_then(|()| fs::rename(&tmp, &path).map_err(io(&path))) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok((file, path))
    }

    /// The guests other holders (other processes, or other handles of this one) publish,
    /// except `own`. Count files whose holder is gone (unlocked) are removed on the way.
    pub(crate) fn other_guests(&self, own: Option<&Path>) -> u32 {
        let Ok(rd) = fs::read_dir(self.dir.join(GUESTS_DIR)) else {
            return 0;
        };
        let mut n = 0u32;
        for e in rd.flatten() {
            let p = e.path();
            if Some(p.as_path()) == own || p.extension().is_none_or(|x| x != "count") {
                continue;
            }
            // A count file is 11 bytes; anything else (a FIFO, a huge file) is skipped.
            let Ok(f) = sevm_files::Limit::new("guest count file", 64)
                .allow_empty()
                .no_follow()
                .open(&p)
            else {
                continue;
            };
            match f.file().try_lock_shared() {
                Ok(()) => {
                    // Its holder died without removing it.
                    let _ = fs::remove_file(&p);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let text = f.read_all().unwrap_or_default();
                    let text = String::from_utf8_lossy(&text);
                    n = n.saturating_add(text.trim().parse::<u32>().unwrap_or(0));
                }
                Err(std::fs::TryLockError::Error(_)) => {}
            }
        }
        n
    }

    /// An exclusive hold on the guests lock, or `None` if some process (this one included,
    /// through another platform handle) has live guests. Callers are serialised among
    /// themselves first (`<dir>/sev-admin.lock`, blocking), so a concurrent PEK_GEN or
    /// PLATFORM_RESET waits for this one instead of being mistaken for a guest.
    pub(crate) fn hold_no_guests(&self) -> Result<Option<NoGuestsHold>> {
        let ap = self.dir.join(ADMIN_LOCK_FILE);
        let admin = open_lock_file(&ap)?;
        admin.lock().map_err(io(&ap))?;
        let f = self.open_guests_lock()?;
        match f.try_lock() {
            Ok(()) => Ok(Some(NoGuestsHold {
                _guests: f,
                _admin: admin,
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&self.dir.join(GUESTS_LOCK_FILE))(e)),
        }
    }

    fn read_unlocked(&self) -> Result<Option<Identity>> {
        let p = self.state_path();
        // The whole file holds private keys: wiped on drop. Only a missing file means "no
        // state yet": a symbolic link (even dangling) or a special file is an error.
        let read = sevm_files::Limit::new("SEV state file", MAX_STATE_FILE)
            .why("a platform state file is about 20 KiB")
            .allow_empty()
            .no_follow()
            .read(&p);
        let bytes = match read {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(sevm_files::FileError::Open { source, .. }) => return Err(io(&p)(source)),
            Err(e) => return Err(FwError::File(e)),
        };
        let f: StateFileV1 = serde_json::from_slice(&bytes).map_err(|e| FwError::StateFile {
            path: p.clone(),
            reason: format!("corrupt or partial: {e}"),
        })?;
        Identity::from_file(f, &p).map(Some)
    }

    fn write_unlocked(&self, id: &Identity) -> Result<()> {
        let p = self.state_path();
        let json =
            zeroize::Zeroizing::new(serde_json::to_vec_pretty(&id.to_file()?).map_err(|e| {
                FwError::StateFile {
                    path: p.clone(),
                    reason: format!("encode: {e}"),
                }
            })?);
        // tempfile's O_EXCL temp (0600, random name), fsync, rename, directory fsync; a link
        // in place of the state file is refused.
        sevm_files::write_atomic(&p, "SEV state file", &json, 0o600)?;
        Ok(())
    }

    /// Remove temp files left by writers killed mid-write. Only called under the
    /// exclusive lock, so no live writer owns one.
    fn remove_stale_temps(&self) {
        let prefix = format!(".{STATE_FILE}.tmp.");
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Load the identity, creating a new one (with `cbit_pos`) only if no state file exists.
    pub fn load_or_create(&self, cbit_pos: u8) -> Result<Identity> {
        let _l = self.lock(true)?;
        self.remove_stale_temps();
        if let Some(id) = self.read_unlocked()? {
            return Ok(id);
        }
        let id = Identity::generate(cbit_pos)?;
        self.write_unlocked(&id)?;
        Ok(id)
    }

    /// Load the identity (error if absent).
    pub fn load(&self) -> Result<Identity> {
        let _l = self.lock(false)?;
        self.read_unlocked()?.ok_or_else(|| FwError::StateFile {
            path: self.state_path(),
            reason: "missing".into(),
        })
    }

    /// Read-modify-write under the exclusive lock; returns the new identity.
    pub fn update<T>(&self, f: impl FnOnce(&mut Identity) -> Result<T>) -> Result<(Identity, T)> {
        let _l = self.lock(true)?;
        let mut id = self.read_unlocked()?.ok_or_else(|| FwError::StateFile {
            path: self.state_path(),
            reason: "missing".into(),
        })?;
        let r = f(&mut id)?;
        id.generation += 1;
        self.write_unlocked(&id)?;
        Ok((id, r))
    }

    /// Like [`update`](Self::update), but `f` says whether it changed anything; the file is
    /// written (and `generation` bumped) only then. Returns the identity and that flag.
    pub fn update_if(
        &self,
        f: impl FnOnce(&mut Identity) -> Result<bool>,
    ) -> Result<(Identity, bool)> {
        let _l = self.lock(true)?;
        let mut id = self.read_unlocked()?.ok_or_else(|| FwError::StateFile {
            path: self.state_path(),
            reason: "missing".into(),
        })?;
        let changed = f(&mut id)?;
        if changed {
            id.generation += 1;
            self.write_unlocked(&id)?;
        }
        Ok((id, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new identity is a complete chain that `sev-proto` verifies link by link, and the
    /// stored bytes are exactly the certificates' encodings.
    #[test]
    fn generated_identity_verifies_with_sev_proto() {
        let id = Identity::generate(47).unwrap();
        let parse = |k: &Option<KeyCert>| SevCert::parse(&k.as_ref().unwrap().cert).unwrap();
        let (oca, pek, pdh) = (parse(&id.oca), parse(&id.pek), parse(&id.pdh));
        let cek = SevCert::parse(&id.cek.cert).unwrap();
        let ark = CaCert::parse(&id.ark_cert).unwrap();
        let ask = CaCert::parse(&id.ask_cert).unwrap();
        ark.verify_self_signed().unwrap();
        ask.verify_signed_by(&ark).unwrap();
        cek.verify_signed_by_ca(&ask).unwrap();
        oca.verify_self_signed().unwrap();
        pek.verify_signed_by(&oca).unwrap();
        pek.verify_signed_by(&cek).unwrap();
        pdh.verify_signed_by(&pek).unwrap();
        assert!(pdh.verify_signed_by(&oca).is_err(), "PDH is not OCA-signed");
        assert_eq!((cek.api_major, cek.api_minor), (0, 14));
        assert_eq!((pek.api_major, pek.api_minor), API);
        assert_eq!((pdh.usage, pdh.algo), (Usage::PDH, Algo::ECDH_SHA256));
        assert_eq!(cek.sigs[0].algo, Algo::RSA_SHA384);
        assert_eq!(pek.encode(), id.pek.as_ref().unwrap().cert.to_vec());
        // Each stored key is the private half of its certificate's public key.
        let pdh_key = cert_ec_key(&id.pdh.as_ref().unwrap().cert).unwrap();
        assert_eq!(
            pdh_key.public_key_to_der().unwrap(),
            id.pdh.as_ref().unwrap().key.public_key_to_der().unwrap()
        );
    }

    /// Finding 3 of issue 17: the directory is created 0700; one that group or others can
    /// write is refused; a temp file planted under the old predictable name
    /// (`.sev-state.json.tmp.<PID>`, here a link to a file its planter can read) never
    /// receives the keys.
    #[test]
    fn finding3_state_temp_file_cannot_be_planted() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("platform");
        let store = Store::new(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        store.load_or_create(47).unwrap();
        // The planter's file, outside the directory, and a link to it under the old name.
        let loot = t.path().join("loot");
        let planted = dir.join(format!(".{STATE_FILE}.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&loot, &planted).unwrap();
        store
            .update(|id| {
                id.new_pdh()?;
                Ok(())
            })
            .unwrap();
        assert!(
            !loot.exists(),
            "the keys were written through the planted link"
        );
        assert!(fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
        let st = dir.join(STATE_FILE);
        assert!(fs::symlink_metadata(&st).unwrap().file_type().is_file());
        assert_eq!(mode(&st), 0o600);
        // A directory others can write is refused before anything is read or written.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Store::new(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by group or others (mode 0777)"), "{e}");
    }

    /// Finding 5 of issue 17: a symbolic link as the state file, dangling or not, is an error;
    /// no new identity is created through it and the link is not replaced.
    #[test]
    fn finding5_symlinked_state_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("platform");
        let store = Store::new(&dir).unwrap();
        let st = dir.join(STATE_FILE);
        // Dangling: before, "not found" made a new identity at the link's target.
        let target = t.path().join("elsewhere.json");
        std::os::unix::fs::symlink(&target, &st).unwrap();
        let e = store.load_or_create(47).err().unwrap().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(
            !target.exists(),
            "a new identity was created through the link"
        );
        // To a real state file: refused too, and the link stays a link.
        fs::remove_file(&st).unwrap();
        let other = Store::new(&t.path().join("other")).unwrap();
        other.load_or_create(47).unwrap();
        std::os::unix::fs::symlink(other.state_path(), &st).unwrap();
        assert!(store.load().is_err());
        let e = store.update(|_| Ok(())).err().unwrap().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(fs::symlink_metadata(&st).unwrap().file_type().is_symlink());
    }

    /// Issue 17 finding 11: a state file whose C-bit position no guest can use is refused
    /// when loaded, naming the field, so `config check` refuses what `run` would.
    #[test]
    fn finding11_stored_cbit_pos_is_range_checked() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(d.path()).unwrap();
        store.load_or_create(47).unwrap();
        let path = store.state_path();
        let good = fs::read_to_string(&path).unwrap();
        assert!(
            good.contains("\"cbit_pos\": 47"),
            "state file layout changed"
        );
        for bad in [0u8, 31, 52, 64, 255] {
            fs::write(
                &path,
                good.replace("\"cbit_pos\": 47", &format!("\"cbit_pos\": {bad}")),
            )
            .unwrap();
            let e = store.load().err().expect("a bad C-bit position is refused");
            let msg = e.to_string();
            assert!(
                msg.contains("field cbit_pos")
                    && msg.contains(&format!("{bad} is not a usable C-bit position (32..=51)"))
                    && msg.contains(&path.display().to_string()),
                "{bad}: {msg}"
            );
        }
        for ok in [32u8, 51] {
            fs::write(
                &path,
                good.replace("\"cbit_pos\": 47", &format!("\"cbit_pos\": {ok}")),
            )
            .unwrap();
            assert_eq!(store.load().unwrap().cbit_pos, ok);
        }
        assert!(Identity::generate(64).is_err());
    }

    /// Signing through `edit_cert` fills the free slot and refuses a third signature.
    #[test]
    fn edit_cert_signs_into_free_slots_only() {
        let mut k = gen_keycert(Usage::PEK, Algo::ECDSA_SHA256).unwrap();
        let signer = k.key.clone();
        for _ in 0..2 {
            edit_cert(&mut k.cert, |c| c.sign_with(&signer, Usage::OCA)).unwrap();
        }
        let before = k.cert;
        let err = edit_cert(&mut k.cert, |c| c.sign_with(&signer, Usage::OCA)).unwrap_err();
        assert!(matches!(err, FwError::Cert(CertError::NoFreeSlot)), "{err}");
        assert_eq!(k.cert, before, "a failed edit leaves the bytes alone");
    }
}
