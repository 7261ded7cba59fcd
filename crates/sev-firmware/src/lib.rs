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
pub use sev_proto::status::Status;
pub use soft::fw::{GuestState, GuestStatus, PlatformState, PlatformStatus};
/// Guest memory the vCPUs may touch concurrently, as the runtime [`SevGuest`] methods take it.
pub use vm_memory::VolatileSlice;

/// The platform's certificate export: PDH and the chain PEK ‖ OCA ‖ CEK (CEK unsigned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExport {
    /// PDH certificate (2084 bytes).
    pub pdh: Vec<u8>,
    /// PEK ‖ OCA ‖ CEK (3 × 2084 bytes).
    pub chain: Vec<u8>,
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
    /// PEK_CSR: the PEK body with empty signature slots.
    fn pek_csr(&self) -> Result<Vec<u8>>;
    /// PEK_CERT_IMPORT: take ownership with an OCA-signed PEK.
    fn pek_cert_import(&self, pek: &[u8], oca: &[u8]) -> Result<()>;
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
    /// LAUNCH_START (+ ACTIVATE, as KVM binds an ASID). `share_handle` 0 = new key.
    /// Returns the firmware handle.
    fn launch_start(
        &mut self,
        policy: u32,
        godh: Option<&[u8]>,
        session: Option<&[u8]>,
        share_handle: u32,
    ) -> Result<u32>;
    /// LAUNCH_UPDATE_DATA over `mem`, which is guest memory at `gpa`. Launch time.
    fn launch_update_data(&mut self, gpa: u64, mem: &mut [u8]) -> Result<()>;
    /// LAUNCH_UPDATE_VMSA for one vCPU's 4096-byte VMSA (the hw backend lets KVM build every
    /// vCPU's VMSA from its registers and encrypt it, and ignores the bytes).
    fn launch_update_vmsa(&mut self, vmsa: &mut [u8]) -> Result<()>;
    /// LAUNCH_MEASURE: MEASURE[32] ‖ MNONCE[16].
    fn launch_measure(&mut self) -> Result<[u8; 48]>;
    /// LAUNCH_SECRET: `hdr` is the 52-byte packet header, `ct` the ciphertext, `dest` the
    /// guest memory at `gpa` receiving the plaintext (same length as `ct`). Launch time.
    fn launch_secret(&mut self, hdr: &[u8], ct: &[u8], gpa: u64, dest: &mut [u8]) -> Result<()>;
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
    /// ATTESTATION: the 0xD0-byte PEK-signed report.
    fn attestation_report(&mut self, mnonce: [u8; 16]) -> Result<Vec<u8>>;
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
