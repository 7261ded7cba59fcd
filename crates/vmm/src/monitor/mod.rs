//! QMP monitor: the QEMU Machine Protocol, as QEMU speaks it, over a Unix socket.
//!
//! The monitor is written against [`MonitorBackend`], a trait the VM implements, so it can be
//! built and tested without a VM (tests use a fake backend). The VM pushes asynchronous events
//! (STOP, RESUME, RESET, SHUTDOWN, POWERDOWN, SEV_LAUNCH_STATE) through an [`EventSink`];
//! the server broadcasts them to every client that finished capabilities negotiation.
//!
//! Field names, value formats (base64 blobs, SEV state strings) and error classes and messages
//! follow QEMU (`qapi/misc-i386.json`, `target/i386/sev.c`, `qapi/qmp-dispatch.c`).
//!
//! This module must never log command arguments: `sev-inject-launch-secret` carries the
//! launch secret. Only command names and error classes are logged.

mod dispatch;
mod dumpfile;
pub mod fake;
mod framer;
mod hmp;
mod server;
pub mod vm_backend;

pub use dispatch::{Dispatcher, Reply, Session};
pub use dumpfile::WRITE_STALL as DUMP_WRITE_STALL;
pub use framer::{Frame, Framer, MAX_MESSAGE_BYTES, MAX_NESTING};
pub use server::{
    parse_qmp_arg, parse_qmp_spec, QmpServer, QmpServerError, MAX_CLIENTS, WRITE_TIMEOUT,
};

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// QEMU release level the greeting advertises (QMP clients key features off it).
pub const QEMU_COMPAT_VERSION: (u32, u32, u32) = (9, 2, 0);

/// QEMU's error messages that the monitor and backends return verbatim.
pub mod qemu_msg {
    /// `query-sev-launch-measure` before LAUNCH_MEASURE or on a non-SEV guest.
    pub const SEV_MEASURE_UNAVAILABLE: &str = "SEV launch measurement is not available";
    /// `query-sev` on a non-SEV guest.
    pub const SEV_NOT_AVAILABLE: &str = "SEV feature is not available";
    /// `query-sev-capabilities` without KVM.
    pub const KVM_NOT_ENABLED: &str = "KVM not enabled";
    /// `query-sev-capabilities` when the host has no SEV.
    pub const SEV_NOT_ENABLED_IN_KVM: &str = "SEV is not enabled in KVM";
    /// `query-sev-attestation-report` on a non-SEV guest.
    pub const SEV_NOT_ENABLED: &str = "SEV is not enabled";
    /// `sev-inject-launch-secret` on a non-SEV guest.
    pub const SEV_NOT_ENABLED_FOR_GUEST: &str = "SEV not enabled for guest";
    /// `sev-inject-launch-secret` without `gpa` when the firmware has no secret area.
    pub const SEV_NO_SECRET_AREA: &str =
        "SEV: no secret area found in OVMF, gpa must be specified.";
    /// A command before `qmp_capabilities`.
    pub const EXPECTING_NEGOTIATION: &str =
        "Expecting capabilities negotiation with 'qmp_capabilities'";
    /// A JSON text nested deeper than [`super::MAX_NESTING`] (QEMU's json-streamer).
    pub const JSON_NESTING_LIMIT: &str = "JSON nesting depth limit exceeded";
    /// `qmp_capabilities` a second time.
    pub const ALREADY_NEGOTIATED: &str =
        "Capabilities negotiation is already complete, command ignored";
}

/// Whether a guest with this policy keeps its register state out of the host's reach: an
/// SEV-ES guest (registers in the encrypted VMSA) whose policy also forbids debugging.
pub fn registers_hidden(policy: u32) -> bool {
    let p = sev_proto::policy::GuestPolicy(policy);
    p.es() && p.nodbg()
}

/// The refusal of `info registers` for a guest where [`registers_hidden`] holds.
pub(crate) fn vmsa_refusal(cpu: u32, policy: u32) -> MonitorError {
    MonitorError::generic(format!(
        "the register state of CPU {cpu} is inside the encrypted VMSA of this SEV-ES guest \
         (policy {policy:#x} has NODBG set), so it cannot be shown"
    ))
}

/// QEMU's `RunState` (the `status` of `query-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, vCPUs not started yet (`-S` / `--paused`).
    Prelaunch,
    /// vCPUs running.
    Running,
    /// Stopped by `stop`.
    Paused,
    /// The guest shut down (or was told to quit).
    Shutdown,
    /// The VMM hit an internal error (e.g. a vCPU failed).
    InternalError,
    /// The guest reported a panic.
    GuestPanicked,
    /// Stopped by a debugger.
    Debug,
}

