//! The soft SEV firmware core: platform and guest state machines, ASIDs, the launch
//! channel, measurement and secret injection. Every command checks in the firmware's
//! order (spec notes §1.2 "Order of checks" and the per-command notes) and answers with
//! the firmware's status. Both the raw command interface (`execute`) and the typed
//! traits call these functions, so they share one implementation.
//!
//! Chosen behaviours where the notes leave a choice:
//! - Legal commands per platform state follow the *firmware code* column (§1.1):
//!   SHUTDOWN and DF_FLUSH need no state, GUEST_STATUS is accepted in INIT, PEK_CSR in WORKING.
//! - GUEST_STATUS on an unknown handle answers INVALID_GUEST (the spec), not Genoa's SUCCESS.
//! - INIT keeps an existing PDH (only missing keys are generated).
//! - WBINVD is treated as always done (DF_FLUSH never answers WBINVD_REQUIRED).
//! - Migration (SEND_*/RECEIVE_*), COPY, SWAP, ACTIVATE_EX, INIT_EX, DOWNLOAD_FIRMWARE and
//!   RING_BUFFER pass their platform-state check, then answer UNSUPPORTED.
//!
//! Checked against AMD's published SEV firmware source (`sev_mcmd.c`, `sev_cert.c`,
//! `sev_plat.c`; see docs/THREAT-MODEL.md "Firmware fidelity"): PEK_CERT_IMPORT validates
//! signatures before bodies and answers BAD_SIGNATURE for one that does not verify; ACTIVATE
//! checks ownership of the ASID (its own included) and cleanliness before the ES range;
//! LAUNCH_UPDATE_VMSA checks its length first; GET_ID is a secp256k1 point; the exported CEK
//! carries this firmware's API version. DBG_DECRYPT/ENCRYPT need 16-byte alignment here, as
//! in the firmware; KVM's bouncing of unaligned ranges lives in [`super::SoftGuest`].

use super::store::{cert_bytes, Identity, Store, API, BUILD};
use crate::engine::MemoryKey;
use crate::error::FwError;
use openssl::hash::{Hasher, MessageDigest};
use sev_proto::cert::{chip_id, firmware_validate, Algo, SevCert, Usage};
use sev_proto::policy::GuestPolicy;
use sev_proto::secret::{open_packet, PacketHeader, SecretError};
use sev_proto::session::{
    check_godh, ecdh_shared_secret, platform_unwrap, SessionBlob, SessionError, TransportKeys,
};
use sev_proto::status::Status;
use zeroize::Zeroizing;

/// Largest ASID of the model (CPUID 0x8000001F ECX).
pub const MAX_ASID: u32 = 15;
/// First non-ES ASID (CPUID 0x8000001F EDX); ES guests use 1..MIN_SEV_ASID.
pub const MIN_SEV_ASID: u32 = 5;
/// Number of guest slots (handles 1..=MAX_GUESTS).
pub const MAX_GUESTS: u32 = 64;
/// Largest LAUNCH_SECRET payload (Genoa scratch size).
pub const MAX_SECRET_LEN: u32 = 0x5000;
/// Size of an attestation report.
pub const REPORT_LEN: usize = 0xD0;
/// Offset of a SEV certificate's first signature slot.
const SIG1: usize = 0x414;
/// Size of one signature slot (usage, algo, signature).
const SIG_SLOT: usize = 0x208;

/// Platform state (spec notes §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PlatformState {
    /// Not initialised.
    Uninit = 0,
    /// Initialised, no guests.
    Init = 1,
    /// At least one guest.
    Working = 2,
}

/// Guest state (spec notes §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GuestState {
    /// Free slot.
    Uninit = 0,
    /// Launch update.
    LUpdate = 1,
    /// Launch secret.
    LSecret = 2,
    /// Running.
    Running = 3,
    /// Send update (unused by the model).
    SUpdate = 4,
    /// Receive update (unused by the model).
    RUpdate = 5,
    /// Sent (unused by the model).
    Sent = 6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asid {
    Dirty,
    Clean,
    /// Held by a guest handle.
    Owned(u32),
}

pub(crate) struct Guest {
    /// Unique per LAUNCH_START on this platform instance (detects a reused handle).
    pub launch_id: u64,
    pub state: GuestState,
    pub policy: u32,
    pub es: bool,
    pub key: MemoryKey,
    pub asid: u32,
    /// The ASID became valid (LAUNCH_FINISH / RUNNING); else activation is pending.
    pub asid_live: bool,
    ld: Option<Hasher>,
    pub ld_final: Option<[u8; 32]>,
    /// TEK/TIK of the launch channel (zero without a GODH cert; zeroed at LAUNCH_FINISH).
    keys: TransportKeys,
    pub measure: Option<[u8; 32]>,
}

