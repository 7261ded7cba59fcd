//! The soft SEV firmware: a software model of the AMD Secure Processor for machines
//! without SEV (identity persisted in a platform directory, see [`store`]).
//!
//! [`SoftPlatform`] implements [`SevPlatform`](crate::SevPlatform) and the raw command
//! interface [`SoftPlatform::execute`]; [`SoftGuest`] implements
//! [`SevGuest`](crate::SevGuest). All of them call the one state machine in [`fw`].
//!
//! The model never claims to be AMD: its root key is named [`store::SOFT_ARK_NAME`].

pub mod fw;
pub mod raw;
pub mod store;

#[cfg(test)]
mod leak_tests;

use crate::error::{FwError, Result};
use crate::{
    AttestationReport, CertExport, GuestPolicy, GuestStatus, LaunchOwner, PacketHeader,
    PlatformState, PlatformStatus, SevGuest, SevPlatform, Vmsa, VolatileSlice,
};
use fw::{Fw, LaunchStartArgs};
use sev_proto::cert::SevCert;
use sev_proto::status::Status;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use store::Store;

/// Default C-bit position of a new soft platform.
pub const DEFAULT_CBIT_POS: u8 = 47;

pub(crate) struct Inner {
    pub(crate) fw: Fw,
    pub(crate) mem: raw::PaMemory,
}

/// The raw-firmware view of a soft platform (same object; `execute` lives on it).
pub type SoftFirmware = SoftPlatform;

/// A soft SEV platform backed by a directory.
#[derive(Clone)]
pub struct SoftPlatform {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
}

/// The full certificate chain a guest owner needs, as AMD's KDS plus PDH_CERT_EXPORT give it.
#[derive(Debug, Clone)]
pub struct FullChain {
    /// PDH.
    pub pdh: Vec<u8>,
    /// PEK.
    pub pek: Vec<u8>,
    /// OCA.
    pub oca: Vec<u8>,
    /// CEK signed by the soft ASK.
    pub cek: Vec<u8>,
    /// Soft ASK (AMD CA format).
    pub ask: Vec<u8>,
    /// Soft ARK (AMD CA format) — "sevm soft ARK — NOT AMD".
    pub ark: Vec<u8>,
}

impl FullChain {
    /// The sevctl/virtee file layout PDH ‖ PEK ‖ OCA ‖ CEK ‖ ASK ‖ ARK.
    pub fn to_bytes(&self) -> Vec<u8> {
        [
            &self.pdh, &self.pek, &self.oca, &self.cek, &self.ask, &self.ark,
        ]
        .iter()
        .flat_map(|v| v.iter().copied())
        .collect()
    }
}

/// The command's status as an error, carrying the internal cause (e.g. a failed state-file
/// write) the firmware recorded for it on this thread, if any.
fn st(cmd: &'static str) -> impl Fn(Status) -> FwError {
    move |status| match fw::take_cause() {
        Some(cause) if status == Status::HwerrorPlatform => FwError::StatusCause {
            cmd,
            status,
            cause: Box::new(cause),
        },
        _ => FwError::st(cmd, status),
    }
}

impl SoftPlatform {
    /// Open the platform in `dir`, creating its identity (C-bit 47) if the directory has none.
    pub fn open(dir: &Path) -> Result<SoftPlatform> {
        Self::open_with(dir, DEFAULT_CBIT_POS)
    }

    /// Open, creating a new identity with `cbit_pos` if none exists (an existing identity
    /// keeps its own C-bit position).
    pub fn open_with(dir: &Path, cbit_pos: u8) -> Result<SoftPlatform> {
        let store = Store::new(dir)?;
        let id = store.load_or_create(cbit_pos)?;
        Ok(SoftPlatform {
            inner: Arc::new(Mutex::new(Inner {
                fw: Fw::new(store, id),
                mem: raw::PaMemory::default(),
            })),
            dir: dir.to_path_buf(),
        })
    }

