//! What `sevm shim --guest` adds to an SNP_GET_REPORT round trip (issue 16: "less than 1 ms
//! compared with calling the soft firmware in-process"). One process, per-call timings,
//! the sides alternating call by call (order swapped every iteration):
//!
//! * `inproc`: the sev-guest driver model (`SevGuestDriver`) over `DirectSession` to a soft SNP
//!   guest context launched in this process (`soft_guest::SoftGuestBackend`): sealing,
//!   the channel encoding, the firmware's report and signature, opening;
//! * `channel` (with `--channel PATH`): the same driver over the guest channel socket of a
//!   running `sevm run --guest-channel PATH`, called in this process (no preload library);
//! * `shim` (when `/dev/sev-guest` opens, i.e. under `sevm shim --guest PATH -- ...`): the
//!   ioctl a program like `snpguest` issues, through `libsevm_shim.so`, the `sevm shim`
//!   server and the guest channel to the VM's firmware context.
//!
//! Every response is checked: status 0 and the report's REPORT_DATA the request's.
//!
//! `guest_bench [--iters N] [--channel PATH] [--out FILE]`; e.g.
//! `sevm shim --guest S -- target/debug/examples/guest_bench --iters 200 --channel S`.

use sevm_shim_proto::guest_driver::{ChannelSession, DirectSession, SevGuestDriver};
use sevm_shim_proto::server::GuestDriver;
use sevm_shim_proto::soft_guest::SoftGuestBackend;
use sevm_shim_proto::SNP_GET_REPORT;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
struct GuestReqIoctl {
    msg_version: u8,
    req_data: u64,
    resp_data: u64,
    exitinfo2: u64,
}

fn report_req(i: u64) -> Vec<u8> {
    let mut r = vec![0u8; 96];
    for (j, b) in r[..64].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
    }
    r[64..68].copy_from_slice(&1u32.to_le_bytes()); // snpguest's default VMPL
    r
}

fn check(side: &str, req: &[u8], resp: &[u8]) -> Result<(), String> {
    if resp[..4] != [0; 4] {
        return Err(format!("{side}: MSG_REPORT_RSP status {:02x?}", &resp[..4]));
    }
    if resp[0x20 + 0x50..0x20 + 0x90] != req[..64] {
        return Err(format!("{side}: REPORT_DATA is not the request's"));
    }
    Ok(())
}

fn driver_call(d: &SevGuestDriver, side: &str, i: u64) -> Result<f64, String> {
    let mut arg = vec![0u8; 32];
    arg[0] = 1;
    arg[8..16].copy_from_slice(&1u64.to_le_bytes());
    arg[16..24].copy_from_slice(&2u64.to_le_bytes());
    let mut req = report_req(i);
    let mut resp = vec![0u8; 4000];
    let t = Instant::now();
    let r = d.ioctl(
        SNP_GET_REPORT,
        &mut arg,
        Some(&mut req),
        Some(&mut resp),
        None,
    );
    let us = t.elapsed().as_secs_f64() * 1e6;
    r.map_err(|e| format!("{side}: SNP_GET_REPORT errno {e}"))?;
    check(side, &req, &resp)?;
    Ok(us)
}

fn shim_call(f: &std::fs::File, i: u64) -> Result<f64, String> {
    let req = report_req(i);
    let mut resp = vec![0u8; 4000];
    let mut a = GuestReqIoctl {
        msg_version: 1,
        req_data: req.as_ptr() as u64,
        resp_data: resp.as_mut_ptr() as u64,
        exitinfo2: 0,
    };
    let t = Instant::now();
    // SAFETY: `a` is a live `snp_guest_request_ioctl` whose `req_data` points at 96 readable
    // bytes (`req`) and `resp_data` at 4000 writable bytes (`resp`), all outliving the call;
    // that is all SNP_GET_REPORT reads or writes.
    let r = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            SNP_GET_REPORT as _,
            &mut a as *mut GuestReqIoctl,
        )
    };
    let us = t.elapsed().as_secs_f64() * 1e6;
    if r != 0 {
        return Err(format!(
            "shim: SNP_GET_REPORT: {} (exitinfo2 {:#x})",
            std::io::Error::last_os_error(),
            a.exitinfo2
        ));
    }
    check("shim", &req, &resp)?;
    Ok(us)
}

