//! The protocol of `sevm shim`: an unmodified program runs with the `sevm-shim` library
//! preloaded; its `open("/dev/sev")` / `open("/dev/sev-guest")` become connections to the
//! server `sevm shim` runs, and each `ioctl` on them is shipped there with the user buffers
//! the command's structs point to.
//!
//! Which buffers an ioctl carries is [`plan`]'s job, one table per command after Linux's
//! uAPI (include/uapi/linux/psp-sev.h, include/uapi/linux/sev-guest.h): the client runs it
//! over its own memory to know what to read, the server runs it again over the shipped bytes
//! to know where each pointer field is (so it can point it at its own copy) and which
//! buffers go back. Lengths are capped where the kernel refuses larger ones before touching
//! the buffer (a capped or empty buffer is not shipped; the server points the field at a
//! reserved unmapped range, where the model's copies fail with EFAULT as the kernel's do).
//!
//! No `unsafe` outside [`server`]: the wire format is parsed with bounds checks and every malformed frame
//! is an [`Error`] naming what was wrong.

#![deny(unsafe_code)]

pub mod guest;
#[cfg(feature = "server")]
pub mod guest_driver;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod soft_guest;

use std::fmt;

/// `_IOWR('S', 0, struct sev_issue_cmd)`.
pub const SEV_ISSUE_CMD: u64 = 0xC010_5300;
/// `_IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
pub const SNP_GET_REPORT: u64 = 0xC020_5300;
/// `_IOWR('S', 0x1, struct snp_guest_request_ioctl)`.
pub const SNP_GET_DERIVED_KEY: u64 = 0xC020_5301;
/// `_IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
pub const SNP_GET_EXT_REPORT: u64 = 0xC020_5302;

/// `SEV_FW_BLOB_MAX_SIZE`.
pub const BLOB_MAX: u32 = 0x4000;
/// `KMALLOC_MAX_SIZE` on x86-64 (4 MiB): GET_ID2's `kzalloc(length)` fails above it.
pub const KMALLOC_MAX: u32 = 4 << 20;
/// Size of the wrapped VLEK hash stick of SNP_VLEK_LOAD.
pub const VLEK_WRAPPED: u32 = 0x1B0;

/// Environment variable naming the server's Unix socket.
pub const ENV_SOCKET: &str = "SEVM_SHIM_SOCKET";

/// Largest frame either side accepts: the largest shipped buffer (GET_ID2's 4 MiB) plus
/// the structs and headers.
pub const MAX_FRAME: usize = (KMALLOC_MAX as usize) + 64 * 1024;
/// Most regions one ioctl ships (arg, data struct, two buffers; the guest's three).
pub const MAX_REGIONS: usize = 4;

/// The emulated device a connection stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// `/dev/sev`: the host's platform commands (`SEV_ISSUE_CMD`).
    Sev,
    /// `/dev/sev-guest`: an SNP guest's report and key requests.
    SevGuest,
}

impl Device {
    /// The device for a path the program opened, if it is one the shim serves.
    pub fn from_path(path: &[u8]) -> Option<Device> {
        match path {
            b"/dev/sev" => Some(Device::Sev),
            b"/dev/sev-guest" => Some(Device::SevGuest),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        match self {
            Device::Sev => 0,
            Device::SevGuest => 1,
        }
    }

    fn from_code(c: u8) -> Option<Device> {
        match c {
            0 => Some(Device::Sev),
            1 => Some(Device::SevGuest),
            _ => None,
        }
    }
}

/// Which way the kernel moves a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Read by the kernel only.
    In,
    /// Written by the kernel (possibly read too): copied back to the program.
    Out,
}

/// One user buffer an ioctl carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The program's address.
    pub addr: u64,
    /// Bytes shipped (0: not shipped: empty, or longer than the kernel accepts).
    pub len: u32,
    /// Direction.
    pub dir: Dir,
    /// Where the pointer to this buffer is: (index of the region holding it, byte offset);
    /// `None` for the ioctl's argument itself.
    pub parent: Option<(usize, usize)>,
    /// The bytes, or `None` if not shipped (the program could not read them, or `len` 0).
    pub bytes: Option<Vec<u8>>,
}