    /// Attaches the SNP side of the same (modelled) chip: from now on legacy INIT (raw or
    /// [`SevPlatform`]) requires SNP INIT first — the trait path does SNP_INIT itself when
    /// needed, as Linux does — and SNP_INIT is refused while legacy SEV is INIT.
    pub fn attach_snp(&self, snp: &crate::snp::soft::SoftSnpPlatform) {
        let mut g = self.lock();
        snp.set_legacy_init(g.fw.state != PlatformState::Uninit);
        g.fw.snp = Some(snp.clone());
    }

    /// The platform directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic in the model; its state is still consistent
        // because every command validates before mutating.
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // No stale cause from an earlier command on this thread.
        let _ = fw::take_cause();
        g
    }

    /// Firmware-level access (no Linux auto-INIT): run `f` on the state machine.
    pub fn with_fw<T>(&self, f: impl FnOnce(&mut Fw) -> T) -> T {
        f(&mut self.lock().fw)
    }

    /// Raw command interface: run firmware command `cmd_id` on the command buffer `buf`
    /// (the spec's layouts; addresses point into the model's PA space, see
    /// [`write_pa`](Self::write_pa)). Returns the firmware status.
    pub fn execute(&self, cmd_id: u32, buf: &mut [u8]) -> Status {
        let mut g = self.lock();
        let Inner { fw, mem } = &mut *g;
        match raw::execute(fw, mem, cmd_id, buf) {
            Ok(()) => Status::Success,
            Err(s) => s,
        }
    }

    /// Write bytes into the model's PA space (as the host would, unencrypted).
    pub fn write_pa(&self, pa: u64, data: &[u8]) -> Result<()> {
        self.lock()
            .mem
            .write(pa, data)
            .map_err(|_| FwError::InvalidArgument("PA range"))
    }

    /// Read bytes of the model's PA space (what the host sees: ciphertext where private).
    pub fn read_pa(&self, pa: u64, len: usize) -> Result<Vec<u8>> {
        self.lock()
            .mem
            .read(pa, len as u64)
            .map_err(|_| FwError::InvalidArgument("PA range"))
    }

    /// The full chain with the CEK signed by the soft ASK and the soft ASK/ARK, as a guest
    /// owner would assemble it from PDH_CERT_EXPORT and the KDS.
    pub fn export_chain(&self) -> Result<FullChain> {
        let exp = self.pdh_cert_export()?;
        let g = self.lock();
        let id = &g.fw.id;
        Ok(FullChain {
            pdh: exp.pdh.encode(),
            pek: exp.pek.encode(),
            oca: exp.oca.encode(),
            cek: id.cek.cert.to_vec(),
            ask: id.ask_cert.clone(),
            ark: id.ark_cert.clone(),
        })
    }

    /// A new (not yet initialised) guest context on this platform.
    pub fn new_guest(&self) -> SoftGuest {
        SoftGuest {
            plat: self.clone(),
            handle: 0,
            launch_id: 0,
            es: false,
            initialised: false,
            pa_base: 0,
            private: Vec::new(),
        }
    }

    /// Linux's `sev_move_to_init_state`: INIT (with ES) when UNINIT; returns whether
    /// a SHUTDOWN is due afterwards.
    fn linux_init(fw: &mut Fw, cmd: &'static str) -> Result<bool> {
        if fw.state == PlatformState::Uninit {
            // Linux initialises SNP before legacy SEV when the chip has SNP.
            if let Some(s) = fw.snp.clone() {
                use crate::snp::SnpPlatform;
                if !s.legacy_init_allowed() {
                    s.snp_init()?;
                }
            }
            fw.init(true).map_err(st(cmd))?;
            fw.df_flush().map_err(st(cmd))?;
            return Ok(true);
        }
        Ok(false)
    }

    fn with_init<T>(
        &self,
        cmd: &'static str,
        f: impl FnOnce(&mut Fw) -> std::result::Result<T, Status>,
    ) -> Result<T> {
        let mut g = self.lock();
        let fw = &mut g.fw;
        let shut = Self::linux_init(fw, cmd)?;
        let r = f(fw).map_err(st(cmd));
        if shut {
            let _ = fw.shutdown();
        }
        r
    }
}

