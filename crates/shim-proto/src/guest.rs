//! The guest channel: how `sevm shim --guest PATH` (standing for an SNP guest's kernel) reaches
//! a running soft SNP VM's firmware context through the Unix socket `sevm run --guest-channel
//! PATH` opens.
//!
//! Trust model: the channel *is* the guest kernel's view of the platform. Whoever can connect
//! to the socket is "inside the guest": it reads the guest's secrets page (its VMPCKs) and
//! sends guest requests under them, as the guest's own `sev-guest` driver does through the
//! GHCB. It exists for CI without hardware; `sevm run` creates the socket with mode 0600 and
//! serves nothing else on it. The VM's secrets leave the VMM on this socket only.
//!
//! Why the client gets the VMPCK (a [`ChanRequest::Secrets`] request) instead of the channel
//! sealing for it: the client models the Linux driver, which seals and opens every message
//! itself with the VMPCK it read from its secrets page; the VMM side then only carries
//! ciphertext between the client and the firmware, exactly as KVM carries a guest's request
//! pages, so the firmware checks the client's crypto (tag, header, sequence number) for real.
//!
//! Sequence numbers: the secrets page the channel returns has the guest-OS area's
//! `msg_seqno_0..3` (u32 at 0xA0 + 4·n, Linux's `struct secrets_os_area`) set to the number of
//! messages the firmware has taken with each VMPCK in this VM's context, counting the guest's
//! own doorbell requests; the next request carries that count + 1. The channel serves one
//! connection at a time (one guest kernel; a connection is one ioctl: secrets, then requests),
//! so two clients cannot interleave between reading a count and using it.
//!
//! Frames are [`crate::frame`]s (u32 LE length, payload).
//!
//! | request | payload |
//! |---|---|
//! | secrets | `'S'` |
//! | guest request | `'G'`, u8 extended (0/1), u32 certificate buffer pages, 4096-byte request page |
//!
//! | answer to | payload |
//! |---|---|
//! | secrets | u32 status (0 ok, else no running SNP guest), then the 4096-byte page if 0 |
//! | guest request | u32 fw_error, u32 vmm_error, u64 pages needed, 4096-byte response page, u32 certificate bytes, the bytes |

use crate::{frame, frame_len, Error};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;
use zeroize::Zeroizing;

/// Size of a guest message page and of the secrets page.
pub const PAGE: usize = 4096;
/// Largest certificate buffer the channel accepts, in pages (the VMM's doorbell limit).
pub const MAX_CERT_PAGES: u32 = 64;
/// Offset of the guest-OS area (`msg_seqno_0..3`) in the secrets page.
pub const OS_AREA: usize = 0xA0;

/// Writes the message count of each VMPCK into the OS area of a secrets page, where a Linux
/// guest keeps them (u32 each, saturating), as the channel hands the page to its client.
pub fn put_msg_counts(page: &mut [u8], counts: &[u64; 4]) {
    for (i, c) in counts.iter().enumerate() {
        let o = OS_AREA + 4 * i;
        page[o..o + 4].copy_from_slice(&u32::try_from(*c).unwrap_or(u32::MAX).to_le_bytes());
    }
}
/// GHCB VMM error: the certificate buffer is too small (`SNP_GUEST_VMM_ERR_INVALID_LEN`).
pub const VMM_ERR_INVALID_LEN: u32 = 1;
/// GHCB VMM error: the host is busy (`SNP_GUEST_VMM_ERR_BUSY`).
pub const VMM_ERR_BUSY: u32 = 2;
/// Status of a secrets answer when no SNP guest is running.
pub const SECRETS_NOT_RUNNING: u32 = 1;

/// A request on the guest channel.
#[derive(Clone, PartialEq, Eq)]
pub enum ChanRequest {
    /// What a guest kernel reads from its secrets page.
    Secrets,
    /// A guest request (GHCB SNP_GUEST_REQUEST, or SNP_EXTENDED_GUEST_REQUEST when
    /// `cert_pages` is `Some`, with a certificate buffer of that many pages).
    Guest {
        /// The request page (message header ‖ ciphertext).
        req: Box<[u8; PAGE]>,
        /// Extended request: the guest's certificate buffer size in pages.
        cert_pages: Option<u32>,
    },
}

