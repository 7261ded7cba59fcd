//! `launch-alt [ROUNDS] [MAX_MIB]`: soft-firmware LAUNCH_UPDATE_DATA (typed API) against one-core
//! SHA-256 (`openssl::sha::sha256`, and EVP `openssl::hash::hash`) over the same buffer, 4 KiB..MAX_MIB (default 64), side by
//! side: every round times one sample of each, alternating which goes first, so load spikes on
//! a shared machine hit both alike. A sample repeats the operation until it has run >= 20 ms.
//! Prints one JSON object per size: medians (ns per call) and the throughput ratio.

use sev_firmware::soft::SoftPlatform;
use sev_firmware::SevGuest;
use std::time::{Duration, Instant};

/// Time one sample of `f`: calls it until 20 ms have passed, returns ns per call.
fn sample(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(20) || n == 0 {
        f();
        n += 1;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(Ok(15), |a| a.parse())?;
    let max_mib: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let plat = SoftPlatform::open(dir.path())?;
    let mut guest = plat.new_guest();
    guest.init(false)?;
    guest.launch_start(sev_firmware::GuestPolicy(0), None, 0)?;
    let mut size = 4usize << 10;
    while size <= max_mib << 20 {
        let mut mem = vec![0xA5u8; size];
        let (mut typed, mut sha, mut evp) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds + 1 {
            let mut err = None;
            let mut typed_sample = |mem: &mut [u8]| {
                sample(|| {
                    if let Err(e) = guest.launch_update_data(0x10_0000, mem) {
                        err = Some(e);
                    }
                })
            };
            let sha_sample = |mem: &[u8]| {
                sample(|| {
                    let _ = std::hint::black_box(openssl::sha::sha256(mem));
                })
            };
            let evp_sample = |mem: &[u8]| {
                sample(|| {
                    let _ = std::hint::black_box(openssl::hash::hash(
                        openssl::hash::MessageDigest::sha256(),
                        mem,
                    ));
                })
            };
            let (t, s, e) = if r % 2 == 0 {
                let t = typed_sample(&mut mem);
                let s = sha_sample(&mem);
                (t, s, evp_sample(&mem))
            } else {
                let e = evp_sample(&mem);
                let s = sha_sample(&mem);
                (typed_sample(&mut mem), s, e)
            };
            if let Some(e) = err {
                return Err(e.into());
            }
            if r > 0 {
                // round 0 is warm-up
                typed.push(t);
                sha.push(s);
                evp.push(e);
            }
        }
        let (t, s, e) = (median(&mut typed), median(&mut sha), median(&mut evp));
        println!(
            "{{\"size\": {size}, \"rounds\": {rounds}, \"typed_ns\": {t:.0}, \"sha256_ns\": {s:.0}, \
             \"typed_mbps\": {:.1}, \"sha256_mbps\": {:.1}, \"ratio\": {:.3}, \"evp_ns\": {e:.0}, \"ratio_evp\": {:.3}, \
             \"typed_min_ns\": {:.0}, \"typed_max_ns\": {:.0}, \"sha256_min_ns\": {:.0}, \"sha256_max_ns\": {:.0}}}",
            size as f64 / t * 1e3,
            size as f64 / s * 1e3,
            s / t,
            e / t,
            typed[0],
            typed[typed.len() - 1],
            sha[0],
            sha[sha.len() - 1],
        );
        size *= 4;
    }
    Ok(())
}
