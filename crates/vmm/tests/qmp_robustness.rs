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
    for bad in [&b"{\"execute\": foo}"[..], b"garbage\n", b"}"] {
        c.send_raw(bad);
        assert_err_prefix(&c.reply(), "GenericError", "JSON parse error, ");
    }
    for not_an_object in [&b"[1, 2]"[..], b"\"just a string\""] {
        c.send_raw(not_an_object);
        assert_generic_err(&c.reply(), "QMP input must be a JSON object");
    }
    let r = c.cmd(json!({"arguments": {}, "id": 1}));
    assert_generic_err(&r, "QMP input lacks member 'execute'");
    assert_eq!(r["id"], 1);
    let r = c.cmd(json!({"execute": 5}));
    assert_generic_err(&r, "QMP input member 'execute' must be a string");
    let r = c.cmd(json!({"execute": "stop", "arguments": []}));
    assert_generic_err(&r, "QMP input member 'arguments' must be an object");
    let r = c.cmd(json!({"execute": "stop", "extra": 1}));
    assert_generic_err(&r, "QMP input member 'extra' is unexpected");
    let r = c.exec("query-status", json!({"x": 1}));
    assert_generic_err(&r, "Parameter 'x' is unexpected");
    let r = c.execute("no-such");
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
    assert_generic_err(
        &r,
        "JSON parse error, message exceeds 1048576 bytes; closing connection",
    );
    assert!(big.read_msg().is_none(), "connection closed");
    let r = other.execute("query-status");
    assert_eq!(r["return"]["status"], "prelaunch");
}

// Deep nesting (finding 18 of issue 17): tests/monitor_hardening.rs.

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
    let r = other.execute("query-status");
    assert_eq!(r["return"]["status"], "prelaunch");
    wait_until("dead client still counted", || h.server.client_count() == 1);
    // The VM side is untouched.
    assert_eq!(h.backend.resets(), 0);
    let r = other.execute("query-sev");
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
                c.negotiate();
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
    assert_generic_err(&v, "too many QMP clients (limit 64)");
    drop(held);
    wait_until("released clients still counted", || {
        h.server.client_count() == 0
    });
    let mut c = h.client();
    assert_eq!(c.execute("query-kvm")["return"]["present"], true);
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
    let emitted = start.elapsed();
    wait_until("stalled client not dropped", || {
        events.subscriber_count() == 0 && h.server.client_count() == 0
    });
    let dropped = start.elapsed();
    drop(stalled);
    let mut c = h.client();
    let t = Instant::now();
    assert_eq!(c.execute("query-status")["return"]["status"], "prelaunch");
    eprintln!(
        "stalled client: 20000 events emitted in {emitted:?}, client dropped after {dropped:?}, \
         next client's query-status answered in {:?}",
        t.elapsed()
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
        Err(QmpServerError::InUse(_, _))
    ));

    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap()); // std leaves the file behind
    assert!(stale.exists());
    let mut s = QmpServer::bind(&stale, backend.clone()).expect("stale socket replaced");
    s.start().unwrap();
    let mut c = Client::connect(&stale);
    assert!(c.greeting["QMP"].is_object());
    c.negotiate();

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
