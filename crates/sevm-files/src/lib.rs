//! The one place where sevm opens files a user names: a bounded reader for inputs, a careful
//! creator for outputs, an atomic writer for state files and a check for private directories.
//!
//! Inputs ([`Limit`], [`read_bounded`]):
//! - the path is `stat`ed first, and anything but a regular file (a directory, a FIFO, a
//!   socket, a character or block device) is refused by name, without being opened: opening a
//!   FIFO blocks until a writer comes, reading `/dev/zero` never ends, and opening some devices
//!   has side effects (a watchdog arms, a tape rewinds). The one exception is `/dev/null`
//!   (the character device 1:3 under any name), read as an empty file: it ends at once, and
//!   tools use it for "no kernel/initrd" (the `sev` crate's measurement vectors do);
//! - the file is then opened `O_RDONLY | O_NONBLOCK | O_CLOEXEC` (so a FIFO swapped in after the
//!   `stat` still cannot block the open) and the *opened* descriptor is `fstat`ed again;
//! - a size above the format's limit is refused before any byte is read, naming the limit and
//!   why it is what it is; an empty file is refused unless the caller allows it;
//! - every read goes through `take(max + 1)`, so a file that grows while it is read is still
//!   bounded (and refused).
//!
//! Outputs ([`create_output`]):
//! - `-` is standard output;
//! - a new file is created `O_CREAT | O_EXCL | O_NOFOLLOW` with the caller's mode (0600 for key
//!   material); an existing regular file is opened `O_NOFOLLOW`, made private first when the
//!   mode asks for it, and truncated only once the open succeeded;
//! - pipes, FIFOs with a reader and character devices (`/dev/null`, a terminal) are written as
//!   they are, never truncated; a FIFO without a reader is an error, not a hang;
//! - a symbolic link is followed only to a pipe, a FIFO, a socket or this process's own
//!   stdout/stderr (so `/dev/stdout` works); a link to a regular file, a dangling link or a link
//!   to any other device is refused;
//! - nothing here ever unlinks a file it did not create.
//!
//! State files ([`write_atomic`]): a temporary file made by `tempfile` (`O_CREAT | O_EXCL`,
//! mode 0600, unpredictable name) in the same directory, written, `fsync`ed, renamed over the
//! target, then the directory `fsync`ed. A symbolic link in place of the target is refused.
//!
//! Directories holding secrets ([`create_private_dir`]): created 0700, and refused when they
//! are not a directory, belong to another user or are writable by group or others.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What went wrong with a file; every message names what the file is for and its path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened (missing, no permission...).
    #[error("{what}: cannot open {path}: {source}")]
    Open {
        /// What the file is for, e.g. `--kernel`.
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Not a regular file (directory, FIFO, socket, device).
    #[error("{what}: {path} {kind}; {needs}")]
    NotRegular {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// What it is instead, e.g. "is a FIFO (named pipe)".
        kind: &'static str,
        /// What was expected.
        needs: &'static str,
    },
    /// Larger than the format can hold; refused before reading.
    #[error("{what}: {path} is {size} bytes, more than the limit of {max} bytes ({why})")]
    TooLarge {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
        /// Why the limit is what it is.
        why: String,
    },
    /// The file grew past the limit while it was read.
    #[error("{what}: {path} grew past the limit of {max} bytes while being read ({why})")]
    Grew {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
        /// Why the limit is what it is.
        why: String,
    },
    /// The file is empty.
    #[error("{what}: {path} is empty")]
    Empty {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("{what}: cannot read {path}: {source}")]
    Read {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Text was expected.
    #[error("{what}: {path} is not UTF-8 text")]
    NotUtf8 {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// A symbolic link where none is allowed.
    #[error("{what}: {path} is a symbolic link{target}; {why}")]
    Symlink {
        /// What the file is for.
        what: String,
        /// The link.
        path: PathBuf,
        /// ` to X`, when known.
        target: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// An output could not be created or opened.
    #[error("{what}: cannot create {path}: {source}")]
    Create {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// An output cannot be opened for writing without blocking (FIFO with no reader, socket).
    #[error(
        "{what}: {path} cannot be opened for writing: a FIFO with no reader, or a socket \
         (start the reader first; for standard output give `-`)"
    )]
    NoReader {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// Writing failed.
    #[error("{what}: cannot write {path}: {source}")]
    Write {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A directory that must be private is not.
    #[error("{what}: {path} {reason}")]
    UnsafeDir {
        /// What the directory is for.
        what: String,
        /// The directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Open { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::Grew { path, .. }
            | FileError::Empty { path, .. }
            | FileError::Read { path, .. }
            | FileError::NotUtf8 { path, .. }
            | FileError::Symlink { path, .. }
            | FileError::Create { path, .. }
            | FileError::NoReader { path, .. }
            | FileError::Write { path, .. }
            | FileError::UnsafeDir { path, .. } => path,
        }
    }

    /// What is wrong, without the "what: path" prefix (for callers whose own message already
    /// names the file).
    pub fn reason(&self) -> String {
        match self {
            FileError::Open { source, .. }
            | FileError::Read { source, .. }
            | FileError::Create { source, .. }
            | FileError::Write { source, .. } => source.to_string(),
            FileError::NotRegular { kind, needs, .. } => format!("{kind}; {needs}"),
            FileError::TooLarge { size, max, why, .. } => {
                format!("{size} bytes, more than the limit of {max} bytes ({why})")
            }
            FileError::Grew { max, why, .. } => {
                format!("grew past the limit of {max} bytes while being read ({why})")
            }
            FileError::Empty { .. } => "empty".into(),
            FileError::NotUtf8 { .. } => "not UTF-8 text".into(),
            FileError::Symlink { target, why, .. } => format!("a symbolic link{target}; {why}"),
            FileError::NoReader { .. } => {
                "cannot be opened for writing: a FIFO with no reader, or a socket".into()
            }
            FileError::UnsafeDir { reason, .. } => reason.clone(),
        }
    }

    /// True when the file does not exist (a missing input, as opposed to a bad one).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, FileError>;

/// What a file of type `ft` is, as a phrase ("is a FIFO (named pipe)"), or `None` for a
/// regular file.
pub fn describe(ft: std::fs::FileType) -> Option<&'static str> {
    if ft.is_file() {
        None
    } else if ft.is_dir() {
        Some("is a directory")
    } else if ft.is_fifo() {
        Some("is a FIFO (named pipe)")
    } else if ft.is_char_device() {
        Some("is a character device (e.g. /dev/zero)")
    } else if ft.is_block_device() {
        Some("is a block device")
    } else if ft.is_socket() {
        Some("is a socket")
    } else if ft.is_symlink() {
        Some("is a symbolic link")
    } else {
        Some("is not a regular file")
    }
}

const NEEDS_REGULAR: &str = "a regular file is needed";

/// How to read one kind of input file: what it is for, its size limit and why.
#[derive(Debug, Clone)]
pub struct Limit<'a> {
    what: &'a str,
    max: u64,
    why: &'a str,
    allow_empty: bool,
    follow: bool,
}

impl<'a> Limit<'a> {
    /// A file for `what` (e.g. `--kernel`) of at most `max` bytes.
    pub fn new(what: &'a str, max: u64) -> Self {
        Limit {
            what,
            max,
            why: "the format holds no more",
            allow_empty: false,
            follow: true,
        }
    }

    /// Why the limit is `max` (shown when a file is refused).
    pub fn why(mut self, why: &'a str) -> Self {
        self.why = why;
        self
    }

    /// An empty file is accepted (by default it is refused as empty).
    pub fn allow_empty(mut self) -> Self {
        self.allow_empty = true;
        self
    }

    /// A symbolic link is refused (`O_NOFOLLOW`), dangling or not.
    pub fn no_follow(mut self) -> Self {
        self.follow = false;
        self
    }

    /// The limit in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }

    fn open_err(&self, path: &Path, source: io::Error) -> FileError {
        if !self.follow && source.raw_os_error() == Some(libc::ELOOP) {
            return FileError::Symlink {
                what: self.what.into(),
                path: path.into(),
                target: link_target(path),
                why:
                    "refused (a link could send sevm's data elsewhere or make it read another file)",
            };
        }
        FileError::Open {
            what: self.what.into(),
            path: path.into(),
            source,
        }
    }

    fn check_meta(&self, path: &Path, m: &Metadata) -> Result<()> {
        if is_dev_null(m) {
            return self.check_size(path, 0);
        }
        if let Some(kind) = describe(m.file_type()) {
            if kind == "is a symbolic link" {
                return Err(self.open_err(path, io::Error::from_raw_os_error(libc::ELOOP)));
            }
            return Err(FileError::NotRegular {
                what: self.what.into(),
                path: path.into(),
                kind,
                needs: NEEDS_REGULAR,
            });
        }
        self.check_size(path, m.len())
    }

    fn check_size(&self, path: &Path, len: u64) -> Result<()> {
        if len > self.max {
            return Err(FileError::TooLarge {
                what: self.what.into(),
                path: path.into(),
                size: len,
                max: self.max,
                why: self.why.into(),
            });
        }
        if len == 0 && !self.allow_empty {
            return Err(FileError::Empty {
                what: self.what.into(),
                path: path.into(),
            });
        }
        Ok(())
    }

    /// Opens `path` for reading after the checks in the module docs (type, size, emptiness);
    /// nothing is read yet.
    pub fn open(&self, path: &Path) -> Result<Opened> {
        // Refuse special files before opening them (no open side effects, no blocking).
        let pre = if self.follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        let pre = pre.map_err(|e| self.open_err(path, e))?;
        self.check_meta(path, &pre)?;
        let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
        if !self.follow {
            flags |= libc::O_NOFOLLOW;
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| self.open_err(path, e))?;
        // What was opened may not be what was stat'ed: check the descriptor itself.
        let m = file.metadata().map_err(|source| FileError::Read {
            what: self.what.into(),
            path: path.into(),
            source,
        })?;
        self.check_meta(path, &m)?;
        Ok(Opened {
            file,
            size: if is_dev_null(&m) { 0 } else { m.len() },
            path: path.to_path_buf(),
            what: self.what.to_string(),
            max: self.max,
            why: self.why.to_string(),
            allow_empty: self.allow_empty,
        })
    }

    /// Reads the whole of `path` (at most `max` bytes).
    pub fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.open(path)?.read_all()
    }

    /// Reads the whole of `path` as UTF-8 text.
    pub fn read_to_string(&self, path: &Path) -> Result<String> {
        let b = self.read(path)?;
        String::from_utf8(b).map_err(|_| FileError::NotUtf8 {
            what: self.what.into(),
            path: path.into(),
        })
    }
}

/// True for `/dev/null` (character device 1:3), whatever its name.
fn is_dev_null(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3)
}

