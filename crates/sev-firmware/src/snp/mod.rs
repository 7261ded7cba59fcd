//! The SEV-SNP side of the firmware: [`SnpPlatform`] (the platform commands `/dev/sev` offers)
//! and [`SnpGuest`] (one guest context, as KVM drives it), beside the legacy
//! [`SevPlatform`](crate::SevPlatform) / [`SevGuest`](crate::SevGuest). The structures are the
//! firmware's (`shared/reference/snp-spec-notes.md` §1.3); the byte formats of reports, policy,
//! PAGE_INFO, ID blocks and guest messages come from `sev_proto::snp`.
//!
//! [`soft`] is the software model; [`vcek`] its identity (fused seed, hash-stick VCEK
//! derivation, CHIP_ID); [`ca`] the soft ARK/ASK and VCEK certificates.

pub mod ca;
pub mod raw;
pub mod rmp;
pub mod soft;
pub mod vcek;
pub mod vlek;

/// Loads the platform file `path` (at most `max` bytes) with `parse`, or, if it does not
/// exist, writes the bytes `create` makes (atomically, mode 0600) and parses what is then on
/// disk: no lock is taken, so concurrent creators converge on the write that landed last.
fn load_or_create<T>(
    path: &std::path::Path,
    what: &str,
    max: u64,
    create: impl FnOnce() -> crate::Result<zeroize::Zeroizing<Vec<u8>>>,
    parse: impl Fn(&std::path::Path, &[u8]) -> crate::Result<T>,
) -> crate::Result<T> {
    match sevm_files::read_bounded(path, what, max) {
        Ok(bytes) => parse(path, &bytes),
        Err(e) if e.is_not_found() => {
            let bytes = create()?;
            sevm_files::write_atomic(path, what, &bytes, 0o600)?;
            drop(bytes);
            let bytes = sevm_files::read_bounded(path, what, max)?;
            parse(path, &bytes)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod raw_tests;
#[cfg(test)]
mod tests;

use crate::Result;
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::snp::FormatError;

/// SNP platform state (SNP_PLATFORM_STATUS byte 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnpPlatformState {
    /// After reset or SNP_SHUTDOWN.
    Uninit = 0,
    /// After SNP_INIT / SNP_INIT_EX.
    Init = 1,
}

/// SNP guest state (SNP_GUEST_STATUS byte 0x0C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnpGuestState {
    /// After GCTX_CREATE.
    Init = 0,
    /// After SNP_LAUNCH_START.
    Launch = 1,
    /// After SNP_LAUNCH_FINISH.
    Running = 2,
}

/// SNP_PLATFORM_STATUS output (0x20 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnpPlatformStatus {
    /// API major version.
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// Platform state.
    pub state: SnpPlatformState,
    /// Byte 3 bit 0: the RMP is initialised.
    pub is_rmp_init: bool,
    /// Firmware build id.
    pub build_id: u32,
    /// Byte 8 bit 0: MASK_CHIP_ID.
    pub mask_chip_id: bool,
    /// Byte 8 bit 1: MASK_CHIP_KEY.
    pub mask_chip_key: bool,
    /// Byte 8 bit 2: a VLEK is loaded.
    pub vlek_en: bool,
    /// Byte 8 bit 3: SNP_FEATURE_INFO is supported.
    pub feature_info: bool,
    /// Number of SNP guests launched.
    pub guest_count: u32,
    /// The installed (running) TCB_VERSION.
    pub current_tcb: u64,
    /// The reported TCB_VERSION.
    pub reported_tcb: u64,
}

/// Size of SNP_PLATFORM_STATUS output.
pub const PLATFORM_STATUS_SIZE: usize = 0x20;

impl SnpPlatformStatus {
    /// Encodes the 32-byte layout of the notes §1.3.
    pub fn to_bytes(&self) -> [u8; PLATFORM_STATUS_SIZE] {
        let mut b = [0u8; PLATFORM_STATUS_SIZE];
        b[0] = self.api_major;
        b[1] = self.api_minor;
        b[2] = self.state as u8;
        b[3] = u8::from(self.is_rmp_init);
        b[4..8].copy_from_slice(&self.build_id.to_le_bytes());
        let flags = u32::from(self.mask_chip_id)
            | u32::from(self.mask_chip_key) << 1
            | u32::from(self.vlek_en) << 2
            | u32::from(self.feature_info) << 3;
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[0x0C..0x10].copy_from_slice(&self.guest_count.to_le_bytes());
        b[0x10..0x18].copy_from_slice(&self.current_tcb.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&self.reported_tcb.to_le_bytes());
        b
    }

