//! A [`ChannelBackend`] over a soft SNP guest context in this process, with no VM: the
//! firmware side of the guest channel as `sevm run --guest-channel` serves it (the secrets
//! page with `msg_seqno_0..3` set from the messages the context has taken, extended requests
//! answered with a certificate table or `VMM_ERR_INVALID_LEN`), for tests, the
//! `guest_ioctl` fuzz target and the in-process side of the shim benchmark
//! (`examples/guest_bench.rs`).
//!
//! Differences from a running VM's channel: the context is launched here with only a SECRETS
//! page (its MEASUREMENT is that of an empty image), and no guest shares its sequence numbers.

use crate::guest::{put_msg_counts, ChannelBackend, PAGE, VMM_ERR_INVALID_LEN};
use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpGuest, SoftSnpPlatform};
use sev_firmware::snp::{SnpGuest, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate, SnpPlatform};
use sev_proto::snp::measure::PageType;
use sev_proto::snp::policy::SnpPolicy;
use std::path::Path;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Where the secrets page is launched (any page-aligned GPA; the driver never sees it).
const SECRETS_GPA: u64 = 0x10_0000;

struct State {
    guest: SoftSnpGuest,
    /// Messages taken per VMPCK (the last response's sequence number).
    counts: [u64; 4],
}

/// One launched soft SNP guest context and its secrets page.
pub struct SoftGuestBackend {
    state: Mutex<State>,
    secrets: Zeroizing<Vec<u8>>,
    cert_table: Vec<u8>,
    _platform: SoftSnpPlatform,
}

impl SoftGuestBackend {
    /// Opens (or creates) the soft SNP platform in `dir`, launches a guest with `policy` and a
    /// SECRETS page; extended requests get `cert_table` (any bytes; the driver copies them).
    pub fn launch(
        dir: &Path,
        policy: u64,
        cert_table: Vec<u8>,
    ) -> Result<SoftGuestBackend, String> {
        let f = |what: &str, e: &dyn std::fmt::Display| format!("soft SNP guest: {what}: {e}");
        let platform = SoftSnpPlatform::open(dir, SoftSnpConfig::default())
            .map_err(|e| f(&format!("opening the platform in {}", dir.display()), &e))?;
        platform.snp_init().map_err(|e| f("SNP_INIT", &e))?;
        let mut guest = platform
            .gctx_create()
            .map_err(|e| f("SNP_GCTX_CREATE", &e))?;
        guest
            .snp_launch_start(&SnpLaunchStart::new(SnpPolicy(policy)))
            .map_err(|e| f("SNP_LAUNCH_START", &e))?;
        let mut secrets = Zeroizing::new(vec![0u8; PAGE]);
        guest
            .snp_launch_update(
                &SnpLaunchUpdate::page(PageType::Secrets, SECRETS_GPA),
                &mut secrets,
            )
            .map_err(|e| f("SNP_LAUNCH_UPDATE (secrets page)", &e))?;
        guest
            .snp_launch_finish(&SnpLaunchFinish::default())
            .map_err(|e| f("SNP_LAUNCH_FINISH", &e))?;
        Ok(SoftGuestBackend {
            state: Mutex::new(State {
                guest,
                counts: [0; 4],
            }),
            secrets,
            cert_table,
            _platform: platform,
        })
    }

    /// Messages the context has taken with each VMPCK.
    pub fn msg_counts(&self) -> [u64; 4] {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).counts
    }
}

impl ChannelBackend for SoftGuestBackend {
    fn secrets(&self) -> Result<Zeroizing<Vec<u8>>, u32> {
        let mut p = self.secrets.clone();
        put_msg_counts(&mut p, &self.msg_counts());
        Ok(p)
    }

