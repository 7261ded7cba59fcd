//! A scripted [`MonitorBackend`] for tests, the `qmp_fake` example and the benchmark.
//!
//! It models the run-state and SEV launch-state transitions of a `--paused` SEV launch
//! (prelaunch + launch-secret -> `cont` -> running), emits the events the real VM emits, and
//! serves 1 MiB of patterned "guest memory" identity-mapped for virtual reads. It is not a VM.

use super::{
    EventSink, KvmInfo, MonitorBackend, MonitorError, MonitorEvent, RunState, SevCapabilities,
    SevInfo, SevState,
};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Size of the fake guest memory.
pub const FAKE_MEM_BYTES: usize = 1 << 20;
/// The fake LAUNCH_MEASURE blob.
pub const FAKE_MEASURE: [u8; 48] = {
    let mut m = [0u8; 48];
    let mut i = 0;
    while i < 48 {
        m[i] = 0xa0 + i as u8;
        i += 1;
    }
    m
};

/// A secret injection the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Packet header bytes.
    pub header: Vec<u8>,
    /// Encrypted secret bytes.
    pub secret: Vec<u8>,
    /// Target address (`None` = firmware secret area).
    pub gpa: Option<u64>,
}

#[derive(Debug)]
struct State {
    run: RunState,
    sev: Option<SevInfo>,
    mem: Vec<u8>,
    injected: Vec<Injected>,
    quit: bool,
    resets: u32,
    delay: Duration,
    /// Virtual reads need register state from a `stop` (as the real VM's do).
    virt_needs_stop: bool,
    /// A `stop` of a running guest happened (register state exists).
    stopped_once: bool,
}

/// The fake backend.
#[derive(Debug)]
pub struct FakeBackend {
    state: Mutex<State>,
    events: Mutex<Option<EventSink>>,
}

impl FakeBackend {
    /// A paused SEV guest in launch-secret (the `--paused` flow after LAUNCH_MEASURE);
    /// `policy` decides whether the debug path is allowed (bit 0, NODBG, forbids it).
    pub fn sev_paused(policy: u32) -> Self {
        Self::new(Some(SevInfo {
            enabled: true,
            api_major: 0,
            api_minor: 24,
            build_id: 15,
            policy,
            state: SevState::LaunchSecret,
            handle: 1,
            snp_policy: None,
        }))
    }

    /// A running SEV-SNP guest with `policy`.
    pub fn snp_running(policy: u64) -> Self {
        Self::new(Some(SevInfo {
            enabled: true,
            api_major: 1,
            api_minor: 55,
            build_id: 25,
            policy: 0,
            state: SevState::Running,
            handle: 0,
            snp_policy: Some(policy),
        }))
    }

    /// A paused non-SEV guest.
    pub fn plain() -> Self {
        Self::new(None)
    }

    fn new(sev: Option<SevInfo>) -> Self {
        let mem = (0..FAKE_MEM_BYTES).map(|i| (i % 251) as u8).collect();
        Self {
            state: Mutex::new(State {
                run: RunState::Prelaunch,
                sev,
                mem,
                injected: Vec::new(),
                quit: false,
                resets: 0,
                delay: Duration::ZERO,
                virt_needs_stop: false,
                stopped_once: false,
            }),
            events: Mutex::new(None),
        }
    }