impl RunState {
    /// QEMU's string for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Prelaunch => "prelaunch",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Shutdown => "shutdown",
            RunState::InternalError => "internal-error",
            RunState::GuestPanicked => "guest-panicked",
            RunState::Debug => "debug",
        }
    }
}

/// QEMU's `SevState` (firmware guest state, `state` of `query-sev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevState {
    /// No launch started.
    Uninit,
    /// Between LAUNCH_START and LAUNCH_MEASURE.
    LaunchUpdate,
    /// After LAUNCH_MEASURE, before LAUNCH_FINISH: secrets may be injected.
    LaunchSecret,
    /// After LAUNCH_FINISH.
    Running,
    /// Migration out (unused by sevm).
    SendUpdate,
    /// Migration in (unused by sevm).
    ReceiveUpdate,
}

impl SevState {
    /// QEMU's string for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            SevState::Uninit => "uninit",
            SevState::LaunchUpdate => "launch-update",
            SevState::LaunchSecret => "launch-secret",
            SevState::Running => "running",
            SevState::SendUpdate => "send-update",
            SevState::ReceiveUpdate => "receive-update",
        }
    }

    /// QEMU's numeric value (printed in "SEV: Not in correct state. (LSECRET) %x").
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// Answer of `query-kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmInfo {
    /// KVM is in use by this VM.
    pub enabled: bool,
    /// KVM is available on the host.
    pub present: bool,
}

/// Answer of `query-sev` (QEMU's `SevInfo`, SEV/SEV-ES branch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevInfo {
    /// SEV is active for this guest.
    pub enabled: bool,
    /// Firmware API major version.
    pub api_major: u8,
    /// Firmware API minor version.
    pub api_minor: u8,
    /// Firmware build id.
    pub build_id: u8,
    /// Guest policy.
    pub policy: u32,
    /// Firmware guest state.
    pub state: SevState,
    /// Firmware guest handle.
    pub handle: u32,
    /// An SEV-SNP guest: its 64-bit policy (QEMU's `sev-snp` branch; `policy` and `handle`
    /// are then not shown).
    pub snp_policy: Option<u64>,
}

impl SevInfo {
    /// QEMU's `query-sev` reply, the one renderer of it (QMP and the run log both use it).
    ///
    /// `sev-type` is QEMU's `SevGuestType` (qapi/misc-target.json), whose only values are
    /// `sev` ("a legacy SEV or SEV-ES guest") and `sev-snp`: an SEV-ES guest is `sev`, and the
    /// ES bit shows in `policy`.
    pub fn to_query_sev(&self) -> Value {
        if let Some(p) = self.snp_policy {
            // QEMU's `SevInfo` union, branch `sev-snp` (`SevSnpGuestInfo`: `snp-policy`).
            return json!({
                "enabled": self.enabled,
                "api-major": self.api_major,
                "api-minor": self.api_minor,
                "build-id": self.build_id,
                "state": self.state.as_str(),
                "sev-type": "sev-snp",
                "snp-policy": p,
            });
        }
        json!({
            "enabled": self.enabled,
            "api-major": self.api_major,
            "api-minor": self.api_minor,
            "build-id": self.build_id,
            "policy": self.policy,
            "state": self.state.as_str(),
            "handle": self.handle,
            "sev-type": "sev",
        })
    }
}

/// Answer of `query-sev-capabilities` (raw bytes; the monitor base64-encodes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SevCapabilities {
    /// PDH certificate (SEV cert format).
    pub pdh: Vec<u8>,
    /// PEK ‖ OCA ‖ CEK certificate chain.
    pub cert_chain: Vec<u8>,
    /// GET_ID of CPU 0 (64 bytes).
    pub cpu0_id: Vec<u8>,
    /// Position of the C-bit in guest page table entries.
    pub cbitpos: u32,
    /// Physical address bits lost to encryption.
    pub reduced_phys_bits: u32,
}

/// Error returned by a backend or the monitor, mapped onto a QMP error class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonitorError {
    /// `GenericError` (QEMU's class for almost every failure).
    #[error("{0}")]
    Generic(String),
    /// `CommandNotFound`.
    #[error("{0}")]
    CommandNotFound(String),
    /// `DeviceNotActive`.
    #[error("{0}")]
    DeviceNotActive(String),
    /// `DeviceNotFound`.
    #[error("{0}")]
    DeviceNotFound(String),
    /// `KVMMissingCap`.
    #[error("{0}")]
    KvmMissingCap(String),
}

