//! Every QMP command over a real socket against the fake backend.

mod qmp_common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use qmp_common::*;
use serde_json::json;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use vmm::monitor::fake::{FakeBackend, Injected, FAKE_MEASURE};

/// Why the debug path refuses a guest whose policy has NODBG.
const NODBG_REFUSAL: &str = "SEV: debug access refused: guest policy has NODBG set";

/// The base64 string member `name` of `v`, decoded.
#[track_caller]
fn b64_member(v: &Value, name: &str) -> Vec<u8> {
    let s = v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string {name:?} in {v}"));
    B64.decode(s)
        .unwrap_or_else(|e| panic!("{name:?} is not base64 ({e}): {v}"))
}

/// `args` (an object) with member `name` set to `value`.
fn with_member(args: &Value, name: &str, value: Value) -> Value {
    let mut v = args.clone();
    v[name] = value;
    v
}

/// `sev-inject-launch-secret` with `args`.
fn inject(c: &mut Client, args: Value) -> Value {
    c.exec("sev-inject-launch-secret", args)
}

/// `query-sev-attestation-report` with `args`.
fn attestation_report(c: &mut Client, args: Value) -> Value {
    c.exec("query-sev-attestation-report", args)
}

#[test]
fn greeting_and_negotiation() {
    let h = Harness::sev();
    let mut c = h.raw_client();
    assert_eq!(c.greeting["QMP"]["version"]["qemu"]["major"], 9);
    assert!(c.greeting["QMP"]["version"]["package"]
        .as_str()
        .unwrap()
        .starts_with("sevm "));
    assert_eq!(c.greeting["QMP"]["capabilities"], json!([]));
    // Anything before negotiation, even an unknown command.
    for cmd in ["query-status", "no-such-command"] {
        let r = c.cmd(json!({"execute": cmd, "id": 7}));
        assert_err(
            &r,
            "CommandNotFound",
            "Expecting capabilities negotiation with 'qmp_capabilities'",
        );
        assert_eq!(r["id"], 7);
    }
    let r = c.exec("qmp_capabilities", json!({"enable": ["oob"]}));
    assert_generic_err(&r, "Capability 'oob' not available");
    let r = c.exec("qmp_capabilities", json!({}));
    assert_eq!(r, json!({"return": {}}));
    let r = c.execute("qmp_capabilities");
    assert_err(
        &r,
        "CommandNotFound",
        "Capabilities negotiation is already complete, command ignored",
    );
    let r = c.execute("query-commands");
    let names: Vec<&str> = r["return"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"sev-inject-launch-secret"));
    assert!(names.contains(&"human-monitor-command"));
}

#[test]
fn id_is_echoed_verbatim() {
    let h = Harness::sev();
    let mut c = h.client();
    for id in [json!("abc"), json!(42), json!({"x": [1, 2]}), json!(null)] {
        let r = c.cmd(json!({"execute": "query-kvm", "id": id}));
        assert_eq!(r["id"], id);
        assert_eq!(r["return"], json!({"enabled": true, "present": true}));
        let r = c.cmd(json!({"execute": "nope", "id": id}));
        assert_eq!(r["id"], id);
        assert_err(&r, "CommandNotFound", "The command nope has not been found");
    }
    let r = c.execute("query-kvm");
    assert!(r.get("id").is_none());
}

#[test]
fn version_status_kvm() {
    let h = Harness::sev();
    let mut c = h.client();
    let r = c.execute("query-version");
    assert_eq!(
        r["return"]["qemu"],
        json!({"major": 9, "minor": 2, "micro": 0})
    );
    let r = c.execute("query-status");
    assert_eq!(
        r["return"],
        json!({"running": false, "status": "prelaunch"})
    );
}

