//! The soft SNP firmware: platform state, guest contexts, launch (digest, secrets page, CPUID
//! page checks, ID block), guest status, decommission, MSG_REPORT_REQ guest requests, and the
//! platform configuration: SNP_CONFIG (reported TCB, MASK_CHIP_ID, MASK_CHIP_KEY), SNP_COMMIT
//! and a model of installing a newer firmware, persisted in `snp-config.json`.
//!
//! Every command checks in the firmware's order (`snp-spec-notes.md` §1.3) and changes no
//! state when it refuses.
//!
//! **RMP and sPAs.** The platform keeps an RMP ([`super::rmp`]) per 4 KiB system-physical page
//! and a sparse host memory (the raw interface's, [`super::raw`]). Guests are named by the sPA
//! of their context page, as the firmware names them. Two ways in:
//! - the sPA API ([`SoftSnpPlatform::gctx_create_at`], [`SoftSnpPlatform::launch_update_at`],
//!   [`SoftSnpPlatform::activate`], [`SoftSnpPlatform::page_reclaim`],
//!   [`SoftSnpPlatform::rmp_update`], …) and the raw command buffers
//!   ([`SoftSnpPlatform::execute`]), where the host drives every RMPUPDATE itself;
//! - the [`SnpGuest`] trait (KVM's view), which does what KVM does around each command: it
//!   takes sPAs from a private range above the raw memory, RMPUPDATEs the context page to
//!   FIRMWARE before GCTX_CREATE and each launched page to PRE_GUEST (ASID = the guest's, GPA =
//!   [`SnpLaunchUpdate::gpa`]) before LAUNCH_UPDATE, reclaims a page whose LAUNCH_UPDATE failed,
//!   and at DECOMMISSION (or drop) reclaims the context and gives every page back to the host.
//!   Its LAUNCH_START also activates the guest with [`SnpLaunchStart::asid`] as KVM does, but
//!   without the ASID ownership checks of ACTIVATE (KVM hands out unique ASIDs itself; callers
//!   of the trait launch many guests with ASID 1).
//!
//! Not modelled: encryption of guest pages (the raw memory holds plaintext; the host cannot
//! read or write assigned pages, and a private page given back to the host reads as zeros),
//! SNP_INIT_EX range lists, migration agents and IMI (MA_EN / IMI_EN refused with
//! UNSUPPORTED), message types other than REPORT and KEY (UNSUPPORTED), PSMASH, swap.

use super::rmp::{PageState, Rmp, RmpEntry, RmpUpdate, PAGE_2M, PAGE_4K};
use super::vcek::{HashSticks, SnpIdentity};
use super::{
    SnpGuest, SnpGuestState, SnpGuestStatus, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate,
    SnpPlatform, SnpPlatformState, SnpPlatformStatus,
};
use crate::soft::raw::PaMemory;
use crate::{FwError, Result, Status};
use openssl::pkey::PKey;
use sev_proto::snp::id_block::{IdAuth, IdBlock, KeyDigests};
use sev_proto::snp::measure::{PageType, SnpLaunchDigest, LD_SIZE, PAGE_SIZE, VMSA_TSC_FIELDS};
use sev_proto::snp::msg::{self, KeyReq, KeyRsp, ReportReq, ReportRsp};
use sev_proto::snp::policy::{PlatformPolicyView, SnpPolicy, FW_1_55_KNOWN_BITS};
use sev_proto::snp::report::{AttestationReport, Fms, FwVersion};
use sev_proto::snp::secrets::SecretsPage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use zeroize::Zeroizing;

/// Configuration of a soft SNP platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftSnpConfig {
    /// API major.minor reported and used for the policy ABI check.
    pub api_major: u8,
    /// API minor.
    pub api_minor: u8,
    /// Build id.
    pub build_id: u8,
    /// Whether SMT is enabled on the (modelled) host.
    pub smt_enabled: bool,
    /// The installed TCB (raw TCB_VERSION, Milan/Genoa layout); also committed and reported.
    pub tcb: u64,
    /// CPUID family/model/stepping reported (v3 reports; Milan-shaped by default so that
    /// verifiers pick the product without flags).
    pub fms: Fms,
}

impl Default for SoftSnpConfig {
    fn default() -> Self {
        SoftSnpConfig {
            api_major: 1,
            api_minor: 55,
            build_id: 25,
            smt_enabled: true,
            // BL 3, TEE 0, SNP 8, microcode 0x73 (a real Milan's, notes §3.1).
            tcb: u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 0x73]),
            fms: Fms {
                family: 0x19,
                model: 0x01,
                stepping: 0x01,
            },
        }
    }
}

impl SoftSnpConfig {
    /// CPUID(1).EAX for the secrets page FMS field.
    fn cpuid1_eax(&self) -> u32 {
        let fam = u32::from(self.fms.family);
        let model = u32::from(self.fms.model);
        let (base_fam, ext_fam) = if fam > 0xF {
            (0xF, fam - 0xF)
        } else {
            (fam, 0)
        };
        (ext_fam << 20)
            | ((model >> 4) << 16)
            | (base_fam << 8)
            | ((model & 0xF) << 4)
            | u32::from(self.fms.stepping & 0xF)
    }
}

struct PlatformInner {
    state: SnpPlatformState,
    /// The installed (running) firmware's TCB: `SoftSnpConfig::tcb` unless the platform file
    /// records a later [`SoftSnpPlatform::download_firmware`].
    current_tcb: u64,
    /// COMMITTED_TCB: raised to `current_tcb` by SNP_COMMIT, never lowered.
    committed_tcb: u64,
    /// REPORTED_TCB as set by SNP_CONFIG (0: the committed TCB).
    config_reported_tcb: u64,
    mask_chip_id: bool,
    mask_chip_key: bool,
    legacy_init: bool,
    /// The RMP (cleared by SNP_INIT).
    rmp: Rmp,
    /// Host memory at sPAs below `raw::PA_LIMIT` (the raw interface's buffers and pages).
    mem: PaMemory,
    /// Guest contexts by the sPA of their context page.
    guests: HashMap<u64, GuestCtx>,
    /// Next sPA the trait path hands out (above the raw memory).
    next_spa: u64,
    /// The VLEK loaded by SNP_VLEK_LOAD (persisted as its wrapped blob).
    vlek: Option<LoadedVlek>,
    /// The VCEK last derived, with its TCB: reports at the same reported TCB reuse it instead
    /// of hashing the sticks down and deriving the key again (a VCEK depends only on the
    /// fused seed and its TCB). OpenSSL clears the private scalar when the key is freed.
    vcek_cache: Option<(u64, PKey<openssl::pkey::Private>)>,
    guest_count: u32,
    sticks: HashSticks,
}

struct Shared {
    cfg: SoftSnpConfig,
    /// `dir/snp-config.json` when the platform lives in a directory.
    config_path: Option<PathBuf>,
    identity: SnpIdentity,
    chip_id: [u8; 64],
    inner: Mutex<PlatformInner>,
}

/// The soft SNP platform. Clones share the platform.
#[derive(Clone)]
pub struct SoftSnpPlatform {
    sh: Arc<Shared>,
}

impl std::fmt::Debug for SoftSnpPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftSnpPlatform")
            .field("cfg", &self.sh.cfg)
            .finish_non_exhaustive()
    }
}

fn st(cmd: &'static str, s: Status) -> FwError {
    FwError::st(cmd, s)
}

impl SoftSnpPlatform {
    /// A platform (UNINIT) with the given identity.
    pub fn new(identity: SnpIdentity, cfg: SoftSnpConfig) -> Result<Self> {
        let persisted = PersistedConfig::fresh(cfg.tcb);
        Self::build(identity, cfg, None, persisted)
    }

    fn build(
        identity: SnpIdentity,
        cfg: SoftSnpConfig,
        config_path: Option<PathBuf>,
        c: PersistedConfig,
    ) -> Result<Self> {
        let chip_id = identity.chip_id()?;
        let sticks = identity.sticks(c.installed_tcb);
        let vlek = match &c.vlek_wrapped {
            None => None,
            Some(h) => {
                let bad = |reason: String| FwError::StateFile {
                    path: config_path.clone().unwrap_or_default(),
                    reason: format!("vlek_wrapped: {reason}"),
                };
                let blob = hex::decode(h).map_err(|e| bad(e.to_string()))?;
                Some(LoadedVlek::unwrap_for(&sticks, &blob).map_err(|e| bad(e.to_string()))?)
            }
        };
        Ok(SoftSnpPlatform {
            sh: Arc::new(Shared {
                cfg,
                config_path,
                identity,
                chip_id,
                inner: Mutex::new(PlatformInner {
                    state: SnpPlatformState::Uninit,
                    current_tcb: c.installed_tcb,
                    committed_tcb: c.committed_tcb,
                    config_reported_tcb: c.reported_tcb,
                    mask_chip_id: c.mask_chip_id,
                    mask_chip_key: c.mask_chip_key,
                    legacy_init: false,
                    rmp: Rmp::default(),
                    mem: PaMemory::default(),
                    guests: HashMap::new(),
                    next_spa: TRAIT_SPA_BASE,
                    vlek,
                    vcek_cache: None,
                    guest_count: 0,
                    sticks,
                }),
            }),
        })
    }

