//! The virtio-mmio transport, version 2 (VIRTIO 1.2 §4.2.2), as Linux's `virtio_mmio` driver
//! finds it from a `virtio_mmio.device=SIZE@BASE:IRQ` command-line entry or an ACPI/DT node.
//!
//! The VMM routes MMIO exits in the device's window to [`MmioTransport::read`] /
//! [`MmioTransport::write`]; a write to QueueNotify returns [`Notify`] so the VMM can process
//! the queue (or the VMM registers an ioeventfd on QueueNotify and calls
//! [`MmioTransport::notify`] from its event loop). Feature negotiation refuses FEATURES_OK when
//! the driver acks a feature the device does not offer, or omits VERSION_1, or (for a
//! confidential guest) omits ACCESS_PLATFORM, without which it would hand the device private
//! memory. A broken queue sets DEVICE_NEEDS_RESET and raises a configuration interrupt.

use crate::access::{GuestAccess, PrivateRanges};
use crate::{features, status, DeviceError, Interrupt, VirtioDevice};
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// Size of one device's MMIO window.
pub const WINDOW: u64 = 0x1000;
/// "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// Our vendor ID ("SEVM", little-endian).
pub const VENDOR: u32 = u32::from_le_bytes(*b"SEVM");
/// InterruptStatus bit: a used buffer.
pub const INT_VRING: u32 = 1;
/// InterruptStatus bit: the configuration (or status) changed.
pub const INT_CONFIG: u32 = 2;

/// What a register write asks of the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// Nothing.
    None,
    /// The driver kicked this queue.
    Queue(u32),
}

