//! `libsevm_shim.so`: preloaded (`LD_PRELOAD`) into an unmodified program by `sevm shim`, it
//! turns the program's `open("/dev/sev")` and `open("/dev/sev-guest")` into connections to
//! the server named by `SEVM_SHIM_SOCKET`, and each `ioctl` on them into a round trip that
//! ships the user buffers the command carries (see `sevm_shim_proto::plan`) and copies the
//! kernel-written ones back. The returned fd is the connected Unix socket: a real fd, so
//! `close`, `poll` and `fcntl` work on it. Every other path and fd goes to libc (found with
//! `dlsym(RTLD_NEXT, ...)`). Without `SEVM_SHIM_SOCKET` the library does nothing.
//!
//! Intercepted: `open`, `open64`, `openat`, `openat64` (and glibc's fortified `__open_2`,
//! `__open64_2`, `__openat_2`, `__openat64_2`), `close`, `ioctl`. Only the absolute paths
//! `/dev/sev` and `/dev/sev-guest` are recognised (not `openat(dirfd_of_dev, "sev")`, nor
//! `dup`ed fds, nor `fopen`, which none of sevctl, snphost and snpguest use).
//!
//! The program's memory is read and written with `process_vm_readv`/`process_vm_writev` on
//! its own pid, so a bad pointer in an ioctl argument gives EFAULT, as the kernel's
//! `copy_from_user` does, instead of crashing the program inside the shim. One difference:
//! a buffer the program cannot read fails the command before the firmware runs (the kernel
//! may run the command and fail on the copy-out).
//!
//! ABI: C's `open`, `openat` and `ioctl` are variadic, and stable Rust cannot define
//! variadic functions. These are defined with the optional argument as a fixed one: on
//! x86-64 (System V) a variadic argument travels in the same register as a fixed argument
//! in that position, and it is only used where the C contract says the caller passed it
//! (`mode` with O_CREAT/O_TMPFILE; `ioctl`'s third argument is passed on unchanged). The
//! library is built for x86-64 Linux only.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use libc::{c_char, c_int, c_ulong, c_void, mode_t};
use sevm_shim_proto::{self as proto, Device, Dir, Reply, Request};
use std::ffi::CStr;
use std::sync::{Mutex, OnceLock};

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
type Openat2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;

/// The next definition of `name` after this library (libc's), as an address.
fn next_symbol(name: &'static CStr, cell: &'static OnceLock<usize>) -> usize {
    *cell.get_or_init(|| {
        // SAFETY: `name` is a NUL-terminated symbol name; RTLD_NEXT is a valid pseudo-handle
        // in a shared object. dlsym only reads the name.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
    })
}

macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static CELL: OnceLock<usize> = OnceLock::new();
        let a = next_symbol($name, &CELL);
        if a == 0 {
            None
        } else {
            // SAFETY: `a` is the address dlsym returned for the libc function `$name`, whose
            // C prototype is `$ty`; a non-null data pointer and a function pointer have the
            // same size and representation on x86-64 Linux.
            Some(unsafe { std::mem::transmute::<usize, $ty>(a) })
        }
    }};
}

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid to write.
    unsafe { *libc::__errno_location() = e };
}

/// Our open fds: fd -> (device, the regions of the ioctl in flight are planned per call).
static FDS: Mutex<Vec<(c_int, Device)>> = Mutex::new(Vec::new());

fn fds() -> std::sync::MutexGuard<'static, Vec<(c_int, Device)>> {
    FDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The device `path` names, if the shim is active and serves it.
///
/// # Safety
/// `path` is null or a NUL-terminated string (the `open` contract).
unsafe fn ours(path: *const c_char) -> Option<Device> {
    if path.is_null() {
        return None;
    }
    std::env::var_os(proto::ENV_SOCKET)?;
    // SAFETY: forwarded from this function's contract.
    let p = unsafe { CStr::from_ptr(path) };
    Device::from_path(p.to_bytes())
}

/// Sends all of `b` on `fd` (MSG_NOSIGNAL: a dead server is EPIPE, not SIGPIPE).
fn send_all(fd: c_int, mut b: &[u8]) -> Result<(), c_int> {
    while !b.is_empty() {
        // SAFETY: `b` is a live slice of `b.len()` readable bytes.
        let n = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        b = &b[n as usize..];
    }
    Ok(())
}

fn recv_exact(fd: c_int, b: &mut [u8]) -> Result<(), c_int> {
    let mut got = 0;
    while got < b.len() {
        // SAFETY: `b[got..]` is a live, writable slice of `b.len() - got` bytes.
        let n = unsafe { libc::recv(fd, b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EPIPE);
        }
        got += n as usize;
    }
    Ok(())
}