impl MonitorError {
    /// A `GenericError` with this message.
    pub fn generic(msg: impl Into<String>) -> Self {
        MonitorError::Generic(msg.into())
    }

    /// The QMP error class name.
    pub fn class(&self) -> &'static str {
        match self {
            MonitorError::Generic(_) => "GenericError",
            MonitorError::CommandNotFound(_) => "CommandNotFound",
            MonitorError::DeviceNotActive(_) => "DeviceNotActive",
            MonitorError::DeviceNotFound(_) => "DeviceNotFound",
            MonitorError::KvmMissingCap(_) => "KVMMissingCap",
        }
    }

    /// The human-readable description (`desc`).
    pub fn desc(&self) -> &str {
        match self {
            MonitorError::Generic(s)
            | MonitorError::CommandNotFound(s)
            | MonitorError::DeviceNotActive(s)
            | MonitorError::DeviceNotFound(s)
            | MonitorError::KvmMissingCap(s) => s,
        }
    }
}

/// What the VM offers the monitor. Implemented by the VM; tests use a fake.
///
/// Every method is called from a client thread while the VM runs, so implementations must do
/// their own locking and must not block for long (a slow method only delays its own client).
pub trait MonitorBackend: Send + Sync {
    /// Current run state (`query-status`).
    fn status(&self) -> RunState;
    /// Pause the vCPUs (`stop`); the VM emits STOP. Idempotent.
    fn stop(&self) -> Result<(), MonitorError>;
    /// Start or resume the vCPUs (`cont`); on an SEV guest in launch-secret this performs
    /// LAUNCH_FINISH first. The VM emits RESUME.
    fn cont(&self) -> Result<(), MonitorError>;
    /// Reset the machine (`system_reset`); the VM emits RESET.
    fn system_reset(&self) -> Result<(), MonitorError>;
    /// Ask the guest to power down (ACPI) (`system_powerdown`); the VM emits POWERDOWN.
    fn system_powerdown(&self) -> Result<(), MonitorError>;
    /// Request VMM exit (`quit`). Must return before the process exits: the reply is sent
    /// after this returns. The VM emits SHUTDOWN {guest: false, reason: "host-qmp-quit"}.
    fn quit(&self) -> Result<(), MonitorError>;
    /// `query-kvm`.
    fn query_kvm(&self) -> KvmInfo;
    /// `query-sev`; `None` when the guest is not an SEV guest.
    fn sev_info(&self) -> Option<SevInfo>;
    /// The LAUNCH_MEASURE blob (48 bytes: measure ‖ mnonce). Return
    /// `MonitorError::generic(qemu_msg::SEV_MEASURE_UNAVAILABLE)` before it exists.
    fn sev_launch_measure(&self) -> Result<Vec<u8>, MonitorError>;
    /// PDH, cert chain, CPU id, C-bit position (`query-sev-capabilities`).
    fn sev_capabilities(&self) -> Result<SevCapabilities, MonitorError>;
    /// LAUNCH_SECRET with a decoded packet header and ciphertext. `gpa` `None` means
    /// the firmware's SEV secret area. Called only in [`SevState::LaunchSecret`].
    /// Implementations must not log `header` or `secret`.
    fn inject_launch_secret(
        &self,
        header: &sev_proto::secret::PacketHeader,
        secret: &[u8],
        gpa: Option<u64>,
    ) -> Result<(), MonitorError>;
    /// GET_ATTESTATION_REPORT with this mnonce; returns the report bytes.
    fn attestation_report(&self, mnonce: &[u8; 16]) -> Result<Vec<u8>, MonitorError>;
    /// Whether the debug path may be used at all right now, before anything is read or any
    /// file is opened: `Err` with the real reason when the guest policy has NODBG, or (for
    /// `cpu` `Some`, a virtual read) when there is no register state of that vCPU to
    /// translate with (it has not stopped since it started). `pmemsave`/`memsave` return
    /// the error verbatim.
    fn debug_access(&self, cpu: Option<u32>) -> Result<(), MonitorError>;
    /// Whether `len` bytes from `addr` are all guest RAM (`cpu` `None`: guest-physical) or
    /// all mapped by the page tables of `cpu` onto guest RAM (virtual), without reading
    /// them. `Err` says what is wrong (the monitor wraps it in QEMU's "Invalid addr"
    /// message). Called only after [`Self::debug_access`] succeeded.
    fn check_range(&self, cpu: Option<u32>, addr: u64, len: u64) -> Result<(), MonitorError>;
    /// Read guest-physical memory through the debug path (DBG_DECRYPT for encrypted pages).
    fn read_guest_phys(&self, gpa: u64, len: usize) -> Result<Vec<u8>, MonitorError>;
    /// Read guest-virtual memory of `cpu` (C-bit aware page walk, then the debug path).
    fn read_guest_virt(&self, cpu: u32, gva: u64, len: usize) -> Result<Vec<u8>, MonitorError>;
    /// Number of vCPUs (valid `cpu-index` values are `0..vcpu_count()`).
    fn vcpu_count(&self) -> u32;
    /// Text for HMP `info registers` of `cpu` (QEMU-like layout, lines ending in `\n`).
    fn registers(&self, cpu: u32) -> Result<String, MonitorError>;
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    /// vCPUs stopped.
    Stop,
    /// vCPUs resumed.
    Resume,
    /// Machine reset; `guest` = requested by the guest, `reason` as QEMU ("host-qmp-system-reset", "guest-reset").
    Reset {
        /// Guest-initiated.
        guest: bool,
        /// QEMU `ShutdownCause` string.
        reason: String,
    },
    /// Emulation stopping; `reason` as QEMU ("host-qmp-quit", "guest-shutdown", "host-signal").
    Shutdown {
        /// Guest-initiated.
        guest: bool,
        /// QEMU `ShutdownCause` string.
        reason: String,
    },
    /// `system_powerdown` delivered to the guest.
    Powerdown,
    /// The SEV firmware guest state changed (sevm extension: `SEV_LAUNCH_STATE`).
    SevLaunchState(SevState),
}

