//! virtio-vsock behind virtio-mmio with a simulated guest driver on the rings and real Unix
//! sockets on the host: guest-to-host connections to an echo server on `<uds>_PORT`,
//! host-to-guest connections through `CONNECT PORT\n` on `<uds>`, credit flow control,
//! teardown, refused ports, malformed packets and buffers in private memory.

mod common;

use common::{readable, Driver};
use sevm_virtio::device_id;
use sevm_virtio::status;
use sevm_virtio::vsock::*;
use sevm_virtio::VirtioDevice;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GUEST_CID: u64 = 3;
const RX_BASE: u64 = 0x100000;
const RX_BUF: u32 = 4096;
const TX_BASE: u64 = 0x200000;

struct Guest {
    d: Driver<Vsock>,
    /// RX chain head -> buffer address.
    rx_bufs: HashMap<u16, u64>,
    rx_next: u64,
    tx_slot: u64,
    _dir: tempfile::TempDir,
    uds: PathBuf,
}

impl Guest {
    fn new(confidential: bool) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let dev = Vsock::new(GUEST_CID, &uds).unwrap();
        let mut g = Guest {
            d: Driver::new(dev, confidential, device_id::VSOCK),
            rx_bufs: HashMap::new(),
            rx_next: 0,
            tx_slot: 0,
            _dir: dir,
            uds,
        };
        for _ in 0..8 {
            g.post_rx();
        }
        g.d.kick(RXQ);
        assert!(g.d.take_used(RXQ).is_empty(), "nothing to send yet");
        g
    }

    fn post_rx_at(&mut self, addr: u64) {
        let head = self.d.post(RXQ, &[(addr, RX_BUF, true)]);
        self.rx_bufs.insert(head, addr);
    }

    fn post_rx(&mut self) {
        let addr = RX_BASE + u64::from(RX_BUF) * (self.rx_next % 8);
        self.rx_next += 1;
        self.post_rx_at(addr);
    }

    /// Packets the device put on RX since the last call (each buffer is posted again).
    fn rx(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        let used = self.d.take_used(RXQ);
        for &(id, len) in &used {
            let addr = self.rx_bufs.remove(&(id as u16)).expect("a posted buffer");
            if len > 0 {
                let b = self.d.read(addr, len as usize);
                let mut h = [0u8; HDR_LEN];
                h.copy_from_slice(&b[..HDR_LEN]);
                let h = Header::parse(&h);
                assert_eq!(HDR_LEN + h.len as usize, len as usize, "used length");
                out.push((h, b[HDR_LEN..].to_vec()));
            }
            self.post_rx_at(addr);
        }
        if !used.is_empty() {
            self.d.kick(RXQ);
            out.extend(self.rx());
        }
        out
    }

    /// Host events until the device has something for the guest (or 5 s pass).
    fn wait_rx(&mut self) -> Vec<(Header, Vec<u8>)> {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.rx();
            if !got.is_empty() {
                return got;
            }
            let fd = self.d.t.host_fd().unwrap();
            assert!(Instant::now() < end, "no packet for the guest within 5 s");
            if readable(fd, 100) {
                self.d.host_event();
            }
        }
    }

    /// Sends a packet on TX as the given descriptors (each a slice of the packet bytes,
    /// at an address of its own); returns the TX used entries.
    fn tx_raw(&mut self, parts: &[&[u8]]) -> Vec<(u32, u32)> {
        let mut descs = Vec::new();
        for p in parts {
            let addr = TX_BASE + 0x11000 * (self.tx_slot % 8);
            self.tx_slot += 1;
            self.d.write(addr, p);
            descs.push((addr, p.len() as u32, false));
        }
        self.d.post(TXQ, &descs);
        self.d.kick(TXQ);
        self.d.take_used(TXQ)
    }

    fn tx(&mut self, h: Header, payload: &[u8]) {
        let mut b = h.bytes().to_vec();
        b.extend_from_slice(payload);
        let used = self.tx_raw(&[&b]);
        assert_eq!(used.len(), 1, "TX buffer returned");
    }
}

fn hdr(src_port: u32, dst_port: u32, op: u16, len: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 65536,
        fwd_cnt: 0,
    }
}

/// An echo server on `<uds>_<port>` serving one connection; returns the bytes it saw.
fn echo_server(uds: &Path, port: u32) -> std::thread::JoinHandle<Vec<u8>> {
    let mut p = uds.as_os_str().to_owned();
    p.push(format!("_{port}"));
    let l = UnixListener::bind(&p).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut seen = Vec::new();
        let mut b = [0u8; 1024];
        loop {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return seen,
                Ok(n) => {
                    seen.extend_from_slice(&b[..n]);
                    s.write_all(&b[..n]).unwrap();
                }
            }
        }
    })
}