/// One request/answer exchange on `fd`.
fn round_trip(fd: c_int, req: &Request) -> Result<Vec<u8>, c_int> {
    send_all(fd, &proto::frame(&req.encode()))?;
    let mut len = [0u8; 4];
    recv_exact(fd, &mut len)?;
    let n = proto::frame_len(len).map_err(|_| libc::EIO)?;
    let mut b = vec![0u8; n];
    recv_exact(fd, &mut b)?;
    Ok(b)
}

fn complain(what: &str) {
    eprintln!("sevm-shim: {what}");
}

/// Connects to the server and opens `dev` there; returns the fd or -1 with errno.
fn shim_open(dev: Device, flags: c_int) -> c_int {
    let Some(path) = std::env::var_os(proto::ENV_SOCKET) else {
        set_errno(libc::ENOENT);
        return -1;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= sa.sun_path.len() {
        complain("SEVM_SHIM_SOCKET is longer than a Unix socket path may be");
        set_errno(libc::ENAMETOOLONG);
        return -1;
    }
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
        *d = *s as c_char;
    }
    let cloexec = if flags & libc::O_CLOEXEC != 0 {
        libc::SOCK_CLOEXEC
    } else {
        0
    };
    // SAFETY: socket takes integer arguments only.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | cloexec, 0) };
    if fd < 0 {
        return -1;
    }
    // SAFETY: `sa` is a live sockaddr_un and its size is passed.
    let r = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    let fail = |e: c_int| {
        // SAFETY: `fd` is the socket this function created and still owns.
        unsafe { libc::close(fd) };
        set_errno(e);
        -1
    };
    if r < 0 {
        complain("cannot reach the sevm shim server (SEVM_SHIM_SOCKET)");
        return fail(libc::ENXIO);
    }
    let ans = match round_trip(fd, &Request::Open { device: dev, flags }) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let e = match <[u8; 4]>::try_from(ans.as_slice()) {
        Ok(b) => i32::from_le_bytes(b),
        Err(_) => return fail(libc::EIO),
    };
    if e != 0 {
        return fail(e);
    }
    fds().push((fd, dev));
    fd
}

/// Reads `len` bytes of this process at `addr` (None if not all readable).
fn read_self(addr: u64, len: u32) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len as usize];
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: out.len(),
    };
    // SAFETY: `local` describes `out`, writable for its length; the kernel validates
    // `remote` against our own address space (EFAULT, never a fault).
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == out.len() as isize).then_some(out)
}