impl SevPlatform for SoftPlatform {
    fn platform_status(&self) -> Result<PlatformStatus> {
        self.lock()
            .fw
            .platform_status()
            .map_err(st("PLATFORM_STATUS"))
    }

    fn pek_gen(&self) -> Result<()> {
        self.with_init("PEK_GEN", |fw| fw.pek_gen())
    }

    fn pdh_gen(&self) -> Result<()> {
        self.with_init("PDH_GEN", |fw| fw.pdh_gen())
    }

    fn pek_csr(&self) -> Result<SevCert> {
        let csr = self.with_init("PEK_CSR", |fw| fw.pek_csr(&mut (SevCert::LEN as u32)))?;
        SevCert::parse(&csr).map_err(|e| FwError::BadReply {
            cmd: "PEK_CSR",
            reason: e.to_string(),
        })
    }

    fn pek_cert_import(&self, pek: &SevCert, oca: &SevCert) -> Result<()> {
        let (pek, oca) = (pek.encode(), oca.encode());
        self.with_init("PEK_CERT_IMPORT", |fw| fw.pek_cert_import(&pek, &oca))
    }

    fn pdh_cert_export(&self) -> Result<CertExport> {
        let (pdh, chain) = self.with_init("PDH_CERT_EXPORT", |fw| {
            let (mut a, mut b) = (SevCert::LEN as u32, 3 * SevCert::LEN as u32);
            fw.pdh_cert_export(&mut a, &mut b)
        })?;
        CertExport::from_buffers(&pdh, &chain)
    }

    fn get_id(&self) -> Result<Vec<u8>> {
        self.lock()
            .fw
            .get_id(&mut 64)
            .map(|i| i.to_vec())
            .map_err(st("GET_ID"))
    }

    fn factory_reset(&self) -> Result<()> {
        let mut g = self.lock();
        let fw = &mut g.fw;
        match fw.state {
            // Linux answers EBUSY without calling the firmware.
            PlatformState::Working => {
                Err(FwError::st("FACTORY_RESET", Status::InvalidPlatformState))
            }
            PlatformState::Init => {
                fw.shutdown().map_err(st("SHUTDOWN"))?;
                fw.platform_reset().map_err(st("FACTORY_RESET"))
            }
            PlatformState::Uninit => fw.platform_reset().map_err(st("FACTORY_RESET")),
        }
    }

    fn cbit_pos(&self) -> Result<u8> {
        Ok(self.lock().fw.id.cbit_pos)
    }
}

/// The whole 16-byte blocks covering `len` bytes at `gpa`, as KVM's `sev_dbg_crypt` hands
/// them to the firmware (`__sev_dbg_decrypt` rounds the start down and the size up;
/// `__sev_dbg_encrypt_user` does the same around a read-modify-write). KVM refuses a zero
/// length (`zero`, its EINVAL) and a range that wraps before calling the firmware.
fn kvm_dbg_blocks(gpa: u64, len: usize, zero: &'static str) -> Result<(u64, u32)> {
    if len == 0 {
        return Err(FwError::InvalidArgument(zero));
    }
    let start = gpa & !15;
    let end = gpa
        .checked_add(len as u64)
        .and_then(|e| e.checked_next_multiple_of(16))
        .ok_or(FwError::InvalidArgument(
            "DBG range wraps the address space (KVM: EINVAL)",
        ))?;
    let wide =
        u32::try_from(end - start).map_err(|_| FwError::InvalidArgument("DBG range over 4 GiB"))?;
    Ok((start, wide))
}

