//! How a `sevm run` ends when the guest does not end it: SIGTERM/SIGINT/SIGHUP, `--timeout`
//! while waiting for the owner's line on stdin (`--paused` without `--qmp`), or a refused
//! owner line. docs/OPERATOR.md ("Signals and timeouts") and docs/RELIABILITY.md.
//!
//! Every way out goes through [`Lifecycle::stop`]: it records why (the first reason wins) and
//! asks the VM to quit ([`VmControl::quit`]); the VM's run loop then kicks its vCPU threads
//! out of KVM_RUN and `Vm::run` returns, so the normal clean-up runs: the QMP `SHUTDOWN`
//! event, the socket file removed, the SEV context decommissioned (which removes the soft
//! platform's `sev-guests.d/*.count` file).
//!
//! The signal handler itself is signal-hook's: it only writes to a self-pipe (async-signal
//! safe); a thread reading that pipe calls [`Lifecycle::stop`].

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vmm::VmControl;

/// Why sevm stopped a VM that had not stopped by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM, SIGINT or SIGHUP.
    Signal(i32),
    /// `--timeout` elapsed while waiting for the owner's line of launch `launch`.
    OwnerTimeout {
        /// 1-based launch number.
        launch: u32,
    },
    /// The owner's line could not be used at all (too long, unreadable stdin).
    OwnerError(String),
}

#[derive(Default)]
struct Inner {
    reason: Option<StopReason>,
    control: Option<VmControl>,
    done: bool,
}

/// Shared between `run`, the signal thread and the stdin owner thread.
#[derive(Default)]
pub struct Lifecycle {
    inner: Mutex<Inner>,
}

impl Lifecycle {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `reason` (unless one is recorded already) and asks the VM, if attached, to
    /// quit. The quit request is queued before the lock is released, so whoever sees
    /// [`Lifecycle::stopping`] may release a paused launch without the vCPUs running.
    /// Returns true if `reason` is the one recorded.
    pub fn stop(&self, reason: StopReason) -> bool {
        let mut g = self.lock();
        if g.reason.is_some() {
            return false;
        }
        g.reason = Some(reason);
        if let Some(c) = &g.control {
            c.quit();
        }
        true
    }

    /// The VM is built: a stop asked for earlier (e.g. a signal while the platform was
    /// opened) takes effect now.
    pub fn attach(&self, control: VmControl) {
        let mut g = self.lock();
        if g.reason.is_some() {
            control.quit();
        }
        g.control = Some(control);
    }

    /// True once a stop was asked for (the quit is queued) or the run has ended.
    pub fn stopping(&self) -> bool {
        let g = self.lock();
        g.reason.is_some() || g.done
    }

    /// `Vm::run` has returned: helper threads end.
    pub fn finish(&self) {
        self.lock().done = true;
    }

    /// The recorded reason.
    pub fn reason(&self) -> Option<StopReason> {
        self.lock().reason.clone()
    }
}

