//! virtio-vsock (VIRTIO 1.2 §5.10) in Firecracker's hybrid model: guest AF_VSOCK streams are
//! carried to host AF_UNIX sockets, so no vhost kernel module is needed.
//!
//! - Guest to host: an OP_REQUEST to CID 2 port `P` connects to the Unix socket `<uds>_P`; the
//!   guest gets OP_RESPONSE, or OP_RST if nothing listens there.
//! - Host to guest: the device listens on `<uds>`; a host client writes `CONNECT <port>\n`, the
//!   device sends OP_REQUEST to the guest, and on the guest's OP_RESPONSE writes
//!   `OK <local_port>\n` to the client, after which the socket carries the stream.
//!
//! Data (OP_RW) flows both ways under the protocol's credit flow control: the device never
//! sends the guest more than the guest's `buf_alloc` allows, and advertises its own
//! `buf_alloc`/`fwd_cnt` so the guest never has more in flight than the device buffers.
//!
//! Packet headers are parsed here from bytes read through [`GuestAccess`], not with the
//! `virtio-vsock` crate: its `VsockPacket::from_{rx,tx}_virtq_chain` take slices of guest
//! memory straight from `GuestMemory`, which would bypass the private-range check every device
//! access must pass for an SEV/SNP guest.
//!
//! All host sockets (the listener, clients waiting for their `CONNECT` line, connections) are
//! in the device's own epoll set, whose fd is the device's host fd; a socket is only in that
//! set while the device can act on it (room in the guest's credit, RX buffers, data to flush),
//! so the level-triggered event loop never spins. Host clients are taken only while the driver
//! has the device running (from DRIVER_OK to reset). A malformed packet from the guest is dropped
//! or answered with OP_RST; it never stops the device.

use crate::access::GuestAccess;
use crate::{device_id, features, DeviceError, VirtioDevice};
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// `VIRTIO_VSOCK_TYPE_STREAM`.
pub const TYPE_STREAM: u16 = 1;
/// Connection request.
pub const OP_REQUEST: u16 = 1;
/// Connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Connection reset (refused, or torn down).
pub const OP_RST: u16 = 3;
/// One direction (or both) shut down.
pub const OP_SHUTDOWN: u16 = 4;
/// Stream data.
pub const OP_RW: u16 = 5;
/// Credit information, unsolicited or asked for.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// A request for a credit update.
pub const OP_CREDIT_REQUEST: u16 = 7;
/// OP_SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// OP_SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;
/// RX queue index.
pub const RXQ: usize = 0;
/// TX queue index.
pub const TXQ: usize = 1;
/// Event queue index.
pub const EVQ: usize = 2;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Largest payload accepted from or sent to the guest in one packet (Linux uses 64 KiB).
pub const MAX_PAYLOAD: usize = 64 << 10;
/// Bytes the device buffers per connection for the host socket (its `buf_alloc`).
pub const BUF_ALLOC: u32 = 256 << 10;
/// The first host-side port given to host-initiated connections.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Longest `CONNECT <port>\n` line accepted.
const MAX_CONNECT_LINE: usize = 32;
/// The epoll token of the listener.
const LISTENER: u64 = 0;

/// Errors creating a vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved (0, 1, 2, u32::MAX and above).
    #[error("vsock: guest cid {0} is reserved; use 3 or above")]
    Cid(u64),
    /// The Unix socket could not be created.
    #[error("vsock: uds {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The device's epoll set could not be made.
    #[error("vsock: epoll: {0}")]
    Epoll(std::io::Error),
}

