//! [`MonitorBackend`] for a real [`crate::Vm`] and its SEV launch ([`LaunchHandle`]).
//!
//! [`start`] binds the QMP socket, starts the server and a watcher thread that pushes SEV
//! launch state changes (`SEV_LAUNCH_STATE`) and guest-initiated stops; [`QmpRuntime::finish`]
//! is called after [`crate::Vm::run`] returns and emits the final SHUTDOWN.
//!
//! Mapping (docs/QMP.md): `status` from [`VmControl::state`] (`prelaunch` until the first
//! `cont` of a VM built with [`crate::VmConfig::start_paused`]); `stop`/`cont`/`system_reset`/
//! `quit` send [`VmControl`] requests and wait (bounded) for the VM to follow; `cont` of a
//! prelaunch SEV guest lets the VM run the launch's `before_run` hook (LAUNCH_FINISH) and start
//! the vCPUs. Memory reads go through [`AccessKind::Debug`] (DBG_DECRYPT) for SEV guests and
//! straight to guest RAM otherwise; virtual reads walk the page tables with the C-bit masked.
//! `system_powerdown`: sevm has no ACPI, so it emits POWERDOWN and then quits like `quit`.

use super::{
    qemu_msg, EventSink, KvmInfo, MonitorBackend, MonitorError, MonitorEvent, QmpServer,
    QmpServerError, RunState, SevCapabilities, SevInfo, SevState,
};
use crate::confidential::{AccessKind, ConfidentialError, LaunchHandle};
use crate::vm::{CpuSnapshot, ExitStatus, RunState as VmState, VmControl};
use crate::{paging, GuestMemoryMmap, Vm};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// How long `stop`/`cont` wait for the VM to reach the requested state.
pub const STATE_WAIT: Duration = Duration::from_secs(5);
/// Longest wait of the event watcher thread between two looks at the SEV launch state (it is
/// woken at once by every VM state change, launch hook and reset, and by QMP commands that
/// change the launch).
const WATCH_PERIOD: Duration = Duration::from_secs(5);

/// Produces the `query-sev-capabilities` answer (PDH_CERT_EXPORT, GET_ID of the platform).
pub type CapsSource = Box<dyn Fn() -> Result<SevCapabilities, MonitorError> + Send + Sync>;

/// A capabilities source over an SEV platform (soft model or `/dev/sev`).
pub fn caps_from_platform(
    platform: Box<dyn sev_firmware::SevPlatform + Send + Sync>,
    cbitpos: u8,
    reduced_phys_bits: u8,
) -> CapsSource {
    Box::new(move || {
        let exp = platform
            .pdh_cert_export()
            .map_err(|e| MonitorError::generic(format!("SEV: PDH_CERT_EXPORT failed: {e}")))?;
        let id = platform
            .get_id()
            .map_err(|e| MonitorError::generic(format!("SEV: GET_ID failed: {e}")))?;
        Ok(SevCapabilities {
            pdh: exp.pdh.encode(),
            cert_chain: exp.chain_bytes(),
            cpu0_id: id,
            cbitpos: u32::from(cbitpos),
            reduced_phys_bits: u32::from(reduced_phys_bits),
        })
    })
}

/// An SEV-SNP launch as the monitor sees it.
#[derive(Clone)]
pub struct SnpMonitor {
    /// The launch.
    pub handle: crate::confidential::snp::SnpHandle,
    /// The firmware's API major, minor and build (for `query-sev`).
    pub api: (u8, u8, u8),
}

/// What [`start`] needs to know about the VM beyond the [`Vm`] itself.
pub struct VmBackendConfig {
    /// The SEV launch, for SEV guests.
    pub launch: Option<LaunchHandle>,
    /// The SEV-SNP launch, for SNP guests.
    pub snp: Option<SnpMonitor>,
    /// `query-sev-capabilities` source (`None`: the host has no SEV).
    pub caps: Option<CapsSource>,
    /// C-bit position (masked out of page-table entries), for SEV guests.
    pub cbitpos: Option<u8>,
    /// The VM was built with [`crate::VmConfig::start_paused`] (QEMU `-S`).
    pub start_paused: bool,
    /// Number of vCPUs ([`crate::VmConfig::cpus`]).
    pub vcpus: u8,
}