/// A device behind the virtio-mmio register file.
pub struct MmioTransport<D: VirtioDevice> {
    device: D,
    queues: Vec<Queue>,
    irq: Arc<dyn Interrupt>,
    confidential: bool,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
    activated: bool,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Wraps `device`; `confidential` offers and requires ACCESS_PLATFORM (SEV/SNP guests).
    pub fn new(device: D, irq: Arc<dyn Interrupt>, confidential: bool) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&n| Queue::new(n).expect("queue sizes of our devices are powers of two"))
            .collect();
        MmioTransport {
            device,
            queues,
            irq,
            confidential,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            activated: false,
        }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Number of queues.
    pub fn queue_len(&self) -> usize {
        self.queues.len()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn offered(&self) -> u64 {
        let mut f = self.device.features() | features::VERSION_1;
        if self.confidential {
            f |= features::ACCESS_PLATFORM;
        }
        f
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.device.read_config(offset - 0x100, data);
            return;
        }
        let v: u32 = match offset {
            0x00 => MAGIC,
            0x04 => 2,
            0x08 => self.device.device_type(),
            0x0c => VENDOR,
            0x10 => match self.device_features_sel {
                0 => self.offered() as u32,
                1 => (self.offered() >> 32) as u32,
                _ => 0,
            },
            0x34 => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            0x44 => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt_status,
            0x70 => self.status,
            0xfc => self.config_generation,
            _ => 0,
        };
        // Registers are 32-bit; a narrower read sees the low bytes.
        let b = v.to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = b.get(i).copied().unwrap_or(0);
        }
    }

    /// A guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Notify {
        if offset >= 0x100 {
            self.device.write_config(offset - 0x100, data);
            return Notify::None;
        }
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(b);
        // Queue layout registers may change only before DRIVER_OK (VIRTIO 1.2 §4.2.2.3).
        let can_set_queue = self.status & status::DRIVER_OK == 0;
        match offset {
            0x14 => self.device_features_sel = v,
            0x20 if self.status & status::FEATURES_OK == 0 => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 if can_set_queue => {
                if let Some(q) = self.queue() {
                    q.set_size(v as u16);
                }
            }
            0x44 if can_set_queue => {
                if let Some(q) = self.queue() {
                    q.set_ready(v == 1);
                }
            }
            0x50 => return Notify::Queue(v),
            0x64 => self.interrupt_status &= !v,
            0x70 => self.set_status(v),
            0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 if can_set_queue => {
                let (lo, hi) = if offset & 4 == 0 {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                };
                if let Some(q) = self.queue() {
                    match offset & !7 {
                        0x80 => q.set_desc_table_address(lo, hi),
                        0x90 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => {}
        }
        Notify::None
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        if v & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let f = self.driver_features;
            let ok = f & !self.offered() == 0
                && f & features::VERSION_1 != 0
                && (!self.confidential || f & features::ACCESS_PLATFORM != 0);
            if !ok {
                if self.confidential && f & features::ACCESS_PLATFORM == 0 {
                    tracing::warn!(
                        "virtio-mmio: the driver did not accept ACCESS_PLATFORM; a confidential guest's device must use shared buffers"
                    );
                }
                v &= !status::FEATURES_OK;
            }
        }
        // Bits only ever accumulate until a reset, except NEEDS_RESET which is ours.
        self.status = (self.status & status::DEVICE_NEEDS_RESET) | v;
        if self.status & status::DRIVER_OK != 0 && !self.activated {
            self.activated = true;
            self.device.activate(self.driver_features);
        }
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        self.status = 0;
        self.interrupt_status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.activated = false;
    }

    /// Checks a queue's rings lie in memory the device may use.
    fn rings_ok(q: &Queue, mem: &GuestAccess<'_>) -> bool {
        let n = u64::from(q.size());
        mem.check(q.desc_table(), 16 * n).is_ok()
            && mem.check(q.avail_ring(), 6 + 2 * n).is_ok()
            && mem.check(q.used_ring(), 6 + 8 * n).is_ok()
            && q.is_valid(mem.memory())
    }

    /// The driver kicked queue `index`: process it, interrupt if the driver wants one.
    pub fn notify(&mut self, index: u32, mem: &GuestMemoryMmap, private: &PrivateRanges) {
        let i = index as usize;
        if !self.running() || !self.queues.get(i).is_some_and(|q| q.ready()) {
            return;
        }
        let access = GuestAccess::new(mem, private);
        if let Some(bad) = self.bad_ring(&access) {
            self.needs_reset(&format!("queue {bad}: rings outside shared guest RAM"));
            return;
        }
        let r = self.device.process_queue(&access, &mut self.queues, i);
        self.complete(r, mem);
    }

    /// The device's host fd ([`VirtioDevice::host_fd`]) is ready.
    pub fn host_event(&mut self, mem: &GuestMemoryMmap, private: &PrivateRanges) {
        if !self.running() {
            return;
        }
        let access = GuestAccess::new(mem, private);
        if let Some(bad) = self.bad_ring(&access) {
            self.needs_reset(&format!("queue {bad}: rings outside shared guest RAM"));
            return;
        }
        let r = self.device.host_event(&access, &mut self.queues);
        self.complete(r, mem);
    }

    fn running(&self) -> bool {
        self.activated && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    /// The first ready queue whose rings are not wholly in shared RAM.
    fn bad_ring(&self, access: &GuestAccess<'_>) -> Option<usize> {
        self.queues
            .iter()
            .position(|q| q.ready() && !Self::rings_ok(q, access))
    }

    fn complete(&mut self, r: Result<u64, DeviceError>, mem: &GuestMemoryMmap) {
        match r {
            Ok(mask) => {
                let mut irq = false;
                for (i, q) in self.queues.iter_mut().enumerate() {
                    if mask & (1 << i) != 0 && q.needs_notification(mem).unwrap_or(true) {
                        irq = true;
                    }
                }
                if irq {
                    self.interrupt_status |= INT_VRING;
                    self.irq.trigger();
                }
            }
            Err(e) => self.needs_reset(&e.to_string()),
        }
    }

    /// The device's host fd, for the event loop.
    pub fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.host_fd()
    }

    fn needs_reset(&mut self, why: &str) {
        tracing::warn!("virtio-mmio: device needs reset: {why}");
        // Quiesce the device until the driver resets it: a device whose host fd stayed
        // readable (a vsock connection, a TAP) would otherwise keep the level-triggered event
        // loop spinning, since a stopped transport no longer lets it drain that fd.
        if self.status & status::DEVICE_NEEDS_RESET == 0 {
            self.device.reset();
        }
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt_status |= INT_CONFIG;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.irq.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vm_memory::GuestAddress;

    struct Mock(Arc<AtomicUsize>);
    impl VirtioDevice for Mock {
        fn device_type(&self) -> u32 {
            2
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[8]
        }
        fn features(&self) -> u64 {
            0
        }
        fn read_config(&self, _: u64, _: &mut [u8]) {}
        fn activate(&mut self, _: u64) {}
        fn process_queue(
            &mut self,
            _: &GuestAccess<'_>,
            _: &mut [Queue],
            _: usize,
        ) -> Result<u64, DeviceError> {
            Ok(0)
        }
        fn reset(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    struct NoIrq;
    impl Interrupt for NoIrq {
        fn trigger(&self) {}
    }

    #[test]
    fn needs_reset_quiesces_the_device_once() {
        let resets = Arc::new(AtomicUsize::new(0));
        let mut t = MmioTransport::new(Mock(resets.clone()), Arc::new(NoIrq), false);
        let w = |t: &mut MmioTransport<Mock>, off: u64, v: u32| {
            t.write(off, &v.to_le_bytes());
        };
        w(&mut t, 0x70, 3);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(&mut t, 0x70, 0xb);
        w(&mut t, 0x38, 8);
        // Rings beyond the 64 KiB of RAM.
        w(&mut t, 0x80, 0x10_0000);
        w(&mut t, 0x90, 0x11_0000);
        w(&mut t, 0xa0, 0x12_0000);
        w(&mut t, 0x44, 1);
        w(&mut t, 0x70, 0xf);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
        let private = PrivateRanges::none();
        t.notify(0, &mem, &private);
        assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        // Further kicks and host events do nothing more until the driver resets.
        t.notify(0, &mem, &private);
        t.host_event(&mem, &private);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        w(&mut t, 0x70, 0);
        assert_eq!(t.status(), 0);
        assert_eq!(resets.load(Ordering::SeqCst), 2);
    }
}
