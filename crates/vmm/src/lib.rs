//! The sevm VMM on KVM.
//!
//! * [`layout`]: every guest-physical constant (ABI, mirrored in `docs/LAYOUT.md`).
//! * [`memory`]: RAM size parsing and the guest memory mapping.
//! * [`cpu`]: boot tables, register state, CPUID overrides, MSRs.
//! * [`boot`]: bundled guests, raw firmware, Linux via linux-loader; measured ranges.
//! * [`devices`]: COM1 16550, i8042 reset, exit port.
//! * [`mptable`]: the MP table describing the vCPUs and the IOAPIC to Linux.
//! * [`paging`]: GVA->GPA walker that masks the C-bit.
//! * [`snp_request`]: the SEV-SNP guest-request doorbell (GHCB stand-in).
//! * [`vm`]: [`VmConfig`], [`Vm`], hooks for the SEV layer, the run loop.
//! * `config` (config files, QEMU-style options) and `monitor` (QMP) are owned by other engineers.
//!
//! `vmm` never parses SEV byte formats itself (that is `sev-proto`'s job).

pub mod boot;
pub mod builder;
pub mod confidential;
pub mod config;
pub mod cpu;
pub mod devices;
pub mod layout;
pub mod memory;
pub mod monitor;
pub mod mptable;
pub mod paging;
pub mod snp_request;
pub mod virtio;
pub mod vm;

pub use boot::{BootSource, MeasuredRange, RangeKind};
pub use cpu::{CpuidOverride, CpuidOverrides};
pub use devices::SerialOut;
pub use kvm_ioctls::{Kvm, VcpuFd, VmFd};
pub use memory::parse_memory_size;
pub use vm::{
    ControlRequest, CpuSnapshot, ExitStatus, HookError, LaunchContext, LaunchHooks, MsrHandler,
    OnReset, ResetAction, RunState, VcpusAllowed, Vm, VmConfig, VmControl, VmError,
};
pub use vm_memory::GuestMemoryMmap;

#[cfg(test)]
mod test_support {
    /// Whether /dev/kvm can be opened read-write; if not, the test fails when CI is set and
    /// otherwise skips, saying why.
    pub(crate) fn kvm_or_skip() -> bool {
        let ok = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !ok {
            assert!(std::env::var_os("CI").is_none(), "CI: /dev/kvm is needed");
            eprintln!("SKIP: /dev/kvm is not usable");
        }
        ok
    }
}
