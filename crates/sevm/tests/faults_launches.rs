//! SEV launches, PDH rotation and platform resets from several `sevm` processes sharing one
//! platform directory at once (issue 7's "launches, PDH rotation, reset").
//!
//! Two owner threads loop: export the chain, make a session with `sevm owner session`, and
//! launch the `hello` guest with `sevm run --dump-launch`; a third thread runs
//! `sevm platform pdh-gen`, a fourth `sevm platform reset`. What must hold:
//! * a launch either succeeds, and its LAUNCH_MEASURE blob is the one the owner computes with
//!   its TIK (the launch used the PDH of the chain the owner exported), or it is refused at
//!   LAUNCH_START with BAD_MEASUREMENT because the PDH rotated after the export (the owner then
//!   re-exports, as a real owner would); nothing else;
//! * PDH_GEN always succeeds (the spec allows it in WORKING);
//! * a reset either succeeds or is refused with INVALID_PLATFORM_STATE because another
//!   process has a live guest (the soft platform keeps one platform state across processes:
//!   no PEK or OCA change under a running guest);
//! * afterwards the chip identity (chip id, CEK) is unchanged and the chain verifies.

#[path = "sev_common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{b64, export_chain, kvm_plat, owner_session, s, sevm, sevm_stdout, text, Run};
use sev_firmware::soft::SoftPlatform;
use sev_firmware::SevPlatform;
use sev_proto::cert::chain::{verify_full, FullChain};

const BUSY: Duration = Duration::from_secs(8);

#[derive(Default)]
struct Counts {
    launched: AtomicUsize,
    stale: AtomicUsize,
    pdh_gen: AtomicUsize,
    reset_ok: AtomicUsize,
    reset_refused: AtomicUsize,
}

/// The chip id and the CEK certificate: what must never change.
fn identity(plat: &Path) -> (String, Vec<u8>) {
    let id = sevm_stdout(&["platform", "--platform-dir", s(plat), "id"]);
    let p = SoftPlatform::open(plat).unwrap();
    (id, p.pdh_cert_export().unwrap().cek.encode())
}

/// One owner: export, session, launch, check; until `stop`.
fn owner_loop(plat: &Path, work: &Path, stop: &AtomicBool, n: &Counts) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let dir = work.join(format!("l{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let chain = export_chain(plat, &dir);
        let extra = owner_session(&dir, "o", &chain, "0");
        let dump = dir.join("dump");
        let o = Run::guest("hello")
            .sev(0, &extra)
            .platform(plat)
            .dump(&dump)
            .opt("--timeout", "60")
            .output();
        let (out, err) = text(&o);
        if o.status.success() {
            assert!(out.contains("hello from"), "{out}\n{err}");
            let blob = std::fs::read(dump.join("launch-measure.bin")).unwrap();
            let tik = dir.join("o_tik.bin");
            let want = sevm_stdout(&[
                "owner",
                "measure",
                "--vmm",
                "sevm",
                "--guest",
                "hello",
                "--tik",
                s(&tik),
                "--api-major",
                "0",
                "--api-minor",
                "24",
                "--build-id",
                "17",
                "--policy",
                "0",
                "--launch-measure-blob",
                s(&dump.join("launch-measure.bin")),
            ]);
            assert_eq!(
                want,
                b64(&blob),
                "launch {i}: the firmware's measurement is not the owner's"
            );
            n.launched.fetch_add(1, Ordering::Relaxed);
        } else {
            assert!(
                err.contains("LAUNCH_START") && err.contains("BAD_MEASUREMENT"),
                "launch {i} failed for another reason than a rotated PDH ({:?}):\n{out}\n{err}",
                o.status
            );
            n.stale.fetch_add(1, Ordering::Relaxed);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn launches_pdh_rotation_and_resets_from_several_processes() {
    let Some((t, plat)) = kvm_plat("launches_pdh_rotation_and_resets_from_several_processes")
    else {
        return;
    };
    let before = identity(&plat);
    let stop = Arc::new(AtomicBool::new(false));
    let n = Arc::new(Counts::default());
    let start = Instant::now();
    let mut threads = Vec::new();
    for k in 0..2 {
        let (plat, work, stop, n) = (
            plat.clone(),
            t.path().join(format!("owner{k}")),
            stop.clone(),
            n.clone(),
        );
        threads.push(std::thread::spawn(move || {
            owner_loop(&plat, &work, &stop, &n)
        }));
    }
    {
        let (plat, stop, n) = (plat.clone(), stop.clone(), n.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sevm_stdout(&["platform", "--platform-dir", s(&plat), "pdh-gen"]);
                n.pdh_gen.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(900));
            }
        }));
    }
    {
        let (plat, stop, n) = (plat.clone(), stop.clone(), n.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(400));
                let o = sevm(&["platform", "--platform-dir", s(&plat), "reset"]);
                let (out, err) = text(&o);
                if o.status.success() {
                    n.reset_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert!(
                        err.contains("INVALID_PLATFORM_STATE") && err.contains("live SEV guests"),
                        "reset failed for another reason than a live guest:\n{out}\n{err}"
                    );
                    n.reset_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(BUSY);
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().expect("a worker failed (its message is above)");
    }
    let elapsed = start.elapsed();
    let get = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    eprintln!(
        "in {elapsed:.1?}: {} launches measured and verified, {} refused for a rotated PDH; \
         {} pdh-gen; {} resets done, {} refused while a guest was live",
        get(&n.launched),
        get(&n.stale),
        get(&n.pdh_gen),
        get(&n.reset_ok),
        get(&n.reset_refused)
    );
    assert!(get(&n.launched) > 0, "no launch got through in {elapsed:?}");
    assert!(get(&n.pdh_gen) > 0 && get(&n.reset_ok) + get(&n.reset_refused) > 0);

    // The identity never changed and the chain still verifies.
    assert_eq!(identity(&plat), before, "chip id or CEK changed");
    let chain = SoftPlatform::open(&plat).unwrap().export_chain().unwrap();
    let full = FullChain::parse(&chain.to_bytes()).expect("the final chain parses");
    verify_full(&full, None).expect("the final chain verifies");
}
