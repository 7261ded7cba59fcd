//! LAUNCH_UPDATE_DATA throughput of the soft firmware, 4 KiB..64 MiB, beside one-core
//! OpenSSL SHA-256 over the same bytes (the launch digest is the floor of the typed path;
//! the raw path also encrypts in the model PA space).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sev_firmware::soft::raw::cmd::LAUNCH_UPDATE_DATA;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::{GuestPolicy, SevGuest, Status};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plat = SoftPlatform::open(dir.path()).expect("soft platform");
    let mut guest = plat.new_guest();
    guest.init(false).expect("init");
    let handle = guest
        .launch_start(GuestPolicy(0), None, 0)
        .expect("launch_start");
    let mut g = c.benchmark_group("launch_update_data");
    g.sample_size(10);
    for size in [4usize << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20] {
        let mut mem = vec![0xA5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("typed", size), &size, |b, _| {
            b.iter(|| {
                guest
                    .launch_update_data(0x10_0000, &mut mem)
                    .expect("update")
            })
        });
        g.bench_with_input(BenchmarkId::new("openssl_sha256", size), &size, |b, _| {
            b.iter(|| openssl::sha::sha256(&mem))
        });
        if size <= 16 << 20 {
            plat.write_pa(0x4000_0000, &mem).expect("write_pa");
            g.bench_with_input(BenchmarkId::new("raw_encrypting", size), &size, |b, _| {
                b.iter(|| {
                    let mut buf = [0u8; 0x14];
                    buf[0..4].copy_from_slice(&handle.to_le_bytes());
                    buf[8..16].copy_from_slice(&0x4000_0000u64.to_le_bytes());
                    buf[0x10..0x14].copy_from_slice(&(size as u32).to_le_bytes());
                    assert_eq!(plat.execute(LAUNCH_UPDATE_DATA, &mut buf), Status::Success);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