/// One VM's SEV context on a [`SoftPlatform`].
pub struct SoftGuest {
    plat: SoftPlatform,
    handle: u32,
    /// Which LAUNCH_START this guest owns, so a handle freed by SHUTDOWN and reused by
    /// another guest is never touched (INVALID_GUEST instead).
    launch_id: u64,
    es: bool,
    initialised: bool,
    pa_base: u64,
    /// Private (encrypted) GPA ranges, [start, end), 16-byte granular.
    private: Vec<(u64, u64)>,
}

impl SoftGuest {
    /// The firmware handle (0 before LAUNCH_START).
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Set the model system-PA base of this guest's memory (PA = base + GPA), e.g. to
    /// model the hypervisor moving pages: ciphertext then no longer matches.
    pub fn set_pa_base(&mut self, base: u64) {
        self.pa_base = base;
    }

    fn mark_private(&mut self, gpa: u64, len: u64) {
        self.private.push((gpa, gpa + len));
        self.private.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.private.len());
        for (s, e) in self.private.drain(..) {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.private = merged;
    }

    fn is_private(&self, gpa: u64) -> bool {
        self.private.iter().any(|&(s, e)| gpa >= s && gpa < e)
    }

    fn owns(&self, fw: &Fw) -> bool {
        self.handle != 0 && fw.launch_id(self.handle) == Some(self.launch_id)
    }

    fn need_handle(&self, cmd: &'static str) -> Result<u32> {
        if !self.owns(&self.plat.lock().fw) {
            return Err(FwError::st(cmd, Status::InvalidGuest));
        }
        Ok(self.handle)
    }
}

impl SevGuest for SoftGuest {
    fn init(&mut self, es: bool) -> Result<()> {
        let mut g = self.plat.lock();
        SoftPlatform::linux_init(&mut g.fw, "INIT")?;
        if es && !g.fw.es {
            return Err(FwError::st("INIT", Status::Unsupported));
        }
        self.es = es;
        self.initialised = true;
        Ok(())
    }

    fn launch_start(
        &mut self,
        policy: GuestPolicy,
        owner: Option<&LaunchOwner>,
        share_handle: u32,
    ) -> Result<u32> {
        if !self.initialised {
            return Err(FwError::InvalidArgument("LAUNCH_START before KVM_SEV_INIT"));
        }
        if self.es != policy.es() {
            return Err(FwError::InvalidArgument(
                "policy ES bit does not match the VM type",
            ));
        }
        // The firmware takes the owner's blobs as bytes (KVM copies them from user memory).
        let godh = owner.map(|o| o.godh.encode());
        let session = owner.map(|o| o.session.to_bytes());
        let mut g = self.plat.lock();
        let fw = &mut g.fw;
        let h = fw
            .launch_start(&LaunchStartArgs {
                handle: share_handle,
                policy: policy.bits(),
                godh: godh.as_deref(),
                session: session.as_ref().map(|s| &s[..]),
            })
            .map_err(st("LAUNCH_START"))?;
        // KVM's sev_bind_asid.
        let bound = fw.free_asid(self.es).and_then(|a| fw.activate(h, a));
        if let Err(s) = bound {
            let _ = fw.decommission(h);
            return Err(FwError::st("ACTIVATE", s));
        }
        self.handle = h;
        self.launch_id = fw.launch_id(h).unwrap_or(0);
        Ok(h)
    }

    fn launch_update_data(&mut self, gpa: u64, mem: &mut [u8]) -> Result<()> {
        let h = self.need_handle("LAUNCH_UPDATE_DATA")?;
        let len = u32::try_from(mem.len())
            .map_err(|_| FwError::InvalidArgument("LAUNCH_UPDATE_DATA region over 4 GiB"))?;
        {
            let mut g = self.plat.lock();
            let guest =
                g.fw.launch_update_check(h, gpa, len, false)
                    .map_err(st("LAUNCH_UPDATE_DATA"))?;
            Fw::measure_data(guest, mem).map_err(st("LAUNCH_UPDATE_DATA"))?;
        }
        self.mark_private(gpa, mem.len() as u64);
        Ok(())
    }