/// Inputs of LAUNCH_START after buffer parsing.
pub struct LaunchStartArgs<'a> {
    /// 0 for a new key, else the guest whose key to share.
    pub handle: u32,
    /// Guest policy.
    pub policy: u32,
    /// GODH cert, if a channel is requested.
    pub godh: Option<&'a [u8]>,
    /// Session buffer (needed with a GODH cert).
    pub session: Option<&'a [u8]>,
}

/// Guest status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestStatus {
    /// Policy.
    pub policy: u32,
    /// Bound ASID, 0 if none.
    pub asid: u32,
    /// State.
    pub state: GuestState,
}

/// Platform status output (PLATFORM_STATUS, 12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformStatus {
    /// API major.
    pub api_major: u8,
    /// API minor.
    pub api_minor: u8,
    /// State.
    pub state: PlatformState,
    /// Externally owned.
    pub owner_external: bool,
    /// SEV-ES initialised.
    pub config_es: bool,
    /// Build id.
    pub build: u8,
    /// Number of guests.
    pub guest_count: u32,
}

impl PlatformStatus {
    /// Encode as the firmware's 12-byte output.
    pub fn to_bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = self.api_major;
        b[1] = self.api_minor;
        b[2] = self.state as u8;
        b[3] = self.owner_external as u8;
        b[4..6].copy_from_slice(&(self.config_es as u16).to_le_bytes());
        b[7] = self.build;
        b[8..12].copy_from_slice(&self.guest_count.to_le_bytes());
        b
    }
}

type St<T> = Result<T, Status>;

fn crypto_fail(_: openssl::error::ErrorStack) -> Status {
    Status::HwerrorPlatform
}

/// The encoded certificate with both signature slots emptied (PEK CSR).
fn unsigned(c: &[u8; SevCert::LEN]) -> St<[u8; SevCert::LEN]> {
    let parsed = SevCert::parse(c).map_err(|_| Status::HwerrorPlatform)?;
    cert_bytes(&parsed.unsigned()).map_err(fw_fail)
}

/// The CEK certificate PDH_CERT_EXPORT returns. The firmware makes it afresh from the CEK's
/// public key on every export (`pdh_cert_chain_init` → `sev_cert_create` → `sev_cert_init`),
/// so it carries the running firmware's API version and no signature; the ASK-signed CEK that
/// AMD's KDS serves keeps the version it was made with (0.14 on real parts).
fn exported_cek(c: &[u8; SevCert::LEN]) -> St<[u8; SevCert::LEN]> {
    let mut cek = SevCert::parse(c)
        .map_err(|_| Status::HwerrorPlatform)?
        .unsigned();
    (cek.api_major, cek.api_minor) = API;
    cert_bytes(&cek).map_err(fw_fail)
}

thread_local! {
    /// The internal error behind the last `HWERROR_PLATFORM` on this thread (e.g. a failed
    /// state-file write), so the command's `FwError` can name its cause. Commands run on the
    /// caller's thread under the platform mutex; `SoftPlatform` clears it before each command.
    static LAST_CAUSE: std::cell::RefCell<Option<FwError>> = const { std::cell::RefCell::new(None) };
}

/// Take (and clear) the cause recorded by the last internal error on this thread.
pub(crate) fn take_cause() -> Option<FwError> {
    LAST_CAUSE.with(|c| c.borrow_mut().take())
}

fn fw_fail(e: FwError) -> Status {
    tracing::error!("soft firmware internal error: {e}");
    let status = e.status().unwrap_or(Status::HwerrorPlatform);
    if e.status().is_none() {
        LAST_CAUSE.with(|c| *c.borrow_mut() = Some(e));
    }
    status
}

/// The soft firmware's volatile and cached persistent state.
pub struct Fw {
    pub(crate) store: Store,
    pub(crate) id: Identity,
    pub(crate) state: PlatformState,
    pub(crate) es: bool,
    guests: Vec<Option<Guest>>,
    asids: Vec<Asid>,
    next_launch_id: u64,
    /// While this handle has guests: its shared hold on the directory's guests lock and its
    /// published guest count ([`super::store::GuestsHold`]).
    guests_hold: Option<super::store::GuestsHold>,
    /// The SNP side of the same (modelled) chip, when attached
    /// ([`super::SoftPlatform::attach_snp`]): legacy INIT then requires SNP INIT first, and the
    /// SNP side learns the legacy state (SNP_INIT requires legacy UNINIT).
    pub(crate) snp: Option<crate::snp::soft::SoftSnpPlatform>,
}