/// The 44-byte packet header (`struct virtio_vsock_hdr`, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl Header {
    /// Parses a header from its 44 bytes.
    pub fn parse(b: &[u8; HDR_LEN]) -> Header {
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The header's 44 bytes.
    pub fn bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Per-device statistics, for tests and the monitor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VsockStats {
    /// TX packets accepted.
    pub tx_packets: u64,
    /// TX packets dropped (unreadable or too short for a header, wrong source CID).
    pub tx_dropped: u64,
    /// RST packets sent to the guest.
    pub rst_sent: u64,
    /// RX buffers refused (in private memory, outside RAM, not writable, too small).
    pub rx_refused: u64,
    /// Payload bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Payload bytes written to host sockets.
    pub tx_bytes: u64,
}

/// A connection's (host port, guest port).
type Key = (u32, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated: OP_REQUEST sent, waiting for the guest's OP_RESPONSE.
    LocalInit,
    /// Data may flow.
    Established,
}

struct Conn {
    stream: UnixStream,
    token: u64,
    state: State,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the guest.
    rx_cnt: u32,
    /// Payload bytes from the guest written to the host socket.
    fwd_cnt: u32,
    /// `fwd_cnt` last told to the guest.
    fwd_cnt_told: u32,
    /// Guest bytes not yet written to the host socket.
    tx_buf: Vec<u8>,
    /// The host socket has data (or EOF) the guest has not had yet.
    rx_ready: bool,
    /// No more reading from the host socket (EOF seen, or the guest will receive no more).
    rx_done: bool,
    /// The guest will send no more: shut the host socket's write side once `tx_buf` is empty.
    tx_shut: bool,
    /// Events the socket is registered for in the epoll set (empty: not registered).
    interest: EventSet,
}

impl Conn {
    fn new(stream: UnixStream, token: u64, state: State) -> Conn {
        Conn {
            stream,
            token,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_told: 0,
            tx_buf: Vec::new(),
            rx_ready: false,
            rx_done: false,
            tx_shut: false,
            interest: EventSet::empty(),
        }
    }

    /// Bytes the guest can still take.
    fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn wanted(&self) -> EventSet {
        let mut e = EventSet::empty();
        if self.state == State::Established
            && !self.rx_ready
            && !self.rx_done
            && self.peer_credit() > 0
        {
            e |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            e |= EventSet::OUT;
        }
        e
    }

    /// Writes as much of `tx_buf` as the socket takes. Err: the socket is broken.
    fn flush(&mut self) -> std::io::Result<usize> {
        let mut done = 0;
        while done < self.tx_buf.len() {
            match self.stream.write(&self.tx_buf[done..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.tx_buf.drain(..done);
        self.fwd_cnt = self.fwd_cnt.wrapping_add(done as u32);
        if self.tx_buf.is_empty() && self.tx_shut {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(done)
    }
}

/// A host client that has connected to `<uds>` and not yet sent its `CONNECT` line.
struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
}

/// What an epoll token stands for.
#[derive(Clone, Copy)]
enum Token {
    Pending,
    Conn(Key),
}

/// A virtio-vsock device in the hybrid Unix-socket model.
pub struct Vsock {
    cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    listening: bool,
    conns: HashMap<Key, Conn>,
    pending: HashMap<u64, Pending>,
    tokens: HashMap<u64, Token>,
    next_token: u64,
    next_local_port: u32,
    /// Control packets (no payload) waiting for RX buffers.
    control: VecDeque<Header>,
    /// Connections with host data waiting for RX buffers.
    rx_queue: VecDeque<Key>,
    stats: VsockStats,
}

impl Vsock {
    /// A device for guest `cid`, listening on `uds` (which must not exist yet: a socket left
    /// by another VM is never taken over). The listener is watched once the driver is ready.
    pub fn new(cid: u64, uds: &Path) -> Result<Vsock, VsockError> {
        if cid <= HOST_CID || cid >= u64::from(u32::MAX) {
            return Err(VsockError::Cid(cid));
        }
        let listen_err = |source| VsockError::Listen {
            path: uds.to_owned(),
            source,
        };
        let listener = UnixListener::bind(uds).map_err(listen_err)?;
        let v = Vsock {
            cid,
            uds: uds.to_owned(),
            listener,
            epoll: Epoll::new().map_err(VsockError::Epoll)?,
            listening: false,
            conns: HashMap::new(),
            pending: HashMap::new(),
            tokens: HashMap::new(),
            next_token: LISTENER + 1,
            next_local_port: FIRST_LOCAL_PORT,
            control: VecDeque::new(),
            rx_queue: VecDeque::new(),
            stats: VsockStats::default(),
        };
        v.listener.set_nonblocking(true).map_err(listen_err)?;
        Ok(v)
    }

    /// Watches (or stops watching) the listener: only a running device takes host clients,
    /// since the event loop does not call a stopped device and would otherwise spin.
    fn listen(&mut self, on: bool) {
        if on == self.listening {
            return;
        }
        let fd = self.listener.as_raw_fd();
        let r = if on {
            self.epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, LISTENER),
            )
        } else {
            self.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())
        };
        match r {
            Ok(()) => self.listening = on,
            Err(e) => tracing::warn!("vsock: epoll_ctl for {}: {e}", self.uds.display()),
        }
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Statistics so far.
    pub fn stats(&self) -> VsockStats {
        self.stats
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn token(&mut self, t: Token) -> u64 {
        let id = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(LISTENER + 1);
        self.tokens.insert(id, t);
        id
    }

    /// A header from the host side of connection `key` to the guest.
    fn reply(&self, key: Key, op: u16) -> Header {
        let (buf_alloc, fwd_cnt) = self
            .conns
            .get(&key)
            .map_or((BUF_ALLOC, 0), |c| (BUF_ALLOC, c.fwd_cnt));
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: key.0,
            dst_port: key.1,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn send_control(&mut self, h: Header) {
        if h.op == OP_RST {
            self.stats.rst_sent += 1;
        }
        if let Some(c) = self.conns.get_mut(&(h.src_port, h.dst_port)) {
            c.fwd_cnt_told = h.fwd_cnt;
        }
        self.control.push_back(h);
    }

    fn rst(&mut self, key: Key) {
        let h = self.reply(key, OP_RST);
        self.send_control(h);
    }

    /// Registers the connection's socket for what it can act on now.
    fn rearm(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let want = c.wanted();
        if want == c.interest {
            return;
        }
        let fd = c.stream.as_raw_fd();
        let r = if want.is_empty() {
            self.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())
        } else if c.interest.is_empty() {
            self.epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(want, c.token))
        } else {
            self.epoll
                .ctl(ControlOperation::Modify, fd, EpollEvent::new(want, c.token))
        };
        match r {
            Ok(()) => c.interest = want,
            Err(e) => tracing::warn!("vsock: epoll_ctl for port {}: {e}", key.0),
        }
    }

    /// Drops a connection (its socket closes).
    fn remove(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            if !c.interest.is_empty() {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    c.stream.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
            self.tokens.remove(&c.token);
        }
        self.rx_queue.retain(|k| *k != key);
    }

    fn drop_pending(&mut self, token: u64) {
        if let Some(p) = self.pending.remove(&token) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                p.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        self.tokens.remove(&token);
    }

    // ---- guest -> host ----

    /// Handles one TX packet (header and payload as read from the guest).
    fn handle_tx(&mut self, h: &Header, payload: &[u8]) {
        let key = (h.dst_port, h.src_port);
        if h.src_cid != self.cid {
            // Not from our guest's address: nothing to answer to.
            self.stats.tx_dropped += 1;
            return;
        }
        self.stats.tx_packets += 1;
        if h.op == OP_RST {
            if let Some(c) = self.conns.get(&key) {
                if c.state == State::LocalInit {
                    tracing::debug!("vsock: guest refused host connection to port {}", key.1);
                }
                self.remove(key);
            }
            return;
        }
        if h.dst_cid != HOST_CID || h.type_ != TYPE_STREAM || payload.len() != h.len as usize {
            self.remove(key);
            self.rst(key);
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
        }
        match h.op {
            OP_REQUEST => self.guest_connect(key, h.buf_alloc, h.fwd_cnt),
            OP_RESPONSE => self.guest_accepted(key),
            OP_RW => self.guest_data(key, payload),
            OP_CREDIT_UPDATE => {
                if !self.conns.contains_key(&key) {
                    self.rst(key);
                }
            }
            OP_CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    let r = self.reply(key, OP_CREDIT_UPDATE);
                    self.send_control(r);
                } else {
                    self.rst(key);
                }
            }
            OP_SHUTDOWN => self.guest_shutdown(key, h.flags),
            _ => {
                self.remove(key);
                self.rst(key);
            }
        }
        self.rearm(key);
    }

    fn guest_connect(&mut self, key: Key, buf_alloc: u32, fwd_cnt: u32) {
        if self.conns.contains_key(&key) {
            // A second request on a live connection: reset it.
            self.remove(key);
            self.rst(key);
            return;
        }
        let mut path = self.uds.clone().into_os_string();
        path.push(format!("_{}", key.0));
        let stream = UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|()| s));
        match stream {
            Ok(s) => {
                let token = self.token(Token::Conn(key));
                let mut c = Conn::new(s, token, State::Established);
                c.peer_buf_alloc = buf_alloc;
                c.peer_fwd_cnt = fwd_cnt;
                self.conns.insert(key, c);
                let r = self.reply(key, OP_RESPONSE);
                self.send_control(r);
            }
            Err(e) => {
                tracing::debug!("vsock: guest connect to host port {}: {e}", key.0);
                self.rst(key);
            }
        }
    }

    fn guest_accepted(&mut self, key: Key) {
        let ok = match self.conns.get_mut(&key) {
            Some(c) if c.state == State::LocalInit => {
                c.state = State::Established;
                // The line is short; a client too slow to take it loses the connection.
                let line = format!("OK {}\n", key.0);
                (&c.stream).write_all(line.as_bytes()).is_ok()
            }
            _ => false,
        };
        if !ok {
            self.remove(key);
            self.rst(key);
        }
    }

    fn guest_data(&mut self, key: Key, payload: &[u8]) {
        let Some(c) = self.conns.get_mut(&key) else {
            self.rst(key);
            return;
        };
        if c.state != State::Established
            || c.tx_shut
            || c.tx_buf.len() + payload.len() > BUF_ALLOC as usize
        {
            // Data before the connection is up, after the guest's own shutdown, or beyond
            // the credit we gave: a broken peer.
            self.remove(key);
            self.rst(key);
            return;
        }
        c.tx_buf.extend_from_slice(payload);
        let before = c.fwd_cnt;
        if c.flush().is_err() {
            self.remove(key);
            self.rst(key);
            return;
        }
        self.stats.tx_bytes += u64::from(c.fwd_cnt.wrapping_sub(before));
        self.maybe_credit_update(key);
    }

    /// Tells the guest about consumed bytes once half its window has been freed.
    fn maybe_credit_update(&mut self, key: Key) {
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        if c.fwd_cnt.wrapping_sub(c.fwd_cnt_told) >= BUF_ALLOC / 2 {
            let r = self.reply(key, OP_CREDIT_UPDATE);
            self.send_control(r);
        }
    }

    fn guest_shutdown(&mut self, key: Key, flags: u32) {
        let Some(c) = self.conns.get_mut(&key) else {
            self.rst(key);
            return;
        };
        if flags & SHUTDOWN_RCV != 0 {
            c.rx_done = true;
        }
        if flags & SHUTDOWN_SEND != 0 {
            c.tx_shut = true;
        }
        let before = c.fwd_cnt;
        if c.flush().is_err() {
            self.remove(key);
            self.rst(key);
            return;
        }
        self.stats.tx_bytes += u64::from(c.fwd_cnt.wrapping_sub(before));
        self.close_if_done(key);
    }

    /// Both directions are finished and everything the guest sent reached the host socket:
    /// the connection closes and the guest, waiting for it, gets OP_RST.
    fn close_if_done(&mut self, key: Key) {
        if self
            .conns
            .get(&key)
            .is_some_and(|c| c.rx_done && c.tx_shut && c.tx_buf.is_empty())
        {
            self.remove(key);
            self.rst(key);
        }
    }

    // ---- host -> guest ----

    /// Serves the device's epoll set: new clients, CONNECT lines, readable and writable sockets.
    fn poll_host(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::warn!("vsock: epoll_wait: {e}");
                }
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == LISTENER {
                self.accept_clients();
                continue;
            }
            match self.tokens.get(&token).copied() {
                Some(Token::Pending) => self.read_connect_line(token),
                Some(Token::Conn(key)) => self.conn_event(key, ev.event_set()),
                None => {}
            }
        }
    }

    fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let token = self.token(Token::Pending);
                    let fd = s.as_raw_fd();
                    self.pending.insert(
                        token,
                        Pending {
                            stream: s,
                            line: Vec::new(),
                        },
                    );
                    if self
                        .epoll
                        .ctl(
                            ControlOperation::Add,
                            fd,
                            EpollEvent::new(EventSet::IN, token),
                        )
                        .is_err()
                    {
                        self.pending.remove(&token);
                        self.tokens.remove(&token);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        tracing::warn!("vsock: accept on {}: {e}", self.uds.display());
                    }
                    return;
                }
            }
        }
    }

    /// Reads a client's `CONNECT <port>\n` byte by byte (nothing after the line is consumed:
    /// it is stream data for the guest).
    fn read_connect_line(&mut self, token: u64) {
        let Some(p) = self.pending.get_mut(&token) else {
            return;
        };
        let mut b = [0u8; 1];
        let line = loop {
            match p.stream.read(&mut b) {
                Ok(0) => break Err(()),
                Ok(_) if b[0] == b'\n' => break Ok(std::mem::take(&mut p.line)),
                Ok(_) if p.line.len() >= MAX_CONNECT_LINE => break Err(()),
                Ok(_) => p.line.push(b[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break Err(()),
            }
        };
        let port = line.ok().and_then(|l| parse_connect(&l));
        let Some(p) = self.pending.remove(&token) else {
            return;
        };
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            p.stream.as_raw_fd(),
            EpollEvent::default(),
        );
        self.tokens.remove(&token);
        let Some(guest_port) = port else {
            tracing::debug!("vsock: host client sent no valid CONNECT line; closed");
            return;
        };
        let Some(local) = self.alloc_local_port(guest_port) else {
            return;
        };
        let key = (local, guest_port);
        let token = self.token(Token::Conn(key));
        self.conns
            .insert(key, Conn::new(p.stream, token, State::LocalInit));
        let r = self.reply(key, OP_REQUEST);
        self.send_control(r);
    }

    fn alloc_local_port(&mut self, guest_port: u32) -> Option<u32> {
        for _ in 0..1024 {
            let p = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(p, guest_port)) {
                return Some(p);
            }
        }
        None
    }

    fn conn_event(&mut self, key: Key, ev: EventSet) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if ev.contains(EventSet::OUT) {
            let before = c.fwd_cnt;
            if c.flush().is_err() {
                self.remove(key);
                self.rst(key);
                return;
            }
            self.stats.tx_bytes += u64::from(c.fwd_cnt.wrapping_sub(before));
            self.maybe_credit_update(key);
            self.close_if_done(key);
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if ev.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR)
            && c.interest.contains(EventSet::IN)
            && !c.rx_ready
        {
            c.rx_ready = true;
            self.rx_queue.push_back(key);
        }
        self.rearm(key);
    }

    /// Fills RX buffers with control packets, then host data. Returns whether any was used.
    fn fill_rx(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
    ) -> Result<bool, DeviceError> {
        let m = mem.memory();
        let Some(q) = queues.get_mut(RXQ).filter(|q| q.ready()) else {
            return Ok(false);
        };
        let mut used = false;
        while !self.control.is_empty() || !self.rx_queue.is_empty() {
            let chain = q.iter(m).map_err(DeviceError::queue(RXQ))?.next();
            let Some(chain) = chain else {
                break;
            };
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let cap = rx_capacity(mem, &descs);
            let len = match cap {
                None => {
                    self.stats.rx_refused += 1;
                    Some(0)
                }
                Some(cap) => self.next_rx_packet(mem, &descs, cap),
            };
            match len {
                Some(len) => {
                    q.add_used(m, head, len).map_err(DeviceError::queue(RXQ))?;
                    used = true;
                }
                None => {
                    // Nothing to send after all: the buffer goes back for later.
                    q.go_to_previous_position();
                    break;
                }
            }
        }
        Ok(used)
    }

    /// Writes the next packet into the RX chain `descs` of `cap` bytes; Some(used length), or
    /// None when nothing was ready to send.
    fn next_rx_packet(
        &mut self,
        mem: &GuestAccess<'_>,
        descs: &[Descriptor],
        cap: usize,
    ) -> Option<u32> {
        if let Some(h) = self.control.pop_front() {
            return Some(write_chain(mem, descs, &h.bytes(), &[]) as u32);
        }
        while let Some(key) = self.rx_queue.pop_front() {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            let room = (cap - HDR_LEN)
                .min(MAX_PAYLOAD)
                .min(c.peer_credit() as usize);
            if room == 0 || c.rx_done {
                c.rx_ready = false;
                self.rearm(key);
                continue;
            }
            let mut buf = vec![0u8; room];
            let r = loop {
                match c.stream.read(&mut buf) {
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    r => break r,
                }
            };
            match r {
                Ok(0) => {
                    // Host EOF: tell the guest neither side sends any more.
                    c.rx_ready = false;
                    c.rx_done = true;
                    let mut h = self.reply(key, OP_SHUTDOWN);
                    h.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
                    self.rearm(key);
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.fwd_cnt_told = h.fwd_cnt;
                    }
                    return Some(write_chain(mem, descs, &h.bytes(), &[]) as u32);
                }
                Ok(n) => {
                    let mut h = self.reply(key, OP_RW);
                    h.len = n as u32;
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.rx_cnt = c.rx_cnt.wrapping_add(n as u32);
                        c.fwd_cnt_told = h.fwd_cnt;
                    }
                    self.stats.rx_bytes += n as u64;
                    // More may be waiting: this connection stays in line.
                    self.rx_queue.push_back(key);
                    return Some(write_chain(mem, descs, &h.bytes(), &buf[..n]) as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    c.rx_ready = false;
                    self.rearm(key);
                }
                Err(_) => {
                    self.remove(key);
                    let h = self.reply(key, OP_RST);
                    self.stats.rst_sent += 1;
                    return Some(write_chain(mem, descs, &h.bytes(), &[]) as u32);
                }
            }
        }
        None
    }

    fn process_tx(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
    ) -> Result<bool, DeviceError> {
        let m = mem.memory();
        let Some(q) = queues.get_mut(TXQ).filter(|q| q.ready()) else {
            return Ok(false);
        };
        let chains: Vec<_> = q.iter(m).map_err(DeviceError::queue(TXQ))?.collect();
        let mut used = false;
        for chain in chains {
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            match read_packet(mem, &descs) {
                Some((h, payload)) => self.handle_tx(&h, &payload),
                None => self.stats.tx_dropped += 1,
            }
            q.add_used(m, head, 0).map_err(DeviceError::queue(TXQ))?;
            used = true;
        }
        Ok(used)
    }
}