impl std::fmt::Debug for ChanRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChanRequest::Secrets => f.write_str("Secrets"),
            ChanRequest::Guest { cert_pages, .. } => f
                .debug_struct("Guest")
                .field("cert_pages", cert_pages)
                .finish_non_exhaustive(),
        }
    }
}

/// The firmware's (and the host's) answer to a guest request.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestAnswer {
    /// The firmware status (0: success).
    pub fw_error: u32,
    /// The VMM error ([`VMM_ERR_INVALID_LEN`], ...).
    pub vmm_error: u32,
    /// With [`VMM_ERR_INVALID_LEN`]: the pages the certificate buffer needs.
    pub pages_needed: u64,
    /// The response page (ciphertext).
    pub resp: Box<[u8; PAGE]>,
    /// The certificate buffer as the host filled it (extended requests).
    pub certs: Vec<u8>,
}

impl std::fmt::Debug for GuestAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAnswer")
            .field("fw_error", &self.fw_error)
            .field("vmm_error", &self.vmm_error)
            .field("pages_needed", &self.pages_needed)
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

fn cur_err<T>(what: String) -> Result<T, Error> {
    Err(Error(what))
}

struct Rd<'a>(&'a [u8], &'static str);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return cur_err(format!("{}: truncated at {field}", self.1));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self, f: &str) -> Result<u8, Error> {
        Ok(self.take(1, f)?[0])
    }
    fn u32(&mut self, f: &str) -> Result<u32, Error> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, f)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self, f: &str) -> Result<u64, Error> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, f)?);
        Ok(u64::from_le_bytes(a))
    }
    fn page(&mut self, f: &str) -> Result<Box<[u8; PAGE]>, Error> {
        let mut p = Box::new([0u8; PAGE]);
        p.copy_from_slice(self.take(PAGE, f)?);
        Ok(p)
    }
    fn end(&self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            cur_err(format!("{}: {} trailing bytes", self.1, self.0.len()))
        }
    }
}

impl ChanRequest {
    /// The frame payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ChanRequest::Secrets => vec![b'S'],
            ChanRequest::Guest { req, cert_pages } => {
                let mut v = Vec::with_capacity(6 + PAGE);
                v.push(b'G');
                v.push(u8::from(cert_pages.is_some()));
                v.extend_from_slice(&cert_pages.unwrap_or(0).to_le_bytes());
                v.extend_from_slice(&req[..]);
                v
            }
        }
    }

    /// Parses a frame payload.
    pub fn decode(b: &[u8]) -> Result<ChanRequest, Error> {
        let mut r = Rd(b, "guest channel request");
        let r = match r.u8("op")? {
            b'S' => {
                r.end()?;
                ChanRequest::Secrets
            }
            b'G' => {
                let ext = r.u8("extended flag")?;
                let pages = r.u32("certificate pages")?;
                let req = r.page("request page")?;
                r.end()?;
                let cert_pages = match ext {
                    0 if pages == 0 => None,
                    0 => {
                        return cur_err(format!(
                            "guest channel request: {pages} certificate pages on a plain request"
                        ))
                    }
                    1 if pages <= MAX_CERT_PAGES => Some(pages),
                    1 => {
                        return cur_err(format!(
                            "guest channel request: certificate buffer of {pages} pages \
                             (at most {MAX_CERT_PAGES})"
                        ))
                    }
                    x => return cur_err(format!("guest channel request: extended flag {x}")),
                };
                ChanRequest::Guest { req, cert_pages }
            }
            x => return cur_err(format!("guest channel request: unknown op 0x{x:02x}")),
        };
        Ok(r)
    }
}

/// Encodes the answer to [`ChanRequest::Secrets`]: `Ok(page)` or `Err(status)`.
pub fn encode_secrets(page: Result<&[u8], u32>) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(4 + PAGE));
    match page {
        Ok(p) => {
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(p);
        }
        Err(s) => v.extend_from_slice(&s.max(1).to_le_bytes()),
    }
    v
}

