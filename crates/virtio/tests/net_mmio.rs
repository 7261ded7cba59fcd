//! virtio-net behind virtio-mmio with a simulated guest driver, on a Unix datagram socket
//! pair standing in for the TAP (both keep frame boundaries): TX and RX frames with their
//! 12-byte headers, no busy host fd while the guest has no RX buffers, short and private
//! buffers refused. Plus `Tap::open` on a real TAP where this machine allows it.

mod common;

use common::{readable, Driver};
use sevm_virtio::device_id;
use sevm_virtio::net::*;
use sevm_virtio::status;
use std::os::unix::net::UnixDatagram;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const RX_BASE: u64 = 0x100000;
const RX_BUF: u32 = 1526;
const TX_BASE: u64 = 0x200000;

fn setup(confidential: bool) -> (Driver<Net<UnixDatagram>>, UnixDatagram) {
    let (dev, host) = UnixDatagram::pair().unwrap();
    dev.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let d = Driver::new(Net::new(dev, MAC).unwrap(), confidential, device_id::NET);
    (d, host)
}

/// A frame with its 12-byte header: a broadcast Ethernet frame of `len` bytes tagged `tag`.
fn frame(tag: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((0..len - 14).map(|i| tag.wrapping_add(i as u8)));
    f
}

fn pump(d: &mut Driver<Net<UnixDatagram>>) {
    let fd = d.t.host_fd().unwrap();
    while readable(fd, 50) {
        d.host_event();
    }
}

#[test]
fn mac_and_features_in_config() {
    let (d, _h) = setup(false);
    let mut m = [0u8; 6];
    d.t.read(0x100, &mut m);
    assert_eq!(m, MAC);
    // The driver selected feature word 1 last; select word 0 again.
    let mut t = d.t;
    common::w32(&mut t, 0x14, 0);
    let mut f = [0u8; 4];
    t.read(0x10, &mut f);
    let lo = u32::from_le_bytes(f);
    assert_ne!(lo & F_MAC as u32, 0, "VIRTIO_NET_F_MAC offered");
    assert_eq!(lo & !(F_MAC as u32), 0, "no offloads offered");
}

#[test]
fn tx_frames_reach_the_backend_with_a_clean_header() {
    let (mut d, host) = setup(false);
    let mut f = frame(1, 60);
    // Offload fields the device never offered: they must not reach the TAP.
    f[0] = 0x01;
    f[1] = 0x04;
    d.write(TX_BASE, &f[..HDR_LEN]);
    d.write(TX_BASE + 0x1000, &f[HDR_LEN..]);
    d.post(
        TXQ,
        &[
            (TX_BASE, HDR_LEN as u32, false),
            (TX_BASE + 0x1000, (f.len() - HDR_LEN) as u32, false),
        ],
    );
    d.kick(TXQ);
    assert_eq!(d.take_used(TXQ).len(), 1);
    let mut got = vec![0u8; 2048];
    let n = host.recv(&mut got).unwrap();
    assert_eq!(n, f.len());
    assert_eq!(&got[..HDR_LEN], &[0; HDR_LEN]);
    assert_eq!(&got[HDR_LEN..n], &f[HDR_LEN..]);
    assert_eq!(d.t.device().stats().tx_frames, 1);

    // Too short for a header, and a device-writable descriptor: dropped, buffers returned.
    d.post(TXQ, &[(TX_BASE, 8, false)]);
    d.post(TXQ, &[(TX_BASE, 60, true)]);
    d.kick(TXQ);
    assert_eq!(d.take_used(TXQ).len(), 2);
    assert!(host.recv(&mut got).is_err(), "nothing more sent");
    assert_eq!(d.t.device().stats().tx_dropped, 2);
}

