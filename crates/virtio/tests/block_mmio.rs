//! virtio-blk behind the virtio-mmio transport, driven as Linux's `virtio_mmio` + `virtio_blk`
//! drivers drive it: feature negotiation, queue setup through the registers, requests posted
//! on the split ring, kicks, used-ring completions and interrupts; plus a hostile driver.

use sevm_virtio::access::PrivateRanges;
use sevm_virtio::block::{self, Block};
use sevm_virtio::mmio::{MmioTransport, Notify, INT_VRING};
use sevm_virtio::{features, status, Interrupt};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const QSZ: u16 = 16;
const DESC: u64 = 0x10000;
const AVAIL: u64 = 0x11000;
const USED: u64 = 0x12000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

#[derive(Default)]
struct Count(AtomicUsize);
impl Interrupt for Count {
    fn trigger(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Driver {
    mem: GuestMemoryMmap,
    t: MmioTransport<Block>,
    irq: Arc<Count>,
    private: PrivateRanges,
    next_desc: u16,
    avail_idx: u16,
}

fn w32(t: &mut MmioTransport<Block>, off: u64, v: u32) -> Notify {
    t.write(off, &v.to_le_bytes())
}
fn r32(t: &MmioTransport<Block>, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

impl Driver {
    fn new(dev: Block, confidential: bool, ack_access_platform: bool) -> Driver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let irq = Arc::new(Count::default());
        let mut t = MmioTransport::new(dev, irq.clone(), confidential);
        assert_eq!(r32(&t, 0), 0x7472_6976);
        assert_eq!(r32(&t, 4), 2);
        assert_eq!(r32(&t, 8), 2, "device id: block");
        w32(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        w32(&mut t, 0x14, 0);
        let lo = r32(&t, 0x10);
        w32(&mut t, 0x14, 1);
        let hi = r32(&t, 0x10);
        let offered = u64::from(lo) | (u64::from(hi) << 32);
        assert_ne!(offered & features::VERSION_1, 0);
        assert_eq!(offered & features::ACCESS_PLATFORM != 0, confidential);
        let mut want = offered;
        if !ack_access_platform {
            want &= !features::ACCESS_PLATFORM;
        }
        w32(&mut t, 0x24, 0);
        w32(&mut t, 0x20, want as u32);
        w32(&mut t, 0x24, 1);
        w32(&mut t, 0x20, (want >> 32) as u32);
        w32(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        w32(&mut t, 0x30, 0);
        assert_eq!(r32(&t, 0x34), u32::from(block::QUEUE_SIZE));
        w32(&mut t, 0x38, u32::from(QSZ));
        w32(&mut t, 0x80, DESC as u32);
        w32(&mut t, 0x84, 0);
        w32(&mut t, 0x90, AVAIL as u32);
        w32(&mut t, 0x94, 0);
        w32(&mut t, 0xa0, USED as u32);
        w32(&mut t, 0xa4, 0);
        w32(&mut t, 0x44, 1);
        let st = r32(&t, 0x70);
        if st & status::FEATURES_OK != 0 {
            w32(&mut t, 0x70, st | status::DRIVER_OK);
        }
        Driver {
            mem,
            t,
            irq,
            private: PrivateRanges::none(),
            next_desc: 0,
            avail_idx: 0,
        }
    }

    /// Writes descriptors (addr, len, write-only) as one chain and makes it available.
    fn post(&mut self, descs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, wr)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % QSZ;
            let last = i + 1 == descs.len();
            let flags = if wr { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            let next = (idx + 1) % QSZ;
            let a = DESC + 16 * u64::from(idx);
            self.mem.write_obj(addr, GuestAddress(a)).unwrap();
            self.mem.write_obj(len, GuestAddress(a + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(a + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(a + 14)).unwrap();
        }
        self.next_desc = (head + descs.len() as u16) % QSZ;
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QSZ);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        head
    }

    fn kick(&mut self) {
        assert_eq!(w32(&mut self.t, 0x50, 0), Notify::Queue(0));
        self.t.notify(0, &self.mem, &self.private);
    }

    fn used(&self, n: u16) -> (u32, u32) {
        let e = USED + 4 + 8 * u64::from(n % QSZ);
        (
            self.mem.read_obj(GuestAddress(e)).unwrap(),
            self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
        )
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// One request: header at 0x20000, data at `data`, status at 0x20100.
    fn request(&mut self, rtype: u32, sector: u64, data: Option<(u64, u32, bool)>) -> (u8, u32) {
        let mut hdr = [0u8; 16];
        hdr[..4].copy_from_slice(&rtype.to_le_bytes());
        hdr[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&hdr, GuestAddress(0x20000)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(0x20100)).unwrap();
        let mut d = vec![(0x20000, 16, false)];
        d.extend(data);
        d.push((0x20100, 1, true));
        let n = self.used_idx();
        let head = self.post(&d);
        self.kick();
        assert_eq!(self.used_idx(), n.wrapping_add(1), "one completion");
        let (id, len) = self.used(n);
        assert_eq!(id, u32::from(head));
        (self.mem.read_obj(GuestAddress(0x20100)).unwrap(), len)
    }
}

fn image(sectors: u64) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..sectors * 512).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    f.flush().unwrap();
    f
}

#[test]
fn read_write_flush_get_id_and_capacity() {
    let img = image(64);
    let dev = Block::open(img.path(), false, Some("disk0")).unwrap();
    let mut d = Driver::new(dev, false, false);
    assert_ne!(d.t.status() & status::DRIVER_OK, 0);
    let mut cap = [0u8; 8];
    d.t.read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 64);

    // Read sectors 2..4 into 0x30000.
    let (st, len) = d.request(block::T_IN, 2, Some((0x30000, 1024, true)));
    assert_eq!((st, len), (block::S_OK, 1025));
    let mut got = vec![0u8; 1024];
    d.mem.read_slice(&mut got, GuestAddress(0x30000)).unwrap();
    let want: Vec<u8> = (1024..2048u64).map(|i| (i % 251) as u8).collect();
    assert_eq!(got, want);
    assert!(d.irq.0.load(Ordering::SeqCst) >= 1);
    let mut isr = [0u8; 4];
    d.t.read(0x60, &mut isr);
    assert_ne!(u32::from_le_bytes(isr) & INT_VRING, 0);

    // Write sector 5 from 0x40000, flush, and see it in the file.
    d.mem
        .write_slice(&[0xA5; 512], GuestAddress(0x40000))
        .unwrap();
    assert_eq!(
        d.request(block::T_OUT, 5, Some((0x40000, 512, false))).0,
        block::S_OK
    );
    assert_eq!(d.request(block::T_FLUSH, 0, None).0, block::S_OK);
    let mut f = std::fs::File::open(img.path()).unwrap();
    f.seek(SeekFrom::Start(5 * 512)).unwrap();
    let mut s = [0u8; 512];
    f.read_exact(&mut s).unwrap();
    assert_eq!(s, [0xA5; 512]);

    let (st, len) = d.request(block::T_GET_ID, 0, Some((0x50000, 20, true)));
    assert_eq!((st, len), (block::S_OK, 21));
    let mut id = [0u8; 20];
    d.mem.read_slice(&mut id, GuestAddress(0x50000)).unwrap();
    assert_eq!(&id[..6], b"disk0\0");

    // Past the end, not a sector multiple, unknown type: errors, device still fine.
    assert_eq!(
        d.request(block::T_IN, 63, Some((0x30000, 1024, true))).0,
        block::S_IOERR
    );
    assert_eq!(
        d.request(block::T_IN, u64::MAX / 256, Some((0x30000, 512, true)))
            .0,
        block::S_IOERR
    );
    assert_eq!(
        d.request(block::T_IN, 0, Some((0x30000, 100, true))).0,
        block::S_IOERR
    );
    assert_eq!(d.request(99, 0, None).0, block::S_UNSUPP);
    // A read whose buffer is outside RAM.
    assert_eq!(
        d.request(block::T_IN, 0, Some((1 << 40, 512, true))).0,
        block::S_IOERR
    );
    assert_eq!(d.t.status() & status::DEVICE_NEEDS_RESET, 0);
    let s = d.t.device().stats();
    assert_eq!((s.ok, s.failed), (4, 5));
}

#[test]
fn readonly_disk_refuses_writes_and_stays_unchanged() {
    let img = image(8);
    let before = std::fs::read(img.path()).unwrap();
    let dev = Block::open(img.path(), true, None).unwrap();
    let mut d = Driver::new(dev, false, false);
    let mut f = [0u8; 4];
    w32(&mut d.t, 0x14, 0);
    d.t.read(0x10, &mut f);
    assert_ne!(
        u32::from_le_bytes(f) & (1 << 5),
        0,
        "VIRTIO_BLK_F_RO offered"
    );
    d.mem.write_slice(&[1; 512], GuestAddress(0x40000)).unwrap();
    assert_eq!(
        d.request(block::T_OUT, 0, Some((0x40000, 512, false))).0,
        block::S_IOERR
    );
    assert_eq!(std::fs::read(img.path()).unwrap(), before);
}

#[test]
fn confidential_guest_private_buffers_are_refused_and_vm_goes_on() {
    let img = image(8);
    let dev = Block::open(img.path(), false, None).unwrap();
    let mut d = Driver::new(dev, true, true);
    assert_ne!(d.t.status() & status::DRIVER_OK, 0);
    d.private.add(0x100000, 0x100000);
    d.mem
        .write_slice(&[0x77; 512], GuestAddress(0x100000))
        .unwrap();
    // A read into private memory: IOERR, the private bytes untouched.
    assert_eq!(
        d.request(block::T_IN, 0, Some((0x100000, 512, true))).0,
        block::S_IOERR
    );
    let mut p = [0u8; 512];
    d.mem.read_slice(&mut p, GuestAddress(0x100000)).unwrap();
    assert_eq!(p, [0x77; 512]);
    // A write from private memory: IOERR, the disk untouched.
    let before = std::fs::read(img.path()).unwrap();
    assert_eq!(
        d.request(block::T_OUT, 0, Some((0x1ff000, 512, false))).0,
        block::S_IOERR
    );
    assert_eq!(std::fs::read(img.path()).unwrap(), before);
    // Shared memory still works.
    assert_eq!(
        d.request(block::T_IN, 0, Some((0x30000, 512, true))).0,
        block::S_OK
    );
    assert_eq!(d.private.logged_count(), 2);
}

#[test]
fn confidential_guest_must_accept_access_platform() {
    let img = image(8);
    let dev = Block::open(img.path(), false, None).unwrap();
    let d = Driver::new(dev, true, false);
    assert_eq!(d.t.status() & status::FEATURES_OK, 0);
    assert_eq!(d.t.status() & status::DRIVER_OK, 0);
}

#[test]
fn hostile_rings_set_needs_reset_without_panicking() {
    let img = image(8);
    let dev = Block::open(img.path(), false, None).unwrap();
    let mut d = Driver::new(dev, false, false);
    // A descriptor loop: 0 -> 1 -> 0 ...; the chain ends after QSZ descriptors, no status
    // descriptor is found, the request is dropped with length 0.
    for (i, next) in [(0u64, 1u16), (1, 0)] {
        let a = DESC + 16 * i;
        d.mem.write_obj(0x20000u64, GuestAddress(a)).unwrap();
        d.mem.write_obj(16u32, GuestAddress(a + 8)).unwrap();
        d.mem.write_obj(F_NEXT, GuestAddress(a + 12)).unwrap();
        d.mem.write_obj(next, GuestAddress(a + 14)).unwrap();
    }
    d.mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
    d.mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
    d.avail_idx = 1;
    d.next_desc = 2;
    d.kick();
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used(0).1, 0);
    assert_eq!(d.t.device().stats().dropped, 1);
    // The device still serves a good request afterwards.
    assert_eq!(
        d.request(block::T_IN, 0, Some((0x30000, 512, true))).0,
        block::S_OK
    );
    // An avail index far ahead of the ring: the queue is broken, NEEDS_RESET, config interrupt.
    d.mem
        .write_obj(d.avail_idx + 100, GuestAddress(AVAIL + 2))
        .unwrap();
    d.kick();
    assert_ne!(d.t.status() & status::DEVICE_NEEDS_RESET, 0);
    // Reset by the driver clears it.
    w32(&mut d.t, 0x70, 0);
    assert_eq!(d.t.status(), 0);
}

#[test]
fn rings_in_private_memory_need_reset() {
    let img = image(8);
    let dev = Block::open(img.path(), false, None).unwrap();
    let mut d = Driver::new(dev, true, true);
    d.private.add(DESC, 0x1000);
    d.post(&[(0x20000, 16, false), (0x20100, 1, true)]);
    d.kick();
    assert_ne!(d.t.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(d.used_idx(), 0, "nothing was processed");
}

#[test]
fn unaligned_image_and_missing_file_are_named() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&[0; 100]).unwrap();
    let e = Block::open(f.path(), false, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a multiple of 512"), "{e}");
    let e = Block::open(std::path::Path::new("/nonexistent/disk.img"), true, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/disk.img"), "{e}");
}