    fn launch_update_vmsas(&mut self, vmsas: &[Vmsa]) -> Result<()> {
        if vmsas.is_empty() {
            return Err(FwError::InvalidArgument(
                "LAUNCH_UPDATE_VMSA with no VMSA (an SEV-ES guest has at least one vCPU)",
            ));
        }
        let h = self.need_handle("LAUNCH_UPDATE_VMSA")?;
        let mut g = self.plat.lock();
        // The firmware's command takes one VMSA; KVM would issue it per vCPU, in order.
        for vmsa in vmsas {
            // VMSAs live outside guest RAM; the model uses a fixed 16-aligned PA for the check.
            let guest =
                g.fw.launch_update_check(h, 0, crate::VMSA_LEN as u32, true)
                    .map_err(st("LAUNCH_UPDATE_VMSA"))?;
            Fw::measure_data(guest, vmsa).map_err(st("LAUNCH_UPDATE_VMSA"))?;
        }
        Ok(())
    }

    fn launch_measure(&mut self) -> Result<[u8; 48]> {
        let h = self.need_handle("LAUNCH_MEASURE")?;
        self.plat
            .lock()
            .fw
            .launch_measure(h, &mut 48)
            .map_err(st("LAUNCH_MEASURE"))
    }

    fn launch_secret(
        &mut self,
        hdr: &PacketHeader,
        ct: &[u8],
        gpa: u64,
        dest: &mut [u8],
    ) -> Result<()> {
        let h = self.need_handle("LAUNCH_SECRET")?;
        if dest.len() != ct.len() || ct.len() > u32::MAX as usize {
            return Err(FwError::InvalidArgument(
                "LAUNCH_SECRET destination length differs from ciphertext length",
            ));
        }
        let pt = self
            .plat
            .lock()
            .fw
            .launch_secret(h, &hdr.to_bytes(), gpa, ct.len() as u32, ct)
            .map_err(st("LAUNCH_SECRET"))?;
        dest.copy_from_slice(&pt);
        self.mark_private(gpa, ct.len() as u64);
        Ok(())
    }

    fn launch_finish(&mut self) -> Result<()> {
        let h = self.need_handle("LAUNCH_FINISH")?;
        self.plat
            .lock()
            .fw
            .launch_finish(h)
            .map_err(st("LAUNCH_FINISH"))
    }

    fn guest_status(&mut self) -> Result<GuestStatus> {
        let h = self.need_handle("GUEST_STATUS")?;
        self.plat
            .lock()
            .fw
            .guest_status(h)
            .map_err(st("GUEST_STATUS"))
    }

    fn dbg_decrypt(&mut self, gpa: u64, mem: VolatileSlice<'_>, out: &mut [u8]) -> Result<()> {
        let h = self.need_handle("DBG_DECRYPT")?;
        if mem.len() != out.len() {
            return Err(FwError::InvalidArgument(
                "DBG_DECRYPT buffers differ in length",
            ));
        }
        // KVM bounces an unaligned range through whole 16-byte blocks: the firmware sees them.
        let (start, len) = kvm_dbg_blocks(gpa, mem.len(), "DBG_DECRYPT of 0 bytes (KVM: EINVAL)")?;
        self.plat
            .lock()
            .fw
            .dbg_check(h, start, 0, len)
            .map_err(st("DBG_DECRYPT"))?;
        // Guest RAM holds plaintext in the soft model (the guest runs unencrypted on KVM):
        // a volatile copy out of the (possibly running) guest's memory is the decryption.
        mem.copy_to(out);
        Ok(())
    }