#[test]
fn config_holds_the_guest_cid() {
    let g = Guest::new(false);
    let mut b = [0u8; 8];
    g.d.t.read(0x100, &mut b);
    assert_eq!(u64::from_le_bytes(b), GUEST_CID);
    let mut hi = [0xffu8; 4];
    g.d.t.read(0x108, &mut hi);
    assert_eq!(hi, [0; 4], "bytes past the config read as 0");
}

#[test]
fn guest_connects_to_host_echo_server_and_closes() {
    let mut g = Guest::new(false);
    let server = echo_server(&g.uds, 1234);
    g.tx(hdr(5000, 1234, OP_REQUEST, 0), &[]);
    let p = g.wait_rx();
    assert_eq!(p.len(), 1);
    let (h, _) = &p[0];
    assert_eq!(h.op, OP_RESPONSE);
    assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!((h.src_port, h.dst_port), (1234, 5000));
    assert_eq!(h.buf_alloc, BUF_ALLOC);
    assert_eq!(g.d.t.device().connections(), 1);

    // Data: header and payload in separate descriptors, as older Linux drivers post them.
    let msg = b"hello over vsock";
    let h = hdr(5000, 1234, OP_RW, msg.len() as u32);
    let used = g.tx_raw(&[&h.bytes(), msg]);
    assert_eq!(used.len(), 1);
    let mut echoed = Vec::new();
    while echoed.len() < msg.len() {
        for (h, data) in g.wait_rx() {
            assert_eq!(h.op, OP_RW);
            assert_eq!((h.src_port, h.dst_port), (1234, 5000));
            echoed.extend(data);
        }
    }
    assert_eq!(echoed, msg);
    // Our consumption is reported: everything written to the host socket.
    assert_eq!(g.d.t.device().stats().tx_bytes, msg.len() as u64);

    // The guest closes: SHUTDOWN(both) -> RST, the host socket closes, the server ends.
    let mut h = hdr(5000, 1234, OP_SHUTDOWN, 0);
    h.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.tx(h, &[]);
    let p = g.rx();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.op, OP_RST);
    assert_eq!(g.d.t.device().connections(), 0);
    assert_eq!(server.join().unwrap(), msg);
    assert_ne!(g.d.irq.0.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn host_connects_in_with_connect_line() {
    let mut g = Guest::new(false);
    let mut client = UnixStream::connect(&g.uds).unwrap();
    // Bytes after the line are stream data, not part of the handshake.
    client.write_all(b"CONNECT 52\nearly").unwrap();
    let p = g.wait_rx();
    assert_eq!(p.len(), 1);
    let (req, _) = p[0].clone();
    assert_eq!(req.op, OP_REQUEST);
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!(req.dst_port, 52);
    assert_eq!(req.src_port, FIRST_LOCAL_PORT);

    // The guest accepts.
    g.tx(hdr(52, req.src_port, OP_RESPONSE, 0), &[]);
    let mut line = [0u8; 64];
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = client.read(&mut line).unwrap();
    assert_eq!(&line[..n], format!("OK {}\n", FIRST_LOCAL_PORT).as_bytes());

    let mut got = Vec::new();
    while got.len() < 5 {
        for (h, d) in g.wait_rx() {
            assert_eq!(h.op, OP_RW);
            assert_eq!((h.src_port, h.dst_port), (FIRST_LOCAL_PORT, 52));
            got.extend(d);
        }
    }
    assert_eq!(got, b"early");

    g.tx(hdr(52, req.src_port, OP_RW, 4), b"pong");
    let mut b = [0u8; 4];
    client.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");

    // The host client goes away: the guest is told neither side sends more.
    drop(client);
    let p = g.wait_rx();
    assert_eq!(p[0].0.op, OP_SHUTDOWN);
    assert_eq!(p[0].0.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    g.tx(hdr(52, req.src_port, OP_RST, 0), &[]);
    assert_eq!(g.d.t.device().connections(), 0);
}

#[test]
fn host_connection_refused_by_guest_and_bad_connect_lines() {
    let mut g = Guest::new(false);
    let mut bad = UnixStream::connect(&g.uds).unwrap();
    bad.write_all(b"HELLO 52\n").unwrap();
    bad.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    // The device closes a client with a bad line, sending nothing to the guest.
    let end = Instant::now() + Duration::from_secs(5);
    let mut b = [0u8; 8];
    loop {
        if readable(g.d.t.host_fd().unwrap(), 100) {
            g.d.host_event();
        }
        if let Ok(0) = bad.read(&mut b) {
            break;
        }
        assert!(Instant::now() < end, "bad client not closed");
    }
    assert!(g.rx().is_empty());

    let mut c = UnixStream::connect(&g.uds).unwrap();
    c.write_all(b"CONNECT 99\n").unwrap();
    let p = g.wait_rx();
    let req = p[0].0;
    assert_eq!(req.op, OP_REQUEST);
    g.tx(hdr(99, req.src_port, OP_RST, 0), &[]);
    assert_eq!(g.d.t.device().connections(), 0);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(c.read(&mut b).unwrap(), 0, "client closed, no OK line");
}

#[test]
fn refused_port_gets_rst() {
    let mut g = Guest::new(false);
    g.tx(hdr(5001, 4321, OP_REQUEST, 0), &[]);
    let p = g.rx();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.op, OP_RST);
    assert_eq!((p[0].0.src_port, p[0].0.dst_port), (4321, 5001));
    assert_eq!(g.d.t.device().connections(), 0);
}

#[test]
fn host_data_respects_guest_credit() {
    let mut g = Guest::new(false);
    let mut p = g.uds.as_os_str().to_owned();
    p.push("_77");
    let l = UnixListener::bind(&p).unwrap();
    let mut req = hdr(6000, 77, OP_REQUEST, 0);
    req.buf_alloc = 16;
    g.tx(req, &[]);
    assert_eq!(g.rx()[0].0.op, OP_RESPONSE);
    let (mut s, _) = l.accept().unwrap();
    s.write_all(&[9u8; 100]).unwrap();
    let mut got = 0;
    for (h, d) in g.wait_rx() {
        assert_eq!(h.op, OP_RW);
        got += d.len();
    }
    // Give the device every chance to send more: it must not.
    for _ in 0..5 {
        if readable(g.d.t.host_fd().unwrap(), 20) {
            g.d.host_event();
        }
        got += g.rx().iter().map(|(_, d)| d.len()).sum::<usize>();
    }
    assert_eq!(got, 16, "exactly the guest's buf_alloc");
    // The guest consumed 16 bytes: 16 more may come.
    let mut cu = hdr(6000, 77, OP_CREDIT_UPDATE, 0);
    cu.buf_alloc = 16;
    cu.fwd_cnt = 16;
    g.tx(cu, &[]);
    let mut more = g.rx().iter().map(|(_, d)| d.len()).sum::<usize>();
    if more == 0 {
        more = g.wait_rx().iter().map(|(_, d)| d.len()).sum::<usize>();
    }
    assert_eq!(more, 16);
    // A credit request is answered with our window.
    g.tx(hdr(6000, 77, OP_CREDIT_REQUEST, 0), &[]);
    let p = g.rx();
    assert_eq!(p[0].0.op, OP_CREDIT_UPDATE);
    assert_eq!(p[0].0.buf_alloc, BUF_ALLOC);
}

#[test]
fn malformed_packets_are_dropped_or_reset_never_fatal() {
    let mut g = Guest::new(false);
    // A header cut short: dropped, nothing to answer.
    let used = g.tx_raw(&[&hdr(1, 2, OP_REQUEST, 0).bytes()[..20]]);
    assert_eq!(used.len(), 1);
    assert!(g.rx().is_empty());
    assert_eq!(g.d.t.device().stats().tx_dropped, 1);
    // A wrong source CID: dropped.
    let mut h = hdr(1, 2, OP_REQUEST, 0);
    h.src_cid = 42;
    g.tx(h, &[]);
    assert!(g.rx().is_empty());
    assert_eq!(g.d.t.device().stats().tx_dropped, 2);

    let mut cases = Vec::new();
    // Unknown op.
    cases.push((hdr(10, 20, 99, 0), Vec::new()));
    // Length beyond the buffer.
    cases.push((hdr(11, 20, OP_RW, 1000), vec![1u8; 10]));
    // Length beyond anything allowed.
    cases.push((hdr(12, 20, OP_RW, u32::MAX), vec![1u8; 10]));
    // Unknown destination CID.
    let mut h = hdr(13, 20, OP_REQUEST, 0);
    h.dst_cid = 7;
    cases.push((h, Vec::new()));
    // Not a stream.
    let mut h = hdr(14, 20, OP_REQUEST, 0);
    h.type_ = 2;
    cases.push((h, Vec::new()));
    // Data, response, shutdown, credit update on no connection.
    cases.push((hdr(15, 20, OP_RW, 3), vec![1, 2, 3]));
    cases.push((hdr(16, 20, OP_RESPONSE, 0), Vec::new()));
    cases.push((hdr(17, 20, OP_SHUTDOWN, 0), Vec::new()));
    cases.push((hdr(18, 20, OP_CREDIT_UPDATE, 0), Vec::new()));
    for (h, payload) in cases {
        g.tx(h, &payload);
        let p = g.rx();
        assert_eq!(p.len(), 1, "one answer to {h:?}");
        assert_eq!(p[0].0.op, OP_RST, "{h:?}");
        assert_eq!((p[0].0.src_port, p[0].0.dst_port), (20, h.src_port));
    }
    // An RST is never answered.
    g.tx(hdr(19, 20, OP_RST, 0), &[]);
    assert!(g.rx().is_empty());
    // A device-writable descriptor in a TX chain after the header: ignored.
    g.d.post(TXQ, &[(TX_BASE, 44, false), (TX_BASE + 0x1000, 16, true)]);
    g.d.write(TX_BASE, &hdr(21, 4444, OP_REQUEST, 0).bytes());
    g.d.kick(TXQ);
    assert_eq!(g.d.take_used(TXQ).len(), 1);
    assert_eq!(g.rx()[0].0.op, OP_RST, "port 4444 refused");
    // An RX buffer the device may not write (read-only): used with length 0.
    let head = g.d.post(RXQ, &[(RX_BASE + 0x10000, 4096, false)]);
    g.rx_bufs.insert(head, RX_BASE + 0x10000);
    g.tx(hdr(22, 20, 99, 0), &[]);
    assert_eq!(g.d.t.device().stats().rx_refused, 0);
    assert_eq!(g.rx().len(), 1, "RST delivered in a good buffer");
    assert_eq!(g.d.t.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(g.d.t.device().connections(), 0);
}

#[test]
fn buffers_in_private_memory_are_refused() {
    let mut g = Guest::new(true);
    const PRIV: u64 = 0x400000;
    g.d.private.add(PRIV, 0x100000);
    // Use up the 8 shared RX buffers posted at start-up (8 RSTs), without posting them again.
    for i in 0..8 {
        g.tx(hdr(100 + i, 20, 99, 0), &[]);
    }
    let used = g.d.take_used(RXQ);
    assert_eq!(used.len(), 8);
    for (id, len) in &used {
        assert_eq!(*len as usize, HDR_LEN);
        g.rx_bufs.remove(&(*id as u16));
    }
    // Now only a buffer in private memory is offered.
    g.d.write(PRIV, &[0x77; 64]);
    let head = g.d.post(RXQ, &[(PRIV, 4096, true)]);
    g.rx_bufs.insert(head, PRIV);
    g.tx(hdr(300, 20, 99, 0), &[]);
    g.d.kick(RXQ);
    let used = g.d.take_used(RXQ);
    assert_eq!(
        used,
        vec![(u32::from(head), 0)],
        "private RX buffer refused"
    );
    assert_eq!(
        g.d.read(PRIV, 64),
        vec![0x77; 64],
        "private memory untouched"
    );
    assert_eq!(g.d.t.device().stats().rx_refused, 1);
    g.rx_bufs.remove(&head);
    // The RST is still pending and goes into the next shared buffer.
    g.post_rx();
    g.d.kick(RXQ);
    let p = g.rx();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.src_port, 20);
    assert_eq!(p[0].0.dst_port, 300);

    // A TX header in private memory: not read, dropped.
    let dropped = g.d.t.device().stats().tx_dropped;
    g.d.post(TXQ, &[(PRIV + 0x1000, 44, false)]);
    g.d.kick(TXQ);
    assert_eq!(g.d.take_used(TXQ).len(), 1);
    assert_eq!(g.d.t.device().stats().tx_dropped, dropped + 1);
    assert!(g.rx().is_empty());
    // A TX payload in private memory: the packet is short of its length -> RST.
    let h = hdr(301, 20, OP_RW, 16);
    g.d.write(TX_BASE, &h.bytes());
    g.d.post(TXQ, &[(TX_BASE, 44, false), (PRIV + 0x2000, 16, false)]);
    g.d.kick(TXQ);
    assert_eq!(g.d.take_used(TXQ).len(), 1);
    let p = g.rx();
    assert_eq!(p[0].0.op, OP_RST);
    assert!(g.d.private.logged_count() >= 3);
    assert_eq!(g.d.t.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn reset_drops_connections_and_device_serves_again() {
    let mut g = Guest::new(false);
    let _server = echo_server(&g.uds, 88);
    g.tx(hdr(7000, 88, OP_REQUEST, 0), &[]);
    assert_eq!(g.rx()[0].0.op, OP_RESPONSE);
    assert_eq!(g.d.t.device().connections(), 1);
    common::w32(&mut g.d.t, 0x70, 0);
    assert_eq!(g.d.t.device().connections(), 0);
    assert_eq!(g.d.t.device().device_type(), device_id::VSOCK);
}

#[test]
fn guest_stream_to_host_follows_device_credit() {
    let mut g = Guest::new(false);
    let mut p = g.uds.as_os_str().to_owned();
    p.push("_55");
    let l = UnixListener::bind(&p).unwrap();
    // A slow sink: reads everything, in small steps, and returns what it got.
    let sink = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut all = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&b[..n]),
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    g.tx(hdr(8000, 55, OP_REQUEST, 0), &[]);
    let resp = g.rx()[0].0;
    assert_eq!(resp.op, OP_RESPONSE);
    let (mut buf_alloc, mut peer_fwd) = (resp.buf_alloc, resp.fwd_cnt);
    const TOTAL: usize = 1 << 20;
    const CHUNK: usize = 60 << 10;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 7 % 251) as u8).collect();
    let (mut sent, mut updates) = (0usize, 0);
    while sent < TOTAL {
        let credit = buf_alloc as usize - (sent - peer_fwd as usize);
        let n = CHUNK.min(TOTAL - sent);
        if credit >= n {
            g.tx(hdr(8000, 55, OP_RW, n as u32), &data[sent..sent + n]);
            sent += n;
            continue;
        }
        // Out of credit: wait for the device to report what it forwarded.
        for (h, _) in g.wait_rx() {
            assert_ne!(
                h.op, OP_RST,
                "the device reset a guest that kept to its credit"
            );
            assert_eq!(h.op, OP_CREDIT_UPDATE);
            buf_alloc = h.buf_alloc;
            peer_fwd = h.fwd_cnt;
            updates += 1;
        }
    }
    assert!(
        updates >= 2,
        "1 MiB through a 256 KiB window needs credit updates"
    );
    let mut h = hdr(8000, 55, OP_SHUTDOWN, 0);
    h.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.tx(h, &[]);
    // The device finishes writing what it buffered before the socket closes.
    let end = Instant::now() + Duration::from_secs(10);
    while g.d.t.device().connections() > 0 {
        assert!(Instant::now() < end, "connection not closed");
        if readable(g.d.t.host_fd().unwrap(), 50) {
            g.d.host_event();
        }
    }
    let p = g.rx();
    assert_eq!(p.last().map(|(h, _)| h.op), Some(OP_RST), "close completed");
    assert_eq!(g.d.t.device().stats().tx_bytes, TOTAL as u64);
    let got = sink.join().unwrap();
    assert_eq!(got.len(), TOTAL);
    assert!(got == data, "bytes arrive in order, unchanged");
}

