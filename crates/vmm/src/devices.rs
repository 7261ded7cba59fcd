//! The minimal device model: a 16550 UART on COM1 (vm-superio), the i8042 reset line and an
//! exit port. Anything else a guest touches is logged (rate-limited) and ignored: reads of
//! unhandled ports and MMIO return all-ones, writes are dropped. Devices never stop the VM by
//! themselves; they return an [`IoAction`] for the vCPU loop. A failed write of COM1 output
//! (a full disk, a closed stdout) is [`IoAction::OutputFailed`]: the VM stops with
//! [`DeviceError::SerialOutput`] rather than losing the console silently (docs/OPERATOR.md).

use crate::layout;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

/// Errors of the device model.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The serial output file cannot be created or opened (a FIFO without a reader, a link
    /// to a file, a directory...); the message names the file.
    #[error(transparent)]
    SerialFile(sevm_files::FileError),
    /// Writing COM1 output failed; the VM was stopped.
    #[error(
        "COM1 serial output to {target} failed: {source}; the VM was stopped so that the \
         console is not lost silently"
    )]
    SerialOutput {
        /// Where the output went (`stdout`, `file PATH`).
        target: String,
        /// The write or flush error.
        source: io::Error,
    },
}

/// Where COM1 output goes.
#[derive(Debug, Clone, Default)]
pub enum SerialOut {
    /// The process's standard output.
    #[default]
    Stdout,
    /// A file: created (mode 0666 less the umask), or truncated if it is a regular file; a
    /// FIFO (with a reader) or a character device is written as it is. Opened through
    /// `sevm_files::create_output`, so a FIFO without a reader is an error, not a hang.
    File(PathBuf),
    /// An in-memory buffer (tests, the monitor).
    Buffer(Arc<Mutex<Vec<u8>>>),
    /// Discarded.
    Sink,
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("serial buffer lock poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SerialOut {
    /// Where the output goes, for messages.
    fn target(&self) -> String {
        match self {
            SerialOut::Stdout => "stdout".into(),
            SerialOut::File(p) => format!("file {}", p.display()),
            SerialOut::Buffer(_) => "a buffer".into(),
            SerialOut::Sink => "nowhere".into(),
        }
    }

    fn writer(&self) -> Result<Box<dyn Write + Send>, DeviceError> {
        Ok(match self {
            SerialOut::Stdout => Box::new(io::stdout()),
            SerialOut::File(p) => Box::new(
                sevm_files::create_output(p, "serial output file", sevm_files::MODE_PUBLIC)
                    .map_err(DeviceError::SerialFile)?
                    .into_file(),
            ),
            SerialOut::Buffer(b) => Box::new(BufferWriter(b.clone())),
            SerialOut::Sink => Box::new(io::sink()),
        })
    }
}

/// The UART interrupt line is not wired: bundled guests poll, and Linux falls back to polling.
struct NoIrq;

impl Trigger for NoIrq {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        Ok(())
    }
}

/// What the vCPU loop must do after a port access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    /// Keep running.
    Continue,
    /// The guest wrote `v` to the exit port.
    Exit(u8),
    /// The guest pulsed the i8042 reset line.
    Reset,
    /// Writing COM1 output failed ([`Devices::take_output_error`] says why): stop the VM.
    OutputFailed,
}

/// Rate limiter for log lines about unhandled accesses: the first 16, then every 1024th.
#[derive(Debug, Default)]
pub struct RateLimit(AtomicU64);

impl RateLimit {
    /// Counts one event; returns true if it should be logged.
    pub fn tick(&self) -> bool {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        n < 16 || n.is_multiple_of(1024)
    }
    /// Number of events so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// All port-I/O devices of one VM.
pub struct Devices {
    serial: Serial<NoIrq, NoEvents, Box<dyn Write + Send>>,
    serial_target: String,
    /// The first failed write of COM1 output, until taken.
    output_error: Option<io::Error>,
    /// A write failed: output is no longer attempted.
    output_failed: bool,
    unhandled: RateLimit,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("unhandled", &self.unhandled)
            .finish()
    }
}

impl Devices {
    /// Creates the devices with COM1 writing to `out`.
    pub fn new(out: &SerialOut) -> Result<Self, DeviceError> {
        Ok(Devices {
            serial: Serial::new(NoIrq, out.writer()?),
            serial_target: out.target(),
            output_error: None,
            output_failed: false,
            unhandled: RateLimit::default(),
        })
    }

    /// Number of unhandled accesses seen.
    pub fn unhandled_count(&self) -> u64 {
        self.unhandled.count()
    }

    /// The failure behind [`IoAction::OutputFailed`] (once; `None` if there was none).
    pub fn take_output_error(&mut self) -> Option<DeviceError> {
        self.output_error
            .take()
            .map(|source| DeviceError::SerialOutput {
                target: self.serial_target.clone(),
                source,
            })
    }