    /// Decodes the 32-byte layout (unknown state values and unknown flag bits are errors).
    pub fn from_bytes(b: &[u8]) -> std::result::Result<Self, FormatError> {
        const S: &str = "SNP_PLATFORM_STATUS";
        let b: &[u8; PLATFORM_STATUS_SIZE] = b.try_into().map_err(|_| FormatError::Length {
            structure: S,
            expected: PLATFORM_STATUS_SIZE,
            got: b.len(),
        })?;
        let field = |f: &'static str, r: String| FormatError::Field {
            structure: S,
            field: f,
            reason: r,
        };
        let state = match b[2] {
            0 => SnpPlatformState::Uninit,
            1 => SnpPlatformState::Init,
            v => return Err(field("STATE", format!("{v} is not 0 (UNINIT) or 1 (INIT)"))),
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let flags = u32_at(8);
        if flags & !0xF != 0 {
            return Err(field(
                "FLAGS",
                format!("unknown bits 0x{:X} set", flags & !0xF),
            ));
        }
        Ok(SnpPlatformStatus {
            api_major: b[0],
            api_minor: b[1],
            state,
            is_rmp_init: b[3] & 1 != 0,
            build_id: u32_at(4),
            mask_chip_id: flags & 1 != 0,
            mask_chip_key: flags & 2 != 0,
            vlek_en: flags & 4 != 0,
            feature_info: flags & 8 != 0,
            guest_count: u32_at(0x0C),
            current_tcb: u64_at(0x10),
            reported_tcb: u64_at(0x18),
        })
    }
}

/// SNP_GUEST_STATUS output (0x20 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnpGuestStatus {
    /// The launch policy (0 before LAUNCH_START).
    pub policy: SnpPolicy,
    /// The ASID the guest is activated with (0 if none).
    pub asid: u32,
    /// Guest state.
    pub state: SnpGuestState,
    /// VCEK_DIS as given at LAUNCH_FINISH.
    pub vcek_dis: bool,
}

impl SnpGuestStatus {
    /// Encodes the 0x20-byte layout of the notes §1.3.
    pub fn to_bytes(&self) -> [u8; 0x20] {
        let mut b = [0u8; 0x20];
        b[0..8].copy_from_slice(&self.policy.0.to_le_bytes());
        b[8..12].copy_from_slice(&self.asid.to_le_bytes());
        b[0x0C] = self.state as u8;
        b[0x10] = u8::from(self.vcek_dis);
        b
    }
}

/// SNP_LAUNCH_START parameters (the firmware buffer without GCTX_PADDR, which the
/// [`SnpGuest`] object stands for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnpLaunchStart {
    /// Guest policy.
    pub policy: SnpPolicy,
    /// MA_GCTX_PADDR (0 without a migration agent).
    pub ma_gctx_paddr: u64,
    /// Word 0x18: bit0 MA_EN, bit1 IMI_EN, rest MBZ.
    pub flags: u32,
    /// DESIRED_TSC_FREQ (MHz).
    pub desired_tsc_freq: u32,
    /// GOSVW, copied to the secrets page.
    pub gosvw: [u8; 16],
    /// The ASID KVM activates the guest with right after LAUNCH_START (SNP_ACTIVATE).
    pub asid: u32,
}

impl SnpLaunchStart {
    /// Parameters for `policy` with everything else zero and ASID 1.
    pub fn new(policy: SnpPolicy) -> Self {
        SnpLaunchStart {
            policy,
            ma_gctx_paddr: 0,
            flags: 0,
            desired_tsc_freq: 0,
            gosvw: [0; 16],
            asid: 1,
        }
    }
}