    /// A platform whose identity lives in `dir/snp-identity.json` (created if absent) and
    /// whose SNP_CONFIG / COMMIT / installed-firmware state lives in `dir/snp-config.json`
    /// (written by the commands that change it; absent means installed = committed =
    /// reported = `cfg.tcb`, no masks).
    pub fn open(dir: &Path, cfg: SoftSnpConfig) -> Result<Self> {
        let identity = SnpIdentity::load_or_create(dir)?;
        let path = dir.join(CONFIG_FILE);
        let persisted = match sevm_files::read_bounded(&path, "SNP config file", 4096) {
            Ok(bytes) => PersistedConfig::parse(&path, &bytes)?,
            Err(e) if e.is_not_found() => PersistedConfig::fresh(cfg.tcb),
            Err(e) => return Err(e.into()),
        };
        Self::build(identity, cfg, Some(path), persisted)
    }

    /// Writes the persisted part of `next` (when the platform has a directory), before the
    /// caller commits `next` to memory: a failed write leaves both unchanged.
    fn persist(&self, next: &PersistedConfig) -> Result<()> {
        if let Some(path) = &self.sh.config_path {
            let json = serde_json::to_vec_pretty(next).map_err(|e| FwError::StateFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            sevm_files::write_atomic(path, "SNP config file", &json, 0o600)?;
        }
        Ok(())
    }

    fn persisted_of(p: &PlatformInner) -> PersistedConfig {
        PersistedConfig {
            version: 1,
            installed_tcb: p.current_tcb,
            committed_tcb: p.committed_tcb,
            reported_tcb: p.config_reported_tcb,
            mask_chip_id: p.mask_chip_id,
            mask_chip_key: p.mask_chip_key,
            vlek_wrapped: p.vlek.as_ref().map(|v| hex::encode(v.blob)),
        }
    }

    fn apply(p: &mut PlatformInner, c: &PersistedConfig) {
        p.current_tcb = c.installed_tcb;
        p.committed_tcb = c.committed_tcb;
        p.config_reported_tcb = c.reported_tcb;
        p.mask_chip_id = c.mask_chip_id;
        p.mask_chip_key = c.mask_chip_key;
    }

    /// The TCB reports carry and whose VCEK signs them: SNP_CONFIG's, else the committed one.
    pub fn reported_tcb(&self) -> u64 {
        effective_reported(&self.lock())
    }

    /// COMMITTED_TCB (not in SNP_PLATFORM_STATUS; reports carry it).
    pub fn committed_tcb(&self) -> u64 {
        self.lock().committed_tcb
    }

    /// SNP_CONFIG (Linux: SNP_SET_CONFIG): sets REPORTED_TCB (0 = follow the committed TCB)
    /// and the MASK_CHIP_ID / MASK_CHIP_KEY flags. Checks: reserved flag bits (INVALID_PARAM),
    /// platform INIT (INVALID_PLATFORM_STATE), every TCB component ≤ the committed TCB's
    /// (INVALID_PARAM). Persisted in the platform directory.
    pub fn snp_config(&self, c: &SnpConfig) -> Result<()> {
        const C: &str = "SNP_CONFIG";
        if c.flags & !3 != 0 {
            return Err(st(C, Status::InvalidParam));
        }
        let mut p = self.lock();
        if p.state != SnpPlatformState::Init {
            return Err(st(C, Status::InvalidPlatformState));
        }
        if c.reported_tcb != 0 && !tcb_le(c.reported_tcb, p.committed_tcb) {
            return Err(st(C, Status::InvalidParam));
        }
        let mut next = Self::persisted_of(&p);
        next.reported_tcb = c.reported_tcb;
        next.mask_chip_id = c.flags & 1 != 0;
        next.mask_chip_key = c.flags & 2 != 0;
        self.persist(&next)?;
        Self::apply(&mut p, &next);
        Ok(())
    }

    /// SNP_COMMIT: the committed TCB becomes the installed firmware's (anti-rollback: a
    /// later firmware install below it is refused). Needs platform INIT. Persisted.
    pub fn snp_commit(&self) -> Result<()> {
        let mut p = self.lock();
        if p.state != SnpPlatformState::Init {
            return Err(st("SNP_COMMIT", Status::InvalidPlatformState));
        }
        let mut next = Self::persisted_of(&p);
        next.committed_tcb = p.current_tcb;
        self.persist(&next)?;
        Self::apply(&mut p, &next);
        Ok(())
    }

    /// A model of installing another firmware (SNP_DOWNLOAD_FIRMWARE_EX): the installed TCB
    /// becomes `tcb`, whose every component must be ≥ the committed TCB's (BAD_SVN; the
    /// status is our choice, the notes do not give one). The committed TCB is unchanged until
    /// SNP_COMMIT. Refused while guests may be live (platform INIT: INVALID_PLATFORM_STATE),
    /// so the hash sticks change only between SNP_INITs. Persisted.
    pub fn download_firmware(&self, tcb: u64) -> Result<()> {
        const C: &str = "SNP_DOWNLOAD_FIRMWARE_EX";
        let mut p = self.lock();
        if p.state != SnpPlatformState::Uninit {
            return Err(st(C, Status::InvalidPlatformState));
        }
        if !tcb_le(p.committed_tcb, tcb) {
            return Err(st(C, Status::BadSvn));
        }
        let mut next = Self::persisted_of(&p);
        next.installed_tcb = tcb;
        self.persist(&next)?;
        Self::apply(&mut p, &next);
        p.sticks = self.sh.identity.sticks(tcb);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, PlatformInner> {
        // A panic while holding the lock leaves consistent state (every command validates
        // before it mutates), so a poisoned lock is recovered.
        self.sh.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the legacy SEV platform's INIT state. SNP_INIT requires it UNINIT. The legacy
    /// soft platform calls this on INIT / SHUTDOWN once attached
    /// (`soft::SoftPlatform::attach_snp`).
    pub fn set_legacy_init(&self, initialised: bool) {
        self.lock().legacy_init = initialised;
    }

    /// Whether legacy SEV INIT may run with SNP enabled: true once SNP is INIT (SNP must be
    /// initialised first when both are used). For the legacy INIT path to consult.
    pub fn legacy_init_allowed(&self) -> bool {
        self.lock().state == SnpPlatformState::Init
    }

    /// The platform's CHIP_ID.
    pub fn chip_id(&self) -> [u8; 64] {
        self.sh.chip_id
    }

    /// The VCEK public key for `tcb` (must be ≤ the platform's TCB componentwise).
    pub fn vcek_public_key(&self, tcb: u64) -> Result<PKey<openssl::pkey::Public>> {
        let k = self.lock().sticks.derive_older(tcb)?.vcek_key()?;
        let pub_only = openssl::ec::EcKey::from_public_key(k.group(), k.public_key())?;
        Ok(PKey::from_ec_key(pub_only)?)
    }

    /// The VCEK certificate for `tcb` (≤ the platform's TCB), signed by `ca`'s ASK, with this
    /// platform's CHIP_ID as hwID.
    pub fn vcek_cert(&self, ca: &super::ca::SoftCa, tcb: u64) -> Result<openssl::x509::X509> {
        ca.vcek_cert(&self.vcek_public_key(tcb)?, tcb, &self.sh.chip_id)
    }

    /// SNP_GCTX_CREATE the way KVM issues it: a context page taken from the trait range,
    /// RMPUPDATEd to FIRMWARE, then GCTX_CREATE on it (state INIT). Needs SNP INIT.
    pub fn gctx_create(&self) -> Result<SoftSnpGuest> {
        const C: &str = "SNP_GCTX_CREATE";
        let mut p = self.lock();
        if p.state != SnpPlatformState::Init {
            return Err(st(C, Status::InvalidPlatformState));
        }
        let spa = alloc_spa(&mut p, PAGE_4K).ok_or(st(C, Status::ResourceLimit))?;
        p.rmp
            .rmpupdate(spa, &RmpUpdate::firmware())
            .map_err(|e| rmp_err("RMPUPDATE", spa, e))?;
        if let Err(s) = core_gctx_create(&mut p, spa) {
            let _ = p.rmp.rmpupdate(spa, &RmpUpdate::hypervisor());
            return Err(st(C, s));
        }
        Ok(SoftSnpGuest {
            platform: self.clone(),
            gctx: spa,
            pages: Vec::new(),
            released: false,
        })
    }

    /// SNP_GCTX_CREATE on the host's page at `gctx` (must be FIRMWARE and 4 KiB). The guest is
    /// then named by `gctx` in the other `*_at` commands and the raw interface.
    pub fn gctx_create_at(&self, gctx: u64) -> Result<()> {
        core_gctx_create(&mut self.lock(), gctx).map_err(|s| st("SNP_GCTX_CREATE", s))
    }

    /// SNP_LAUNCH_START on the guest at `gctx` (no activation: see [`Self::activate`]).
    pub fn launch_start_at(&self, gctx: u64, ls: &SnpLaunchStart) -> Result<()> {
        let mut p = self.lock();
        core_launch_start(&self.sh, &mut p, gctx, ls).map_err(|s| st("SNP_LAUNCH_START", s))
    }

    /// SNP_ACTIVATE: binds `asid` to the guest at `gctx`. Checks: platform INIT, GCTX a live
    /// context (INVALID_GUEST), guest LAUNCH or RUNNING (INVALID_GUEST_STATE), ASID in
    /// 1..=[`MAX_SNP_ASID`] (INVALID_ASID), not bound to another guest (ASID_OWNED), no RMP page
    /// already assigned to it (INVALID_CONFIG).
    pub fn activate(&self, gctx: u64, asid: u32) -> Result<()> {
        core_activate(&mut self.lock(), gctx, asid).map_err(|s| st("SNP_ACTIVATE", s))
    }

    /// SNP_LAUNCH_UPDATE of the page at `spa` (its RMP entry gives the GPA; the host must have
    /// made it PRE_GUEST with [`Self::rmp_update`]); `u.gpa` is ignored. Contents are read from
    /// and written back to the host memory at `spa` (below `raw::PA_LIMIT`).
    pub fn launch_update_at(&self, gctx: u64, spa: u64, u: &SnpLaunchUpdate) -> Result<()> {
        const C: &str = "SNP_LAUNCH_UPDATE";
        let mut p = self.lock();
        let size = if u.page_size_2m { PAGE_2M } else { PAGE_4K };
        // sPAs without backing memory (at or above raw::PA_LIMIT) read as zeros.
        let mut page = p
            .mem
            .read(spa, size)
            .unwrap_or_else(|_| vec![0; size as usize]);
        let r = core_launch_update(&self.sh, &mut p, gctx, spa, u, &mut page);
        // The firmware writes the page back (zeroed, secrets, launched contents) on success,
        // and a corrected CPUID table on that refusal; writes beyond the memory are dropped.
        if r.is_ok() || r == Err(Status::InvalidParam) && u.page_type == PageType::Cpuid as u8 {
            let _ = p.mem.write(spa, &page);
        }
        r.map_err(|s| st(C, s))
    }

    /// SNP_LAUNCH_FINISH on the guest at `gctx`.
    pub fn launch_finish_at(&self, gctx: u64, f: &SnpLaunchFinish<'_>) -> Result<()> {
        let mut p = self.lock();
        core_launch_finish(&mut p, gctx, f).map_err(|s| st("SNP_LAUNCH_FINISH", s))
    }

    /// SNP_GUEST_STATUS of the guest at `gctx`.
    pub fn guest_status_at(&self, gctx: u64) -> Result<SnpGuestStatus> {
        core_guest_status(&self.lock(), gctx).map_err(|s| st("SNP_GUEST_STATUS", s))
    }

    /// SNP_DECOMMISSION of the guest at `gctx`: the context page goes CONTEXT → FIRMWARE (the
    /// host then reclaims it with [`Self::page_reclaim`]); its ASID is free again.
    pub fn decommission_at(&self, gctx: u64) -> Result<()> {
        core_decommission(&mut self.lock(), gctx).map_err(|s| st("SNP_DECOMMISSION", s))
    }

    /// SNP_PAGE_RECLAIM of the page (4 KiB, or 2 MiB with `page_2m`) at `spa`: FIRMWARE (or a
    /// PRE_GUEST page whose LAUNCH_UPDATE failed, as KVM reclaims them) → RECLAIM, from where
    /// the host's RMPUPDATE takes it back. Check order (ours; the notes give none): platform
    /// INIT (INVALID_PLATFORM_STATE), alignment to the size and RMP coverage (INVALID_ADDRESS),
    /// RMP page size (INVALID_PAGE_SIZE), page state (INVALID_PAGE_STATE).
    pub fn page_reclaim(&self, spa: u64, page_2m: bool) -> Result<()> {
        core_page_reclaim(&mut self.lock(), spa, page_2m).map_err(|s| st("SNP_PAGE_RECLAIM", s))
    }

    /// The host's RMPUPDATE of the page at `spa` ([`Rmp::rmpupdate`]). A private guest page
    /// given back to the host reads as zeros afterwards (its ciphertext is not modelled).
    pub fn rmp_update(&self, spa: u64, u: &RmpUpdate) -> Result<()> {
        let mut p = self.lock();
        rmp_update_host(&mut p, spa, u)
    }

    /// The guest's PVALIDATE of the page at `spa` (its own, at `gpa`, with `asid`); returns
    /// whether VALIDATED changed.
    pub fn pvalidate(
        &self,
        spa: u64,
        asid: u32,
        gpa: u64,
        page_2m: bool,
        validate: bool,
    ) -> Result<bool> {
        self.lock()
            .rmp
            .pvalidate(spa, asid, gpa, page_2m, validate)
            .map_err(|e| rmp_err("PVALIDATE", spa, e))
    }

    /// The RMP entry of the page holding `spa`.
    pub fn rmp_entry(&self, spa: u64) -> RmpEntry {
        self.lock().rmp.entry(spa)
    }

    /// The page state of the page holding `spa`.
    pub fn page_state(&self, spa: u64) -> PageState {
        self.lock().rmp.state(spa)
    }

    /// The host writes `data` at `spa` (raw memory, below `raw::PA_LIMIT`). Refused (the RMP
    /// #PF) when any page touched is assigned or HV_FIXED.
    pub fn write_pa(&self, spa: u64, data: &[u8]) -> Result<()> {
        let mut p = self.lock();
        host_access(&p.rmp, "write", spa, data.len() as u64, true)?;
        p.mem.write(spa, data).map_err(|s| st("host write", s))
    }

    /// The host reads `len` bytes at `spa`. Refused when any page touched is assigned.
    pub fn read_pa(&self, spa: u64, len: u64) -> Result<Vec<u8>> {
        let p = self.lock();
        host_access(&p.rmp, "read", spa, len, false)?;
        p.mem.read(spa, len).map_err(|s| st("host read", s))
    }

    /// A snapshot of everything a command may change (platform fields, RMP, guest contexts,
    /// host memory digest) for "a refused command changes nothing" checks.
    pub fn state_digest(&self) -> [u8; 48] {
        let p = self.lock();
        let mut h = openssl::sha::Sha384::new();
        h.update(format!("{:?}", p.state).as_bytes());
        for v in [
            p.current_tcb,
            p.committed_tcb,
            p.config_reported_tcb,
            u64::from(p.mask_chip_id),
            u64::from(p.mask_chip_key),
            u64::from(p.legacy_init),
            u64::from(p.guest_count),
            p.next_spa,
        ] {
            h.update(&v.to_le_bytes());
        }
        h.update(format!("{:?}", p.rmp).as_bytes());
        let mut gs: Vec<_> = p.guests.iter().collect();
        gs.sort_by_key(|(k, _)| **k);
        for (k, g) in gs {
            h.update(&k.to_le_bytes());
            g.digest_into(&mut h);
        }
        h.update(&p.mem.digest());
        if let Some(v) = &p.vlek {
            h.update(&v.tcb.to_le_bytes());
            h.update(&v.blob);
        }
        h.finish()
    }
}

impl SoftSnpPlatform {
    /// SNP_GUEST_REQUEST with the request at page `req` and the response to page `resp`, which
    /// must be FIRMWARE (INVALID_PAGE_STATE) after the guest checks.
    pub fn guest_request_at(&self, gctx: u64, req: u64, resp: u64) -> Result<()> {
        const C: &str = "SNP_GUEST_REQUEST";
        let mut p = self.lock();
        guest_of(&p, gctx).map_err(|s| st(C, s))?;
        if p.rmp.state(resp) != PageState::Firmware {
            return Err(st(C, Status::InvalidPageState));
        }
        let rq = p.mem.read(req, PAGE_4K).map_err(|s| st(C, s))?;
        let mut out = vec![0u8; PAGE_SIZE];
        core_guest_request(&self.sh, &mut p, gctx, &rq, &mut out).map_err(|s| st(C, s))?;
        p.mem.write(resp, &out).map_err(|s| st(C, s))
    }

    /// SNP_DBG_DECRYPT (`encrypt` false: guest page `src` → FIRMWARE page `dst`) or
    /// SNP_DBG_ENCRYPT (host page `src` → guest page `dst`). After the gate of the trait's DBG
    /// (platform, context, guest launched, DEBUG policy bit), the guest page must be assigned
    /// to a guest (INVALID_PAGE_STATE) with this guest's ASID (INVALID_PAGE_OWNER), and the
    /// decrypt target a FIRMWARE page (INVALID_PAGE_STATE). Pages are plaintext in the model,
    /// so the transform is a copy.
    pub fn dbg_at(&self, gctx: u64, src: u64, dst: u64, encrypt: bool) -> Result<()> {
        let c = if encrypt {
            "SNP_DBG_ENCRYPT"
        } else {
            "SNP_DBG_DECRYPT"
        };
        let mut p = self.lock();
        let asid = core_dbg_gate(&p, gctx).map_err(|s| st(c, s))?;
        let guest_page = if encrypt { dst } else { src };
        let e = p.rmp.entry(guest_page);
        if !e.assigned || e.asid == 0 {
            return Err(st(c, Status::InvalidPageState));
        }
        if e.asid != asid {
            return Err(st(c, Status::InvalidPageOwner));
        }
        if !encrypt && p.rmp.state(dst) != PageState::Firmware {
            return Err(st(c, Status::InvalidPageState));
        }
        let data = p.mem.read(src, PAGE_4K).map_err(|s| st(c, s))?;
        p.mem.write(dst, &data).map_err(|s| st(c, s))
    }

    /// The firmware's read of host memory (no RMP check: the firmware reads any page).
    pub(crate) fn fw_read(&self, pa: u64, len: u64) -> std::result::Result<Vec<u8>, Status> {
        self.lock().mem.read(pa, len)
    }

    /// The firmware's write of host memory (the caller checked the page state).
    pub(crate) fn fw_write(&self, pa: u64, data: &[u8]) -> std::result::Result<(), Status> {
        self.lock().mem.write(pa, data)
    }
}

/// A loaded VLEK: its TCB, its private key and the blob it came from.
struct LoadedVlek {
    tcb: u64,
    key: PKey<openssl::pkey::Private>,
    blob: [u8; super::vlek::WRAPPED_SIZE],
}

impl LoadedVlek {
    /// Parses `blob` and unwraps it with the wrapping key of its TCB, derived from `sticks`
    /// (the platform's installed TCB; the blob's must be older or equal).
    fn unwrap_for(sticks: &HashSticks, blob: &[u8]) -> Result<Self> {
        use super::vlek;
        let w = vlek::WrappedVlek::from_bytes(blob)?;
        let at = sticks.derive_older(w.tcb_version)?;
        let vs = vlek::unwrap(&vlek::wrapping_key(&at), &w)?;
        Ok(LoadedVlek {
            tcb: w.tcb_version,
            key: PKey::from_ec_key(vlek::vlek_key(&vs)?)?,
            blob: w.to_bytes(),
        })
    }
}

impl SoftSnpPlatform {
    /// SNP_VLEK_LOAD of the wrapped blob (`super::vlek`). Checks: platform INIT
    /// (INVALID_PLATFORM_STATE), the blob's layout (INVALID_PARAM, naming the field), its
    /// TCB_VERSION = the reported TCB (BAD_SVN), the GCM tag under this platform's wrapping key
    /// (BAD_MEASUREMENT, the cause naming VLEK_WRAPPED.TAG). The VLEK then signs reports with
    /// KEY_SEL 0 or 2 (SIGNING_KEY 1) while the reported TCB stays the blob's, and PLATFORM_STATUS
    /// says VLEK_EN. Persisted in the platform directory (the wrapped blob only).
    pub fn vlek_load(&self, blob: &[u8]) -> Result<()> {
        const C: &str = "SNP_VLEK_LOAD";
        let cause = |status: Status, e: FwError| FwError::StatusCause {
            cmd: C,
            status,
            cause: Box::new(e),
        };
        let mut p = self.lock();
        need_init(&p).map_err(|s| st(C, s))?;
        let w = super::vlek::WrappedVlek::from_bytes(blob)
            .map_err(|e| cause(Status::InvalidParam, e.into()))?;
        if w.tcb_version != effective_reported(&p) {
            return Err(cause(
                Status::BadSvn,
                FwError::Format(sev_proto::snp::FormatError::Field {
                    structure: "VLEK_WRAPPED",
                    field: "TCB_VERSION",
                    reason: format!(
                        "0x{:016X} is not the platform's reported TCB 0x{:016X}",
                        w.tcb_version,
                        effective_reported(&p)
                    ),
                }),
            ));
        }
        let v = LoadedVlek::unwrap_for(&p.sticks, blob).map_err(|e| match e {
            FwError::Format(_) => cause(Status::BadMeasurement, e),
            other => other,
        })?;
        let mut next = Self::persisted_of(&p);
        next.vlek_wrapped = Some(hex::encode(v.blob));
        self.persist(&next)?;
        p.vlek = Some(v);
        Ok(())
    }

    /// Makes a VLEK blob this platform accepts (`sevm platform snp vlek-make`): 8 random hash
    /// sticks wrapped under the platform's key for the reported TCB (see `super::vlek`).
    pub fn vlek_make(&self) -> Result<Vec<u8>> {
        let p = self.lock();
        let tcb = effective_reported(&p);
        let at = p.sticks.derive_older(tcb)?;
        drop(p);
        let mut sticks = Zeroizing::new([[0u8; 48]; 8]);
        for s in sticks.iter_mut() {
            openssl::rand::rand_bytes(s)?;
        }
        let w = super::vlek::wrap(&super::vlek::wrapping_key(&at), &sticks, tcb)?;
        Ok(w.to_bytes().to_vec())
    }

    /// The loaded VLEK's public key and TCB, if one is loaded.
    pub fn vlek_public_key(&self) -> Result<Option<(PKey<openssl::pkey::Public>, u64)>> {
        let p = self.lock();
        let Some(v) = &p.vlek else { return Ok(None) };
        let k = v.key.ec_key()?;
        let pub_only = openssl::ec::EcKey::from_public_key(k.group(), k.public_key())?;
        Ok(Some((PKey::from_ec_key(pub_only)?, v.tcb)))
    }
}

/// First sPA of the trait path's pages (above the raw memory's `PA_LIMIT`).
const TRAIT_SPA_BASE: u64 = 1 << 44;

/// Largest ASID an SNP guest may be activated with (SNP guests use the SEV-ES range
/// 1..MIN_SEV_ASID−1; ours is a model value).
pub const MAX_SNP_ASID: u32 = 99;

fn alloc_spa(p: &mut PlatformInner, size: u64) -> Option<u64> {
    let spa = p.next_spa.checked_add(size - 1)? & !(size - 1);
    let end = spa.checked_add(size)?;
    if end > super::rmp::RMP_END {
        return None;
    }
    p.next_spa = end;
    Some(spa)
}

fn rmp_err(op: &'static str, spa: u64, e: super::rmp::RmpFail) -> FwError {
    FwError::Rmp {
        op,
        spa,
        reason: e.to_string(),
    }
}

fn host_access(rmp: &Rmp, op: &'static str, spa: u64, len: u64, write: bool) -> Result<()> {
    let end = spa.saturating_add(len.max(1));
    let mut a = spa - spa % PAGE_4K;
    while a < end {
        let s = rmp.state(a);
        let ok = match s {
            PageState::Hypervisor | PageState::Default => true,
            PageState::HvFixed => !write,
            _ => false,
        };
        if !ok {
            return Err(FwError::Rmp {
                op,
                spa: a,
                reason: format!("the page is {s:?} in the RMP"),
            });
        }
        a = match a.checked_add(PAGE_4K) {
            Some(n) => n,
            None => break,
        };
    }
    Ok(())
}

fn rmp_update_host(p: &mut PlatformInner, spa: u64, u: &RmpUpdate) -> Result<()> {
    let old = p.rmp.entry(spa);
    p.rmp
        .rmpupdate(spa, u)
        .map_err(|e| rmp_err("RMPUPDATE", spa, e))?;
    if old.assigned && old.asid != 0 && !u.assigned {
        // A page leaving a guest: the host would see ciphertext; the model shows zeros.
        // (Firmware pages keep what the firmware wrote: the host reads command outputs after
        // reclaiming them.)
        let size = if old.page_2m { PAGE_2M } else { PAGE_4K };
        p.mem.discard(spa - spa % size, size);
    }
    Ok(())
}

impl SnpPlatform for SoftSnpPlatform {
    fn snp_config(&self, c: &SnpConfig) -> Result<()> {
        SoftSnpPlatform::snp_config(self, c)
    }

    fn snp_commit(&self) -> Result<()> {
        SoftSnpPlatform::snp_commit(self)
    }

    fn snp_vlek_load(&self, wrapped: &[u8]) -> Result<()> {
        self.vlek_load(wrapped)
    }

    fn snp_init(&self) -> Result<()> {
        let mut p = self.lock();
        if p.state != SnpPlatformState::Uninit || p.legacy_init {
            return Err(st("SNP_INIT", Status::InvalidPlatformState));
        }
        p.state = SnpPlatformState::Init;
        p.sticks = self.sh.identity.sticks(p.current_tcb);
        // INIT_RMP: every page goes back to HYPERVISOR (pages that were assigned read as
        // zeros), every guest context is gone.
        for spa in p.rmp.assigned_pages() {
            p.mem.discard(spa, PAGE_4K);
        }
        p.rmp.clear();
        p.guests.clear();
        Ok(())
    }

    fn snp_shutdown(&self) -> Result<()> {
        let mut p = self.lock();
        if p.state != SnpPlatformState::Init {
            return Err(st("SNP_SHUTDOWN", Status::InvalidPlatformState));
        }
        p.state = SnpPlatformState::Uninit;
        Ok(())
    }

    fn snp_platform_status(&self) -> Result<SnpPlatformStatus> {
        let p = self.lock();
        let c = &self.sh.cfg;
        Ok(SnpPlatformStatus {
            api_major: c.api_major,
            api_minor: c.api_minor,
            state: p.state,
            is_rmp_init: p.state == SnpPlatformState::Init,
            build_id: u32::from(c.build_id),
            mask_chip_id: p.mask_chip_id,
            mask_chip_key: p.mask_chip_key,
            vlek_en: p.vlek.is_some(),
            feature_info: false,
            guest_count: p.guest_count,
            current_tcb: p.current_tcb,
            reported_tcb: effective_reported(&p),
        })
    }
}

/// The platform file holding SNP_CONFIG, COMMIT and installed-firmware state.
pub const CONFIG_FILE: &str = "snp-config.json";

/// SNP_CONFIG parameters (the 0x40-byte buffer without its MBZ tail).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnpConfig {
    /// REPORTED_TCB (raw TCB_VERSION); 0 = use the committed TCB.
    pub reported_tcb: u64,
    /// Word 0x08: bit 0 MASK_CHIP_ID, bit 1 MASK_CHIP_KEY, rest MBZ.
    pub flags: u32,
}

/// `a ≤ b` in every one of the 8 TCB_VERSION bytes.
fn tcb_le(a: u64, b: u64) -> bool {
    a.to_le_bytes()
        .iter()
        .zip(b.to_le_bytes().iter())
        .all(|(x, y)| x <= y)
}

fn effective_reported(p: &PlatformInner) -> u64 {
    if p.config_reported_tcb == 0 {
        p.committed_tcb
    } else {
        p.config_reported_tcb
    }
}

/// `snp-config.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedConfig {
    version: u32,
    installed_tcb: u64,
    committed_tcb: u64,
    reported_tcb: u64,
    mask_chip_id: bool,
    mask_chip_key: bool,
    /// The wrapped blob of the loaded VLEK, hex (absent: none loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vlek_wrapped: Option<String>,
}

impl PersistedConfig {
    fn fresh(tcb: u64) -> Self {
        PersistedConfig {
            version: 1,
            installed_tcb: tcb,
            committed_tcb: tcb,
            reported_tcb: 0,
            mask_chip_id: false,
            mask_chip_key: false,
            vlek_wrapped: None,
        }
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| FwError::StateFile {
            path: path.to_path_buf(),
            reason,
        };
        let c: PersistedConfig = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if c.version != 1 {
            return Err(bad(format!("version {} is not 1", c.version)));
        }
        if !tcb_le(c.committed_tcb, c.installed_tcb) {
            return Err(bad(format!(
                "committed_tcb 0x{:016X} has a component above installed_tcb 0x{:016X}",
                c.committed_tcb, c.installed_tcb
            )));
        }
        if c.reported_tcb != 0 && !tcb_le(c.reported_tcb, c.committed_tcb) {
            return Err(bad(format!(
                "reported_tcb 0x{:016X} has a component above committed_tcb 0x{:016X}",
                c.reported_tcb, c.committed_tcb
            )));
        }
        Ok(c)
    }
}

struct GuestCtx {
    state: SnpGuestState,
    policy: SnpPolicy,
    /// The ASID from SNP_ACTIVATE (0: not activated).
    asid: u32,
    launch_tcb: u64,
    ld: SnpLaunchDigest,
    vmpck: Zeroizing<[[u8; 32]; 4]>,
    /// VMRK, the per-guest root key of MSG_KEY_REQ with ROOT_KEY_SELECT = 1.
    vmrk: Zeroizing<[u8; 32]>,
    /// Per-VMPCK message count (last sequence number used).
    seqno: [u64; 4],
    report_id: [u8; 32],
    gosvw: [u8; 16],
    host_data: [u8; 32],
    id: Option<IdBlock>,
    digests: KeyDigests,
    author_key_en: bool,
    vcek_dis: bool,
}

impl GuestCtx {
    fn new(launch_tcb: u64) -> Self {
        GuestCtx {
            state: SnpGuestState::Init,
            policy: SnpPolicy(0),
            asid: 0,
            launch_tcb,
            ld: SnpLaunchDigest::new(),
            vmpck: Zeroizing::new([[0; 32]; 4]),
            vmrk: Zeroizing::new([0; 32]),
            seqno: [0; 4],
            report_id: [0; 32],
            gosvw: [0; 16],
            host_data: [0; 32],
            id: None,
            digests: KeyDigests {
                id_key: [0; 48],
                author_key: [0; 48],
            },
            author_key_en: false,
            vcek_dis: false,
        }
    }

