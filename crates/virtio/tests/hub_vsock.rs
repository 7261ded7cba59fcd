//! virtio-vsock under the device hub's event loop thread: a host client's `CONNECT` line
//! reaches the device through its epoll set (the hub watches that set's fd), and the guest
//! sees OP_REQUEST in an RX buffer with an interrupt.

use sevm_virtio::access::PrivateRanges;
use sevm_virtio::mmio::MmioTransport;
use sevm_virtio::runtime::{DeviceHub, IrqFd, QUEUE_NOTIFY};
use sevm_virtio::status;
use sevm_virtio::vsock::{self, Header, Vsock, HDR_LEN};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const BASE: u64 = 0xd000_0000;

fn w32(h: &DeviceHub, off: u64, v: u32) {
    assert!(h.mmio_write(BASE + off, &v.to_le_bytes()));
}

#[test]
fn host_connect_reaches_guest_through_the_event_loop() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let irq = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let dev = Vsock::new(7, &uds).unwrap();
    let t = MmioTransport::new(dev, Arc::new(IrqFd(irq.clone())), false);
    let mut hub = DeviceHub::new(mem.clone(), Arc::new(PrivateRanges::none())).unwrap();
    hub.add(BASE, Box::new(t)).unwrap();
    assert_eq!(hub.ioeventfds().len(), 3);
    hub.start().unwrap();

    w32(&hub, 0x70, status::ACKNOWLEDGE | status::DRIVER);
    w32(&hub, 0x24, 1);
    w32(&hub, 0x20, 1);
    w32(&hub, 0x70, 0xb);
    for q in 0..3u32 {
        let off = 0x4000 * u64::from(q);
        w32(&hub, 0x30, q);
        w32(&hub, 0x38, 8);
        w32(&hub, 0x80, (0x10000 + off) as u32);
        w32(&hub, 0x90, (0x11000 + off) as u32);
        w32(&hub, 0xa0, (0x12000 + off) as u32);
        w32(&hub, 0x44, 1);
    }
    w32(&hub, 0x70, 0xf);
    // One RX buffer of 4 KiB at 0x30000.
    mem.write_obj(0x30000u64, GuestAddress(0x10000)).unwrap();
    mem.write_obj(4096u32, GuestAddress(0x10008)).unwrap();
    mem.write_obj(2u16, GuestAddress(0x1000c)).unwrap();
    mem.write_obj(0u16, GuestAddress(0x11004)).unwrap();
    mem.write_obj(1u16, GuestAddress(0x11002)).unwrap();
    w32(&hub, QUEUE_NOTIFY, 0);

    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT 1024\n").unwrap();
    let t0 = Instant::now();
    while irq.read().is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no interrupt");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(mem.read_obj::<u16>(GuestAddress(0x12002)).unwrap(), 1);
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(0x12008)).unwrap(),
        HDR_LEN as u32
    );
    let mut b = [0u8; HDR_LEN];
    mem.read_slice(&mut b, GuestAddress(0x30000)).unwrap();
    let h = Header::parse(&b);
    assert_eq!(h.op, vsock::OP_REQUEST);
    assert_eq!(
        (h.src_cid, h.dst_cid, h.dst_port),
        (vsock::HOST_CID, 7, 1024)
    );
    drop(hub);
}
