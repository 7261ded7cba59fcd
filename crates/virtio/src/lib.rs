//! sevm's virtio devices: the virtio-mmio transport ([`mmio`]), the block device ([`block`]),
//! and the one path through which every device touches guest memory ([`access`]), which keeps
//! devices out of memory the VMM knows is private to an SEV or SNP guest (the seed's patch 20:
//! no device DMA into private memory).
//!
//! Queues are rust-vmm's `virtio-queue` split queues; this crate adds the device model on top:
//! a device implements [`VirtioDevice`], the transport owns the queues and the register file,
//! and the VMM calls [`mmio::MmioTransport::notify`] from its event loop when the guest kicks a
//! queue (an ioeventfd on QueueNotify) and signals the device's interrupt (an irqfd) through the
//! [`Interrupt`] it gave the transport.
#![deny(missing_docs)]

pub mod access;
pub mod block;
pub mod mmio;
pub mod net;
pub mod runtime;
pub mod vsock;

use access::GuestAccess;
use virtio_queue::Queue;

/// Virtio device IDs (VIRTIO 1.2 §5).
pub mod device_id {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Socket device.
    pub const VSOCK: u32 = 19;
}

/// Feature bits common to all devices (VIRTIO 1.2 §6).
pub mod features {
    /// `VIRTIO_RING_F_INDIRECT_DESC`.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `VIRTIO_F_VERSION_1`: a modern (non-legacy) device.
    pub const VERSION_1: u64 = 1 << 32;
    /// `VIRTIO_F_ACCESS_PLATFORM`: the device reaches memory through the platform's DMA
    /// translation; an SEV/SNP Linux guest then bounces through shared SWIOTLB buffers.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// Device status bits (VIRTIO 1.2 §2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// How a device raises its interrupt (an irqfd in the VMM, a counter in tests).
pub trait Interrupt: Send + Sync {
    /// Raises the device's interrupt line once.
    fn trigger(&self);
}

/// A device error that makes the transport set DEVICE_NEEDS_RESET: the guest broke the queue
/// itself (not a single request, which fails with the request's own status).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The queue's rings could not be read or written.
    #[error("virtio queue {queue}: {what}")]
    Queue {
        /// The queue index.
        queue: usize,
        /// What went wrong.
        what: String,
    },
}

impl DeviceError {
    /// For `map_err` on queue `queue`'s ring operations (`iter`, `add_used`).
    pub fn queue(queue: usize) -> impl Fn(virtio_queue::Error) -> DeviceError + Copy {
        move |e| DeviceError::Queue {
            queue,
            what: e.to_string(),
        }
    }
}

/// A device's configuration space `cfg` as the driver reads it: `data.len()` bytes at
/// `offset`, bytes beyond `cfg` reading as 0.
pub fn read_config_bytes(cfg: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|o| cfg.get(usize::try_from(o).ok()?))
            .copied()
            .unwrap_or(0);
    }
}

/// One virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID ([`device_id`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers.
    fn features(&self) -> u64;
    /// Reads from the device-specific configuration space; bytes beyond it read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes to the configuration space (ignored by devices without writable fields).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK with these acknowledged features.
    fn activate(&mut self, acked_features: u64);
    /// Processes the available buffers of queue `index` (the driver kicked it). `queues` are
    /// all of the device's queues, so a device may answer on another (vsock replies on RX to
    /// a TX request). Returns a bit mask of the queues to which used buffers were added (the
    /// transport then decides whether to interrupt). A request the device cannot serve is
    /// completed with an error status; only a broken queue is an `Err`.
    fn process_queue(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<u64, DeviceError>;
    /// A file descriptor the event loop should watch for the device's host side (a TAP
    /// device, an epoll fd over the device's sockets), if it has one.
    fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The host fd is ready: move host data into the queues. Returns the mask of queues used.
    fn host_event(
        &mut self,
        _mem: &GuestAccess<'_>,
        _queues: &mut [Queue],
    ) -> Result<u64, DeviceError> {
        Ok(0)
    }
    /// The driver reset the device (status 0).
    fn reset(&mut self) {}
}

/// A boxed device is a device (so a VMM can keep devices of different types in one list).
impl<T: VirtioDevice + ?Sized> VirtioDevice for Box<T> {
    fn device_type(&self) -> u32 {
        (**self).device_type()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        (**self).queue_max_sizes()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        (**self).read_config(offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        (**self).write_config(offset, data)
    }
    fn activate(&mut self, acked_features: u64) {
        (**self).activate(acked_features)
    }
    fn process_queue(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<u64, DeviceError> {
        (**self).process_queue(mem, queues, index)
    }
    fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        (**self).host_fd()
    }
    fn host_event(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
    ) -> Result<u64, DeviceError> {
        (**self).host_event(mem, queues)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
}