/// The VM side of the monitor.
pub struct VmBackend {
    control: VmControl,
    launch: Option<LaunchHandle>,
    snp: Option<SnpMonitor>,
    memory: GuestMemoryMmap,
    vcpus: u32,
    enc_mask: u64,
    start_paused: bool,
    caps: Option<CapsSource>,
    /// `cont` was called once (or the VM never waited): no longer `prelaunch`.
    started: AtomicBool,
    /// SHUTDOWN was already emitted (by `quit`/`system_powerdown`).
    shutdown_sent: AtomicBool,
    /// Serialises state transitions and their events; holds the last SEV state announced.
    sev_seen: Mutex<Option<SevState>>,
    events: OnceLock<EventSink>,
}

/// Why the debug path is refused under NODBG.
fn nodbg_err(policy: u32) -> MonitorError {
    MonitorError::generic(format!(
        "SEV: guest memory cannot be read: the guest policy {policy:#x} has NODBG set \
         (DBG_DECRYPT is refused)"
    ))
}

fn conf_err(e: ConfidentialError) -> MonitorError {
    MonitorError::generic(format!("SEV: {e}"))
}

/// QEMU's form for a firmware refusal: "SEV: Failed to get attestation report ret=%d
/// fw_err=%d (%s)" (ret is the ioctl's -1); other failures keep their own explanation.
fn attestation_err(e: ConfidentialError) -> MonitorError {
    match &e {
        ConfidentialError::Firmware { source, .. } => match source.status() {
            Some(st) => MonitorError::generic(format!(
                "SEV: Failed to get attestation report ret=-1 fw_err={} ({})",
                st.code(),
                st.description()
            )),
            None => MonitorError::generic(format!("SEV: Failed to get attestation report: {e}")),
        },
        _ => MonitorError::generic(format!("SEV: Failed to get attestation report: {e}")),
    }
}

impl VmBackend {
    /// A backend for `vm` pushing events into `events`.
    pub fn new(vm: &Vm, cfg: VmBackendConfig) -> Self {
        VmBackend {
            control: vm.control(),
            memory: vm.guest_memory().clone(),
            vcpus: u32::from(cfg.vcpus),
            enc_mask: cfg.cbitpos.map(|c| 1u64 << c).unwrap_or(0),
            start_paused: cfg.start_paused,
            started: AtomicBool::new(!cfg.start_paused),
            shutdown_sent: AtomicBool::new(false),
            sev_seen: Mutex::new(cfg.launch.as_ref().map(|l| l.status().phase.sev_state())),
            launch: cfg.launch,
            snp: cfg.snp,
            caps: cfg.caps,
            events: OnceLock::new(),
        }
    }

    /// Sends events to `sink` from now on (set once, by [`start`]).
    pub fn set_events(&self, sink: EventSink) {
        let _ = self.events.set(sink);
    }

    fn emit(&self, e: MonitorEvent) {
        if let Some(s) = self.events.get() {
            s.emit(e);
        }
    }

    fn prelaunch(&self) -> bool {
        self.start_paused
            && !self.started.load(Ordering::SeqCst)
            && self.control.state() != VmState::Stopped
    }

    /// Emits SEV_LAUNCH_STATE if the launch phase changed since the last call.
    fn sync_sev(&self) {
        let Some(l) = &self.launch else { return };
        let now = l.status().phase.sev_state();
        let mut seen = self.sev_seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen != Some(now) {
            *seen = Some(now);
            self.emit(MonitorEvent::SevLaunchState(now));
        }
    }

    /// The VM thread turns Running before its `before_run` hook runs LAUNCH_FINISH: waits
    /// (woken by the hook, no polling) until the launch has left LSECRET, so that
    /// SEV_LAUNCH_STATE `running` precedes RESUME as in QEMU. Bounded by [`STATE_WAIT`]; a
    /// stopped VM or a failed launch ends the wait.
    fn wait_launch_finished(&self) {
        let Some(l) = &self.launch else { return };
        let end = std::time::Instant::now() + STATE_WAIT;
        let mut seen = self.control.changes();
        while matches!(
            l.status().phase,
            crate::confidential::Phase::LaunchSecret | crate::confidential::Phase::LaunchUpdate
        ) && self.control.state() != VmState::Stopped
        {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            seen = self.control.wait_change(seen, left);
        }
    }

