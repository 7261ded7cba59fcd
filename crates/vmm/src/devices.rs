//! The minimal device model: a 16550 UART on COM1 (vm-superio) with its IRQ 4 and input,
//! a CMOS RTC, an i8042 controller (with its reset line) and an exit port. Anything else a guest touches is logged (rate-limited) and ignored: reads of
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
use vmm_sys_util::eventfd::EventFd;

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

/// COM1's interrupt line: an eventfd registered with KVM as an irqfd on GSI 4 (IOAPIC pin 4,
/// PIC IRQ 4) when the VM has the full in-kernel irqchip; each trigger is an edge. Without it
/// (bundled guests, which poll) the line is not wired.
pub struct SerialIrq(Option<EventFd>);

impl Trigger for SerialIrq {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        match &self.0 {
            Some(e) => e.write(1),
            None => Ok(()),
        }
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
    serial: Serial<SerialIrq, NoEvents, Box<dyn Write + Send>>,
    rtc: Rtc,
    i8042: I8042,
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
    /// Creates the devices with COM1 writing to `out` and, if `irq` is given, raising it (an
    /// eventfd the VM registers as an irqfd on GSI [`layout::COM1_IRQ`]).
    pub fn new(out: &SerialOut, irq: Option<EventFd>) -> Result<Self, DeviceError> {
        Ok(Devices {
            serial: Serial::new(SerialIrq(irq), out.writer()?),
            rtc: Rtc::default(),
            i8042: I8042::default(),
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

    /// Queues serial input for the guest (COM1 receive FIFO; data-ready in LSR, the receive
    /// interrupt if enabled). Returns how many bytes fit (the FIFO holds 64).
    pub fn serial_input(&mut self, bytes: &[u8]) -> usize {
        if self.serial.fifo_capacity() == 0 {
            return 0;
        }
        match self.serial.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(e) => {
                // Only the interrupt eventfd can fail here; the bytes were queued.
                tracing::warn!(error = %e, "COM1 receive interrupt not raised");
                bytes.len().min(1)
            }
        }
    }

    /// Handles `out` to `port`. `data` holds every byte of the access: a `rep outsb` exits
    /// once with all of them, and each is one write of the port.
    pub fn io_out(&mut self, port: u16, data: &[u8]) -> IoAction {
        let v = data.first().copied().unwrap_or(0);
        match port {
            // THR (DLAB clear): each byte is sent. A 16- or 32-bit access to the UART is not
            // something a driver does; its bytes are treated the same way.
            layout::COM1_PORT => {
                for b in data {
                    let a = self.serial_out(0, *b);
                    if a != IoAction::Continue {
                        return a;
                    }
                }
                IoAction::Continue
            }
            p if (layout::COM1_PORT..layout::COM1_PORT + 8).contains(&p) => {
                self.serial_out((p - layout::COM1_PORT) as u8, v)
            }
            layout::EXIT_PORT => IoAction::Exit(v),
            layout::I8042_CMD_PORT => {
                if self.i8042.command(v) {
                    IoAction::Reset
                } else {
                    IoAction::Continue
                }
            }
            layout::I8042_DATA_PORT => {
                self.i8042.data(v);
                IoAction::Continue
            }
            RTC_INDEX_PORT => {
                self.rtc.index = v & 0x7f; // bit 7 is the NMI mask
                IoAction::Continue
            }
            RTC_DATA_PORT => {
                self.rtc.write(v);
                IoAction::Continue
            }
            0x80 => IoAction::Continue,
            _ => {
                if self.unhandled.tick() {
                    tracing::debug!(port, ?data, "unhandled port write");
                }
                IoAction::Continue
            }
        }
    }

    /// Handles `in` from `port`, filling `data` (every byte of a `rep insb` is one read).
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) {
        match port {
            layout::COM1_PORT => {
                for b in data.iter_mut() {
                    *b = self.serial.read(0);
                }
            }
            p if (layout::COM1_PORT..layout::COM1_PORT + 8).contains(&p) => {
                let v = self.serial.read((p - layout::COM1_PORT) as u8);
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = v;
                }
            }
            layout::I8042_CMD_PORT => data.fill(self.i8042.status()),
            layout::I8042_DATA_PORT => {
                for b in data.iter_mut() {
                    *b = self.i8042.read_data();
                }
            }
            RTC_INDEX_PORT => data.fill(self.rtc.index),
            RTC_DATA_PORT => {
                let v = self.rtc.read(std::time::SystemTime::now());
                data.fill(v);
            }
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

/// CMOS RTC index port (bit 7 of a written index masks NMIs; ignored).
pub const RTC_INDEX_PORT: u16 = 0x70;
/// CMOS RTC data port.
pub const RTC_DATA_PORT: u16 = 0x71;

/// The MC146818 CMOS RTC as Linux reads it (`mc146818_get_time`): the host's UTC time in BCD,
/// 24-hour mode; status A without "update in progress", status B = 24h | BCD, status C = no
/// interrupt pending, status D = "RAM and time valid". Alarms and the periodic interrupt are
/// not modelled (no IRQ 8); other CMOS bytes are RAM (zero at start), and writes of the time
/// registers are stored there but the time keeps following the host clock.
#[derive(Debug, Clone)]
pub struct Rtc {
    index: u8,
    ram: [u8; 128],
}

impl Default for Rtc {
    fn default() -> Self {
        let mut ram = [0u8; 128];
        ram[0x0a] = 0x26; // 32.768 kHz time base, 1024 Hz rate; UIP clear
        ram[0x0b] = 0x02; // 24-hour, BCD, no interrupts
        ram[0x0d] = 0x80; // VRT: RAM and time valid
        Rtc { index: 0, ram }
    }
}

fn bcd(v: u64) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// Year, month (1-12), day (1-31) of `days` since 1970-01-01 (proleptic Gregorian).
/// Howard Hinnant's `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl Rtc {
    /// The register at the current index, at time `now`.
    pub fn read(&self, now: std::time::SystemTime) -> u8 {
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let days = (secs / 86_400) as i64;
        let tod = secs % 86_400;
        let (y, mo, d) = civil_from_days(days);
        let y = y.max(0) as u64;
        match self.index {
            0x00 => bcd(tod % 60),
            0x02 => bcd(tod / 60 % 60),
            0x04 => bcd(tod / 3600),
            // Day of the week, 1 = Sunday; 1970-01-01 was a Thursday.
            0x06 => bcd((days as u64 + 4) % 7 + 1),
            0x07 => bcd(d),
            0x08 => bcd(mo),
            0x09 => bcd(y % 100),
            0x0c => 0,
            0x32 => bcd(y / 100),
            i => self.ram[usize::from(i & 0x7f)],
        }
    }

    fn write(&mut self, v: u8) {
        match self.index {
            // Status C and D are read-only.
            0x0c | 0x0d => {}
            // Status A: UIP (bit 7) is read-only.
            0x0a => self.ram[0x0a] = v & 0x7f,
            i => self.ram[usize::from(i & 0x7f)] = v,
        }
    }
}

/// The i8042 keyboard controller, enough for Linux's probe and reset: status, the command
/// byte (CTR), the self-tests, the output port, and a one-byte-per-read output buffer.
/// No keyboard or mouse is attached (no scancodes, no IRQ 1/12). Command `0xFE` (pulse the
/// reset line) resets the machine.
#[derive(Debug, Clone)]
pub struct I8042 {
    /// Command awaiting its data byte (0x60 write CTR, 0xD1 write output port, 0xD2-0xD4
    /// write to an output buffer or the aux device).
    pending: Option<u8>,
    ctr: u8,
    outp: u8,
    out: std::collections::VecDeque<u8>,
}

impl Default for I8042 {
    fn default() -> Self {
        I8042 {
            pending: None,
            // Keyboard interrupt enabled, system flag (POST passed), translation.
            ctr: 0x45,
            // A20 enabled, reset line not asserted.
            outp: 0x03,
            out: Default::default(),
        }
    }
}

/// Status bits: output buffer full, system flag, last write was a command.
const I8042_OBF: u8 = 0x01;
const I8042_SYS: u8 = 0x04;
const I8042_CMD: u8 = 0x08;

impl I8042 {
    /// The status register (port 0x64 read).
    pub fn status(&self) -> u8 {
        let mut s = I8042_SYS;
        if !self.out.is_empty() {
            s |= I8042_OBF;
        }
        if self.pending.is_some() {
            s |= I8042_CMD;
        }
        s
    }

    /// The data port (0x60) read: the next output byte, 0 when there is none.
    pub fn read_data(&mut self) -> u8 {
        self.out.pop_front().unwrap_or(0)
    }

    fn push(&mut self, b: u8) {
        // A real controller has a one-byte buffer; more than a handful is a confused guest.
        if self.out.len() < 16 {
            self.out.push_back(b);
        }
    }

    /// A controller command (port 0x64 write). Returns true for the reset pulse.
    pub fn command(&mut self, c: u8) -> bool {
        self.pending = None;
        match c {
            0x20 => self.push(self.ctr),
            0x60 | 0xd1..=0xd4 => self.pending = Some(c),
            0xa7 => self.ctr |= 0x20,       // disable aux
            0xa8 => self.ctr &= !0x20,      // enable aux
            0xa9 | 0xab => self.push(0x00), // aux / keyboard interface test: OK
            0xaa => self.push(0x55),        // controller self-test: OK
            0xad => self.ctr |= 0x10,       // disable keyboard
            0xae => self.ctr &= !0x10,      // enable keyboard
            0xd0 => self.push(self.outp),
            // Pulse output lines: bit 0 low pulses the reset line.
            0xf0..=0xff => return c & 1 == 0,
            _ => {}
        }
        false
    }

    /// A data byte (port 0x60 write): the argument of a pending command, else a byte for
    /// the keyboard, which is absent (no reply: Linux then finds no keyboard).
    pub fn data(&mut self, v: u8) {
        match self.pending.take() {
            Some(0x60) => self.ctr = v,
            Some(0xd1) => self.outp = v,
            // Write to the keyboard / aux output buffer: read back as if received.
            Some(0xd2) | Some(0xd3) => self.push(v),
            // Write to the aux device, which is absent: nothing answers.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_exit_and_reset() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut d = Devices::new(&SerialOut::Buffer(buf.clone()), None).unwrap();
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
    fn rep_outsb_sends_every_byte_and_rep_insb_reads_every_byte() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut d = Devices::new(&SerialOut::Buffer(buf.clone()), None).unwrap();
        assert_eq!(d.io_out(0x3f8, b"rep outsb"), IoAction::Continue);
        assert_eq!(&*buf.lock().unwrap(), b"rep outsb");
        assert_eq!(d.serial_input(b"xyz"), 3);
        let mut got = [0u8; 3];
        d.io_in(0x3f8, &mut got);
        assert_eq!(&got, b"xyz");
    }

    #[test]
    fn serial_irq_follows_ier_thr_empty_and_received_data() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut d = Devices::new(&SerialOut::Sink, Some(irq.try_clone().unwrap())).unwrap();
        let pending = |e: &EventFd| e.read().unwrap_or(0);
        // No interrupt while IER is 0, whatever is sent or received.
        d.io_out(0x3f8, b"a");
        assert_eq!(d.serial_input(b"q"), 1);
        assert_eq!(pending(&irq), 0);
        let mut lsr = [0u8];
        d.io_in(0x3fd, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        // Enabling the receive interrupt with data pending raises it at once (the 8250 driver
        // relies on that); IIR says "received data".
        d.io_out(0x3f9, &[0x01]);
        assert_eq!(pending(&irq), 1);
        let mut iir = [0u8];
        d.io_in(0x3fa, &mut iir);
        assert_eq!(iir[0] & 0x0f, 0x04, "{:#x}", iir[0]);
        let mut rbr = [0u8];
        d.io_in(0x3f8, &mut rbr);
        assert_eq!(rbr[0], b'q');
        d.io_in(0x3fd, &mut lsr);
        assert_eq!(lsr[0] & 1, 0, "FIFO drained");
        // New input raises it again.
        d.serial_input(b"r");
        assert_eq!(pending(&irq), 1);
        d.io_in(0x3f8, &mut rbr);
        // THR-empty interrupt: raised when enabled, and after each byte sent.
        d.io_out(0x3f9, &[0x02]);
        assert_eq!(pending(&irq), 1);
        d.io_in(0x3fa, &mut iir);
        assert_eq!(iir[0] & 0x0f, 0x02, "{:#x}", iir[0]);
        d.io_out(0x3f8, b"b");
        assert_eq!(pending(&irq), 1);
        // The FIFO holds 64 bytes; the rest waits.
        d.io_out(0x3f9, &[0]);
        assert_eq!(d.serial_input(&[b'x'; 100]), 64);
        assert_eq!(d.serial_input(b"y"), 0);
    }

    #[test]
    fn rtc_reads_bcd_time_and_status_registers() {
        let mut d = Devices::new(&SerialOut::Sink, None).unwrap();
        // 2026-12-07 19:45:09 UTC is 1796672709 s after the epoch, a Monday.
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_672_709);
        let mut r = Rtc::default();
        let mut at = |i: u8| {
            r.index = i;
            r.read(t)
        };
        assert_eq!(
            [at(0), at(2), at(4), at(6), at(7), at(8), at(9), at(0x32)],
            [0x09, 0x45, 0x19, 0x02, 0x07, 0x12, 0x26, 0x20]
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        // Through the ports: status A (no update in progress), B (24h, BCD), C, D (valid).
        let mut v = [0u8];
        for (reg, want) in [(0x0a, 0x26), (0x0b, 0x02), (0x0c, 0), (0x0d, 0x80)] {
            d.io_out(0x70, &[reg | 0x80]);
            d.io_in(0x71, &mut v);
            assert_eq!(v[0], want, "register {reg:#x}");
        }
        // CMOS RAM keeps what is written; status D does not change.
        d.io_out(0x70, &[0x40]);
        d.io_out(0x71, &[0x5a]);
        d.io_in(0x71, &mut v);
        assert_eq!(v[0], 0x5a);
        d.io_out(0x70, &[0x0d]);
        d.io_out(0x71, &[0]);
        d.io_in(0x71, &mut v);
        assert_eq!(v[0], 0x80);
        // The time registers follow the host clock: the seconds read are a BCD number.
        d.io_out(0x70, &[0]);
        d.io_in(0x71, &mut v);
        assert!(v[0] >> 4 <= 5 && v[0] & 0xf <= 9, "{:#x}", v[0]);
        assert_eq!(d.unhandled_count(), 0);
    }

    #[test]
    fn i8042_answers_the_linux_probe_and_resets_on_0xfe() {
        let mut d = Devices::new(&SerialOut::Sink, None).unwrap();
        let st = |d: &mut Devices| {
            let mut v = [0u8];
            d.io_in(0x64, &mut v);
            v[0]
        };
        let data = |d: &mut Devices| {
            let mut v = [0u8];
            d.io_in(0x60, &mut v);
            v[0]
        };
        assert_eq!(st(&mut d) & 1, 0, "output buffer empty");
        // Read the command byte, write it back changed, read it again.
        assert_eq!(d.io_out(0x64, &[0x20]), IoAction::Continue);
        assert_eq!(st(&mut d) & 1, 1);
        let ctr = data(&mut d);
        assert_eq!(ctr, 0x45);
        assert_eq!(st(&mut d) & 1, 0);
        d.io_out(0x64, &[0x60]);
        assert_eq!(st(&mut d) & 0x08, 0x08, "waiting for the command's data");
        d.io_out(0x60, &[ctr & !1]);
        d.io_out(0x64, &[0x20]);
        assert_eq!(data(&mut d), 0x44);
        // Self-test and interface tests.
        d.io_out(0x64, &[0xaa]);
        assert_eq!(data(&mut d), 0x55);
        d.io_out(0x64, &[0xab]);
        assert_eq!(data(&mut d), 0x00);
        // Output buffer write (0xd2) comes back on the data port.
        d.io_out(0x64, &[0xd2]);
        d.io_out(0x60, &[0x77]);
        assert_eq!(data(&mut d), 0x77);
        // A keyboard command gets no answer (no keyboard).
        d.io_out(0x60, &[0xff]);
        assert_eq!(st(&mut d) & 1, 0);
        // Pulse of the reset line (bit 0 low) resets; other pulses do not.
        assert_eq!(d.io_out(0x64, &[0xff]), IoAction::Continue);
        assert_eq!(d.io_out(0x64, &[0xfe]), IoAction::Reset);
        assert_eq!(d.unhandled_count(), 0);
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
        let mut d = Devices::new(&SerialOut::File(full.into()), None).unwrap();
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
        let e = Devices::new(&SerialOut::File("/nonexistent/dir/x".into()), None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/x"));
    }
}
