//! The guests' memory keys never reach any output: a full launch on the soft platform runs
//! with a tracing subscriber at TRACE, every error and `Debug` form along the way is
//! printed into the same capture, and the capture is searched for each guest's VEK and the
//! two engine keys derived from it, in every encoding a careless log line could use.
//! (The VEK is internal to the firmware, so this test lives inside the crate; the CLI-level
//! search for the other secrets is `crates/sevm/tests/secrets_no_leak.rs`.)

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sev_proto::cert::SevCert;
use sev_proto::measure::LaunchMeasure;
use vm_memory::VolatileSlice;

use super::{SoftGuest, SoftPlatform};
use crate::{GuestPolicy, SevGuest, SevPlatform};

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encodings(k: &[u8]) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(k);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k);
    vec![
        k.to_vec(),
        hex::encode(k).into_bytes(),
        hex::encode_upper(k).into_bytes(),
        b64.trim_end_matches('=').as_bytes().to_vec(),
        b64url.into_bytes(),
        format!("{k:?}").into_bytes(),
        format!("{k:02x?}").into_bytes(),
    ]
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The guest's VEK, K1 and K2 (read from the model's guest table).
fn keys_of(p: &SoftPlatform, g: &SoftGuest) -> [Vec<u8>; 3] {
    let inner = p.lock();
    inner
        .fw
        .guest(g.handle)
        .expect("a live guest")
        .key
        .key_material_for_tests()
}

#[test]
fn no_memory_key_in_any_output_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let cap = Arc::new(Mutex::new(Vec::new()));
    let w = Capture(cap.clone());
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
    tracing::subscriber::with_default(sub, || {
        tracing::info!("leak test: capture works");
        let p = SoftPlatform::open(dir.path()).unwrap();
        let chain = p.export_chain().unwrap();
        let pdh = SevCert::parse(&chain.pdh).unwrap();
        let policy = 0u32;
        let sess = sev_proto::session::owner_session(&pdh, policy).unwrap();
        // Two guests, the second sharing the first's key (LAUNCH_START with a handle).
        let mut g1 = p.new_guest();
        g1.init(false).unwrap();
        g1.launch_start(GuestPolicy(policy), Some(&sess.launch_owner()), 0)
            .unwrap();
        let mut g2 = p.new_guest();
        g2.init(false).unwrap();
        g2.launch_start(GuestPolicy(policy), None, g1.handle())
            .unwrap();
        for (name, g) in [("guest 1", &g1), ("guest 2", &g2)] {
            for (part, k) in ["VEK", "K1", "K2"].iter().zip(keys_of(&p, g)) {
                keys.push((format!("{name} {part}"), k));
            }
        }
        let gpa = 0x10_0000u64;
        let mut mem = vec![0x5au8; 0x2000];
        g1.launch_update_data(gpa, &mut mem).unwrap();
        let lm = LaunchMeasure::from_bytes(&g1.launch_measure().unwrap()).unwrap();
        let secret = [0x42u8; 32];
        let (hdr, ct) =
            sev_proto::secret::build_packet(&sess.keys, &lm.measure, [9u8; 16], 0, &secret)
                .unwrap();
        let mut bad = hdr;
        bad.mac[0] ^= 1;
        let e = g1
            .launch_secret(&bad, &ct, gpa, &mut mem[..32])
            .unwrap_err();
        tracing::error!("refused as expected: {e} / {e:?}");
        g1.launch_secret(&hdr, &ct, gpa, &mut mem[..32]).unwrap();
        g1.launch_finish().unwrap();
        let mut out = vec![0u8; 64];
        g1.dbg_decrypt(gpa, VolatileSlice::from(&mut mem[..64]), &mut out)
            .unwrap();
        g1.dbg_encrypt(gpa, &[1u8; 16], VolatileSlice::from(&mut mem[..16]))
            .unwrap();
        let view = g1
            .host_view(gpa, VolatileSlice::from(&mut mem[..64]))
            .unwrap();
        let report = g1.attestation_report([3u8; 16]).unwrap();
        // Careless log lines: Debug of the guests, the status, the views.
        tracing::trace!(h1 = g1.handle(), h2 = g2.handle(), status = ?g1.guest_status(), "guests");
        tracing::trace!(view = ?view, report = ?report, "views");
        tracing::trace!(platform = ?p.platform_status(), "platform");
        g2.decommission().unwrap();
        g1.decommission().unwrap();
        // A command on a decommissioned guest: another error path.
        let e = g1.launch_measure().unwrap_err();
        tracing::warn!("after decommission: {e} / {e:?}");
    });
    let out = cap.lock().unwrap().clone();
    assert!(find(&out, b"leak test: capture works"), "captured nothing");
    assert_eq!(keys.len(), 6);
    assert_eq!(keys[0].1, keys[3].1, "guest 2 shares guest 1's VEK");
    for (what, k) in &keys {
        assert_eq!(k.len(), 16, "{what}");
        for (i, enc) in encodings(k).iter().enumerate() {
            assert!(
                !find(&out, enc),
                "{what} (encoding {i}) found in the TRACE output:\n{}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    // The search works: a line that does print a key is found.
    let mut probe = out.clone();
    probe.extend_from_slice(format!("oops {:02x?}", keys[0].1).as_bytes());
    assert!(find(&probe, &encodings(&keys[0].1)[6]));
}
