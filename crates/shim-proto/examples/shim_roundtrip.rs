//! The cost `sevm shim` adds to one `/dev/sev` ioctl: PLATFORM_STATUS and PDH_CERT_EXPORT
//! (2084 + 6252 bytes back) issued (a) in process on the loopback model, as
//! `HwPlatform` over the loopback does, and (b) through the shim protocol over a Unix socket
//! to a `Server` thread: plan, process_vm_readv of the buffers, frame, server decode, replan,
//! translation, the same model call, reply, copy-back (what libsevm_shim.so does, minus the
//! dlsym'd libc calls).
//!
//! `cargo run --release -p sevm-shim-proto --features server --example shim_roundtrip [N]`

use sev_firmware::hw::IoctlPort;
use sevm_shim_proto::server::{open_loopback, Server};
use sevm_shim_proto::{frame, frame_len, plan, Device, Dir, Reply, Request, SEV_ISSUE_CMD};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Instant;

fn read_self(addr: u64, len: u32) -> Option<Vec<u8>> {
    // The test's own buffers, read directly (the library uses process_vm_readv).
    let mut v = vec![0u8; len as usize];
    // SAFETY: `addr` is the address of a live buffer of at least `len` bytes in this
    // example (the issue struct or its data struct, built below).
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, v.as_mut_ptr(), len as usize) };
    Some(v)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = dir.path().join("platform");
    std::fs::create_dir(&pdir).expect("mkdir");
    let lb = open_loopback(&pdir, dir.path(), false).expect("loopback");
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(lb.sev_path())
        .expect("open sev");
    let server = Arc::new(Server::new(lb, None));
    let sock = dir.path().join("s.sock");
    let l = UnixListener::bind(&sock).expect("bind");
    let s2 = Arc::clone(&server);
    std::thread::spawn(move || s2.serve(l));
    let mut c = UnixStream::connect(&sock).expect("connect");
    let open = Request::Open {
        device: Device::Sev,
        flags: libc::O_RDWR,
    }
    .encode();
    c.write_all(&frame(&open)).expect("send");
    let mut a = [0u8; 8];
    c.read_exact(&mut a).expect("open answer");

    for (name, cmd, data_len) in [
        ("PLATFORM_STATUS", 1u32, 12usize),
        ("PDH_CERT_EXPORT", 5, 24),
    ] {
        let mut pdh = vec![0u8; 2084];
        let mut chain = vec![0u8; 3 * 2084];
        let mut data = vec![0u8; data_len];
        if cmd == 5 {
            data[0..8].copy_from_slice(&(pdh.as_mut_ptr() as u64).to_le_bytes());
            data[8..12].copy_from_slice(&2084u32.to_le_bytes());
            data[12..20].copy_from_slice(&(chain.as_mut_ptr() as u64).to_le_bytes());
            data[20..24].copy_from_slice(&(3 * 2084u32).to_le_bytes());
        }
        let mut issue = [0u8; 16];
        issue[0..4].copy_from_slice(&cmd.to_le_bytes());
        issue[4..12].copy_from_slice(&(data.as_mut_ptr() as u64).to_le_bytes());
        let arg = issue.as_mut_ptr() as u64;

        let mut inproc = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            // SAFETY: `arg` is a live sev_issue_cmd whose data (and, for PDH_CERT_EXPORT,
            // buffers) are live for the call with the lengths stated.
            let r = unsafe {
                server.loopback().ioctl(
                    dev.as_raw_fd(),
                    SEV_ISSUE_CMD,
                    arg as *mut std::ffi::c_void,
                )
            };
            inproc.push(t.elapsed().as_secs_f64() * 1e6);
            r.expect("in-process ioctl");
        }
        let mut shim = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let regions = plan(Device::Sev, SEV_ISSUE_CMD, arg, &mut |_, a, l| {
                read_self(a, l)
            });
            let req = Request::Ioctl {
                request: SEV_ISSUE_CMD,
                arg,
                regions: regions.iter().map(|r| (r.addr, r.bytes.clone())).collect(),
            };
            c.write_all(&frame(&req.encode())).expect("send");
            let mut len = [0u8; 4];
            c.read_exact(&mut len).expect("reply length");
            let mut b = vec![0u8; frame_len(len).expect("frame")];
            c.read_exact(&mut b).expect("reply");
            let reply = Reply::decode(&b).expect("reply decodes");
            for (i, bytes) in &reply.out {
                let r = &regions[*i as usize];
                assert_eq!(r.dir, Dir::Out);
                // SAFETY: `r.addr` is one of this example's live buffers of `r.len` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), r.addr as *mut u8, bytes.len())
                };
            }
            shim.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(reply.errno, 0, "shim ioctl");
        }
        let (a, b) = (median(inproc), median(shim));
        println!(
            "{name}: n={n} in-process median {a:.1} us, through the shim protocol median {b:.1} us, added {:.1} us",
            b - a
        );
    }
}