    /// Feeds every field into `h` (keys through their SHA-384, never themselves).
    fn digest_into(&self, h: &mut openssl::sha::Sha384) {
        h.update(&[
            self.state as u8,
            u8::from(self.author_key_en),
            u8::from(self.vcek_dis),
        ]);
        h.update(&self.policy.0.to_le_bytes());
        h.update(&self.asid.to_le_bytes());
        h.update(&self.launch_tcb.to_le_bytes());
        h.update(&self.ld.digest());
        h.update(&openssl::sha::sha384(self.vmpck.as_flattened()));
        h.update(&openssl::sha::sha384(&self.vmrk[..]));
        for n in self.seqno {
            h.update(&n.to_le_bytes());
        }
        h.update(&self.report_id);
        h.update(&self.gosvw);
        h.update(&self.host_data);
        h.update(&self.digests.id_key);
        h.update(&self.digests.author_key);
        h.update(&[u8::from(self.id.is_some())]);
    }
}

/// One soft guest context driven the way KVM drives it (from [`SoftSnpPlatform::gctx_create`]);
/// see the module notes for the RMPUPDATEs it does around each command.
pub struct SoftSnpGuest {
    platform: SoftSnpPlatform,
    /// sPA of the context page.
    gctx: u64,
    /// The pages given to the guest by LAUNCH_UPDATE (sPA, 2 MiB).
    pages: Vec<(u64, bool)>,
    /// Context decommissioned and pages given back.
    released: bool,
}

impl std::fmt::Debug for SoftSnpGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftSnpGuest")
            .field("gctx", &format_args!("{:#x}", self.gctx))
            .field("pages", &self.pages.len())
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}