impl Fw {
    pub(crate) fn new(store: Store, id: Identity) -> Fw {
        Fw {
            store,
            id,
            state: PlatformState::Uninit,
            es: false,
            guests: (0..MAX_GUESTS).map(|_| None).collect(),
            asids: vec![Asid::Dirty; MAX_ASID as usize + 1],
            next_launch_id: 1,
            guests_hold: None,
            snp: None,
        }
    }

    /// For the commands the spec allows only without guests: another process sharing the
    /// directory that has guests makes the (one, real) platform WORKING. The returned hold
    /// keeps new launches out until the command is done.
    fn no_guests_anywhere(&self) -> St<super::store::NoGuestsHold> {
        self.store
            .hold_no_guests()
            .map_err(fw_fail)?
            .ok_or(Status::InvalidPlatformState)
    }

    /// Publishes this handle's guest count; drops the guests hold once the last guest is gone.
    fn sync_guests_hold(&mut self) {
        let n = self.guest_count();
        if n == 0 {
            self.guests_hold = None;
        } else if let Some(h) = self.guests_hold.as_mut() {
            h.set_count(n);
        }
    }

    fn need(&self, ok: &[PlatformState]) -> St<()> {
        if ok.contains(&self.state) {
            Ok(())
        } else {
            Err(Status::InvalidPlatformState)
        }
    }

    pub(crate) fn guest_count(&self) -> u32 {
        self.guests.iter().filter(|g| g.is_some()).count() as u32
    }

    pub(crate) fn guest(&self, handle: u32) -> St<&Guest> {
        if handle == 0 || handle > MAX_GUESTS {
            return Err(Status::InvalidGuest);
        }
        self.guests[handle as usize - 1]
            .as_ref()
            .ok_or(Status::InvalidGuest)
    }

    pub(crate) fn guest_mut(&mut self, handle: u32) -> St<&mut Guest> {
        if handle == 0 || handle > MAX_GUESTS {
            return Err(Status::InvalidGuest);
        }
        self.guests[handle as usize - 1]
            .as_mut()
            .ok_or(Status::InvalidGuest)
    }

    /// Re-read the persistent state (another process may have changed it). In INIT or
    /// WORKING, a state without OCA/PEK/PDH means another process ran PLATFORM_RESET; this
    /// platform is INIT, so INIT's key generation is redone (under the store's exclusive
    /// lock, persisted; a concurrent repairer's keys are kept, not replaced).
    fn refresh(&mut self) -> St<()> {
        self.id = self.store.load().map_err(fw_fail)?;
        let missing = self.id.oca.is_none() || self.id.pek.is_none() || self.id.pdh.is_none();
        if missing && self.state != PlatformState::Uninit {
            let (id, _) = self
                .store
                .update_if(|id| id.ensure_owner_keys())
                .map_err(fw_fail)?;
            self.id = id;
        }
        Ok(())
    }

    // ---------------- platform commands ----------------

    /// INIT (0x01).
    pub fn init(&mut self, es: bool) -> St<()> {
        self.need(&[PlatformState::Uninit])?;
        // With SNP on the chip, SNP_INIT must come first (snp-spec-notes §1.2).
        if self.snp.as_ref().is_some_and(|s| !s.legacy_init_allowed()) {
            return Err(Status::InvalidPlatformState);
        }
        // Only a state that lacks keys is written: INIT on an initialised platform is
        // read-only (so it works on a full disk).
        let (id, _) = self
            .store
            .update_if(|id| id.ensure_owner_keys())
            .map_err(fw_fail)?;
        self.id = id;
        self.es = es;
        self.state = PlatformState::Init;
        self.asids.iter_mut().for_each(|a| *a = Asid::Dirty);
        if let Some(s) = &self.snp {
            s.set_legacy_init(true);
        }
        Ok(())
    }

    /// SHUTDOWN (0x02): any state; every guest is decommissioned.
    pub fn shutdown(&mut self) -> St<()> {
        self.guests.iter_mut().for_each(|g| *g = None);
        self.guests_hold = None;
        self.asids.iter_mut().for_each(|a| *a = Asid::Dirty);
        self.state = PlatformState::Uninit;
        self.es = false;
        if let Some(s) = &self.snp {
            s.set_legacy_init(false);
        }
        Ok(())
    }

    /// PLATFORM_RESET (0x03): UNINIT only.
    pub fn platform_reset(&mut self) -> St<()> {
        self.need(&[PlatformState::Uninit])?;
        let _no_guests = self.no_guests_anywhere()?;
        let (id, _) = self
            .store
            .update(|id| {
                id.factory_reset();
                Ok(())
            })
            .map_err(fw_fail)?;
        self.id = id;
        Ok(())
    }

