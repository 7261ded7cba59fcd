//! The SEV launch as a typestate: each firmware step consumes the launch and returns it in
//! its next state, so a step out of order does not compile.
//!
//! ```text
//! SevLaunch::<New>::new(guest)
//!   .launch_start(..)          INIT / ES_INIT, LAUNCH_START           -> SevLaunch<Started>
//!     .register_region(..)     KVM_MEMORY_ENCRYPT_REG_REGION (each RAM region)
//!     .update_data(..)         LAUNCH_UPDATE_DATA (each measured range)
//!     .create_vcpu(..)         KVM_CREATE_VCPU (after INIT, as Linux requires)
//!     .update_vmsas(..)        LAUNCH_UPDATE_VMSA (SEV-ES, every vCPU at once)
//!   .measure()                 LAUNCH_MEASURE                         -> SevLaunch<Measured>
//!     .inject_secret(..)       LAUNCH_SECRET (optional)
//!   .finish()                  LAUNCH_FINISH                          -> SevLaunch<Finished>
//! ```
//!
//! A consuming step that fails returns [`LaunchFailed`], which hands the firmware context
//! back so that it can still be decommissioned. The one place where the order is only known
//! at run time, the QMP monitor meeting the launch (`query-sev-launch-measure`,
//! `sev-inject-launch-secret`, `cont`), holds a [`LaunchState`]: the current typestate in an
//! enum (see [`super::LaunchHandle`]).

use std::marker::PhantomData;

use sev_firmware::{FwError, GuestPolicy, LaunchOwner, PacketHeader, SevGuest, Vmsa};
use sev_proto::measure::LaunchDigest;

use super::{fw, ConfidentialError, Phase, KVM_SECRET_MAX};

/// A firmware guest context of either backend.
pub type BoxedGuest = Box<dyn SevGuest + Send>;

/// Typestate: a guest context on a VM with no vCPU; nothing sent to the firmware yet.
#[derive(Debug)]
pub struct New;
/// Typestate: LAUNCH_START done; measuring (REG_REGION, UPDATE_DATA, vCPUs, UPDATE_VMSA).
#[derive(Debug)]
pub struct Started;
/// Typestate: LAUNCH_MEASURE done; the measurement is known, a secret may be injected.
#[derive(Debug)]
pub struct Measured;
/// Typestate: LAUNCH_FINISH done; the guest may run.
#[derive(Debug)]
pub struct Finished;

/// One SEV launch in state `S` ([`New`], [`Started`], [`Measured`], [`Finished`]).
pub struct SevLaunch<S> {
    guest: BoxedGuest,
    handle: u32,
    /// The launch digest over exactly what was passed to the firmware ([`Started`]).
    digest: Option<LaunchDigest>,
    /// LAUNCH_MEASURE output ([`Measured`], [`Finished`]).
    measurement: [u8; 48],
    /// The finished launch digest ([`Measured`], [`Finished`]).
    launch_digest: [u8; 32],
    _state: PhantomData<S>,
}

/// A consuming step failed: the error, and the firmware context (to decommission).
pub struct LaunchFailed {
    /// What went wrong (boxed: the guest travels with it).
    pub error: Box<ConfidentialError>,
    /// The guest context the failed step consumed.
    pub guest: BoxedGuest,
}

impl std::fmt::Debug for LaunchFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchFailed")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for SevLaunch<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SevLaunch")
            .field("state", &std::any::type_name::<S>())
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<S> SevLaunch<S> {
    fn into_state<T>(self) -> SevLaunch<T> {
        SevLaunch {
            guest: self.guest,
            handle: self.handle,
            digest: self.digest,
            measurement: self.measurement,
            launch_digest: self.launch_digest,
            _state: PhantomData,
        }
    }

    fn fail(self, stage: &'static str, source: FwError) -> LaunchFailed {
        LaunchFailed {
            error: Box::new(fw(stage)(source)),
            guest: self.guest,
        }
    }

    /// The firmware handle (0 before LAUNCH_START).
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The firmware context, for what any state allows (GUEST_STATUS, debug access).
    pub fn guest_mut(&mut self) -> &mut (dyn SevGuest + Send) {
        self.guest.as_mut()
    }

    /// Gives up the launch: the context, to decommission or drop.
    pub fn into_guest(self) -> BoxedGuest {
        self.guest
    }
}

