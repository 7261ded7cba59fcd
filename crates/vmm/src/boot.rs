//! Boot sources and image placement: bundled guests, raw firmware at the reset vector, and
//! Linux (bzImage or ELF vmlinux, 64-bit boot protocol) through linux-loader.
//!
//! Placement writes images and boot structures into guest RAM and returns the entry point and
//! the ordered list of ranges an SEV launch must measure. It never touches KVM.
//!
//! Image files are opened through `sevm_files`: a FIFO, a device or a directory is refused
//! without blocking, and a file larger than where it must go (the firmware region, the RAM
//! above 1 MiB, the initrd window) is refused before a byte of it is read. A bzImage whose
//! header announces more than the file holds is refused as truncated.

use crate::cpu::{self, CpuError};
use crate::layout::*;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, Elf, KernelLoader, KernelLoaderResult};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors of image placement.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// No bundled guest has this name.
    #[error("unknown bundled guest {name:?} (known: {known})")]
    UnknownGuest {
        /// Requested name.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// An image file cannot be read.
    #[error("cannot read {what} image {path}: {source}")]
    Read {
        /// "kernel", "initrd", "firmware".
        what: &'static str,
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// An image file is not in a format we can boot.
    #[error("{what} image {path} is malformed: {msg}")]
    Malformed {
        /// "kernel", "firmware".
        what: &'static str,
        /// File path.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// An image does not fit.
    #[error("{what} image {path} ({size} bytes) does not fit: {room}")]
    TooBig {
        /// "kernel", "initrd", "firmware", "bundled guest".
        what: &'static str,
        /// File path or guest name.
        path: PathBuf,
        /// Image size.
        size: u64,
        /// What the limit is.
        room: String,
    },
    /// The command line is too long or contains a NUL.
    #[error("kernel command line is invalid: {0}")]
    Cmdline(String),
    /// Writing boot structures failed.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// The vCPU count cannot be described to the guest.
    #[error("cpus = {0} is invalid for a Linux boot: the MP table describes 1..={max} vCPUs", max = MAX_LINUX_CPUS)]
    Cpus(u8),
    /// The firmware cannot take the kernel-hashes table (QEMU's messages).
    #[error("{0}")]
    KernelHashes(String),
    /// An image file is not a regular file, or changed while being read.
    #[error(transparent)]
    File(sevm_files::FileError),
    /// Writing into guest memory failed.
    #[error("cannot write {what} into guest memory at {gpa:#x}: {msg}")]
    Memory {
        /// What was written.
        what: &'static str,
        /// Where.
        gpa: u64,
        /// Underlying error.
        msg: String,
    },
}

/// What the VM boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// A bundled guest from the `guests` crate, by name.
    Bundled(String),
    /// A raw firmware image, mapped to end at 4 GiB and started at the reset vector.
    Firmware(PathBuf),
    /// A Linux kernel (bzImage or ELF vmlinux) with optional initrd and a command line.
    Linux {
        /// Kernel image.
        kernel: PathBuf,
        /// Initial ramdisk.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
    },
    /// SEV measured direct boot (`kernel-hashes=on`): a firmware with OVMF's footer table,
    /// started at the reset vector, plus the kernel-hashes table (SHA-256 of the whole
    /// kernel file, of the initrd (empty if none) and of the command line with its NUL) at
    /// the GPA the firmware's hashes-area entry names. The kernel itself is not loaded:
    /// sevm has no fw_cfg, so the firmware would have to fetch it (and check its hash).
    FirmwareKernelHashes {
        /// Firmware image (mapped to end at 4 GiB).
        firmware: PathBuf,
        /// Kernel image (hashed only).
        kernel: PathBuf,
        /// Initial ramdisk (hashed only).
        initrd: Option<PathBuf>,
        /// Kernel command line (hashed with its NUL).
        cmdline: String,
    },
}

impl BootSource {
    /// The firmware image mapped below 4 GiB, if this source has one.
    pub fn firmware(&self) -> Option<&Path> {
        match self {
            BootSource::Firmware(p) | BootSource::FirmwareKernelHashes { firmware: p, .. } => {
                Some(p)
            }
            _ => None,
        }
    }
}

/// Most vCPUs a VM booting `src` may have, KVM permitting: [`MAX_CPUS`] for a bundled guest
/// (one boot stack each), [`MAX_LINUX_CPUS`] otherwise (APs start through INIT/SIPI).
pub fn max_cpus(src: &BootSource) -> u8 {
    match src {
        BootSource::Bundled(_) => MAX_CPUS,
        _ => MAX_LINUX_CPUS,
    }
}

/// Kind of a measured range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKind {
    /// GDT, IDT, TSS and page tables built by the VMM.
    BootTables,
    /// A bundled guest image.
    Bundled,
    /// A firmware image.
    Firmware,
    /// Linux zero page.
    ZeroPage,
    /// Kernel command line.
    Cmdline,
    /// Kernel image.
    Kernel,
    /// Initial ramdisk.
    Initrd,
    /// The 176-byte padded kernel-hashes table (SEV measured direct boot).
    KernelHashes,
    /// The MP table of a Linux boot ([`crate::mptable`]).
    MpTable,
}

/// A guest-physical range written by the VMM before the guest runs, in measurement order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasuredRange {
    /// Start GPA (4 KiB aligned, except the kernel-hashes table, which is measured exactly
    /// where the firmware says, as QEMU does).
    pub gpa: u64,
    /// Length in bytes (a multiple of 4 KiB, except the kernel-hashes table: 176).
    pub len: u64,
    /// What it holds.
    pub kind: RangeKind,
}

