//! Bad input, hostile and slow clients, concurrency, and socket-file safety.

mod qmp_common;

use qmp_common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm::monitor::fake::FakeBackend;
use vmm::monitor::{MonitorEvent, QmpServer, QmpServerError, MAX_CLIENTS, MAX_MESSAGE_BYTES};

#[test]
fn malformed_requests_get_qemu_errors_and_the_session_continues() {
    let h = Harness::sev();
    let mut c = h.client();
    c.send_raw(b"{\"execute\": foo}");
    assert_err_prefix(&c.reply(), "GenericError", "JSON parse error, ");
    c.send_raw(b"garbage\n");
    assert_err_prefix(&c.reply(), "GenericError", "JSON parse error, ");
    c.send_raw(b"}");
    assert_err_prefix(&c.reply(), "GenericError", "JSON parse error, ");
    c.send_raw(b"[1, 2]");
    assert_err(
        &c.reply(),
        "GenericError",
        "QMP input must be a JSON object",
    );
    c.send_raw(b"\"just a string\"");
    assert_err(
        &c.reply(),
        "GenericError",
        "QMP input must be a JSON object",
    );
    let r = c.cmd(json!({"arguments": {}, "id": 1}));
    assert_err(&r, "GenericError", "QMP input lacks member 'execute'");
    assert_eq!(r["id"], 1);
    let r = c.cmd(json!({"execute": 5}));
    assert_err(
        &r,
        "GenericError",
        "QMP input member 'execute' must be a string",
    );
    let r = c.cmd(json!({"execute": "stop", "arguments": []}));
    assert_err(
        &r,
        "GenericError",
        "QMP input member 'arguments' must be an object",
    );
    let r = c.cmd(json!({"execute": "stop", "extra": 1}));
    assert_err(&r, "GenericError", "QMP input member 'extra' is unexpected");
    let r = c.cmd(json!({"execute": "query-status", "arguments": {"x": 1}}));
    assert_err(&r, "GenericError", "Parameter 'x' is unexpected");
    let r = c.cmd(json!({"execute": "no-such"}));
    assert_err(
        &r,
        "CommandNotFound",
        "The command no-such has not been found",
    );
    let r = c.cmd(json!({"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}));
    assert_err(
        &r,
        "CommandNotFound",
        "Capabilities negotiation is already complete, command ignored",
    );
    // Several requests in one write, no delimiters, with invalid UTF-8 between them.
    c.send_raw(b"{\"execute\":\"query-kvm\",\"id\":1}{\"execute\":\"query-kvm\",\"id\":\"\xff\"}{\"execute\":\"query-kvm\",\"id\":3}");
    assert_eq!(c.reply()["id"], 1);
    assert_err_prefix(&c.reply(), "GenericError", "JSON parse error, ");
    assert_eq!(c.reply()["id"], 3);
    // QEMU's parser also takes single-quoted strings.
    c.send_raw(b"{'execute': 'query-status', 'id': 'it\\'s'}");
    let r = c.reply();
    assert_eq!(r["id"], "it's");
    assert_eq!(r["return"]["status"], "prelaunch");
}

#[test]
fn oversized_message_drops_that_client_only() {
    let h = Harness::sev();
    let mut big = h.client();
    let mut other = h.client();
    let mut payload = b"{\"execute\":\"query-status\",\"id\":\"".to_vec();
    payload.extend(std::iter::repeat_n(b'a', MAX_MESSAGE_BYTES + 10));
    payload.extend_from_slice(b"\"}");
    // The server may close before we finish writing; that is fine.
    let _ = big.stream.write_all(&payload);
    let r = big.read_msg().expect("an error before the close");
    assert_err(
        &r,
        "GenericError",
        "JSON parse error, message exceeds 1048576 bytes; closing connection",
    );
    assert!(big.read_msg().is_none(), "connection closed");
    let r = other.cmd(json!({"execute": "query-status"}));
    assert_eq!(r["return"]["status"], "prelaunch");
}

#[test]
fn deep_nesting_drops_that_client_only() {
    let h = Harness::sev();
    let mut c = h.client();
    c.send_raw(&vec![b'['; 2000]);
    let r = c.read_msg().unwrap();
    assert_err_prefix(&r, "GenericError", "JSON parse error, nesting exceeds 1024");
    assert!(c.read_msg().is_none());
    let mut d = h.client();
    assert!(d.cmd(json!({"execute": "query-kvm"}))["return"]["enabled"] == true);
}

#[test]
fn client_disconnecting_mid_command_does_not_disturb_others() {
    let h = Harness::sev();
    h.backend.set_delay(Duration::from_millis(400));
    let mut other = h.client();
    {
        let mut c = h.client();
        c.send_raw(
            json!({"execute": "query-sev-attestation-report",
                   "arguments": {"mnonce": "AAAAAAAAAAAAAAAAAAAAAA=="}})
            .to_string()
            .as_bytes(),
        );
        // Half a request, then gone.
        c.send_raw(b"{\"execute\": \"query-st");
    }
    let r = other.cmd(json!({"execute": "query-status"}));
    assert_eq!(r["return"]["status"], "prelaunch");
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.server.client_count() != 1 {
        assert!(Instant::now() < deadline, "dead client still counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The VM side is untouched.
    assert_eq!(h.backend.resets(), 0);
    let r = other.cmd(json!({"execute": "query-sev"}));
    assert_eq!(r["return"]["state"], "launch-secret");
}

#[test]
fn fifty_clients_at_once() {
    let h = Harness::sev();
    let path = h.path.clone();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&path);
                assert_eq!(
                    c.cmd(json!({"execute": "qmp_capabilities"})),
                    json!({"return": {}})
                );
                for j in 0..20 {
                    let r = c.cmd(json!({"execute": "query-status", "id": i * 100 + j}));
                    assert_eq!(r["id"], i * 100 + j);
                    assert_eq!(r["return"]["status"], "prelaunch");
                }
                c
            })
        })
        .collect();
    let mut clients: Vec<Client> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(h.server.client_count(), 50);
    // One event reaches all fifty.
    h.backend.emit(MonitorEvent::Powerdown);
    for c in &mut clients {
        assert_eq!(c.wait_event("POWERDOWN")["event"], "POWERDOWN");
    }
}

