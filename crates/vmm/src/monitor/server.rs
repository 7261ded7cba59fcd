//! The QMP Unix-socket server: one listener thread, one thread per client (plus one event
//! writer per negotiated client), at most [`MAX_CLIENTS`] clients.
//!
//! A client that stalls (does not read) only blocks its own threads: writes time out after
//! [`WRITE_TIMEOUT`], and its event queue overflowing disconnects it, so the VM (which only
//! ever `try_send`s events) never waits on a client.

use super::dispatch::{Dispatcher, Session};
use super::framer::{Frame, Framer, MAX_MESSAGE_BYTES, MAX_NESTING};
use super::{EventSink, MonitorBackend};
use serde_json::json;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most clients served at once; further connections get an error and are closed.
pub const MAX_CLIENTS: usize = 64;
/// Events queued per client before a slow client is disconnected.
const EVENT_QUEUE: usize = 256;
/// How often the listener checks for new clients and for shutdown.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// A write to a client blocked this long drops the client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors setting up the QMP socket.
#[derive(Debug, thiserror::Error)]
pub enum QmpServerError {
    /// The path exists and is not a socket.
    #[error("refusing to replace {0}: it exists and is not a socket")]
    NotASocket(PathBuf),
    /// A live server answers on the path.
    #[error("refusing to replace {0}: another process is listening on it")]
    InUse(PathBuf),
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

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> QmpServerError + 'a {
    move |source| QmpServerError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Parse a `--qmp` argument: `unix:PATH`.
pub fn parse_qmp_arg(arg: &str) -> Option<PathBuf> {
    arg.strip_prefix("unix:")
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(p.split(',').next().unwrap_or(p)))
}

struct Shared {
    dispatcher: Dispatcher,
    events: EventSink,
    clients: AtomicUsize,
    stopping: AtomicBool,
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
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_socket() => match UnixStream::connect(&path) {
                Ok(_) => return Err(QmpServerError::InUse(path)),
                Err(_) => {
                    tracing::info!(path = %path.display(), "removing stale QMP socket");
                    std::fs::remove_file(&path).map_err(io_err(&path, "remove stale socket"))?;
                }
            },
            Ok(_) => return Err(QmpServerError::NotASocket(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "stat")(e)),
        }
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
            std::fs::hard_link(&tmp, &path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    QmpServerError::NotASocket(path.clone())
                } else {
                    io_err(&path, "link into place")(e)
                }
            })?;
            Ok(listener)
        })();
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&tmpdir);
        let listener = result?;
        let md = std::fs::symlink_metadata(&path).map_err(io_err(&path, "stat"))?;
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
                next_conn: AtomicU64::new(0),
                conns: Mutex::new(HashMap::new()),
            }),
            accept_thread: None,
        })
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
    // Non-blocking accept polled every ACCEPT_POLL, so shutdown never depends on being able
    // to connect to the path (which someone may have removed).
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!(error = %e, "QMP listener cannot be made non-blocking");
        return;
    }
    while !shared.stopping.load(Ordering::SeqCst) {
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "QMP accept failed");
                std::thread::sleep(ACCEPT_POLL);
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
                Frame::TooLarge | Frame::TooDeep => {
                    let why = if frame == Frame::TooLarge {
                        format!("message exceeds {MAX_MESSAGE_BYTES} bytes")
                    } else {
                        format!("nesting exceeds {MAX_NESTING} levels")
                    };
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