fn range(gpa: u64, len: u64, kind: RangeKind) -> MeasuredRange {
    let start = gpa & !(PAGE_SIZE - 1);
    let end = (gpa + len).next_multiple_of(PAGE_SIZE);
    MeasuredRange {
        gpa: start,
        len: end - start,
        kind,
    }
}

/// How vCPUs enter the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// 64-bit long mode with the VMM's tables. `bundled` guests get every vCPU started at
    /// `rip` (rdi = index, rsi = count, rdx = C-bit mask); Linux gets vCPU 0 only, with
    /// rsi = zero page, and the others wait for INIT/SIPI.
    LongMode {
        /// Entry point.
        rip: u64,
        /// CR3 (with the C-bit if any).
        cr3: u64,
        /// Encryption mask put in the page tables.
        enc_mask: u64,
        /// True for bundled guests.
        bundled: bool,
    },
    /// Real mode at the reset vector; vCPUs other than 0 wait for INIT/SIPI.
    ResetVector,
}

/// Result of placing a boot source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// How to enter the guest.
    pub entry: Entry,
    /// Ranges written by the VMM, in the order they must be measured.
    pub measured: Vec<MeasuredRange>,
}

/// Opens image `path` (`what`: "kernel", "initrd", "firmware") for reading at most `max`
/// bytes; `room` says where it must fit. Errors keep this module's variants: a file too large
/// is [`BootError::TooBig`], an empty one [`BootError::Malformed`], a missing one
/// [`BootError::Read`]; a special file is [`BootError::File`].
fn open_image(
    what: &'static str,
    path: &Path,
    max: u64,
    room: &str,
) -> Result<sevm_files::Opened, BootError> {
    let label = format!("{what} image");
    let mut limit = sevm_files::Limit::new(&label, max).why(room);
    if what == "initrd" {
        // An empty initrd is allowed, as before (it loads nothing; it hashes as no initrd).
        limit = limit.allow_empty();
    }
    let r = limit.open(path);
    r.map_err(|e| image_err(what, path, e))
}

fn image_err(what: &'static str, path: &Path, e: sevm_files::FileError) -> BootError {
    use sevm_files::FileError as F;
    match e {
        F::TooLarge { size, why, .. } => BootError::TooBig {
            what,
            path: path.to_path_buf(),
            size,
            room: why,
        },
        F::Empty { .. } => BootError::Malformed {
            what,
            path: path.to_path_buf(),
            msg: "file is empty".into(),
        },
        F::Open { source, .. } | F::Read { source, .. } => BootError::Read {
            what,
            path: path.to_path_buf(),
            source,
        },
        other => BootError::File(other),
    }
}

/// Reads a whole image (see [`open_image`]).
fn read_image(what: &'static str, path: &Path, max: u64, room: &str) -> Result<Vec<u8>, BootError> {
    open_image(what, path, max, room)?
        .read_all()
        .map_err(|e| image_err(what, path, e))
}

/// SHA-256 of a kernel or initrd for the kernel-hashes table, streamed (never held whole).
fn hash_image(what: &'static str, path: &Path) -> Result<[u8; 32], BootError> {
    let mut f = open_image(
        what,
        path,
        HASHED_IMAGE_MAX,
        "a kernel or initrd is loaded into guest memory below 4 GiB",
    )?;
    if what == "kernel" {
        let head = f
            .read_head(BZIMAGE_HEADER_END)
            .map_err(|e| image_err(what, path, e))?;
        check_bzimage_size(&head, f.size()).map_err(|msg| BootError::Malformed {
            what,
            path: path.to_path_buf(),
            msg,
        })?;
    }
    let mut h = openssl::sha::Sha256::new();
    f.stream(256 << 10, |b| h.update(b))
        .map_err(|e| image_err(what, path, e))?;
    Ok(h.finish())
}

/// Largest kernel or initrd hashed for the kernel-hashes table (both must be loaded below
/// 4 GiB).
pub const HASHED_IMAGE_MAX: u64 = 4 << 30;

/// Why the firmware's size is limited.
const FIRMWARE_ROOM: &str = "at most 16 MiB of firmware is mapped below 4 GiB";

/// How much of a bzImage [`check_bzimage_size`] needs: the setup header (it ends below
/// 0x280 in boot protocol 2.15).
pub const BZIMAGE_HEADER_END: usize = 0x400;

/// Checks that a bzImage holds what its header announces: `(setup_sects + 1) * 512` bytes of
/// real-mode setup (`setup_sects` at 0x1f1, 0 meaning 4), then `syssize * 16` bytes of
/// protected-mode code (`syssize` at 0x1f4, in 16-byte paragraphs; 32 bits from boot
/// protocol 2.04). `head` is the start of the file (at least [`BZIMAGE_HEADER_END`] bytes
/// when the file has them), `file_len` its size. Files without the `HdrS` magic at 0x202
/// (ELF kernels, other formats) are not bzImages and pass.
pub fn check_bzimage_size(head: &[u8], file_len: u64) -> Result<(), String> {
    if head.starts_with(b"\x7fELF") || head.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Ok(());
    }
    let le16 = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let version = le16(0x206);
    let setup_sects = match head[0x1f1] {
        0 => 4u64,
        n => u64::from(n),
    };
    let syssize = if version >= 0x0204 {
        u64::from(u32::from_le_bytes([
            head[0x1f4],
            head[0x1f5],
            head[0x1f6],
            head[0x1f7],
        ]))
    } else {
        u64::from(le16(0x1f4))
    };
    let setup = (setup_sects + 1) * 512;
    let need = setup + syssize * 16;
    if need > file_len {
        return Err(format!(
            "truncated kernel: its bzImage header announces {need} bytes ({setup} of setup, \
             then syssize {syssize} x 16 = {} of protected-mode code) but the file has \
             {file_len}; it would be measured and then fail to boot",
            syssize * 16
        ));
    }
    Ok(())
}

