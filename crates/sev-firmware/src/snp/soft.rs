//! The soft SNP firmware: platform state, guest contexts, launch (digest, secrets page, CPUID
//! page checks, ID block), guest status, decommission, MSG_REPORT_REQ guest requests, and the
//! platform configuration: SNP_CONFIG (reported TCB, MASK_CHIP_ID, MASK_CHIP_KEY), SNP_COMMIT
//! and a model of installing a newer firmware, persisted in `snp-config.json`.
//!
//! Every command checks in the firmware's order (`snp-spec-notes.md` §1.3) and changes no
//! state when it refuses. Not modelled yet: the RMP (page states/owners; the caller gives the
//! GPA its RMP entry would hold), encryption of launched pages (pages stay plaintext in the
//! caller's buffer), SNP_INIT_EX options, ACTIVATE as its own command (LAUNCH_START takes the
//! ASID, as KVM's LAUNCH_START does both), migration agents and IMI (MA_EN / IMI_EN refused with
//! UNSUPPORTED), message types other than REPORT and KEY (UNSUPPORTED), VLEK. DBG_DECRYPT/ENCRYPT check
//! their gate (DEBUG policy bit) but, with no page encryption, copy.

use super::vcek::{HashSticks, SnpIdentity};
use super::{
    SnpGuest, SnpGuestState, SnpGuestStatus, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate,
    SnpPlatform, SnpPlatformState, SnpPlatformStatus,
};
use crate::{FwError, Result, Status};
use openssl::pkey::PKey;
use sev_proto::snp::id_block::{IdAuth, IdBlock, KeyDigests};
use sev_proto::snp::measure::{PageType, SnpLaunchDigest, LD_SIZE, PAGE_SIZE, VMSA_TSC_FIELDS};
use sev_proto::snp::msg::{self, KeyReq, KeyRsp, MsgError, ReportReq, ReportRsp};
use sev_proto::snp::policy::{PlatformPolicyView, SnpPolicy, FW_1_55_KNOWN_BITS};
use sev_proto::snp::report::{AttestationReport, Fms, FwVersion};
use sev_proto::snp::secrets::SecretsPage;
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
    /// Incremented by each SNP_INIT: guest contexts of an earlier INIT are gone.
    epoch: u64,
    legacy_init: bool,
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
                    epoch: 0,
                    legacy_init: false,
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
    /// soft platform (`soft::SoftPlatform`) does not call this yet: the caller that owns both
    /// must.
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

    /// SNP_GCTX_CREATE: a new guest context (state INIT). Needs SNP INIT.
    pub fn gctx_create(&self) -> Result<SoftSnpGuest> {
        let p = self.lock();
        if p.state != SnpPlatformState::Init {
            return Err(st("SNP_GCTX_CREATE", Status::InvalidPlatformState));
        }
        Ok(SoftSnpGuest {
            platform: self.clone(),
            epoch: p.epoch,
            decommissioned: false,
            g: GuestCtx {
                state: SnpGuestState::Init,
                policy: SnpPolicy(0),
                asid: 0,
                launch_tcb: p.committed_tcb,
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
            },
        })
    }
}