impl SevLaunch<New> {
    /// A launch on a fresh firmware context (its VM has no vCPU yet).
    pub fn new(guest: BoxedGuest) -> Self {
        SevLaunch {
            guest,
            handle: 0,
            digest: None,
            measurement: [0; 48],
            launch_digest: [0; 32],
            _state: PhantomData,
        }
    }

    /// INIT (ES_INIT when the policy has ES), then LAUNCH_START with the policy, the owner's
    /// GODH certificate and session (if any) and the handle to share a key with (0: a new
    /// key).
    pub fn launch_start(
        mut self,
        policy: GuestPolicy,
        owner: Option<&LaunchOwner>,
        share_handle: u32,
    ) -> Result<SevLaunch<Started>, LaunchFailed> {
        let es = policy.es();
        if let Err(e) = self.guest.init(es) {
            return Err(self.fail(if es { "ES_INIT" } else { "INIT" }, e));
        }
        match self.guest.launch_start(policy, owner, share_handle) {
            Ok(h) => {
                self.handle = h;
                self.digest = Some(LaunchDigest::new());
                Ok(self.into_state())
            }
            Err(e) => Err(self.fail("LAUNCH_START", e)),
        }
    }
}

impl SevLaunch<Started> {
    /// KVM_MEMORY_ENCRYPT_REG_REGION of guest RAM `mem` at `gpa`.
    pub fn register_region(&mut self, gpa: u64, mem: &mut [u8]) -> Result<(), ConfidentialError> {
        self.guest
            .register_region(gpa, mem)
            .map_err(fw("MEMORY_ENCRYPT_REG_REGION"))
    }

    /// LAUNCH_UPDATE_DATA of guest memory `mem` at `gpa`; its bytes enter the launch digest
    /// before the firmware encrypts them in place.
    pub fn update_data(&mut self, gpa: u64, mem: &mut [u8]) -> Result<(), ConfidentialError> {
        if let Some(d) = self.digest.as_mut() {
            d.update(mem);
        }
        self.guest
            .launch_update_data(gpa, mem)
            .map_err(fw("LAUNCH_UPDATE_DATA"))
    }

    /// KVM_CREATE_VCPU `id` through the backend (`None`: the VMM creates it itself). Only in
    /// this state: Linux refuses SEV INIT once a vCPU exists.
    pub fn create_vcpu(
        &mut self,
        id: u64,
    ) -> Result<Option<std::os::fd::OwnedFd>, ConfidentialError> {
        self.guest.create_vcpu(id).map_err(fw("KVM_CREATE_VCPU"))
    }

    /// LAUNCH_UPDATE_VMSA of every vCPU's VMSA (SEV-ES), `vmsas[i]` for vCPU `i`; they
    /// enter the launch digest in that order. Once per launch (see
    /// [`SevGuest::launch_update_vmsas`] for how the backends differ).
    pub fn update_vmsas(&mut self, vmsas: &[Vmsa]) -> Result<(), ConfidentialError> {
        if let Some(d) = self.digest.as_mut() {
            for v in vmsas {
                d.update(v);
            }
        }
        self.guest
            .launch_update_vmsas(vmsas)
            .map_err(fw("LAUNCH_UPDATE_VMSA"))
    }

    /// LAUNCH_MEASURE.
    pub fn measure(mut self) -> Result<SevLaunch<Measured>, LaunchFailed> {
        match self.guest.launch_measure() {
            Ok(m) => {
                self.measurement = m;
                self.launch_digest = self.digest.take().unwrap_or_default().finish();
                Ok(self.into_state())
            }
            Err(e) => Err(self.fail("LAUNCH_MEASURE", e)),
        }
    }
}

impl SevLaunch<Measured> {
    /// MEASURE ‖ MNONCE as LAUNCH_MEASURE returned them.
    pub fn measurement(&self) -> [u8; 48] {
        self.measurement
    }

