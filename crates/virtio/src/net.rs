//! virtio-net (VIRTIO 1.2 §5.1) over a TAP device the operator made: RX queue 0, TX queue 1,
//! the 12-byte `virtio_net_hdr_v1` in front of every frame, the MAC address in the
//! configuration space (VIRTIO_NET_F_MAC), and no offloads (none are offered, so every frame is
//! a plain Ethernet frame and the header the guest sends is zeroed before it reaches the TAP).
//!
//! The host side is a [`NetBackend`]: [`Tap`] in the VMM, any frame-preserving fd in tests.
//! The device's host fd is an epoll set holding the backend's fd only while the guest has RX
//! buffers, so the level-triggered event loop does not spin on a readable TAP while the guest
//! is not taking frames; a kick of the RX queue puts it back. Guest buffers are reached only
//! through [`GuestAccess`]; a frame whose buffers are private or outside RAM is dropped.

use crate::access::GuestAccess;
use crate::{device_id, features, DeviceError, VirtioDevice};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// `VIRTIO_NET_F_MAC`.
pub const F_MAC: u64 = 1 << 5;
/// Size of `struct virtio_net_hdr_v1`.
pub const HDR_LEN: usize = 12;
/// RX queue index.
pub const RXQ: usize = 0;
/// TX queue index.
pub const TXQ: usize = 1;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Largest frame (header included) moved either way: without offloads frames are at most
/// an MTU plus Ethernet and VLAN headers; 64 KiB leaves room for a large MTU.
pub const MAX_FRAME: usize = HDR_LEN + (64 << 10);

/// The host side of a network device: whole frames, each with its 12-byte header.
pub trait NetBackend: AsRawFd + Send {
    /// Reads one frame into `buf` (non-blocking: `WouldBlock` when none is waiting).
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes one frame.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize>;
}

/// Errors opening a TAP device or making the device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP name is empty or longer than an interface name may be.
    #[error("tap {0:?}: invalid interface name (1 to 15 bytes, no NUL)")]
    Name(String),
    /// /dev/net/tun could not be opened.
    #[error("tap {name}: cannot open /dev/net/tun: {source}")]
    Open {
        /// The TAP name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// An ioctl on the TAP failed (EPERM: CAP_NET_ADMIN is missing, or the TAP belongs to
    /// another user; EBUSY: another process has it).
    #[error("tap {name}: {what} failed: {source}")]
    Ioctl {
        /// The TAP name.
        name: String,
        /// The ioctl.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The device's epoll set could not be made.
    #[error("virtio-net: epoll: {0}")]
    Epoll(std::io::Error),
}

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags (the rest of the union pads
/// it to 40 bytes).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A TAP device opened with a 12-byte virtio-net header on every frame.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the TAP `name` (created if it does not exist and we may create it).
    pub fn open(name: &str) -> Result<Tap, NetError> {
        if name.is_empty() || name.len() > 15 || name.contains('\0') {
            return Err(NetError::Name(name.to_owned()));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| NetError::Open {
                name: name.to_owned(),
                source,
            })?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let ioctl_err = |what| NetError::Ioctl {
            name: name.to_owned(),
            what,
            source: std::io::Error::last_os_error(),
        };
        // SAFETY: TUNSETIFF reads (and writes back the name into) a `struct ifreq`; `req` is a
        // properly sized, initialised ifreq that lives across the call, and the fd is ours.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if r < 0 {
            return Err(ioctl_err("TUNSETIFF"));
        }
        let hdr: libc::c_int = HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `hdr` lives across the
        // call and the fd is the TAP just attached.
        let r = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                TUNSETVNETHDRSZ as _,
                &hdr as *const libc::c_int,
            )
        };
        if r < 0 {
            return Err(ioctl_err("TUNSETVNETHDRSZ"));
        }
        Ok(Tap {
            file,
            name: name.to_owned(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl NetBackend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
}

/// Per-device statistics, for tests and the monitor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frames sent to the backend.
    pub tx_frames: u64,
    /// Host frames dropped (the guest's buffer was refused or too small).
    pub rx_dropped: u64,
    /// Guest frames dropped (malformed chain, refused buffer, backend error).
    pub tx_dropped: u64,
}

/// A virtio-net device on a [`NetBackend`].
pub struct Net<B: NetBackend> {
    backend: B,
    mac: [u8; 6],
    epoll: Epoll,
    /// The backend fd is in the epoll set.
    armed: bool,
    /// One frame read from the backend (kept, so a host event does not allocate).
    frame: Vec<u8>,
    stats: NetStats,
}

impl<B: NetBackend> Net<B> {
    /// A device with MAC `mac` on `backend`.
    pub fn new(backend: B, mac: [u8; 6]) -> Result<Net<B>, NetError> {
        let epoll = Epoll::new().map_err(NetError::Epoll)?;
        Ok(Net {
            backend,
            mac,
            epoll,
            armed: false,
            frame: vec![0u8; MAX_FRAME],
            stats: NetStats::default(),
        })
    }

    /// Statistics so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn arm(&mut self, on: bool) {
        if on == self.armed {
            return;
        }
        let fd = self.backend.as_raw_fd();
        let r = if on {
            self.epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
        } else {
            self.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())
        };
        match r {
            Ok(()) => self.armed = on,
            Err(e) => tracing::warn!("virtio-net: epoll_ctl: {e}"),
        }
    }

    /// Moves waiting host frames into the guest's RX buffers.
    fn rx(&mut self, mem: &GuestAccess<'_>, queues: &mut [Queue]) -> Result<bool, DeviceError> {
        let m = mem.memory();
        let Some(q) = queues.get_mut(RXQ).filter(|q| q.ready()) else {
            return Ok(false);
        };
        let qerr = DeviceError::queue(RXQ);
        let mut used = false;
        loop {
            let Some(chain) = q.iter(m).map_err(qerr)?.next() else {
                // No buffers: stop watching the backend until the guest posts some.
                self.arm(false);
                break;
            };
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let n = loop {
                match self.backend.recv(&mut self.frame) {
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    r => break r,
                }
            };
            let n = match n {
                Ok(n) if n >= HDR_LEN => n,
                Ok(0) => {
                    // End of file (a closed stand-in backend): stop watching it.
                    q.go_to_previous_position();
                    self.arm(false);
                    break;
                }
                Ok(_) => {
                    // A runt without a whole header: dropped, the buffer kept.
                    q.go_to_previous_position();
                    self.stats.rx_dropped += 1;
                    continue;
                }
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        tracing::warn!("virtio-net: backend read: {e}");
                    }
                    q.go_to_previous_position();
                    self.arm(true);
                    break;
                }
            };
            let f = &mut self.frame[..n];
            // No offloads were offered: the frame is complete, its checksum filled in.
            f[..10].fill(0);
            // num_buffers: always one buffer (no VIRTIO_NET_F_MRG_RXBUF).
            f[10..12].copy_from_slice(&1u16.to_le_bytes());
            let len = match write_frame(mem, &descs, f) {
                Some(()) => {
                    self.stats.rx_frames += 1;
                    n as u32
                }
                None => {
                    self.stats.rx_dropped += 1;
                    0
                }
            };
            q.add_used(m, head, len).map_err(qerr)?;
            used = true;
        }
        Ok(used)
    }

    /// Sends the guest's TX frames to the backend.
    fn tx(&mut self, mem: &GuestAccess<'_>, queues: &mut [Queue]) -> Result<bool, DeviceError> {
        let m = mem.memory();
        let Some(q) = queues.get_mut(TXQ).filter(|q| q.ready()) else {
            return Ok(false);
        };
        let qerr = DeviceError::queue(TXQ);
        let chains: Vec<_> = q.iter(m).map_err(qerr)?.collect();
        let mut used = false;
        for chain in chains {
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            match read_frame(mem, &descs) {
                Some(mut f) => {
                    // Offload fields the device never offered are not passed to the TAP.
                    f[..HDR_LEN].fill(0);
                    match self.backend.send(&f) {
                        Ok(_) => self.stats.tx_frames += 1,
                        Err(e) => {
                            tracing::debug!("virtio-net: backend write: {e}");
                            self.stats.tx_dropped += 1;
                        }
                    }
                }
                None => self.stats.tx_dropped += 1,
            }
            q.add_used(m, head, 0).map_err(qerr)?;
            used = true;
        }
        Ok(used)
    }
}