/// Reads `len` bytes at a program address for the region that will have index `i` in the
/// plan; `None` if they are not readable.
pub type Reader<'a> = dyn FnMut(usize, u64, u32) -> Option<Vec<u8>> + 'a;

/// The little-endian u32 at `b[o..o + 4]` (the caller has checked the length).
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian u64 at `b[o..o + 8]` (the caller has checked the length).
pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

struct Planner<'r, 'a> {
    read: &'r mut Reader<'a>,
    out: Vec<Region>,
}

impl Planner<'_, '_> {
    /// Adds the buffer `[addr, addr+len)` pointed to from `parent`; reads it if `len` is
    /// within `cap` and non-zero. Returns its bytes if shipped.
    fn add(
        &mut self,
        addr: u64,
        len: u32,
        cap: u32,
        dir: Dir,
        parent: Option<(usize, usize)>,
    ) -> Option<Vec<u8>> {
        if addr == 0 && parent.is_some() {
            return None;
        }
        let shipped = len != 0 && len <= cap;
        let i = self.out.len();
        let bytes = if shipped {
            (self.read)(i, addr, len)
        } else {
            None
        };
        self.out.push(Region {
            addr,
            len: if bytes.is_some() { len } else { 0 },
            dir,
            parent,
            bytes: bytes.clone(),
        });
        bytes
    }
}

/// The buffers ioctl `request` with argument `arg` on `dev` carries, read through `read`.
///
/// The tables follow Linux: `sev_ioctl` (drivers/crypto/ccp/sev-dev.c) for `/dev/sev`,
/// `snp_guest_ioctl` (drivers/virt/coco/sev-guest/sev-guest.c) for `/dev/sev-guest`. An
/// unknown request ships nothing (the kernel answers EINVAL or ENOTTY before reading).
pub fn plan(dev: Device, request: u64, arg: u64, read: &mut Reader<'_>) -> Vec<Region> {
    let mut p = Planner {
        read,
        out: Vec::new(),
    };
    match dev {
        Device::Sev => plan_sev(&mut p, request, arg),
        Device::SevGuest => plan_guest(&mut p, request, arg),
    }
    p.out
}

fn plan_sev(p: &mut Planner<'_, '_>, request: u64, arg: u64) {
    if request != SEV_ISSUE_CMD || arg == 0 {
        return;
    }
    // struct sev_issue_cmd { u32 cmd; u64 data; u32 error; } (packed).
    let Some(c) = p.add(arg, 16, 16, Dir::Out, None) else {
        return;
    };
    let (cmd, data) = (u32_at(&c, 0), u64_at(&c, 4));
    // The command's data struct: size and whether the driver writes it back.
    let (size, dir) = match cmd {
        1 => (12, Dir::Out),     // sev_user_data_status
        3 | 8 => (12, Dir::Out), // pek_csr / get_id2 {address, length (in/out)}
        5 => (24, Dir::Out),     // pdh_cert_export (lengths in/out)
        6 => (24, Dir::In),      // pek_cert_import
        9 => (32, Dir::Out),     // sev_user_data_snp_status
        11 => (64, Dir::In),     // sev_user_data_snp_config
        12 => (16, Dir::In),     // sev_user_data_snp_vlek_load
        _ => return,             // no data struct (or unknown: EINVAL)
    };
    let Some(d) = p.add(data, size, size, dir, Some((0, 4))) else {
        return;
    };
    let di = p.out.len() - 1;
    match cmd {
        3 => {
            p.add(
                u64_at(&d, 0),
                u32_at(&d, 8),
                BLOB_MAX,
                Dir::Out,
                Some((di, 0)),
            );
        }
        8 => {
            p.add(
                u64_at(&d, 0),
                u32_at(&d, 8),
                KMALLOC_MAX,
                Dir::Out,
                Some((di, 0)),
            );
        }
        5 | 6 => {
            let dir = if cmd == 5 { Dir::Out } else { Dir::In };
            p.add(u64_at(&d, 0), u32_at(&d, 8), BLOB_MAX, dir, Some((di, 0)));
            p.add(
                u64_at(&d, 12),
                u32_at(&d, 20),
                BLOB_MAX,
                dir,
                Some((di, 12)),
            );
        }
        12 => {
            p.add(
                u64_at(&d, 8),
                VLEK_WRAPPED,
                VLEK_WRAPPED,
                Dir::In,
                Some((di, 8)),
            );
        }
        _ => {}
    }
}