    fn wait_state(&self, want: &[VmState]) -> Result<VmState, MonitorError> {
        // Woken by the VM's state change itself: no polling.
        self.control.wait_state(want, STATE_WAIT).ok_or_else(|| {
            MonitorError::generic(format!(
                "the VM did not reach the requested state within {}s (it is {:?})",
                STATE_WAIT.as_secs(),
                self.control.state()
            ))
        })
    }

    fn gone() -> MonitorError {
        MonitorError::generic("the VM has stopped")
    }

    fn read_phys(&self, gpa: u64, len: usize) -> Result<Vec<u8>, MonitorError> {
        match &self.launch {
            Some(l) => l.read(gpa, len, AccessKind::Debug).map_err(|e| match e {
                ConfidentialError::DebugDisabled { policy } => nodbg_err(policy),
                e => conf_err(e),
            }),
            None => {
                let mut buf = vec![0u8; len];
                self.memory
                    .read_slice(&mut buf, GuestAddress(gpa))
                    .map_err(|_| {
                        MonitorError::generic(format!(
                            "Invalid addr 0x{gpa:x}/size {len} specified"
                        ))
                    })?;
                Ok(buf)
            }
        }
    }

    /// Whether `len` guest-physical bytes from `gpa` are RAM.
    fn phys_is_ram(&self, gpa: u64, len: u64) -> Result<(), MonitorError> {
        let ok = usize::try_from(len)
            .map(|l| self.memory.check_range(GuestAddress(gpa), l))
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(MonitorError::generic(format!(
                "guest physical range 0x{gpa:x}+0x{len:x} is not all guest RAM"
            )))
        }
    }

    fn snapshot(&self, cpu: u32) -> Result<CpuSnapshot, MonitorError> {
        if cpu >= self.vcpus {
            return Err(MonitorError::generic(format!("no CPU {cpu}")));
        }
        self.control.cpu_snapshot(cpu as usize).ok_or_else(|| {
            MonitorError::generic(format!(
                "no register state for CPU {cpu} yet: the vCPUs have not stopped since they \
                 started (use 'stop' first)"
            ))
        })
    }

    /// Walks the guest page tables (4-level, C-bit masked) reading every entry through
    /// [`Self::read_phys`], i.e. DBG_DECRYPT for SEV guests whose tables are private.
    fn translate(&self, cr3: u64, gva: u64) -> Result<u64, MonitorError> {
        if self.launch.is_none() {
            return paging::translate(&self.memory, cr3, gva, self.enc_mask)
                .map(|t| t.gpa)
                .map_err(|e| MonitorError::generic(e.to_string()));
        }
        const ADDR: u64 = 0x000f_ffff_ffff_f000;
        let sign = (gva as i64) >> 47;
        if sign != 0 && sign != -1 {
            return Err(MonitorError::generic(format!(
                "virtual address {gva:#x} is not canonical"
            )));
        }
        let mask = self.enc_mask;
        let mut table = cr3 & ADDR & !mask;
        for (depth, (level, shift)) in [("PML4", 39u32), ("PDPT", 30), ("PD", 21), ("PT", 12)]
            .into_iter()
            .enumerate()
        {
            let at = table + ((gva >> shift) & 0x1ff) * 8;
            let raw = self.read_phys(at, 8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw);
            let e = u64::from_le_bytes(b);
            if e & 1 == 0 {
                return Err(MonitorError::generic(format!(
                    "{level} entry for virtual address {gva:#x} is not present"
                )));
            }
            let base = e & ADDR & !mask;
            let leaf = match depth {
                1 | 2 if e & (1 << 7) != 0 => Some(shift),
                3 => Some(12),
                _ => None,
            };
            if let Some(bits) = leaf {
                let size = 1u64 << bits;
                return Ok((base & !(size - 1)) | (gva & (size - 1)));
            }
            table = base;
        }
        Err(MonitorError::generic("page walk ended without a leaf"))
    }
}

