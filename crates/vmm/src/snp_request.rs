//! The SEV-SNP guest-request doorbell: on this KVM (no GHCB protocol under the soft backend) a
//! port write stands in for the GHCB `SNP_GUEST_REQUEST` / `SNP_EXTENDED_GUEST_REQUEST` VMGEXITs.
//!
//! ABI (documented in docs/LAYOUT.md): the guest fills the doorbell block at
//! [`layout::SNP_GHCB`] like the GHCB's fields, then writes any byte to
//! [`layout::SNP_DOORBELL_PORT`]. The VMM handles the request before the `out` completes.
//!
//! | offset | field | guest writes | VMM writes |
//! |---|---|---|---|
//! | 0x00 | u64 exit code | `0x8000_0011` (guest request) or `0x8000_0012` (extended) | – |
//! | 0x08 | u64 exit_info1 | GPA of the request page | – |
//! | 0x10 | u64 exit_info2 | GPA of the response page | result: low 32 bits the firmware status, high 32 bits the VMM error |
//! | 0x18 | u64 rax | extended: GPA of the certificate buffer | – |
//! | 0x20 | u64 rbx | extended: size of that buffer in pages | extended, VMM error 1: pages needed |
//!
//! The owner step of `sevm demo --snp` (sevm's own exit code [`EXIT_OWNER_SECRET`], not a GHCB
//! one): `+0x08` the GPA of the guest's decrypted MSG_REPORT_RSP (0x4C0 bytes), `+0x10` the GPA
//! of the box page. The VMM hands the report to the guest owner
//! ([`GuestRequestService::owner_secret`]) and writes the owner's box to the box page; the
//! result is 0, or [`VMM_ERR_OWNER_REFUSED`] in the high 32 bits when the owner refused.
//!
//! VMM errors are the GHCB spec's: 0 none, 1 `INVALID_LEN` (certificate buffer too small),
//! 2 `BUSY`. A block or page outside guest RAM, or an unknown exit code, gets
//! [`VMM_ERR_INVALID_REQUEST`] (sevm's own value, not the GHCB spec's) and leaves every page but
//! the block untouched.

use crate::layout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// GHCB exit code of a guest request.
pub const EXIT_GUEST_REQUEST: u64 = 0x8000_0011;
/// GHCB exit code of an extended guest request.
pub const EXIT_EXT_GUEST_REQUEST: u64 = 0x8000_0012;
/// Doorbell exit code of the owner step (sevm's own; `guests::abi::SNP_EXIT_OWNER_SECRET`).
pub const EXIT_OWNER_SECRET: u64 = 0x8000_f001;
/// VMM error (sevm's own): the guest owner refused to release the secret, or no owner is
/// attached.
pub const VMM_ERR_OWNER_REFUSED: u32 = 0xffff_fff1;
/// Bytes of the decrypted MSG_REPORT_RSP the owner step reads.
pub const REPORT_RSP_BYTES: usize = 0x4c0;
/// VMM error: the certificate buffer is too small (`rbx` then holds the pages needed).
pub const VMM_ERR_INVALID_LEN: u32 = 1;
/// VMM error: the firmware is busy; retry.
pub const VMM_ERR_BUSY: u32 = 2;
/// VMM error (sevm's own): the doorbell block is malformed (unknown exit code, a page outside
/// RAM) or no service is attached.
pub const VMM_ERR_INVALID_REQUEST: u32 = 0xffff_fff0;
/// Size of the request and response pages.
pub const PAGE: usize = 4096;
/// Largest certificate buffer the VMM accepts (pages).
pub const MAX_CERT_PAGES: u64 = 64;

/// What a guest request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestRequestOutcome {
    /// The firmware status (0 = success), as SNP_GUEST_REQUEST returned it.
    pub fw_error: u32,
    /// The VMM error (0, [`VMM_ERR_INVALID_LEN`], [`VMM_ERR_BUSY`], ...).
    pub vmm_error: u32,
    /// With [`VMM_ERR_INVALID_LEN`]: the certificate buffer size needed, in pages.
    pub cert_pages_needed: u64,
}

/// Serves guest requests for one SNP guest (the soft firmware's guest context, or on hardware
/// a path that KVM does not handle itself). Implementations lock internally.
pub trait GuestRequestService: Send + Sync + std::fmt::Debug {
    /// `req` is the guest's request page (message header ‖ ciphertext); the response message is
    /// written to `resp`. `certs` is the guest's certificate buffer for an extended request
    /// (to receive the certificate table), `None` for a plain request.
    fn guest_request(
        &self,
        req: &[u8; PAGE],
        resp: &mut [u8; PAGE],
        certs: Option<&mut [u8]>,
    ) -> GuestRequestOutcome;

