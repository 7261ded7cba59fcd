//! `/dev/sev-guest` through `sevm shim --guest`: the sev-guest driver model
//! (`sevm_shim_proto::guest_driver::SevGuestDriver`) over the guest channel's encoding
//! (`DirectSession`) to a soft SNP guest context in this process (`soft_guest`), driven three
//! ways by a sequence of steps `[kind][u16 LE length][body]`:
//! * kind 0: a frame to `Server::handle` on a `/dev/sev-guest` connection: raw, or (body
//!   starting 0xFF) a guest ioctl planned from fuzzed client memory: the request number
//!   (the three known or a fuzzed u64), `msg_version`, `req_data`/`resp_data`/`certs_address`
//!   pointing at the fuzzed structs, at NULL, at readable filler or at unreadable memory, a
//!   fuzzed `certs_len`;
//! * kind 1: `GuestDriver::ioctl` called directly with a fuzzed request number and fuzzed
//!   `arg`/`req`/`resp`/`certs` buffers of fuzzed lengths (what no plan would ship);
//! * kind 2: the channel codec: `handle_channel` on the fuzzed payload, `GuestAnswer::decode`,
//!   `decode_secrets`, `ChanRequest` re-encoding.
//!
//! Invariants: no panic; the driver answers 0 or one of the kernel driver's errnos (EINVAL,
//! ENOTTY, EFAULT, EIO, EBADMSG); every server reply decodes and copies back only `Out`
//! regions at their shipped length; a decodable channel request re-encodes to its bytes; and
//! after each input a fresh driver (the VMPCK wipe is per driver, as per guest boot) still
//! gets a derived key (status 0) from the same guest context: no input desynchronises the
//! sequence numbers or breaks the context.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sevm_shim_proto::guest::{decode_secrets, handle_channel, ChanRequest, GuestAnswer};
use sevm_shim_proto::guest_driver::{ChannelSession, DirectSession, SevGuestDriver};
use sevm_shim_proto::server::{open_loopback, Conn, GuestDriver, Server};
use sevm_shim_proto::soft_guest::SoftGuestBackend;
use sevm_shim_proto::{
    plan, replan, Device, Dir, Reply, Request, SNP_GET_DERIVED_KEY, SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
};
use std::sync::{Arc, Mutex, OnceLock};

/// The driver of the current input behind the server.
struct Current(Mutex<Arc<SevGuestDriver>>);

impl GuestDriver for Current {
    fn ioctl(
        &self,
        request: u64,
        arg: &mut [u8],
        req: Option<&mut [u8]>,
        resp: Option<&mut [u8]>,
        certs: Option<&mut [u8]>,
    ) -> Result<i32, i32> {
        let d = Arc::clone(&self.0.lock().unwrap());
        d.ioctl(request, arg, req, resp, certs)
    }
}

struct Env {
    _dir: tempfile::TempDir,
    backend: Arc<SoftGuestBackend>,
    current: Arc<Current>,
    server: Server,
}

fn driver(b: &Arc<SoftGuestBackend>) -> Arc<SevGuestDriver> {
    let b = Arc::clone(b);
    Arc::new(SevGuestDriver::new(Box::new(move || {
        Ok(Box::new(DirectSession(b.clone())) as Box<dyn ChannelSession>)
    })))
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let snp = dir.path().join("snp");
        std::fs::create_dir(&snp).expect("snp dir");
        // 5000 bytes: a one-page certificate buffer takes the length-probe path.
        let table: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let backend = Arc::new(SoftGuestBackend::launch(&snp, 0x30000, table).expect("launch"));
        let pdir = dir.path().join("platform");
        std::fs::create_dir(&pdir).expect("platform dir");
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).expect("dev dir");
        let lb = open_loopback(&pdir, &dev, true).expect("loopback");
        let current = Arc::new(Current(Mutex::new(driver(&backend))));
        let server = Server::new(lb, Some(current.clone() as Arc<dyn GuestDriver>));
        Env {
            _dir: dir,
            backend,
            current,
            server,
        }
    })
}