fn link_target(path: &Path) -> String {
    std::fs::read_link(path)
        .map(|t| format!(" to {}", t.display()))
        .unwrap_or_default()
}

/// Reads the regular file `path` for `what`, refusing it (before reading) when larger than
/// `max` bytes or empty, and refusing directories, FIFOs, sockets and devices.
pub fn read_bounded(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    Limit::new(what, max).read(path)
}

/// [`read_bounded`] for UTF-8 text.
pub fn read_bounded_to_string(path: &Path, what: &str, max: u64) -> Result<String> {
    Limit::new(what, max).read_to_string(path)
}

/// An input file opened and checked by [`Limit::open`]; reads stay within the limit.
#[derive(Debug)]
pub struct Opened {
    file: File,
    size: u64,
    path: PathBuf,
    what: String,
    max: u64,
    why: String,
    allow_empty: bool,
}

impl Opened {
    /// The size `fstat` reported when the file was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (e.g. to lock it); read through [`Opened`]'s methods to stay bounded.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn read_err(&self, source: io::Error) -> FileError {
        FileError::Read {
            what: self.what.clone(),
            path: self.path.clone(),
            source,
        }
    }

    fn grew(&self) -> FileError {
        FileError::Grew {
            what: self.what.clone(),
            path: self.path.clone(),
            max: self.max,
            why: self.why.clone(),
        }
    }

    /// Reads the rest of the file (at most the limit); refused if it grew past the limit or
    /// (unless allowed) shrank to nothing.
    pub fn read_all(mut self) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.size.min(self.max).min(64 << 20) as usize);
        (&mut self.file)
            .take(self.max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| self.read_err(e))?;
        if buf.len() as u64 > self.max {
            // What was read may be key material (a state file): clear it before dropping.
            buf.fill(0);
            std::hint::black_box(&buf);
            return Err(self.grew());
        }
        if buf.is_empty() && !self.allow_empty {
            return Err(FileError::Empty {
                what: self.what,
                path: self.path,
            });
        }
        Ok(buf)
    }

    /// Passes the whole file to `sink` in chunks of `chunk` bytes without holding it;
    /// returns the number of bytes. The limit holds as for [`read_all`](Self::read_all).
    pub fn stream(mut self, chunk: usize, mut sink: impl FnMut(&[u8])) -> Result<u64> {
        let mut buf = vec![0u8; chunk.max(1)];
        let mut total = 0u64;
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_err(e)),
            };
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > self.max {
                return Err(self.grew());
            }
            sink(&buf[..n]);
        }
        if total == 0 && !self.allow_empty {
            return Err(FileError::Empty {
                what: self.what,
                path: self.path,
            });
        }
        Ok(total)
    }

    /// Reads up to `len` bytes from the start (fewer if the file is shorter).
    pub fn read_head(&mut self, len: usize) -> Result<Vec<u8>> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| self.read_err(e))?;
        let mut buf = Vec::with_capacity(len.min(1 << 20));
        (&mut self.file)
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(|e| self.read_err(e))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| self.read_err(e))?;
        Ok(buf)
    }

    /// Reads the last `len` bytes (all of them when the file is shorter).
    pub fn read_tail(&mut self, len: u64) -> Result<Vec<u8>> {
        let start = self.size.saturating_sub(len);
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(|e| self.read_err(e))?;
        let mut buf = Vec::with_capacity(len.min(1 << 20) as usize);
        (&mut self.file)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.read_err(e))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| self.read_err(e))?;
        Ok(buf)
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// Mode for files holding key or secret material.
pub const MODE_PRIVATE: u32 = 0o600;
/// Mode for other outputs (before the umask).
pub const MODE_PUBLIC: u32 = 0o666;

