//! virtio-blk (VIRTIO 1.2 §5.2) over a raw image file: IN, OUT, FLUSH and GET_ID, read-only
//! enforced, FLUSH completed only after `fdatasync`, every guest buffer reached through
//! [`GuestAccess`] so private memory is never touched.
//!
//! A request the device cannot serve (a malformed chain, a range past the end of the disk, a
//! buffer in private memory or outside RAM, a write to a read-only disk) completes with status
//! IOERR or UNSUPP; it never stops the device or the VMM.

use crate::access::GuestAccess;
use crate::{device_id, features, DeviceError, VirtioDevice};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

/// Sector size of the virtio-blk protocol.
pub const SECTOR: u64 = 512;
/// `VIRTIO_BLK_F_RO`.
pub const F_RO: u64 = 1 << 5;
/// `VIRTIO_BLK_F_FLUSH`.
pub const F_FLUSH: u64 = 1 << 9;
/// Request types.
pub const T_IN: u32 = 0;
/// Write.
pub const T_OUT: u32 = 1;
/// Flush.
pub const T_FLUSH: u32 = 4;
/// Device ID string.
pub const T_GET_ID: u32 = 8;
/// Status: success.
pub const S_OK: u8 = 0;
/// Status: I/O error.
pub const S_IOERR: u8 = 1;
/// Status: unsupported request.
pub const S_UNSUPP: u8 = 2;
/// Length of the GET_ID string.
pub const ID_LEN: usize = 20;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes moved per copy step, so a huge descriptor never means a huge allocation.
const CHUNK: usize = 128 << 10;

/// Errors opening a disk.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image could not be opened.
    #[error("disk {path}: cannot open: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The image's size is not a whole number of sectors.
    #[error("disk {path}: size {size} is not a multiple of {SECTOR} bytes")]
    Size {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// Per-request statistics, for tests and the monitor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    /// Requests completed with S_OK.
    pub ok: u64,
    /// Requests completed with an error status.
    pub failed: u64,
    /// Requests whose status could not even be written (completed with length 0).
    pub dropped: u64,
}

/// A virtio-blk device on a raw image.
pub struct Block {
    file: File,
    readonly: bool,
    sectors: u64,
    id: [u8; ID_LEN],
    acked: u64,
    stats: BlockStats,
}

impl Block {
    /// Opens `path` (read-only if `readonly`); `id` is the GET_ID string (truncated to 20 bytes).
    pub fn open(path: &Path, readonly: bool, id: Option<&str>) -> Result<Block, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?;
        let size = file
            .metadata()
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        if !size.is_multiple_of(SECTOR) {
            return Err(BlockError::Size {
                path: path.to_owned(),
                size,
            });
        }
        let mut idb = [0u8; ID_LEN];
        let name = id.map(str::to_owned).unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let n = name.len().min(ID_LEN);
        idb[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(Block {
            file,
            readonly,
            sectors: size / SECTOR,
            id: idb,
            acked: 0,
            stats: BlockStats::default(),
        })
    }

    /// Request statistics so far.
    pub fn stats(&self) -> BlockStats {
        self.stats
    }

    /// Serves one request; returns (used length, status written).
    fn handle(&mut self, mem: &GuestAccess<'_>, descs: &[Descriptor]) -> (u32, Option<u8>) {
        let Some((status_desc, rest)) = descs.split_last() else {
            return (0, None);
        };
        if !status_desc.is_write_only() || status_desc.len() < 1 {
            return (0, None);
        }
        let status_gpa = status_desc.addr().0;
        let (status, data_len) = self.execute(mem, rest);
        match mem.write(status_gpa, &[status]) {
            Ok(()) => (data_len.saturating_add(1), Some(status)),
            Err(_) => (0, None),
        }
    }

