//! The HMP command parser behind `human-monitor-command` (`info ...`, `x`/`xp` with their
//! `/FMT` and address expressions, run-state commands) against the fake backend.
//! Input: byte 0 picks the backend (bit 0: SEV guest with policy byte 1, else plain; bit 1:
//! virtual reads need a `stop` first), byte 2 picks `cpu-index` (0, 1 or an invalid 2); the
//! rest is split on '\n' into command lines run in order on one session, so the format and
//! size that `x`/`xp` remember carry from line to line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use std::sync::Arc;
use vmm::monitor::fake::FakeBackend;
use vmm::monitor::{registers_hidden, Dispatcher, Session};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let sev = data[0] & 1 == 1;
    let policy = u32::from(data[1]);
    let backend = Arc::new(if sev {
        FakeBackend::sev_paused(policy)
    } else {
        FakeBackend::plain()
    });
    backend.set_virt_needs_stop(data[0] & 2 == 2);
    let cpu = data[2] % 3;
    let d = Dispatcher::new(backend.clone());
    let mut session = Session::new();
    let r = d.handle_text(&mut session, br#"{"execute":"qmp_capabilities"}"#);
    assert_eq!(r.msg, json!({"return": {}}));
    for line in data[3..].split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let req = json!({"execute": "human-monitor-command",
                         "arguments": {"command-line": line, "cpu-index": cpu}});
        let r = d.handle_text(&mut session, req.to_string().as_bytes());
        if cpu >= 2 {
            assert_eq!(
                r.msg["error"]["desc"],
                "Parameter 'cpu-index' expects a CPU number"
            );
            continue;
        }
        let Value::String(out) = &r.msg["return"] else {
            panic!("HMP always answers with text: {}", r.msg);
        };
        // Every line of HMP output ends in CRLF, and nothing is a bare LF.
        assert!(out.is_empty() || out.ends_with("\r\n"), "{out:?}");
        assert_eq!(out.matches('\n').count(), out.matches("\r\n").count());
        if sev && registers_hidden(policy) {
            assert!(
                !out.contains("RIP="),
                "registers shown under ES+NODBG: {out:?}"
            );
        }
        assert!(!r.quit);
    }
});
