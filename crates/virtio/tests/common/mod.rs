//! A simulated guest driver for multi-queue devices behind virtio-mmio: negotiates features,
//! sets up every queue through the registers, posts chains on split rings, kicks, and reads
//! the used rings (as Linux's `virtio_mmio` driver does).
#![allow(dead_code)]

use sevm_virtio::access::PrivateRanges;
use sevm_virtio::mmio::{MmioTransport, Notify};
use sevm_virtio::{features, status, Interrupt, VirtioDevice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const QSZ: u16 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

#[derive(Default)]
pub struct Count(pub AtomicUsize);
impl Interrupt for Count {
    fn trigger(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Ring addresses of queue `q`.
pub fn rings(q: usize) -> (u64, u64, u64) {
    let base = 0x10000 + 0x4000 * q as u64;
    (base, base + 0x1000, base + 0x2000)
}

pub struct Driver<D: VirtioDevice> {
    pub mem: GuestMemoryMmap,
    pub t: MmioTransport<D>,
    pub irq: Arc<Count>,
    pub private: PrivateRanges,
    next_desc: Vec<u16>,
    avail_idx: Vec<u16>,
    used_seen: Vec<u16>,
}

pub fn w32<D: VirtioDevice>(t: &mut MmioTransport<D>, off: u64, v: u32) -> Notify {
    t.write(off, &v.to_le_bytes())
}
pub fn r32<D: VirtioDevice>(t: &MmioTransport<D>, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

impl<D: VirtioDevice> Driver<D> {
    pub fn new(dev: D, confidential: bool, device_id: u32) -> Driver<D> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let irq = Arc::new(Count::default());
        let mut t = MmioTransport::new(dev, irq.clone(), confidential);
        assert_eq!(r32(&t, 0), 0x7472_6976);
        assert_eq!(r32(&t, 8), device_id);
        w32(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        w32(&mut t, 0x14, 0);
        let lo = r32(&t, 0x10);
        w32(&mut t, 0x14, 1);
        let hi = r32(&t, 0x10);
        let offered = u64::from(lo) | (u64::from(hi) << 32);
        assert_ne!(offered & features::VERSION_1, 0);
        w32(&mut t, 0x24, 0);
        w32(&mut t, 0x20, offered as u32);
        w32(&mut t, 0x24, 1);
        w32(&mut t, 0x20, (offered >> 32) as u32);
        w32(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_ne!(r32(&t, 0x70) & status::FEATURES_OK, 0);
        let n = t.queue_len();
        for q in 0..n {
            let (d, a, u) = rings(q);
            w32(&mut t, 0x30, q as u32);
            w32(&mut t, 0x38, u32::from(QSZ));
            w32(&mut t, 0x80, d as u32);
            w32(&mut t, 0x84, 0);
            w32(&mut t, 0x90, a as u32);
            w32(&mut t, 0x94, 0);
            w32(&mut t, 0xa0, u as u32);
            w32(&mut t, 0xa4, 0);
            w32(&mut t, 0x44, 1);
        }
        let st = r32(&t, 0x70);
        w32(&mut t, 0x70, st | status::DRIVER_OK);
        assert_ne!(r32(&t, 0x70) & status::DRIVER_OK, 0);
        Driver {
            mem,
            t,
            irq,
            private: PrivateRanges::none(),
            next_desc: vec![0; n],
            avail_idx: vec![0; n],
            used_seen: vec![0; n],
        }
    }

    /// Posts descriptors (addr, len, device-writable) as one chain on queue `q`.
    pub fn post(&mut self, q: usize, descs: &[(u64, u32, bool)]) -> u16 {
        let (dt, av, _) = rings(q);
        let head = self.next_desc[q];
        for (i, &(addr, len, wr)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % QSZ;
            let last = i + 1 == descs.len();
            let flags = if wr { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            let a = dt + 16 * u64::from(idx);
            self.mem.write_obj(addr, GuestAddress(a)).unwrap();
            self.mem.write_obj(len, GuestAddress(a + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(a + 12)).unwrap();
            self.mem
                .write_obj((idx + 1) % QSZ, GuestAddress(a + 14))
                .unwrap();
        }
        self.next_desc[q] = (head + descs.len() as u16) % QSZ;
        let slot = av + 4 + 2 * u64::from(self.avail_idx[q] % QSZ);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q], GuestAddress(av + 2))
            .unwrap();
        head
    }

    pub fn kick(&mut self, q: usize) {
        assert_eq!(w32(&mut self.t, 0x50, q as u32), Notify::Queue(q as u32));
        self.t.notify(q as u32, &self.mem, &self.private);
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem.read_obj(GuestAddress(rings(q).2 + 2)).unwrap()
    }

    /// Used entries (id, len) of queue `q` not yet taken.
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let (_, _, u) = rings(q);
        let mut out = Vec::new();
        while self.used_seen[q] != self.used_idx(q) {
            let e = u + 4 + 8 * u64::from(self.used_seen[q] % QSZ);
            out.push((
                self.mem.read_obj(GuestAddress(e)).unwrap(),
                self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
            ));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        out
    }

    pub fn host_event(&mut self) {
        self.t.host_event(&self.mem, &self.private);
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(gpa)).unwrap();
        b
    }

    pub fn write(&self, gpa: u64, b: &[u8]) {
        self.mem.write_slice(b, GuestAddress(gpa)).unwrap();
    }
}

/// Waits until `fd` is readable (true) or `ms` pass (false).
pub fn readable(fd: std::os::fd::RawFd, ms: i32) -> bool {
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    let ep = Epoll::new().unwrap();
    ep.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 1))
        .unwrap();
    let mut ev = [EpollEvent::default(); 1];
    ep.wait(ms, &mut ev).unwrap() == 1
}