/// The name of a signal sevm handles.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// SIGTERM, SIGINT and SIGHUP handling for the duration of a run. The first signal stops the
/// VM cleanly; a second one (while stopping) gets the default action, ending the process at
/// once. Dropping it restores nothing (the process is ending) but stops its thread.
pub struct SignalWatch {
    handle: signal_hook::iterator::Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalWatch {
    /// Installs the handlers; signals then go to [`Lifecycle::stop`].
    pub fn install(life: Arc<Lifecycle>) -> Result<SignalWatch> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .context("installing the SIGTERM/SIGINT/SIGHUP handlers")?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if life.stop(StopReason::Signal(sig)) {
                        // As QEMU: "terminating on signal 15".
                        eprintln!("sevm: terminating on signal {sig} ({})", signal_name(sig));
                    } else if !life.lock().done {
                        eprintln!("sevm: {} while stopping: ending at once", signal_name(sig));
                        let _ = signal_hook::low_level::emulate_default_handler(sig);
                    }
                }
            })
            .context("starting the signal thread")?;
        Ok(SignalWatch {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `now + d`, or `None` (no deadline) when that is beyond what the clock can represent, as for
/// `--timeout 18446744073709551615`.
pub fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// How long [`LineReader::read_line`] and the owner thread wait before looking at the
/// lifecycle again.
pub const POLL_SLICE: Duration = Duration::from_millis(100);

/// What [`LineReader::read_line`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// A line, without its end (`\n` or `\r\n`).
    Line(Vec<u8>),
    /// End of input with nothing pending.
    Eof,
    /// The deadline passed first.
    TimedOut,
    /// The lifecycle is stopping.
    Stopped,
    /// More than the limit arrived without a line end; nothing more is read.
    TooLong,
}

/// A line reader over a file descriptor that waits with `poll(2)`, so that a deadline and a
/// stop request are seen while no input comes, and that never holds more than `max + 1`
/// bytes, whatever is written to it.
pub struct LineReader {
    file: std::fs::File,
    max: usize,
    pending: Vec<u8>,
    eof: bool,
}

impl LineReader {
    /// A reader of stdin (a duplicate of fd 0) for lines of at most `max` bytes.
    pub fn stdin(max: usize) -> std::io::Result<LineReader> {
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        Ok(Self::new(std::fs::File::from(fd), max))
    }

    /// A reader of `file` for lines of at most `max` bytes.
    pub fn new(file: std::fs::File, max: usize) -> LineReader {
        LineReader {
            file,
            max,
            pending: Vec::new(),
            eof: false,
        }
    }

    /// Waits for the next line until `deadline` (none: no limit) or until `life` stops.
    pub fn read_line(
        &mut self,
        deadline: Option<Instant>,
        life: &Lifecycle,
    ) -> std::io::Result<LineEvent> {
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max {
                    return Ok(LineEvent::TooLong);
                }
                return Ok(LineEvent::Line(line));
            }
            if self.pending.len() > self.max {
                return Ok(LineEvent::TooLong);
            }
            if self.eof {
                return Ok(if self.pending.is_empty() {
                    LineEvent::Eof
                } else {
                    LineEvent::Line(std::mem::take(&mut self.pending))
                });
            }
            if life.stopping() {
                return Ok(LineEvent::Stopped);
            }
            let mut wait = POLL_SLICE;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(LineEvent::TimedOut);
                }
                wait = wait.min(left);
            }
            if !self.readable(wait)? {
                continue;
            }
            // Never more than one byte past the limit is held.
            let room = self.max + 1 - self.pending.len();
            let mut buf = vec![0u8; room.min(64 << 10)];
            match self.file.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the descriptor has input (or EOF/error) within `wait`.
    fn readable(&self, wait: Duration) -> std::io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is one valid, initialised pollfd that outlives the call, and the
        // count passed is 1; poll(2) only writes its `revents`.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        // POLLHUP/POLLERR: the read reports EOF or the error.
        Ok(r > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A connected pair: the reader's side as a `File`, and the writer's.
    fn pipe() -> (std::fs::File, std::os::unix::net::UnixStream) {
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        (std::fs::File::from(std::os::fd::OwnedFd::from(r)), w)
    }

    #[test]
    fn finding10_lines_are_split_and_bounded() {
        let life = Lifecycle::default();
        let (r, mut w) = pipe();
        w.write_all(b"a b\r\nc d\n").unwrap();
        let mut lr = LineReader::new(r, 8);
        assert_eq!(
            lr.read_line(None, &life).unwrap(),
            LineEvent::Line(b"a b".to_vec())
        );
        assert_eq!(
            lr.read_line(None, &life).unwrap(),
            LineEvent::Line(b"c d".to_vec())
        );
        // A line longer than the limit: refused after reading at most max + 1 bytes.
        w.write_all(&[b'x'; 1000]).unwrap();
        assert_eq!(lr.read_line(None, &life).unwrap(), LineEvent::TooLong);
        assert!(lr.pending.len() <= 9, "{} bytes held", lr.pending.len());
        drop(w);
    }

    #[test]
    fn finding10_the_wait_is_bounded_by_the_deadline_and_by_a_stop() {
        let life = Lifecycle::default();
        let (r, w) = pipe();
        let mut lr = LineReader::new(r, 64);
        let t = Instant::now();
        let d = deadline_after(Duration::from_millis(300));
        assert_eq!(lr.read_line(d, &life).unwrap(), LineEvent::TimedOut);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5));
        life.stop(StopReason::Signal(libc::SIGTERM));
        assert_eq!(lr.read_line(None, &life).unwrap(), LineEvent::Stopped);
        drop(w);
        // EOF (the writer closed) with nothing pending.
        let life = Lifecycle::default();
        assert_eq!(lr.read_line(None, &life).unwrap(), LineEvent::Eof);
    }

    #[test]
    fn finding7_deadlines_beyond_the_clock_are_none() {
        assert!(deadline_after(Duration::from_secs(u64::MAX)).is_none());
        assert!(deadline_after(Duration::from_secs(5)).is_some());
    }

    #[test]
    fn finding8_the_first_reason_wins() {
        let life = Lifecycle::default();
        assert!(!life.stopping());
        assert!(life.stop(StopReason::Signal(libc::SIGHUP)));
        assert!(!life.stop(StopReason::OwnerTimeout { launch: 1 }));
        assert_eq!(life.reason(), Some(StopReason::Signal(libc::SIGHUP)));
        assert!(life.stopping());
    }
}
