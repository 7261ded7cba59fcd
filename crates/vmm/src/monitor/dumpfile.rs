//! The output file of `pmemsave`/`memsave` (docs/QMP.md, "Output files").
//!
//! Rules, in order:
//! - The caller validates everything it can (NODBG, register state, address range) before
//!   [`DumpFile::open`] is called, so a refused dump never touches the path.
//! - The path is opened `O_WRONLY|O_CREAT|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC`, mode 0600, without
//!   `O_TRUNC`: a symbolic link is refused, a FIFO without a reader is refused at once
//!   (`ENXIO`) instead of blocking the monitor.
//! - A regular file must belong to sevm's effective uid and have one link (else refused,
//!   untouched); if its mode
//!   is not 0600 it is `fchmod`ed to 0600, then truncated, and only then is guest memory
//!   written into it. FIFOs and devices are written as they are (no chmod, no truncation).
//! - Writes to a FIFO or device that stops taking data give up after [`WRITE_STALL`] with no
//!   progress.
//! - Nothing is ever unlinked: on an error after opening, what was written stays (as QEMU).

use super::MonitorError;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

/// A write to a FIFO or device that makes no progress for this long fails the dump.
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// An open dump target.
#[derive(Debug)]
pub struct DumpFile {
    file: File,
}

fn open_err(name: &str, why: impl std::fmt::Display) -> MonitorError {
    MonitorError::generic(format!("Could not open '{name}': {why}"))
}

impl DumpFile {
    /// Opens (creating 0600 if needed) `name` for a dump, following the module's rules.
    pub fn open(name: &str) -> Result<Self, MonitorError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(name)
            .map_err(|e| {
                let ft = std::fs::symlink_metadata(name).ok().map(|m| m.file_type());
                match (e.raw_os_error(), ft) {
                    (Some(libc::ELOOP), Some(t)) if t.is_symlink() => open_err(
                        name,
                        "it is a symbolic link (dump files are never opened through one)",
                    ),
                    (Some(libc::ENXIO), Some(t)) if t.is_fifo() => open_err(
                        name,
                        "it is a FIFO that no process has open for reading (start the reader \
                         first)",
                    ),
                    (Some(libc::ENXIO), Some(t)) if t.is_socket() => {
                        open_err(name, "it is a socket")
                    }
                    _ => open_err(name, e),
                }
            })?;
        let md = file.metadata().map_err(|e| open_err(name, e))?;
        if md.file_type().is_file() {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let euid = unsafe { libc::geteuid() };
            if md.uid() != euid {
                return Err(MonitorError::generic(format!(
                    "refusing to write guest memory into '{name}': the file belongs to uid {} \
                     and sevm runs as uid {euid} (its owner could read the dump); remove it or \
                     choose another file",
                    md.uid()
                )));
            }
            if md.nlink() > 1 {
                return Err(MonitorError::generic(format!(
                    "refusing to write guest memory into '{name}': the file has {} hard links \
                     (the dump would also appear under the other names)",
                    md.nlink()
                )));
            }
            if md.mode() & 0o7777 != 0o600 {
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| {
                        MonitorError::generic(format!(
                            "Could not restrict '{name}' to mode 0600 (it is {:04o}): {e}",
                            md.mode() & 0o7777
                        ))
                    })?;
            }
            file.set_len(0)
                .map_err(|e| MonitorError::generic(format!("Could not truncate '{name}': {e}")))?;
        }
        Ok(Self { file })
    }

    /// Writes all of `buf`; on a FIFO or device that does not take data, waits at most
    /// [`WRITE_STALL`] for progress.
    pub fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.file.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable()?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn wait_writable(&self) -> io::Result<()> {
        let end = Instant::now() + WRITE_STALL;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no progress for {} s: nothing reads from it",
                        WRITE_STALL.as_secs()
                    ),
                ));
            }
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `pfd` is one valid pollfd for a descriptor `self.file` keeps open, and
            // the count passed is 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc > 0 {
                // Writable, or an error/hang-up that the next write reports (EPIPE).
                return Ok(());
            }
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}