/// An output opened by [`create_output`].
#[derive(Debug)]
pub struct OutputFile {
    file: File,
    path: PathBuf,
    what: String,
    created: bool,
    regular: bool,
    stdout: bool,
}

fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// The metadata of this process's stdout and stderr (for those open).
fn std_streams() -> Vec<Metadata> {
    let mut v = Vec::new();
    for fd in [io::stdout().as_fd(), io::stderr().as_fd()] {
        if let Ok(owned) = fd.try_clone_to_owned() {
            if let Ok(m) = File::from(owned).metadata() {
                v.push(m);
            }
        }
    }
    v
}

fn is_stdout(m: &Metadata) -> bool {
    io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|o| File::from(o).metadata().ok())
        .is_some_and(|s| same_file(&s, m))
}

/// Clears `O_NONBLOCK` (set only so that opening a FIFO cannot block) so writes block as usual.
fn set_blocking(f: &File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: `fd` is a descriptor this function's caller owns and keeps open for the call;
    // F_GETFL takes no pointer argument and only reads the descriptor's status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: as above; F_SETFL takes an integer of flags and changes only the descriptor's
        // status flags.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens `path` for writing `what`. `mode` is the mode of a file created here (0600 for key or
/// secret material); an existing regular file keeps its mode unless `mode` is private
/// (no group/other bits), in which case it is made `mode` before anything is written.
/// See the module docs for `-`, pipes, devices and symbolic links.
pub fn create_output(path: &Path, what: &str, mode: u32) -> Result<OutputFile> {
    let create_err = |source: io::Error| FileError::Create {
        what: what.into(),
        path: path.into(),
        source,
    };
    let no_reader = || FileError::NoReader {
        what: what.into(),
        path: path.into(),
    };
    if path.as_os_str() == "-" {
        let owned = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(create_err)?;
        let file = File::from(owned);
        let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        return Ok(OutputFile {
            file,
            path: path.into(),
            what: what.into(),
            created: false,
            regular,
            stdout: true,
        });
    }
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    for _ in 0..8 {
        // A new file: O_CREAT | O_EXCL never follows a symbolic link.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(flags)
            .open(path)
        {
            Ok(file) => {
                set_blocking(&file).map_err(create_err)?;
                return Ok(OutputFile {
                    file,
                    path: path.into(),
                    what: what.into(),
                    created: true,
                    regular: true,
                    stdout: false,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(create_err(e)),
        }
        // It exists: open it as it is (no O_CREAT, no O_TRUNC), never through a link.
        let file = match OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return open_through_link(path, what);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(no_reader()),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                return Err(FileError::NotRegular {
                    what: what.into(),
                    path: path.into(),
                    kind: "is a directory",
                    needs: "give a file name",
                });
            }
            Err(e) => return Err(create_err(e)),
        };
        let m = file.metadata().map_err(create_err)?;
        let ft = m.file_type();
        if ft.is_block_device() {
            return Err(FileError::NotRegular {
                what: what.into(),
                path: path.into(),
                kind: "is a block device",
                needs: "sevm writes only regular files, pipes and character devices",
            });
        }
        set_blocking(&file).map_err(create_err)?;
        let regular = ft.is_file();
        if regular {
            use std::os::unix::fs::PermissionsExt as _;
            if mode & 0o077 == 0 && m.mode() & 0o777 != mode & 0o777 {
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(|source| FileError::Create {
                        what: what.into(),
                        path: path.into(),
                        source: io::Error::new(
                            source.kind(),
                            format!("cannot make it private (mode {mode:o}): {source}"),
                        ),
                    })?;
            }
            // Truncate only now that the open succeeded, and only a regular file.
            file.set_len(0).map_err(create_err)?;
        }
        let stdout = is_stdout(&m);
        return Ok(OutputFile {
            file,
            path: path.into(),
            what: what.into(),
            created: false,
            regular,
            stdout,
        });
    }
    Err(create_err(io::Error::other(
        "the file kept disappearing and reappearing while being opened",
    )))
}

/// The symbolic-link case of [`create_output`]: followed only to a pipe, FIFO, socket or
/// this process's own stdout/stderr; never created, never truncated.
fn open_through_link(path: &Path, what: &str) -> Result<OutputFile> {
    let refuse = |why: &'static str| FileError::Symlink {
        what: what.into(),
        path: path.into(),
        target: link_target(path),
        why,
    };
    let target = std::fs::metadata(path).map_err(|_| {
        refuse("it points to nothing, and sevm does not create files through links")
    })?;
    if target.is_file() || target.is_dir() {
        return Err(refuse(
            "sevm does not write through links to files (give the target's own path)",
        ));
    }
    let file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(FileError::NoReader {
                what: what.into(),
                path: path.into(),
            })
        }
        Err(source) => {
            return Err(FileError::Create {
                what: what.into(),
                path: path.into(),
                source,
            })
        }
    };
    let m = file.metadata().map_err(|source| FileError::Create {
        what: what.into(),
        path: path.into(),
        source,
    })?;
    let ft = m.file_type();
    let std_stream = std_streams().iter().any(|s| same_file(s, &m));
    let ok = ft.is_fifo() || ft.is_socket() || (ft.is_char_device() && std_stream);
    if !ok {
        return Err(refuse(
            "through a link sevm writes only to a pipe, a FIFO or its own stdout/stderr",
        ));
    }
    set_blocking(&file).map_err(|source| FileError::Create {
        what: what.into(),
        path: path.into(),
        source,
    })?;
    Ok(OutputFile {
        stdout: is_stdout(&m),
        file,
        path: path.into(),
        what: what.into(),
        created: false,
        regular: false,
    })
}