impl MonitorBackend for VmBackend {
    fn status(&self) -> RunState {
        if self.prelaunch() {
            return RunState::Prelaunch;
        }
        match self.control.state() {
            VmState::Created => RunState::Prelaunch,
            VmState::Running => RunState::Running,
            VmState::Paused => RunState::Paused,
            VmState::Stopped => RunState::Shutdown,
        }
    }

    fn stop(&self) -> Result<(), MonitorError> {
        if self.prelaunch() {
            return Ok(());
        }
        match self.control.state() {
            VmState::Paused => return Ok(()),
            VmState::Stopped => return Err(Self::gone()),
            _ => {}
        }
        if !self.control.pause() {
            return Err(Self::gone());
        }
        if self.wait_state(&[VmState::Paused, VmState::Stopped])? == VmState::Stopped {
            return Err(Self::gone());
        }
        self.emit(MonitorEvent::Stop);
        Ok(())
    }

    fn cont(&self) -> Result<(), MonitorError> {
        let first = self.prelaunch();
        if !first {
            match self.control.state() {
                VmState::Running => return Ok(()),
                VmState::Stopped => return Err(Self::gone()),
                _ => {}
            }
        }
        if let Some(l) = &self.launch {
            // Relaunches after a reset may wait for a release too.
            l.release();
        }
        if !self.control.resume() {
            return Err(Self::gone());
        }
        self.started.store(true, Ordering::SeqCst);
        if self.wait_state(&[VmState::Running, VmState::Stopped])? == VmState::Stopped {
            self.sync_sev();
            return Err(MonitorError::generic(
                "the VM stopped while starting (see the sevm log: LAUNCH_FINISH or the vCPU \
                 setup failed)",
            ));
        }
        self.wait_launch_finished();
        self.sync_sev();
        self.emit(MonitorEvent::Resume);
        Ok(())
    }

    fn system_reset(&self) -> Result<(), MonitorError> {
        if self.prelaunch() {
            return Err(MonitorError::generic(
                "the VM has not started yet (prelaunch): 'cont' starts it",
            ));
        }
        if self.control.state() == VmState::Stopped || !self.control.reset() {
            return Err(Self::gone());
        }
        self.emit(MonitorEvent::Reset {
            guest: false,
            reason: "host-qmp-system-reset".into(),
        });
        Ok(())
    }

    fn system_powerdown(&self) -> Result<(), MonitorError> {
        // No ACPI in sevm: the powerdown request is honoured by stopping the VM.
        self.emit(MonitorEvent::Powerdown);
        self.quit()
    }

    fn quit(&self) -> Result<(), MonitorError> {
        if !self.shutdown_sent.swap(true, Ordering::SeqCst) {
            self.emit(MonitorEvent::Shutdown {
                guest: false,
                reason: "host-qmp-quit".into(),
            });
        }
        // A VM that already stopped needs nothing more.
        let _ = self.control.quit();
        Ok(())
    }

    fn query_kvm(&self) -> KvmInfo {
        KvmInfo {
            enabled: true,
            present: true,
        }
    }

    fn sev_info(&self) -> Option<SevInfo> {
        if let Some(s) = &self.snp {
            let (ma, mi, b) = s.api;
            return Some(s.handle.status().sev_info(ma, mi, b));
        }
        Some(self.launch.as_ref()?.status().sev_info())
    }

    fn sev_launch_measure(&self) -> Result<Vec<u8>, MonitorError> {
        self.launch
            .as_ref()
            .and_then(|l| l.measurement())
            .map(|m| m.to_vec())
            .ok_or_else(|| MonitorError::generic(qemu_msg::SEV_MEASURE_UNAVAILABLE))
    }

    fn sev_capabilities(&self) -> Result<SevCapabilities, MonitorError> {
        match &self.caps {
            Some(c) => c(),
            None => Err(MonitorError::generic(qemu_msg::SEV_NOT_ENABLED_IN_KVM)),
        }
    }