// ---------------- the firmware commands on sPAs (shared by the trait, sPA API, raw) -------

fn need_init(p: &PlatformInner) -> std::result::Result<(), Status> {
    if p.state != SnpPlatformState::Init {
        return Err(Status::InvalidPlatformState);
    }
    Ok(())
}

/// Platform INIT, then `gctx` a page in CONTEXT state holding a live guest (INVALID_GUEST).
fn need_ctx(p: &PlatformInner, gctx: u64) -> std::result::Result<(), Status> {
    need_init(p)?;
    if !gctx.is_multiple_of(PAGE_4K)
        || p.rmp.state(gctx) != PageState::Context
        || !p.guests.contains_key(&gctx)
    {
        return Err(Status::InvalidGuest);
    }
    Ok(())
}

fn guest_of(p: &PlatformInner, gctx: u64) -> std::result::Result<&GuestCtx, Status> {
    need_ctx(p, gctx)?;
    p.guests.get(&gctx).ok_or(Status::InvalidGuest)
}

fn guest_mut(p: &mut PlatformInner, gctx: u64) -> std::result::Result<&mut GuestCtx, Status> {
    need_ctx(p, gctx)?;
    p.guests.get_mut(&gctx).ok_or(Status::InvalidGuest)
}

/// SNP_GCTX_CREATE: platform INIT, `gctx` 4 KiB aligned (INVALID_PARAM), FIRMWARE state
/// (INVALID_PAGE_STATE), a 4 KiB RMP entry (INVALID_PAGE_SIZE). The page is zeroed and becomes
/// CONTEXT; the context records launch_tcb = the committed TCB.
fn core_gctx_create(p: &mut PlatformInner, gctx: u64) -> std::result::Result<(), Status> {
    need_init(p)?;
    if !gctx.is_multiple_of(PAGE_4K) {
        return Err(Status::InvalidParam);
    }
    if p.rmp.state(gctx) != PageState::Firmware {
        return Err(Status::InvalidPageState);
    }
    let mut e = p.rmp.entry(gctx);
    if e.page_2m {
        return Err(Status::InvalidPageSize);
    }
    e.vmsa = true;
    p.rmp.set(gctx, e);
    p.mem.discard(gctx, PAGE_4K);
    let ctx = GuestCtx::new(p.committed_tcb);
    p.guests.insert(gctx, ctx);
    Ok(())
}