    /// Where events go (the server's sink).
    pub fn set_events(&self, sink: EventSink) {
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Make `query-sev-attestation-report` take this long (to test slow commands).
    pub fn set_delay(&self, d: Duration) {
        self.st().delay = d;
    }

    /// Make virtual reads (`memsave`, HMP `x`) need register state, as the real VM does:
    /// they fail until the guest was started (`cont`) and stopped (`stop`) once. Off by
    /// default (virtual = physical at any time).
    pub fn set_virt_needs_stop(&self, on: bool) {
        self.st().virt_needs_stop = on;
    }

    /// Secrets injected so far.
    pub fn injected(&self) -> Vec<Injected> {
        self.st().injected.clone()
    }

    /// Whether `quit` was called.
    pub fn quit_requested(&self) -> bool {
        self.st().quit
    }

    /// Number of resets.
    pub fn resets(&self) -> u32 {
        self.st().resets
    }

    /// Emit an event as the VM would (e.g. a guest-initiated shutdown).
    pub fn emit(&self, ev: MonitorEvent) {
        if let Some(s) = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            s.emit(ev);
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn debug_allowed(&self) -> Result<(), MonitorError> {
        match self.st().sev {
            Some(s) if sev_proto::policy::GuestPolicy(s.policy).nodbg() => Err(
                MonitorError::generic("SEV: debug access refused: guest policy has NODBG set"),
            ),
            _ => Ok(()),
        }
    }

    fn registers_available(&self, cpu: u32) -> Result<(), MonitorError> {
        if cpu >= self.vcpu_count() {
            return Err(MonitorError::generic("no such CPU"));
        }
        let st = self.st();
        if st.virt_needs_stop && !st.stopped_once {
            return Err(MonitorError::generic(format!(
                "no register state for CPU {cpu} yet: the vCPUs have not stopped since they \
                 started (use 'stop' first)"
            )));
        }
        Ok(())
    }
}

impl MonitorBackend for FakeBackend {
    fn status(&self) -> RunState {
        self.st().run
    }

    fn stop(&self) -> Result<(), MonitorError> {
        let mut st = self.st();
        if st.run == RunState::Running {
            st.run = RunState::Paused;
            st.stopped_once = true;
            drop(st);
            self.emit(MonitorEvent::Stop);
        }
        Ok(())
    }

    fn cont(&self) -> Result<(), MonitorError> {
        let mut st = self.st();
        match st.run {
            RunState::Running => return Ok(()),
            RunState::Shutdown | RunState::InternalError | RunState::GuestPanicked => {
                return Err(MonitorError::generic(
                    "Resetting the Virtual Machine is required",
                ))
            }
            _ => {}
        }
        let mut launched = false;
        if let Some(sev) = st.sev.as_mut() {
            if sev.state == SevState::LaunchSecret {
                sev.state = SevState::Running;
                launched = true;
            }
        }
        st.run = RunState::Running;
        drop(st);
        if launched {
            self.emit(MonitorEvent::SevLaunchState(SevState::Running));
        }
        self.emit(MonitorEvent::Resume);
        Ok(())
    }

    fn system_reset(&self) -> Result<(), MonitorError> {
        self.st().resets += 1;
        self.emit(MonitorEvent::Reset {
            guest: false,
            reason: "host-qmp-system-reset".into(),
        });
        Ok(())
    }

    fn system_powerdown(&self) -> Result<(), MonitorError> {
        self.emit(MonitorEvent::Powerdown);
        Ok(())
    }

    fn quit(&self) -> Result<(), MonitorError> {
        {
            let mut st = self.st();
            st.quit = true;
            st.run = RunState::Shutdown;
        }
        self.emit(MonitorEvent::Shutdown {
            guest: false,
            reason: "host-qmp-quit".into(),
        });
        Ok(())
    }

    fn query_kvm(&self) -> KvmInfo {
        KvmInfo {
            enabled: true,
            present: true,
        }
    }

    fn sev_info(&self) -> Option<SevInfo> {
        self.st().sev
    }

    fn sev_launch_measure(&self) -> Result<Vec<u8>, MonitorError> {
        match self.st().sev {
            Some(s) if s.state != SevState::LaunchUpdate && s.state != SevState::Uninit => {
                Ok(FAKE_MEASURE.to_vec())
            }
            _ => Err(MonitorError::generic(
                super::qemu_msg::SEV_MEASURE_UNAVAILABLE,
            )),
        }
    }

    fn sev_capabilities(&self) -> Result<SevCapabilities, MonitorError> {
        if self.st().sev.is_none() {
            return Err(MonitorError::generic(
                super::qemu_msg::SEV_NOT_ENABLED_IN_KVM,
            ));
        }
        Ok(SevCapabilities {
            pdh: vec![0x11; 2084],
            cert_chain: vec![0x22; 3 * 2084],
            cpu0_id: vec![0x33; 64],
            cbitpos: 51,
            reduced_phys_bits: 1,
        })
    }

    fn inject_launch_secret(
        &self,
        header: &sev_proto::secret::PacketHeader,
        secret: &[u8],
        gpa: Option<u64>,
    ) -> Result<(), MonitorError> {
        self.st().injected.push(Injected {
            header: header.to_bytes().to_vec(),
            secret: secret.to_vec(),
            gpa,
        });
        Ok(())
    }

    fn attestation_report(&self, mnonce: &[u8; 16]) -> Result<Vec<u8>, MonitorError> {
        let delay = self.st().delay;
        std::thread::sleep(delay);
        let mut r = mnonce.to_vec();
        r.extend_from_slice(&FAKE_MEASURE[..32]);
        Ok(r)
    }

    fn debug_access(&self, cpu: Option<u32>) -> Result<(), MonitorError> {
        self.debug_allowed()?;
        match cpu {
            Some(c) => self.registers_available(c),
            None => Ok(()),
        }
    }

    fn check_range(&self, _cpu: Option<u32>, addr: u64, len: u64) -> Result<(), MonitorError> {
        // Virtual = physical (identity map), so one check serves both.
        match addr.checked_add(len) {
            Some(end) if end <= FAKE_MEM_BYTES as u64 => Ok(()),
            _ => Err(MonitorError::generic(format!(
                "guest physical range 0x{addr:x}+0x{len:x} is not RAM"
            ))),
        }
    }

    fn read_guest_phys(&self, gpa: u64, len: usize) -> Result<Vec<u8>, MonitorError> {
        self.debug_allowed()?;
        let st = self.st();
        let start = usize::try_from(gpa).unwrap_or(usize::MAX);
        match start.checked_add(len) {
            Some(end) if end <= st.mem.len() => Ok(st.mem[start..end].to_vec()),
            _ => Err(MonitorError::generic(format!(
                "guest physical range 0x{gpa:x}+0x{len:x} is not RAM"
            ))),
        }
    }

    fn read_guest_virt(&self, cpu: u32, gva: u64, len: usize) -> Result<Vec<u8>, MonitorError> {
        self.registers_available(cpu)?;
        // Identity map of the low 1 MiB.
        self.read_guest_phys(gva, len)
    }

    fn vcpu_count(&self) -> u32 {
        2
    }

    fn registers(&self, cpu: u32) -> Result<String, MonitorError> {
        Ok(format!(
            "CPU#{cpu}\nRAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000\n\
             RIP=000000000000fff0 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n"
        ))
    }
}
