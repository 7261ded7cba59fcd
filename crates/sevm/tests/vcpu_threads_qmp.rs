//! Persistent vCPU threads over QMP (issue 11): `sevm run --guest ticker --qmp` is paused
//! and resumed 1,000 times, and reset while paused. Every vCPU of the `ticker` guest counts up
//! its own u64 at 0x6100 + 8 * index, read here with HMP `xp`; the vCPU threads are the
//! process's threads named `vcpuN` in /proc. Needs /dev/kvm (SKIP without it, failure when CI
//! is set).

#[path = "sev_common/mod.rs"]
mod common;
#[path = "../../vmm/tests/qmp_common/mod.rs"]
mod qmp_common;

use common::*;
use qmp_common::Client;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CPUS: usize = 2;
const WAIT: Duration = Duration::from_secs(30);

/// A `sevm run --guest ticker --qmp` child, killed if the test fails before it ends.
struct Ticker {
    child: Child,
    client: Client,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ticker {
    fn start(dir: &Path) -> Ticker {
        let sock = dir.join("qmp.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sevm"))
            .args([
                "run", "--guest", "ticker", "--memory", "32M", "--serial", "none",
            ])
            .args(["--cpus", &CPUS.to_string(), "--timeout", "600"])
            .arg("--qmp")
            .arg(format!("unix:{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sevm");
        // Wait for the socket announcement, then leave stderr to a thread.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("QMP monitor on") {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("sevm ended before its QMP monitor started");
            }
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        let mut client = Client::connect(&sock);
        client.negotiate();
        Ticker { child, client }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ticker's counters, read through HMP `xp`.
    fn ticks(&mut self) -> Vec<u64> {
        let out = self.client.hmp(&format!("xp /{CPUS}gx 0x6100"));
        let v: Vec<u64> = out
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("0x"))
            .map(|h| u64::from_str_radix(h, 16).unwrap())
            .collect();
        assert_eq!(v.len(), CPUS, "xp output: {out:?}");
        v
    }

    /// Waits until every counter is above `base`.
    #[track_caller]
    fn progress(&mut self, base: &[u64]) -> Vec<u64> {
        let t0 = Instant::now();
        loop {
            let now = self.ticks();
            if now.iter().zip(base).all(|(n, b)| n > b) {
                return now;
            }
            assert!(
                t0.elapsed() < WAIT,
                "no progress on every vCPU: {base:?} -> {now:?}"
            );
        }
    }

    #[track_caller]
    fn status(&mut self) -> String {
        let r = self.client.execute("query-status");
        r["return"]["status"].as_str().expect("status").to_string()
    }

    /// Ends the VM with `quit` and checks sevm exits 0.
    fn quit(mut self) {
        self.client.execute_ok("quit");
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert_eq!(st.code(), Some(0), "sevm exit status");
                return;
            }
            assert!(t0.elapsed() < WAIT, "sevm did not exit after quit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// (name, tid) of the process's threads named `vcpu*`, sorted.
fn vcpu_threads(pid: u32) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let tid = t.file_name().to_str()?.parse().ok()?;
            comm.starts_with("vcpu")
                .then(|| (comm.trim().to_string(), tid))
        })
        .collect();
    v.sort();
    v
}

fn kvm(test: &str) -> bool {
    kvm_usable_or_skip(test)
}

#[test]
fn qmp_pause_resume_1000_times_without_lost_or_doubled_vcpus() {
    if !kvm("qmp_pause_resume_1000_times_without_lost_or_doubled_vcpus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut t = Ticker::start(dir.path());
    let mut last = t.progress(&[0; CPUS]);
    let threads = vcpu_threads(t.pid());
    let names: Vec<String> = (0..CPUS).map(|i| format!("vcpu{i}")).collect();
    assert_eq!(
        threads.iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
        names,
        "one thread per vCPU: {threads:?}"
    );
    let t0 = Instant::now();
    for round in 0..1000 {
        t.client.execute_ok("stop");
        assert_eq!(t.status(), "paused", "round {round}");
        let paused = t.ticks();
        assert!(
            paused.iter().zip(&last).all(|(p, l)| p >= l),
            "round {round}: counters went back: {last:?} -> {paused:?}"
        );
        // Same threads, none added or lost; and no vCPU in the guest while paused.
        assert_eq!(vcpu_threads(t.pid()), threads, "round {round}");
        assert_eq!(t.ticks(), paused, "round {round}: a vCPU ran while paused");
        t.client.execute_ok("cont");
        last = t.progress(&paused);
        if round % 100 == 0 {
            t.client.events.clear();
        }
    }
    eprintln!("1000 QMP stop/cont rounds in {:?}", t0.elapsed());
    assert_eq!(
        vcpu_threads(t.pid()),
        threads,
        "same vCPU threads at the end"
    );
    assert_eq!(t.status(), "running");
    t.quit();
}

#[test]
fn qmp_reset_while_paused_stays_paused() {
    if !kvm("qmp_reset_while_paused_stays_paused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut t = Ticker::start(dir.path());
    t.progress(&[0; CPUS]);
    let threads = vcpu_threads(t.pid());
    t.client.execute_ok("stop");
    let regs = t.client.hmp("info registers");
    assert!(!regs.contains("RIP=0000000000100000"), "{regs}");
    let paused = t.ticks();
    t.client.execute_ok("system_reset");
    let ev = t.client.wait_event("RESET");
    assert_eq!(ev["data"]["reason"], "host-qmp-system-reset", "{ev}");
    // The reset happens while paused: vCPU 0 shows the ticker's entry point, nothing runs.
    let t0 = Instant::now();
    while !t
        .client
        .hmp("info registers")
        .contains("RIP=0000000000100000")
    {
        assert!(t0.elapsed() < WAIT, "reset while paused not done");
    }
    assert_eq!(t.status(), "paused");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(t.ticks(), paused, "a vCPU ran after the reset while paused");
    t.client.execute_ok("cont");
    assert_eq!(t.status(), "running");
    // RAM is kept over a reset: the counters go on from where they stood.
    t.progress(&paused);
    assert_eq!(
        vcpu_threads(t.pid()),
        threads,
        "the reset kept the vCPU threads"
    );
    let r = t.client.exec(
        "human-monitor-command",
        json!({"command-line": "info status"}),
    );
    assert!(
        r["return"].as_str().unwrap_or("").contains("running"),
        "{r}"
    );
    t.quit();
}