    /// The owner step: `report_rsp` is the guest's decrypted MSG_REPORT_RSP as the guest
    /// left it (untrusted: the owner verifies it); returns the box page contents (at most one
    /// page), or why the owner refused. Without an owner attached every step is refused.
    fn owner_secret(&self, report_rsp: &[u8]) -> Result<Vec<u8>, String> {
        let _ = report_rsp;
        Err("no guest owner is attached to this VM".into())
    }
}

/// The guest owner of `sevm demo --snp`: verifies the guest's report and seals a secret to the
/// key in its REPORT_DATA ([`GuestRequestService::owner_secret`] of an SNP launch with
/// `SnpLaunchParams::owner` set).
pub trait SecretOwner: Send + Sync {
    /// The box page for `report_rsp` (the guest's decrypted MSG_REPORT_RSP), or why not.
    fn release(&self, report_rsp: &[u8]) -> Result<Vec<u8>, String>;
}

fn read_u64(mem: &GuestMemoryMmap, gpa: u64) -> Option<u64> {
    mem.read_obj::<u64>(GuestAddress(gpa)).ok()
}

/// Handles one doorbell ring: reads the block at [`layout::SNP_GHCB`], calls `svc`, writes the
/// response page, the certificates and the result back. Returns the outcome written.
pub fn handle_doorbell(
    mem: &GuestMemoryMmap,
    svc: Option<&dyn GuestRequestService>,
) -> GuestRequestOutcome {
    let out = serve(mem, svc);
    let block = layout::SNP_GHCB;
    let result = u64::from(out.fw_error) | (u64::from(out.vmm_error) << 32);
    // The block is inside RAM whenever a doorbell can be rung by a bundled guest; if it is not,
    // there is nowhere to report to and the write fails silently, as a GHCB write would fault.
    let _ = mem.write_obj(result, GuestAddress(block + 0x10));
    if out.vmm_error == VMM_ERR_INVALID_LEN {
        let _ = mem.write_obj(out.cert_pages_needed, GuestAddress(block + 0x20));
    }
    out
}

fn invalid() -> GuestRequestOutcome {
    GuestRequestOutcome {
        vmm_error: VMM_ERR_INVALID_REQUEST,
        ..Default::default()
    }
}

fn serve(mem: &GuestMemoryMmap, svc: Option<&dyn GuestRequestService>) -> GuestRequestOutcome {
    let Some(svc) = svc else {
        return invalid();
    };
    let block = layout::SNP_GHCB;
    let (Some(code), Some(req_gpa), Some(resp_gpa)) = (
        read_u64(mem, block),
        read_u64(mem, block + 0x08),
        read_u64(mem, block + 0x10),
    ) else {
        return invalid();
    };
    let mut req = [0u8; PAGE];
    if mem.read_slice(&mut req, GuestAddress(req_gpa)).is_err() {
        return invalid();
    }
    let mut resp = [0u8; PAGE];
    if mem.read_slice(&mut resp, GuestAddress(resp_gpa)).is_err() {
        return invalid();
    }
    let out = match code {
        EXIT_GUEST_REQUEST => svc.guest_request(&req, &mut resp, None),
        EXIT_EXT_GUEST_REQUEST => {
            let (Some(certs_gpa), Some(pages)) =
                (read_u64(mem, block + 0x18), read_u64(mem, block + 0x20))
            else {
                return invalid();
            };
            if pages > MAX_CERT_PAGES {
                return invalid();
            }
            let mut certs = vec![0u8; pages as usize * PAGE];
            if mem.read_slice(&mut certs, GuestAddress(certs_gpa)).is_err() {
                return invalid();
            }
            let out = svc.guest_request(&req, &mut resp, Some(&mut certs));
            if out.vmm_error == 0 && mem.write_slice(&certs, GuestAddress(certs_gpa)).is_err() {
                return invalid();
            }
            out
        }
        EXIT_OWNER_SECRET => return owner_step(mem, svc, req_gpa, resp_gpa),
        _ => return invalid(),
    };
    if mem.write_slice(&resp, GuestAddress(resp_gpa)).is_err() {
        return invalid();
    }
    out
}