fn core_launch_start(
    sh: &Shared,
    p: &mut PlatformInner,
    gctx: u64,
    ls: &SnpLaunchStart,
) -> std::result::Result<(), Status> {
    if ls.flags & !3 != 0 {
        return Err(Status::InvalidParam);
    }
    let g = guest_of(p, gctx)?;
    if g.state != SnpGuestState::Init {
        return Err(Status::InvalidGuestState);
    }
    let cfg = &sh.cfg;
    let view = PlatformPolicyView {
        api_major: cfg.api_major,
        api_minor: cfg.api_minor,
        smt_enabled: cfg.smt_enabled,
        known_bits: FW_1_55_KNOWN_BITS,
    };
    if ls.policy.check_launch(&view).is_err() {
        return Err(Status::PolicyFailure);
    }
    if ls.flags != 0 || ls.ma_gctx_paddr != 0 {
        // Migration agents and IMI are not modelled.
        return Err(Status::Unsupported);
    }
    let mut vmpck = Zeroizing::new([[0u8; 32]; 4]);
    let mut vmrk = Zeroizing::new([0u8; 32]);
    let mut report_id = [0u8; 32];
    let drawn = vmpck
        .iter_mut()
        .try_for_each(|k| openssl::rand::rand_bytes(k))
        .and_then(|()| openssl::rand::rand_bytes(&mut vmrk[..]))
        .and_then(|()| openssl::rand::rand_bytes(&mut report_id));
    if drawn.is_err() {
        return Err(Status::HwerrorPlatform);
    }
    p.guest_count = p.guest_count.wrapping_add(1);
    let g = guest_mut(p, gctx)?;
    g.vmpck = vmpck;
    g.vmrk = vmrk;
    g.report_id = report_id;
    g.policy = ls.policy;
    g.gosvw = ls.gosvw;
    g.ld = SnpLaunchDigest::new();
    g.state = SnpGuestState::Launch;
    Ok(())
}

fn core_activate(p: &mut PlatformInner, gctx: u64, asid: u32) -> std::result::Result<(), Status> {
    let g = guest_of(p, gctx)?;
    if g.state == SnpGuestState::Init {
        return Err(Status::InvalidGuestState);
    }
    if asid == 0 || asid > MAX_SNP_ASID {
        return Err(Status::InvalidAsid);
    }
    if p.guests.iter().any(|(k, o)| *k != gctx && o.asid == asid) {
        return Err(Status::AsidOwned);
    }
    if p.rmp.asid_has_pages(asid) {
        return Err(Status::InvalidConfig);
    }
    guest_mut(p, gctx)?.asid = asid;
    Ok(())
}

