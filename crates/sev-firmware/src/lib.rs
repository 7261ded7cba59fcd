//! `sev-firmware`: the AMD Secure Processor's SEV firmware (API 0.24 + SEV-ES) behind two
//! traits, with a faithful software model ([`soft`]) and the Linux hardware backend ([`hw`]).
//!
//! - [`SevPlatform`] is what `/dev/sev` offers (platform status, keys, certificates).
//! - [`SevGuest`] is what `KVM_MEMORY_ENCRYPT_OP` offers one VM (launch, debug, attestation).
//!
//! The soft model answers every command with the status code the firmware would give,
//! checked in the firmware's order; see `soft::fw` for the chosen behaviours.

pub mod engine;
pub mod error;
pub mod hw;
pub mod snp;
pub mod soft;

pub use error::{FwError, Result};
pub use sev_proto::attestation::AttestationReport;
pub use sev_proto::cert::SevCert;
pub use sev_proto::policy::GuestPolicy;
pub use sev_proto::secret::PacketHeader;
pub use sev_proto::session::{LaunchOwner, SessionBlob};
pub use sev_proto::status::Status;
pub use soft::fw::{GuestState, GuestStatus, PlatformState, PlatformStatus};
/// Guest memory the vCPUs may touch concurrently, as the runtime [`SevGuest`] methods take it.
pub use vm_memory::VolatileSlice;

/// The size of one VMSA page (LAUNCH_UPDATE_VMSA).
pub const VMSA_LEN: usize = 4096;

/// One vCPU's VMSA as LAUNCH_UPDATE_VMSA measures it.
pub type Vmsa = [u8; VMSA_LEN];

/// The platform's certificate export (PDH_CERT_EXPORT): the PDH and the chain
/// PEK ‖ OCA ‖ CEK, the CEK unsigned as real parts return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExport {
    /// Platform Diffie-Hellman key, signed by the PEK.
    pub pdh: SevCert,
    /// Platform Endorsement Key, signed by the OCA (and the CEK).
    pub pek: SevCert,
    /// Owner Certificate Authority (self-signed).
    pub oca: SevCert,
    /// Chip Endorsement Key (its ASK signature is added by AMD's KDS, not the firmware).
    pub cek: SevCert,
}

impl CertExport {
    /// Decodes the firmware's two buffers: the PDH and PEK ‖ OCA ‖ CEK. Errors name the
    /// certificate and its field.
    pub fn from_buffers(pdh: &[u8], chain: &[u8]) -> Result<CertExport> {
        let n = SevCert::LEN;
        if chain.len() != 3 * n {
            return Err(FwError::BadReply {
                cmd: "PDH_CERT_EXPORT",
                reason: format!(
                    "certificate chain is {} bytes, expected PEK ‖ OCA ‖ CEK = {} bytes",
                    chain.len(),
                    3 * n
                ),
            });
        }
        let cert = |name: &str, b: &[u8]| {
            SevCert::parse(b).map_err(|e| FwError::BadReply {
                cmd: "PDH_CERT_EXPORT",
                reason: format!("{name}: {e}"),
            })
        };
        Ok(CertExport {
            pdh: cert("PDH", pdh)?,
            pek: cert("PEK", &chain[..n])?,
            oca: cert("OCA", &chain[n..2 * n])?,
            cek: cert("CEK", &chain[2 * n..])?,
        })
    }

    /// PEK ‖ OCA ‖ CEK as the firmware's second buffer holds them.
    pub fn chain_bytes(&self) -> Vec<u8> {
        [&self.pek, &self.oca, &self.cek]
            .iter()
            .flat_map(|c| c.encode())
            .collect()
    }
}

/// What `/dev/sev` offers. Methods follow Linux's semantics: commands that need an
/// initialised platform initialise it for the call when it is UNINIT.
pub trait SevPlatform {
    /// PLATFORM_STATUS.
    fn platform_status(&self) -> Result<PlatformStatus>;
    /// PEK_GEN: new OCA, PEK and PDH (platform must not be WORKING).
    fn pek_gen(&self) -> Result<()>;
    /// PDH_GEN: new PDH.
    fn pdh_gen(&self) -> Result<()>;
    /// PEK_CSR: the PEK with empty signature slots, for the owner's OCA to sign.
    fn pek_csr(&self) -> Result<SevCert>;
    /// PEK_CERT_IMPORT: take ownership with an OCA-signed PEK and the (self-signed) OCA.
    /// The backends encode both; the firmware checks the signatures.
    fn pek_cert_import(&self, pek: &SevCert, oca: &SevCert) -> Result<()>;
    /// PDH_CERT_EXPORT (the CEK comes back unsigned, as on real parts).
    fn pdh_cert_export(&self) -> Result<CertExport>;
    /// GET_ID: the 64-byte chip id.
    fn get_id(&self) -> Result<Vec<u8>>;
    /// FACTORY_RESET (PLATFORM_RESET): wipes OCA, PEK, PDH and ownership.
    fn factory_reset(&self) -> Result<()>;
    /// The C-bit position guests must use.
    fn cbit_pos(&self) -> Result<u8>;
}