    fn dbg_encrypt(&mut self, gpa: u64, data: &[u8], mem: VolatileSlice<'_>) -> Result<()> {
        let h = self.need_handle("DBG_ENCRYPT")?;
        if mem.len() != data.len() {
            return Err(FwError::InvalidArgument(
                "DBG_ENCRYPT buffers differ in length",
            ));
        }
        // KVM's read-modify-write: an unaligned destination or length is widened to whole
        // 16-byte blocks (DBG_DECRYPT of the blocks, the new bytes spliced in, DBG_ENCRYPT of
        // the blocks), so the firmware sees aligned blocks and re-encrypts all of them.
        let (start, len) = kvm_dbg_blocks(gpa, mem.len(), "DBG_ENCRYPT of 0 bytes (KVM: EINVAL)")?;
        {
            let mut g = self.plat.lock();
            if (start, len as usize) != (gpa, data.len()) {
                g.fw.dbg_check(h, start, start, len)
                    .map_err(st("DBG_DECRYPT"))?;
            }
            g.fw.dbg_check(h, start, start, len)
                .map_err(st("DBG_ENCRYPT"))?;
        }
        // Plaintext in, plaintext stored (see dbg_decrypt), with volatile writes: the
        // neighbours in the widened blocks keep their bytes, as after KVM's read-modify-write.
        mem.copy_from(data);
        self.mark_private(start, len as u64);
        Ok(())
    }

    fn attestation_report(&mut self, mnonce: [u8; 16]) -> Result<AttestationReport> {
        let h = self.need_handle("ATTESTATION")?;
        let raw = self
            .plat
            .lock()
            .fw
            .attestation(h, &mnonce, &mut (fw::REPORT_LEN as u32))
            .map_err(st("ATTESTATION"))?;
        AttestationReport::from_bytes(&raw).map_err(|e| FwError::BadReply {
            cmd: "ATTESTATION",
            reason: e.to_string(),
        })
    }

    fn register_region(&mut self, _gpa: u64, _mem: &mut [u8]) -> Result<()> {
        Ok(())
    }

    fn host_view(&self, gpa: u64, mem: VolatileSlice<'_>) -> Result<Vec<u8>> {
        if !gpa.is_multiple_of(16) || !mem.len().is_multiple_of(16) {
            return Err(FwError::InvalidArgument(
                "host_view needs a 16-byte aligned range",
            ));
        }
        // Snapshot the guest's bytes with volatile reads; the engine runs on the copy.
        let mut out = vec![0u8; mem.len()];
        mem.copy_to(&mut out);
        if self.handle == 0 {
            return Ok(out);
        }
        let key = {
            let g = self.plat.lock();
            match g.fw.guest(self.handle) {
                Ok(gu) if self.owns(&g.fw) => gu.key.clone(),
                _ => return Ok(out),
            }
        };
        for (i, blk) in out.chunks_mut(16).enumerate() {
            let a = gpa + 16 * i as u64;
            if self.is_private(a) {
                key.encrypt(self.pa_base + a, blk)?;
            }
        }
        Ok(out)
    }

    fn decommission(&mut self) -> Result<()> {
        if self.handle == 0 {
            return Ok(());
        }
        let mut g = self.plat.lock();
        let fw = &mut g.fw;
        if !self.owns(fw) {
            self.handle = 0;
            self.private.clear();
            return Ok(());
        }
        if fw.guest(self.handle).map(|x| x.asid != 0).unwrap_or(false) {
            fw.deactivate(self.handle).map_err(st("DEACTIVATE"))?;
        }
        match fw.decommission(self.handle) {
            Ok(()) | Err(Status::InvalidGuest) | Err(Status::InvalidPlatformState) => {}
            Err(s) => return Err(FwError::st("DECOMMISSION", s)),
        }
        self.handle = 0;
        self.private.clear();
        Ok(())
    }
}

impl Drop for SoftGuest {
    fn drop(&mut self) {
        let _ = self.decommission();
    }
}