/// Parses `CONNECT <port>` (the newline already stripped; a trailing `\r` tolerated).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?;
    let port = s.trim_end_matches('\r').strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

/// The writable size of an RX chain, if every descriptor is device-writable and in shared RAM
/// and there is room for a header.
fn rx_capacity(mem: &GuestAccess<'_>, descs: &[Descriptor]) -> Option<usize> {
    let mut cap = 0usize;
    for d in descs {
        if !d.is_write_only() || mem.check(d.addr().0, u64::from(d.len())).is_err() {
            return None;
        }
        cap = cap.saturating_add(d.len() as usize);
    }
    (cap >= HDR_LEN).then_some(cap)
}

/// Scatters `hdr` then `payload` over the (already checked) chain; returns bytes written.
fn write_chain(mem: &GuestAccess<'_>, descs: &[Descriptor], hdr: &[u8], payload: &[u8]) -> usize {
    let mut parts = [hdr, payload];
    let mut written = 0usize;
    for d in descs {
        let (mut gpa, mut room) = (d.addr().0, d.len() as usize);
        for part in parts.iter_mut() {
            if room == 0 {
                break;
            }
            let n = part.len().min(room);
            if n == 0 {
                continue;
            }
            if mem.write(gpa, &part[..n]).is_err() {
                return written;
            }
            *part = &part[n..];
            written += n;
            gpa += n as u64;
            room -= n;
        }
    }
    written
}