/// Parses the answer to [`ChanRequest::Secrets`]: the page, or the status.
pub fn decode_secrets(b: &[u8]) -> Result<Result<Zeroizing<Vec<u8>>, u32>, Error> {
    let mut r = Rd(b, "guest channel secrets answer");
    let st = r.u32("status")?;
    if st != 0 {
        r.end()?;
        return Ok(Err(st));
    }
    let p = Zeroizing::new(r.take(PAGE, "secrets page")?.to_vec());
    r.end()?;
    Ok(Ok(p))
}

impl GuestAnswer {
    /// The frame payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24 + PAGE + self.certs.len());
        v.extend_from_slice(&self.fw_error.to_le_bytes());
        v.extend_from_slice(&self.vmm_error.to_le_bytes());
        v.extend_from_slice(&self.pages_needed.to_le_bytes());
        v.extend_from_slice(&self.resp[..]);
        v.extend_from_slice(&(self.certs.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.certs);
        v
    }

    /// Parses a frame payload; `cert_pages` is what the request asked for (the certificate
    /// bytes must be exactly that buffer, or empty).
    pub fn decode(b: &[u8], cert_pages: Option<u32>) -> Result<GuestAnswer, Error> {
        let mut r = Rd(b, "guest channel answer");
        let fw_error = r.u32("fw_error")?;
        let vmm_error = r.u32("vmm_error")?;
        let pages_needed = r.u64("pages needed")?;
        let resp = r.page("response page")?;
        let n = r.u32("certificate length")? as usize;
        let want = cert_pages.map_or(0, |p| p as usize * PAGE);
        if n != 0 && n != want {
            return cur_err(format!(
                "guest channel answer: {n} certificate bytes for a {want}-byte buffer"
            ));
        }
        let certs = r.take(n, "certificate bytes")?.to_vec();
        r.end()?;
        Ok(GuestAnswer {
            fw_error,
            vmm_error,
            pages_needed,
            resp,
            certs,
        })
    }
}

/// The VMM side of the channel: one SNP guest's secrets page and firmware context.
pub trait ChannelBackend: Send + Sync {
    /// The secrets page ([`PAGE`] bytes) as the guest kernel sees it (with `msg_seqno_0..3` in the OS area set
    /// to the context's message counts), or a nonzero status when no guest is running.
    fn secrets(&self) -> Result<Zeroizing<Vec<u8>>, u32>;
    /// One guest request: the response page into `resp`; `certs` the certificate buffer of
    /// an extended request. Returns (fw_error, vmm_error, pages needed).
    fn guest_request(
        &self,
        req: &[u8; PAGE],
        resp: &mut [u8; PAGE],
        certs: Option<&mut [u8]>,
    ) -> (u32, u32, u64);
}

/// Answers one channel frame payload.
pub fn handle_channel(b: &dyn ChannelBackend, payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    match ChanRequest::decode(payload)? {
        ChanRequest::Secrets => Ok(match b.secrets() {
            Ok(p) if p.len() == PAGE => encode_secrets(Ok(&p[..])),
            Ok(_) => encode_secrets(Err(2)),
            Err(s) => encode_secrets(Err(s)),
        }),
        ChanRequest::Guest { req, cert_pages } => {
            let mut resp = Box::new([0u8; PAGE]);
            let mut certs = cert_pages.map(|p| vec![0u8; p as usize * PAGE]);
            let (fw_error, vmm_error, pages_needed) =
                b.guest_request(&req, &mut resp, certs.as_deref_mut());
            let certs = match certs {
                Some(c) if vmm_error == 0 => c,
                _ => Vec::new(),
            };
            Ok(Zeroizing::new(
                GuestAnswer {
                    fw_error,
                    vmm_error,
                    pages_needed,
                    resp,
                    certs,
                }
                .encode(),
            ))
        }
    }
}

/// How long the channel waits for the next frame of a connection before dropping it (a
/// stuck client must not hold the single-client channel forever).
pub const IDLE: Duration = Duration::from_secs(10);

/// Serves the channel on `listener` until it fails: one connection at a time, each until EOF,
/// a malformed frame or [`IDLE`] without a frame.
pub fn serve_channel(listener: UnixListener, backend: &dyn ChannelBackend) {
    for s in listener.incoming() {
        let Ok(s) = s else { continue };
        channel_connection(s, backend);
    }
}