impl SnpPlatform for SoftSnpPlatform {
    fn snp_init(&self) -> Result<()> {
        let mut p = self.lock();
        if p.state != SnpPlatformState::Uninit || p.legacy_init {
            return Err(st("SNP_INIT", Status::InvalidPlatformState));
        }
        p.state = SnpPlatformState::Init;
        p.epoch += 1;
        p.sticks = self.sh.identity.sticks(p.current_tcb);
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
            vlek_en: false,
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
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedConfig {
    version: u32,
    installed_tcb: u64,
    committed_tcb: u64,
    reported_tcb: u64,
    mask_chip_id: bool,
    mask_chip_key: bool,
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

/// One soft guest context (from [`SoftSnpPlatform::gctx_create`]).
pub struct SoftSnpGuest {
    platform: SoftSnpPlatform,
    epoch: u64,
    decommissioned: bool,
    g: GuestCtx,
}

impl std::fmt::Debug for SoftSnpGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftSnpGuest")
            .field("state", &self.g.state)
            .field("decommissioned", &self.decommissioned)
            .finish_non_exhaustive()
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

impl SoftSnpGuest {
    /// The common checks: platform INIT, then the GCTX page still a live context.
    fn check_ctx(&self, cmd: &'static str) -> Result<()> {
        let p = self.platform.lock();
        if p.state != SnpPlatformState::Init {
            return Err(st(cmd, Status::InvalidPlatformState));
        }
        if self.decommissioned || self.epoch != p.epoch {
            return Err(st(cmd, Status::InvalidGuest));
        }
        Ok(())
    }

    /// The launch digest so far.
    pub fn launch_digest(&self) -> [u8; LD_SIZE] {
        self.g.ld.digest()
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

    /// The DBG_* checks: both buffers one 4 KiB page (INVALID_PARAM), platform INIT and a live
    /// context, the guest launched (LAUNCH or RUNNING, else INVALID_GUEST_STATE: before
    /// LAUNCH_START there is no policy or key), then the policy's DEBUG bit (19) set, else
    /// POLICY_FAILURE. The soft model keeps guest pages in plaintext (see the module notes),
    /// so the transform itself is a copy; the gate is what is modelled.
    fn dbg(&self, cmd: &'static str, src: &[u8], dst: &mut [u8]) -> Result<()> {
        if src.len() != PAGE_SIZE || dst.len() != PAGE_SIZE {
            return Err(st(cmd, Status::InvalidParam));
        }
        self.check_ctx(cmd)?;
        if self.g.state == SnpGuestState::Init {
            return Err(st(cmd, Status::InvalidGuestState));
        }
        if !self.g.policy.debug_allowed() {
            return Err(st(cmd, Status::PolicyFailure));
        }
        dst.copy_from_slice(src);
        Ok(())
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
    fn derive_key(&self, req: &KeyReq, vmpck: u8) -> Result<KeyRsp> {
        let refuse = |s: Status| {
            Ok(KeyRsp {
                status: s.code(),
                derived_key: Zeroizing::new([0; 32]),
            })
        };
        let id = self.g.id.as_ref();
        let p = self.platform.lock();
        if req.vmpl < u32::from(vmpck)
            || req.vmpl > 3
            || req.guest_svn > id.map_or(0, |b| b.guest_svn)
            || !tcb_le(req.tcb_version, p.committed_tcb)
        {
            return refuse(Status::InvalidParam);
        }
        let gfs = req.guest_field_select;
        let root: Zeroizing<Vec<u8>> = if req.root_key_select {
            Zeroizing::new(self.g.vmrk.to_vec())
        } else {
            if req.key_sel >= 2 || self.g.vcek_dis || p.mask_chip_key {
                return refuse(Status::InvalidKey);
            }
            let tcb = if gfs & (1 << 5) != 0 {
                req.tcb_version
            } else {
                effective_reported(&p)
            };
            Zeroizing::new(p.sticks.derive_older(tcb)?.vcek_seed().to_vec())
        };
        drop(p);
        let sel = |bit: u32| gfs & (1 << bit) != 0;
        let (signer, digest) = if self.g.author_key_en {
            (2u8, self.g.digests.author_key)
        } else if id.is_some() {
            (1, self.g.digests.id_key)
        } else {
            (0, [0; 48])
        };
        let mut mix = Zeroizing::new(Vec::with_capacity(256));
        mix.extend_from_slice(&req.vmpl.to_le_bytes());
        mix.extend_from_slice(&gfs.to_le_bytes());
        mix.extend_from_slice(&self.g.host_data);
        mix.push(signer);
        mix.extend_from_slice(&digest);
        let policy = if sel(0) { self.g.policy.0 } else { 0 };
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
        let m = if sel(3) {
            self.g.ld.digest()
        } else {
            [0; LD_SIZE]
        };
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

    fn report(&self, req: &ReportReq, vmpck: u8) -> Result<ReportRsp> {
        if req.vmpl < u32::from(vmpck) {
            return Ok(ReportRsp {
                status: Status::InvalidParam.code(),
                report: None,
            });
        }
        // KEY_SEL 0 (VLEK if loaded, else VCEK) and 1 (VCEK) sign with the VCEK; no VLEK is
        // ever loaded here, so 2 is INVALID_KEY; so is any VCEK use with VCEK_DIS.
        if req.key_sel >= 2 || self.g.vcek_dis {
            return Ok(ReportRsp {
                status: Status::InvalidKey.code(),
                report: None,
            });
        }
        let sh = &self.platform.sh;
        let c = &sh.cfg;
        let (current, committed, reported, mask_chip_id, mask_chip_key, key) = {
            let mut p = self.platform.lock();
            let reported = effective_reported(&p);
            // MASK_CHIP_KEY: the VCEK is not used; the report goes out unsigned.
            let key = if p.mask_chip_key {
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
        let id = self.g.id.as_ref();
        let ver = FwVersion {
            build: c.build_id,
            minor: c.api_minor,
            major: c.api_major,
        };
        let mut r = AttestationReport {
            version: 3,
            guest_svn: id.map_or(0, |b| b.guest_svn),
            policy: self.g.policy,
            family_id: id.map_or([0; 16], |b| b.family_id),
            image_id: id.map_or([0; 16], |b| b.image_id),
            vmpl: req.vmpl,
            current_tcb: current,
            platform_info: u64::from(c.smt_enabled),
            key_info: u32::from(self.g.author_key_en)
                | u32::from(mask_chip_key) << 1
                | if mask_chip_key { 7 << 2 } else { 0 },
            report_data: req.report_data,
            measurement: self.g.ld.digest(),
            host_data: self.g.host_data,
            id_key_digest: self.g.digests.id_key,
            author_key_digest: self.g.digests.author_key,
            report_id: self.g.report_id,
            report_id_ma: [0xFF; 32],
            reported_tcb: reported,
            cpuid: Some(c.fms),
            chip_id: if mask_chip_id { [0; 64] } else { sh.chip_id },
            committed_tcb: committed,
            current_version: ver,
            committed_version: ver,
            launch_tcb: self.g.launch_tcb,
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
}

impl SnpGuest for SoftSnpGuest {
    fn snp_launch_start(&mut self, p: &SnpLaunchStart) -> Result<()> {
        const C: &str = "SNP_LAUNCH_START";
        if p.flags & !3 != 0 {
            return Err(st(C, Status::InvalidParam));
        }
        self.check_ctx(C)?;
        if self.g.state != SnpGuestState::Init {
            return Err(st(C, Status::InvalidGuestState));
        }
        let cfg = &self.platform.sh.cfg;
        let view = PlatformPolicyView {
            api_major: cfg.api_major,
            api_minor: cfg.api_minor,
            smt_enabled: cfg.smt_enabled,
            known_bits: FW_1_55_KNOWN_BITS,
        };
        if p.policy.check_launch(&view).is_err() {
            return Err(st(C, Status::PolicyFailure));
        }
        if p.flags != 0 || p.ma_gctx_paddr != 0 {
            // Migration agents and IMI are not modelled.
            return Err(st(C, Status::Unsupported));
        }
        if p.asid == 0 {
            return Err(st(C, Status::InvalidAsid));
        }
        let mut vmpck = Zeroizing::new([[0u8; 32]; 4]);
        for k in vmpck.iter_mut() {
            openssl::rand::rand_bytes(k)?;
        }
        let mut vmrk = Zeroizing::new([0u8; 32]);
        openssl::rand::rand_bytes(&mut vmrk[..])?;
        let mut report_id = [0u8; 32];
        openssl::rand::rand_bytes(&mut report_id)?;
        let mut plat = self.platform.lock();
        plat.guest_count = plat.guest_count.wrapping_add(1);
        drop(plat);
        self.g.vmpck = vmpck;
        self.g.vmrk = vmrk;
        self.g.report_id = report_id;
        self.g.policy = p.policy;
        self.g.gosvw = p.gosvw;
        self.g.asid = p.asid;
        self.g.ld = SnpLaunchDigest::new();
        self.g.state = SnpGuestState::Launch;
        Ok(())
    }

    fn snp_launch_update(&mut self, u: &SnpLaunchUpdate, page: &mut [u8]) -> Result<()> {
        const C: &str = "SNP_LAUNCH_UPDATE";
        self.check_ctx(C)?;
        let size = if u.page_size_2m { 0x20_0000 } else { PAGE_SIZE };
        if page.len() != size {
            return Err(st(C, Status::InvalidPageSize));
        }
        if !u.gpa.is_multiple_of(size as u64) || u.gpa > 0x000F_FFFF_FFFF_F000 {
            return Err(st(C, Status::InvalidAddress));
        }
        let t = PageType::from_u8(u.page_type).map_err(|_| st(C, Status::InvalidParam))?;
        if u.page_size_2m && matches!(t, PageType::Vmsa | PageType::Secrets | PageType::Cpuid) {
            return Err(st(C, Status::InvalidPageSize));
        }
        if self.g.state != SnpGuestState::Launch {
            return Err(st(C, Status::InvalidGuestState));
        }
        if u.imi_page {
            // IMI_PAGE without IMI_EN at LAUNCH_START (IMI is never enabled here).
            return Err(st(C, Status::InvalidParam));
        }
        let mut ld = self.g.ld.clone();
        for (i, chunk) in page.chunks_exact_mut(PAGE_SIZE).enumerate() {
            let gpa = u.gpa + (i * PAGE_SIZE) as u64;
            let contents = match t {
                PageType::Normal => openssl::sha::sha384(chunk),
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
                    let sp = SecretsPage::new(
                        self.platform.sh.cfg.cpuid1_eax(),
                        self.g.gosvw,
                        *self.g.vmpck,
                    );
                    chunk.copy_from_slice(&sp.to_bytes());
                    [0; LD_SIZE]
                }
                PageType::Cpuid => {
                    if let Some(fixed) = check_cpuid_page(chunk) {
                        // Written back in plaintext, digest not extended (notes §1.3).
                        chunk.copy_from_slice(&fixed);
                        return Err(st(C, Status::InvalidParam));
                    }
                    [0; LD_SIZE]
                }
            };
            ld.extend(t, gpa, contents, u.vmpl_perms);
        }
        self.g.ld = ld;
        Ok(())
    }

    fn snp_launch_finish(&mut self, f: &SnpLaunchFinish<'_>) -> Result<()> {
        const C: &str = "SNP_LAUNCH_FINISH";
        // MBZ: an ID auth or AUTH_KEY_EN without an ID block.
        if f.id_block.is_none() && (f.id_auth.is_some() || f.auth_key_en) {
            return Err(st(C, Status::InvalidParam));
        }
        self.check_ctx(C)?;
        if self.g.state != SnpGuestState::Launch {
            return Err(st(C, Status::InvalidGuestState));
        }
        let mut id = None;
        let mut digests = KeyDigests {
            id_key: [0; 48],
            author_key: [0; 48],
        };
        if let Some(block) = f.id_block {
            let block = IdBlock::from_bytes(block).map_err(|_| st(C, Status::InvalidParam))?;
            let auth = f.id_auth.ok_or(st(C, Status::InvalidParam))?;
            let auth = IdAuth::from_bytes(auth).map_err(|_| st(C, Status::InvalidParam))?;
            let ld = self.g.ld.digest();
            digests = auth
                .check_launch_finish(&block, &ld, self.g.policy, f.auth_key_en)
                .map_err(|e| {
                    st(
                        C,
                        Status::from_u32(e.status()).unwrap_or(Status::InvalidParam),
                    )
                })?;
            id = Some(block);
        }
        self.g.id = id;
        self.g.digests = digests;
        self.g.author_key_en = f.auth_key_en;
        self.g.vcek_dis = f.vcek_dis;
        self.g.host_data = f.host_data;
        self.g.state = SnpGuestState::Running;
        Ok(())
    }

    fn snp_guest_status(&self) -> Result<SnpGuestStatus> {
        self.check_ctx("SNP_GUEST_STATUS")?;
        Ok(SnpGuestStatus {
            policy: self.g.policy,
            asid: self.g.asid,
            state: self.g.state,
            vcek_dis: self.g.vcek_dis,
        })
    }

    fn snp_guest_request(&mut self, req: &[u8], resp: &mut [u8]) -> Result<usize> {
        const C: &str = "SNP_GUEST_REQUEST";
        if req.len() != PAGE_SIZE || resp.len() != PAGE_SIZE {
            return Err(st(C, Status::InvalidPageSize));
        }
        self.check_ctx(C)?;
        if self.g.state != SnpGuestState::Running {
            return Err(st(C, Status::InvalidGuestState));
        }
        let hdr = msg::MsgHeader::from_bytes(&req[..msg::HEADER_SIZE])
            .map_err(|_| st(C, Status::InvalidParam))?;
        let idx = usize::from(hdr.vmpck);
        let count = *self.g.seqno.get(idx).ok_or(st(C, Status::InvalidParam))?;
        if count >= u64::MAX - 1 || hdr.seqno != count + 1 {
            return Err(st(C, Status::AeadOflow));
        }
        let key = Zeroizing::new(self.g.vmpck[idx]);
        let (h, pt) = msg::open(&key, req).map_err(|e| match e {
            // The GCM-failure status is not externally checkable (notes §8 item 4).
            MsgError::AuthFailed | MsgError::Format(_) => st(C, Status::InvalidParam),
            MsgError::OpenSsl(e) => FwError::Crypto(e),
        })?;
        if !matches!(h.msg_type, 3 | 5) || h.msg_version != 1 {
            return Err(st(C, Status::Unsupported));
        }
        let payload = if h.msg_type == 5 {
            let rsp = match ReportReq::from_bytes(&pt) {
                Ok(r) => self.report(&r, h.vmpck)?,
                Err(_) => ReportRsp {
                    status: Status::InvalidParam.code(),
                    report: None,
                },
            };
            Zeroizing::new(rsp.to_bytes().map_err(|_| st(C, Status::HwerrorPlatform))?)
        } else {
            let rsp = match KeyReq::from_bytes(&pt) {
                Ok(r) => self.derive_key(&r, h.vmpck)?,
                Err(_) => KeyRsp {
                    status: Status::InvalidParam.code(),
                    derived_key: Zeroizing::new([0; 32]),
                },
            };
            rsp.to_bytes()
        };
        let out = msg::seal(&key, count + 2, h.msg_type + 1, 1, h.vmpck, &payload)
            .map_err(|_| st(C, Status::HwerrorPlatform))?;
        resp.fill(0);
        resp[..out.len()].copy_from_slice(&out);
        self.g.seqno[idx] = count + 2;
        Ok(out.len())
    }

    fn snp_decommission(&mut self) -> Result<()> {
        self.check_ctx("SNP_DECOMMISSION")?;
        self.decommissioned = true;
        self.g.vmpck = Zeroizing::new([[0; 32]; 4]);
        self.g.vmrk = Zeroizing::new([0; 32]);
        Ok(())
    }
}