    fn guest_request(
        &self,
        req: &[u8; PAGE],
        resp: &mut [u8; PAGE],
        certs: Option<&mut [u8]>,
    ) -> (u32, u32, u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(buf) = certs {
            // As the VMM: a short buffer is refused before the firmware sees the message.
            if self.cert_table.len() > buf.len() {
                return (
                    0,
                    VMM_ERR_INVALID_LEN,
                    self.cert_table.len().div_ceil(PAGE) as u64,
                );
            }
            buf.fill(0);
            buf[..self.cert_table.len()].copy_from_slice(&self.cert_table);
        }
        match st.guest.snp_guest_request(req, resp) {
            Ok(_) => {
                // Taken: MSG_SEQNO (plaintext header, 0x20) and the response's are used.
                let mut sq = [0u8; 8];
                sq.copy_from_slice(&req[0x20..0x28]);
                if let Some(c) = st.counts.get_mut(usize::from(req[0x3C])) {
                    *c = u64::from_le_bytes(sq).saturating_add(1);
                }
                (0, 0, 0)
            }
            Err(e) => (e.status().map_or(u32::MAX, |s| s.code()), 0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_driver::{ChannelSession, DirectSession, SevGuestDriver};
    use crate::server::GuestDriver;
    use crate::{SNP_GET_DERIVED_KEY, SNP_GET_EXT_REPORT, SNP_GET_REPORT};
    use std::sync::Arc;

    fn driver(b: &Arc<SoftGuestBackend>) -> SevGuestDriver {
        let b = Arc::clone(b);
        SevGuestDriver::new(Box::new(move || {
            Ok(Box::new(DirectSession(b.clone())) as Box<dyn ChannelSession>)
        }))
    }

    fn arg() -> Vec<u8> {
        let mut a = vec![0u8; 32];
        a[0] = 1;
        a[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        a[16..24].copy_from_slice(&0x2000u64.to_le_bytes());
        a
    }

    #[test]
    fn the_driver_model_over_a_soft_context_reports_derives_and_probes() {
        let dir = tempfile::tempdir().unwrap();
        let table: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let b = Arc::new(SoftGuestBackend::launch(dir.path(), 0x30000, table.clone()).unwrap());
        let d = driver(&b);

        // SNP_GET_REPORT: MSG_REPORT_RSP status 0, the report at 0x20 with our REPORT_DATA
        // (report offset 0x50) and VMPL (0x30).
        let mut a = arg();
        let mut req = vec![0u8; 96];
        req[..64].copy_from_slice(&[0xAB; 64]);
        req[64..68].copy_from_slice(&1u32.to_le_bytes());
        let mut resp = vec![0xEE; 4000];
        assert_eq!(
            d.ioctl(
                SNP_GET_REPORT,
                &mut a,
                Some(&mut req),
                Some(&mut resp),
                None
            ),
            Ok(0)
        );
        assert_eq!(&resp[..4], &[0; 4]);
        assert_eq!(&resp[0x20 + 0x50..0x20 + 0x90], &[0xAB; 64][..]);
        assert_eq!(&resp[0x20 + 0x30..0x20 + 0x34], &1u32.to_le_bytes());
        assert_eq!(b.msg_counts()[0], 2);

        // SNP_GET_DERIVED_KEY: the key follows GUEST_FIELD_SELECT (offset 8).
        let key = |sel: u64| {
            let mut a = arg();
            let mut req = vec![0u8; 32];
            req[8..16].copy_from_slice(&sel.to_le_bytes());
            let mut resp = vec![0u8; 64];
            assert_eq!(
                d.ioctl(
                    SNP_GET_DERIVED_KEY,
                    &mut a,
                    Some(&mut req),
                    Some(&mut resp),
                    None
                ),
                Ok(0)
            );
            assert_eq!(&resp[..4], &[0; 4]);
            resp[32..64].to_vec()
        };
        let (k0, k1) = (key(0), key(1));
        assert_ne!(k0, k1);
        assert_eq!(key(0), k0);
        assert_eq!(b.msg_counts()[0], 8);

        // SNP_GET_EXT_REPORT with one page: EIO, VMM error INVALID_LEN, certs_len = 2 pages,
        // and the message went as a plain request (its sequence number is used).
        let mut a = arg();
        let mut req = vec![0u8; 112];
        req[96..104].copy_from_slice(&0x3000u64.to_le_bytes());
        req[104..108].copy_from_slice(&4096u32.to_le_bytes());
        let mut resp = vec![0u8; 4000];
        let mut certs = vec![0u8; 4096];
        let r = d.ioctl(
            SNP_GET_EXT_REPORT,
            &mut a,
            Some(&mut req),
            Some(&mut resp),
            Some(&mut certs),
        );
        assert_eq!(r, Err(libc::EIO));
        assert_eq!(&a[24..32], &(1u64 << 32).to_le_bytes());
        assert_eq!(&req[104..108], &8192u32.to_le_bytes());
        assert_eq!(b.msg_counts()[0], 10);
        let mut a = arg();
        let mut certs = vec![0u8; 8192];
        let r = d.ioctl(
            SNP_GET_EXT_REPORT,
            &mut a,
            Some(&mut req),
            Some(&mut resp),
            Some(&mut certs),
        );
        assert_eq!(r, Ok(0));
        assert_eq!(&certs[..5000], &table[..]);
        assert!(certs[5000..].iter().all(|&x| x == 0));
        assert!(!d.vmpck_disabled());

        // msg_version 0: EINVAL before anything is sent.
        let mut a = arg();
        a[0] = 0;
        let mut req = vec![0u8; 96];
        assert_eq!(
            d.ioctl(
                SNP_GET_REPORT,
                &mut a,
                Some(&mut req),
                Some(&mut resp),
                None
            ),
            Err(libc::EINVAL)
        );
        assert_eq!(b.msg_counts()[0], 12);
    }

    #[test]
    fn buffers_shorter_than_the_structs_are_efault_not_a_panic() {
        // Found by the guest_ioctl fuzz target: a 0-byte request struct panicked (slice index).
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(SoftGuestBackend::launch(dir.path(), 0x30000, vec![1; 100]).unwrap());
        let d = driver(&b);
        for (rq, req_len) in [
            (SNP_GET_REPORT, 96),
            (SNP_GET_DERIVED_KEY, 32),
            (SNP_GET_EXT_REPORT, 112),
        ] {
            for n in [0, 1, req_len - 1] {
                let mut a = arg();
                let mut req = vec![0u8; n];
                let mut resp = vec![0u8; 4000];
                assert_eq!(
                    d.ioctl(rq, &mut a, Some(&mut req), Some(&mut resp), None),
                    Err(libc::EFAULT),
                    "request {rq:#x} with a {n}-byte request struct"
                );
            }
        }
        // A short response struct: EFAULT after the firmware ran (the sequence number is used).
        let mut a = arg();
        let mut req = vec![0u8; 96];
        let mut resp = vec![0u8; 3999];
        let before = b.msg_counts()[0];
        assert_eq!(
            d.ioctl(
                SNP_GET_REPORT,
                &mut a,
                Some(&mut req),
                Some(&mut resp),
                None
            ),
            Err(libc::EFAULT)
        );
        assert_eq!(b.msg_counts()[0], before + 2);
        // A certificate buffer shorter than certs_len: EFAULT.
        let mut a = arg();
        let mut req = vec![0u8; 112];
        req[96..104].copy_from_slice(&0x3000u64.to_le_bytes());
        req[104..108].copy_from_slice(&4096u32.to_le_bytes());
        let mut resp = vec![0u8; 4000];
        let mut certs = vec![0u8; 100];
        assert_eq!(
            d.ioctl(
                SNP_GET_EXT_REPORT,
                &mut a,
                Some(&mut req),
                Some(&mut resp),
                Some(&mut certs)
            ),
            Err(libc::EFAULT)
        );
        assert!(!d.vmpck_disabled());
    }
}