/// Writes `data` to this process at `addr`; false if not all writable.
fn write_self(addr: u64, data: &[u8]) -> bool {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` describes `data` (only read); the kernel validates `remote`.
    let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == data.len() as isize
}

/// The VFS's own ioctls, answered before a driver sees the request: passed to the socket.
fn vfs_ioctl(req: c_ulong) -> bool {
    matches!(
        req,
        libc::FIOCLEX | libc::FIONCLEX | libc::FIONBIO | libc::FIOASYNC
    )
}

/// `ioctl(fd, req, arg)` on one of our fds: -1 with errno, or the server's return value.
fn shim_ioctl(fd: c_int, dev: Device, req: c_ulong, arg: u64) -> c_int {
    let regions = proto::plan(dev, req, arg, &mut |_, a, l| read_self(a, l));
    let msg = Request::Ioctl {
        request: req,
        arg,
        regions: regions.iter().map(|r| (r.addr, r.bytes.clone())).collect(),
    };
    let reply = match round_trip(fd, &msg).and_then(|b| Reply::decode(&b).map_err(|_| libc::EIO)) {
        Ok(r) => r,
        Err(e) => {
            complain(&format!(
                "lost the sevm shim server during an ioctl (errno {e}); answering EIO"
            ));
            set_errno(libc::EIO);
            return -1;
        }
    };
    let mut fault = false;
    for (i, b) in &reply.out {
        let Some(r) = regions.get(*i as usize) else {
            set_errno(libc::EIO);
            return -1;
        };
        if r.dir != Dir::Out || r.bytes.is_none() || b.len() != r.len as usize {
            set_errno(libc::EIO);
            return -1;
        }
        if !write_self(r.addr, b) {
            fault = true;
        }
    }
    if fault {
        set_errno(libc::EFAULT);
        return -1;
    }
    if reply.errno != 0 {
        set_errno(reply.errno);
        return -1;
    }
    reply.ret
}

fn open_common(path: *const c_char, flags: c_int) -> Option<c_int> {
    // SAFETY: `path` is what the program passed to open: null or a C string.
    let dev = unsafe { ours(path) }?;
    Some(shim_open(dev, flags))
}

/// `open(2)`.
///
/// # Safety
/// The C contract of `open`: `path` is a C string; `mode` is read only with O_CREAT or
/// O_TMPFILE (when the caller passed it; see the crate docs on variadics).
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    if let Some(r) = open_common(path, flags) {
        return r;
    }
    match real!(c"open", OpenFn) {
        // SAFETY: libc's open with the caller's own arguments.
        Some(f) => unsafe { f(path, flags, mode as libc::c_uint) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// `open64(2)`.
///
/// # Safety
/// As [`open`].
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    if let Some(r) = open_common(path, flags) {
        return r;
    }
    match real!(c"open64", OpenFn) {
        // SAFETY: libc's open64 with the caller's own arguments.
        Some(f) => unsafe { f(path, flags, mode as libc::c_uint) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// `openat(2)`.
///
/// # Safety
/// As [`open`], with `dirfd` an fd or AT_FDCWD.
#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> c_int {
    if let Some(r) = open_common(path, flags) {
        return r;
    }
    match real!(c"openat", OpenatFn) {
        // SAFETY: libc's openat with the caller's own arguments.
        Some(f) => unsafe { f(dirfd, path, flags, mode as libc::c_uint) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// `openat64(2)`.
///
/// # Safety
/// As [`openat`].
#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> c_int {
    if let Some(r) = open_common(path, flags) {
        return r;
    }
    match real!(c"openat64", OpenatFn) {
        // SAFETY: libc's openat64 with the caller's own arguments.
        Some(f) => unsafe { f(dirfd, path, flags, mode as libc::c_uint) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// glibc's `__open_2` (`open` under _FORTIFY_SOURCE, no mode).
///
/// # Safety
/// As [`open`].
#[no_mangle]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    if let Some(r) = open_common(path, flags) {
        return r;
    }
    match real!(c"__open_2", Open2Fn) {
        // SAFETY: glibc's __open_2 with the caller's own arguments.
        Some(f) => unsafe { f(path, flags) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// glibc's `__open64_2`.
///
/// # Safety
/// As [`open`].
#[no_mangle]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    if let Some(r) = open_common(path, flags) {
        return r;
    }
    match real!(c"__open64_2", Open2Fn) {
        // SAFETY: glibc's __open64_2 with the caller's own arguments.
        Some(f) => unsafe { f(path, flags) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// glibc's `__openat_2`.
///
/// # Safety
/// As [`openat`].
#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    if let Some(r) = open_common(path, flags) {
        return r;
    }
    match real!(c"__openat_2", Openat2Fn) {
        // SAFETY: glibc's __openat_2 with the caller's own arguments.
        Some(f) => unsafe { f(dirfd, path, flags) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// glibc's `__openat64_2`.
///
/// # Safety
/// As [`openat`].
#[no_mangle]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    if let Some(r) = open_common(path, flags) {
        return r;
    }
    match real!(c"__openat64_2", Openat2Fn) {
        // SAFETY: glibc's __openat64_2 with the caller's own arguments.
        Some(f) => unsafe { f(dirfd, path, flags) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// `close(2)`: forgets our fd, then closes it (ours are sockets: the server sees EOF).
///
/// # Safety
/// The C contract of `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    fds().retain(|(f, _)| *f != fd);
    match real!(c"close", CloseFn) {
        // SAFETY: libc's close with the caller's fd.
        Some(f) => unsafe { f(fd) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// `ioctl(2)`. C declares it `int ioctl(int, unsigned long, ...)`; every ioctl the kernel
/// has takes at most one further argument, an integer or a pointer, which on x86-64 System V
/// is in the register of this function's third parameter whether passed as variadic or not.
///
/// # Safety
/// The C contract of `ioctl`: `arg` is what `req` expects on `fd`.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    let dev = {
        let t = fds();
        t.iter().find(|(f, _)| *f == fd).map(|(_, d)| *d)
    };
    if let Some(dev) = dev {
        if !vfs_ioctl(req) {
            // One ioctl at a time per process, as the driver's sev_cmd_mutex serialises
            // them: frames of two threads must not interleave on one socket.
            static IOCTL: Mutex<()> = Mutex::new(());
            let _g = IOCTL.lock().unwrap_or_else(|p| p.into_inner());
            return shim_ioctl(fd, dev, req, arg as u64);
        }
    }
    match real!(c"ioctl", IoctlFn) {
        // SAFETY: libc's ioctl with the caller's own arguments.
        Some(f) => unsafe { f(fd, req, arg) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}