/// SNP_LAUNCH_UPDATE in the notes' order: MBZ (INVALID_PARAM) → platform INIT → GCTX
/// (INVALID_GUEST) → target PRE_GUEST (INVALID_PAGE_STATE) → RMP page size = PAGE_SIZE
/// (INVALID_PAGE_SIZE) → 2 MiB alignment (INVALID_ADDRESS) → page type (INVALID_PARAM; 4 KiB-only
/// types INVALID_PAGE_SIZE) → guest LAUNCH (INVALID_GUEST_STATE) → activated (INACTIVE) → RMP
/// ASID = guest's (INVALID_PAGE_OWNER) → IMI (INVALID_PARAM: IMI is never enabled). The GPA
/// measured is the RMP entry's. On success the pages become GUEST_VALID (VMSA bit for VMSA
/// pages, VMPL1–3 permissions stored). A bad CPUID table is corrected in `page` and refused.
fn core_launch_update(
    sh: &Shared,
    p: &mut PlatformInner,
    gctx: u64,
    spa: u64,
    u: &SnpLaunchUpdate,
    page: &mut [u8],
) -> std::result::Result<(), Status> {
    let size = if u.page_size_2m { PAGE_2M } else { PAGE_4K };
    if page.len() as u64 != size {
        return Err(Status::InvalidPageSize);
    }
    let g = guest_of(p, gctx)?;
    if !spa.is_multiple_of(PAGE_4K) || p.rmp.state(spa) != PageState::PreGuest {
        return Err(Status::InvalidPageState);
    }
    let e = p.rmp.entry(spa);
    if e.page_2m != u.page_size_2m {
        return Err(Status::InvalidPageSize);
    }
    if !spa.is_multiple_of(size) {
        return Err(Status::InvalidAddress);
    }
    let t = PageType::from_u8(u.page_type).map_err(|_| Status::InvalidParam)?;
    if u.page_size_2m && matches!(t, PageType::Vmsa | PageType::Secrets | PageType::Cpuid) {
        return Err(Status::InvalidPageSize);
    }
    if g.state != SnpGuestState::Launch {
        return Err(Status::InvalidGuestState);
    }
    if g.asid == 0 {
        return Err(Status::Inactive);
    }
    if e.asid != g.asid {
        return Err(Status::InvalidPageOwner);
    }
    if u.imi_page {
        return Err(Status::InvalidParam);
    }
    let mut ld = g.ld.clone();
    for (i, chunk) in page.chunks_exact_mut(PAGE_SIZE).enumerate() {
        let gpa = p.rmp.entry(spa + (i * PAGE_SIZE) as u64).gpa;
        let contents = match t {
            PageType::Normal => sev_proto::snp::measure::normal_page_digest(chunk),
            PageType::Vmsa => {
                let mut h = openssl::sha::Sha384::new();
                h.update(&chunk[..VMSA_TSC_FIELDS.start]);
                h.update(&[0u8; 16]);
                h.update(&chunk[VMSA_TSC_FIELDS.end..]);
                h.finish()
            }
            PageType::Zero => {
                chunk.fill(0);
                [0; LD_SIZE]
            }
            PageType::Unmeasured => [0; LD_SIZE],
            PageType::Secrets => {
                let sp = SecretsPage::new(sh.cfg.cpuid1_eax(), g.gosvw, *g.vmpck);
                chunk.copy_from_slice(&sp.to_bytes());
                [0; LD_SIZE]
            }
            PageType::Cpuid => {
                if let Some(fixed) = check_cpuid_page(chunk) {
                    // Written back in plaintext, digest not extended (notes §1.3).
                    chunk.copy_from_slice(&fixed);
                    return Err(Status::InvalidParam);
                }
                [0; LD_SIZE]
            }
        };
        ld.extend(t, gpa, contents, u.vmpl_perms);
    }
    for i in 0..size / PAGE_4K {
        let a = spa + i * PAGE_4K;
        let mut e = p.rmp.entry(a);
        e.validated = true;
        e.immutable = false;
        e.vmsa = t == PageType::Vmsa;
        e.vmpl_perms = u.vmpl_perms;
        p.rmp.set(a, e);
    }
    guest_mut(p, gctx)?.ld = ld;
    Ok(())
}

/// SNP_LAUNCH_FINISH: MBZ → platform INIT → GCTX → guest LAUNCH (INVALID_GUEST_STATE) →
/// activated (INACTIVE) → the ID block / ID auth checks (BAD_MEASUREMENT, POLICY_FAILURE,
/// INVALID_PARAM, BAD_SIGNATURE).
fn core_launch_finish(
    p: &mut PlatformInner,
    gctx: u64,
    f: &SnpLaunchFinish<'_>,
) -> std::result::Result<(), Status> {
    // MBZ: an ID auth or AUTH_KEY_EN without an ID block.
    if f.id_block.is_none() && (f.id_auth.is_some() || f.auth_key_en) {
        return Err(Status::InvalidParam);
    }
    let g = guest_of(p, gctx)?;
    if g.state != SnpGuestState::Launch {
        return Err(Status::InvalidGuestState);
    }
    if g.asid == 0 {
        return Err(Status::Inactive);
    }
    let mut id = None;
    let mut digests = KeyDigests {
        id_key: [0; 48],
        author_key: [0; 48],
    };
    if let Some(block) = f.id_block {
        let block = IdBlock::from_bytes(block).map_err(|_| Status::InvalidParam)?;
        let auth = f.id_auth.ok_or(Status::InvalidParam)?;
        let auth = IdAuth::from_bytes(auth).map_err(|_| Status::InvalidParam)?;
        let ld = g.ld.digest();
        digests = auth
            .check_launch_finish(&block, &ld, g.policy, f.auth_key_en)
            .map_err(|e| Status::from_u32(e.status()).unwrap_or(Status::InvalidParam))?;
        id = Some(block);
    }
    let g = guest_mut(p, gctx)?;
    g.id = id;
    g.digests = digests;
    g.author_key_en = f.auth_key_en;
    g.vcek_dis = f.vcek_dis;
    g.host_data = f.host_data;
    g.state = SnpGuestState::Running;
    Ok(())
}

fn core_guest_status(p: &PlatformInner, gctx: u64) -> std::result::Result<SnpGuestStatus, Status> {
    let g = guest_of(p, gctx)?;
    Ok(SnpGuestStatus {
        policy: g.policy,
        asid: g.asid,
        state: g.state,
        vcek_dis: g.vcek_dis,
    })
}

/// SNP_DECOMMISSION (legal in every guest state): the context is freed (keys dropped, zeroized),
/// its page goes CONTEXT → FIRMWARE, its ASID is free again.
fn core_decommission(p: &mut PlatformInner, gctx: u64) -> std::result::Result<(), Status> {
    need_ctx(p, gctx)?;
    p.guests.remove(&gctx);
    let mut e = p.rmp.entry(gctx);
    e.vmsa = false;
    p.rmp.set(gctx, e);
    Ok(())
}

fn core_page_reclaim(
    p: &mut PlatformInner,
    spa: u64,
    page_2m: bool,
) -> std::result::Result<(), Status> {
    need_init(p)?;
    let size = if page_2m { PAGE_2M } else { PAGE_4K };
    if !spa.is_multiple_of(size) || spa >= super::rmp::RMP_END {
        return Err(Status::InvalidAddress);
    }
    let e = p.rmp.entry(spa);
    if e.assigned && e.page_2m != page_2m {
        return Err(Status::InvalidPageSize);
    }
    if !matches!(p.rmp.state(spa), PageState::Firmware | PageState::PreGuest) {
        return Err(Status::InvalidPageState);
    }
    for i in 0..size / PAGE_4K {
        let a = spa + i * PAGE_4K;
        let e = p.rmp.entry(a);
        p.rmp.set(
            a,
            RmpEntry {
                assigned: true,
                page_2m: e.page_2m,
                ..RmpEntry::default()
            },
        );
    }
    Ok(())
}

/// SNP_DBG_DECRYPT / SNP_DBG_ENCRYPT gate (ours; the notes give no check order): platform
/// INIT and a live context, the guest launched (LAUNCH or RUNNING, else INVALID_GUEST_STATE),
/// the policy's DEBUG bit (POLICY_FAILURE).
fn core_dbg_gate(p: &PlatformInner, gctx: u64) -> std::result::Result<u32, Status> {
    let g = guest_of(p, gctx)?;
    if g.state == SnpGuestState::Init {
        return Err(Status::InvalidGuestState);
    }
    if !g.policy.debug_allowed() {
        return Err(Status::PolicyFailure);
    }
    Ok(g.asid)
}

