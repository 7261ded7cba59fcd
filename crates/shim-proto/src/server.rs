//! The server side of `sevm shim`: each connection is one open `/dev/sev` or
//! `/dev/sev-guest`. `/dev/sev` ioctls are answered by the loopback model of Linux's SEV
//! driver (`sev_firmware::hw::loopback`) over the soft platform: the shipped buffers are
//! copied into server memory, the command's pointer fields are pointed at those copies (or,
//! for a buffer the client did not ship, at a reserved range with no access, where the
//! model's `process_vm_readv` copies fail with EFAULT as the kernel's `copy_from_user`
//! would), the model runs exactly as for an in-process caller, and the buffers it wrote go
//! back. `/dev/sev-guest` ioctls go to a [`GuestDriver`].

// The one `unsafe` operation here is handing the model the translated argument (and the
// mmap of the no-access range); everything else is checked code.
#![allow(unsafe_code)]

use crate::{frame, frame_len, replan, Device, Dir, Error, Region, Reply, Request};
use sev_firmware::hw::loopback::Loopback;
use sev_firmware::hw::IoctlPort;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Size of the no-access range unshipped buffers are pointed at: larger than any buffer a
/// command may touch (GET_ID2's 4 MiB cap), so the model's copies stay inside it.
const BAD_LEN: usize = 8 << 20;

/// Base of the reserved no-access range (mapped once, PROT_NONE, never accessible).
fn bad_base() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    *BASE.get_or_init(|| {
        // SAFETY: an anonymous private PROT_NONE reservation at an address of the kernel's
        // choosing; it overlaps nothing and is never unmapped, so no Rust object can live in
        // it and any access to it faults (the model's process_vm_* copies then fail).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BAD_LEN,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            // No reservation: the top of the canonical lower half is never mapped for user
            // processes on x86-64 (the last page below 1 << 47 is a guard page), so fall
            // back to an address range the kernel always refuses.
            (1u64 << 47) - BAD_LEN as u64
        } else {
            p as u64
        }
    })
}

/// The `/dev/sev-guest` side: an SNP guest's kernel driver (see `sevm shim --guest`).
pub trait GuestDriver: Send + Sync {
    /// One ioctl: `arg` is the 32-byte `snp_guest_request_ioctl` (the driver writes
    /// `exitinfo2` in it), `req`/`resp` the request and response structs (empty if the
    /// program did not ship them: EFAULT), `certs` the certificate buffer of
    /// SNP_GET_EXT_REPORT. Returns the ioctl's value or the errno.
    fn ioctl(
        &self,
        request: u64,
        arg: &mut [u8],
        req: Option<&mut [u8]>,
        resp: Option<&mut [u8]>,
        certs: Option<&mut [u8]>,
    ) -> Result<i32, i32>;
}

/// The server: the loopback kernel over one platform directory, and optionally a guest.
pub struct Server {
    lb: Loopback,
    guest: Option<Arc<dyn GuestDriver>>,
}

/// One connection's open device.
pub struct Conn {
    dev: Option<(Device, Option<File>)>,
}

impl Conn {
    /// A connection that has not opened a device yet.
    pub fn new() -> Conn {
        Conn { dev: None }
    }
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new()
    }
}

impl Server {
    /// A server whose `/dev/sev` is the loopback over `lb`; `guest` answers `/dev/sev-guest`
    /// (absent: opening it is ENOENT, as on a host).
    pub fn new(lb: Loopback, guest: Option<Arc<dyn GuestDriver>>) -> Server {
        Server { lb, guest }
    }

    /// The loopback kernel.
    pub fn loopback(&self) -> &Loopback {
        &self.lb
    }

