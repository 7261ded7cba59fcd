//! The `/dev/sev-guest` side of `sevm shim --guest PATH`: a model of Linux's `sev-guest`
//! driver (drivers/virt/coco/sev-guest/sev-guest.c, include/uapi/linux/sev-guest.h) over the
//! guest channel of a running soft SNP VM ([`crate::guest`]).
//!
//! What the driver does, and so what this does, for SNP_GET_REPORT, SNP_GET_DERIVED_KEY and
//! SNP_GET_EXT_REPORT:
//! * `msg_version` 0 is EINVAL (nothing written back); a wiped VMPCK is ENOTTY;
//!   `exitinfo2` starts at 0xFF (`SEV_RET_NO_FW_CALL`) and is written back whenever it is
//!   nonzero when the command ends;
//! * a null `req_data` or `resp_data` is EINVAL, an unreadable request struct EFAULT;
//! * the request payload (`snp_report_req`, `snp_derived_key_req`) is sealed with VMPCK0 and
//!   sequence number `msg_seqno_0 + 1` from the secrets page, sent, and the response checked
//!   (MSG_SEQNO = request's + 1, MSG_TYPE = request's + 1, MSG_VERSION, MSG_VMPCK) and opened;
//!   a firmware or host error is EIO with `exitinfo2` = fw_error | vmm_error << 32 and wipes
//!   the VMPCK (later ioctls ENOTTY), a response that does not check out is EBADMSG and wipes it
//!   too;
//! * SNP_GET_EXT_REPORT: a `certs_len`/`certs_address` of 0 asks for no certificates; a length
//!   over 16 KiB or not a page multiple is EINVAL; if the host's table does not fit, the same
//!   message is re-sent as a plain guest request (so its sequence number is used and the VMPCK
//!   stays good), then the ioctl fails with EIO, `exitinfo2` = `SNP_GUEST_VMM_ERR_INVALID_LEN`
//!   << 32 and `certs_len` rewritten to the needed length: the length probe `snpguest
//!   certificates` (virtee's `sev` crate) relies on;
//! * the response struct is written last (4000 or 64 bytes, zero past the payload); a buffer
//!   the program cannot write is EFAULT after the firmware ran;
//! * a request, response or certificate buffer handed to [`GuestDriver::ioctl`] shorter than
//!   the struct (or `certs_len`) is EFAULT, as the kernel's copy to or from a buffer that ends
//!   early (the plan ships exact lengths; a caller of the trait may not).
//!
//! Not modelled: the driver's wait on a BUSY host (the channel never answers BUSY; it is EIO
//! here), VMPCKs other than 0 (Linux's `vmpck_id` parameter), message version 2 key requests.
//! The wiped VMPCK lasts as long as the `sevm shim` process (a guest kernel's, until reboot).

use crate::guest::{
    ChanRequest, ChannelBackend, ChannelClient, GuestAnswer, OS_AREA, PAGE, VMM_ERR_INVALID_LEN,
};
use crate::server::GuestDriver;
use crate::{u32_at, u64_at, BLOB_MAX, SNP_GET_DERIVED_KEY, SNP_GET_EXT_REPORT, SNP_GET_REPORT};
use sev_proto::snp::msg;
use sev_proto::snp::secrets::SecretsPage;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// `SEV_RET_NO_FW_CALL`: `exitinfo2` of a command that never reached the firmware.
pub const NO_FW_CALL: u64 = 0xff;

/// One ioctl's exchanges with the VMM (one connection of the channel).
pub trait ChannelSession {
    /// The secrets page, or the channel's status.
    fn secrets(&mut self) -> Result<Result<Zeroizing<Vec<u8>>, u32>, String>;
    /// One guest request.
    fn guest_request(
        &mut self,
        req: Box<[u8; PAGE]>,
        cert_pages: Option<u32>,
    ) -> Result<GuestAnswer, String>;
}

impl ChannelSession for ChannelClient {
    fn secrets(&mut self) -> Result<Result<Zeroizing<Vec<u8>>, u32>, String> {
        ChannelClient::secrets(self)
    }
    fn guest_request(
        &mut self,
        req: Box<[u8; PAGE]>,
        cert_pages: Option<u32>,
    ) -> Result<GuestAnswer, String> {
        ChannelClient::guest_request(self, req, cert_pages)
    }
}

/// A session with a [`ChannelBackend`] in this process, through the channel's encoding (for
/// tests, the fuzz target and the benchmark's in-process side).
pub struct DirectSession(pub std::sync::Arc<dyn ChannelBackend>);

