//! The QMP Unix-socket server: one listener thread, one thread per client (plus one event
//! writer per negotiated client), at most [`MAX_CLIENTS`] clients.
//!
//! A client that stalls (does not read) only blocks its own threads: writes time out after
//! [`WRITE_TIMEOUT`], and its event queue overflowing disconnects it, so the VM (which only
//! ever `try_send`s events) never waits on a client.

use super::dispatch::{Dispatcher, Session};
use super::framer::{Frame, Framer, MAX_MESSAGE_BYTES, MAX_NESTING};
use super::{qemu_msg, EventSink, MonitorBackend};
use serde_json::json;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// Most clients served at once; further connections get an error and are closed.
pub const MAX_CLIENTS: usize = 64;
/// Events queued per client before a slow client is disconnected.
const EVENT_QUEUE: usize = 256;
/// Pause after a failed poll or accept (e.g. EMFILE), so a listener that stays readable does
/// not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// Stack of a client thread: parsing, echoing and answering a request nested [`MAX_NESTING`]
/// levels deep recurses once per level. Measured with `monitor_hardening.rs`
/// (`finding18_nesting_at_1024_levels_is_accepted`, dev build): 1 MiB overflows, 2 MiB is
/// enough; 8 MiB leaves a 4x margin (only touched pages cost memory).
const CLIENT_STACK: usize = 8 << 20;
/// A write to a client blocked this long drops the client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors setting up the QMP socket.
#[derive(Debug, thiserror::Error)]
pub enum QmpServerError {
    /// The path exists and is not a socket.
    #[error("refusing to replace {0}: it exists and is not a socket")]
    NotASocket(PathBuf),
    /// A live server answers on the path (the listening process's pid, when the kernel
    /// tells it).
    #[error("refusing to replace {}: address in use: {}", .0.display(), listener_desc(.1))]
    InUse(PathBuf, Option<i32>),
    /// The path has no file name or parent directory.
    #[error("invalid QMP socket path {0}")]
    BadPath(PathBuf),
    /// An I/O step failed.
    #[error("QMP socket {path}: {what}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `start` called twice.
    #[error("QMP server already started")]
    AlreadyStarted,
}

fn listener_desc(pid: &Option<i32>) -> String {
    match pid {
        Some(p) => format!("process {p} (another sevm?) is listening on it"),
        None => "another process is listening on it".into(),
    }
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> QmpServerError + 'a {
    move |source| QmpServerError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Parse a `--qmp` argument: `unix:PATH` optionally followed by QEMU's socket options
/// `server` / `server=on` and `nowait` / `wait=off` (accepted: sevm's socket is always a
/// listening server that does not wait for a client). `,,` in PATH is a literal comma, as in
/// QEMU's option syntax. Anything else is refused with a message naming the option.
pub fn parse_qmp_spec(arg: &str) -> Result<PathBuf, String> {
    let Some(rest) = arg.strip_prefix("unix:") else {
        return Err(
            "expected unix:PATH[,server=on][,wait=off] (only Unix sockets are \
                    supported)"
                .into(),
        );
    };
    // Split on ',' with ",," an escaped comma.
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' && chars.peek() == Some(&',') {
            chars.next();
            cur.push(',');
        } else if c == ',' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    let path = parts.remove(0);
    if path.is_empty() {
        return Err("the socket path after 'unix:' is empty".into());
    }
    for opt in &parts {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        // QEMU's short forms: `server` = server=on, `nowait` = wait=off.
        let (key, value) = match (key, value) {
            ("server" | "wait", None) => (key, "on"),
            ("noserver", None) => ("server", "off"),
            ("nowait", None) => ("wait", "off"),
            (k, Some(v)) if k == "server" || k == "wait" => (k, v),
            _ if opt.is_empty() => return Err("empty option after ','".into()),
            _ => {
                return Err(format!(
                    "unknown option '{opt}' (sevm accepts server, server=on, nowait, wait=off)"
                ))
            }
        };
        let on = match value {
            "on" | "yes" | "true" | "y" => true,
            "off" | "no" | "false" | "n" => false,
            v => {
                return Err(format!(
                    "invalid value '{v}' for option '{key}' (expected on or off)"
                ))
            }
        };
        match (key, on) {
            ("server", false) => {
                return Err(
                    "server=off (connecting to a client's socket) is not supported: \
                            sevm's QMP socket is always a listening server"
                        .into(),
                )
            }
            ("wait", true) => {
                return Err(
                    "wait=on (waiting for a client before the VM starts) is not \
                            supported: use wait=off (with --paused the VM waits for 'cont')"
                        .into(),
                )
            }
            _ => {}
        }
    }
    Ok(PathBuf::from(path))
}