const KNOWN: [u64; 3] = [SNP_GET_REPORT, SNP_GET_DERIVED_KEY, SNP_GET_EXT_REPORT];
const ARG: u64 = 0x1000;
const REQ: u64 = 0x2000;
const RESP: u64 = 0x3000;
const CERTS: u64 = 0x4000;

fn errno_ok(e: i32) -> bool {
    [
        libc::EINVAL,
        libc::ENOTTY,
        libc::EFAULT,
        libc::EIO,
        libc::EBADMSG,
    ]
    .contains(&e)
}

fn pick(sel: u8, good: u64, b: &[u8]) -> u64 {
    match sel % 5 {
        0 | 1 => good,
        2 => 0,
        3 => good + 1, // unreadable (odd)
        _ => 0x10_0000 + u64::from(b.first().copied().unwrap_or(0)) * 2, // readable filler
    }
}

fn request_of(sel: u8, b: &[u8]) -> u64 {
    match sel % 4 {
        3 => {
            let mut a = [0u8; 8];
            let n = b.len().min(8);
            a[..n].copy_from_slice(&b[..n]);
            u64::from_le_bytes(a)
        }
        i => KNOWN[i as usize],
    }
}

/// A guest ioctl frame planned from fuzzed client memory.
fn well_formed(b: &[u8]) -> (u64, Vec<u8>) {
    let g = |i: usize| b.get(i).copied().unwrap_or(0);
    let request = request_of(g(0), b.get(9..).unwrap_or(&[]));
    let body = b.get(9..).unwrap_or(&[]);
    let mut arg = vec![0u8; 32];
    arg[0] = g(1);
    arg[8..16].copy_from_slice(&pick(g(2), REQ, body).to_le_bytes());
    arg[16..24].copy_from_slice(&pick(g(3), RESP, body).to_le_bytes());
    arg[24..32].copy_from_slice(&u64::from(g(4)).to_le_bytes());
    let mut req: Vec<u8> = body
        .iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(112)
        .collect();
    req[96..104].copy_from_slice(&pick(g(4), CERTS, body).to_le_bytes());
    let len = match g(5) % 5 {
        0 => 0,
        1 => 4096,
        2 => 8192,
        3 => 16384,
        _ => u32::from_le_bytes([g(5), g(6), g(7), g(8)]),
    };
    req[104..108].copy_from_slice(&len.to_le_bytes());
    let mem = [(ARG, arg), (REQ, req)];
    let mut read = |_: usize, a: u64, l: u32| -> Option<Vec<u8>> {
        if l > 64 * 1024 {
            return None;
        }
        match mem.iter().find(|(x, _)| *x == a) {
            Some((_, v)) => Some(
                v.iter()
                    .copied()
                    .chain(std::iter::repeat(0))
                    .take(l as usize)
                    .collect(),
            ),
            None if a % 2 == 0 => Some(vec![0x41; l as usize]),
            None => None,
        }
    };
    let r = plan(Device::SevGuest, request, ARG, &mut read);
    let f = Request::Ioctl {
        request,
        arg: ARG,
        regions: r.into_iter().map(|x| (x.addr, x.bytes)).collect(),
    }
    .encode();
    (request, f)
}

fn server_step(e: &Env, conn: &mut Conn, body: &[u8]) {
    let payload = if body.first() == Some(&0xFF) {
        well_formed(&body[1..]).1
    } else {
        body.to_vec()
    };
    let req = Request::decode(&payload);
    let Ok(answer) = e.server.handle(conn, &payload) else {
        return;
    };
    if let Ok(Request::Ioctl {
        request,
        arg,
        regions,
    }) = req
    {
        let planned =
            replan(Device::SevGuest, request, arg, &regions).expect("handled, so it replans");
        let reply = Reply::decode(&answer).expect("the server's reply decodes");
        for (i, b) in &reply.out {
            let r = &planned[*i as usize];
            assert_eq!(r.dir, Dir::Out, "an input-only region copied back");
            assert_eq!(
                b.len(),
                r.len as usize,
                "a region copied back at another length"
            );
        }
        if reply.errno == 0 {
            assert_eq!(reply.ret, 0);
        } else {
            assert!(
                errno_ok(reply.errno),
                "errno {} from the guest driver",
                reply.errno
            );
        }
    }
}