#[test]
fn client_limit_refuses_extra_clients_with_an_error() {
    let h = Harness::sev();
    let held: Vec<Client> = (0..MAX_CLIENTS).map(|_| h.raw_client()).collect();
    let mut s = UnixStream::connect(&h.path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_err(&v, "GenericError", "too many QMP clients (limit 64)");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.server.client_count() != 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = h.client();
    assert_eq!(
        c.cmd(json!({"execute": "query-kvm"}))["return"]["present"],
        true
    );
}

#[test]
fn stalled_client_never_blocks_the_vm_or_other_clients() {
    let h = Harness::sev();
    let stalled = h.client(); // negotiated, never reads again
    let events = h.server.events();
    assert_eq!(events.subscriber_count(), 1);
    let start = Instant::now();
    for _ in 0..20_000 {
        h.backend.emit(MonitorEvent::Stop);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "emitting must not wait for clients ({:?})",
        start.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.subscriber_count() != 0 || h.server.client_count() != 0 {
        assert!(Instant::now() < deadline, "stalled client not dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stalled);
    let mut c = h.client();
    assert_eq!(
        c.cmd(json!({"execute": "query-status"}))["return"]["status"],
        "prelaunch"
    );
}

#[test]
fn socket_is_0600_and_removed_on_shutdown() {
    let mut h = Harness::sev();
    let md = std::fs::symlink_metadata(&h.path).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    // No temp directory left beside it.
    let names: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("qmp.sock")]);
    h.server.shutdown();
    assert!(!h.path.exists());
}

#[test]
fn bind_refuses_non_sockets_and_live_sockets_but_replaces_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FakeBackend::plain());
    let file = dir.path().join("file");
    std::fs::write(&file, b"precious").unwrap();
    match QmpServer::bind(&file, backend.clone()) {
        Err(QmpServerError::NotASocket(p)) => assert_eq!(p, file),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("replaced a regular file"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    let live = dir.path().join("live.sock");
    let _l = UnixListener::bind(&live).unwrap();
    assert!(matches!(
        QmpServer::bind(&live, backend.clone()),
        Err(QmpServerError::InUse(_))
    ));

    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap()); // std leaves the file behind
    assert!(stale.exists());
    let mut s = QmpServer::bind(&stale, backend.clone()).expect("stale socket replaced");
    s.start().unwrap();
    let mut c = Client::connect(&stale);
    assert!(c.greeting["QMP"].is_object());
    assert_eq!(
        c.cmd(json!({"execute": "qmp_capabilities"})),
        json!({"return": {}})
    );

    let missing = dir.path().join("no/such/dir/q.sock");
    assert!(matches!(
        QmpServer::bind(&missing, backend),
        Err(QmpServerError::Io { .. })
    ));
}

#[test]
fn parse_qmp_argument() {
    use vmm::monitor::parse_qmp_arg;
    assert_eq!(
        parse_qmp_arg("unix:/run/sevm/q.sock"),
        Some("/run/sevm/q.sock".into())
    );
    assert_eq!(
        parse_qmp_arg("unix:/tmp/q,server,nowait"),
        Some("/tmp/q".into())
    );
    assert_eq!(parse_qmp_arg("tcp:localhost:4444"), None);
    assert_eq!(parse_qmp_arg("unix:"), None);
}
