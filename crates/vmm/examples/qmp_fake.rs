//! Serve the QMP monitor over the fake backend, for driving it with real QMP clients
//! (the Python `qemu.qmp` tests in `tests/qmp/`) before the VM is wired in.
//!
//! Usage: `qmp_fake unix:PATH [--plain] [--policy N]`
//! (`--plain`: a non-SEV guest; `--policy`: SEV guest policy, default 0 = debug allowed).
//! Prints `READY` once listening; exits after `quit`.

use std::sync::Arc;
use std::time::Duration;
use vmm::monitor::fake::FakeBackend;
use vmm::monitor::{parse_qmp_arg, QmpServer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: qmp_fake unix:PATH [--plain] [--policy N]";
    let Some(path) = args.first().and_then(|a| parse_qmp_arg(a)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mut plain = false;
    let mut policy = 0u32;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--plain" => plain = true,
            "--policy" => {
                let v = it.next().map(|v| {
                    v.strip_prefix("0x")
                        .map_or_else(|| v.parse(), |h| u32::from_str_radix(h, 16))
                });
                match v {
                    Some(Ok(p)) => policy = p,
                    _ => {
                        eprintln!("--policy needs a number\n{usage}");
                        std::process::exit(2);
                    }
                }
            }
            other => {
                eprintln!("unknown argument {other}\n{usage}");
                std::process::exit(2);
            }
        }
    }
    let backend = Arc::new(if plain {
        FakeBackend::plain()
    } else {
        FakeBackend::sev_paused(policy)
    });
    let mut server = match QmpServer::bind(&path, backend.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qmp_fake: {e}");
            std::process::exit(1);
        }
    };
    backend.set_events(server.events());
    if let Err(e) = server.start() {
        eprintln!("qmp_fake: {e}");
        std::process::exit(1);
    }
    println!("READY");
    while !backend.quit_requested() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give the quit reply and SHUTDOWN event a moment to reach clients, as QEMU does on exit.
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();
}