/// SNP_GUEST_REQUEST on a request page `req` with the response written to `resp` (both one
/// 4 KiB page, INVALID_PAGE_SIZE otherwise). Returns the response message length.
fn core_guest_request(
    sh: &Shared,
    p: &mut PlatformInner,
    gctx: u64,
    req: &[u8],
    resp: &mut [u8],
) -> std::result::Result<usize, Status> {
    if req.len() != PAGE_SIZE || resp.len() != PAGE_SIZE {
        return Err(Status::InvalidPageSize);
    }
    let g = guest_of(p, gctx)?;
    if g.state != SnpGuestState::Running {
        return Err(Status::InvalidGuestState);
    }
    let hdr =
        msg::MsgHeader::from_bytes(&req[..msg::HEADER_SIZE]).map_err(|_| Status::InvalidParam)?;
    let idx = usize::from(hdr.vmpck);
    let count = *g.seqno.get(idx).ok_or(Status::InvalidParam)?;
    if count >= u64::MAX - 1 || hdr.seqno != count + 1 {
        return Err(Status::AeadOflow);
    }
    let key = Zeroizing::new(g.vmpck[idx]);
    // The GCM-failure status is not externally checkable (notes §8 item 4).
    let (h, pt) = msg::open(&key, req).map_err(|_| Status::InvalidParam)?;
    if !matches!(h.msg_type, 3 | 5) || h.msg_version != 1 {
        return Err(Status::Unsupported);
    }
    let payload = if h.msg_type == 5 {
        let rsp = match ReportReq::from_bytes(&pt) {
            Ok(r) => report(sh, p, gctx, &r, h.vmpck).map_err(|_| Status::HwerrorPlatform)?,
            Err(_) => ReportRsp {
                status: Status::InvalidParam.code(),
                report: None,
            },
        };
        Zeroizing::new(rsp.to_bytes().map_err(|_| Status::HwerrorPlatform)?)
    } else {
        let rsp = match KeyReq::from_bytes(&pt) {
            Ok(r) => {
                let g = guest_of(p, gctx)?;
                derive_key(p, g, &r, h.vmpck).map_err(|_| Status::HwerrorPlatform)?
            }
            Err(_) => KeyRsp {
                status: Status::InvalidParam.code(),
                derived_key: Zeroizing::new([0; 32]),
            },
        };
        rsp.to_bytes()
    };
    let out = msg::seal(&key, count + 2, h.msg_type + 1, 1, h.vmpck, &payload)
        .map_err(|_| Status::HwerrorPlatform)?;
    resp.fill(0);
    resp[..out.len()].copy_from_slice(&out);
    guest_mut(p, gctx)?.seqno[idx] = count + 2;
    Ok(out.len())
}

// ---------------- the trait path (what KVM does around each command) ----------------

impl SoftSnpGuest {
    /// The sPA of the context page (the guest's name in the sPA API and the raw interface).
    pub fn gctx_spa(&self) -> u64 {
        self.gctx
    }

    fn run<T>(
        &self,
        cmd: &'static str,
        f: impl FnOnce(&Shared, &mut PlatformInner, u64) -> std::result::Result<T, Status>,
    ) -> Result<T> {
        let mut p = self.platform.lock();
        if self.released {
            need_init(&p).map_err(|s| st(cmd, s))?;
            return Err(st(cmd, Status::InvalidGuest));
        }
        f(&self.platform.sh, &mut p, self.gctx).map_err(|s| st(cmd, s))
    }

    /// The launch digest so far (zeros for a context that is gone).
    pub fn launch_digest(&self) -> [u8; LD_SIZE] {
        let p = self.platform.lock();
        p.guests
            .get(&self.gctx)
            .map_or([0; LD_SIZE], |g| g.ld.digest())
    }

    /// SNP_DBG_DECRYPT of one 4 KiB page: `src` is the guest page as the host holds it,
    /// `dst` receives its plaintext. SNP_DBG_ENCRYPT is [`Self::snp_dbg_encrypt`].
    pub fn snp_dbg_decrypt(&self, src: &[u8], dst: &mut [u8]) -> Result<()> {
        self.dbg("SNP_DBG_DECRYPT", src, dst)
    }

    /// SNP_DBG_ENCRYPT of one 4 KiB page: `src` plaintext, `dst` the guest page.
    pub fn snp_dbg_encrypt(&self, src: &[u8], dst: &mut [u8]) -> Result<()> {
        self.dbg("SNP_DBG_ENCRYPT", src, dst)
    }

    /// The DBG_* checks: both buffers one 4 KiB page (INVALID_PARAM), then
    /// [`core_dbg_gate`]. Guest pages are plaintext in the model (see the module notes), so
    /// the transform itself is a copy; the gate is what is modelled.
    fn dbg(&self, cmd: &'static str, src: &[u8], dst: &mut [u8]) -> Result<()> {
        if src.len() != PAGE_SIZE || dst.len() != PAGE_SIZE {
            return Err(st(cmd, Status::InvalidParam));
        }
        self.run(cmd, |_, p, gctx| core_dbg_gate(p, gctx))?;
        dst.copy_from_slice(src);
        Ok(())
    }

    /// What KVM does at VM teardown: DECOMMISSION (if the context is still live), PAGE_RECLAIM
    /// and RMPUPDATE of the context page, RMPUPDATE of every launched page back to the host.
    fn release(&mut self, p: &mut PlatformInner) {
        if self.released {
            return;
        }
        self.released = true;
        if p.guests.contains_key(&self.gctx) {
            p.guests.remove(&self.gctx);
            let mut e = p.rmp.entry(self.gctx);
            e.vmsa = false;
            p.rmp.set(self.gctx, e);
        }
        for (spa, big) in self
            .pages
            .drain(..)
            .chain(std::iter::once((self.gctx, false)))
        {
            let e = p.rmp.entry(spa);
            if e.assigned && e.immutable {
                let _ = core_page_reclaim(p, spa, big);
            }
            let _ = p.rmp.rmpupdate(
                spa,
                &RmpUpdate {
                    page_2m: big,
                    ..RmpUpdate::hypervisor()
                },
            );
        }
    }
}

impl Drop for SoftSnpGuest {
    fn drop(&mut self) {
        let platform = self.platform.clone();
        let mut p = platform.lock();
        self.release(&mut p);
    }
}

impl SnpGuest for SoftSnpGuest {
    fn snp_launch_start(&mut self, ls: &SnpLaunchStart) -> Result<()> {
        self.run("SNP_LAUNCH_START", |sh, p, gctx| {
            // KVM's LAUNCH_START also activates; the ASID is validated before anything
            // changes (see the module notes for the checks it leaves to KVM).
            if ls.flags & !3 == 0 && ls.asid == 0 {
                guest_of(p, gctx)?;
                return Err(Status::InvalidAsid);
            }
            core_launch_start(sh, p, gctx, ls)?;
            guest_mut(p, gctx)?.asid = ls.asid;
            Ok(())
        })
    }

    fn snp_launch_update(&mut self, u: &SnpLaunchUpdate, page: &mut [u8]) -> Result<()> {
        const C: &str = "SNP_LAUNCH_UPDATE";
        let platform = self.platform.clone();
        let mut p = platform.lock();
        if self.released {
            need_init(&p).map_err(|s| st(C, s))?;
            return Err(st(C, Status::InvalidGuest));
        }
        // KVM's own checks before it touches the RMP.
        let g = guest_of(&p, self.gctx).map_err(|s| st(C, s))?;
        let size = if u.page_size_2m { PAGE_2M } else { PAGE_4K };
        if page.len() as u64 != size {
            return Err(st(C, Status::InvalidPageSize));
        }
        if !u.gpa.is_multiple_of(size) || u.gpa > 0x000F_FFFF_FFFF_F000 {
            return Err(st(C, Status::InvalidAddress));
        }
        let t = PageType::from_u8(u.page_type).map_err(|_| st(C, Status::InvalidParam))?;
        if u.page_size_2m && matches!(t, PageType::Vmsa | PageType::Secrets | PageType::Cpuid) {
            return Err(st(C, Status::InvalidPageSize));
        }
        if g.state != SnpGuestState::Launch {
            return Err(st(C, Status::InvalidGuestState));
        }
        let asid = g.asid;
        // RMPUPDATE a fresh page to PRE_GUEST at the GPA, then LAUNCH_UPDATE it.
        let next = p.next_spa;
        let spa = alloc_spa(&mut p, size).ok_or(st(C, Status::ResourceLimit))?;
        if let Err(e) = p
            .rmp
            .rmpupdate(spa, &RmpUpdate::pre_guest(asid, u.gpa, u.page_size_2m))
        {
            p.next_spa = next;
            return Err(rmp_err("RMPUPDATE", spa, e));
        }
        match core_launch_update(&self.platform.sh, &mut p, self.gctx, spa, u, page) {
            Ok(()) => {
                self.pages.push((spa, u.page_size_2m));
                Ok(())
            }
            Err(s) => {
                // As KVM: reclaim the page and give it back; the refusal leaves no trace.
                let _ = core_page_reclaim(&mut p, spa, u.page_size_2m);
                let _ = p.rmp.rmpupdate(
                    spa,
                    &RmpUpdate {
                        page_2m: u.page_size_2m,
                        ..RmpUpdate::hypervisor()
                    },
                );
                p.next_spa = next;
                Err(st(C, s))
            }
        }
    }

    fn snp_launch_finish(&mut self, f: &SnpLaunchFinish<'_>) -> Result<()> {
        self.run("SNP_LAUNCH_FINISH", |_, p, gctx| {
            core_launch_finish(p, gctx, f)
        })
    }

    fn snp_guest_status(&self) -> Result<SnpGuestStatus> {
        self.run("SNP_GUEST_STATUS", |_, p, gctx| core_guest_status(p, gctx))
    }

    fn snp_guest_request(&mut self, req: &[u8], resp: &mut [u8]) -> Result<usize> {
        self.run("SNP_GUEST_REQUEST", |sh, p, gctx| {
            core_guest_request(sh, p, gctx, req, resp)
        })
    }

    fn snp_decommission(&mut self) -> Result<()> {
        const C: &str = "SNP_DECOMMISSION";
        let platform = self.platform.clone();
        let mut p = platform.lock();
        if self.released {
            need_init(&p).map_err(|s| st(C, s))?;
            return Err(st(C, Status::InvalidGuest));
        }
        need_ctx(&p, self.gctx).map_err(|s| st(C, s))?;
        self.release(&mut p);
        Ok(())
    }
}
/// CPUID page layout (Linux `struct snp_cpuid_table`; not in the notes' tables): `u32 count,
/// u32 rsvd, u64 rsvd`, then 64 entries of 0x30 bytes `{u32 eax_in, u32 ecx_in, u64 xcr0_in,
/// u64 xss_in, u32 eax, ebx, ecx, edx, u64 rsvd}`.
const CPUID_MAX: usize = 64;
const CPUID_ENTRY: usize = 0x30;
const CPUID_HDR: usize = 0x10;