/// [`parse_qmp_spec`] without the reason.
pub fn parse_qmp_arg(arg: &str) -> Option<PathBuf> {
    parse_qmp_spec(arg).ok()
}

/// The pid of the process listening on the other end of `s` (`SO_PEERCRED`: for a
/// connection to a listening socket, the process that called `listen`).
fn peer_pid(s: &UnixStream) -> Option<i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable ucred and `len` its exact size; the descriptor is a
    // connected Unix socket that `s` keeps open for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid)
}

/// How long [`QmpServer::bind`] waits for another sevm binding a socket in the same directory.
const BIND_LOCK_WAIT: Duration = Duration::from_secs(5);

/// An exclusive `flock` on the socket's directory for the duration of a bind, so that two
/// sevm processes racing for one path are serialised: the loser then finds the winner's live
/// socket and says so, and never removes it as "stale".
struct DirLock(Option<std::fs::File>);

impl DirLock {
    fn acquire(dir: &Path) -> Result<Self, QmpServerError> {
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
        else {
            // An unreadable directory cannot be locked; bind without the lock.
            return Ok(Self(None));
        };
        let end = std::time::Instant::now() + BIND_LOCK_WAIT;
        loop {
            // SAFETY: flock on a descriptor that `f` keeps open; no memory is passed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self(Some(f)));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
                // A filesystem without flock: bind without the lock.
                _ => return Ok(Self(None)),
            }
            if std::time::Instant::now() >= end {
                return Err(QmpServerError::Io {
                    path: dir.to_path_buf(),
                    what: "wait for another process binding a socket in this directory",
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("still locked after {} s", BIND_LOCK_WAIT.as_secs()),
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            // SAFETY: flock on a descriptor `f` keeps open (closing it would unlock too).
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

/// What is at the socket path now; a stale socket is removed.
fn clear_path(path: &Path) -> Result<(), QmpServerError> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(s) => Err(QmpServerError::InUse(path.to_path_buf(), peer_pid(&s))),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale QMP socket");
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        Err(io_err(path, "remove stale socket")(e))
                    }
                    _ => Ok(()),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // Listening but its backlog is full: in use.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(QmpServerError::InUse(path.to_path_buf(), None))
            }
            Err(e) => Err(io_err(
                path,
                "probe the existing socket (cannot tell whether it is in use)",
            )(e)),
        },
        Ok(_) => Err(QmpServerError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "stat")(e)),
    }
}

struct Shared {
    dispatcher: Dispatcher,
    events: EventSink,
    clients: AtomicUsize,
    stopping: AtomicBool,
    /// Written by `shutdown` to wake the accept thread out of poll(2).
    wake: EventFd,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, UnixStream>>,
}

/// A QMP server bound to a Unix socket.
pub struct QmpServer {
    path: PathBuf,
    ino: (u64, u64),
    listener: Option<UnixListener>,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl QmpServer {
    /// Bind `path` (mode 0600) for `backend`. An existing stale socket (nobody listening) is
    /// replaced; any other existing file is refused.
    pub fn bind(
        path: impl AsRef<Path>,
        backend: Arc<dyn MonitorBackend>,
    ) -> Result<Self, QmpServerError> {
        let path = path.as_ref().to_path_buf();
        let parent = match path.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => return Err(QmpServerError::BadPath(path)),
        };
        if path.file_name().is_none() {
            return Err(QmpServerError::BadPath(path));
        }
        let _lock = DirLock::acquire(parent)?;
        let mut attempt = 0;
        let listener = loop {
            clear_path(&path)?;
            match Self::link_new(parent, &path) {
                Err(QmpServerError::NotASocket(_)) if attempt < 3 => {
                    // Something appeared at the path meanwhile (a process not taking the
                    // lock): look at it again, so the error says what it is.
                    attempt += 1;
                }
                r => break r?,
            }
        };
        let md = std::fs::symlink_metadata(&path).map_err(io_err(&path, "stat"))?;
        let wake = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(io_err(&path, "create the shutdown eventfd of"))?;
        tracing::info!(path = %path.display(), "QMP listening");
        Ok(Self {
            ino: (md.dev(), md.ino()),
            path,
            listener: Some(listener),
            shared: Arc::new(Shared {
                dispatcher: Dispatcher::new(backend),
                events: EventSink::new(),
                clients: AtomicUsize::new(0),
                stopping: AtomicBool::new(false),
                wake,
                next_conn: AtomicU64::new(0),
                conns: Mutex::new(HashMap::new()),
            }),
            accept_thread: None,
        })
    }

