//! The raw command interface: the spec's command-buffer layouts (spec notes §4-§8)
//! decoded onto the state machine in [`super::fw`], with guest memory in a sparse model
//! PA space. Lets a fuzzer drive random command sequences.

use super::fw::{Fw, LaunchStartArgs};
use sev_proto::cert::SevCert;
use sev_proto::status::Status;
use std::collections::HashMap;

/// Largest model PA (exclusive).
pub const PA_LIMIT: u64 = 1 << 40;
/// Largest single transfer through the raw interface (resource guard of the model).
pub const MAX_XFER: u64 = 64 << 20;
const PAGE: u64 = 4096;

/// Sparse model physical memory; unwritten bytes read as zero.
#[derive(Default)]
pub struct PaMemory {
    pages: HashMap<u64, Box<[u8; PAGE as usize]>>,
}

impl PaMemory {
    fn check(pa: u64, len: u64) -> Result<(), Status> {
        if len > MAX_XFER {
            return Err(Status::InvalidLength);
        }
        match pa.checked_add(len) {
            Some(end) if end <= PA_LIMIT => Ok(()),
            _ => Err(Status::InvalidAddress),
        }
    }

    /// Read `len` bytes at `pa`.
    pub fn read(&self, pa: u64, len: u64) -> Result<Vec<u8>, Status> {
        Self::check(pa, len)?;
        let mut out = vec![0u8; len as usize];
        let mut done = 0usize;
        while done < out.len() {
            let a = pa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(out.len() - done);
            if let Some(p) = self.pages.get(&(a / PAGE)) {
                out[done..done + n].copy_from_slice(&p[off..off + n]);
            }
            done += n;
        }
        Ok(out)
    }

    /// Forget the pages holding `[pa, pa + len)` (they read as zeros again).
    pub fn discard(&mut self, pa: u64, len: u64) {
        let first = pa / PAGE;
        let last = pa.saturating_add(len.max(1) - 1) / PAGE;
        if last - first < self.pages.len() as u64 {
            for pfn in first..=last {
                self.pages.remove(&pfn);
            }
        } else {
            self.pages.retain(|pfn, _| *pfn < first || *pfn > last);
        }
    }

    /// SHA-384 over the non-zero pages, in address order (for state comparisons).
    pub fn digest(&self) -> [u8; 48] {
        let mut keys: Vec<_> = self
            .pages
            .iter()
            .filter(|(_, p)| p.iter().any(|&b| b != 0))
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        let mut h = openssl::sha::Sha384::new();
        for k in keys {
            h.update(&k.to_le_bytes());
            if let Some(p) = self.pages.get(&k) {
                h.update(&p[..]);
            }
        }
        h.finish()
    }