fn channel_connection(mut s: UnixStream, backend: &dyn ChannelBackend) {
    if s.set_read_timeout(Some(IDLE)).is_err() {
        return;
    }
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let Ok(n) = frame_len(len) else { return };
        if n > 8 + 2 * PAGE {
            return; // no channel request is this large
        }
        let mut b = vec![0u8; n];
        if s.read_exact(&mut b).is_err() {
            return;
        }
        let Ok(a) = handle_channel(backend, &b) else {
            return;
        };
        let f = Zeroizing::new(frame(&a));
        if s.write_all(&f).is_err() {
            return;
        }
    }
}

/// The client side: one connection (one ioctl's worth of exchanges).
pub struct ChannelClient(UnixStream);

impl ChannelClient {
    /// Connects to the channel socket.
    pub fn connect(path: &std::path::Path) -> std::io::Result<ChannelClient> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(ChannelClient(s))
    }

    fn call(&mut self, req: &ChanRequest) -> Result<Zeroizing<Vec<u8>>, String> {
        let io = |e: std::io::Error| format!("guest channel: {e}");
        self.0.write_all(&frame(&req.encode())).map_err(io)?;
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).map_err(io)?;
        let n = frame_len(len).map_err(|e| e.to_string())?;
        let mut b = Zeroizing::new(vec![0u8; n]);
        self.0.read_exact(&mut b).map_err(io)?;
        Ok(b)
    }

    /// The guest's secrets page, or the channel's status.
    pub fn secrets(&mut self) -> Result<Result<Zeroizing<Vec<u8>>, u32>, String> {
        let b = self.call(&ChanRequest::Secrets)?;
        decode_secrets(&b).map_err(|e| e.to_string())
    }

    /// One guest request.
    pub fn guest_request(
        &mut self,
        req: Box<[u8; PAGE]>,
        cert_pages: Option<u32>,
    ) -> Result<GuestAnswer, String> {
        let b = self.call(&ChanRequest::Guest { req, cert_pages })?;
        GuestAnswer::decode(&b, cert_pages).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip_and_bad_ones_name_the_field() {
        let mut req = Box::new([0u8; PAGE]);
        req[7] = 9;
        for cert_pages in [None, Some(0), Some(3)] {
            let r = ChanRequest::Guest {
                req: req.clone(),
                cert_pages,
            };
            assert_eq!(ChanRequest::decode(&r.encode()).unwrap(), r);
        }
        assert_eq!(
            ChanRequest::decode(&ChanRequest::Secrets.encode()).unwrap(),
            ChanRequest::Secrets
        );
        let mut v = ChanRequest::Guest {
            req: req.clone(),
            cert_pages: Some(65),
        }
        .encode();
        assert!(ChanRequest::decode(&v).unwrap_err().0.contains("65 pages"));
        v[1] = 2;
        assert!(ChanRequest::decode(&v)
            .unwrap_err()
            .0
            .contains("extended flag"));
        assert!(ChanRequest::decode(&v[..100])
            .unwrap_err()
            .0
            .contains("request page"));
        assert!(ChanRequest::decode(b"SX")
            .unwrap_err()
            .0
            .contains("trailing"));
        assert!(ChanRequest::decode(b"Q")
            .unwrap_err()
            .0
            .contains("unknown op"));

        let a = GuestAnswer {
            fw_error: 0,
            vmm_error: 0,
            pages_needed: 0,
            resp: req.clone(),
            certs: vec![5; 2 * PAGE],
        };
        assert_eq!(GuestAnswer::decode(&a.encode(), Some(2)).unwrap(), a);
        let e = GuestAnswer::decode(&a.encode(), Some(1)).unwrap_err();
        assert!(e.0.contains("certificate bytes"), "{e}");
        let mut page = [0u8; PAGE];
        page[0] = 3;
        let s = encode_secrets(Ok(&page));
        assert_eq!(decode_secrets(&s).unwrap().unwrap()[..], page[..]);
        assert_eq!(decode_secrets(&encode_secrets(Err(1))).unwrap(), Err(1));
        assert!(decode_secrets(&s[..10]).is_err());
    }
}