    /// PLATFORM_STATUS (0x04): any state. Once initialised, the state and guest count are the
    /// platform's, as on real firmware: guests of other processes sharing the directory count
    /// (a platform with guests anywhere is WORKING).
    pub fn platform_status(&mut self) -> St<PlatformStatus> {
        let uninit = self.state == PlatformState::Uninit;
        if !uninit {
            let _ = self.refresh();
        }
        let (state, guest_count) = if uninit {
            (self.state, 0)
        } else {
            let own = self
                .guests_hold
                .as_ref()
                .and_then(|h| h.path().map(std::path::Path::to_path_buf));
            let n = self
                .guest_count()
                .saturating_add(self.store.other_guests(own.as_deref()));
            let state = if n > 0 {
                PlatformState::Working
            } else {
                self.state
            };
            (state, n)
        };
        Ok(PlatformStatus {
            api_major: API.0,
            api_minor: API.1,
            state,
            owner_external: !uninit && self.id.owner_external,
            config_es: !uninit && self.es,
            build: BUILD,
            guest_count,
        })
    }

    /// PEK_GEN (0x05): INIT only.
    pub fn pek_gen(&mut self) -> St<()> {
        self.need(&[PlatformState::Init])?;
        let _no_guests = self.no_guests_anywhere()?;
        let (id, _) = self.store.update(|id| id.pek_gen()).map_err(fw_fail)?;
        self.id = id;
        Ok(())
    }

    /// PEK_CSR (0x06): INIT or WORKING; `len` < 2084 gives INVALID_LENGTH and `len` = 2084.
    pub fn pek_csr(&mut self, len: &mut u32) -> St<[u8; SevCert::LEN]> {
        self.need(&[PlatformState::Init, PlatformState::Working])?;
        if (*len as usize) < SevCert::LEN {
            *len = SevCert::LEN as u32;
            return Err(Status::InvalidLength);
        }
        self.refresh()?;
        let pek = self.id.pek.as_ref().ok_or(Status::HwerrorPlatform)?;
        let c = unsigned(&pek.cert)?;
        *len = SevCert::LEN as u32;
        Ok(c)
    }

