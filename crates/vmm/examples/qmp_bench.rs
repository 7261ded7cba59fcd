//! `query-status` round-trip latency over the QMP socket (fake backend, one client).
//!
//! Usage: `qmp_bench [CALLS]` (default 10000). Prints p50/p90/p99/max in microseconds.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;
use vmm::monitor::fake::FakeBackend;
use vmm::monitor::QmpServer;

fn main() {
    let calls: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 10_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: qmp_bench [CALLS]");
            std::process::exit(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("qmp-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("qmp_bench: {}: {e}", dir.display());
        std::process::exit(1);
    }
    let path = dir.join("qmp.sock");
    let backend = Arc::new(FakeBackend::sev_paused(0));
    let mut server = QmpServer::bind(&path, backend).unwrap_or_else(|e| {
        eprintln!("qmp_bench: {e}");
        std::process::exit(1)
    });
    server.start().expect("start");
    let mut w = UnixStream::connect(&path).expect("connect");
    let mut r = BufReader::new(w.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("greeting");
    let mut roundtrip = |req: &[u8], line: &mut String| -> Value {
        w.write_all(req).expect("write");
        line.clear();
        r.read_line(line).expect("read");
        serde_json::from_str(line).expect("json")
    };
    roundtrip(br#"{"execute":"qmp_capabilities"}"#, &mut line);
    let req = br#"{"execute":"query-status"}"#;
    for _ in 0..200 {
        roundtrip(req, &mut line); // warm-up
    }
    let mut us: Vec<f64> = Vec::with_capacity(calls);
    let total = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        let v = roundtrip(req, &mut line);
        us.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(v["return"]["status"], "prelaunch");
    }
    let wall = total.elapsed();
    us.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| us[((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1];
    println!(
        "query-status round trip over {calls} calls: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us, mean {:.1} us ({:.0} calls/s)",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        us[us.len() - 1],
        us.iter().sum::<f64>() / us.len() as f64,
        calls as f64 / wall.as_secs_f64()
    );
    server.shutdown();
    let _ = std::fs::remove_dir(&dir);
}