    fn serial_out(&mut self, offset: u8, v: u8) -> IoAction {
        if self.output_failed {
            // The VM is stopping; nothing more is written (or reported) after a failure.
            return IoAction::OutputFailed;
        }
        let r = match self.serial.write(offset, v) {
            Err(vm_superio::serial::Error::IOError(e)) => Err(e),
            Err(e) => Err(io::Error::other(e.to_string())),
            Ok(()) => self.serial.writer_mut().flush(),
        };
        match r {
            Ok(()) => IoAction::Continue,
            Err(e) => {
                self.output_failed = true;
                self.output_error = Some(e);
                IoAction::OutputFailed
            }
        }
    }

    /// Handles `out` to `port`.
    pub fn io_out(&mut self, port: u16, data: &[u8]) -> IoAction {
        let v = data.first().copied().unwrap_or(0);
        match port {
            p if (layout::COM1_PORT..layout::COM1_PORT + 8).contains(&p) => {
                self.serial_out((p - layout::COM1_PORT) as u8, v)
            }
            layout::EXIT_PORT => IoAction::Exit(v),
            layout::I8042_CMD_PORT if v == 0xfe => IoAction::Reset,
            layout::I8042_CMD_PORT | layout::I8042_DATA_PORT | 0x80 => IoAction::Continue,
            _ => {
                if self.unhandled.tick() {
                    tracing::debug!(port, ?data, "unhandled port write");
                }
                IoAction::Continue
            }
        }
    }

    /// Handles `in` from `port`, filling `data`.
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) {
        match port {
            p if (layout::COM1_PORT..layout::COM1_PORT + 8).contains(&p) => {
                let v = self.serial.read((p - layout::COM1_PORT) as u8);
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = v;
                }
            }
            // i8042: no data, input buffer empty.
            layout::I8042_CMD_PORT | layout::I8042_DATA_PORT => data.fill(0),
            _ => {
                if self.unhandled.tick() {
                    tracing::debug!(port, len = data.len(), "unhandled port read");
                }
                data.fill(0xff);
            }
        }
    }

    /// Logs an unhandled MMIO access; reads return all-ones.
    pub fn mmio(&self, addr: u64, read: Option<&mut [u8]>) {
        let logged = self.unhandled.tick();
        match read {
            Some(d) => {
                d.fill(0xff);
                if logged {
                    tracing::debug!(addr, "unhandled MMIO read");
                }
            }
            None if logged => tracing::debug!(addr, "unhandled MMIO write"),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_exit_and_reset() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut d = Devices::new(&SerialOut::Buffer(buf.clone())).unwrap();
        for b in b"hi\n" {
            assert_eq!(d.io_out(0x3f8, &[*b]), IoAction::Continue);
        }
        assert_eq!(&*buf.lock().unwrap(), b"hi\n");
        // LSR: transmitter empty.
        let mut lsr = [0u8];
        d.io_in(0x3fd, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60);
        assert_eq!(d.io_out(0xf4, &[7]), IoAction::Exit(7));
        assert_eq!(d.io_out(0x64, &[0xfe]), IoAction::Reset);
        assert_eq!(d.io_out(0x64, &[0xd1]), IoAction::Continue);
        assert_eq!(d.io_out(0x1234, &[1]), IoAction::Continue);
        let mut x = [0u8; 4];
        d.io_in(0x1234, &mut x);
        assert_eq!(x, [0xff; 4]);
        d.mmio(0xfee0_0000, Some(&mut x));
        d.mmio(0xfee0_0000, None);
        assert_eq!(d.unhandled_count(), 4);
    }

    #[test]
    fn rate_limit() {
        let r = RateLimit::default();
        let logged = (0..3000).filter(|_| r.tick()).count();
        assert_eq!(logged, 16 + 2); // 0..16, then 1024 and 2048
    }

    #[test]
    fn finding16_serial_output_failure_is_reported_once_and_stops() {
        let full = std::path::Path::new("/dev/full");
        if !full.exists() {
            assert!(std::env::var_os("CI").is_none(), "CI: /dev/full is needed");
            eprintln!("SKIP: no /dev/full");
            return;
        }
        let mut d = Devices::new(&SerialOut::File(full.into())).unwrap();
        assert_eq!(d.io_out(0x3f8, b"h"), IoAction::OutputFailed);
        // Later writes are not attempted; the failure is reported once.
        assert_eq!(d.io_out(0x3f8, b"i"), IoAction::OutputFailed);
        let e = d.take_output_error().expect("the failure").to_string();
        assert!(
            e.contains("file /dev/full") && e.contains("No space left") && e.contains("stopped"),
            "{e}"
        );
        assert!(d.take_output_error().is_none());
        // Other ports still work (the exit port).
        assert_eq!(d.io_out(0xf4, &[3]), IoAction::Exit(3));
    }

    #[test]
    fn serial_file_error_names_path() {
        let e = Devices::new(&SerialOut::File("/nonexistent/dir/x".into())).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/x"));
    }
}