    /// The digest sevm computed over what it passed to the firmware.
    pub fn launch_digest(&self) -> [u8; 32] {
        self.launch_digest
    }

    /// LAUNCH_SECRET: the packet header `hdr` and ciphertext `ct` into `dest`, the guest
    /// memory at `gpa`. A ciphertext over KVM's 16 KiB is refused before the firmware runs.
    pub fn inject_secret(
        &mut self,
        hdr: &PacketHeader,
        ct: &[u8],
        gpa: u64,
        dest: &mut [u8],
    ) -> Result<(), ConfidentialError> {
        if ct.len() > KVM_SECRET_MAX {
            return Err(ConfidentialError::SecretTooLarge {
                len: ct.len(),
                max: KVM_SECRET_MAX,
            });
        }
        self.guest
            .launch_secret(hdr, ct, gpa, dest)
            .map_err(fw("LAUNCH_SECRET"))
    }

    /// LAUNCH_FINISH.
    pub fn finish(mut self) -> Result<SevLaunch<Finished>, LaunchFailed> {
        match self.guest.launch_finish() {
            Ok(()) => Ok(self.into_state()),
            Err(e) => Err(self.fail("LAUNCH_FINISH", e)),
        }
    }
}

impl SevLaunch<Finished> {
    /// The measurement the launch was finished with.
    pub fn measurement(&self) -> [u8; 48] {
        self.measurement
    }
}

/// The launch where the order is known only at run time (the QMP thread, the stdin owner
/// and the VM thread meet it through [`super::LaunchHandle`]): the current typestate.
#[derive(Default)]
pub enum LaunchState {
    /// No launch (before the first, after the end of the run).
    #[default]
    None,
    /// Measuring.
    Started(SevLaunch<Started>),
    /// Measured; waiting for a secret and the release.
    Measured(SevLaunch<Measured>),
    /// Finished; the guest runs.
    Running(SevLaunch<Finished>),
    /// A step failed; the context (if one was made) is kept for decommissioning.
    Failed(Option<BoxedGuest>),
}

impl std::fmt::Debug for LaunchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LaunchState({})", self.phase())
    }
}

impl LaunchState {
    /// The phase `query-sev` reports.
    pub fn phase(&self) -> Phase {
        match self {
            LaunchState::None => Phase::Uninit,
            LaunchState::Started(_) => Phase::LaunchUpdate,
            LaunchState::Measured(_) => Phase::LaunchSecret,
            LaunchState::Running(_) => Phase::Running,
            LaunchState::Failed(_) => Phase::Failed,
        }
    }

    /// Takes the state out, leaving [`LaunchState::None`].
    pub fn take(&mut self) -> LaunchState {
        std::mem::take(self)
    }

    /// The firmware context, in any state that has one.
    pub fn guest_mut(&mut self) -> Option<&mut (dyn SevGuest + Send)> {
        match self {
            LaunchState::None | LaunchState::Failed(None) => None,
            LaunchState::Started(l) => Some(l.guest_mut()),
            LaunchState::Measured(l) => Some(l.guest_mut()),
            LaunchState::Running(l) => Some(l.guest_mut()),
            LaunchState::Failed(Some(g)) => Some(g.as_mut()),
        }
    }

    /// The firmware context, giving up the launch.
    pub fn into_guest(self) -> Option<BoxedGuest> {
        match self {
            LaunchState::None => None,
            LaunchState::Started(l) => Some(l.into_guest()),
            LaunchState::Measured(l) => Some(l.into_guest()),
            LaunchState::Running(l) => Some(l.into_guest()),
            LaunchState::Failed(g) => g,
        }
    }