/// What `KVM_MEMORY_ENCRYPT_OP` offers one VM. Guest memory is passed by the VMM as the
/// host mapping of a range plus its guest-physical address, in one of two forms:
///
/// - **Launch time** (`launch_update_data`, `launch_secret`, `register_region`): a plain
///   `&mut [u8]`. These run before LAUNCH_FINISH, while no vCPU runs, so the VMM holds the
///   only access to guest RAM and a Rust reference over it is sound.
/// - **Runtime** (`dbg_decrypt`, `dbg_encrypt`, `host_view`): a [`VolatileSlice`]. These run
///   while vCPUs may read and write the same memory (QMP `pmemsave`/`xp`, debugger access),
///   so no `&[u8]`/`&mut [u8]` may be formed over it: backends copy with volatile accesses
///   (`copy_to`/`copy_from`) or hand the address to the kernel, never dereferencing it in Rust.
pub trait SevGuest {
    /// KVM_SEV_INIT / ES_INIT (or INIT2): make the VM an SEV (or SEV-ES) VM.
    fn init(&mut self, es: bool) -> Result<()>;
    /// LAUNCH_START (+ ACTIVATE, as KVM binds an ASID) with the guest `policy`. `owner`: the
    /// guest owner's GODH certificate and session blob, which open the secret channel
    /// (`None`: a launch without owner secrets). `share_handle` 0 = new key, else the handle
    /// of the guest whose key to share. Returns the firmware handle.
    fn launch_start(
        &mut self,
        policy: GuestPolicy,
        owner: Option<&LaunchOwner>,
        share_handle: u32,
    ) -> Result<u32>;
    /// LAUNCH_UPDATE_DATA over `mem`, which is guest memory at `gpa`. Launch time.
    fn launch_update_data(&mut self, gpa: u64, mem: &mut [u8]) -> Result<()>;
    /// LAUNCH_UPDATE_VMSA of every vCPU (SEV-ES), once per launch: `vmsas[i]` is vCPU `i`'s
    /// VMSA, and each enters the measurement in that order. One call for all vCPUs because
    /// that is the one form both backends can honour:
    ///
    /// - the firmware (the soft backend) takes one VMSA per command: it measures and
    ///   encrypts `vmsas` one by one;
    /// - KVM's `KVM_SEV_LAUNCH_UPDATE_VMSA` (the hw backend) is one ioctl per VM that does
    ///   every vCPU, building each VMSA from the vCPU's registers (`sev_es_sync_vmsa`): the
    ///   bytes are not passed, so the caller must have set each vCPU's registers to what its
    ///   VMSA says. The hw backend checks that `vmsas` has one entry per vCPU created through
    ///   [`create_vcpu`](Self::create_vcpu), issues the ioctl once, and refuses a second
    ///   call (KVM would: the VMSAs are encrypted by then).
    ///
    /// An empty `vmsas` is refused: an SEV-ES guest has at least one vCPU.
    fn launch_update_vmsas(&mut self, vmsas: &[Vmsa]) -> Result<()>;
    /// LAUNCH_MEASURE: MEASURE[32] ‖ MNONCE[16].
    fn launch_measure(&mut self) -> Result<[u8; 48]>;
    /// LAUNCH_SECRET: `hdr` is the packet header (flags, IV, MAC), `ct` the ciphertext,
    /// `dest` the guest memory at `gpa` receiving the plaintext (same length as `ct`).
    /// Launch time.
    fn launch_secret(
        &mut self,
        hdr: &PacketHeader,
        ct: &[u8],
        gpa: u64,
        dest: &mut [u8],
    ) -> Result<()>;
    /// LAUNCH_FINISH.
    fn launch_finish(&mut self) -> Result<()>;
    /// GUEST_STATUS.
    fn guest_status(&mut self) -> Result<GuestStatus>;
    /// DBG_DECRYPT of guest memory `mem` at `gpa` into `out` (same length). Runtime:
    /// `mem` may change under the call (the guest runs); `out` gets one snapshot of it.
    fn dbg_decrypt(&mut self, gpa: u64, mem: VolatileSlice<'_>, out: &mut [u8]) -> Result<()>;
    /// DBG_ENCRYPT of `data` into guest memory `mem` at `gpa` (same length). Runtime: the
    /// write races with the guest as a device's DMA would.
    fn dbg_encrypt(&mut self, gpa: u64, data: &[u8], mem: VolatileSlice<'_>) -> Result<()>;
    /// ATTESTATION: the PEK-signed report for the owner's nonce `mnonce` (decoded from the
    /// firmware's 0xD0 bytes; [`AttestationReport::to_bytes`] gives them back).
    fn attestation_report(&mut self, mnonce: [u8; 16]) -> Result<AttestationReport>;
    /// KVM_MEMORY_ENCRYPT_REG_REGION (pins memory; the soft backend only records it).
    /// Launch time (before the first vCPU runs).
    fn register_region(&mut self, gpa: u64, mem: &mut [u8]) -> Result<()>;
    /// What the host sees of guest memory `mem` at `gpa`: ciphertext where private.
    /// Runtime: a snapshot copied out of `mem` with volatile reads.
    fn host_view(&self, gpa: u64, mem: VolatileSlice<'_>) -> Result<Vec<u8>>;
    /// Teardown: DEACTIVATE + DECOMMISSION.
    fn decommission(&mut self) -> Result<()>;
    /// KVM_CREATE_VCPU `id` on this guest's VM, for a backend whose kernel must see vCPU
    /// creation through it (the hw backend, so that its port sees every ioctl of the launch).
    /// `Ok(None)` (the default): the VMM creates the vCPU itself. Only after [`init`](Self::init):
    /// Linux refuses SEV init once a vCPU exists.
    fn create_vcpu(&mut self, id: u64) -> Result<Option<std::os::fd::OwnedFd>> {
        let _ = id;
        Ok(None)
    }
}
