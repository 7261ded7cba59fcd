//! The VM's virtio-mmio devices (sevm-virtio): built from `VmConfig::disks`, windows from
//! [`layout::VIRTIO_MMIO_BASE`], interrupts through KVM irqfds on [`layout::VIRTIO_IRQS`],
//! queue kicks through KVM ioeventfds, all served by one event loop thread. Linux finds them
//! through `virtio_mmio.device=` entries on its command line ([`cmdline_entries`]).
//!
//! For an SEV guest the devices are confidential: VIRTIO_F_ACCESS_PLATFORM is offered and
//! required, and every range the launch measured (and the secret area) is private, so a
//! descriptor pointing there fails its request (docs/LAYOUT.md, "virtio devices").

use crate::boot::MeasuredRange;
use crate::config::devices::{DiskConfig, NetConfig, VsockConfig};
use crate::layout;
use kvm_ioctls::{IoEventAddress, VmFd};
use sevm_virtio::access::PrivateRanges;
use sevm_virtio::block::Block;
use sevm_virtio::mmio::{MmioTransport, WINDOW};
use sevm_virtio::net::{Net, Tap};
use sevm_virtio::runtime::{DeviceHub, IrqFd};
use sevm_virtio::vsock::Vsock;
use sevm_virtio::VirtioDevice;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Errors building or wiring the devices.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// More devices than free interrupt lines.
    #[error("at most {max} virtio devices are supported (one free ISA IRQ each); {n} given")]
    TooMany {
        /// Given.
        n: usize,
        /// Supported.
        max: usize,
    },
    /// A disk image could not be opened.
    #[error("--disk: {0}")]
    Disk(#[from] sevm_virtio::block::BlockError),
    /// A TAP device could not be opened.
    #[error("--net: {0}")]
    Net(#[from] sevm_virtio::net::NetError),
    /// The vsock socket could not be set up.
    #[error("--vsock: {0}")]
    Vsock(#[from] sevm_virtio::vsock::VsockError),
    /// An eventfd, the event loop or a KVM registration failed.
    #[error("virtio: {what}: {msg}")]
    Setup {
        /// What.
        what: &'static str,
        /// Why.
        msg: String,
    },
}

/// The kernel command-line entries that make Linux probe `n` devices.
pub fn cmdline_entries(n: usize) -> String {
    (0..n.min(layout::VIRTIO_IRQS.len()))
        .map(|i| {
            format!(
                "virtio_mmio.device=4K@{:#x}:{}",
                layout::VIRTIO_MMIO_BASE + i as u64 * WINDOW,
                layout::VIRTIO_IRQS[i]
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The private ranges of an SEV guest: what the launch measured, and the secret area.
pub fn private_ranges(measured: &[MeasuredRange]) -> PrivateRanges {
    let mut p = PrivateRanges::none();
    for r in measured {
        p.add(r.gpa, r.len);
    }
    p.add(layout::SECRET_AREA_START, layout::SECRET_AREA_SIZE);
    p
}

/// The devices a VM is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceSpecs<'a> {
    /// virtio-blk disks.
    pub disks: &'a [DiskConfig],
    /// virtio-net cards.
    pub nets: &'a [NetConfig],
    /// The virtio-vsock device.
    pub vsock: Option<&'a VsockConfig>,
}

impl DeviceSpecs<'_> {
    /// How many devices.
    pub fn count(&self) -> usize {
        self.disks.len() + self.nets.len() + usize::from(self.vsock.is_some())
    }
}

/// The running devices of one VM.
pub struct VirtioDevices {
    hub: DeviceHub,
    irqs: Vec<(Arc<EventFd>, u32)>,
    count: usize,
}

impl std::fmt::Debug for VirtioDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioDevices")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

fn setup(what: &'static str) -> impl Fn(std::io::Error) -> VirtioError {
    move |e| VirtioError::Setup {
        what,
        msg: e.to_string(),
    }
}

impl VirtioDevices {
    /// Opens the devices (disks, then network cards, then vsock: the order of their windows
    /// and of [`cmdline_entries`]) and starts the event loop; `None` when there are none.
    pub fn build(
        spec: &DeviceSpecs<'_>,
        mem: &GuestMemoryMmap,
        private: PrivateRanges,
        confidential: bool,
    ) -> Result<Option<VirtioDevices>, VirtioError> {
        let n = spec.count();
        if n == 0 {
            return Ok(None);
        }
        let max = layout::VIRTIO_IRQS.len();
        if n > max {
            return Err(VirtioError::TooMany { n, max });
        }
        let mut devs: Vec<Box<dyn VirtioDevice>> = Vec::with_capacity(n);
        for d in spec.disks {
            devs.push(Box::new(Block::open(&d.path, d.readonly, d.id.as_deref())?));
        }
        for (i, c) in spec.nets.iter().enumerate() {
            let mac = c
                .mac
                .unwrap_or([0x52, 0x54, 0x00, 0x12, 0x34, 0x56 + i as u8]);
            devs.push(Box::new(Net::new(Tap::open(&c.tap)?, mac)?));
        }
        if let Some(v) = spec.vsock {
            devs.push(Box::new(Vsock::new(u64::from(v.cid), &v.uds)?));
        }
        let mut hub =
            DeviceHub::new(mem.clone(), Arc::new(private)).map_err(|e| VirtioError::Setup {
                what: "event loop",
                msg: e.to_string(),
            })?;
        let mut irqs = Vec::new();
        for (i, dev) in devs.into_iter().enumerate() {
            let irq = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(setup("eventfd"))?);
            let t = MmioTransport::new(dev, Arc::new(IrqFd(irq.clone())), confidential);
            hub.add(layout::VIRTIO_MMIO_BASE + i as u64 * WINDOW, Box::new(t))
                .map_err(|e| VirtioError::Setup {
                    what: "device",
                    msg: e.to_string(),
                })?;
            irqs.push((irq, layout::VIRTIO_IRQS[i]));
        }
        hub.start().map_err(|e| VirtioError::Setup {
            what: "event loop",
            msg: e.to_string(),
        })?;
        Ok(Some(VirtioDevices {
            hub,
            irqs,
            count: n,
        }))
    }

    /// Registers the interrupt irqfds and the queue-kick ioeventfds on `vm` (again after each
    /// new VM fd).
    pub fn register(&self, vm: &VmFd) -> Result<(), VirtioError> {
        for (e, gsi) in &self.irqs {
            vm.register_irqfd(e, *gsi).map_err(|e| VirtioError::Setup {
                what: "KVM_IRQFD",
                msg: e.to_string(),
            })?;
        }
        for (addr, q, e) in self.hub.ioeventfds() {
            vm.register_ioevent(&e, &IoEventAddress::Mmio(addr), q)
                .map_err(|e| VirtioError::Setup {
                    what: "KVM_IOEVENTFD",
                    msg: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// A guest read in a device window; false if `addr` is in none.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.hub.mmio_read(addr, data)
    }

    /// A guest write in a device window; false if `addr` is in none.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.hub.mmio_write(addr, data)
    }

    /// Number of devices.
    pub fn count(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::RangeKind;

    #[test]
    fn cmdline_and_private_ranges() {
        assert_eq!(cmdline_entries(0), "");
        assert_eq!(
            cmdline_entries(2),
            "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
        let p = private_ranges(&[MeasuredRange {
            gpa: 0x10_0000,
            len: 0x2000,
            kind: RangeKind::Kernel,
        }]);
        assert!(p.check(0x10_1000, 1).is_err());
        assert!(p.check(layout::SECRET_AREA_START, 1).is_err());
        assert!(p.check(0x20_0000, 0x1000).is_ok());
    }

    #[test]
    fn disks_open_and_answer_in_their_windows() {
        let mem = GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)]).unwrap();
        let img = tempfile::NamedTempFile::new().unwrap();
        img.as_file().set_len(4096).unwrap();
        let d = DiskConfig {
            path: img.path().into(),
            readonly: true,
            id: None,
        };
        let two = [d.clone(), d.clone()];
        let spec = |disks| DeviceSpecs {
            disks,
            ..Default::default()
        };
        let v = VirtioDevices::build(&spec(&two), &mem, PrivateRanges::none(), false)
            .unwrap()
            .unwrap();
        let mut b = [0u8; 4];
        assert!(v.mmio_read(layout::VIRTIO_MMIO_BASE + 0x1000, &mut b));
        assert_eq!(&b, b"virt");
        assert!(!v.mmio_read(layout::VIRTIO_MMIO_BASE + 0x2000, &mut b));
        let seven = vec![d; 7];
        assert!(matches!(
            VirtioDevices::build(&spec(&seven), &mem, PrivateRanges::none(), false),
            Err(VirtioError::TooMany { n: 7, max: 6 })
        ));
        let missing = DiskConfig {
            path: "/nonexistent.img".into(),
            readonly: false,
            id: None,
        };
        let e = VirtioDevices::build(&spec(&[missing]), &mem, PrivateRanges::none(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--disk") && e.contains("/nonexistent.img"),
            "{e}"
        );
    }
}