#[test]
fn host_stream_to_guest_respects_credit_and_arrives_whole() {
    let mut g = Guest::new(false);
    let mut client = UnixStream::connect(&g.uds).unwrap();
    client.write_all(b"CONNECT 60\n").unwrap();
    let req = g.wait_rx()[0].0;
    assert_eq!(req.op, OP_REQUEST);
    const WINDOW: u32 = 64 << 10;
    let mut resp = hdr(60, req.src_port, OP_RESPONSE, 0);
    resp.buf_alloc = WINDOW;
    g.tx(resp, &[]);
    const TOTAL: usize = 1 << 20;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 13 % 251) as u8).collect();
    let writer = {
        let data = data.clone();
        let mut c = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut line = [0u8; 64];
            let n = c.read(&mut line).unwrap();
            assert!(line[..n].starts_with(b"OK "));
            c.write_all(&data).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    let mut told = 0u32;
    let mut eof = false;
    while !eof {
        for (h, d) in g.wait_rx() {
            match h.op {
                OP_RW => {
                    got.extend(d);
                    let in_flight = got.len() as u32 - told;
                    assert!(in_flight <= WINDOW, "device exceeded the guest's window");
                }
                OP_SHUTDOWN => eof = true,
                op => panic!("unexpected op {op}"),
            }
        }
        // The guest application consumed everything: report it.
        if got.len() as u32 != told {
            told = got.len() as u32;
            let mut cu = hdr(60, req.src_port, OP_CREDIT_UPDATE, 0);
            cu.buf_alloc = WINDOW;
            cu.fwd_cnt = told;
            g.tx(cu, &[]);
        }
    }
    writer.join().unwrap();
    assert_eq!(got.len(), TOTAL);
    assert!(got == data, "bytes arrive in order, unchanged");
    assert_eq!(g.d.t.device().stats().rx_bytes, TOTAL as u64);
}