    /// PEK_CERT_IMPORT (0x07): INIT only. The firmware's order (`sev_mcmd_pek_cert_import`):
    /// ALREADY_OWNED, both lengths exactly 2084 (INVALID_LENGTH), the OCA validated as
    /// self-signed and then the PEK against the OCA's key, each signature before the body
    /// ([`firmware_validate`]: a signature that does not verify is BAD_SIGNATURE), then the PEK
    /// body must be the current PEK's (INVALID_CERTIFICATE). The current PEK's CEK signature
    /// moves into the imported PEK's free slot; the PDH is regenerated.
    ///
    /// Model limit: the state file keeps EC owners only, so an OCA or PEK that passes the
    /// firmware's checks but that the model cannot store (an RSA OCA, a signature slot of an
    /// unknown usage) is refused with UNSUPPORTED, where real firmware would accept it.
    pub fn pek_cert_import(&mut self, pek: &[u8], oca: &[u8]) -> St<()> {
        self.need(&[PlatformState::Init])?;
        let _no_guests = self.no_guests_anywhere()?;
        self.refresh()?;
        if self.id.owner_external {
            return Err(Status::AlreadyOwned);
        }
        let (Ok(pek), Ok(oca)) = (
            <&[u8; SevCert::LEN]>::try_from(pek),
            <&[u8; SevCert::LEN]>::try_from(oca),
        ) else {
            return Err(Status::InvalidLength);
        };
        firmware_validate(oca, oca)?;
        firmware_validate(pek, oca)?;
        let cur = self.id.pek.as_ref().ok_or(Status::HwerrorPlatform)?.cert;
        if pek[..SevCert::BODY_LEN] != cur[..SevCert::BODY_LEN] {
            return Err(Status::InvalidCertificate);
        }
        // sev_cert_set_sig: the CEK signature of the current PEK into the first free slot.
        let slot = |i: usize| SIG1 + i * SIG_SLOT..SIG1 + (i + 1) * SIG_SLOT;
        let usage_of = |c: &[u8; SevCert::LEN], i: usize| {
            let o = slot(i).start;
            u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]])
        };
        let cek_sig = (0..2)
            .find(|&i| usage_of(&cur, i) == Usage::CEK.0)
            .ok_or(Status::InvalidCertificate)?;
        let free = (0..2)
            .find(|&i| usage_of(pek, i) == Usage::INVALID.0)
            .ok_or(Status::InvalidCertificate)?;
        let mut newpek = *pek;
        newpek[slot(free)].copy_from_slice(&cur[slot(cek_sig)]);
        let storable = |c: &[u8; SevCert::LEN]| SevCert::parse(c).and_then(|c| c.ec_public_key());
        if storable(oca).is_err() || storable(&newpek).is_err() {
            return Err(Status::Unsupported);
        }
        let oca = *oca;
        let (id, _) = self
            .store
            .update(|id| {
                let pek = id.pek.as_mut().ok_or(FwError::InvalidArgument("no PEK"))?;
                pek.cert = newpek;
                id.external_oca = Some(oca);
                id.owner_external = true;
                id.new_pdh()
            })
            .map_err(fw_fail)?;
        self.id = id;
        Ok(())
    }

    /// PDH_CERT_EXPORT (0x08): INIT or WORKING. Returns (PDH, PEK ‖ OCA ‖ CEK-unsigned).
    pub fn pdh_cert_export(
        &mut self,
        pdh_len: &mut u32,
        chain_len: &mut u32,
    ) -> St<(Vec<u8>, Vec<u8>)> {
        self.need(&[PlatformState::Init, PlatformState::Working])?;
        if (*pdh_len as usize) < SevCert::LEN || (*chain_len as usize) < 3 * SevCert::LEN {
            *pdh_len = SevCert::LEN as u32;
            *chain_len = 3 * SevCert::LEN as u32;
            return Err(Status::InvalidLength);
        }
        self.refresh()?;
        let id = &self.id;
        let (Some(pdh), Some(pek), Some(oca)) = (&id.pdh, &id.pek, id.oca_cert()) else {
            return Err(Status::HwerrorPlatform);
        };
        let cek = exported_cek(&id.cek.cert)?;
        let mut chain = Vec::with_capacity(3 * SevCert::LEN);
        chain.extend_from_slice(&pek.cert);
        chain.extend_from_slice(&oca);
        chain.extend_from_slice(&cek);
        *pdh_len = SevCert::LEN as u32;
        *chain_len = 3 * SevCert::LEN as u32;
        Ok((pdh.cert.to_vec(), chain))
    }

    /// PDH_GEN (0x09): INIT or WORKING.
    pub fn pdh_gen(&mut self) -> St<()> {
        self.need(&[PlatformState::Init, PlatformState::Working])?;
        // A platform reset by another process has no PEK: redo INIT's step first.
        let (id, _) = self
            .store
            .update(|id| {
                id.ensure_owner_keys()?;
                id.new_pdh()
            })
            .map_err(fw_fail)?;
        self.id = id;
        Ok(())
    }

    /// DF_FLUSH (0x0A): no state check; dirty ASIDs become clean.
    pub fn df_flush(&mut self) -> St<()> {
        for a in self.asids.iter_mut() {
            if *a == Asid::Dirty {
                *a = Asid::Clean;
            }
        }
        Ok(())
    }

    /// GET_ID (0x0C): no state check; `len` < 64 gives INVALID_LENGTH and `len` = 64.
    ///
    /// As the firmware's `sev_get_id`: the public point of the chip-unique key (CUK) on
    /// secp256k1, X ‖ Y big-endian ([`chip_id`]); one socket, so 64 bytes even when 128 are
    /// offered. The model's CUK is SHA-256 of the 64 random bytes persisted as `chip_id` in
    /// the state file, so the id is stable per platform directory.
    pub fn get_id(&mut self, len: &mut u32) -> St<[u8; 64]> {
        if *len < 64 {
            *len = 64;
            return Err(Status::InvalidLength);
        }
        let cuk = Zeroizing::new(openssl::sha::sha256(&self.id.chip_id));
        let id = chip_id(&cuk).map_err(|_| Status::HwerrorPlatform)?;
        *len = 64;
        Ok(id)
    }

    // ---------------- guest commands ----------------

    /// LAUNCH_START (0x30). Returns the new handle. Changes nothing on failure.
    ///
    /// The first guest of this process takes a shared hold on the directory's guests lock
    /// before the PDH is read, so a PLATFORM_RESET or PEK_GEN elsewhere either finished
    /// before this launch or waits until its guests are gone: a launch sees one identity.
    pub fn launch_start(&mut self, a: &LaunchStartArgs<'_>) -> St<u32> {
        self.need(&[PlatformState::Init, PlatformState::Working])?;
        let fresh = match self.guests_hold {
            Some(_) => None,
            None => Some(self.store.hold_guests().map_err(fw_fail)?),
        };
        let handle = self.launch_start_held(a)?;
        if let Some(h) = fresh {
            self.guests_hold = Some(h);
        }
        self.sync_guests_hold();
        Ok(handle)
    }

    fn launch_start_held(&mut self, a: &LaunchStartArgs<'_>) -> St<u32> {
        let mut keys = TransportKeys::zero();
        if let Some(godh) = a.godh {
            if godh.len() != SevCert::LEN {
                return Err(Status::InvalidLength);
            }
            let session = a.session.ok_or(Status::InvalidLength)?;
            if session.len() != 128 {
                return Err(Status::InvalidLength);
            }
            let godh = SevCert::parse(godh).map_err(|_| Status::InvalidCertificate)?;
            let peer = check_godh(&godh).map_err(|_| Status::InvalidCertificate)?;
            // Another process sharing the directory may have run PDH_GEN.
            self.refresh()?;
            let pdh = self.id.pdh.as_ref().ok_or(Status::HwerrorPlatform)?;
            let z = ecdh_shared_secret(&pdh.key, &peer).map_err(|_| Status::HwerrorPlatform)?;
            let blob = SessionBlob::from_bytes(session).map_err(|_| Status::InvalidLength)?;
            keys = platform_unwrap(&z, &blob, a.policy).map_err(|e| match e {
                SessionError::BadWrapMac | SessionError::BadPolicyMac => Status::BadMeasurement,
                _ => Status::HwerrorPlatform,
            })?;
            let p = GuestPolicy(a.policy);
            if !p.api_satisfied_by(API.0, API.1) || p.reserved_bits() != 0 {
                return Err(Status::PolicyFailure);
            }
        }
        let key = if a.handle == 0 {
            MemoryKey::random().map_err(crypto_fail)?
        } else {
            let other = self.guest(a.handle)?;
            if other.policy != a.policy || GuestPolicy(other.policy).noks() {
                return Err(Status::PolicyFailure);
            }
            other.key.clone()
        };
        let slot = self
            .guests
            .iter()
            .position(|g| g.is_none())
            .ok_or(Status::ResourceLimit)?;
        let es = GuestPolicy(a.policy).es();
        if es && !self.es {
            return Err(Status::Unsupported);
        }
        self.next_launch_id += 1;
        self.guests[slot] = Some(Guest {
            launch_id: self.next_launch_id,
            state: GuestState::LUpdate,
            policy: a.policy,
            es,
            key,
            asid: 0,
            asid_live: false,
            ld: Some(Hasher::new(MessageDigest::sha256()).map_err(crypto_fail)?),
            ld_final: None,
            keys,
            measure: None,
        });
        self.state = PlatformState::Working;
        Ok(slot as u32 + 1)
    }

    /// The checks of LAUNCH_UPDATE_DATA (0x31) / LAUNCH_UPDATE_VMSA (0x32), in the
    /// firmware's order (`sev_mcmd_launch_update_vmsa`, `launch_update_common`): for a VMSA,
    /// its length (exactly 4096) before anything else, even the platform state; then platform
    /// WORKING, handle, LUPDATE, ES (VMSA only), active, address and length alignment.
    pub(crate) fn launch_update_check(
        &mut self,
        handle: u32,
        addr: u64,
        len: u32,
        vmsa: bool,
    ) -> St<&mut Guest> {
        if vmsa && len != 4096 {
            return Err(Status::InvalidLength);
        }
        self.need(&[PlatformState::Working])?;
        let g = self.guest_mut(handle)?;
        if g.state != GuestState::LUpdate {
            return Err(Status::InvalidGuestState);
        }
        if vmsa && !g.es {
            return Err(Status::Unsupported);
        }
        if g.asid == 0 {
            return Err(Status::Inactive);
        }
        if !addr.is_multiple_of(16) {
            return Err(Status::InvalidAddress);
        }
        if !len.is_multiple_of(16) || len == 0 {
            return Err(Status::InvalidLength);
        }
        Ok(g)
    }

    /// Feed plaintext to a guest's launch digest (after `launch_update_check`).
    pub(crate) fn measure_data(g: &mut Guest, data: &[u8]) -> St<()> {
        g.ld.as_mut()
            .ok_or(Status::InvalidGuestState)?
            .update(data)
            .map_err(crypto_fail)
    }

    /// LAUNCH_MEASURE (0x33): `len` < 48 gives INVALID_LENGTH and `len` = 48.
    pub fn launch_measure(&mut self, handle: u32, len: &mut u32) -> St<[u8; 48]> {
        self.need(&[PlatformState::Working])?;
        let g = self.guest_mut(handle)?;
        if g.state != GuestState::LUpdate {
            return Err(Status::InvalidGuestState);
        }
        if *len < 48 {
            *len = 48;
            return Err(Status::InvalidLength);
        }
        let mut ld = [0u8; 32];
        ld.copy_from_slice(
            &g.ld
                .take()
                .ok_or(Status::InvalidGuestState)?
                .finish()
                .map_err(crypto_fail)?,
        );
        let mut mnonce = [0u8; 16];
        openssl::rand::rand_bytes(&mut mnonce).map_err(crypto_fail)?;
        let measure = sev_proto::measure::measurement(
            &g.keys.tik,
            API.0,
            API.1,
            BUILD,
            g.policy,
            &ld,
            &mnonce,
        );
        g.ld_final = Some(ld);
        g.measure = Some(measure);
        g.state = GuestState::LSecret;
        *len = 48;
        let mut out = [0u8; 48];
        out[..32].copy_from_slice(&measure);
        out[32..].copy_from_slice(&mnonce);
        Ok(out)
    }

    /// LAUNCH_SECRET (0x34): checks, MAC, decrypt. Returns the plaintext to place
    /// (private) at `guest_addr`.
    pub fn launch_secret(
        &mut self,
        handle: u32,
        hdr: &[u8],
        guest_addr: u64,
        guest_len: u32,
        trans: &[u8],
    ) -> St<Zeroizing<Vec<u8>>> {
        self.need(&[PlatformState::Working])?;
        let g = self.guest(handle)?;
        if !guest_addr.is_multiple_of(16) {
            return Err(Status::InvalidAddress);
        }
        if hdr.len() != 52
            || !guest_len.is_multiple_of(16)
            || guest_len == 0
            || guest_len > MAX_SECRET_LEN
            || guest_len as usize != trans.len()
        {
            return Err(Status::InvalidLength);
        }
        if g.state != GuestState::LSecret {
            return Err(Status::InvalidGuestState);
        }
        if g.asid == 0 {
            return Err(Status::Inactive);
        }
        let hdr = PacketHeader::from_bytes(hdr).map_err(|_| Status::InvalidLength)?;
        let measure = g.measure.ok_or(Status::InvalidGuestState)?;
        let pt = open_packet(&g.keys, &measure, &hdr, trans, guest_len).map_err(|e| match e {
            SecretError::BadMac => Status::BadMeasurement,
            _ => Status::InvalidLength,
        })?;
        if hdr.flags & 1 != 0 {
            return Err(Status::Unsupported);
        }
        Ok(pt)
    }

    /// LAUNCH_FINISH (0x35).
    pub fn launch_finish(&mut self, handle: u32) -> St<()> {
        self.need(&[PlatformState::Working])?;
        let g = self.guest_mut(handle)?;
        if g.state != GuestState::LSecret {
            return Err(Status::InvalidGuestState);
        }
        if g.asid != 0 {
            g.asid_live = true;
        }
        g.keys = TransportKeys::zero();
        g.measure = None;
        g.state = GuestState::Running;
        Ok(())
    }

    /// ATTESTATION (0x36): PEK-signed 0xD0-byte report.
    pub fn attestation(
        &mut self,
        handle: u32,
        mnonce: &[u8; 16],
        len: &mut u32,
    ) -> St<[u8; REPORT_LEN]> {
        self.need(&[PlatformState::Working])?;
        let g = self.guest(handle)?;
        if !matches!(
            g.state,
            GuestState::LSecret | GuestState::Running | GuestState::SUpdate | GuestState::Sent
        ) {
            return Err(Status::InvalidGuestState);
        }
        if (*len as usize) < REPORT_LEN {
            *len = REPORT_LEN as u32;
            return Err(Status::InvalidLength);
        }
        let ld_final = g.ld_final.ok_or(Status::InvalidGuestState)?;
        let policy = g.policy;
        self.refresh()?;
        let mut r = [0u8; REPORT_LEN];
        r[0..16].copy_from_slice(mnonce);
        r[0x10..0x30].copy_from_slice(&ld_final);
        r[0x30..0x34].copy_from_slice(&policy.to_le_bytes());
        r[0x34..0x38].copy_from_slice(&Usage::PEK.0.to_le_bytes());
        r[0x38..0x3C].copy_from_slice(&Algo::ECDSA_SHA256.0.to_le_bytes());
        let pek = self.id.pek.as_ref().ok_or(Status::HwerrorPlatform)?;
        let digest =
            openssl::hash::hash(MessageDigest::sha256(), &r[..0x34]).map_err(crypto_fail)?;
        let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &pek.key).map_err(crypto_fail)?;
        let le = |n: &openssl::bn::BigNumRef| -> St<Vec<u8>> {
            let mut v = n.to_vec_padded(72).map_err(crypto_fail)?;
            v.reverse();
            Ok(v)
        };
        r[0x40..0x40 + 72].copy_from_slice(&le(sig.r())?);
        r[0x40 + 72..0x40 + 144].copy_from_slice(&le(sig.s())?);
        *len = REPORT_LEN as u32;
        Ok(r)
    }

    /// DBG_DECRYPT / DBG_ENCRYPT (0x60/0x61) checks. Returns the guest's key.
    pub(crate) fn dbg_check(&mut self, handle: u32, src: u64, dst: u64, len: u32) -> St<MemoryKey> {
        self.need(&[PlatformState::Working])?;
        if !src.is_multiple_of(16) || !dst.is_multiple_of(16) {
            return Err(Status::InvalidAddress);
        }
        if !len.is_multiple_of(16) {
            return Err(Status::InvalidLength);
        }
        let g = self.guest(handle)?;
        if GuestPolicy(g.policy).nodbg() {
            return Err(Status::PolicyFailure);
        }
        if g.asid == 0 {
            return Err(Status::Inactive);
        }
        Ok(g.key.clone())
    }

    /// GUEST_STATUS (0x23).
    pub fn guest_status(&mut self, handle: u32) -> St<GuestStatus> {
        self.need(&[PlatformState::Init, PlatformState::Working])?;
        let g = self.guest(handle)?;
        Ok(GuestStatus {
            policy: g.policy,
            asid: g.asid,
            state: g.state,
        })
    }

    /// ACTIVATE (0x21), in the firmware's order (`sev_mcmd_activate`,
    /// `mcmd_activate_common`, `activate_common`, `sev_guest_activate`):
    /// 1. platform WORKING, handle valid;
    /// 2. ASID 0 or above the maximum: INVALID_ASID;
    /// 3. the ASID held by **any** guest (in use or allocated), this one included:
    ///    ASID_OWNED — so a guest re-activating its own ASID gets ASID_OWNED, not ACTIVE;
    /// 4. this guest already active or pending: ACTIVE;
    /// 5. guest SENT: INVALID_GUEST_STATE;
    /// 6. the ASID dirty: DF_FLUSH_REQUIRED;
    /// 7. only then the ES / non-ES range (`sev_es_validate_asid`): INVALID_ASID.
    pub fn activate(&mut self, handle: u32, asid: u32) -> St<()> {
        self.need(&[PlatformState::Working])?;
        let g = self.guest(handle)?;
        let (gstate, gasid, ges) = (g.state, g.asid, g.es);
        if asid == 0 || asid > MAX_ASID {
            return Err(Status::InvalidAsid);
        }
        if matches!(self.asids[asid as usize], Asid::Owned(_)) {
            return Err(Status::AsidOwned);
        }
        if gasid != 0 {
            return Err(Status::Active);
        }
        if gstate == GuestState::Sent {
            return Err(Status::InvalidGuestState);
        }
        if self.asids[asid as usize] == Asid::Dirty {
            return Err(Status::DfFlushRequired);
        }
        let range_ok = if ges {
            (1..MIN_SEV_ASID).contains(&asid)
        } else {
            (MIN_SEV_ASID..=MAX_ASID).contains(&asid)
        };
        if !range_ok {
            return Err(Status::InvalidAsid);
        }
        self.asids[asid as usize] = Asid::Owned(handle);
        let running = gstate == GuestState::Running;
        let g = self.guest_mut(handle)?;
        g.asid = asid;
        g.asid_live = running;
        Ok(())
    }

    /// DEACTIVATE (0x22).
    pub fn deactivate(&mut self, handle: u32) -> St<()> {
        self.need(&[PlatformState::Working])?;
        let g = self.guest_mut(handle)?;
        if g.asid == 0 {
            return Err(Status::Inactive);
        }
        let asid = g.asid as usize;
        let live = g.asid_live;
        g.asid = 0;
        g.asid_live = false;
        self.asids[asid] = if live { Asid::Dirty } else { Asid::Clean };
        Ok(())
    }

    /// DECOMMISSION (0x20).
    pub fn decommission(&mut self, handle: u32) -> St<()> {
        self.need(&[PlatformState::Working])?;
        let g = self.guest(handle)?;
        if g.asid != 0 {
            return Err(Status::Active);
        }
        self.guests[handle as usize - 1] = None;
        if self.guest_count() == 0 {
            self.state = PlatformState::Init;
        }
        self.sync_guests_hold();
        Ok(())
    }

    /// The launch id of the guest at `handle`, if any.
    pub fn launch_id(&self, handle: u32) -> Option<u64> {
        self.guest(handle).ok().map(|g| g.launch_id)
    }

    /// The lowest clean ASID in the guest's range, flushing first if only dirty ones are
    /// free (what KVM's `sev_asid_new` + lazy DF_FLUSH achieve).
    pub fn free_asid(&mut self, es: bool) -> St<u32> {
        let range = if es {
            1..MIN_SEV_ASID
        } else {
            MIN_SEV_ASID..MAX_ASID + 1
        };
        for pass in 0..2 {
            if let Some(a) = range
                .clone()
                .find(|&a| self.asids[a as usize] == Asid::Clean)
            {
                return Ok(a);
            }
            if pass == 0 {
                self.df_flush()?;
            }
        }
        Err(Status::ResourceLimit)
    }
}