/// SNP_LAUNCH_UPDATE parameters for one page. The soft model has no RMP yet: `gpa` stands for
/// the GPA the hypervisor recorded in the page's RMP entry (for KVM's VMSAs,
/// `sev_proto::snp::measure::VMSA_GPA`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnpLaunchUpdate {
    /// PAGE_TYPE (raw, so that reserved values reach the firmware's check).
    pub page_type: u8,
    /// PAGE_SIZE: false 4 KiB, true 2 MiB.
    pub page_size_2m: bool,
    /// IMI_PAGE.
    pub imi_page: bool,
    /// The GPA from the page's RMP entry.
    pub gpa: u64,
    /// VMPL1..3 permissions.
    pub vmpl_perms: [u8; 3],
}

impl SnpLaunchUpdate {
    /// A 4 KiB page of `page_type` at `gpa`, no VMPL permissions.
    pub fn page(page_type: sev_proto::snp::measure::PageType, gpa: u64) -> Self {
        SnpLaunchUpdate {
            page_type: page_type as u8,
            page_size_2m: false,
            imi_page: false,
            gpa,
            vmpl_perms: [0; 3],
        }
    }
}

/// SNP_LAUNCH_FINISH parameters.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnpLaunchFinish<'a> {
    /// The 0x60-byte ID block (ID_BLOCK_EN when present).
    pub id_block: Option<&'a [u8]>,
    /// The 0x1000-byte ID authentication structure (with `id_block`).
    pub id_auth: Option<&'a [u8]>,
    /// AUTH_KEY_EN.
    pub auth_key_en: bool,
    /// VCEK_DIS.
    pub vcek_dis: bool,
    /// HOST_DATA.
    pub host_data: [u8; 32],
}

/// The SNP platform commands.
pub trait SnpPlatform {
    /// SNP_INIT: UNINIT → INIT. Requires the legacy SEV platform to be UNINIT too.
    fn snp_init(&self) -> Result<()>;
    /// SNP_SHUTDOWN: INIT → UNINIT.
    fn snp_shutdown(&self) -> Result<()>;
    /// SNP_PLATFORM_STATUS.
    fn snp_platform_status(&self) -> Result<SnpPlatformStatus>;
    /// SNP_CONFIG (Linux: SNP_SET_CONFIG): reported TCB (0 = the committed one) and the
    /// MASK_CHIP_ID / MASK_CHIP_KEY flags.
    fn snp_config(&self, c: &soft::SnpConfig) -> Result<()>;
    /// SNP_COMMIT.
    fn snp_commit(&self) -> Result<()>;
    /// SNP_VLEK_LOAD of a 0x1B0-byte wrapped VLEK blob ([`vlek`]).
    fn snp_vlek_load(&self, wrapped: &[u8]) -> Result<()>;
}

/// The SNP commands on one guest context (created by SNP_GCTX_CREATE).
pub trait SnpGuest {
    /// SNP_LAUNCH_START (+ SNP_ACTIVATE with [`SnpLaunchStart::asid`], as KVM does).
    fn snp_launch_start(&mut self, p: &SnpLaunchStart) -> Result<()>;
    /// SNP_LAUNCH_UPDATE of `page` (4 KiB, or 2 MiB with `page_size_2m`), in place: ZERO pages
    /// are zeroed, the SECRETS page is written by the firmware, a bad CPUID page is written
    /// back corrected.
    fn snp_launch_update(&mut self, u: &SnpLaunchUpdate, page: &mut [u8]) -> Result<()>;
    /// SNP_LAUNCH_FINISH.
    fn snp_launch_finish(&mut self, f: &SnpLaunchFinish<'_>) -> Result<()>;
    /// SNP_GUEST_STATUS.
    fn snp_guest_status(&self) -> Result<SnpGuestStatus>;
    /// SNP_GUEST_REQUEST: `req` is the request page (header ‖ ciphertext), the response
    /// message is written to the start of `resp` (a 4 KiB page); returns its length.
    fn snp_guest_request(&mut self, req: &[u8], resp: &mut [u8]) -> Result<usize>;
    /// SNP_DECOMMISSION.
    fn snp_decommission(&mut self) -> Result<()>;
}
