//! Shared helpers for the QMP tests: a server over the fake backend and a line client.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm::monitor::fake::FakeBackend;
use vmm::monitor::QmpServer;

/// A running server in a temp dir.
pub struct Harness {
    // Field order is drop order: stop the server before removing its directory.
    pub server: QmpServer,
    pub backend: Arc<FakeBackend>,
    pub path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub fn new(backend: FakeBackend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let backend = Arc::new(backend);
        let mut server = QmpServer::bind(&path, backend.clone()).expect("bind");
        backend.set_events(server.events());
        server.start().expect("start");
        Self {
            dir,
            path,
            backend,
            server,
        }
    }

    pub fn sev() -> Self {
        Self::new(FakeBackend::sev_paused(0))
    }

    /// A connected client that has read the greeting.
    pub fn raw_client(&self) -> Client {
        Client::connect(&self.path)
    }

    /// A connected, negotiated client.
    pub fn client(&self) -> Client {
        let mut c = self.raw_client();
        c.negotiate();
        c
    }
}

/// A blocking QMP client that keeps events aside.
pub struct Client {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
    pub greeting: Value,
    pub events: Vec<Value>,
}

impl Client {
    pub fn connect(path: &std::path::Path) -> Self {
        let stream = UnixStream::connect(path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut c = Self {
            stream,
            reader,
            greeting: Value::Null,
            events: Vec::new(),
        };
        c.greeting = c.read_msg().expect("greeting");
        c
    }

    /// Next message, or None at EOF.
    pub fn read_msg(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert!(line.ends_with("\r\n"), "QMP lines end in CRLF: {line:?}");
                // The server echoes ids nested up to MAX_NESTING (1024) levels.
                let mut de = serde_json::Deserializer::from_str(&line);
                de.disable_recursion_limit();
                let v: Result<Value, _> = serde::Deserialize::deserialize(&mut de);
                Some(v.expect("server sent valid JSON"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Next non-event message (events are stored).
    pub fn reply(&mut self) -> Value {
        loop {
            let m = self.read_msg().expect("reply before EOF");
            if m.get("event").is_some() {
                self.events.push(m);
            } else {
                return m;
            }
        }
    }

    pub fn cmd(&mut self, v: Value) -> Value {
        self.send_raw(v.to_string().as_bytes());
        self.reply()
    }

    /// `name` with `arguments`.
    pub fn exec(&mut self, name: &str, args: Value) -> Value {
        self.cmd(json!({"execute": name, "arguments": args}))
    }

    /// `name` without an `arguments` member.
    pub fn execute(&mut self, name: &str) -> Value {
        self.cmd(json!({"execute": name}))
    }

    /// `name` without arguments; asserts the empty success reply.
    #[track_caller]
    pub fn execute_ok(&mut self, name: &str) {
        let r = self.execute(name);
        assert_eq!(r, json!({"return": {}}), "{name}");
    }

    /// `qmp_capabilities`; asserts it succeeds.
    #[track_caller]
    pub fn negotiate(&mut self) {
        self.execute_ok("qmp_capabilities");
    }

    /// `human-monitor-command` with `line`; returns the text it printed.
    #[track_caller]
    pub fn hmp(&mut self, line: &str) -> String {
        let r = self.exec("human-monitor-command", json!({"command-line": line}));
        r["return"]
            .as_str()
            .unwrap_or_else(|| panic!("{line}: {r}"))
            .to_string()
    }

    /// Wait until an event named `name` arrives (or was already stored); returns it.
    pub fn wait_event(&mut self, name: &str) -> Value {
        loop {
            if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
                return self.events.remove(i);
            }
            let m = self.read_msg().expect("event before EOF");
            assert!(m.get("event").is_some(), "unexpected non-event {m}");
            self.events.push(m);
        }
    }
}

/// Assert `r` is a QMP error of `class` with exactly `desc`.
#[track_caller]
pub fn assert_err(r: &Value, class: &str, desc: &str) {
    assert_eq!(r["error"]["class"], class, "reply: {r}");
    assert_eq!(r["error"]["desc"], desc, "reply: {r}");
}

/// Assert `r` is a QMP `GenericError` with exactly `desc`.
#[track_caller]
pub fn assert_generic_err(r: &Value, desc: &str) {
    assert_err(r, "GenericError", desc);
}

/// Polls `done` every 20 ms; fails with `what` if it is not true within 10 s.
#[track_caller]
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Assert `r` is a QMP error of `class` whose desc starts with `prefix`.
#[track_caller]
pub fn assert_err_prefix(r: &Value, class: &str, prefix: &str) {
    assert_eq!(r["error"]["class"], class, "reply: {r}");
    let d = r["error"]["desc"].as_str().expect("desc");
    assert!(
        d.starts_with(prefix),
        "desc {d:?} should start with {prefix:?}"
    );
}
