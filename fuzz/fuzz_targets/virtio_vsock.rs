//! virtio-vsock behind virtio-mmio with guest-controlled rings, descriptors and packets: the
//! first 12 KiB of the input become the ring area of the three queues (and packet bytes the
//! descriptors may point at); the rest is a list of 5-byte operations (kick, register write,
//! register read, reset, a host client's CONNECT line, host event). A listener is bound on
//! `<uds>_1`, so guest requests to port 1 connect. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sevm_virtio::access::PrivateRanges;
use sevm_virtio::mmio::MmioTransport;
use sevm_virtio::vsock::Vsock;
use sevm_virtio::Interrupt;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct Nop;
impl Interrupt for Nop {
    fn trigger(&self) {}
}

fn w(t: &mut MmioTransport<Vsock>, off: u64, v: u32) {
    let _ = t.write(off, &v.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let (ring, ops) = data.split_at(data.len().min(0x3000));
    mem.write_slice(ring, GuestAddress(0x10000)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let _port1 = UnixListener::bind(dir.path().join("v.sock_1")).unwrap();
    let dev = Vsock::new(3, &uds).unwrap();
    let confidential = data.first().is_some_and(|b| b & 1 == 1);
    let mut t = MmioTransport::new(dev, Arc::new(Nop), confidential);
    let mut private = PrivateRanges::none();
    if confidential {
        private.add(0x80000, 0x10000);
    }
    w(&mut t, 0x70, 3);
    w(&mut t, 0x24, 1);
    w(&mut t, 0x20, if confidential { 3 } else { 1 });
    w(&mut t, 0x70, 0xb);
    for q in 0..3u32 {
        let off = 0x800 * u64::from(q);
        w(&mut t, 0x30, q);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, (0x10000 + off) as u32);
        w(&mut t, 0x90, (0x11000 + off) as u32);
        w(&mut t, 0xa0, (0x12000 + off) as u32);
        w(&mut t, 0x44, 1);
    }
    w(&mut t, 0x70, 0xf);
    let mut clients = Vec::new();
    for op in ops.chunks_exact(5) {
        let v = u32::from_le_bytes([op[1], op[2], op[3], op[4]]);
        match op[0] % 6 {
            0 => t.notify(v % 4, &mem, &private),
            1 => w(&mut t, u64::from(op[1] & 0xfc) | (u64::from(op[2] & 1) << 8), v),
            2 => {
                let mut b = [0u8; 8];
                let n = 1 + usize::from(op[2] % 8);
                t.read(u64::from(op[1]) | (u64::from(op[3] & 1) << 8), &mut b[..n]);
            }
            3 => w(&mut t, 0x70, 0),
            4 if clients.len() < 8 => {
                if let Ok(mut c) = UnixStream::connect(&uds) {
                    let _ = c.set_nonblocking(true);
                    let _ = write!(c, "CONNECT {}\n", v % 4);
                    let _ = c.write_all(&op[1..]);
                    clients.push(c);
                }
            }
            _ => t.host_event(&mem, &private),
        }
    }
});