/// Sizes of `struct snp_report_req`, `snp_derived_key_req`, `snp_ext_report_req`.
pub const REPORT_REQ: u32 = 96;
/// `struct snp_derived_key_req`.
pub const KEY_REQ: u32 = 32;
/// `struct snp_ext_report_req` (`snp_report_req`, u64 certs_address, u32 certs_len, padding).
pub const EXT_REPORT_REQ: u32 = 112;
/// `struct snp_report_resp` (4000 bytes of the firmware's MSG_REPORT_RSP).
pub const REPORT_RESP: u32 = 4000;
/// `struct snp_derived_key_resp`.
pub const KEY_RESP: u32 = 64;

fn plan_guest(p: &mut Planner<'_, '_>, request: u64, arg: u64) {
    let (req, resp) = match request {
        SNP_GET_REPORT => (REPORT_REQ, REPORT_RESP),
        SNP_GET_DERIVED_KEY => (KEY_REQ, KEY_RESP),
        SNP_GET_EXT_REPORT => (EXT_REPORT_REQ, REPORT_RESP),
        _ => return,
    };
    if arg == 0 {
        return;
    }
    // struct snp_guest_request_ioctl { u8 msg_version; u64 req_data; u64 resp_data;
    // u64 exitinfo2; } (natural alignment: 32 bytes).
    let Some(a) = p.add(arg, 32, 32, Dir::Out, None) else {
        return;
    };
    let req_dir = if request == SNP_GET_EXT_REPORT {
        Dir::Out // certs_len is written back on the length probe
    } else {
        Dir::In
    };
    let r = p.add(u64_at(&a, 8), req, req, req_dir, Some((0, 8)));
    p.add(u64_at(&a, 16), resp, resp, Dir::Out, Some((0, 16)));
    if request == SNP_GET_EXT_REPORT {
        if let Some(r) = r {
            let ri = 1;
            let (certs, len) = (u64_at(&r, 96), u32_at(&r, 104));
            p.add(certs, len, BLOB_MAX, Dir::Out, Some((ri, 96)));
        }
    }
}

/// A malformed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sevm shim protocol: {}", self.0)
    }
}

impl std::error::Error for Error {}

fn err<T>(what: impl Into<String>) -> Result<T, Error> {
    Err(Error(what.into()))
}