impl MonitorEvent {
    /// QMP event name.
    pub fn name(&self) -> &'static str {
        match self {
            MonitorEvent::Stop => "STOP",
            MonitorEvent::Resume => "RESUME",
            MonitorEvent::Reset { .. } => "RESET",
            MonitorEvent::Shutdown { .. } => "SHUTDOWN",
            MonitorEvent::Powerdown => "POWERDOWN",
            MonitorEvent::SevLaunchState(_) => "SEV_LAUNCH_STATE",
        }
    }

    /// The wire message with QEMU's timestamp format, stamped `now`.
    pub fn to_json(&self, now: SystemTime) -> Value {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut msg = json!({
            "event": self.name(),
            "timestamp": {"seconds": d.as_secs(), "microseconds": d.subsec_micros()},
        });
        let data = match self {
            MonitorEvent::Reset { guest, reason } | MonitorEvent::Shutdown { guest, reason } => {
                Some(json!({"guest": guest, "reason": reason}))
            }
            MonitorEvent::SevLaunchState(s) => Some(json!({"state": s.as_str()})),
            _ => None,
        };
        if let Some(data) = data {
            msg["data"] = data;
        }
        msg
    }
}

/// A client's outgoing queue plus how to cut the client off when that queue is full.
struct Subscriber {
    id: u64,
    tx: SyncSender<Arc<str>>,
    kill: Box<dyn Fn() + Send + Sync>,
}

/// Handle the VM uses to push events to every negotiated client. Cheap to clone; never blocks:
/// a client whose outgoing queue is full is disconnected instead of stalling the VM.
#[derive(Clone, Default)]
pub struct EventSink {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl EventSink {
    /// A sink with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Broadcast `event` (stamped now) to every subscriber.
    pub fn emit(&self, event: MonitorEvent) {
        let line: Arc<str> = Arc::from(event.to_json(SystemTime::now()).to_string());
        tracing::debug!(event = event.name(), "qmp event");
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| match s.tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!("qmp client too slow to take events; disconnecting it");
                (s.kill)();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Add a subscriber: events go into `tx` (never blocking); `kill` is called once if the
    /// queue is full, and the subscriber is then dropped. Returns an id for [`Self::unsubscribe`].
    pub fn subscribe(&self, tx: SyncSender<Arc<str>>, kill: Box<dyn Fn() + Send + Sync>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Subscriber { id, tx, kill });
        id
    }

    /// Remove a subscriber (its client went away).
    pub fn unsubscribe(&self, id: u64) {
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.id != id);
    }

    /// Number of subscribers (negotiated, connected clients).
    pub fn subscriber_count(&self) -> usize {
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}