    /// Handles one frame payload on `conn`; returns the answer payload. An `Err` is a
    /// protocol violation: the connection should be dropped.
    pub fn handle(&self, conn: &mut Conn, payload: &[u8]) -> Result<Vec<u8>, Error> {
        match Request::decode(payload)? {
            Request::Open { device, flags } => {
                if conn.dev.is_some() {
                    return Err(Error(
                        "open on a connection that already has a device".into(),
                    ));
                }
                let e = match device {
                    Device::Sev => {
                        let acc = flags & libc::O_ACCMODE;
                        match OpenOptions::new()
                            .read(acc != libc::O_WRONLY)
                            .write(acc != libc::O_RDONLY)
                            .open(self.lb.sev_path())
                        {
                            Ok(f) => {
                                conn.dev = Some((Device::Sev, Some(f)));
                                0
                            }
                            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
                        }
                    }
                    Device::SevGuest if self.guest.is_some() => {
                        conn.dev = Some((Device::SevGuest, None));
                        0
                    }
                    Device::SevGuest => libc::ENOENT,
                };
                Ok(e.to_le_bytes().to_vec())
            }
            Request::Ioctl {
                request,
                arg,
                regions,
            } => {
                let Some((dev, file)) = &conn.dev else {
                    return Err(Error("ioctl before open".into()));
                };
                let planned = replan(*dev, request, arg, &regions)?;
                let reply = match (dev, file) {
                    (Device::Sev, Some(f)) => self.sev_ioctl(f, request, arg, planned)?,
                    _ => self.guest_ioctl(request, planned)?,
                };
                Ok(reply.encode())
            }
        }
    }

    fn sev_ioctl(
        &self,
        f: &File,
        request: u64,
        arg: u64,
        regions: Vec<Region>,
    ) -> Result<Reply, Error> {
        let bad = bad_base();
        let mut bufs: Vec<Vec<u8>> = regions
            .iter()
            .map(|r| r.bytes.clone().unwrap_or_default())
            .collect();
        let local: Vec<u64> = regions
            .iter()
            .zip(&bufs)
            .map(|(r, b)| {
                if r.bytes.is_some() {
                    b.as_ptr() as u64
                } else {
                    bad
                }
            })
            .collect();
        // Point each pointer field at the server's copy.
        let mut patches = Vec::new();
        for (i, r) in regions.iter().enumerate() {
            if let Some((p, off)) = r.parent {
                patches.push((p, off, local[i], r.addr));
            }
        }
        // A data pointer of a command that has no data struct: never read by the model,
        // but never left pointing into the server either.
        if let Some(first) = bufs.first() {
            let has_data = regions.iter().any(|r| r.parent == Some((0, 4)));
            if first.len() == 16 && !has_data {
                let mut a = [0u8; 8];
                a.copy_from_slice(&first[4..12]);
                let d = u64::from_le_bytes(a);
                if d != 0 {
                    patches.push((0, 4, bad, d));
                }
            }
        }
        for &(p, off, to, _) in &patches {
            let b = bufs
                .get_mut(p)
                .and_then(|b| b.get_mut(off..off + 8))
                .ok_or_else(|| Error(format!("pointer field at {p}+{off} outside its struct")))?;
            b.copy_from_slice(&to.to_le_bytes());
        }
        let arg_local = match regions.first() {
            Some(r) if r.parent.is_none() => local[0],
            _ if arg == 0 => 0,
            _ => bad,
        };
        // SAFETY: every address the model can reach from `arg_local` is either a buffer in
        // `bufs` of exactly the length the command's struct states (the plan shipped it with
        // that length; `bufs` is not touched until the call returns), or inside the
        // reserved no-access range, larger than any length the model accepts before copying,
        // where its process_vm_readv/writev copies fail with EFAULT.
        let r = unsafe {
            self.lb
                .ioctl(f.as_raw_fd(), request, arg_local as *mut std::ffi::c_void)
        };
        // The program sees its own addresses back in the structs the driver copies back.
        for &(p, off, _, orig) in &patches {
            if let Some(b) = bufs.get_mut(p).and_then(|b| b.get_mut(off..off + 8)) {
                b.copy_from_slice(&orig.to_le_bytes());
            }
        }
        let (ret, errno) = match r {
            Ok(v) => (v, 0),
            Err(e) => (-1, e.raw_os_error().unwrap_or(libc::EIO)),
        };
        Ok(Reply {
            ret,
            errno,
            out: out_regions(&regions, bufs),
        })
    }