fn stats(v: &[f64]) -> serde_like::Stats {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    serde_like::Stats {
        n: s.len(),
        median: q(0.5),
        p10: q(0.1),
        p90: q(0.9),
        mean: s.iter().sum::<f64>() / s.len() as f64,
    }
}

mod serde_like {
    pub struct Stats {
        pub n: usize,
        pub median: f64,
        pub p10: f64,
        pub p90: f64,
        pub mean: f64,
    }
    impl Stats {
        pub fn json(&self) -> String {
            format!(
                "{{\"n\": {}, \"median_us\": {:.1}, \"p10_us\": {:.1}, \"p90_us\": {:.1}, \"mean_us\": {:.1}}}",
                self.n, self.median, self.p10, self.p90, self.mean
            )
        }
    }
}

fn main() -> Result<(), String> {
    let mut iters = 200u64;
    let mut channel = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |n: &str| args.next().ok_or(format!("{n} needs a value"));
        match a.as_str() {
            "--iters" => {
                iters = val("--iters")?
                    .parse()
                    .map_err(|e| format!("--iters: {e}"))?
            }
            "--channel" => channel = Some(std::path::PathBuf::from(val("--channel")?)),
            "--out" => out = Some(val("--out")?),
            x => return Err(format!("unknown argument {x}")),
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let b = Arc::new(SoftGuestBackend::launch(dir.path(), 0x30000, Vec::new())?);
    let inproc = SevGuestDriver::new(Box::new(move || {
        Ok(Box::new(DirectSession(b.clone())) as Box<dyn ChannelSession>)
    }));
    let chan = channel.map(SevGuestDriver::unix);
    let dev = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/sev-guest")
    {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("guest_bench: /dev/sev-guest: {e}: no `shim` side (run under `sevm shim --guest PATH`)");
            None
        }
    };
    // One warm-up call each (first connection, lazy initialisation).
    driver_call(&inproc, "inproc", 0)?;
    if let Some(c) = &chan {
        driver_call(c, "channel", 0)?;
    }
    if let Some(f) = &dev {
        shim_call(f, 0)?;
    }
    let (mut a, mut c, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=iters {
        let mut order: Vec<u8> = vec![0, 1, 2];
        if i % 2 == 0 {
            order.reverse();
        }
        for side in order {
            match side {
                0 => a.push(driver_call(&inproc, "inproc", i)?),
                1 => {
                    if let Some(d) = &chan {
                        c.push(driver_call(d, "channel", i)?)
                    }
                }
                _ => {
                    if let Some(f) = &dev {
                        s.push(shim_call(f, i)?)
                    }
                }
            }
        }
    }
    let mut fields = vec![format!("\"inproc\": {}", stats(&a).json())];
    if !c.is_empty() {
        fields.push(format!("\"channel\": {}", stats(&c).json()));
    }
    if !s.is_empty() {
        fields.push(format!("\"shim\": {}", stats(&s).json()));
        fields.push(format!(
            "\"shim_minus_inproc_median_us\": {:.1}",
            stats(&s).median - stats(&a).median
        ));
        // Paired: the two calls of the same iteration, back to back.
        let d: Vec<f64> = s.iter().zip(&a).map(|(x, y)| x - y).collect();
        fields.push(format!(
            "\"paired_shim_minus_inproc\": {}",
            stats(&d).json()
        ));
    }
    let j = format!("{{{}}}", fields.join(", "));
    println!("{j}");
    if let Some(o) = out {
        let mut raw = String::from("side,us\n");
        for (n, v) in [("inproc", &a), ("channel", &c), ("shim", &s)] {
            for x in v.iter() {
                raw.push_str(&format!("{n},{x:.1}\n"));
            }
        }
        std::fs::write(&o, &raw).map_err(|e| format!("{o}: {e}"))?;
    }
    Ok(())
}