/// Checks the CPUID table (count ≤ 64, reserved fields zero, bytes after the table zero).
/// Returns the corrected page (count clamped, reserved fields cleared) when it is bad. The
/// leaf-by-leaf sanitising against the CPU is not modelled (notes §8 item 3).
fn check_cpuid_page(page: &[u8]) -> Option<Vec<u8>> {
    let count = u32::from_le_bytes([page[0], page[1], page[2], page[3]]) as usize;
    let mut bad = count > CPUID_MAX || page[4..CPUID_HDR].iter().any(|&b| b != 0);
    let n = count.min(CPUID_MAX);
    let mut fixed = vec![0u8; PAGE_SIZE];
    fixed[..4].copy_from_slice(&(n as u32).to_le_bytes());
    for i in 0..n {
        let e = CPUID_HDR + i * CPUID_ENTRY;
        fixed[e..e + 0x28].copy_from_slice(&page[e..e + 0x28]);
        if page[e + 0x28..e + CPUID_ENTRY].iter().any(|&b| b != 0) {
            bad = true;
        }
    }
    let used = CPUID_HDR + n * CPUID_ENTRY;
    if page[used..].iter().any(|&b| b != 0) {
        bad = true;
    }
    bad.then_some(fixed)
}

/// MSG_KEY_REQ (notes §4.2): checks VMPL ≥ the VMPCK index, GUEST_SVN ≤ the ID block's,
/// TCB_VERSION ≤ the committed TCB per component (all INVALID_PARAM), the root key usable
/// (INVALID_KEY: VLEK asked for, none loaded; VCEK_DIS; MASK_CHIP_KEY), then derives
/// `KDF(root, "gmsg-keyreq", MIX)` (SP 800-108 HMAC-SHA256 counter mode, `sev_proto::kdf`).
/// Root: the VCEK seed of the requested TCB (GFS bit 5) or else of the reported TCB, or the
/// guest's VMRK. MIX (our layout; the firmware's is not externally checkable, notes §8.4):
/// VMPL u32 ‖ GFS u64 ‖ HOST_DATA ‖ signer u8 (0 none, 1 ID key, 2 author key) ‖ its key
/// digest ‖ then POLICY, IMAGE_ID, FAMILY_ID, MEASUREMENT, GUEST_SVN, TCB_VERSION, each
/// zero unless its GFS bit is set.
fn derive_key(p: &PlatformInner, g: &GuestCtx, req: &KeyReq, vmpck: u8) -> Result<KeyRsp> {
    let refuse = |s: Status| {
        Ok(KeyRsp {
            status: s.code(),
            derived_key: Zeroizing::new([0; 32]),
        })
    };
    let id = g.id.as_ref();
    if req.vmpl < u32::from(vmpck)
        || req.vmpl > 3
        || req.guest_svn > id.map_or(0, |b| b.guest_svn)
        || !tcb_le(req.tcb_version, p.committed_tcb)
    {
        return refuse(Status::InvalidParam);
    }
    let gfs = req.guest_field_select;
    let root: Zeroizing<Vec<u8>> = if req.root_key_select {
        Zeroizing::new(g.vmrk.to_vec())
    } else {
        if req.key_sel >= 2 || g.vcek_dis || p.mask_chip_key {
            return refuse(Status::InvalidKey);
        }
        let tcb = if gfs & (1 << 5) != 0 {
            req.tcb_version
        } else {
            effective_reported(p)
        };
        Zeroizing::new(p.sticks.derive_older(tcb)?.vcek_seed().to_vec())
    };
    let sel = |bit: u32| gfs & (1 << bit) != 0;
    let (signer, digest) = if g.author_key_en {
        (2u8, g.digests.author_key)
    } else if id.is_some() {
        (1, g.digests.id_key)
    } else {
        (0, [0; 48])
    };
    let mut mix = Zeroizing::new(Vec::with_capacity(256));
    mix.extend_from_slice(&req.vmpl.to_le_bytes());
    mix.extend_from_slice(&gfs.to_le_bytes());
    mix.extend_from_slice(&g.host_data);
    mix.push(signer);
    mix.extend_from_slice(&digest);
    let policy = if sel(0) { g.policy.0 } else { 0 };
    mix.extend_from_slice(&policy.to_le_bytes());
    let image = if sel(1) {
        id.map_or([0; 16], |b| b.image_id)
    } else {
        [0; 16]
    };
    mix.extend_from_slice(&image);
    let family = if sel(2) {
        id.map_or([0; 16], |b| b.family_id)
    } else {
        [0; 16]
    };
    mix.extend_from_slice(&family);
    let m = if sel(3) { g.ld.digest() } else { [0; LD_SIZE] };
    mix.extend_from_slice(&m);
    let svn = if sel(4) { req.guest_svn } else { 0 };
    mix.extend_from_slice(&svn.to_le_bytes());
    let tcb = if sel(5) { req.tcb_version } else { 0 };
    mix.extend_from_slice(&tcb.to_le_bytes());
    let k = sev_proto::kdf::kdf(&root, b"gmsg-keyreq", &mix, 32);
    let mut derived_key = Zeroizing::new([0u8; 32]);
    derived_key.copy_from_slice(&k);
    Ok(KeyRsp {
        status: 0,
        derived_key,
    })
}

fn report(
    sh: &Shared,
    p: &mut PlatformInner,
    gctx: u64,
    req: &ReportReq,
    vmpck: u8,
) -> Result<ReportRsp> {
    let g = p
        .guests
        .get(&gctx)
        .ok_or(st("SNP_GUEST_REQUEST", Status::InvalidGuest))?;
    if req.vmpl < u32::from(vmpck) {
        return Ok(ReportRsp {
            status: Status::InvalidParam.code(),
            report: None,
        });
    }
    // KEY_SEL 0: the VLEK if one is loaded (for the reported TCB), else the VCEK; 1: the
    // VCEK; 2: the VLEK. A missing VLEK, or the VCEK with VCEK_DIS, is INVALID_KEY.
    let reported = effective_reported(p);
    let vlek = p
        .vlek
        .as_ref()
        .filter(|v| v.tcb == reported)
        .map(|v| v.key.clone());
    let use_vlek = match (req.key_sel, &vlek) {
        (0, Some(_)) | (2, Some(_)) => true,
        (0, None) | (1, _) => false,
        _ => {
            return Ok(ReportRsp {
                status: Status::InvalidKey.code(),
                report: None,
            })
        }
    };
    if !use_vlek && g.vcek_dis {
        return Ok(ReportRsp {
            status: Status::InvalidKey.code(),
            report: None,
        });
    }
    let c = &sh.cfg;
    let (current, committed, reported, mask_chip_id, mask_chip_key, key) = {
        let p = &mut *p;
        // SIGNING_KEY 1: the VLEK. MASK_CHIP_KEY: the VCEK is not used; the report goes
        // out unsigned.
        let key = if use_vlek {
            vlek
        } else if p.mask_chip_key {
            None
        } else {
            Some(match &p.vcek_cache {
                Some((t, k)) if *t == reported => k.clone(),
                _ => {
                    let k = PKey::from_ec_key(p.sticks.derive_older(reported)?.vcek_key()?)?;
                    p.vcek_cache = Some((reported, k.clone()));
                    k
                }
            })
        };
        (
            p.current_tcb,
            p.committed_tcb,
            reported,
            p.mask_chip_id,
            p.mask_chip_key,
            key,
        )
    };
    let g = p
        .guests
        .get(&gctx)
        .ok_or(st("SNP_GUEST_REQUEST", Status::InvalidGuest))?;
    let id = g.id.as_ref();
    let ver = FwVersion {
        build: c.build_id,
        minor: c.api_minor,
        major: c.api_major,
    };
    let mut r = AttestationReport {
        version: 3,
        guest_svn: id.map_or(0, |b| b.guest_svn),
        policy: g.policy,
        family_id: id.map_or([0; 16], |b| b.family_id),
        image_id: id.map_or([0; 16], |b| b.image_id),
        vmpl: req.vmpl,
        current_tcb: current,
        platform_info: u64::from(c.smt_enabled),
        key_info: u32::from(g.author_key_en)
            | u32::from(mask_chip_key) << 1
            | if use_vlek {
                1 << 2
            } else if mask_chip_key {
                7 << 2
            } else {
                0
            },
        report_data: req.report_data,
        measurement: g.ld.digest(),
        host_data: g.host_data,
        id_key_digest: g.digests.id_key,
        author_key_digest: g.digests.author_key,
        report_id: g.report_id,
        report_id_ma: [0xFF; 32],
        reported_tcb: reported,
        cpuid: Some(c.fms),
        chip_id: if mask_chip_id { [0; 64] } else { sh.chip_id },
        committed_tcb: committed,
        current_version: ver,
        committed_version: ver,
        launch_tcb: g.launch_tcb,
        ..AttestationReport::default()
    };
    if let Some(key) = key {
        r.sign(&key)
            .map_err(|_| st("SNP_GUEST_REQUEST", Status::HwerrorPlatform))?;
    }
    Ok(ReportRsp {
        status: 0,
        report: Some(r),
    })
}