/// Gathers a TX frame: every descriptor device-readable, in shared RAM, at least a header,
/// at most [`MAX_FRAME`] bytes.
fn read_frame(mem: &GuestAccess<'_>, descs: &[Descriptor]) -> Option<Vec<u8>> {
    let mut total = 0usize;
    for d in descs {
        if d.is_write_only() {
            return None;
        }
        total = total.checked_add(d.len() as usize)?;
    }
    if !(HDR_LEN..=MAX_FRAME).contains(&total) {
        return None;
    }
    let mut f = vec![0u8; total];
    let mut off = 0;
    for d in descs {
        let n = d.len() as usize;
        mem.read(d.addr().0, &mut f[off..off + n]).ok()?;
        off += n;
    }
    Some(f)
}

/// Scatters a frame over an RX chain: None (nothing written) unless every descriptor is
/// device-writable and in shared RAM and the chain holds the whole frame.
fn write_frame(mem: &GuestAccess<'_>, descs: &[Descriptor], frame: &[u8]) -> Option<()> {
    let mut cap = 0usize;
    for d in descs {
        if !d.is_write_only() {
            return None;
        }
        mem.check(d.addr().0, u64::from(d.len())).ok()?;
        cap = cap.saturating_add(d.len() as usize);
    }
    if cap < frame.len() {
        return None;
    }
    let mut rest = frame;
    for d in descs {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(d.len() as usize);
        mem.write(d.addr().0, &rest[..n]).ok()?;
        rest = &rest[n..];
    }
    Some(())
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        device_id::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2]
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | F_MAC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: only `mac` is offered.
        crate::read_config_bytes(&self.mac, offset, data);
    }

    fn activate(&mut self, _acked_features: u64) {
        self.arm(true);
    }

    fn process_queue(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<u64, DeviceError> {
        match index {
            RXQ => {
                self.arm(true);
                Ok(if self.rx(mem, queues)? { 1 << RXQ } else { 0 })
            }
            TXQ => Ok(if self.tx(mem, queues)? { 1 << TXQ } else { 0 }),
            _ => Ok(0),
        }
    }

    fn host_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn host_event(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
    ) -> Result<u64, DeviceError> {
        Ok(if self.rx(mem, queues)? { 1 << RXQ } else { 0 })
    }

    fn reset(&mut self) {
        // A stopped device is not called by the event loop: a readable TAP must not be
        // watched until the driver is ready again.
        self.arm(false);
    }
}

/// A frame-preserving Unix datagram socket as a backend (tests, or a user-space switch).
impl NetBackend for std::os::unix::net::UnixDatagram {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::os::unix::net::UnixDatagram::recv(self, buf)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        std::os::unix::net::UnixDatagram::send(self, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_are_checked_before_any_syscall() {
        for n in ["", "sixteen-bytes-xx", "a\0b"] {
            let e = Tap::open(n).err().unwrap();
            assert!(matches!(e, NetError::Name(_)), "{e}");
        }
    }

    #[test]
    fn ifreq_is_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
