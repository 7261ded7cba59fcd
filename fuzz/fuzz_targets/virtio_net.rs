//! virtio-net behind virtio-mmio with guest-controlled rings and descriptors, on a Unix
//! datagram pair standing in for the TAP: the first 12 KiB of the input become the ring area
//! of both queues (and frame bytes); the rest is a list of 5-byte operations (kick, register
//! write, register read, reset, a host frame of the op's length, host event). Must never panic;
//! every frame the device sends to the host carries a zeroed offload header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sevm_virtio::access::PrivateRanges;
use sevm_virtio::mmio::MmioTransport;
use sevm_virtio::net::{Net, HDR_LEN};
use sevm_virtio::Interrupt;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct Nop;
impl Interrupt for Nop {
    fn trigger(&self) {}
}

fn w(t: &mut MmioTransport<Net<UnixDatagram>>, off: u64, v: u32) {
    let _ = t.write(off, &v.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let (ring, ops) = data.split_at(data.len().min(0x3000));
    mem.write_slice(ring, GuestAddress(0x10000)).unwrap();
    let (dev, host) = UnixDatagram::pair().unwrap();
    dev.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let confidential = data.first().is_some_and(|b| b & 1 == 1);
    let net = Net::new(dev, [2, 0, 0, 0, 0, 1]).unwrap();
    let mut t = MmioTransport::new(net, Arc::new(Nop), confidential);
    let mut private = PrivateRanges::none();
    if confidential {
        private.add(0x80000, 0x10000);
    }
    w(&mut t, 0x70, 3);
    w(&mut t, 0x24, 1);
    w(&mut t, 0x20, if confidential { 3 } else { 1 });
    w(&mut t, 0x24, 0);
    w(&mut t, 0x20, 1 << 5);
    w(&mut t, 0x70, 0xb);
    for q in 0..2u32 {
        let off = 0x800 * u64::from(q);
        w(&mut t, 0x30, q);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, (0x10000 + off) as u32);
        w(&mut t, 0x90, (0x11000 + off) as u32);
        w(&mut t, 0xa0, (0x12000 + off) as u32);
        w(&mut t, 0x44, 1);
    }
    w(&mut t, 0x70, 0xf);
    let mut b = vec![0u8; 70000];
    for op in ops.chunks_exact(5) {
        let v = u32::from_le_bytes([op[1], op[2], op[3], op[4]]);
        match op[0] % 6 {
            0 => t.notify(v % 3, &mem, &private),
            1 => w(&mut t, u64::from(op[1] & 0xfc) | (u64::from(op[2] & 1) << 8), v),
            2 => {
                let mut r = [0u8; 8];
                let n = 1 + usize::from(op[2] % 8);
                t.read(u64::from(op[1]) | (u64::from(op[3] & 1) << 8), &mut r[..n]);
            }
            3 => w(&mut t, 0x70, 0),
            4 => {
                let len = (v as usize) % 2000;
                let _ = host.send(&vec![op[1]; len]);
            }
            _ => t.host_event(&mem, &private),
        }
        while let Ok(n) = host.recv(&mut b) {
            assert!(n >= HDR_LEN && b[..HDR_LEN].iter().all(|&x| x == 0));
        }
    }
});