    /// Binds a fresh socket in a private directory beside `path` and hard-links it into
    /// place; `NotASocket` if something exists at `path` by then.
    fn link_new(parent: &Path, path: &Path) -> Result<UnixListener, QmpServerError> {
        // Bind inside a private 0700 directory, set 0600, then hard-link into place: no
        // moment exists where the socket is reachable with looser permissions, and link()
        // refuses to replace anything created meanwhile.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmpdir = parent.join(format!(
            ".qmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmpdir)
            .map_err(io_err(&tmpdir, "create private directory"))?;
        let tmp = tmpdir.join("s");
        let result = (|| {
            let listener = UnixListener::bind(&tmp).map_err(io_err(&tmp, "bind"))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(&tmp, "chmod 0600"))?;
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    QmpServerError::NotASocket(path.to_path_buf())
                } else {
                    io_err(path, "link into place")(e)
                }
            })?;
            Ok(listener)
        })();
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&tmpdir);
        result
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sink the VM pushes events into.
    pub fn events(&self) -> EventSink {
        self.shared.events.clone()
    }

    /// Clients currently connected.
    pub fn client_count(&self) -> usize {
        self.shared.clients.load(Ordering::SeqCst)
    }

    /// Start accepting clients on a background thread.
    pub fn start(&mut self) -> Result<(), QmpServerError> {
        let listener = self.listener.take().ok_or(QmpServerError::AlreadyStarted)?;
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("qmp-accept".into())
            .spawn(move || accept_loop(listener, shared))
            .map_err(io_err(&self.path, "spawn accept thread"))?;
        self.accept_thread = Some(handle);
        Ok(())
    }

    /// Stop accepting, disconnect every client and remove the socket file (if it is still
    /// ours). Also done on drop.
    pub fn shutdown(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.shared.wake.write(1);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        for (_, s) in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Ok(md) = std::fs::symlink_metadata(&self.path) {
            if (md.dev(), md.ino()) == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for QmpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    // Non-blocking accept after poll(2) on the listener and the shutdown eventfd, so shutdown
    // never depends on being able to connect to the path (which someone may have removed),
    // and an idle server does not wake up.
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!(error = %e, "QMP listener cannot be made non-blocking");
        return;
    }
    while !shared.stopping.load(Ordering::SeqCst) {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structs that outlives the call, and the
        // count passed is its length; poll(2) only writes their `revents`.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                tracing::warn!(error = %io::Error::last_os_error(), "QMP poll failed");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
            continue;
        }
        if fds[1].revents != 0 {
            continue;
        }
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // E.g. EMFILE: the listener stays readable, so back off instead of spinning.
                tracing::warn!(error = %e, "QMP accept failed");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        if shared.clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("QMP client refused: {MAX_CLIENTS} clients already connected");
            let msg = json!({"error": {"class": "GenericError",
                "desc": format!("too many QMP clients (limit {MAX_CLIENTS})")}});
            let _ = stream.write_all(format!("{msg}\r\n").as_bytes());
            continue;
        }
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(c) = stream.try_clone() {
            shared
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, c);
        }
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("qmp-client-{id}"))
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                serve_client(&sh, stream);
                sh.conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                sh.clients.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::warn!("QMP: could not spawn client thread");
            shared
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            shared.clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn write_line(w: &Mutex<UnixStream>, line: &str) -> io::Result<()> {
    let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
    write_line_to(&mut s, line)
}