/// The owner step: the report at `report_gpa` goes to the owner, its box to `box_gpa`.
fn owner_step(
    mem: &GuestMemoryMmap,
    svc: &dyn GuestRequestService,
    report_gpa: u64,
    box_gpa: u64,
) -> GuestRequestOutcome {
    let mut report = vec![0u8; REPORT_RSP_BYTES];
    if mem
        .read_slice(&mut report, GuestAddress(report_gpa))
        .is_err()
    {
        return invalid();
    }
    match svc.owner_secret(&report) {
        Ok(b) if b.len() <= PAGE => {
            let mut page = vec![0u8; PAGE];
            page[..b.len()].copy_from_slice(&b);
            if mem.write_slice(&page, GuestAddress(box_gpa)).is_err() {
                return invalid();
            }
            GuestRequestOutcome::default()
        }
        Ok(_) => invalid(),
        Err(why) => {
            tracing::warn!("SNP owner step: the owner refused: {why}");
            GuestRequestOutcome {
                vmm_error: VMM_ERR_OWNER_REFUSED,
                ..Default::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Echo {
        calls: Mutex<Vec<bool>>,
    }

    impl GuestRequestService for Echo {
        fn guest_request(
            &self,
            req: &[u8; PAGE],
            resp: &mut [u8; PAGE],
            certs: Option<&mut [u8]>,
        ) -> GuestRequestOutcome {
            self.calls.lock().unwrap().push(certs.is_some());
            resp.copy_from_slice(req);
            resp[0] ^= 0xff;
            match certs {
                Some(c) if c.len() < 2 * PAGE => GuestRequestOutcome {
                    vmm_error: VMM_ERR_INVALID_LEN,
                    cert_pages_needed: 2,
                    ..Default::default()
                },
                Some(c) => {
                    c[0] = 0xce;
                    GuestRequestOutcome {
                        fw_error: 7,
                        ..Default::default()
                    }
                }
                None => GuestRequestOutcome::default(),
            }
        }
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn ring(m: &GuestMemoryMmap, code: u64, req: u64, resp: u64, certs: u64, pages: u64) {
        let b = layout::SNP_GHCB;
        for (o, v) in [
            (0, code),
            (8, req),
            (0x10, resp),
            (0x18, certs),
            (0x20, pages),
        ] {
            m.write_obj(v, GuestAddress(b + o)).unwrap();
        }
    }

    #[test]
    fn plain_request_reaches_the_service_and_the_response_page() {
        let m = mem();
        m.write_obj(0x5au8, GuestAddress(layout::SNP_REQ_PAGE))
            .unwrap();
        ring(
            &m,
            EXIT_GUEST_REQUEST,
            layout::SNP_REQ_PAGE,
            layout::SNP_RESP_PAGE,
            0,
            0,
        );
        let svc = Echo::default();
        let out = handle_doorbell(&m, Some(&svc));
        assert_eq!(out, GuestRequestOutcome::default());
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(layout::SNP_RESP_PAGE))
                .unwrap(),
            0xa5
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(layout::SNP_GHCB + 0x10))
                .unwrap(),
            0
        );
        assert_eq!(*svc.calls.lock().unwrap(), vec![false]);
    }

    #[test]
    fn extended_request_reports_short_buffer_and_fills_a_big_one() {
        let m = mem();
        let svc = Echo::default();
        ring(
            &m,
            EXIT_EXT_GUEST_REQUEST,
            layout::SNP_REQ_PAGE,
            layout::SNP_RESP_PAGE,
            layout::SNP_CERTS,
            1,
        );
        let out = handle_doorbell(&m, Some(&svc));
        assert_eq!(out.vmm_error, VMM_ERR_INVALID_LEN);
        let b = layout::SNP_GHCB;
        assert_eq!(m.read_obj::<u64>(GuestAddress(b + 0x10)).unwrap(), 1 << 32);
        assert_eq!(m.read_obj::<u64>(GuestAddress(b + 0x20)).unwrap(), 2);
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(layout::SNP_CERTS)).unwrap(),
            0,
            "nothing written"
        );
        ring(
            &m,
            EXIT_EXT_GUEST_REQUEST,
            layout::SNP_REQ_PAGE,
            layout::SNP_RESP_PAGE,
            layout::SNP_CERTS,
            2,
        );
        let out = handle_doorbell(&m, Some(&svc));
        assert_eq!(out.fw_error, 7);
        assert_eq!(m.read_obj::<u64>(GuestAddress(b + 0x10)).unwrap(), 7);
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(layout::SNP_CERTS)).unwrap(),
            0xce
        );
    }

    #[test]
    fn malformed_blocks_are_refused_without_calling_the_service() {
        let m = mem();
        let svc = Echo::default();
        let b = layout::SNP_GHCB;
        // Unknown exit code.
        ring(
            &m,
            0x1234,
            layout::SNP_REQ_PAGE,
            layout::SNP_RESP_PAGE,
            0,
            0,
        );
        assert_eq!(
            handle_doorbell(&m, Some(&svc)).vmm_error,
            VMM_ERR_INVALID_REQUEST
        );
        // Response page outside RAM.
        ring(&m, EXIT_GUEST_REQUEST, layout::SNP_REQ_PAGE, 1 << 40, 0, 0);
        assert_eq!(
            handle_doorbell(&m, Some(&svc)).vmm_error,
            VMM_ERR_INVALID_REQUEST
        );
        // Absurd certificate buffer.
        ring(
            &m,
            EXIT_EXT_GUEST_REQUEST,
            layout::SNP_REQ_PAGE,
            layout::SNP_RESP_PAGE,
            layout::SNP_CERTS,
            MAX_CERT_PAGES + 1,
        );
        assert_eq!(
            handle_doorbell(&m, Some(&svc)).vmm_error,
            VMM_ERR_INVALID_REQUEST
        );
        assert!(svc.calls.lock().unwrap().is_empty());
        // No service attached.
        ring(
            &m,
            EXIT_GUEST_REQUEST,
            layout::SNP_REQ_PAGE,
            layout::SNP_RESP_PAGE,
            0,
            0,
        );
        assert_eq!(handle_doorbell(&m, None).vmm_error, VMM_ERR_INVALID_REQUEST);
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(b + 0x10)).unwrap(),
            u64::from(VMM_ERR_INVALID_REQUEST) << 32
        );
    }

    /// Gives the report's first byte back in a one-byte box, or refuses a report starting 0.
    #[derive(Debug)]
    struct Owner;

    impl GuestRequestService for Owner {
        fn guest_request(
            &self,
            _req: &[u8; PAGE],
            _resp: &mut [u8; PAGE],
            _certs: Option<&mut [u8]>,
        ) -> GuestRequestOutcome {
            GuestRequestOutcome::default()
        }

        fn owner_secret(&self, report_rsp: &[u8]) -> Result<Vec<u8>, String> {
            assert_eq!(report_rsp.len(), REPORT_RSP_BYTES);
            match report_rsp[0] {
                0 => Err("no".into()),
                b => Ok(vec![b ^ 0xff]),
            }
        }
    }

    #[test]
    fn owner_step_writes_the_box_or_reports_the_refusal() {
        let m = mem();
        let b = layout::SNP_GHCB;
        let (report, boxp) = (layout::SNP_REPORT_OUT, layout::SNP_BOX);
        m.write_obj(0x5au8, GuestAddress(report)).unwrap();
        m.write_obj(0x77u8, GuestAddress(boxp + 1)).unwrap();
        ring(&m, EXIT_OWNER_SECRET, report, boxp, 0, 0);
        assert_eq!(
            handle_doorbell(&m, Some(&Owner)),
            GuestRequestOutcome::default()
        );
        assert_eq!(m.read_obj::<u8>(GuestAddress(boxp)).unwrap(), 0xa5);
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(boxp + 1)).unwrap(),
            0,
            "page zeroed"
        );
        assert_eq!(m.read_obj::<u64>(GuestAddress(b + 0x10)).unwrap(), 0);
        m.write_obj(0u8, GuestAddress(report)).unwrap();
        ring(&m, EXIT_OWNER_SECRET, report, boxp, 0, 0);
        assert_eq!(
            handle_doorbell(&m, Some(&Owner)).vmm_error,
            VMM_ERR_OWNER_REFUSED
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(b + 0x10)).unwrap(),
            u64::from(VMM_ERR_OWNER_REFUSED) << 32
        );
        // A service without an owner refuses too.
        ring(&m, EXIT_OWNER_SECRET, report, boxp, 0, 0);
        assert_eq!(
            handle_doorbell(&m, Some(&Echo::default())).vmm_error,
            VMM_ERR_OWNER_REFUSED
        );
    }
}
