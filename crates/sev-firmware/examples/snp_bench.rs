//! Soft SNP firmware benchmarks, each side by side with its reference in the same process and run
//! (issue 13; docs/PERFORMANCE.md §9; driven by `benches/snp_platform.sh`):
//!
//! - LAUNCH_UPDATE throughput over 4 KiB .. 64 MiB of NORMAL pages, against one-core SHA-384 of
//!   the same bytes (OpenSSL through the `openssl` crate, the same library `openssl dgst` uses).
//! - Guest request (MSG_REPORT_REQ in, signed report in an encrypted MSG_REPORT_RSP out) latency,
//!   against one OpenSSL P-384 ECDSA signature over a SHA-384 digest.
//!
//! Prints one JSON object per line; medians over repeated runs, alternating the two sides. Each
//! side is timed twice over the same run: wall time (`fw_us`, `sha384_us`, the ratio the issue
//! names) and this thread's CPU time (`*_cpu_us`), which does not count time spent waiting for a
//! core and so stays meaningful when the shared machine is loaded.
//! Usage: `cargo run --release -p sev-firmware --example snp_bench [-- --reps N]`.

use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use sev_firmware::snp::soft::{SoftSnpConfig, SoftSnpGuest, SoftSnpPlatform};
use sev_firmware::snp::vcek::SnpIdentity;
use sev_firmware::snp::{SnpGuest, SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate, SnpPlatform};
use sev_proto::snp::measure::PageType;
use sev_proto::snp::msg::{self, ReportReq};
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::snp::secrets::SecretsPage;
use std::hint::black_box;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID).
fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn started_guest(p: &SoftSnpPlatform) -> SoftSnpGuest {
    let mut g = p.gctx_create().expect("GCTX_CREATE");
    g.snp_launch_start(&SnpLaunchStart::new(SnpPolicy(0x30000)))
        .expect("LAUNCH_START");
    g
}

fn main() {
    let mut reps = 9usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => {
                reps = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("snp_bench: --reps needs a positive integer");
                        std::process::exit(2)
                    })
            }
            other => {
                eprintln!("snp_bench: unknown argument {other:?} (only --reps N)");
                std::process::exit(2)
            }
        }
    }
    let p = SoftSnpPlatform::new(SnpIdentity::from_seed([7; 48]), SoftSnpConfig::default())
        .expect("soft SNP platform");
    p.snp_init().expect("SNP_INIT");

    // --- LAUNCH_UPDATE throughput against SHA-384 of the same bytes.
    for size in [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4093) as u8).collect();
        let (mut fw, mut sha) = (Vec::new(), Vec::new());
        let (mut fw_cpu, mut sha_cpu) = (Vec::new(), Vec::new());
        // Small sizes: repeat inside one sample so each sample is at least ~2 ms.
        let inner = (4 << 20) / size.max(1);
        let inner = inner.max(1);
        for _ in 0..reps {
            let mut bufs: Vec<Vec<u8>> = (0..inner).map(|_| data.clone()).collect();
            let mut guests: Vec<SoftSnpGuest> = (0..inner).map(|_| started_guest(&p)).collect();
            let (t, c) = (Instant::now(), cpu_now());
            for (g, buf) in guests.iter_mut().zip(bufs.iter_mut()) {
                for (i, pg) in buf.chunks_exact_mut(PAGE).enumerate() {
                    g.snp_launch_update(
                        &SnpLaunchUpdate::page(PageType::Normal, (i * PAGE) as u64),
                        pg,
                    )
                    .expect("LAUNCH_UPDATE");
                }
            }
            fw_cpu.push((cpu_now() - c) / inner as u32);
            fw.push(t.elapsed() / inner as u32);
            for mut g in guests {
                g.snp_decommission().expect("DECOMMISSION");
            }
            let (t, c) = (Instant::now(), cpu_now());
            for _ in 0..inner {
                black_box(openssl::sha::sha384(black_box(&data)));
            }
            sha_cpu.push((cpu_now() - c) / inner as u32);
            sha.push(t.elapsed() / inner as u32);
        }
        let (fw, sha) = (median(fw), median(sha));
        let (fw_cpu, sha_cpu) = (median(fw_cpu), median(sha_cpu));
        let mbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
        println!(
            "{{\"bench\":\"launch_update\",\"bytes\":{size},\"reps\":{reps},\"fw_us\":{:.1},\"sha384_us\":{:.1},\"fw_mb_s\":{:.1},\"sha384_mb_s\":{:.1},\"ratio_fw_over_sha\":{:.3},\"fw_cpu_us\":{:.1},\"sha384_cpu_us\":{:.1},\"ratio_cpu\":{:.3}}}",
            fw.as_secs_f64() * 1e6,
            sha.as_secs_f64() * 1e6,
            mbps(fw),
            mbps(sha),
            mbps(fw) / mbps(sha),
            fw_cpu.as_secs_f64() * 1e6,
            sha_cpu.as_secs_f64() * 1e6,
            sha_cpu.as_secs_f64() / fw_cpu.as_secs_f64()
        );
    }

    // --- Report request latency against one P-384 signature.
    let mut g = started_guest(&p);
    let mut secrets_page = vec![0u8; PAGE];
    g.snp_launch_update(
        &SnpLaunchUpdate::page(PageType::Secrets, 0x1000),
        &mut secrets_page,
    )
    .expect("LAUNCH_UPDATE secrets");
    g.snp_launch_finish(&SnpLaunchFinish::default())
        .expect("LAUNCH_FINISH");
    let sp = SecretsPage::from_bytes(&secrets_page).expect("secrets page");
    let group = EcGroup::from_curve_name(Nid::SECP384R1).expect("P-384");
    let key = EcKey::generate(&group).expect("P-384 key");
    let digest = openssl::sha::sha384(b"sevm snp bench");
    let mut resp = vec![0u8; PAGE];
    let n = reps.max(5) * 20;
    let (mut fw, mut sign) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut seq = 1u64;
    for i in 0..n {
        let req = ReportReq {
            report_data: [i as u8; 64],
            vmpl: 0,
            key_sel: 0,
        };
        let mut m = msg::seal(&sp.vmpck[0], seq, 5, 1, 0, &req.to_bytes()).expect("seal");
        m.resize(PAGE, 0);
        let t = Instant::now();
        g.snp_guest_request(&m, &mut resp).expect("GUEST_REQUEST");
        fw.push(t.elapsed());
        seq += 2;
        let t = Instant::now();
        black_box(EcdsaSig::sign(&digest, &key).expect("sign"));
        sign.push(t.elapsed());
    }
    let (fw, sign) = (median(fw), median(sign));
    // Keep the key's public half alive in a way the optimiser cannot drop.
    let mut ctx = BigNumContext::new().expect("bn ctx");
    black_box(
        key.public_key()
            .to_bytes(
                &group,
                openssl::ec::PointConversionForm::COMPRESSED,
                &mut ctx,
            )
            .expect("point"),
    );
    println!(
        "{{\"bench\":\"report_request\",\"samples\":{n},\"fw_us\":{:.1},\"p384_sign_us\":{:.1},\"ratio_fw_over_sign\":{:.3}}}",
        fw.as_secs_f64() * 1e6,
        sign.as_secs_f64() * 1e6,
        fw.as_secs_f64() / sign.as_secs_f64()
    );
}
