//! The soft SNP firmware's raw command interface ([`SoftSnpPlatform::execute`]): SNP command
//! ids and the command buffers as the PSP sees them (`snp-spec-notes.md` §1.1, §1.3), decoded
//! onto the same commands as the [`SnpGuest`](super::SnpGuest) trait and the sPA API. Every
//! `*_paddr` names a page of the platform's host memory / RMP; outputs (status pages, guest
//! request responses, DBG_DECRYPT plaintext) go to FIRMWARE pages, which the host reclaims
//! (SNP_PAGE_RECLAIM + RMPUPDATE) before it reads them, as Linux does.
//!
//! Lets a fuzzer drive random command sequences (`fuzz/fuzz_targets/snp_raw.rs`).

use super::rmp::{PageState, PAGE_4K};
use super::soft::{SnpConfig, SoftSnpPlatform};
use super::{SnpLaunchFinish, SnpLaunchStart, SnpLaunchUpdate};
use sev_proto::snp::policy::SnpPolicy;
use sev_proto::status::Status;

/// SNP command ids (§1.1) the soft firmware executes; any other id is INVALID_COMMAND.
#[allow(missing_docs)]
pub mod cmd {
    pub const SNP_INIT: u32 = 0x81;
    pub const SNP_SHUTDOWN: u32 = 0x82;
    pub const SNP_PLATFORM_STATUS: u32 = 0x83;
    pub const SNP_INIT_EX: u32 = 0x85;
    pub const SNP_SHUTDOWN_EX: u32 = 0x86;
    pub const SNP_DECOMMISSION: u32 = 0x90;
    pub const SNP_ACTIVATE: u32 = 0x91;
    pub const SNP_GUEST_STATUS: u32 = 0x92;
    pub const SNP_GCTX_CREATE: u32 = 0x93;
    pub const SNP_GUEST_REQUEST: u32 = 0x94;
    pub const SNP_LAUNCH_START: u32 = 0xA0;
    pub const SNP_LAUNCH_UPDATE: u32 = 0xA1;
    pub const SNP_LAUNCH_FINISH: u32 = 0xA2;
    pub const SNP_DBG_DECRYPT: u32 = 0xB0;
    pub const SNP_DBG_ENCRYPT: u32 = 0xB1;
    pub const SNP_PAGE_RECLAIM: u32 = 0xC7;
    pub const SNP_CONFIG: u32 = 0xC9;
    pub const SNP_COMMIT: u32 = 0xCB;
    pub const SNP_VLEK_LOAD: u32 = 0xCD;
}

/// Command buffer sizes (bytes) of the commands above (0: no buffer).
pub fn buffer_len(id: u32) -> Option<usize> {
    use cmd::*;
    Some(match id {
        SNP_INIT | SNP_SHUTDOWN => 0,
        SNP_PLATFORM_STATUS | SNP_DECOMMISSION | SNP_GCTX_CREATE | SNP_PAGE_RECLAIM => 8,
        SNP_ACTIVATE | SNP_GUEST_STATUS | SNP_VLEK_LOAD => 0x10,
        SNP_GUEST_REQUEST | SNP_DBG_DECRYPT | SNP_DBG_ENCRYPT => 0x18,
        SNP_LAUNCH_UPDATE => 0x20,
        SNP_LAUNCH_START => 0x30,
        SNP_INIT_EX | SNP_LAUNCH_FINISH | SNP_CONFIG => 0x40,
        SNP_SHUTDOWN_EX => 8,
        SNP_COMMIT => 4,
        _ => return None,
    })
}