/// A bounds-checked reader over a frame.
struct Cur<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], Error> {
        if self.b.len() < n {
            return err(format!("{}: truncated at {field}", self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self, f: &str) -> Result<u8, Error> {
        Ok(self.take(1, f)?[0])
    }
    fn u32(&mut self, f: &str) -> Result<u32, Error> {
        Ok(u32_at(self.take(4, f)?, 0))
    }
    fn i32(&mut self, f: &str) -> Result<i32, Error> {
        Ok(self.u32(f)? as i32)
    }
    fn u64(&mut self, f: &str) -> Result<u64, Error> {
        Ok(u64_at(self.take(8, f)?, 0))
    }
    fn end(&self) -> Result<(), Error> {
        if self.b.is_empty() {
            Ok(())
        } else {
            err(format!("{}: {} trailing bytes", self.what, self.b.len()))
        }
    }
}

/// A request from the library to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `open` of `device` with these `open(2)` flags; the connection is that open file.
    Open {
        /// Which device.
        device: Device,
        /// The `open(2)` flags (only O_ACCMODE matters: the driver's FMODE_WRITE).
        flags: i32,
    },
    /// `ioctl(fd, request, arg)` with the buffers [`plan`] found.
    Ioctl {
        /// The ioctl number.
        request: u64,
        /// The argument (the program's address, or an integer).
        arg: u64,
        /// `(addr, bytes)` of each planned region, in plan order (`None`: not shipped).
        regions: Vec<(u64, Option<Vec<u8>>)>,
    },
}

const OP_OPEN: u8 = b'O';
const OP_IOCTL: u8 = b'I';

impl Request {
    /// The frame payload (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Request::Open { device, flags } => {
                v.push(OP_OPEN);
                v.push(device.code());
                v.extend_from_slice(&flags.to_le_bytes());
            }
            Request::Ioctl {
                request,
                arg,
                regions,
            } => {
                v.push(OP_IOCTL);
                v.extend_from_slice(&request.to_le_bytes());
                v.extend_from_slice(&arg.to_le_bytes());
                v.extend_from_slice(&(regions.len() as u32).to_le_bytes());
                for (addr, b) in regions {
                    v.extend_from_slice(&addr.to_le_bytes());
                    match b {
                        Some(b) => {
                            v.push(1);
                            v.extend_from_slice(&(b.len() as u32).to_le_bytes());
                            v.extend_from_slice(b);
                        }
                        None => v.push(0),
                    }
                }
            }
        }
        v
    }

    /// Parses a frame payload.
    pub fn decode(b: &[u8]) -> Result<Request, Error> {
        let mut c = Cur { b, what: "request" };
        match c.u8("op")? {
            OP_OPEN => {
                let d = c.u8("device")?;
                let device = Device::from_code(d)
                    .ok_or_else(|| Error(format!("request: unknown device {d}")))?;
                let flags = c.i32("flags")?;
                c.end()?;
                Ok(Request::Open { device, flags })
            }
            OP_IOCTL => {
                let request = c.u64("ioctl request")?;
                let arg = c.u64("ioctl arg")?;
                let n = c.u32("region count")? as usize;
                if n > MAX_REGIONS {
                    return err(format!("request: {n} regions (at most {MAX_REGIONS})"));
                }
                let mut regions = Vec::with_capacity(n);
                for _ in 0..n {
                    let addr = c.u64("region address")?;
                    let bytes = match c.u8("region presence")? {
                        0 => None,
                        1 => {
                            let len = c.u32("region length")? as usize;
                            Some(c.take(len, "region bytes")?.to_vec())
                        }
                        x => return err(format!("request: region presence byte {x}")),
                    };
                    regions.push((addr, bytes));
                }
                c.end()?;
                Ok(Request::Ioctl {
                    request,
                    arg,
                    regions,
                })
            }
            x => err(format!("request: unknown op 0x{x:02x}")),
        }
    }
}

/// The server's answer to an [`Request::Ioctl`] (an `Open` is answered by `errno` alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The ioctl's return value (if `errno` is 0).
    pub ret: i32,
    /// The errno (0: success).
    pub errno: i32,
    /// `(region index, bytes)` for each shipped [`Dir::Out`] region, to copy back.
    pub out: Vec<(u32, Vec<u8>)>,
}

