//! virtio-blk behind virtio-mmio with guest-controlled rings, descriptors and registers: the
//! first 12 KiB of the input become the ring area (descriptor table, avail and used rings) and
//! request headers; the rest is a list of 5-byte operations (kick, register write, register
//! read, reset). Must never panic; the disk file must keep its size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sevm_virtio::access::PrivateRanges;
use sevm_virtio::block::Block;
use sevm_virtio::mmio::MmioTransport;
use sevm_virtio::Interrupt;
use std::io::Write;
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct Nop;
impl Interrupt for Nop {
    fn trigger(&self) {}
}

fn w(t: &mut MmioTransport<Block>, off: u64, v: u32) {
    let _ = t.write(off, &v.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let (ring, ops) = data.split_at(data.len().min(0x3000));
    mem.write_slice(ring, GuestAddress(0x10000)).unwrap();
    // Keep most of the input reachable: descriptor addresses mostly inside the 1 MiB of RAM
    // (the top bit of each descriptor's flags byte keeps the raw address), and an avail index
    // within one ring's worth of the start.
    for i in 0..16u64 {
        let a = GuestAddress(0x10000 + 16 * i);
        let flags: u16 = mem.read_obj(GuestAddress(a.0 + 12)).unwrap();
        if flags & 0x8000 == 0 {
            let addr: u64 = mem.read_obj(a).unwrap();
            mem.write_obj(addr & 0xf_ffff, a).unwrap();
        }
    }
    let idx = data.get(1).map_or(0, |b| u16::from(*b % 17));
    mem.write_obj(idx, GuestAddress(0x11002)).unwrap();
    let mut img = tempfile::NamedTempFile::new().unwrap();
    img.write_all(&[0x5a; 8 * 512]).unwrap();
    let dev = Block::open(img.path(), false, None).unwrap();
    let confidential = data.first().is_some_and(|b| b & 1 == 1);
    let mut t = MmioTransport::new(dev, Arc::new(Nop), confidential);
    let mut private = PrivateRanges::none();
    if confidential {
        private.add(0x80000, 0x10000);
    }
    // A well-behaved setup, then whatever the input says (a reset op sets it up again).
    setup(&mut t, confidential);
    t.notify(0, &mem, &private);
    for op in ops.chunks_exact(5) {
        let v = u32::from_le_bytes([op[1], op[2], op[3], op[4]]);
        match op[0] % 4 {
            0 => t.notify(v % 3, &mem, &private),
            1 => w(&mut t, u64::from(op[1] & 0xfc) | (u64::from(op[2] & 1) << 8), v),
            2 => {
                let mut b = [0u8; 8];
                let n = 1 + usize::from(op[2] % 8);
                t.read(u64::from(op[1]) | (u64::from(op[3] & 1) << 8), &mut b[..n]);
            }
            _ => {
                w(&mut t, 0x70, 0);
                setup(&mut t, confidential);
            }
        }
    }
    assert_eq!(std::fs::metadata(img.path()).unwrap().len(), 8 * 512);
});

fn setup(t: &mut MmioTransport<Block>, confidential: bool) {
    w(t, 0x70, 3);
    w(t, 0x24, 1);
    w(t, 0x20, if confidential { 3 } else { 1 });
    w(t, 0x70, 0xb);
    w(t, 0x38, 16);
    w(t, 0x80, 0x10000);
    w(t, 0x90, 0x11000);
    w(t, 0xa0, 0x12000);
    w(t, 0x44, 1);
    w(t, 0x70, 0xf);
}