    /// Marks the launch failed, keeping its context.
    pub fn fail(&mut self) {
        let g = self.take().into_guest();
        *self = LaunchState::Failed(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sev_firmware::soft::SoftPlatform;
    use sev_firmware::GuestState;

    fn platform() -> (tempfile::TempDir, SoftPlatform) {
        let dir = tempfile::tempdir().unwrap();
        let p = SoftPlatform::open(dir.path()).unwrap();
        (dir, p)
    }

    fn state(l: &mut dyn SevGuest) -> GuestState {
        l.guest_status().unwrap().state
    }

    fn started(p: &SoftPlatform, policy: u32) -> SevLaunch<Started> {
        SevLaunch::new(Box::new(p.new_guest()))
            .launch_start(GuestPolicy(policy), None, 0)
            .unwrap()
    }

    /// A packet header that is well formed but whose MAC nothing produced.
    fn garbage_header() -> PacketHeader {
        PacketHeader {
            flags: 0,
            iv: [0; 16],
            mac: [0; 32],
        }
    }

    #[test]
    fn launch_start_moves_new_to_started_with_a_handle() {
        let (_d, p) = platform();
        let mut l = started(&p, 0);
        assert_ne!(l.handle(), 0, "LAUNCH_START gives a handle");
        assert_eq!(state(l.guest_mut()), GuestState::LUpdate);
    }

    #[test]
    fn launch_start_failure_names_the_step_and_hands_the_context_back() {
        let (_d, p) = platform();
        // Sharing the key of a guest that does not exist: LAUNCH_START fails after INIT.
        let f = SevLaunch::new(Box::new(p.new_guest()))
            .launch_start(GuestPolicy(0), None, 0xdead)
            .unwrap_err();
        assert!(f.error.to_string().contains("LAUNCH_START"), "{}", f.error);
        // The context comes back: no guest was launched on it.
        let mut g = f.guest;
        assert!(g
            .guest_status()
            .map_or(true, |s| s.state != GuestState::LUpdate));
    }

    #[test]
    fn update_data_and_vmsa_enter_the_digest_and_measure_moves_to_measured() {
        let (_d, p) = platform();
        let mut l = started(&p, 4);
        let mut page = vec![0x5au8; 4096];
        let vmsas = [[0x11u8; 4096], [0x22u8; 4096]];
        l.update_data(0x1000, &mut page).unwrap();
        l.update_vmsas(&vmsas).unwrap();
        let m = l.measure().unwrap();
        let mut want = LaunchDigest::new();
        want.update(&[0x5au8; 4096]);
        want.update(&vmsas[0]);
        want.update(&vmsas[1]);
        assert_eq!(m.launch_digest(), want.finish());
        assert_ne!(m.measurement(), [0; 48]);
    }

    #[test]
    fn inject_secret_refuses_over_16_kib_before_the_firmware() {
        let (_d, p) = platform();
        let mut m = started(&p, 0).measure().unwrap();
        let big = vec![0u8; KVM_SECRET_MAX + 1];
        let mut dest = vec![0u8; big.len()];
        let e = m
            .inject_secret(&garbage_header(), &big, 0x80_0000, &mut dest)
            .unwrap_err();
        assert!(
            matches!(e, ConfidentialError::SecretTooLarge { .. }),
            "{e:?}"
        );
        // A well-sized but garbage packet reaches the firmware, which refuses it.
        let e = m
            .inject_secret(&garbage_header(), &[0; 16], 0x80_0000, &mut [0; 16])
            .unwrap_err();
        assert!(e.to_string().contains("LAUNCH_SECRET"), "{e}");
    }

    #[test]
    fn finish_moves_measured_to_finished_and_the_guest_runs() {
        let (_d, p) = platform();
        let m = started(&p, 0).measure().unwrap();
        let want = m.measurement();
        let mut f = m.finish().unwrap();
        assert_eq!(f.measurement(), want);
        assert_eq!(state(f.guest_mut()), GuestState::Running);
    }

    #[test]
    fn runtime_state_reports_the_phase_and_keeps_the_context_on_failure() {
        let (_d, p) = platform();
        let mut s = LaunchState::Started(started(&p, 0));
        assert_eq!(s.phase(), Phase::LaunchUpdate);
        s.fail();
        assert_eq!(s.phase(), Phase::Failed);
        assert!(
            s.guest_mut().is_some(),
            "the context stays to be decommissioned"
        );
        let mut g = s.take().into_guest().unwrap();
        g.decommission().unwrap();
        assert_eq!(s.phase(), Phase::Uninit);
    }
}