impl ChannelSession for DirectSession {
    fn secrets(&mut self) -> Result<Result<Zeroizing<Vec<u8>>, u32>, String> {
        let a = crate::guest::handle_channel(self.0.as_ref(), &ChanRequest::Secrets.encode())
            .map_err(|e| e.to_string())?;
        crate::guest::decode_secrets(&a).map_err(|e| e.to_string())
    }
    fn guest_request(
        &mut self,
        req: Box<[u8; PAGE]>,
        cert_pages: Option<u32>,
    ) -> Result<GuestAnswer, String> {
        let a = crate::guest::handle_channel(
            self.0.as_ref(),
            &ChanRequest::Guest { req, cert_pages }.encode(),
        )
        .map_err(|e| e.to_string())?;
        GuestAnswer::decode(&a, cert_pages).map_err(|e| e.to_string())
    }
}

/// Opens a session for one ioctl.
pub type Connect = dyn Fn() -> Result<Box<dyn ChannelSession>, String> + Send + Sync;

/// The sev-guest driver model.
pub struct SevGuestDriver {
    connect: Box<Connect>,
    /// The VMPCK was wiped (a failed exchange): every later ioctl is ENOTTY.
    disabled: AtomicBool,
    /// The driver's `snp_cmd_mutex`.
    lock: Mutex<()>,
}

/// Why an exchange did not produce a response.
enum Fail {
    Errno(i32),
    /// The certificate buffer was too small: pages needed.
    InvalidLen(u64),
}

impl SevGuestDriver {
    /// A driver whose sessions come from `connect`.
    pub fn new(connect: Box<Connect>) -> SevGuestDriver {
        SevGuestDriver {
            connect,
            disabled: AtomicBool::new(false),
            lock: Mutex::new(()),
        }
    }

    /// A driver over the channel socket at `path` (one connection per ioctl).
    pub fn unix(path: PathBuf) -> SevGuestDriver {
        SevGuestDriver::new(Box::new(move || {
            ChannelClient::connect(&path)
                .map(|c| Box::new(c) as Box<dyn ChannelSession>)
                .map_err(|e| format!("connecting to the guest channel {}: {e}", path.display()))
        }))
    }

    /// Whether the VMPCK was wiped.
    pub fn vmpck_disabled(&self) -> bool {
        self.disabled.load(Ordering::SeqCst)
    }

    fn disable(&self, why: &str) {
        eprintln!("sevm shim: sev-guest: {why}; VMPCK0 disabled (later requests: ENOTTY)");
        self.disabled.store(true, Ordering::SeqCst);
    }

    /// Seals `payload`, sends it (as an extended request when `cert_pages` is `Some`), checks
    /// and opens the response.
    fn exchange(
        &self,
        msg_type: u8,
        msg_version: u8,
        payload: &[u8],
        cert_pages: Option<u32>,
        exitinfo2: &mut u64,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), Fail> {
        let mut s = (self.connect)().map_err(|e| {
            eprintln!("sevm shim: sev-guest: {e}");
            Fail::Errno(libc::EIO)
        })?;
        let page = match s.secrets() {
            Ok(Ok(p)) => p,
            Ok(Err(st)) => {
                eprintln!("sevm shim: sev-guest: the guest channel has no running SNP guest (status {st})");
                return Err(Fail::Errno(libc::EIO));
            }
            Err(e) => {
                eprintln!("sevm shim: sev-guest: {e}");
                return Err(Fail::Errno(libc::EIO));
            }
        };
        let sp = SecretsPage::from_bytes(&page[..]).map_err(|e| {
            eprintln!("sevm shim: sev-guest: the guest's secrets page: {e}");
            Fail::Errno(libc::EIO)
        })?;
        let key = Zeroizing::new(sp.vmpck[0]);
        if key.iter().all(|&b| b == 0) {
            self.disable("VMPCK0 in the secrets page is empty");
            return Err(Fail::Errno(libc::ENOTTY));
        }
        let count = u32_at(&page[..], OS_AREA);
        if count >= u32::MAX - 1 {
            eprintln!("sevm shim: sev-guest: request message sequence counter overflow");
            return Err(Fail::Errno(libc::EIO));
        }
        let seqno = u64::from(count) + 1;
        let m = msg::seal(&key, seqno, msg_type, msg_version, 0, payload).map_err(|e| {
            eprintln!("sevm shim: sev-guest: sealing the request: {e}");
            Fail::Errno(libc::EIO)
        })?;
        let mut req = Box::new([0u8; PAGE]);
        req[..m.len()].copy_from_slice(&m);
        let lost = |e: String| {
            eprintln!("sevm shim: sev-guest: {e}");
            Fail::Errno(libc::EIO)
        };
        let mut a = s.guest_request(req.clone(), cert_pages).map_err(lost)?;
        let mut too_small = None;
        if cert_pages.is_some() && a.vmm_error == VMM_ERR_INVALID_LEN {
            // The same message as a plain request: its sequence number is used either way.
            too_small = Some(a.pages_needed);
            a = s.guest_request(req, None).map_err(lost)?;
        }
        *exitinfo2 = u64::from(a.fw_error) | (u64::from(a.vmm_error) << 32);
        if let Some(p) = too_small {
            *exitinfo2 = u64::from(VMM_ERR_INVALID_LEN) << 32;
            return Err(if a.fw_error == 0 && a.vmm_error == 0 {
                Fail::InvalidLen(p)
            } else {
                Fail::Errno(libc::EIO)
            });
        }
        if a.fw_error != 0 || a.vmm_error != 0 {
            self.disable(&format!(
                "the firmware refused the request (fw_error {:#x}, vmm_error {:#x})",
                a.fw_error, a.vmm_error
            ));
            return Err(Fail::Errno(libc::EIO));
        }
        match msg::open(&key, &a.resp[..]) {
            Ok((h, pt))
                if h.seqno == seqno + 1
                    && h.msg_type == msg_type + 1
                    && h.msg_version == msg_version
                    && h.vmpck == 0 =>
            {
                Ok((pt, a.certs))
            }
            Ok(_) => {
                self.disable("the response header does not answer the request");
                Err(Fail::Errno(libc::EBADMSG))
            }
            Err(e) => {
                self.disable(&format!("the response does not open: {e}"));
                Err(Fail::Errno(libc::EBADMSG))
            }
        }
    }