fn r32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(o..o + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn r64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn page_addr(a: u64) -> Result<u64, Status> {
    if a.is_multiple_of(PAGE_4K) {
        Ok(a)
    } else {
        Err(Status::InvalidParam)
    }
}

fn status_of(e: crate::FwError) -> Status {
    e.status().unwrap_or(Status::HwerrorPlatform)
}

impl SoftSnpPlatform {
    /// Runs SNP command `id` on the command buffer `buf` (the layouts of the notes §1.3;
    /// addresses name pages of this platform's host memory, see [`Self::write_pa`] and
    /// [`Self::rmp_update`]). A buffer shorter than the command's is INVALID_LENGTH; an
    /// unknown id INVALID_COMMAND. Returns the firmware status; a refusal changes nothing.
    pub fn execute(&self, id: u32, buf: &mut [u8]) -> Status {
        match self.execute_inner(id, buf) {
            Ok(()) => Status::Success,
            Err(s) => s,
        }
    }

    fn execute_inner(&self, id: u32, buf: &mut [u8]) -> Result<(), Status> {
        use super::{SnpPlatform, PLATFORM_STATUS_SIZE};
        use cmd::*;
        let need = buffer_len(id).ok_or(Status::InvalidCommand)?;
        if buf.len() < need {
            return Err(Status::InvalidLength);
        }
        let b: &[u8] = buf;
        match id {
            SNP_INIT => self.snp_init().map_err(status_of),
            SNP_INIT_EX => {
                // bit0 INIT_RMP (the soft RMP is always initialised), bit1 LIST_PADDR_EN not
                // modelled; every other bit and byte MBZ.
                let flags = r32(b, 0);
                if flags & !3 != 0 || b[4..8].iter().chain(&b[0x10..0x40]).any(|&x| x != 0) {
                    return Err(Status::InvalidParam);
                }
                if flags & 2 != 0 || r64(b, 8) != 0 {
                    return Err(Status::Unsupported);
                }
                self.snp_init().map_err(status_of)
            }
            SNP_SHUTDOWN | SNP_SHUTDOWN_EX => self.snp_shutdown().map_err(status_of),
            SNP_PLATFORM_STATUS => {
                let out = page_addr(r64(b, 0))?;
                let s = self.snp_platform_status().map_err(status_of)?;
                self.fw_output(out, &s.to_bytes()[..PLATFORM_STATUS_SIZE], s.is_rmp_init)
            }
            SNP_GCTX_CREATE => self.gctx_create_at(r64(b, 0)).map_err(status_of),
            SNP_LAUNCH_START => {
                let mut gosvw = [0u8; 16];
                gosvw.copy_from_slice(&b[0x20..0x30]);
                let ls = SnpLaunchStart {
                    policy: SnpPolicy(r64(b, 8)),
                    ma_gctx_paddr: r64(b, 0x10),
                    flags: r32(b, 0x18),
                    desired_tsc_freq: r32(b, 0x1C),
                    gosvw,
                    asid: 0,
                };
                self.launch_start_at(r64(b, 0), &ls).map_err(status_of)
            }
            SNP_ACTIVATE => self.activate(r64(b, 0), r32(b, 8)).map_err(status_of),
            SNP_LAUNCH_UPDATE => {
                let w = r32(b, 8);
                let perms = r32(b, 0x18);
                if w & !0x1F != 0 || r32(b, 0x0C) != 0 || perms & 0xFF != 0 || r32(b, 0x1C) != 0 {
                    return Err(Status::InvalidParam);
                }
                let u = SnpLaunchUpdate {
                    page_type: ((w >> 1) & 7) as u8,
                    page_size_2m: w & 1 != 0,
                    imi_page: w & 0x10 != 0,
                    gpa: 0,
                    vmpl_perms: [(perms >> 8) as u8, (perms >> 16) as u8, (perms >> 24) as u8],
                };
                self.launch_update_at(r64(b, 0), r64(b, 0x10), &u)
                    .map_err(status_of)
            }
            SNP_LAUNCH_FINISH => {
                let flags = r64(b, 0x18);
                if flags & !7 != 0 {
                    return Err(Status::InvalidParam);
                }
                let id_en = flags & 1 != 0;
                let (block, auth) = if id_en {
                    let blk = self.fw_input(r64(b, 8), 0x60)?;
                    let auth = self.fw_input(page_addr(r64(b, 0x10))?, 0x1000)?;
                    (Some(blk), Some(auth))
                } else {
                    (None, None)
                };
                let mut host_data = [0u8; 32];
                host_data.copy_from_slice(&b[0x20..0x40]);
                let f = SnpLaunchFinish {
                    id_block: block.as_deref(),
                    id_auth: auth.as_deref(),
                    auth_key_en: flags & 2 != 0,
                    vcek_dis: flags & 4 != 0,
                    host_data,
                };
                self.launch_finish_at(r64(b, 0), &f).map_err(status_of)
            }
            SNP_GUEST_STATUS => {
                let out = page_addr(r64(b, 8))?;
                let s = self.guest_status_at(r64(b, 0)).map_err(status_of)?;
                self.fw_output(out, &s.to_bytes(), true)
            }
            SNP_GUEST_REQUEST => {
                let (gctx, req, resp) =
                    (r64(b, 0), page_addr(r64(b, 8))?, page_addr(r64(b, 0x10))?);
                self.guest_request_at(gctx, req, resp).map_err(status_of)
            }
            SNP_DECOMMISSION => self.decommission_at(r64(b, 0)).map_err(status_of),
            SNP_PAGE_RECLAIM => {
                let a = r64(b, 0);
                self.page_reclaim(a & !1, a & 1 != 0).map_err(status_of)
            }
            SNP_DBG_DECRYPT | SNP_DBG_ENCRYPT => {
                let (gctx, src, dst) = (r64(b, 0), page_addr(r64(b, 8))?, page_addr(r64(b, 0x10))?);
                self.dbg_at(gctx, src, dst, id == SNP_DBG_ENCRYPT)
                    .map_err(status_of)
            }
            SNP_CONFIG => {
                if b[0x0C..0x40].iter().any(|&x| x != 0) {
                    return Err(Status::InvalidParam);
                }
                let c = SnpConfig {
                    reported_tcb: r64(b, 0),
                    flags: r32(b, 8),
                };
                self.snp_config(&c).map_err(status_of)
            }
            SNP_COMMIT => {
                if r32(b, 0) != 4 {
                    return Err(Status::InvalidLength);
                }
                self.snp_commit().map_err(status_of)
            }
            SNP_VLEK_LOAD => {
                // `u32 length = 0x10 · u8 wrapped_version = 0 · rsvd[3] · u64 wrapped_paddr`.
                if r32(b, 0) != 0x10 {
                    return Err(Status::InvalidLength);
                }
                if b[4..8].iter().any(|&x| x != 0) {
                    return Err(Status::InvalidParam);
                }
                let blob = self.fw_input(r64(b, 8), super::vlek::WRAPPED_SIZE as u64)?;
                self.vlek_load(&blob).map_err(status_of)
            }
            _ => Err(Status::InvalidCommand),
        }
    }

    /// The firmware reads `len` bytes at `pa` (any page; the firmware may read what the host
    /// cannot). Beyond the modelled memory: INVALID_ADDRESS.
    fn fw_input(&self, pa: u64, len: u64) -> Result<Vec<u8>, Status> {
        self.fw_read(pa, len)
    }

    /// The firmware writes `data` at the page `pa`: with the RMP initialised it must be a
    /// FIRMWARE page (INVALID_PAGE_STATE), as for SNP_PLATFORM_STATUS (§1.3).
    fn fw_output(&self, pa: u64, data: &[u8], rmp_init: bool) -> Result<(), Status> {
        if rmp_init && self.page_state(pa) != PageState::Firmware {
            return Err(Status::InvalidPageState);
        }
        self.fw_write(pa, data)
    }
}
