//! QMP monitor: the byte-stream framer and the request dispatcher (QMP commands and the
//! HMP subset behind `human-monitor-command`) against the fake backend.
//! Input: byte 0 picks the backend (plain guest / SEV guest with policy byte 1), byte 2
//! picks the chunk size the stream is fed in; the rest is the client's byte stream.
//! `pmemsave`/`memsave` write files: every `filename` argument is redirected into a
//! private temporary directory before dispatch.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use vmm::monitor::fake::FakeBackend;
use vmm::monitor::{Dispatcher, Frame, Framer, Session};

fn dump_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| tempfile::tempdir().unwrap().keep().join("dump"))
}

/// Redirect every `filename` string anywhere in the request to the private dump path.
fn sanitize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "filename" {
                    if x.is_string() {
                        *x = Value::String(dump_path().to_string_lossy().into_owned());
                    }
                } else {
                    sanitize(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(sanitize),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let backend: Arc<FakeBackend> = Arc::new(if data[0] & 1 == 0 {
        FakeBackend::plain()
    } else {
        FakeBackend::sev_paused(u32::from(data[1]))
    });
    let chunk = usize::from(data[2]).max(1);
    let d = Dispatcher::new(backend.clone());
    let _ = d.greeting();
    let mut session = Session::new();
    let mut framer = Framer::new();
    let mut frames = Vec::new();
    for piece in data[3..].chunks(chunk) {
        framer.push(piece, &mut frames);
        assert!(framer.pending() <= vmm::monitor::MAX_MESSAGE_BYTES + 1);
    }
    for f in frames {
        let Frame::Json(text) = f else {
            continue;
        };
        let text = match serde_json::from_slice::<Value>(&text) {
            Ok(mut v) => {
                sanitize(&mut v);
                serde_json::to_vec(&v).unwrap()
            }
            Err(_) => text,
        };
        let r = d.handle_text(&mut session, &text);
        let m = r.msg.as_object().expect("reply is an object");
        assert!(
            m.contains_key("return") ^ m.contains_key("error"),
            "reply must have exactly one of return/error: {m:?}"
        );
        let _ = serde_json::to_string(&r.msg).unwrap();
    }
    let _ = std::fs::remove_file(dump_path());
});
