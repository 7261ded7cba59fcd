//! `sevm shim`'s server as a hostile program's shim (or any local process reaching the
//! socket) drives it: a sequence of frames, each decoded and handled by `Server::handle`
//! over a soft platform through the loopback driver model. The input is
//! `[device byte][flags i32 LE]` (the open) and then frames `[u16 LE length][payload]`,
//! the payload a fuzzed request or, when its first byte is 0xFF, a well-formed
//! `SEV_ISSUE_CMD` built from the fuzzed command and data struct with server-unknown
//! addresses (what a client ships after `plan`).
//!
//! Invariants: no panic and no fault (every client address the model could reach is
//! translated to a server buffer or the no-access range); every reply decodes and copies back
//! only regions the plan shipped as output, at their shipped length; after each input the
//! platform directory still opens and answers PLATFORM_STATUS.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_firmware::soft::SoftPlatform;
use sev_firmware::SevPlatform;
use sevm_shim_proto::server::{open_loopback, Conn, Server};
use sevm_shim_proto::{plan, replan, Device, Dir, Reply, Request, SEV_ISSUE_CMD};
use std::sync::OnceLock;

struct Env {
    _dir: tempfile::TempDir,
    pdir: std::path::PathBuf,
    server: Server,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let pdir = dir.path().join("platform");
        std::fs::create_dir(&pdir).expect("platform dir");
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).expect("dev dir");
        let lb = open_loopback(&pdir, &dev, true).expect("loopback");
        Env {
            _dir: dir,
            pdir,
            server: Server::new(lb, None),
        }
    })
}

/// A well-formed SEV_ISSUE_CMD request: `cmd`, a data struct from `rest`, buffers of the
/// lengths it names filled from `rest`, at made-up client addresses.
fn well_formed(rest: &[u8]) -> Vec<u8> {
    let cmd = rest.first().copied().unwrap_or(0) as u32 % 14;
    let body = rest.get(1..).unwrap_or(&[]);
    let mut mem: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut issue = cmd.to_le_bytes().to_vec();
    issue.extend_from_slice(&0x2000u64.to_le_bytes());
    issue.extend_from_slice(&0u32.to_le_bytes());
    mem.push((0x1000, issue));
    mem.push((0x2000, body.iter().copied().chain(std::iter::repeat(0)).take(64).collect()));
    let mut read = |_: usize, a: u64, l: u32| -> Option<Vec<u8>> {
        if l > 64 * 1024 {
            return None;
        }
        match mem.iter().find(|(b, _)| *b == a) {
            Some((_, v)) => Some(v.iter().copied().chain(std::iter::repeat(0)).take(l as usize).collect()),
            // Any other address: readable zeros if it is even, unreadable if odd.
            None if a % 2 == 0 => Some(vec![0x41; l as usize]),
            None => None,
        }
    };
    let r = plan(Device::Sev, SEV_ISSUE_CMD, 0x1000, &mut read);
    Request::Ioctl {
        request: SEV_ISSUE_CMD,
        arg: 0x1000,
        regions: r.into_iter().map(|x| (x.addr, x.bytes)).collect(),
    }
    .encode()
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    if data.len() < 5 {
        return;
    }
    let dev = if data[0] & 1 == 0 { Device::Sev } else { Device::SevGuest };
    let flags = i32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let mut conn = Conn::new();
    let open = Request::Open { device: dev, flags }.encode();
    if e.server.handle(&mut conn, &open).is_err() {
        return;
    }
    let mut rest = &data[5..];
    while rest.len() >= 2 {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let body = &rest[2..2 + n];
        rest = &rest[2 + n..];
        let payload = if body.first() == Some(&0xFF) {
            well_formed(&body[1..])
        } else {
            body.to_vec()
        };
        let req = Request::decode(&payload);
        let Ok(answer) = e.server.handle(&mut conn, &payload) else {
            continue;
        };
        if let Ok(Request::Ioctl { request, arg, regions }) = req {
            let planned = replan(dev, request, arg, &regions).expect("handled, so it replans");
            let reply = Reply::decode(&answer).expect("the server's reply decodes");
            for (i, b) in &reply.out {
                let r = &planned[*i as usize];
                assert_eq!(r.dir, Dir::Out, "an input-only region copied back");
                assert_eq!(b.len(), r.len as usize, "a region copied back at another length");
            }
            if reply.errno == 0 {
                assert!(reply.ret >= 0);
            }
        }
    }
    let p = SoftPlatform::open(&e.pdir).expect("the platform directory still opens");
    p.platform_status().expect("and answers PLATFORM_STATUS");
});