    fn guest_ioctl(&self, request: u64, regions: Vec<Region>) -> Result<Reply, Error> {
        let Some(g) = &self.guest else {
            return Err(Error("guest ioctl without a guest".into()));
        };
        let mut bufs: Vec<Option<Vec<u8>>> = regions.iter().map(|r| r.bytes.clone()).collect();
        let r = match bufs.first() {
            None => Err(if regions.is_empty() {
                // Unknown request or NULL argument.
                if request_known(request) {
                    libc::EFAULT
                } else {
                    libc::ENOTTY
                }
            } else {
                libc::EFAULT
            }),
            Some(None) => Err(libc::EFAULT),
            Some(Some(_)) => {
                // Regions by role: 0 arg, then req (parent (0,8)), resp ((0,16)), certs.
                let role =
                    |want: (usize, usize)| regions.iter().position(|r| r.parent == Some(want));
                let (ri, si, ci) = (role((0, 8)), role((0, 16)), role((1, 96)));
                let mut it = bufs.iter_mut().enumerate();
                let mut arg = None;
                let (mut req, mut resp, mut certs) = (None, None, None);
                for (i, b) in &mut it {
                    let b = b.as_mut().map(|v| v.as_mut_slice());
                    if i == 0 {
                        arg = b;
                    } else if Some(i) == ri {
                        req = b;
                    } else if Some(i) == si {
                        resp = b;
                    } else if Some(i) == ci {
                        certs = b;
                    }
                }
                match arg {
                    Some(a) => g.ioctl(request, a, req, resp, certs),
                    None => Err(libc::EFAULT),
                }
            }
        };
        let (ret, errno) = match r {
            Ok(v) => (v, 0),
            Err(e) => (-1, e),
        };
        let bufs = bufs.into_iter().map(|b| b.unwrap_or_default()).collect();
        Ok(Reply {
            ret,
            errno,
            out: out_regions(&regions, bufs),
        })
    }

    /// Serves connections on `listener` until it fails, one thread per connection.
    pub fn serve(self: Arc<Self>, listener: UnixListener) {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let me = Arc::clone(&self);
            std::thread::spawn(move || me.connection(s));
        }
    }

    fn connection(&self, mut s: UnixStream) {
        let mut conn = Conn::new();
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                return; // closed
            }
            let n = match frame_len(len) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("sevm shim: {e}; dropping the connection");
                    return;
                }
            };
            let mut b = vec![0u8; n];
            if s.read_exact(&mut b).is_err() {
                return;
            }
            match self.handle(&mut conn, &b) {
                Ok(a) => {
                    if s.write_all(&frame(&a)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("{e}; dropping the connection");
                    return;
                }
            }
        }
    }
}

fn request_known(r: u64) -> bool {
    matches!(
        r,
        crate::SNP_GET_REPORT | crate::SNP_GET_DERIVED_KEY | crate::SNP_GET_EXT_REPORT
    )
}

/// The shipped `Out` regions, to copy back.
fn out_regions(regions: &[Region], bufs: Vec<Vec<u8>>) -> Vec<(u32, Vec<u8>)> {
    regions
        .iter()
        .zip(bufs)
        .enumerate()
        .filter(|(_, (r, _))| r.dir == Dir::Out && r.bytes.is_some())
        .map(|(i, (_, b))| (i as u32, b))
        .collect()
}

/// Opens the loopback over the soft platform in `platform_dir` (with its SNP side when
/// `snp`), its device files in `dev_dir`.
pub fn open_loopback(platform_dir: &Path, dev_dir: &Path, snp: bool) -> Result<Loopback, String> {
    let plat = sev_firmware::soft::SoftPlatform::open(platform_dir).map_err(|e| {
        format!(
            "opening the soft platform in {}: {e}",
            platform_dir.display()
        )
    })?;
    let lb = Loopback::open(plat, dev_dir).map_err(|e| {
        format!(
            "creating the emulated /dev/sev in {}: {e}",
            dev_dir.display()
        )
    })?;
    if !snp {
        return Ok(lb);
    }
    let p = sev_firmware::snp::soft::SoftSnpPlatform::open(
        platform_dir,
        sev_firmware::snp::soft::SoftSnpConfig::default(),
    )
    .map_err(|e| {
        format!(
            "opening the soft SNP platform in {}: {e}",
            platform_dir.display()
        )
    })?;
    lb.try_with_snp(p)
        .map_err(|e| format!("SNP_INIT of the soft SNP platform: {e}"))
}