fn write_line_to(s: &mut UnixStream, line: &str) -> io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 2);
    buf.extend_from_slice(line.as_bytes());
    buf.extend_from_slice(b"\r\n");
    s.write_all(&buf)
}

/// Serve one client until it disconnects, errs, or is cut off.
fn serve_client(shared: &Shared, stream: UnixStream) {
    let Ok(wstream) = stream.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(wstream));
    let mut reader = stream;
    let mut session = Session::new();
    let mut sub: Option<(u64, JoinHandle<()>)> = None;
    let mut framer = Framer::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut frames = Vec::new();
    tracing::debug!("QMP client connected");
    let greeting = shared.dispatcher.greeting().to_string();
    let mut alive = write_line(&writer, &greeting).is_ok();
    while alive {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(&buf[..n], &mut frames);
        for frame in frames.drain(..) {
            if !alive {
                break;
            }
            let text = match frame {
                Frame::Json(t) => t,
                Frame::TooDeep => {
                    // QEMU's json-streamer: an error, the rest of that text is skipped, and
                    // the session goes on.
                    tracing::debug!("QMP input nested deeper than {MAX_NESTING} levels");
                    let msg = json!({"error": {"class": "GenericError",
                        "desc": qemu_msg::JSON_NESTING_LIMIT}});
                    if write_line(&writer, &msg.to_string()).is_err() {
                        alive = false;
                        break;
                    }
                    continue;
                }
                Frame::TooLarge => {
                    let why = format!("message exceeds {MAX_MESSAGE_BYTES} bytes");
                    tracing::warn!("QMP client dropped: {why}");
                    let msg = json!({"error": {"class": "GenericError",
                        "desc": format!("JSON parse error, {why}; closing connection")}});
                    let _ = write_line(&writer, &msg.to_string());
                    alive = false;
                    break;
                }
            };
            let reply = shared.dispatcher.handle_text(&mut session, &text);
            let line = reply.msg.to_string();
            let written = if reply.negotiated_now {
                // Subscribe while holding the writer: no event emitted after the client can
                // see this reply is missed, and none is written before it (qemu.qmp expects
                // the negotiation reply first).
                let mut guard = writer.lock().unwrap_or_else(|p| p.into_inner());
                sub = subscribe_events(shared, &writer, &reader);
                write_line_to(&mut guard, &line)
            } else {
                write_line(&writer, &line)
            };
            if written.is_err() {
                alive = false;
                break;
            }
            if reply.quit {
                if let Err(e) = shared.dispatcher.backend().quit() {
                    tracing::warn!(class = e.class(), "quit failed after reply was sent");
                }
            }
        }
    }
    tracing::debug!("QMP client disconnected");
    let _ = reader.shutdown(std::net::Shutdown::Both);
    if let Some((id, t)) = sub {
        shared.events.unsubscribe(id);
        let _ = t.join();
    }
}

/// Start forwarding events to this client; returns the subscription id and writer thread.
fn subscribe_events(
    shared: &Shared,
    writer: &Arc<Mutex<UnixStream>>,
    stream: &UnixStream,
) -> Option<(u64, JoinHandle<()>)> {
    let killer = stream.try_clone().ok()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<str>>(EVENT_QUEUE);
    let id = shared.events.subscribe(
        tx,
        Box::new(move || {
            let _ = killer.shutdown(std::net::Shutdown::Both);
        }),
    );
    let w = writer.clone();
    let closer = stream.try_clone().ok();
    let t = std::thread::Builder::new()
        .name("qmp-events".into())
        .spawn(move || {
            while let Ok(line) = rx.recv() {
                if write_line(&w, &line).is_err() {
                    // Stalled or gone: cut the client off so its reader ends too.
                    if let Some(c) = &closer {
                        let _ = c.shutdown(std::net::Shutdown::Both);
                    }
                    break;
                }
            }
        });
    match t {
        Ok(t) => Some((id, t)),
        Err(_) => {
            shared.events.unsubscribe(id);
            None
        }
    }
}