    /// Write `data` at `pa`.
    pub fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), Status> {
        Self::check(pa, data.len() as u64)?;
        let mut done = 0usize;
        while done < data.len() {
            let a = pa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(data.len() - done);
            let p = self
                .pages
                .entry(a / PAGE)
                .or_insert_with(|| Box::new([0u8; PAGE as usize]));
            p[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pa_memory_round_trips_across_pages_and_reads_zero_elsewhere() {
        let mut m = PaMemory::default();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        m.write(4090, &data).unwrap();
        assert_eq!(m.read(4090, data.len() as u64).unwrap(), data);
        assert_eq!(m.read(0, 16).unwrap(), vec![0u8; 16]);
        assert_eq!(m.read(PA_LIMIT - 8, 16), Err(Status::InvalidAddress));
        assert_eq!(m.read(0, MAX_XFER + 1), Err(Status::InvalidLength));
    }
}

fn need_len(buf: &[u8], n: usize) -> Result<(), Status> {
    if buf.len() < n {
        Err(Status::InvalidParam)
    } else {
        Ok(())
    }
}

fn r32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}

fn r64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

fn w32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// Spec command ids.
#[allow(missing_docs)]
pub mod cmd {
    pub const INIT: u32 = 0x01;
    pub const SHUTDOWN: u32 = 0x02;
    pub const PLATFORM_RESET: u32 = 0x03;
    pub const PLATFORM_STATUS: u32 = 0x04;
    pub const PEK_GEN: u32 = 0x05;
    pub const PEK_CSR: u32 = 0x06;
    pub const PEK_CERT_IMPORT: u32 = 0x07;
    pub const PDH_CERT_EXPORT: u32 = 0x08;
    pub const PDH_GEN: u32 = 0x09;
    pub const DF_FLUSH: u32 = 0x0A;
    pub const DOWNLOAD_FIRMWARE: u32 = 0x0B;
    pub const GET_ID: u32 = 0x0C;
    pub const INIT_EX: u32 = 0x0D;
    pub const NOP: u32 = 0x0E;
    pub const RING_BUFFER: u32 = 0x0F;
    pub const DECOMMISSION: u32 = 0x20;
    pub const ACTIVATE: u32 = 0x21;
    pub const DEACTIVATE: u32 = 0x22;
    pub const GUEST_STATUS: u32 = 0x23;
    pub const COPY: u32 = 0x24;
    pub const ACTIVATE_EX: u32 = 0x25;
    pub const LAUNCH_START: u32 = 0x30;
    pub const LAUNCH_UPDATE_DATA: u32 = 0x31;
    pub const LAUNCH_UPDATE_VMSA: u32 = 0x32;
    pub const LAUNCH_MEASURE: u32 = 0x33;
    pub const LAUNCH_SECRET: u32 = 0x34;
    pub const LAUNCH_FINISH: u32 = 0x35;
    pub const ATTESTATION: u32 = 0x36;
    pub const SEND_START: u32 = 0x40;
    pub const SEND_CANCEL: u32 = 0x44;
    pub const RECEIVE_START: u32 = 0x50;
    pub const RECEIVE_FINISH: u32 = 0x53;
    pub const DBG_DECRYPT: u32 = 0x60;
    pub const DBG_ENCRYPT: u32 = 0x61;
    pub const SWAP_OUT: u32 = 0x70;
    pub const SWAP_IN: u32 = 0x71;
}

use super::fw::PlatformState as P;

pub(crate) fn execute(
    fw: &mut Fw,
    mem: &mut PaMemory,
    id: u32,
    b: &mut [u8],
) -> Result<(), Status> {
    use cmd::*;
    match id {
        INIT => {
            need_len(b, 0x14)?;
            if fw.state != P::Uninit {
                return Err(Status::InvalidPlatformState);
            }
            let flags = r32(b, 0);
            if flags & !1 != 0 || r32(b, 4) != 0 {
                return Err(Status::InvalidConfig);
            }
            if flags & 1 != 0 {
                if !r64(b, 8).is_multiple_of(1 << 20) {
                    return Err(Status::InvalidAddress);
                }
                if r32(b, 0x10) != 1 << 20 {
                    return Err(Status::InvalidLength);
                }
            }
            fw.init(flags & 1 != 0)
        }
        SHUTDOWN => fw.shutdown(),
        PLATFORM_RESET => fw.platform_reset(),
        PLATFORM_STATUS => {
            need_len(b, 12)?;
            let s = fw.platform_status()?;
            b[..12].copy_from_slice(&s.to_bytes());
            Ok(())
        }
        PEK_GEN => fw.pek_gen(),
        PEK_CSR => {
            need_len(b, 12)?;
            let mut len = r32(b, 8);
            let r = fw.pek_csr(&mut len);
            w32(b, 8, len);
            mem.write(r64(b, 0), &r?)
        }
        PEK_CERT_IMPORT => {
            need_len(b, 0x1C)?;
            // Lengths are checked by the state machine after the ownership check; read at
            // most one cert's worth plus one byte so a wrong length stays wrong.
            let rd = |mem: &PaMemory, pa, len: u32| {
                mem.read(pa, (len as u64).min(SevCert::LEN as u64 + 1))
            };
            let pek = rd(mem, r64(b, 0), r32(b, 8))?;
            let oca = rd(mem, r64(b, 0x10), r32(b, 0x18))?;
            fw.pek_cert_import(&pek, &oca)
        }
        PDH_CERT_EXPORT => {
            need_len(b, 0x1C)?;
            let (mut pl, mut cl) = (r32(b, 8), r32(b, 0x18));
            let r = fw.pdh_cert_export(&mut pl, &mut cl);
            w32(b, 8, pl);
            w32(b, 0x18, cl);
            let (pdh, chain) = r?;
            mem.write(r64(b, 0), &pdh)?;
            mem.write(r64(b, 0x10), &chain)
        }
        PDH_GEN => fw.pdh_gen(),
        DF_FLUSH => fw.df_flush(),
        GET_ID => {
            need_len(b, 12)?;
            let mut len = r32(b, 8);
            let r = fw.get_id(&mut len);
            w32(b, 8, len);
            mem.write(r64(b, 0), &r?)
        }
        NOP => Ok(()),
        DOWNLOAD_FIRMWARE => {
            if fw.state != P::Uninit {
                return Err(Status::InvalidPlatformState);
            }
            Err(Status::Unsupported)
        }
        INIT_EX => {
            if fw.state != P::Uninit {
                return Err(Status::InvalidPlatformState);
            }
            Err(Status::Unsupported)
        }
        DECOMMISSION => {
            need_len(b, 4)?;
            fw.decommission(r32(b, 0))
        }
        ACTIVATE => {
            need_len(b, 8)?;
            fw.activate(r32(b, 0), r32(b, 4))
        }
        DEACTIVATE => {
            need_len(b, 4)?;
            fw.deactivate(r32(b, 0))
        }
        GUEST_STATUS => {
            need_len(b, 0x0D)?;
            let s = fw.guest_status(r32(b, 0))?;
            w32(b, 4, s.policy);
            w32(b, 8, s.asid);
            b[0x0C] = s.state as u8;
            Ok(())
        }
        LAUNCH_START => {
            need_len(b, 0x24)?;
            let gpa = r64(b, 8);
            let (godh, session);
            let (g, s) = if gpa != 0 {
                godh = mem.read(gpa, (r32(b, 0x10) as u64).min(SevCert::LEN as u64 + 1))?;
                session = mem.read(r64(b, 0x18), (r32(b, 0x20) as u64).min(129))?;
                (Some(&godh[..]), Some(&session[..]))
            } else {
                (None, None)
            };
            let h = fw.launch_start(&LaunchStartArgs {
                handle: r32(b, 0),
                policy: r32(b, 4),
                godh: g,
                session: s,
            })?;
            w32(b, 0, h);
            Ok(())
        }
        LAUNCH_UPDATE_DATA | LAUNCH_UPDATE_VMSA => {
            need_len(b, 0x14)?;
            let (h, pa, len) = (r32(b, 0), r64(b, 8), r32(b, 0x10));
            let g = fw.launch_update_check(h, pa, len, id == LAUNCH_UPDATE_VMSA)?;
            let mut data = mem.read(pa, len as u64)?;
            Fw::measure_data(g, &data)?;
            g.key
                .encrypt(pa, &mut data)
                .map_err(|_| Status::HwerrorPlatform)?;
            mem.write(pa, &data)
        }
        LAUNCH_MEASURE => {
            need_len(b, 0x14)?;
            let mut len = r32(b, 0x10);
            let r = fw.launch_measure(r32(b, 0), &mut len);
            w32(b, 0x10, len);
            mem.write(r64(b, 8), &r?)
        }
        LAUNCH_SECRET => {
            need_len(b, 0x34)?;
            let h = r32(b, 0);
            let hdr = mem.read(r64(b, 8), (r32(b, 0x10) as u64).min(53))?;
            let (gpa, glen) = (r64(b, 0x18), r32(b, 0x20));
            let tlen = (r32(b, 0x30) as u64).min(super::fw::MAX_SECRET_LEN as u64 + 16);
            let trans = mem.read(r64(b, 0x28), tlen)?;
            let pt = fw.launch_secret(h, &hdr, gpa, glen, &trans)?;
            let key = fw.guest(h)?.key.clone();
            let mut data = pt.to_vec();
            key.encrypt(gpa, &mut data)
                .map_err(|_| Status::HwerrorPlatform)?;
            mem.write(gpa, &data)
        }
        LAUNCH_FINISH => {
            need_len(b, 4)?;
            fw.launch_finish(r32(b, 0))
        }
        ATTESTATION => {
            need_len(b, 0x24)?;
            let mut len = r32(b, 0x20);
            let mnonce: [u8; 16] = b[0x10..0x20].try_into().map_err(|_| Status::InvalidParam)?;
            let r = fw.attestation(r32(b, 0), &mnonce, &mut len);
            w32(b, 0x20, len);
            mem.write(r64(b, 8), &r?)
        }
        DBG_DECRYPT | DBG_ENCRYPT => {
            need_len(b, 0x1C)?;
            let (h, src, dst, len) = (r32(b, 0), r64(b, 8), r64(b, 0x10), r32(b, 0x18));
            let key = fw.dbg_check(h, src, dst, len)?;
            let mut data = mem.read(src, len as u64)?;
            let r = if id == DBG_DECRYPT {
                key.decrypt(src, &mut data)
            } else {
                key.encrypt(dst, &mut data)
            };
            r.map_err(|_| Status::HwerrorPlatform)?;
            mem.write(dst, &data)
        }
        0x40..=0x44 => {
            if fw.state != P::Working {
                return Err(Status::InvalidPlatformState);
            }
            Err(Status::Unsupported)
        }
        0x50..=0x53 => {
            let ok = if id == RECEIVE_START {
                matches!(fw.state, P::Init | P::Working)
            } else {
                fw.state == P::Working
            };
            if !ok {
                return Err(Status::InvalidPlatformState);
            }
            Err(Status::Unsupported)
        }
        COPY | ACTIVATE_EX | SWAP_OUT | SWAP_IN => {
            if fw.state != P::Working {
                return Err(Status::InvalidPlatformState);
            }
            Err(Status::Unsupported)
        }
        _ => Err(Status::InvalidCommand),
    }
}