fn direct_step(e: &Env, body: &[u8]) {
    let g = |i: usize| body.get(i).copied().unwrap_or(0);
    let request = request_of(g(0), body.get(5..).unwrap_or(&[]));
    let fill = body.get(5..).unwrap_or(&[]);
    let buf = |n: usize| -> Vec<u8> {
        fill.iter()
            .copied()
            .cycle()
            .chain(std::iter::repeat(0))
            .take(n)
            .collect()
    };
    let mut arg = buf(usize::from(g(1)) % 40);
    if let Some(v) = arg.first_mut() {
        *v = g(2) % 3; // msg_version 0 (EINVAL), 1 or 2
    }
    let size = |s: u8| -> Option<usize> {
        match s % 8 {
            0 => None,
            1 => Some(0),
            2 => Some(32),
            3 => Some(96),
            4 => Some(112),
            5 => Some(4000),
            6 => Some(4096),
            _ => Some(usize::from(s)),
        }
    };
    let mut req = size(g(2) >> 2).map(buf);
    let mut resp = size(g(3)).map(buf);
    let mut certs = size(g(4)).map(|n| buf(n * 3));
    let d = Arc::clone(&e.current.0.lock().unwrap());
    match d.ioctl(
        request,
        &mut arg,
        req.as_deref_mut(),
        resp.as_deref_mut(),
        certs.as_deref_mut(),
    ) {
        Ok(v) => assert_eq!(v, 0),
        Err(x) => assert!(errno_ok(x), "errno {x} from the guest driver"),
    }
}

fn codec_step(e: &Env, body: &[u8]) {
    if let Ok(r) = ChanRequest::decode(body) {
        assert_eq!(
            r.encode(),
            body,
            "a channel request re-encodes to other bytes"
        );
    }
    let _ = handle_channel(e.backend.as_ref(), body);
    for cp in [None, Some(0), Some(1), Some(2)] {
        if let Ok(a) = GuestAnswer::decode(body, cp) {
            assert_eq!(
                a.encode(),
                body,
                "a channel answer re-encodes to other bytes"
            );
        }
    }
    let _ = decode_secrets(body);
}

/// A fresh driver's derived-key request must succeed.
fn healthy(e: &Env) {
    let d = driver(&e.backend);
    let mut arg = vec![0u8; 32];
    arg[0] = 1;
    arg[8..16].copy_from_slice(&REQ.to_le_bytes());
    arg[16..24].copy_from_slice(&RESP.to_le_bytes());
    let mut req = vec![0u8; 32];
    let mut resp = vec![0xEEu8; 64];
    let r = d.ioctl(
        SNP_GET_DERIVED_KEY,
        &mut arg,
        Some(&mut req),
        Some(&mut resp),
        None,
    );
    assert_eq!(
        r,
        Ok(0),
        "a well-formed SNP_GET_DERIVED_KEY after the input"
    );
    assert_eq!(
        &resp[..4],
        &[0, 0, 0, 0],
        "MSG_KEY_RSP status after the input"
    );
    assert_eq!(&arg[24..32], &[0u8; 8], "exitinfo2 after the input");
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    *e.current.0.lock().unwrap() = driver(&e.backend);
    let mut conn = Conn::new();
    let open = Request::Open {
        device: Device::SevGuest,
        flags: libc::O_RDWR,
    }
    .encode();
    e.server
        .handle(&mut conn, &open)
        .expect("open /dev/sev-guest");
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0] % 3;
        let n = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let body = &rest[3..3 + n];
        rest = &rest[3 + n..];
        match kind {
            0 => server_step(e, &mut conn, body),
            1 => direct_step(e, body),
            _ => codec_step(e, body),
        }
    }
    healthy(e);
});