    fn inject_launch_secret(
        &self,
        header: &sev_proto::secret::PacketHeader,
        secret: &[u8],
        gpa: Option<u64>,
    ) -> Result<(), MonitorError> {
        let l = self
            .launch
            .as_ref()
            .ok_or_else(|| MonitorError::generic(qemu_msg::SEV_NOT_ENABLED_FOR_GUEST))?;
        let r = l.inject_secret(header, secret, gpa).map_err(conf_err);
        self.sync_sev();
        r
    }

    fn attestation_report(&self, mnonce: &[u8; 16]) -> Result<Vec<u8>, MonitorError> {
        let l = self
            .launch
            .as_ref()
            .ok_or_else(|| MonitorError::generic(qemu_msg::SEV_NOT_ENABLED))?;
        l.attestation_report(mnonce)
            .map(|r| r.to_bytes().to_vec())
            .map_err(attestation_err)
    }

    fn debug_access(&self, cpu: Option<u32>) -> Result<(), MonitorError> {
        if let Some(s) = &self.snp {
            // SNP_DBG_DECRYPT needs the policy's DEBUG bit (19).
            let policy = s.handle.status().policy;
            if policy & (1 << 19) == 0 {
                return Err(MonitorError::generic(format!(
                    "SEV-SNP: guest memory cannot be read: the guest policy {policy:#x} has no \
                     DEBUG bit (0x80000), so SNP_DBG_DECRYPT is refused"
                )));
            }
        }
        if let Some(l) = &self.launch {
            let policy = l.status().policy;
            if sev_proto::policy::GuestPolicy(policy).nodbg() {
                return Err(nodbg_err(policy));
            }
        }
        if let Some(c) = cpu {
            self.snapshot(c)?;
        }
        Ok(())
    }

    fn check_range(&self, cpu: Option<u32>, addr: u64, len: u64) -> Result<(), MonitorError> {
        let Some(cpu) = cpu else {
            return self.phys_is_ram(addr, len);
        };
        let snap = self.snapshot(cpu)?;
        if snap.cr0 & (1 << 31) == 0 {
            return self.phys_is_ram(addr, len);
        }
        // Every page of the range must translate onto RAM.
        let mut va = addr;
        let mut left = len;
        while left > 0 {
            let gpa = self.translate(snap.cr3, va)?;
            let n = (0x1000 - (va & 0xfff)).min(left);
            self.phys_is_ram(gpa, n)?;
            va = va.wrapping_add(n);
            left -= n;
        }
        Ok(())
    }

    fn read_guest_phys(&self, gpa: u64, len: usize) -> Result<Vec<u8>, MonitorError> {
        self.read_phys(gpa, len)
    }

    fn read_guest_virt(&self, cpu: u32, gva: u64, len: usize) -> Result<Vec<u8>, MonitorError> {
        let snap = self.snapshot(cpu)?;
        if snap.cr0 & (1 << 31) == 0 {
            // Paging off: virtual = physical.
            return self.read_phys(gva, len);
        }
        let mut out = Vec::with_capacity(len);
        let mut va = gva;
        while out.len() < len {
            let gpa = self.translate(snap.cr3, va)?;
            let in_page = (0x1000 - (va & 0xfff)) as usize;
            let n = in_page.min(len - out.len());
            out.extend_from_slice(&self.read_phys(gpa, n)?);
            va = va.wrapping_add(n as u64);
        }
        Ok(out)
    }

    fn vcpu_count(&self) -> u32 {
        self.vcpus
    }