impl Reply {
    /// The frame payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&self.ret.to_le_bytes());
        v.extend_from_slice(&self.errno.to_le_bytes());
        v.extend_from_slice(&(self.out.len() as u32).to_le_bytes());
        for (i, b) in &self.out {
            v.extend_from_slice(&i.to_le_bytes());
            v.extend_from_slice(&(b.len() as u32).to_le_bytes());
            v.extend_from_slice(b);
        }
        v
    }

    /// Parses a frame payload.
    pub fn decode(b: &[u8]) -> Result<Reply, Error> {
        let mut c = Cur { b, what: "reply" };
        let ret = c.i32("ret")?;
        let errno = c.i32("errno")?;
        let n = c.u32("region count")? as usize;
        if n > MAX_REGIONS {
            return err(format!("reply: {n} regions (at most {MAX_REGIONS})"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let i = c.u32("region index")?;
            let len = c.u32("region length")? as usize;
            out.push((i, c.take(len, "region bytes")?.to_vec()));
        }
        c.end()?;
        Ok(Reply { ret, errno, out })
    }
}

/// Re-plans an ioctl over the regions the client shipped: the server's view of the same
/// [`plan`]. The client's regions must be exactly what the plan asks for (same addresses and
/// lengths, in order); anything else is an [`Error`].
pub fn replan(
    dev: Device,
    request: u64,
    arg: u64,
    shipped: &[(u64, Option<Vec<u8>>)],
) -> Result<Vec<Region>, Error> {
    let mut bad: Option<String> = None;
    let mut read = |i: usize, addr: u64, len: u32| -> Option<Vec<u8>> {
        match shipped.get(i) {
            Some((a, b)) if *a == addr => match b {
                Some(b) if b.len() == len as usize => Some(b.clone()),
                Some(b) => {
                    bad.get_or_insert(format!(
                        "region at 0x{addr:x}: {} bytes shipped, {len} expected",
                        b.len()
                    ));
                    None
                }
                None => None,
            },
            Some((a, _)) => {
                bad.get_or_insert(format!("region at 0x{a:x} where 0x{addr:x} was expected"));
                None
            }
            None => {
                bad.get_or_insert(format!("region at 0x{addr:x} missing"));
                None
            }
        }
    };
    let regions = plan(dev, request, arg, &mut read);
    if let Some(b) = bad {
        return err(b);
    }
    // Regions the plan did not read (empty or over the cap) are shipped as absent.
    if regions.len() != shipped.len() {
        return err(format!(
            "{} regions shipped, the ioctl carries {}",
            shipped.len(),
            regions.len()
        ));
    }
    for (r, (a, b)) in regions.iter().zip(shipped) {
        if r.addr != *a || (r.bytes.is_none() && b.is_some()) {
            return err(format!(
                "region at 0x{a:x} shipped but not readable by the plan"
            ));
        }
    }
    Ok(regions)
}

/// Encodes a frame: a little-endian u32 length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Checks a frame length prefix.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, Error> {
    let n = u32::from_le_bytes(prefix) as usize;
    if n > MAX_FRAME {
        return err(format!("frame of {n} bytes (at most {MAX_FRAME})"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fake address space: address -> bytes.
    fn reader(mem: &HashMap<u64, Vec<u8>>) -> impl FnMut(usize, u64, u32) -> Option<Vec<u8>> + '_ {
        move |_, a, l| {
            mem.get(&a)
                .filter(|b| b.len() >= l as usize)
                .map(|b| b[..l as usize].to_vec())
        }
    }

    fn issue(cmd: u32, data: u64) -> Vec<u8> {
        let mut v = cmd.to_le_bytes().to_vec();
        v.extend_from_slice(&data.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }

    fn two_bufs(a1: u64, l1: u32, a2: u64, l2: u32) -> Vec<u8> {
        let mut v = a1.to_le_bytes().to_vec();
        v.extend_from_slice(&l1.to_le_bytes());
        v.extend_from_slice(&a2.to_le_bytes());
        v.extend_from_slice(&l2.to_le_bytes());
        v
    }

    #[test]
    fn pdh_export_plans_both_buffers_and_round_trips() {
        let mut mem = HashMap::new();
        mem.insert(0x1000, issue(5, 0x2000));
        mem.insert(0x2000, two_bufs(0x3000, 2084, 0x4000, 3 * 2084));
        mem.insert(0x3000, vec![7; 2084]);
        mem.insert(0x4000, vec![9; 3 * 2084]);
        let r = plan(Device::Sev, SEV_ISSUE_CMD, 0x1000, &mut reader(&mem));
        assert_eq!(r.len(), 4);
        assert_eq!(r[1].parent, Some((0, 4)));
        assert_eq!(r[2].parent, Some((1, 0)));
        assert_eq!(r[3].parent, Some((1, 12)));
        assert_eq!(r[3].len, 3 * 2084);
        assert!(r.iter().all(|x| x.dir == Dir::Out));
        let req = Request::Ioctl {
            request: SEV_ISSUE_CMD,
            arg: 0x1000,
            regions: r.iter().map(|x| (x.addr, x.bytes.clone())).collect(),
        };
        let back = Request::decode(&req.encode()).expect("decode");
        assert_eq!(back, req);
        let Request::Ioctl { regions, .. } = back else {
            panic!("not an ioctl")
        };
        assert_eq!(
            replan(Device::Sev, SEV_ISSUE_CMD, 0x1000, &regions).expect("replan"),
            r
        );
    }

    #[test]
    fn over_cap_lengths_are_not_read() {
        let mut mem = HashMap::new();
        mem.insert(0x1000, issue(6, 0x2000));
        mem.insert(0x2000, two_bufs(0x3000, BLOB_MAX + 1, 0x4000, 0));
        let mut asked = Vec::new();
        let mut rd = |i: usize, a: u64, l: u32| {
            asked.push((a, l));
            reader(&mem)(i, a, l)
        };
        let r = plan(Device::Sev, SEV_ISSUE_CMD, 0x1000, &mut rd);
        assert_eq!(r.len(), 4);
        assert_eq!((r[2].len, r[2].bytes.is_none()), (0, true));
        assert_eq!((r[3].len, r[3].bytes.is_none()), (0, true));
        assert_eq!(asked, vec![(0x1000, 16), (0x2000, 24)]);
    }

    #[test]
    fn unreadable_arg_stops_the_plan_and_unknown_requests_ship_nothing() {
        let mem = HashMap::new();
        let r = plan(Device::Sev, SEV_ISSUE_CMD, 0xdead, &mut reader(&mem));
        assert_eq!(r.len(), 1);
        assert!(r[0].bytes.is_none());
        assert!(plan(Device::Sev, 0x5401, 0x1000, &mut reader(&mem)).is_empty());
        assert!(plan(Device::SevGuest, SEV_ISSUE_CMD, 0x1000, &mut reader(&mem)).is_empty());
    }

    #[test]
    fn ext_report_plans_the_certificate_buffer() {
        let mut mem = HashMap::new();
        let mut a = vec![1u8; 8];
        a.extend_from_slice(&0x2000u64.to_le_bytes());
        a.extend_from_slice(&0x3000u64.to_le_bytes());
        a.extend_from_slice(&0u64.to_le_bytes());
        mem.insert(0x1000, a);
        let mut req = vec![0u8; 96];
        req.extend_from_slice(&0x8000u64.to_le_bytes());
        req.extend_from_slice(&0x4000u32.to_le_bytes());
        req.extend_from_slice(&[0; 4]);
        mem.insert(0x2000, req);
        mem.insert(0x3000, vec![0; 4000]);
        mem.insert(0x8000, vec![0; 0x4000]);
        let r = plan(
            Device::SevGuest,
            SNP_GET_EXT_REPORT,
            0x1000,
            &mut reader(&mem),
        );
        assert_eq!(r.len(), 4);
        assert_eq!(
            (r[3].addr, r[3].len, r[3].parent),
            (0x8000, 0x4000, Some((1, 96)))
        );
    }

    #[test]
    fn malformed_frames_are_errors_naming_the_field() {
        assert!(Request::decode(&[]).unwrap_err().0.contains("op"));
        assert!(Request::decode(&[b'O', 7, 0, 0, 0, 0])
            .unwrap_err()
            .0
            .contains("device"));
        let mut v = vec![b'I'];
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(&100u32.to_le_bytes());
        assert!(Request::decode(&v).unwrap_err().0.contains("regions"));
        let mut v = vec![b'I'];
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        v.push(1);
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&v).unwrap_err().0.contains("region bytes"));
        assert!(frame_len((MAX_FRAME as u32 + 1).to_le_bytes()).is_err());
        // A shipped region the plan does not expect.
        let e = replan(
            Device::Sev,
            SEV_ISSUE_CMD,
            0x1000,
            &[(0x1000, Some(issue(1, 0)))],
        );
        assert!(e.is_ok());
        let e = replan(
            Device::Sev,
            SEV_ISSUE_CMD,
            0x1000,
            &[(0x1008, Some(issue(1, 0)))],
        );
        assert!(e.unwrap_err().0.contains("expected"));
    }
}