/// Checks the image files of `src` as [`place`] will, without reading them: each is a
/// regular file of a size that fits (guest RAM of `ram_size` bytes), a bzImage is not
/// truncated, a firmware is whole pages. For `sevm config check`, so that it refuses the
/// files `sevm run` would refuse (and never blocks on a FIFO).
pub fn check_files(src: &BootSource, ram_size: u64) -> Result<(), BootError> {
    let kernel = |k: &Path, max: u64, room: &str| -> Result<(), BootError> {
        let mut f = open_image("kernel", k, max, room)?;
        let head = f
            .read_head(BZIMAGE_HEADER_END)
            .map_err(|e| image_err("kernel", k, e))?;
        check_bzimage_size(&head, f.size()).map_err(|msg| BootError::Malformed {
            what: "kernel",
            path: k.to_path_buf(),
            msg,
        })
    };
    match src {
        BootSource::Bundled(_) => Ok(()),
        BootSource::Firmware(f) => firmware_size(f).map(drop),
        BootSource::Linux {
            kernel: k, initrd, ..
        } => {
            kernel(
                k,
                ram_size.saturating_sub(KERNEL_START),
                &format!("RAM from {KERNEL_START:#x} to {ram_size:#x}"),
            )?;
            if let Some(i) = initrd {
                let window = ram_size.min(INITRD_MAX_END);
                open_image(
                    "initrd",
                    i,
                    window,
                    &format!("it must lie in guest RAM below {window:#x}"),
                )?;
            }
            Ok(())
        }
        BootSource::FirmwareKernelHashes {
            firmware,
            kernel: k,
            initrd,
            ..
        } => {
            firmware_size(firmware)?;
            kernel(
                k,
                HASHED_IMAGE_MAX,
                "a kernel is loaded into guest memory below 4 GiB",
            )?;
            if let Some(i) = initrd {
                open_image(
                    "initrd",
                    i,
                    HASHED_IMAGE_MAX,
                    "an initrd is loaded into guest memory below 4 GiB",
                )?;
            }
            Ok(())
        }
    }
}

/// Size of a firmware image file (needed before guest memory is created): at least one
/// 4 KiB page and a whole number of them (the region below 4 GiB is mapped in pages, and the
/// reset vector is in its last 16 bytes), at most [`FIRMWARE_MAX_SIZE`].
pub fn firmware_size(path: &Path) -> Result<u64, BootError> {
    let size = open_image("firmware", path, FIRMWARE_MAX_SIZE, FIRMWARE_ROOM)?.size();
    check_firmware_size(path, size)?;
    Ok(size)
}

fn check_firmware_size(path: &Path, size: u64) -> Result<(), BootError> {
    if size < PAGE_SIZE || size & (PAGE_SIZE - 1) != 0 {
        return Err(BootError::Malformed {
            what: "firmware",
            path: path.to_path_buf(),
            msg: format!(
                "{size} bytes: a firmware image is a whole number of 4 KiB pages (at least \
                 one; it is mapped in pages to end at 4 GiB, the reset vector in its last \
                 16 bytes)"
            ),
        });
    }
    Ok(())
}

fn mem_write(
    mem: &GuestMemoryMmap,
    what: &'static str,
    gpa: u64,
    b: &[u8],
) -> Result<(), BootError> {
    mem.write_slice(b, GuestAddress(gpa))
        .map_err(|e| BootError::Memory {
            what,
            gpa,
            msg: e.to_string(),
        })
}

/// Places `src` into `mem` (RAM of `ram_size` bytes at GPA 0) for a VM of `cpus` vCPUs.
/// `cbit` puts the encryption bit in every page-table entry and CR3. This is the one function
/// that decides the launch data: the VM and the owner's recipe
/// ([`crate::confidential::recipe`]) both call it.
pub fn place(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    src: &BootSource,
    cbit: Option<u8>,
    cpus: u8,
) -> Result<BootPlan, BootError> {
    let enc_mask = cpu::cbit_mask(cbit)?;
    match src {
        BootSource::Bundled(name) => {
            let g = guests::get(name).ok_or_else(|| BootError::UnknownGuest {
                name: name.clone(),
                known: guests::NAMES.join(", "),
            })?;
            let cr3 = write_boot_tables(mem, enc_mask)?;
            if g.load_addr + g.bytes.len() as u64 > ram_size {
                return Err(BootError::TooBig {
                    what: "bundled guest",
                    path: name.into(),
                    size: g.bytes.len() as u64,
                    room: format!("RAM ends at {ram_size:#x}"),
                });
            }
            mem_write(mem, "bundled guest", g.load_addr, g.bytes)?;
            Ok(BootPlan {
                entry: Entry::LongMode {
                    rip: g.entry,
                    cr3,
                    enc_mask,
                    bundled: true,
                },
                measured: {
                    let mut m = boot_table_ranges().to_vec();
                    m.push(range(g.load_addr, g.bytes.len() as u64, RangeKind::Bundled));
                    m
                },
            })
        }
        BootSource::Firmware(path) => {
            let (_, fw) = place_firmware(mem, path)?;
            Ok(BootPlan {
                entry: Entry::ResetVector,
                measured: vec![fw],
            })
        }
        BootSource::FirmwareKernelHashes {
            firmware,
            kernel,
            initrd,
            cmdline,
        } => place_kernel_hashes(mem, firmware, kernel, initrd.as_deref(), cmdline),
        BootSource::Linux {
            kernel,
            initrd,
            cmdline,
        } => {
            let mut plan =
                place_linux(mem, ram_size, kernel, initrd.as_deref(), cmdline, enc_mask)?;
            plan.measured.push(place_mp_table(mem, cpus)?);
            Ok(plan)
        }
    }
}