    fn registers(&self, cpu: u32) -> Result<String, MonitorError> {
        if let Some(s) = &self.snp {
            let policy = s.handle.status().policy;
            if policy & (1 << 19) == 0 {
                return Err(MonitorError::generic(format!(
                    "the register state of CPU {cpu} is inside the encrypted VMSA of this SEV-SNP \
                     guest (policy {policy:#x} has no DEBUG bit), so it cannot be shown"
                )));
            }
        }
        if let Some(l) = &self.launch {
            let policy = l.status().policy;
            if super::registers_hidden(policy) {
                return Err(super::vmsa_refusal(cpu, policy));
            }
        }
        let s = self.snapshot(cpu)?;
        Ok(format!(
            "RIP={:016x} RSP={:016x} CPL={}\nCR0={:08x} CR3={:016x} CR4={:08x}\nEFER={:016x}\n",
            s.rip, s.rsp, s.cpl, s.cr0, s.cr3, s.cr4, s.efer
        ))
    }
}

/// A running QMP server attached to a VM. Keep it alive while the VM runs; call
/// [`QmpRuntime::finish`] when [`Vm::run`] returns.
pub struct QmpRuntime {
    server: QmpServer,
    backend: Arc<VmBackend>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for QmpRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpRuntime")
            .field("path", &self.server.path())
            .finish()
    }
}

/// A binding/startup failure of [`start`].
pub type StartError = QmpServerError;

/// Binds `path`, attaches a [`VmBackend`] for `vm` and starts serving clients and events.
pub fn start(path: &Path, vm: &Vm, cfg: VmBackendConfig) -> Result<QmpRuntime, StartError> {
    let backend = Arc::new(VmBackend::new(vm, cfg));
    let mut server = QmpServer::bind(path, backend.clone())?;
    backend.set_events(server.events());
    server.start()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (b, s) = (backend.clone(), stop.clone());
    let watcher = std::thread::Builder::new()
        .name("qmp-watch".into())
        .spawn(move || {
            // Woken by the VM (state changes, launch hooks, resets) and by `finish`; the
            // period only bounds how late a change made elsewhere is reported.
            let mut seen = b.control.changes();
            while !s.load(Ordering::SeqCst) {
                b.sync_sev();
                seen = b.control.wait_change(seen, WATCH_PERIOD);
            }
        })
        .ok();
    Ok(QmpRuntime {
        server,
        backend,
        stop,
        watcher,
    })
}

impl QmpRuntime {
    /// The socket path.
    pub fn path(&self) -> &Path {
        self.server.path()
    }

    /// Emits the final events for how the VM ended (`None`: `run` failed), gives clients a
    /// moment to read them, then shuts the server down and removes the socket.
    pub fn finish(self, status: Option<&ExitStatus>) {
        let (guest, reason) = match status {
            Some(ExitStatus::Exited(_)) | Some(ExitStatus::Poweroff) => (true, "guest-shutdown"),
            Some(ExitStatus::Reset) => (true, "guest-reset"),
            Some(ExitStatus::Quit) => (false, "host-qmp-quit"),
            Some(ExitStatus::TripleFault { .. }) => (true, "guest-panic"),
            Some(ExitStatus::Timeout) => (false, "host-signal"),
            _ => (false, "host-error"),
        };
        self.finish_with(guest, reason);
    }

    /// [`QmpRuntime::finish`] for a VM stopped because the process got SIGTERM, SIGINT or
    /// SIGHUP: SHUTDOWN `{"guest": false, "reason": "host-signal"}`, as QEMU sends.
    pub fn finish_on_signal(self) {
        self.finish_with(false, "host-signal");
    }