impl OutputFile {
    /// Writes all of `bytes`, naming the file on failure.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.flush())
            .map_err(|source| FileError::Write {
                what: self.what.clone(),
                path: self.path.clone(),
                source,
            })
    }

    /// True if this call created the file (so removing it again loses nothing).
    pub fn created(&self) -> bool {
        self.created
    }

    /// True for a regular file (as opposed to a pipe, FIFO, socket or device).
    pub fn is_regular(&self) -> bool {
        self.regular
    }

    /// True when the output is this process's standard output (`-`, `/dev/stdout`, or the
    /// same file): reports must then go elsewhere.
    pub fn is_stdout(&self) -> bool {
        self.stdout
    }

    /// The path given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// The open file, for callers that keep writing to it (e.g. a serial console).
    pub fn into_file(self) -> File {
        self.file
    }

    /// Closes the output and removes it, but only if this call created it; an existing file,
    /// FIFO or device is left in place (its contents may already have changed).
    pub fn remove_if_created(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates (or truncates, see [`create_output`]) `path` and writes `bytes`; returns the
/// output so callers can tell whether it was stdout.
pub fn write_output(path: &Path, what: &str, bytes: &[u8], mode: u32) -> Result<OutputFile> {
    let mut o = create_output(path, what, mode)?;
    o.write_all(bytes)?;
    Ok(o)
}

/// Replaces `path` atomically with `bytes` (see the module docs); the new file has `mode`.
/// A symbolic link (dangling or not) or a non-regular file at `path` is refused.
pub fn write_atomic(path: &Path, what: &str, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let werr = |source: io::Error| FileError::Write {
        what: what.into(),
        path: path.into(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(FileError::Symlink {
                what: what.into(),
                path: path.into(),
                target: link_target(path),
                why: "refused: it would be replaced by a regular file (or written elsewhere)",
            })
        }
        Ok(m) if !m.is_file() => {
            return Err(FileError::NotRegular {
                what: what.into(),
                path: path.into(),
                kind: describe(m.file_type()).unwrap_or("is not a regular file"),
                needs: NEEDS_REGULAR,
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(werr(e)),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp."))
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(werr)?;
    tmp.write_all(bytes).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    // On failure the temporary file (ours) is removed when `tmp` drops.
    tmp.persist(path).map_err(|e| werr(e.error))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(werr)?;
    Ok(())
}

/// The effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist, then checks it
/// (see [`check_private_dir`]).
pub fn create_private_dir(dir: &Path, what: &str) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| FileError::Create {
                    what: what.into(),
                    path: dir.into(),
                    source,
                })?;
        }
        Err(source) => {
            return Err(FileError::Open {
                what: what.into(),
                path: dir.into(),
                source,
            })
        }
    }
    check_private_dir(dir, what)
}

/// Refuses a directory meant to hold secrets that is not a directory, is not owned by the
/// current user, or that group or others can write (they could plant files or links in it).
pub fn check_private_dir(dir: &Path, what: &str) -> Result<()> {
    let unsafe_dir = |reason: String| FileError::UnsafeDir {
        what: what.into(),
        path: dir.into(),
        reason,
    };
    let m = std::fs::metadata(dir).map_err(|source| FileError::Open {
        what: what.into(),
        path: dir.into(),
        source,
    })?;
    if !m.is_dir() {
        let kind = describe(m.file_type()).unwrap_or("is a regular file");
        return Err(unsafe_dir(format!("{kind}, not a directory")));
    }
    let me = euid();
    if m.uid() != me {
        return Err(unsafe_dir(format!(
            "belongs to uid {}, not to the current user (uid {me}); use a directory of your own",
            m.uid()
        )));
    }
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by group or others (mode {mode:04o}); it holds private keys: \
             `chmod go-w {}` (sevm creates it 0700)",
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