    /// Executes the request in `descs` (header and data, without the status descriptor).
    /// Returns the status and the number of bytes written to the guest.
    fn execute(&mut self, mem: &GuestAccess<'_>, descs: &[Descriptor]) -> (u8, u32) {
        let Some((hdr_desc, data)) = descs.split_first() else {
            return (S_IOERR, 0);
        };
        if hdr_desc.is_write_only() || hdr_desc.len() < 16 {
            return (S_IOERR, 0);
        }
        let mut hdr = [0u8; 16];
        if mem.read(hdr_desc.addr().0, &mut hdr).is_err() {
            return (S_IOERR, 0);
        }
        let rtype = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&hdr[8..16]);
        let sector = u64::from_le_bytes(sector);
        match rtype {
            T_IN | T_OUT => {
                let write = rtype == T_OUT;
                if write && self.readonly {
                    return (S_IOERR, 0);
                }
                // Every data buffer in the right direction, and the whole range on the disk.
                if data.iter().any(|d| d.is_write_only() == write) {
                    return (S_IOERR, 0);
                }
                let total: u64 = data.iter().map(|d| u64::from(d.len())).sum();
                let end = sector
                    .checked_mul(SECTOR)
                    .and_then(|o| o.checked_add(total));
                if !total.is_multiple_of(SECTOR) || end.is_none_or(|e| e > self.sectors * SECTOR) {
                    return (S_IOERR, 0);
                }
                let mut off = sector * SECTOR;
                let mut written = 0u32;
                let mut buf = vec![0u8; CHUNK];
                for d in data {
                    let (mut gpa, mut left) = (d.addr().0, u64::from(d.len()));
                    if mem.check(gpa, left).is_err() {
                        return (S_IOERR, written);
                    }
                    while left > 0 {
                        let n = left.min(CHUNK as u64) as usize;
                        let b = &mut buf[..n];
                        let r = if write {
                            mem.read(gpa, b).is_ok() && self.file.write_all_at(b, off).is_ok()
                        } else {
                            self.file.read_exact_at(b, off).is_ok() && mem.write(gpa, b).is_ok()
                        };
                        if !r {
                            return (S_IOERR, written);
                        }
                        if !write {
                            written = written.saturating_add(n as u32);
                        }
                        (gpa, off, left) = (gpa + n as u64, off + n as u64, left - n as u64);
                    }
                }
                (S_OK, written)
            }
            T_FLUSH => {
                if self.readonly || self.file.sync_data().is_ok() {
                    (S_OK, 0)
                } else {
                    (S_IOERR, 0)
                }
            }
            T_GET_ID => match data.first() {
                Some(d) if d.is_write_only() => {
                    let n = (d.len() as usize).min(ID_LEN);
                    match mem.write(d.addr().0, &self.id[..n]) {
                        Ok(()) => (S_OK, n as u32),
                        Err(_) => (S_IOERR, 0),
                    }
                }
                _ => (S_IOERR, 0),
            },
            _ => (S_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_id::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = features::VERSION_1 | F_FLUSH;
        if self.readonly {
            f |= F_RO;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config: only `capacity` (u64, sectors) is offered.
        let cfg = self.sectors.to_le_bytes();
        crate::read_config_bytes(&cfg, offset, data);
    }

    fn activate(&mut self, acked_features: u64) {
        self.acked = acked_features;
    }

    fn process_queue(
        &mut self,
        mem: &GuestAccess<'_>,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<u64, DeviceError> {
        let m = mem.memory();
        let Some(queue) = queues.get_mut(index) else {
            return Ok(0);
        };
        let chains: Vec<_> = queue.iter(m).map_err(DeviceError::queue(index))?.collect();
        let mut used = false;
        for chain in chains {
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let (len, status) = self.handle(mem, &descs);
            match status {
                Some(S_OK) => self.stats.ok += 1,
                Some(_) => self.stats.failed += 1,
                None => self.stats.dropped += 1,
            }
            queue
                .add_used(m, head, len)
                .map_err(DeviceError::queue(index))?;
            used = true;
        }
        Ok(u64::from(used) << index)
    }
}