    fn finish_with(mut self, guest: bool, reason: &str) {
        self.stop.store(true, Ordering::SeqCst);
        self.backend.control.wake();
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        self.backend.sync_sev();
        if !self.backend.shutdown_sent.swap(true, Ordering::SeqCst) {
            self.backend.emit(MonitorEvent::Shutdown {
                guest,
                reason: reason.into(),
            });
        }
        if self.server.client_count() > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.server.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confidential::Phase;
    use crate::{BootSource, SerialOut, VmConfig};

    #[test]
    fn attestation_firmware_errors_use_qemus_form() {
        let e = ConfidentialError::Firmware {
            stage: "LAUNCH_ATTESTATION",
            source: sev_firmware::FwError::Status {
                cmd: "ATTESTATION",
                status: sev_firmware::Status::InvalidGuestState,
            },
        };
        let m = attestation_err(e).to_string();
        assert!(
            m.starts_with("SEV: Failed to get attestation report ret=-1 fw_err=2 (The guest is in the wrong state"),
            "{m}"
        );
        let e = ConfidentialError::Phase {
            op: "query-sev-attestation-report",
            phase: Phase::LaunchUpdate,
        };
        let m = attestation_err(e).to_string();
        assert!(m.contains("not possible while the launch is"), "{m}");
    }

    /// A firmware that spins at the reset vector (`jmp $` at 0xfffffff0).
    fn spin_firmware(dir: &Path) -> std::path::PathBuf {
        let mut fw = vec![0xf4u8; 4096];
        fw[4096 - 16] = 0xeb;
        fw[4096 - 15] = 0xfe;
        let p = dir.join("spin.bin");
        std::fs::write(&p, fw).unwrap();
        p
    }

    #[test]
    fn plain_vm_prelaunch_cont_stop_read_quit() {
        if !crate::test_support::kvm_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = VmConfig {
            boot: BootSource::Firmware(spin_firmware(dir.path())),
            serial: SerialOut::Sink,
            start_paused: true,
            timeout: Some(Duration::from_secs(60)),
            ..VmConfig::default()
        };
        let mut vm = Vm::build(&cfg).unwrap();
        let sock = dir.path().join("q.sock");
        let rt = start(
            &sock,
            &vm,
            VmBackendConfig {
                snp: None,
                launch: None,
                caps: None,
                cbitpos: None,
                start_paused: true,
                vcpus: 1,
            },
        )
        .unwrap();
        let b = rt.backend.clone();
        assert!(sock.exists());
        let runner = std::thread::spawn(move || {
            let st = vm.run();
            (vm, st)
        });
        assert_eq!(b.status(), RunState::Prelaunch);
        assert!(b.sev_info().is_none());
        assert_eq!(
            b.sev_launch_measure().unwrap_err().desc(),
            qemu_msg::SEV_MEASURE_UNAVAILABLE
        );
        // Stop in prelaunch is a no-op; reset is refused until `cont`.
        b.stop().unwrap();
        assert_eq!(b.status(), RunState::Prelaunch);
        assert!(b.system_reset().is_err());
        assert!(b.registers(0).is_err(), "no snapshot before the first stop");
        // The checks pmemsave/memsave make before opening their file.
        b.debug_access(None).unwrap();
        let e = b.debug_access(Some(0)).unwrap_err();
        assert!(e.desc().ends_with("(use 'stop' first)"), "{}", e.desc());
        assert!(b.debug_access(Some(1)).is_err(), "one vCPU only");
        b.check_range(None, 0, 0x1000).unwrap();
        b.check_range(None, 0xffff_f000, 0x1000).unwrap();
        let e = b.check_range(None, u64::MAX - 4, 2).unwrap_err();
        assert!(e.desc().ends_with("is not all guest RAM"), "{}", e.desc());
        b.cont().unwrap();
        assert_eq!(b.status(), RunState::Running);
        b.stop().unwrap();
        assert_eq!(b.status(), RunState::Paused);
        b.debug_access(Some(0)).unwrap();
        b.check_range(Some(0), 0xffff_fff0, 16).unwrap();
        assert!(b.check_range(Some(0), u64::MAX - 4, 2).is_err());
        let regs = b.registers(0).unwrap();
        assert!(regs.contains("RIP=000000000000fff0"), "{regs}");
        // Paging is off: virtual = physical.
        assert_eq!(b.read_guest_virt(0, 0xffff_fff0, 2).unwrap(), [0xeb, 0xfe]);
        assert_eq!(b.read_guest_phys(0xffff_fff0, 2).unwrap(), [0xeb, 0xfe]);
        assert!(b.read_guest_phys(u64::MAX - 4, 2).is_err());
        b.cont().unwrap();
        assert_eq!(b.status(), RunState::Running);
        b.quit().unwrap();
        let (_vm, st) = runner.join().unwrap();
        assert_eq!(st.unwrap(), ExitStatus::Quit);
        rt.finish(Some(&ExitStatus::Quit));
        assert!(!sock.exists(), "finish removes the socket");
    }
}