#[test]
fn rx_frames_fill_guest_buffers_and_wait_for_them() {
    let (mut d, host) = setup(false);
    // No RX buffers yet: frames wait in the socket and the host fd goes quiet.
    for tag in 0..3 {
        host.send(&frame(tag, 100 + usize::from(tag))).unwrap();
    }
    let fd = d.t.host_fd().unwrap();
    assert!(readable(fd, 1000));
    d.host_event();
    assert!(
        !readable(fd, 50),
        "host fd must not stay readable while the guest has no buffers"
    );
    assert_eq!(d.t.device().stats().rx_frames, 0);

    let heads: Vec<u16> = (0..4)
        .map(|i| d.post(RXQ, &[(RX_BASE + 0x1000 * i, RX_BUF, true)]))
        .collect();
    d.kick(RXQ);
    let used = d.take_used(RXQ);
    assert_eq!(used.len(), 3);
    for (i, &(id, len)) in used.iter().enumerate() {
        assert_eq!(id, u32::from(heads[i]));
        let want = frame(i as u8, 100 + i);
        assert_eq!(len as usize, want.len());
        let got = d.read(RX_BASE + 0x1000 * i as u64, want.len());
        assert_eq!(&got[..10], &[0; 10]);
        assert_eq!(&got[10..12], &1u16.to_le_bytes(), "num_buffers");
        assert_eq!(&got[HDR_LEN..], &want[HDR_LEN..]);
    }
    // The fourth buffer is still there: a new frame lands in it through the host fd.
    host.send(&frame(9, 64)).unwrap();
    pump(&mut d);
    let used = d.take_used(RXQ);
    assert_eq!(used, vec![(u32::from(heads[3]), (HDR_LEN + 64) as u32)]);
    assert_eq!(d.t.device().stats().rx_frames, 4);
    assert_ne!(d.irq.0.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn short_and_private_rx_buffers_drop_the_frame_not_the_device() {
    let (mut d, host) = setup(true);
    const PRIV: u64 = 0x400000;
    d.private.add(PRIV, 0x10000);
    d.write(PRIV, &[0x77; 256]);
    let small = d.post(RXQ, &[(RX_BASE, 20, true)]);
    let private = d.post(RXQ, &[(PRIV, RX_BUF, true)]);
    let good = d.post(
        RXQ,
        &[(RX_BASE + 0x1000, 40, true), (RX_BASE + 0x2000, 2000, true)],
    );
    for tag in 0..3 {
        host.send(&frame(tag, 80)).unwrap();
    }
    d.kick(RXQ);
    pump(&mut d);
    let used = d.take_used(RXQ);
    assert_eq!(
        used,
        vec![
            (u32::from(small), 0),
            (u32::from(private), 0),
            (u32::from(good), (HDR_LEN + 80) as u32)
        ]
    );
    assert_eq!(
        d.read(PRIV, 256),
        vec![0x77; 256],
        "private memory untouched"
    );
    // The third frame was scattered over the two descriptors of the good chain.
    let mut got = d.read(RX_BASE + 0x1000, 40);
    got.extend(d.read(RX_BASE + 0x2000, HDR_LEN + 80 - 40));
    assert_eq!(&got[HDR_LEN..], &frame(2, 80)[HDR_LEN..]);
    let s = d.t.device().stats();
    assert_eq!((s.rx_frames, s.rx_dropped), (1, 2));

    // A TX frame in private memory: not read, not sent.
    d.post(TXQ, &[(PRIV + 0x1000, 72, false)]);
    d.kick(TXQ);
    assert_eq!(d.take_used(TXQ).len(), 1);
    let mut b = [0u8; 128];
    assert!(host.recv(&mut b).is_err());
    assert_eq!(d.t.device().stats().tx_dropped, 1);
    assert!(d.private.logged_count() >= 2);
    assert_eq!(d.t.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn backend_not_watched_before_driver_ok_or_after_reset() {
    let (dev, host) = UnixDatagram::pair().unwrap();
    dev.set_nonblocking(true).unwrap();
    let n = Net::new(dev, MAC).unwrap();
    host.send(&frame(1, 60)).unwrap();
    let fd = sevm_virtio::VirtioDevice::host_fd(&n).unwrap();
    assert!(!readable(fd, 50), "watched before DRIVER_OK");
    let mut d = Driver::new(n, false, device_id::NET);
    assert!(readable(fd, 1000), "watched once running");
    common::w32(&mut d.t, 0x70, 0);
    assert!(!readable(fd, 50), "watched after reset");
}

fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI: {why}");
    }
    eprintln!("SKIP: real TAP test: {why}");
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An ARP request from the guest for the TAP's address, with its (zero) virtio-net header.
fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(HDR_LEN + 60, 0);
    f
}

#[test]
fn tap_open_names_the_tap() {
    let e = Tap::open("this-name-is-far-too-long").err().unwrap();
    assert!(e.to_string().contains("this-name-is-far-too-long"), "{e}");
    let tap = match Tap::open("sevmtest0") {
        Ok(tap) => tap,
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("tap sevmtest0"), "{m}");
            return skip_or_fail(&format!(
                "cannot open a TAP here: {m} (needs CAP_NET_ADMIN and /dev/net/tun)"
            ));
        }
    };
    assert_eq!(tap.name(), "sevmtest0");
    // Permitted here: a real round trip through the kernel. The guest asks (ARP) for the
    // TAP's address; the host kernel answers to the guest's MAC through the TAP.
    if let Err(m) = ip(&["addr", "add", "10.213.7.1/24", "dev", "sevmtest0"])
        .and_then(|()| ip(&["link", "set", "sevmtest0", "up"]))
    {
        return skip_or_fail(&m);
    }
    let mut d = Driver::new(Net::new(tap, MAC).unwrap(), false, device_id::NET);
    let mut bufs = std::collections::HashMap::new();
    for i in 0..8u64 {
        let h = d.post(RXQ, &[(RX_BASE + 0x1000 * i, RX_BUF, true)]);
        bufs.insert(h, RX_BASE + 0x1000 * i);
    }
    d.kick(RXQ);
    let req = arp_request([10, 213, 7, 2], [10, 213, 7, 1]);
    d.write(TX_BASE, &req);
    d.post(TXQ, &[(TX_BASE, req.len() as u32, false)]);
    d.kick(TXQ);
    assert_eq!(d.take_used(TXQ).len(), 1);
    assert_eq!(d.t.device().stats().tx_frames, 1, "the TAP took the frame");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let reply = 'found: loop {
        assert!(std::time::Instant::now() < end, "no ARP reply within 5 s");
        if readable(d.t.host_fd().unwrap(), 100) {
            d.host_event();
        }
        for (id, len) in d.take_used(RXQ) {
            let addr = bufs.remove(&(id as u16)).unwrap();
            let f = d.read(addr, len as usize);
            let h = d.post(RXQ, &[(addr, RX_BUF, true)]);
            bufs.insert(h, addr);
            // Ethertype ARP, operation 2 (reply).
            if f.len() >= HDR_LEN + 42
                && f[HDR_LEN + 12..HDR_LEN + 14] == [8, 6]
                && f[HDR_LEN + 21] == 2
            {
                break 'found f;
            }
        }
        d.kick(RXQ);
    };
    let e = &reply[HDR_LEN..];
    assert_eq!(&e[..6], &MAC, "to the guest's MAC");
    assert_eq!(&e[28..32], &[10, 213, 7, 1], "sender is the TAP's address");
    assert_eq!(&e[32..38], &MAC);
    assert_eq!(&e[38..42], &[10, 213, 7, 2]);
    assert_eq!(&reply[10..12], &1u16.to_le_bytes(), "num_buffers");
}
