//! No secret bytes in any log at any level: capture every tracing event (TRACE and up) while
//! secrets are injected, then search the capture for them in every encoding.

mod qmp_common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use qmp_common::*;
use serde_json::json;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut s = self.0.lock().unwrap();
        attrs.record(&mut Fields(&mut s));
        s.push('\n');
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut s = self.0.lock().unwrap();
        values.record(&mut Fields(&mut s));
        s.push('\n');
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut s = self.0.lock().unwrap();
        let _ = write!(
            s,
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        );
        event.record(&mut Fields(&mut s));
        s.push('\n');
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn secrets_never_reach_the_log() {
    let cap = Capture::default();
    tracing::subscriber::set_global_default(cap.clone()).expect("first subscriber");

    let h = Harness::sev();
    let mut c = h.client();
    let hdr: Vec<u8> = (0..52).map(|i| 0xd0 ^ i as u8).collect();
    let secret: Vec<u8> = b"TOP-SECRET-DISK-KEY-0123456789ab".to_vec();
    let args =
        json!({"packet-header": B64.encode(&hdr), "secret": B64.encode(&secret), "gpa": 4096});
    assert_eq!(
        c.exec("sev-inject-launch-secret", args.clone()),
        json!({"return": {}})
    );
    // Failing variants too (errors are logged by class only).
    let bad = json!({"packet-header": B64.encode(&hdr[..10]), "secret": B64.encode(&secret)});
    assert_err_prefix(
        &c.exec("sev-inject-launch-secret", bad),
        "GenericError",
        "SEV: failed",
    );
    let wrong_type =
        json!({"packet-header": B64.encode(&hdr), "secret": B64.encode(&secret), "gpa": "x"});
    assert_err_prefix(
        &c.exec("sev-inject-launch-secret", wrong_type),
        "GenericError",
        "Invalid parameter type",
    );
    // A malformed request carrying the secret.
    c.send_raw(
        format!(
            "{{\"execute\":\"sev-inject-launch-secret\",\"arguments\":{{\"secret\":\"{}\"",
            B64.encode(&secret)
        )
        .as_bytes(),
    );
    c.send_raw(b",]}");
    assert_err_prefix(&c.reply(), "GenericError", "JSON parse error");
    // A secret smuggled in as a command name or an HMP line is not logged either.
    let r = c.cmd(json!({"execute": B64.encode(&secret)}));
    assert_err_prefix(&r, "CommandNotFound", "The command ");
    let r = c.exec(
        "human-monitor-command",
        json!({"command-line": format!("info {}", B64.encode(&secret))}),
    );
    assert!(r["return"].as_str().unwrap().starts_with("unknown command"));
    c.cmd(json!({"execute": "cont"}));
    assert_err_prefix(
        &c.exec("sev-inject-launch-secret", args),
        "GenericError",
        "SEV: Not in correct state",
    );
    drop(c);
    drop(h);

    let log = cap.0.lock().unwrap().clone();
    assert!(
        log.contains("sev-inject-launch-secret"),
        "capture works: {log}"
    );
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for needle in [
        B64.encode(&secret),
        B64.encode(&hdr),
        hex(&secret),
        hex(&hdr),
        String::from_utf8_lossy(&secret).into_owned(),
        format!("{:?}", &secret[..8]),
        format!("{:?}", &hdr[..8]),
    ] {
        assert!(!log.contains(&needle), "log leaks {needle}:\n{log}");
    }
}