#[test]
fn run_state_commands_emit_timestamped_events_to_negotiated_clients() {
    let h = Harness::sev();
    let mut c = h.client();
    let mut other = h.client();
    let mut unnegotiated = h.raw_client();

    c.execute_ok("cont");
    let ev = c.wait_event("SEV_LAUNCH_STATE");
    assert_eq!(ev["data"], json!({"state": "running"}));
    let ev = c.wait_event("RESUME");
    assert!(ev["timestamp"]["seconds"].as_u64().unwrap() > 1_600_000_000);
    assert!(ev["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
    assert!(ev.get("data").is_none());
    let r = c.execute("query-status");
    assert_eq!(r["return"], json!({"running": true, "status": "running"}));

    c.execute_ok("stop");
    c.wait_event("STOP");
    let r = c.execute("query-status");
    assert_eq!(r["return"], json!({"running": false, "status": "paused"}));

    c.execute_ok("system_reset");
    let ev = c.wait_event("RESET");
    assert_eq!(
        ev["data"],
        json!({"guest": false, "reason": "host-qmp-system-reset"})
    );
    assert_eq!(h.backend.resets(), 1);
    c.execute_ok("system_powerdown");
    c.wait_event("POWERDOWN");

    // The second negotiated client saw the same stream, in order.
    for name in ["SEV_LAUNCH_STATE", "RESUME", "STOP", "RESET", "POWERDOWN"] {
        let ev = other.read_msg().unwrap();
        assert_eq!(ev["event"], name);
    }
    // The unnegotiated one saw nothing: its next message is the reply to its command.
    unnegotiated.negotiate();
    assert!(unnegotiated.events.is_empty());

    c.execute_ok("quit");
    let ev = c.wait_event("SHUTDOWN");
    assert_eq!(
        ev["data"],
        json!({"guest": false, "reason": "host-qmp-quit"})
    );
    assert!(h.backend.quit_requested());
    let r = c.execute("cont");
    assert_generic_err(&r, "Resetting the Virtual Machine is required");
}

/// An SEV-SNP guest: `query-sev` is QEMU's `sev-snp` branch, HMP `info sev` QEMU's SNP lines,
/// and what QEMU refuses for SNP (the launch measurement, secret injection) is refused with
/// QEMU's errors.
#[test]
fn snp_queries_and_refusals() {
    let h = Harness::new(FakeBackend::snp_running(0x30000));
    let mut c = h.client();
    let r = c.execute("query-sev");
    assert_eq!(
        r["return"],
        json!({"enabled": true, "api-major": 1, "api-minor": 55, "build-id": 25,
               "state": "running", "sev-type": "sev-snp", "snp-policy": 0x30000})
    );
    let r = c.exec("query-sev-launch-measure", json!({}));
    assert_generic_err(&r, "SEV launch measurement is not available");
    let r = inject(
        &mut c,
        json!({"packet-header": B64.encode([0u8; 52]), "secret": B64.encode([0u8; 16])}),
    );
    assert_generic_err(&r, "SEV: Not in correct state. (LSECRET) 3");
    let r = c.exec("human-monitor-command", json!({"command-line": "info sev"}));
    assert_eq!(
        r["return"],
        "SEV type: sev-snp\r\nstate: running\r\nbuild: 25\r\napi version: 1.55\r\ndebug: off\r\nSMT allowed: on\r\n"
    );
}

#[test]
fn sev_queries() {
    let h = Harness::new(FakeBackend::sev_paused(0x3));
    let mut c = h.client();
    let r = c.execute("query-sev");
    assert_eq!(
        r["return"],
        json!({"enabled": true, "api-major": 0, "api-minor": 24, "build-id": 15,
               "policy": 3, "state": "launch-secret", "handle": 1, "sev-type": "sev"})
    );
    let r = c.execute("query-sev-launch-measure");
    assert_eq!(b64_member(&r["return"], "data"), FAKE_MEASURE);
    let r = c.execute("query-sev-capabilities");
    let caps = &r["return"];
    assert_eq!(b64_member(caps, "pdh").len(), 2084);
    assert_eq!(b64_member(caps, "cert-chain").len(), 3 * 2084);
    assert_eq!(b64_member(caps, "cpu0-id"), vec![0x33; 64]);
    assert_eq!(caps["cbitpos"], 51);
    assert_eq!(caps["reduced-phys-bits"], 1);

    let mnonce = [7u8; 16];
    let r = attestation_report(&mut c, json!({"mnonce": B64.encode(mnonce)}));
    let rep = b64_member(&r["return"], "data");
    assert_eq!(&rep[..16], &mnonce);
    let r = attestation_report(&mut c, json!({"mnonce": B64.encode([1u8; 15])}));
    assert_generic_err(&r, "SEV: mnonce must be 16 bytes (got 15)");
    let r = attestation_report(&mut c, json!({"mnonce": "%%%"}));
    assert_generic_err(&r, "SEV: failed to decode mnonce input");
    let r = attestation_report(&mut c, json!({}));
    assert_generic_err(&r, "Parameter 'mnonce' is missing");
}

#[test]
fn sev_queries_on_a_plain_guest_fail_like_qemu() {
    let h = Harness::new(FakeBackend::plain());
    let mut c = h.client();
    let r = c.execute("query-sev");
    assert_generic_err(&r, "SEV feature is not available");
    let r = c.execute("query-sev-launch-measure");
    assert_generic_err(&r, "SEV launch measurement is not available");
    let r = c.execute("query-sev-capabilities");
    assert_generic_err(&r, "SEV is not enabled in KVM");
    let r = inject(
        &mut c,
        json!({"packet-header": B64.encode([0u8; 52]), "secret": B64.encode([1u8; 16])}),
    );
    assert_generic_err(&r, "SEV not enabled for guest");
    let r = attestation_report(&mut c, json!({"mnonce": B64.encode([0u8; 16])}));
    assert_generic_err(&r, "SEV is not enabled");
    assert_eq!(c.hmp("info sev"), "SEV is not enabled\r\n");
}

#[test]
fn inject_launch_secret_states_and_decoding() {
    let h = Harness::sev();
    let mut c = h.client();
    let hdr = [0x5au8; 52];
    let secret = [0xc3u8; 64];
    let args = json!({"packet-header": B64.encode(hdr), "secret": B64.encode(secret)});
    assert_eq!(inject(&mut c, args.clone()), json!({"return": {}}));
    assert_eq!(
        inject(&mut c, with_member(&args, "gpa", json!(0x80_0000u64))),
        json!({"return": {}})
    );
    assert_eq!(
        h.backend.injected(),
        vec![
            Injected {
                header: hdr.to_vec(),
                secret: secret.to_vec(),
                gpa: None
            },
            Injected {
                header: hdr.to_vec(),
                secret: secret.to_vec(),
                gpa: Some(0x80_0000)
            }
        ]
    );
    let r = inject(&mut c, with_member(&args, "packet-header", json!("")));
    assert_generic_err(&r, "SEV: Failed to decode sequence header");
    let r = inject(&mut c, with_member(&args, "secret", json!("not base64!")));
    assert_generic_err(&r, "SEV: Failed to decode data");
    let short_header = json!(B64.encode([0u8; 10]));
    let r = inject(&mut c, with_member(&args, "packet-header", short_header));
    // Decoded where it arrives: QEMU's prefix, the argument and what is wrong with it.
    assert_generic_err(
        &r,
        "SEV: failed to inject secret: 'packet-header': secret packet header: length is 10 \
         bytes, expected exactly 52",
    );
    let r = inject(&mut c, with_member(&args, "gpa", json!(-1)));
    assert_generic_err(&r, "Parameter 'gpa' expects uint64");
    let r = inject(&mut c, with_member(&args, "gpa", json!("0x1000")));
    assert_generic_err(&r, "Invalid parameter type for 'gpa', expected: integer");
    let r = inject(&mut c, json!({"secret": "AA=="}));
    assert_generic_err(&r, "Parameter 'packet-header' is missing");
    assert_eq!(h.backend.injected().len(), 2);

    // After cont the guest is running: wrong state, QEMU's message with the state number.
    c.execute("cont");
    let r = inject(&mut c, args);
    assert_generic_err(&r, "SEV: Not in correct state. (LSECRET) 3");
    let r = c.execute("query-sev");
    assert_eq!(r["return"]["state"], "running");
}

#[test]
fn pmemsave_and_memsave_through_the_debug_path() {
    let h = Harness::sev();
    let mut c = h.client();
    let f = h.dir.path().join("phys.bin");
    let fname = f.to_str().unwrap();
    let r = c.exec(
        "pmemsave",
        json!({"val": 0x1000, "size": 200_000, "filename": fname}),
    );
    assert_eq!(r, json!({"return": {}}));
    let data = std::fs::read(&f).unwrap();
    let expect: Vec<u8> = (0x1000..0x1000 + 200_000)
        .map(|i| (i % 251) as u8)
        .collect();
    assert_eq!(data, expect);
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let v = h.dir.path().join("virt.bin");
    let r = c.exec(
        "memsave",
        json!({"val": 16, "size": 32, "filename": v.to_str().unwrap(), "cpu-index": 1}),
    );
    assert_eq!(r, json!({"return": {}}));
    let expect: Vec<u8> = (16..48).map(|i| (i % 251) as u8).collect();
    assert_eq!(std::fs::read(&v).unwrap(), expect);

    let one_byte = json!({"val": 0, "size": 1, "filename": fname});
    let r = c.exec("memsave", with_member(&one_byte, "cpu-index", json!(9)));
    assert_generic_err(&r, "Parameter 'cpu-index' expects a CPU number");
    let bad = h.dir.path().join("bad.bin");
    let r = c.exec(
        "memsave",
        json!({"val": 0x20_0000, "size": 16, "filename": bad.to_str().unwrap()}),
    );
    assert_generic_err(
        &r,
        "Invalid addr 0x0000000000200000/size 16 specified: \
         guest physical range 0x200000+0x10 is not RAM",
    );
    assert!(!bad.exists(), "refused before the file is created");
    let no_dir = json!("/nonexistent-dir/x.bin");
    let r = c.exec("pmemsave", with_member(&one_byte, "filename", no_dir));
    assert_err_prefix(
        &r,
        "GenericError",
        "Could not open '/nonexistent-dir/x.bin'",
    );
    let r = c.exec("pmemsave", with_member(&one_byte, "val", json!("0")));
    assert_generic_err(&r, "Invalid parameter type for 'val', expected: integer");
    let r = c.exec("pmemsave", json!({"val": 0, "size": 1}));
    assert_generic_err(&r, "Parameter 'filename' is missing");
    let r = c.exec("pmemsave", with_member(&one_byte, "bogus", json!(true)));
    assert_generic_err(&r, "Parameter 'bogus' is unexpected");
    let r = c.exec("pmemsave", with_member(&one_byte, "size", json!(-1)));
    assert_generic_err(&r, "Parameter 'size' expects a non-negative size");
}

#[test]
fn debug_path_refused_under_nodbg_policy() {
    let h = Harness::new(FakeBackend::sev_paused(0x1));
    let mut c = h.client();
    let f = h.dir.path().join("d.bin");
    let r = c.exec(
        "pmemsave",
        json!({"val": 0, "size": 16, "filename": f.to_str().unwrap()}),
    );
    assert_generic_err(&r, NODBG_REFUSAL);
    assert!(!f.exists());
    assert_eq!(
        c.hmp("xp /2x 0"),
        format!("0000000000000000: Cannot access memory ({NODBG_REFUSAL})\r\n")
    );
}

#[test]
fn human_monitor_commands() {
    let h = Harness::new(FakeBackend::sev_paused(0x1));
    let mut c = h.client();
    assert_eq!(c.hmp("info status"), "VM status: paused (prelaunch)\r\n");
    assert_eq!(c.hmp("info kvm"), "kvm support: enabled\r\n");
    assert_eq!(
        c.hmp("info sev"),
        "SEV type: SEV\r\nstate: launch-secret\r\nbuild: 15\r\napi version: 0.24\r\n\
         handle: 1\r\ndebug: off\r\nkey-sharing: on\r\n"
    );
    let regs = c.hmp("info registers");
    assert!(regs.starts_with("CPU#0\r\nRAX="), "{regs}");
    let r = c.exec(
        "human-monitor-command",
        json!({"command-line": "info registers", "cpu-index": 1}),
    );
    assert!(r["return"].as_str().unwrap().starts_with("CPU#1\r\n"));
    assert_eq!(c.hmp("info bogus"), "unknown command: 'info bogus'\r\n");
    assert_eq!(c.hmp("frobnicate"), "unknown command: 'frobnicate'\r\n");
    assert_eq!(
        c.hmp("xp /4xw 0x1000"),
        format!("0000000000001000: Cannot access memory ({NODBG_REFUSAL})\r\n")
    );
    assert_eq!(c.hmp("cont"), "");
    assert_eq!(c.hmp("info status"), "VM status: running\r\n");

    let h = Harness::sev();
    let mut c = h.client();
    // mem[i] = i % 251
    assert_eq!(
        c.hmp("xp /4xw 0x1000"),
        format!(
            "0000000000001000: {}\r\n",
            (0..4)
                .map(|w| {
                    let b: Vec<u8> = (0..4).map(|i| ((0x1000 + w * 4 + i) % 251) as u8).collect();
                    format!("0x{:08x}", u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                })
                .collect::<Vec<_>>()
                .join(" ")
        )
    );
    assert_eq!(
        c.hmp("x /3xg 0x0"),
        "0000000000000000: 0x0706050403020100 0x0f0e0d0c0b0a0908\r\n\
         0000000000000010: 0x1716151413121110\r\n"
    );
    // The format sticks: plain `x ADDR` reuses the last (g, x).
    assert_eq!(c.hmp("x 0x8"), "0000000000000008: 0x0f0e0d0c0b0a0908\r\n");
    assert_eq!(c.hmp("xp /3ub 250"), "00000000000000fa: 250   0   1\r\n");
    assert_eq!(c.hmp("xp /2c 0x41"), "0000000000000041: 'A' 'B'\r\n");
    assert_eq!(c.hmp("xp /2q 0"), "invalid char in format: 'q'\r\n");
    assert_eq!(c.hmp("xp /2x"), "xp: address expected\r\n");
    assert_eq!(c.hmp("x /2x nowhere"), "invalid char in expression\r\n");
    assert!(c.hmp("xp /4xw 0xffffc").contains("Cannot access memory"));
    let r = c.exec(
        "human-monitor-command",
        json!({"command-line": "info status", "cpu-index": 5}),
    );
    assert_generic_err(&r, "Parameter 'cpu-index' expects a CPU number");
    let r = c.exec("human-monitor-command", json!({"command-line": 5}));
    assert_generic_err(
        &r,
        "Invalid parameter type for 'command-line', expected: string",
    );
}
