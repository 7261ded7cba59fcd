//! The device hub: register accesses routed by window, kicks through the event loop thread,
//! interrupts on the device's eventfd, and host-side readiness for a device with a host fd.

use sevm_virtio::access::PrivateRanges;
use sevm_virtio::block::{self, Block};
use sevm_virtio::mmio::MmioTransport;
use sevm_virtio::runtime::{DeviceHub, IrqFd, QUEUE_NOTIFY};
use sevm_virtio::status;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const BASE: u64 = 0xd000_0000;

fn w32(h: &DeviceHub, off: u64, v: u32) {
    assert!(h.mmio_write(BASE + off, &v.to_le_bytes()));
}

#[test]
fn block_request_through_the_event_loop() {
    let mut img = tempfile::NamedTempFile::new().unwrap();
    img.write_all(&[0x3c; 4096]).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let irq = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let dev = Block::open(img.path(), false, None).unwrap();
    let t = MmioTransport::new(dev, Arc::new(IrqFd(irq.clone())), false);
    let mut hub = DeviceHub::new(mem.clone(), Arc::new(PrivateRanges::none())).unwrap();
    hub.add(BASE, Box::new(t)).unwrap();
    assert_eq!(hub.ioeventfds().len(), 1);
    assert_eq!(hub.ioeventfds()[0].0, BASE + QUEUE_NOTIFY);
    // Outside every window: not handled.
    assert!(!hub.mmio_write(BASE + 0x1000, &[0; 4]));
    let mut magic = [0u8; 4];
    assert!(hub.mmio_read(BASE, &mut magic));
    assert_eq!(&magic, b"virt");
    hub.start().unwrap();

    w32(&hub, 0x70, status::ACKNOWLEDGE | status::DRIVER);
    w32(&hub, 0x24, 1);
    w32(&hub, 0x20, 1);
    w32(&hub, 0x70, 0xb);
    w32(&hub, 0x38, 8);
    w32(&hub, 0x80, 0x10000);
    w32(&hub, 0x90, 0x11000);
    w32(&hub, 0xa0, 0x12000);
    w32(&hub, 0x44, 1);
    w32(&hub, 0x70, 0xf);
    // One IN request of one sector into 0x30000.
    let hdr = [0u8; 16];
    mem.write_slice(&hdr, GuestAddress(0x20000)).unwrap();
    for (i, (addr, len, flags, next)) in [
        (0x20000u64, 16u32, 1u16, 1u16),
        (0x30000, 512, 3, 2),
        (0x20100, 1, 2, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let a = 0x10000 + 16 * i as u64;
        mem.write_obj(addr, GuestAddress(a)).unwrap();
        mem.write_obj(len, GuestAddress(a + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(a + 12)).unwrap();
        mem.write_obj(next, GuestAddress(a + 14)).unwrap();
    }
    mem.write_obj(0u16, GuestAddress(0x11004)).unwrap();
    mem.write_obj(1u16, GuestAddress(0x11002)).unwrap();
    w32(&hub, QUEUE_NOTIFY, 0);
    let t0 = Instant::now();
    while irq.read().is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no interrupt");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(mem.read_obj::<u16>(GuestAddress(0x12002)).unwrap(), 1);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x20100)).unwrap(),
        block::S_OK
    );
    let mut got = [0u8; 512];
    mem.read_slice(&mut got, GuestAddress(0x30000)).unwrap();
    assert_eq!(got, [0x3c; 512]);
    drop(hub); // joins the loop thread
}
