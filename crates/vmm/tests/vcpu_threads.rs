//! Persistent vCPU threads (issue 11): the same threads serve every pause, resume and reset of
//! one KVM VM; a paused VM's vCPUs make no progress; each resume makes progress again.
//! Runs the bundled `ticker` guest (every vCPU counts up its own u64 at `layout::TICKS`)
//! through the library API. Needs /dev/kvm (SKIP without it, failure when CI is set).

mod guest_common;

use guest_common::{bundled_config, require_kvm};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::{ExitStatus, RunState, Vm, VmControl};

const WAIT: Duration = Duration::from_secs(20);

fn ticks(mem: &GuestMemoryMmap, cpus: usize) -> Vec<u64> {
    (0..cpus)
        .map(|i| {
            mem.read_obj::<u64>(GuestAddress(vmm::layout::TICKS + 8 * i as u64))
                .unwrap()
        })
        .collect()
}

#[track_caller]
fn reach(c: &VmControl, s: RunState) {
    assert_eq!(c.wait_state(&[s], WAIT), Some(s), "state {s:?} not reached");
}

/// Waits until every vCPU's counter is above `base` (the guest ran on every vCPU).
#[track_caller]
fn progress(mem: &GuestMemoryMmap, base: &[u64]) -> Vec<u64> {
    let t0 = Instant::now();
    loop {
        let now = ticks(mem, base.len());
        if now.iter().zip(base).all(|(n, b)| n > b) {
            return now;
        }
        assert!(
            t0.elapsed() < WAIT,
            "no progress on every vCPU: {base:?} -> {now:?}"
        );
        std::thread::yield_now();
    }
}

/// Asserts that `tids` are live threads of this process named `vcpu0`, `vcpu1`, ... in
/// order (other tests in this binary run VMs too, so threads are checked by id).
#[track_caller]
fn assert_vcpu_threads(tids: &[i32]) {
    for (i, tid) in tids.iter().enumerate() {
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
            .unwrap_or_else(|e| panic!("vCPU {i} thread {tid} is gone: {e}"));
        assert_eq!(comm.trim(), format!("vcpu{i}"), "thread {tid}");
    }
}

fn thread_alive(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

#[test]
fn pause_resume_1000_times_keeps_the_same_vcpu_threads() {
    require_kvm!();
    const CPUS: usize = 2;
    let (mut cfg, _serial) = bundled_config("ticker");
    cfg.cpus = CPUS as u8;
    cfg.timeout = Some(Duration::from_secs(300));
    let mut vm = Vm::build(&cfg).unwrap();
    let c = vm.control();
    let mem = vm.guest_memory().clone();
    assert!(c.vcpu_thread_ids().is_empty(), "no vCPU thread before run");
    let runner = std::thread::spawn(move || {
        let st = vm.run();
        (vm, st)
    });
    reach(&c, RunState::Running);
    let mut last = progress(&mem, &[0; CPUS]);
    let tids = c.vcpu_thread_ids();
    assert_eq!(tids.len(), CPUS);
    assert!(tids.iter().all(|t| *t > 0), "{tids:?}");
    assert_vcpu_threads(&tids);
    for round in 0..1000 {
        assert!(c.pause());
        reach(&c, RunState::Paused);
        // Parked: no vCPU is in the guest, so the counters stand still.
        let paused = ticks(&mem, CPUS);
        assert!(
            paused.iter().zip(&last).all(|(p, l)| p >= l),
            "round {round}: counters went back: {last:?} -> {paused:?}"
        );
        std::thread::yield_now();
        assert_eq!(
            ticks(&mem, CPUS),
            paused,
            "round {round}: a vCPU ran while paused"
        );
        assert_eq!(
            c.vcpu_thread_ids(),
            tids,
            "round {round}: thread ids changed"
        );
        assert!(c.resume());
        reach(&c, RunState::Running);
        last = progress(&mem, &paused);
        if round % 100 == 0 {
            assert_vcpu_threads(&tids);
        }
    }
    assert_vcpu_threads(&tids);
    assert!(c.quit());
    let (vm, st) = runner.join().unwrap();
    assert_eq!(st.unwrap(), ExitStatus::Quit);
    assert_eq!(c.state(), RunState::Stopped);
    // Dropping the VM ends its vCPU threads.
    drop(vm);
    assert!(
        !tids.iter().any(|t| thread_alive(*t)),
        "vCPU threads outlive the VM"
    );
}

#[test]
fn reset_while_paused_stays_paused_at_the_boot_state() {
    require_kvm!();
    let (mut cfg, serial) = bundled_config("ticker");
    cfg.timeout = Some(Duration::from_secs(60));
    let mut vm = Vm::build(&cfg).unwrap();
    let c = vm.control();
    let mem = vm.guest_memory().clone();
    let runner = std::thread::spawn(move || {
        let st = vm.run();
        (vm, st)
    });
    reach(&c, RunState::Running);
    progress(&mem, &[0]);
    let tids = c.vcpu_thread_ids();
    assert!(c.pause());
    reach(&c, RunState::Paused);
    let before = c.cpu_snapshot(0).unwrap();
    assert!(
        before.rip > vmm::layout::BUNDLED_LOAD_ADDR,
        "the ticker is in its loop: {before:?}"
    );
    let paused = ticks(&mem, 1);
    assert!(c.reset());
    // The reset is done while paused: the snapshot shows the boot state, nothing runs.
    let t0 = Instant::now();
    while c.cpu_snapshot(0).unwrap().rip != vmm::layout::BUNDLED_LOAD_ADDR {
        assert!(t0.elapsed() < WAIT, "reset while paused not done");
        std::thread::yield_now();
    }
    assert_eq!(c.state(), RunState::Paused);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        ticks(&mem, 1),
        paused,
        "a vCPU ran after the reset while paused"
    );
    assert_eq!(
        serial.text(),
        "ticker: counting\n",
        "the guest did not restart yet"
    );
    assert!(c.resume());
    reach(&c, RunState::Running);
    // RAM is kept over a reset: the counter goes on from where it stood.
    progress(&mem, &paused);
    let t0 = Instant::now();
    while serial.text() != "ticker: counting\nticker: counting\n" {
        assert!(
            t0.elapsed() < WAIT,
            "restarted guest did not print: {:?}",
            serial.text()
        );
        std::thread::yield_now();
    }
    assert_eq!(c.vcpu_thread_ids(), tids, "the reset kept the vCPU threads");
    assert!(c.quit());
    let (vm, st) = runner.join().unwrap();
    assert_eq!(st.unwrap(), ExitStatus::Quit);
    assert_eq!(vm.reset_count(), 1);
}