/// Maps the firmware image to end at 4 GiB; returns the image and its measured range.
fn place_firmware(
    mem: &GuestMemoryMmap,
    path: &Path,
) -> Result<(Vec<u8>, MeasuredRange), BootError> {
    let img = read_image("firmware", path, FIRMWARE_MAX_SIZE, FIRMWARE_ROOM)?;
    let size = img.len() as u64;
    check_firmware_size(path, size)?;
    let gpa = FIRMWARE_END - size;
    mem_write(mem, "firmware", gpa, &img).map_err(|_| BootError::TooBig {
        what: "firmware",
        path: path.to_path_buf(),
        size,
        room: "the firmware region was sized for a different file".into(),
    })?;
    Ok((img, range(gpa, size, RangeKind::Firmware)))
}

/// QEMU's measured direct boot: the firmware, then the padded kernel-hashes table written
/// and measured (exactly 176 bytes) at the firmware's hashes-area GPA. The table must lie in
/// guest RAM: inside the firmware range it would change bytes already measured as the
/// firmware, and the digest would no longer be `SHA-256(firmware file ‖ table)`.
fn place_kernel_hashes(
    mem: &GuestMemoryMmap,
    firmware: &Path,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<BootPlan, BootError> {
    use sev_proto::kernel_hashes as kh;
    let (img, fw) = place_firmware(mem, firmware)?;
    let no_guid = || {
        BootError::KernelHashes(format!(
            "SEV: kernel specified but guest firmware has no hashes table GUID ({})",
            firmware.display()
        ))
    };
    let table = sev_proto::ovmf::FooterTable::parse(&img).map_err(|_| no_guid())?;
    let Some(d) = table.entry(&sev_proto::ovmf::SEV_HASH_TABLE_RV_GUID) else {
        return Err(no_guid());
    };
    let le = |o: usize| {
        d.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (base, size) = (le(0).unwrap_or(0), le(4).unwrap_or(0));
    let invalid = || {
        BootError::KernelHashes(format!(
            "SEV: guest firmware hashes table area is invalid (base={base:#x} size={size:#x})"
        ))
    };
    if d.len() < 8 || base == 0 || (size as usize) < kh::PADDED_LEN {
        return Err(invalid());
    }
    let gpa = u64::from(base);
    let end = gpa + kh::PADDED_LEN as u64;
    if end > fw.gpa && gpa < fw.gpa + fw.len {
        return Err(BootError::KernelHashes(format!(
            "SEV: guest firmware hashes table area (base={base:#x} size={size:#x}) lies inside \
             the measured firmware image; sevm needs it in guest RAM"
        )));
    }
    let k = hash_image("kernel", kernel)?;
    let i = match initrd {
        Some(p) => hash_image("initrd", p)?,
        None => kh::file_hash(&[]),
    };
    if cmdline.contains('\0') {
        return Err(BootError::Cmdline("it contains a NUL byte".into()));
    }
    let c = kh::cmdline_hash(cmdline);
    // The write fails unless all 176 bytes lie in mapped guest RAM.
    mem.write_slice(&kh::padded_table(&k, &i, &c), GuestAddress(gpa))
        .map_err(|_| {
            BootError::KernelHashes(format!(
                "SEV: guest firmware hashes table area (base={base:#x} size={size:#x}) is \
                 outside guest RAM; give the VM more memory"
            ))
        })?;
    Ok(BootPlan {
        entry: Entry::ResetVector,
        measured: vec![
            fw,
            MeasuredRange {
                gpa,
                len: kh::PADDED_LEN as u64,
                kind: RangeKind::KernelHashes,
            },
        ],
    })
}

/// Writes the MP table of `cpus` vCPUs at [`MPTABLE_START`]; returns its measured range.
fn place_mp_table(mem: &GuestMemoryMmap, cpus: u8) -> Result<MeasuredRange, BootError> {
    if cpus == 0 || cpus > MAX_LINUX_CPUS {
        return Err(BootError::Cpus(cpus));
    }
    let t = crate::mptable::mp_table(cpus);
    mem_write(mem, "MP table", MPTABLE_START, &t)?;
    Ok(range(MPTABLE_START, t.len() as u64, RangeKind::MpTable))
}

/// Lowest physical address of the ELF's loaded segments (PT_LOAD with file bytes).
fn elf_load_start(img: &[u8]) -> Option<u64> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(img.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(img.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(img.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(32)?).ok()?;
    let phentsize = u16_at(54)? as usize;
    let phnum = u16_at(56)? as usize;
    (0..phnum)
        .filter_map(|i| {
            let p = phoff.checked_add(i.checked_mul(phentsize)?)?;
            let loaded = u32_at(p)? == 1 && u64_at(p + 32)? > 0; // PT_LOAD, p_filesz
            loaded.then_some(u64_at(p + 24)?) // p_paddr
        })
        .min()
}

/// The two boot-table ranges: GDT, IDT and TSS `[0x1000, 0x6000)`, then the page tables
/// `[0x9000, 0xf000)`. The scratch page and the zero page between them are not included.
pub fn boot_table_ranges() -> [MeasuredRange; 2] {
    [
        range(
            GDT_START,
            TSS_START + TSS_LIMIT + 1 - GDT_START,
            RangeKind::BootTables,
        ),
        range(
            PML4_START,
            BOOT_TABLES_END - PML4_START,
            RangeKind::BootTables,
        ),
    ]
}

fn write_boot_tables(mem: &GuestMemoryMmap, enc_mask: u64) -> Result<u64, BootError> {
    cpu::write_descriptor_tables(mem)?;
    Ok(cpu::write_page_tables(mem, enc_mask)?)
}

/// E820 type for usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type for reserved memory.
pub const E820_RESERVED: u32 = 2;

/// The E820 map given to Linux: low RAM with the secret area reserved, the EBDA hole, and
/// RAM from 1 MiB to the end of guest RAM.
pub fn e820_map(ram_size: u64) -> Vec<boot_e820_entry> {
    let e = |addr: u64, end: u64, t: u32| boot_e820_entry {
        addr,
        size: end - addr,
        r#type: t,
    };
    vec![
        e(0, SECRET_AREA_START, E820_RAM),
        e(
            SECRET_AREA_START,
            SECRET_AREA_START + SECRET_AREA_SIZE,
            E820_RESERVED,
        ),
        e(SECRET_AREA_START + SECRET_AREA_SIZE, EBDA_START, E820_RAM),
        e(KERNEL_START, ram_size, E820_RAM),
    ]
}

fn place_linux(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    enc_mask: u64,
) -> Result<BootPlan, BootError> {
    let malformed = |msg: String| BootError::Malformed {
        what: "kernel",
        path: kernel.to_path_buf(),
        msg,
    };
    if cmdline.len() as u64 >= CMDLINE_MAX_SIZE {
        return Err(BootError::Cmdline(format!(
            "{} bytes, at most {} allowed",
            cmdline.len(),
            CMDLINE_MAX_SIZE - 1
        )));
    }
    if cmdline.contains('\0') {
        return Err(BootError::Cmdline("contains a NUL byte".into()));
    }
    // Its size is checked against the RAM above 1 MiB before it is read.
    let img = read_image(
        "kernel",
        kernel,
        ram_size.saturating_sub(KERNEL_START),
        &format!("RAM from {KERNEL_START:#x} to {ram_size:#x}"),
    )?;
    check_bzimage_size(&img, img.len() as u64).map_err(&malformed)?;
    let is_elf = img.starts_with(b"\x7fELF");
    let mut cur = Cursor::new(img.as_slice());
    let res: KernelLoaderResult = if is_elf {
        Elf::load(mem, None, &mut cur, Some(GuestAddress(KERNEL_START)))
            .map_err(|e| malformed(format!("ELF: {e}")))?
    } else {
        BzImage::load(mem, None, &mut cur, Some(GuestAddress(KERNEL_START)))
            .map_err(|e| malformed(format!("bzImage: {e} (not an ELF vmlinux either)")))?
    };
    // 64-bit boot protocol entry: startup_64 is 0x200 past the protected-mode code start.
    let rip = if is_elf {
        res.kernel_load.0
    } else {
        res.kernel_load.0 + 0x200
    };

    let mut params = boot_params::default();
    if let Some(h) = res.setup_header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline.len() as u32 + 1;
    params.hdr.loadflags |= 0x80; // CAN_USE_HEAP
    params.hdr.heap_end_ptr = 0xfe00;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = 0x0100_0000;
    }

    mem_write(mem, "command line", CMDLINE_START, cmdline.as_bytes())?;
    mem_write(
        mem,
        "command line",
        CMDLINE_START + cmdline.len() as u64,
        &[0],
    )?;

    let mut initrd_range = None;
    if let Some(p) = initrd {
        // Never more than the window below INITRD_MAX_END and the end of RAM; the exact room
        // (above the kernel) is checked below.
        let window = ram_size.min(INITRD_MAX_END);
        let data = read_image(
            "initrd",
            p,
            window,
            &format!("it must lie in guest RAM below {window:#x}"),
        )?;
        let max_end = ram_size
            .min(INITRD_MAX_END)
            .min(if params.hdr.initrd_addr_max != 0 {
                params.hdr.initrd_addr_max as u64 + 1
            } else {
                INITRD_MAX_END
            });
        let size = data.len() as u64;
        let addr = max_end
            .checked_sub(size)
            .map(|a| a & !(PAGE_SIZE - 1))
            .filter(|a| *a >= res.kernel_end.next_multiple_of(PAGE_SIZE));
        let Some(addr) = addr else {
            return Err(BootError::TooBig {
                what: "initrd",
                path: p.to_path_buf(),
                size,
                room: format!(
                    "between the kernel end {:#x} and {max_end:#x}",
                    res.kernel_end
                ),
            });
        };
        mem_write(mem, "initrd", addr, &data)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        initrd_range = Some(range(addr, size, RangeKind::Initrd));
    }

    let map = e820_map(ram_size);
    for (i, e) in map.iter().enumerate() {
        params.e820_table[i] = *e;
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|e| BootError::Memory {
            what: "zero page",
            gpa: ZERO_PAGE_START,
            msg: e.to_string(),
        })?;

    let cr3 = write_boot_tables(mem, enc_mask)?;
    let kernel_start = if is_elf {
        elf_load_start(&img).unwrap_or(res.kernel_load.0)
    } else {
        res.kernel_load.0
    };
    let mut measured = boot_table_ranges().to_vec();
    measured.extend([
        range(ZERO_PAGE_START, PAGE_SIZE, RangeKind::ZeroPage),
        range(CMDLINE_START, cmdline.len() as u64 + 1, RangeKind::Cmdline),
        range(
            kernel_start,
            res.kernel_end - kernel_start,
            RangeKind::Kernel,
        ),
    ]);
    measured.extend(initrd_range);
    Ok(BootPlan {
        entry: Entry::LongMode {
            rip,
            cr3,
            enc_mask,
            bundled: false,
        },
        measured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use std::io::Write;

    /// A minimal bzImage: 1 setup sector + boot sector, header fields at 0x1f1, then payload.
    fn synthetic_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 1u8;
        let mut img = vec![0u8; (setup_sects as usize + 1) * 512];
        img[0x1f1] = setup_sects;
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // version 2.15
        img[0x211] = 0x01; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
        img.extend_from_slice(payload);
        img
    }

    fn tmp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn linux_bzimage_layout_follows_boot_protocol() {
        let ram = 64u64 << 20;
        let mem = create_guest_memory(ram, None).unwrap();
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let k = tmp(&synthetic_bzimage(&payload));
        let initrd_data = vec![0x5au8; 10_000];
        let i = tmp(&initrd_data);
        let cmdline = "console=ttyS0 reboot=k panic=1";
        let plan = place(
            &mem,
            ram,
            &BootSource::Linux {
                kernel: k.path().into(),
                initrd: Some(i.path().into()),
                cmdline: cmdline.into(),
            },
            None,
            1,
        )
        .unwrap();
        let Entry::LongMode {
            rip, cr3, bundled, ..
        } = plan.entry
        else {
            panic!("long mode expected")
        };
        assert_eq!(rip, KERNEL_START + 0x200);
        assert_eq!(cr3, PML4_START);
        assert!(!bundled);

        // Kernel payload at 1 MiB.
        let mut got = vec![0u8; payload.len()];
        mem.read_slice(&mut got, GuestAddress(KERNEL_START))
            .unwrap();
        assert_eq!(got, payload);

        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!(p.hdr.type_of_loader, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, cmdline.len() as u32 + 1);
        assert_eq!({ p.hdr.code32_start }, KERNEL_START as u32);
        assert_ne!(p.hdr.loadflags & 0x80, 0);

        // Command line, NUL-terminated.
        let mut c = vec![0u8; cmdline.len() + 1];
        mem.read_slice(&mut c, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&c[..cmdline.len()], cmdline.as_bytes());
        assert_eq!(c[cmdline.len()], 0);

        // Initrd: page aligned, at the top of RAM, contents intact.
        let (ri, rs) = ({ p.hdr.ramdisk_image } as u64, { p.hdr.ramdisk_size }
            as u64);
        assert_eq!(rs, initrd_data.len() as u64);
        assert_eq!(ri % PAGE_SIZE, 0);
        assert!(ri + rs <= ram && ri + rs + PAGE_SIZE > ram);
        let mut got = vec![0u8; initrd_data.len()];
        mem.read_slice(&mut got, GuestAddress(ri)).unwrap();
        assert_eq!(got, initrd_data);

        // E820: RAM, reserved secret area, RAM to the EBDA, RAM from 1 MiB to the end.
        assert_eq!(p.e820_entries, 4);
        let t: Vec<(u64, u64, u32)> = p.e820_table[..4]
            .iter()
            .map(|e| ({ e.addr }, { e.size }, { e.r#type }))
            .collect();
        assert_eq!(
            t,
            vec![
                (0, SECRET_AREA_START, E820_RAM),
                (SECRET_AREA_START, SECRET_AREA_SIZE, E820_RESERVED),
                (
                    SECRET_AREA_START + SECRET_AREA_SIZE,
                    EBDA_START - SECRET_AREA_START - SECRET_AREA_SIZE,
                    E820_RAM
                ),
                (KERNEL_START, ram - KERNEL_START, E820_RAM),
            ]
        );

        let kinds: Vec<RangeKind> = plan.measured.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                RangeKind::BootTables,
                RangeKind::BootTables,
                RangeKind::ZeroPage,
                RangeKind::Cmdline,
                RangeKind::Kernel,
                RangeKind::Initrd,
                RangeKind::MpTable
            ]
        );
        assert!(plan
            .measured
            .iter()
            .all(|r| r.gpa % PAGE_SIZE == 0 && r.len % PAGE_SIZE == 0));
        // The MP table of the one vCPU is in guest memory at its measured range.
        let mp = plan.measured.last().unwrap();
        assert_eq!((mp.gpa, mp.len), (MPTABLE_START, PAGE_SIZE));
        let want = crate::mptable::mp_table(1);
        let mut got = vec![0u8; want.len()];
        mem.read_slice(&mut got, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn linux_mp_table_follows_the_cpu_count() {
        let k = tmp(&synthetic_bzimage(&[0x90; 4096]));
        let src = BootSource::Linux {
            kernel: k.path().into(),
            initrd: None,
            cmdline: String::new(),
        };
        let ram = 64 << 20;
        for cpus in [2u8, MAX_LINUX_CPUS] {
            let mem = create_guest_memory(ram, None).unwrap();
            let plan = place(&mem, ram, &src, None, cpus).unwrap();
            let want = crate::mptable::mp_table(cpus);
            let mut got = vec![0u8; want.len()];
            mem.read_slice(&mut got, GuestAddress(MPTABLE_START))
                .unwrap();
            assert_eq!(got, want, "{cpus} vCPUs");
            let mp = plan.measured.last().unwrap();
            assert_eq!(mp.kind, RangeKind::MpTable);
            assert_eq!(mp.len, (want.len() as u64).next_multiple_of(PAGE_SIZE));
        }
        let mem = create_guest_memory(ram, None).unwrap();
        for bad in [0u8, MAX_LINUX_CPUS + 1] {
            let e = place(&mem, ram, &src, None, bad).unwrap_err();
            assert!(matches!(e, BootError::Cpus(c) if c == bad), "{e}");
            assert!(e.to_string().contains("MP table"), "{e}");
        }
        // Bundled guests and firmware get no MP table.
        let plan = place(&mem, ram, &BootSource::Bundled("hello".into()), None, 2).unwrap();
        assert!(plan.measured.iter().all(|r| r.kind != RangeKind::MpTable));
    }

    /// A minimal ELF64 vmlinux: one PT_LOAD segment at `paddr`, entry `entry`.
    fn synthetic_elf(paddr: u64, entry: u64, payload: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2; // ELFCLASS64
        e[5] = 1; // little endian
        e[6] = 1; // version
        e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        e[20..24].copy_from_slice(&1u32.to_le_bytes());
        e[24..32].copy_from_slice(&entry.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let p = 64;
        e[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        e[p + 4..p + 8].copy_from_slice(&7u32.to_le_bytes()); // RWX
        e[p + 8..p + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        e[p + 16..p + 24].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr
        e[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
        e[p + 32..p + 40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        e[p + 40..p + 48].copy_from_slice(&(payload.len() as u64 + 0x1000).to_le_bytes());
        e.extend_from_slice(payload);
        e
    }

    #[test]
    fn linux_elf_vmlinux_layout() {
        let ram = 32u64 << 20;
        let mem = create_guest_memory(ram, None).unwrap();
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8 ^ 0x5a).collect();
        let k = tmp(&synthetic_elf(0x20_0000, 0x20_0040, &payload));
        let plan = place(
            &mem,
            ram,
            &BootSource::Linux {
                kernel: k.path().into(),
                initrd: None,
                cmdline: "console=ttyS0".into(),
            },
            Some(51),
            1,
        )
        .unwrap();
        let Entry::LongMode { rip, cr3, .. } = plan.entry else {
            panic!("long mode expected")
        };
        assert_eq!(rip, 0x20_0040, "ELF entry is used as is");
        assert_eq!(cr3, PML4_START | 1 << 51);
        let mut got = vec![0u8; payload.len()];
        mem.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(got, payload);
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!(p.e820_entries, 4);
        let kr = plan
            .measured
            .iter()
            .find(|r| r.kind == RangeKind::Kernel)
            .unwrap();
        // From the segment start (not the entry) to the end of p_memsz, page-rounded.
        assert_eq!((kr.gpa, kr.len), (0x20_0000, 0x2000));
        // An ELF whose entry is below 1 MiB is refused with a clear message.
        let low = tmp(&synthetic_elf(0x1000, 0x1000, &payload));
        let e = place(
            &mem,
            ram,
            &BootSource::Linux {
                kernel: low.path().into(),
                initrd: None,
                cmdline: String::new(),
            },
            None,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, BootError::Malformed { .. }), "{e}");
    }

    #[test]
    fn linux_errors_are_clear() {
        let ram = 8u64 << 20;
        let mem = create_guest_memory(ram, None).unwrap();
        let linux = |k: &Path, i: Option<&Path>, c: &str| BootSource::Linux {
            kernel: k.into(),
            initrd: i.map(Into::into),
            cmdline: c.into(),
        };
        // Unreadable.
        let e = place(
            &mem,
            ram,
            &linux(Path::new("/nonexistent/bzImage"), None, ""),
            None,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, BootError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/bzImage"), "{e}");
        // Malformed.
        let junk = tmp(&[0x11u8; 4096]);
        let e = place(&mem, ram, &linux(junk.path(), None, ""), None, 1).unwrap_err();
        assert!(matches!(e, BootError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains("malformed"));
        // Too big for RAM.
        let big = tmp(&synthetic_bzimage(&vec![0u8; 8 << 20]));
        let e = place(&mem, ram, &linux(big.path(), None, ""), None, 1).unwrap_err();
        assert!(matches!(e, BootError::TooBig { what: "kernel", .. }), "{e}");
        // Initrd too big.
        let k = tmp(&synthetic_bzimage(&[1, 2, 3]));
        let i = tmp(&vec![0u8; 8 << 20]);
        let e = place(&mem, ram, &linux(k.path(), Some(i.path()), ""), None, 1).unwrap_err();
        assert!(matches!(e, BootError::TooBig { what: "initrd", .. }), "{e}");
        // Command line with NUL / too long.
        let e = place(&mem, ram, &linux(k.path(), None, "a\0b"), None, 1).unwrap_err();
        assert!(matches!(e, BootError::Cmdline(_)));
        let long = "x".repeat(CMDLINE_MAX_SIZE as usize);
        let e = place(&mem, ram, &linux(k.path(), None, &long), None, 1).unwrap_err();
        assert!(matches!(e, BootError::Cmdline(_)));
    }

    /// Finding 12 of issue 17: a bzImage cut short of what its header announces is refused
    /// before measurement (direct boot and kernel-hashes alike); so is a firmware that is not
    /// a whole number of pages. Special files are refused by name (finding 13).
    #[test]
    fn finding12_truncated_bzimage_and_tiny_firmware_are_refused() {
        let ram = 64u64 << 20;
        let mem = create_guest_memory(ram, None).unwrap();
        let linux = |k: &Path| BootSource::Linux {
            kernel: k.into(),
            initrd: None,
            cmdline: String::new(),
        };
        let mut img = synthetic_bzimage(&[0x90u8; 4096]);
        img[0x1f4..0x1f8].copy_from_slice(&(4096u32 / 16).to_le_bytes());
        let whole = tmp(&img);
        place(&mem, ram, &linux(whole.path()), None, 1).unwrap();
        assert!(hash_image("kernel", whole.path()).is_ok());
        let cut = tmp(&img[..img.len() - 1000]);
        let e = place(&mem, ram, &linux(cut.path()), None, 1).unwrap_err();
        assert!(
            matches!(e, BootError::Malformed { what: "kernel", .. }),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("truncated kernel")
                && msg.contains("announces 5120 bytes")
                && msg.contains("has 4120"),
            "{msg}"
        );
        let e = hash_image("kernel", cut.path()).unwrap_err();
        assert!(e.to_string().contains("truncated kernel"), "{e}");
        // setup_sects 0 means 4; an old (2.02) header has a 16-bit syssize.
        let mut h = vec![0u8; BZIMAGE_HEADER_END];
        h[0x202..0x206].copy_from_slice(b"HdrS");
        h[0x206..0x208].copy_from_slice(&0x0202u16.to_le_bytes());
        h[0x1f4..0x1f8].copy_from_slice(&0xffff_0001u32.to_le_bytes());
        assert!(check_bzimage_size(&h, 5 * 512 + 16).is_ok());
        assert!(check_bzimage_size(&h, 5 * 512 + 15).is_err());
        // Not a bzImage: not checked here.
        assert!(check_bzimage_size(b"\x7fELF", 4).is_ok());
        assert!(check_bzimage_size(&[0u8; 16], 16).is_ok());

        for bad in [1usize, 16, 4095, 4097] {
            let fw = tmp(&vec![0xf4u8; bad]);
            let e = firmware_size(fw.path()).unwrap_err();
            assert!(
                matches!(
                    e,
                    BootError::Malformed {
                        what: "firmware",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("whole number of 4 KiB pages"), "{e}");
        }
        let e = firmware_size(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "firmware image: /dev/zero is a character device (e.g. /dev/zero); a regular file is needed"
        );
    }

    #[test]
    fn bundled_and_firmware_placement() {
        let ram = 8u64 << 20;
        let mem = create_guest_memory(ram, Some(0x1000)).unwrap();
        let plan = place(&mem, ram, &BootSource::Bundled("hello".into()), Some(47), 1).unwrap();
        let g = guests::get("hello").unwrap();
        let mut got = vec![0u8; g.bytes.len()];
        mem.read_slice(&mut got, GuestAddress(BUNDLED_LOAD_ADDR))
            .unwrap();
        assert_eq!(got, g.bytes);
        assert_eq!(
            plan.entry,
            Entry::LongMode {
                rip: g.entry,
                cr3: PML4_START | 1 << 47,
                enc_mask: 1 << 47,
                bundled: true
            }
        );
        assert_eq!(plan.measured[..2], boot_table_ranges());
        assert_eq!(plan.measured[2].gpa, BUNDLED_LOAD_ADDR);
        let e = place(&mem, ram, &BootSource::Bundled("nope".into()), None, 1).unwrap_err();
        assert!(e.to_string().contains("hello"), "{e}");

        let fw = tmp(&[0xf4u8; 0x1000]);
        let plan = place(&mem, ram, &BootSource::Firmware(fw.path().into()), None, 1).unwrap();
        assert_eq!(plan.entry, Entry::ResetVector);
        assert_eq!(
            plan.measured,
            vec![range(0xffff_f000, 0x1000, RangeKind::Firmware)]
        );
        let b: u8 = mem.read_obj(GuestAddress(RESET_VECTOR)).unwrap();
        assert_eq!(b, 0xf4);
        let empty = tmp(&[]);
        assert!(matches!(
            firmware_size(empty.path()),
            Err(BootError::Malformed { .. })
        ));
        let huge = tempfile::NamedTempFile::new().unwrap();
        huge.as_file().set_len(FIRMWARE_MAX_SIZE + 1).unwrap();
        let e = firmware_size(huge.path()).unwrap_err();
        assert!(
            matches!(
                e,
                BootError::TooBig {
                    what: "firmware",
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(
            firmware_size(Path::new("/nonexistent/fw.bin")),
            Err(BootError::Read { .. })
        ));
    }

    #[test]
    fn opt_in_real_kernel() {
        let Ok(k) = std::env::var("SEVM_LINUX_KERNEL") else {
            eprintln!("SKIP: set SEVM_LINUX_KERNEL to a bzImage or vmlinux to run this test");
            return;
        };
        let ram = 256u64 << 20;
        let mem = create_guest_memory(ram, None).unwrap();
        let plan = place(
            &mem,
            ram,
            &BootSource::Linux {
                kernel: k.into(),
                initrd: None,
                cmdline: "console=ttyS0".into(),
            },
            None,
            1,
        )
        .unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert!(plan.measured.iter().any(|r| r.kind == RangeKind::Kernel));
    }
}