/// Gathers a TX packet from the device-readable descriptors: None if the header is not
/// wholly readable from shared RAM. The payload holds at most `hdr.len` bytes (capped at
/// [`MAX_PAYLOAD`]); a payload shorter than `hdr.len` is caught by the caller.
fn read_packet(mem: &GuestAccess<'_>, descs: &[Descriptor]) -> Option<(Header, Vec<u8>)> {
    let mut hdr = [0u8; HDR_LEN];
    let mut got = 0usize;
    let mut payload = Vec::new();
    let mut want = None::<usize>;
    for d in descs {
        if d.is_write_only() {
            break;
        }
        let (mut gpa, mut left) = (d.addr().0, d.len() as usize);
        if got < HDR_LEN {
            let n = (HDR_LEN - got).min(left);
            mem.read(gpa, &mut hdr[got..got + n]).ok()?;
            got += n;
            gpa += n as u64;
            left -= n;
            if got < HDR_LEN {
                continue;
            }
        }
        let h = Header::parse(&hdr);
        let w = *want.get_or_insert((h.len as usize).min(MAX_PAYLOAD + 1));
        let n = (w - payload.len()).min(left);
        if n > 0 {
            let start = payload.len();
            payload.resize(start + n, 0);
            if mem.read(gpa, &mut payload[start..]).is_err() {
                // An unreadable payload (private memory): keep what was read; the length
                // check then resets the connection.
                payload.truncate(start);
                break;
            }
        }
        if payload.len() >= w {
            break;
        }
    }
    (got == HDR_LEN).then(|| (Header::parse(&hdr), payload))
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_id::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        features::VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        let cfg = self.cid.to_le_bytes();
        crate::read_config_bytes(&cfg, offset, data);
    }

    fn activate(&mut self, _acked_features: u64) {
        self.listen(true);
    }

    fn process_queue(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<u64, DeviceError> {
        let mut mask = 0u64;
        if index == TXQ && self.process_tx(mem, queues)? {
            mask |= 1 << TXQ;
        }
        // New RX buffers, or replies to what the guest just sent.
        if index == RXQ || index == TXQ {
            let keys: Vec<Key> = self.conns.keys().copied().collect();
            for k in keys {
                self.rearm(k);
            }
            if self.fill_rx(mem, queues)? {
                mask |= 1 << RXQ;
            }
        }
        // The event queue is only used for transport resets (migration), which we never do.
        Ok(mask)
    }

    fn host_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn host_event(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
    ) -> Result<u64, DeviceError> {
        self.poll_host();
        Ok(if self.fill_rx(mem, queues)? {
            1 << RXQ
        } else {
            0
        })
    }

    fn reset(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for k in keys {
            self.remove(k);
        }
        let pend: Vec<u64> = self.pending.keys().copied().collect();
        for t in pend {
            self.drop_pending(t);
        }
        self.control.clear();
        self.rx_queue.clear();
        self.listen(false);
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_connect_lines_parse() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1025,
            dst_port: 52,
            len: 7,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 99,
        };
        let b = h.bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[30..32], &OP_RW.to_le_bytes());
        assert_eq!(Header::parse(&b), h);
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect(b"connect 52"), None);
        assert_eq!(parse_connect(b"\xff"), None);
    }

    #[test]
    fn reserved_cids_and_bad_paths_are_named() {
        let d = tempfile::tempdir().unwrap();
        for cid in [0, 1, 2, u64::from(u32::MAX)] {
            let e = Vsock::new(cid, &d.path().join("v.sock")).err().unwrap();
            assert!(e.to_string().contains(&format!("cid {cid}")), "{e}");
        }
        // A path in use (another VM's socket) is not taken over.
        let p = d.path().join("taken.sock");
        let _other = UnixListener::bind(&p).unwrap();
        let e = Vsock::new(3, &p).err().unwrap().to_string();
        assert!(e.contains("taken.sock"), "{e}");
        // Not watched before the driver is ready: a waiting client does not wake the loop.
        let v = Vsock::new(3, &d.path().join("v.sock")).unwrap();
        let _c = UnixStream::connect(d.path().join("v.sock")).unwrap();
        let mut ev = [EpollEvent::default(); 1];
        assert_eq!(v.epoll.wait(50, &mut ev).unwrap(), 0);
        let e = Vsock::new(3, Path::new("/nonexistent/dir/v.sock"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/dir/v.sock"), "{e}");
    }
}