    fn dispatch(
        &self,
        request: u64,
        arg: &[u8],
        req: Option<&mut [u8]>,
        resp: Option<&mut [u8]>,
        certs: Option<&mut [u8]>,
        exitinfo2: &mut u64,
    ) -> Result<i32, i32> {
        let msg_version = arg[0];
        let (msg_type, payload_len, resp_len) = match request {
            SNP_GET_REPORT | SNP_GET_EXT_REPORT => (msg::msg_type::REPORT_REQ, 96, 4000),
            SNP_GET_DERIVED_KEY => (msg::msg_type::KEY_REQ, 32, 64),
            _ => return Err(libc::ENOTTY),
        };
        let req_len = if request == SNP_GET_EXT_REPORT {
            112
        } else {
            payload_len
        };
        if u64_at(arg, 8) == 0 || u64_at(arg, 16) == 0 {
            return Err(libc::EINVAL);
        }
        // A request struct shorter than the kernel's copy_from_user: EFAULT (the caller's
        // buffer ends before the struct does).
        let Some(req) = req.filter(|r| r.len() >= req_len) else {
            return Err(libc::EFAULT);
        };
        let mut cert_pages = None;
        let mut cert_len = 0usize;
        if request == SNP_GET_EXT_REPORT {
            let (addr, len) = (u64_at(req, 96), u32_at(req, 104));
            cert_pages = Some(0);
            if addr != 0 && len != 0 {
                if len > BLOB_MAX || !(len as usize).is_multiple_of(PAGE) {
                    return Err(libc::EINVAL);
                }
                cert_pages = Some(len / PAGE as u32);
                cert_len = len as usize;
            }
        }
        let payload = req[..payload_len].to_vec();
        let (pt, got_certs) =
            match self.exchange(msg_type, msg_version, &payload, cert_pages, exitinfo2) {
                Ok(x) => x,
                Err(Fail::Errno(e)) => return Err(e),
                Err(Fail::InvalidLen(pages)) => {
                    let need = u32::try_from(pages.saturating_mul(PAGE as u64)).unwrap_or(u32::MAX);
                    req[104..108].copy_from_slice(&need.to_le_bytes());
                    return Err(libc::EIO);
                }
            };
        if pt.len() > resp_len {
            self.disable("the response payload is larger than the response struct");
            return Err(libc::EBADMSG);
        }
        if cert_len > 0 {
            let Some(c) = certs.filter(|c| c.len() >= cert_len) else {
                return Err(libc::EFAULT);
            };
            let n = cert_len.min(got_certs.len());
            c[..n].copy_from_slice(&got_certs[..n]);
        }
        let Some(resp) = resp.filter(|r| r.len() >= resp_len) else {
            return Err(libc::EFAULT);
        };
        resp[..resp_len].fill(0);
        resp[..pt.len()].copy_from_slice(&pt);
        Ok(0)
    }
}

impl GuestDriver for SevGuestDriver {
    fn ioctl(
        &self,
        request: u64,
        arg: &mut [u8],
        req: Option<&mut [u8]>,
        resp: Option<&mut [u8]>,
        certs: Option<&mut [u8]>,
    ) -> Result<i32, i32> {
        if arg.len() < 32 {
            return Err(libc::EFAULT);
        }
        if arg[0] == 0 {
            return Err(libc::EINVAL);
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.vmpck_disabled() {
            return Err(libc::ENOTTY);
        }
        let mut exitinfo2 = NO_FW_CALL;
        let r = self.dispatch(request, arg, req, resp, certs, &mut exitinfo2);
        if exitinfo2 != 0 {
            arg[24..32].copy_from_slice(&exitinfo2.to_le_bytes());
        }
        r
    }
}
