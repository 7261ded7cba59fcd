//! `sevm run --guest-channel PATH` (or `guest-channel` in a TOML `[sev-snp]` table): the guest
//! channel of a running soft SNP VM
//! (`sevm_shim_proto::guest`, docs/CI-WITHOUT-HARDWARE.md). The socket stands for the guest
//! kernel: its client reads the guest's secrets page and sends guest requests to the VM's
//! firmware context through the same service the guest's doorbell uses, so the VMPCK0
//! sequence numbers are shared with the guest's own requests. It is created with mode 0600,
//! refused if PATH exists, removed when the run ends.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use sevm_shim_proto::guest::{put_msg_counts, ChannelBackend, PAGE, SECRETS_NOT_RUNNING};
use vm_memory::{Bytes, GuestAddress};
use vmm::confidential::snp::{SnpHandle, SnpPhase};
use vmm::snp_request::{GuestRequestService, VMM_ERR_INVALID_REQUEST};
use vmm::GuestMemoryMmap;
use zeroize::Zeroizing;

/// Status of a secrets answer when the page cannot be read.
const SECRETS_UNREADABLE: u32 = 2;

/// The channel's view of one SNP VM.
pub struct VmChannel {
    handle: SnpHandle,
    svc: Arc<dyn GuestRequestService>,
    mem: GuestMemoryMmap,
}

impl VmChannel {
    /// The channel of the VM with this launch handle and guest memory.
    pub fn new(handle: SnpHandle, mem: GuestMemoryMmap) -> VmChannel {
        let svc = handle.requests();
        VmChannel { handle, svc, mem }
    }

    fn running(&self) -> bool {
        self.handle.status().phase == SnpPhase::Running
    }
}

impl ChannelBackend for VmChannel {
    fn secrets(&self) -> Result<Zeroizing<Vec<u8>>, u32> {
        if !self.running() {
            return Err(SECRETS_NOT_RUNNING);
        }
        let mut p = Zeroizing::new(vec![0u8; PAGE]);
        self.mem
            .read_slice(&mut p[..], GuestAddress(vmm::layout::SNP_SECRETS))
            .map_err(|_| SECRETS_UNREADABLE)?;
        // What a Linux guest keeps in its OS area: the message count of each VMPCK.
        put_msg_counts(&mut p, &self.handle.msg_counts());
        Ok(p)
    }

    fn guest_request(
        &self,
        req: &[u8; PAGE],
        resp: &mut [u8; PAGE],
        certs: Option<&mut [u8]>,
    ) -> (u32, u32, u64) {
        if !self.running() {
            return (0, VMM_ERR_INVALID_REQUEST, 0);
        }
        let o = self.svc.guest_request(req, resp, certs);
        (o.fw_error, o.vmm_error, o.cert_pages_needed)
    }
}

/// The listening channel; the socket file goes when this is dropped.
pub struct GuestChannel {
    path: PathBuf,
}

impl Drop for GuestChannel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What `run` would refuse about the channel path before binding it (also `config check`):
/// an existing file, or a parent that is not a directory.
pub fn check_path(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        bail!(
            "--guest-channel {}: the path exists; remove it or choose another (sevm does not \
             replace files)",
            path.display()
        );
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "--guest-channel {}: {} is not a directory",
            path.display(),
            parent.display()
        );
    }
    Ok(())
}

/// Creates the socket at `path` (mode 0600) and serves `backend` on it from a thread.
pub fn start(path: &Path, backend: VmChannel) -> Result<GuestChannel> {
    check_path(path)?;
    let listener = UnixListener::bind(path)
        .with_context(|| format!("--guest-channel: listening on {}", path.display()))?;
    let ch = GuestChannel {
        path: path.to_path_buf(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("--guest-channel: making {} private", path.display()))?;
    std::thread::Builder::new()
        .name("guest-channel".into())
        .spawn(move || sevm_shim_proto::guest::serve_channel(listener, &backend))
        .context("starting the guest channel thread")?;
    eprintln!(
        "sevm: guest channel on {} (its client is inside the guest: it reads VMPCK0)",
        path.display()
    );
    Ok(ch)
}
