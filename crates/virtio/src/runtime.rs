//! The devices of one VM at run time: their MMIO windows, and one event loop thread that
//! serves every device's queue kicks and host-side I/O (no thread per device).
//!
//! A vCPU's MMIO exit in a device window reaches [`DeviceHub::mmio_read`] /
//! [`DeviceHub::mmio_write`] (register accesses, under the device's lock). Queue kicks are
//! eventfds, one per queue: the VMM registers each with KVM as an ioeventfd on the window's
//! QueueNotify register with the queue index as datamatch ([`DeviceHub::ioeventfds`]), so a
//! kick never leaves the kernel for a vCPU; a kick that does reach user space (no ioeventfd)
//! is forwarded to the same eventfd. The event loop waits on all kick eventfds and on each
//! device's host fd, and processes the device under its lock.

use crate::access::PrivateRanges;
use crate::mmio::{MmioTransport, Notify, WINDOW};
use crate::VirtioDevice;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Offset of QueueNotify in a virtio-mmio window.
pub const QUEUE_NOTIFY: u64 = 0x50;

/// A transport of any device type, as the hub and the event loop use it.
pub trait MmioDevice: Send {
    /// Register read.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Register write.
    fn write(&mut self, offset: u64, data: &[u8]) -> Notify;
    /// Queue kick.
    fn notify(&mut self, index: u32, mem: &GuestMemoryMmap, private: &PrivateRanges);
    /// Host fd ready.
    fn host_event(&mut self, mem: &GuestMemoryMmap, private: &PrivateRanges);
    /// The host fd to watch.
    fn host_fd(&self) -> Option<RawFd>;
    /// Number of queues.
    fn queue_count(&self) -> usize;
}

impl<D: VirtioDevice> MmioDevice for MmioTransport<D> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        MmioTransport::read(self, offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Notify {
        MmioTransport::write(self, offset, data)
    }
    fn notify(&mut self, index: u32, mem: &GuestMemoryMmap, private: &PrivateRanges) {
        MmioTransport::notify(self, index, mem, private)
    }
    fn host_event(&mut self, mem: &GuestMemoryMmap, private: &PrivateRanges) {
        MmioTransport::host_event(self, mem, private)
    }
    fn host_fd(&self) -> Option<RawFd> {
        MmioTransport::host_fd(self)
    }
    fn queue_count(&self) -> usize {
        self.queue_len()
    }
}

/// Errors setting up the devices' event loop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An eventfd or epoll call failed.
    #[error("virtio event loop: {what}: {source}")]
    Os {
        /// The call.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |source| RuntimeError::Os { what, source }
}

struct Slot {
    base: u64,
    dev: Arc<Mutex<Box<dyn MmioDevice>>>,
    kicks: Vec<Arc<EventFd>>,
}

/// The devices of one VM.
pub struct DeviceHub {
    slots: Vec<Slot>,
    mem: GuestMemoryMmap,
    private: Arc<PrivateRanges>,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<Box<dyn MmioDevice>>) -> MutexGuard<'_, Box<dyn MmioDevice>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DeviceHub {
    /// A hub over `mem` refusing `private`.
    pub fn new(mem: GuestMemoryMmap, private: Arc<PrivateRanges>) -> Result<Self, RuntimeError> {
        Ok(DeviceHub {
            slots: Vec::new(),
            mem,
            private,
            stop: Arc::new(EventFd::new(EFD_NONBLOCK).map_err(os("eventfd"))?),
            thread: None,
        })
    }

    /// Adds a device whose window starts at `base`.
    pub fn add(&mut self, base: u64, dev: Box<dyn MmioDevice>) -> Result<(), RuntimeError> {
        let kicks = (0..dev.queue_count())
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(os("eventfd"))?;
        self.slots.push(Slot {
            base,
            dev: Arc::new(Mutex::new(dev)),
            kicks,
        });
        Ok(())
    }

    /// `(QueueNotify address, queue index, eventfd)` for every queue, to register with KVM.
    pub fn ioeventfds(&self) -> Vec<(u64, u32, Arc<EventFd>)> {
        self.slots
            .iter()
            .flat_map(|s| {
                s.kicks
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (s.base + QUEUE_NOTIFY, i as u32, k.clone()))
            })
            .collect()
    }

    fn slot(&self, addr: u64) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| addr >= s.base && addr - s.base < WINDOW)
    }

    /// A guest read at `addr`; false if no device window holds it.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some(s) = self.slot(addr) else {
            return false;
        };
        lock(&s.dev).read(addr - s.base, data);
        true
    }

    /// A guest write at `addr`; false if no device window holds it.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        let Some(s) = self.slot(addr) else {
            return false;
        };
        if let Notify::Queue(q) = lock(&s.dev).write(addr - s.base, data) {
            if let Some(k) = s.kicks.get(q as usize) {
                // A full counter still wakes the loop, which is all a kick needs.
                let _ = k.write(1);
            }
        }
        true
    }

    /// Starts the event loop thread.
    pub fn start(&mut self) -> Result<(), RuntimeError> {
        let epoll = Epoll::new().map_err(os("epoll_create"))?;
        // Token layout: slot << 16 | (0 = host fd, 1 + q = queue q); u64::MAX = stop.
        let watch = |fd: RawFd, token: u64| {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(os("epoll_ctl"))
        };
        watch(self.stop.as_raw_fd(), u64::MAX)?;
        let mut work = Vec::new();
        for (si, s) in self.slots.iter().enumerate() {
            for (q, k) in s.kicks.iter().enumerate() {
                watch(k.as_raw_fd(), (si as u64) << 16 | (q as u64 + 1))?;
            }
            if let Some(fd) = lock(&s.dev).host_fd() {
                watch(fd, (si as u64) << 16)?;
            }
            work.push((s.dev.clone(), s.kicks.clone()));
        }
        let (mem, private) = (self.mem.clone(), self.private.clone());
        let t = std::thread::Builder::new()
            .name("sevm-virtio".into())
            .spawn(move || event_loop(epoll, work, mem, private))
            .map_err(os("spawn"))?;
        self.thread = Some(t);
        Ok(())
    }
}

type Work = Vec<(Arc<Mutex<Box<dyn MmioDevice>>>, Vec<Arc<EventFd>>)>;

fn event_loop(epoll: Epoll, work: Work, mem: GuestMemoryMmap, private: Arc<PrivateRanges>) {
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("virtio event loop: epoll_wait: {e}; devices stop");
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == u64::MAX {
                return;
            }
            let (si, sub) = ((token >> 16) as usize, token & 0xffff);
            let Some((dev, kicks)) = work.get(si) else {
                continue;
            };
            if sub == 0 {
                lock(dev).host_event(&mem, &private);
            } else if let Some(k) = kicks.get(sub as usize - 1) {
                // Drain the counter first: a kick after this is seen by the next wait.
                let _ = k.read();
                lock(dev).notify(sub as u32 - 1, &mem, &private);
            }
        }
    }
}

impl Drop for DeviceHub {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An interrupt line as an eventfd: the VMM registers it with KVM as an irqfd on the
/// device's GSI, so raising it never takes the VMM's locks.
pub struct IrqFd(pub Arc<EventFd>);

impl crate::Interrupt for IrqFd {
    fn trigger(&self) {
        // A saturated counter still has the line raised.
        let _ = self.0.write(1);
    }
}
