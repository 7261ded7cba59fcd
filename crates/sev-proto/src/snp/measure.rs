//! The SEV-SNP launch digest: PAGE_INFO records and the SHA-384 chain SNP_LAUNCH_UPDATE extends
//! (notes §2.1).
//!
//! For every 4 KiB page: `LD_new = SHA-384(PAGE_INFO)`, where PAGE_INFO (0x70 bytes) is
//!
//! | off | size | field |
//! |---|---|---|
//! | 00 | 48 | DIGEST_CUR (the current launch digest; 48 zero bytes at LAUNCH_START) |
//! | 30 | 48 | CONTENTS: SHA-384 of the page (NORMAL, VMSA); zero for ZERO, UNMEASURED, SECRETS, CPUID |
//! | 60 | 2 | LENGTH = 0x70 |
//! | 62 | 1 | PAGE_TYPE |
//! | 63 | 1 | bit 0 IMI_PAGE |
//! | 64 | 1 | reserved |
//! | 65 | 1 | VMPL1_PERMS |
//! | 66 | 1 | VMPL2_PERMS |
//! | 67 | 1 | VMPL3_PERMS |
//! | 68 | 8 | GPA |
//!
//! Bytes 0x64..0x68 follow the AMD firmware source (reserved, VMPL1, VMPL2, VMPL3);
//! sev-snp-measure and the virtee `sev` crate write them in the opposite order. The two agree
//! whenever the VMPL permissions are zero, which is every KVM launch today (notes §2.1).
//!
//! Known answer: `tests/data/snp/ld_vector.txt`, made by sev-snp-measure's own chain
//! (`ld_vector.py` beside it), is reproduced step by step in the tests below.

use super::{sha384, FormatError};

/// Size of the launch digest (SHA-384).
pub const LD_SIZE: usize = 48;
/// Size of a PAGE_INFO record.
pub const PAGE_INFO_SIZE: usize = 0x70;
/// The GPA KVM records in the RMP for every VMSA page (and so the GPA that is measured).
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// The unit of measurement.
pub const PAGE_SIZE: usize = 4096;
/// VMSA bytes measured as zero: GUEST_TSC_SCALE (0x2F0) and GUEST_TSC_OFFSET (0x2F8).
pub const VMSA_TSC_FIELDS: std::ops::Range<usize> = 0x2F0..0x300;

const STRUCTURE: &str = "SNP_LAUNCH_UPDATE";

/// SNP_LAUNCH_UPDATE page types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageType {
    /// Measured and encrypted as given.
    Normal = 1,
    /// A VMSA (measured with the TSC fields as zero).
    Vmsa = 2,
    /// Written as zeros; contents digest zero.
    Zero = 3,
    /// Encrypted as given; contents digest zero.
    Unmeasured = 4,
    /// The secrets page (written by the firmware); contents digest zero.
    Secrets = 5,
    /// The CPUID page (sanitised by the firmware); contents digest zero.
    Cpuid = 6,
}

impl PageType {
    /// Decodes a PAGE_TYPE value (0 and 7.. are invalid; the firmware answers INVALID_PARAM).
    pub fn from_u8(v: u8) -> Result<Self, FormatError> {
        Ok(match v {
            1 => PageType::Normal,
            2 => PageType::Vmsa,
            3 => PageType::Zero,
            4 => PageType::Unmeasured,
            5 => PageType::Secrets,
            6 => PageType::Cpuid,
            _ => {
                return Err(FormatError::field(
                    STRUCTURE,
                    "PAGE_TYPE",
                    format!("{v} is not a page type (1..=6)"),
                ))
            }
        })
    }
}

/// One PAGE_INFO record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    /// The launch digest before this page.
    pub digest_cur: [u8; LD_SIZE],
    /// SHA-384 of the page, or zero for the types whose contents are not measured.
    pub contents: [u8; LD_SIZE],
    /// The page type.
    pub page_type: PageType,
    /// IMI_PAGE bit.
    pub imi_page: bool,
    /// VMPL1..3 permission masks.
    pub vmpl_perms: [u8; 3],
    /// Guest physical address of the page.
    pub gpa: u64,
}

impl PageInfo {
    /// Encodes the 0x70-byte record.
    pub fn to_bytes(&self) -> [u8; PAGE_INFO_SIZE] {
        let mut b = [0u8; PAGE_INFO_SIZE];
        b[..0x30].copy_from_slice(&self.digest_cur);
        b[0x30..0x60].copy_from_slice(&self.contents);
        b[0x60..0x62].copy_from_slice(&(PAGE_INFO_SIZE as u16).to_le_bytes());
        b[0x62] = self.page_type as u8;
        b[0x63] = u8::from(self.imi_page);
        b[0x65..0x68].copy_from_slice(&self.vmpl_perms);
        b[0x68..0x70].copy_from_slice(&self.gpa.to_le_bytes());
        b
    }

    /// Decodes a record, checking LENGTH, PAGE_TYPE, the IMI byte and the reserved byte.
    pub fn from_bytes(b: &[u8]) -> Result<Self, FormatError> {
        const S: &str = "PAGE_INFO";
        super::expect_len(S, b, PAGE_INFO_SIZE)?;
        let len = u16::from_le_bytes(super::arr(b, 0x60));
        if usize::from(len) != PAGE_INFO_SIZE {
            return Err(FormatError::field(
                S,
                "LENGTH",
                format!("0x{len:X}, expected 0x70"),
            ));
        }
        let page_type = PageType::from_u8(b[0x62]).map_err(|_| {
            FormatError::field(
                S,
                "PAGE_TYPE",
                format!("{} is not a page type (1..=6)", b[0x62]),
            )
        })?;
        if b[0x63] > 1 {
            return Err(FormatError::field(
                S,
                "IMI_PAGE",
                format!("0x{:02X}: bits 7:1 must be zero", b[0x63]),
            ));
        }
        super::expect_zero(S, "reserved", b, 0x64, 0x65)?;
        Ok(PageInfo {
            digest_cur: super::arr(b, 0),
            contents: super::arr(b, 0x30),
            page_type,
            imi_page: b[0x63] == 1,
            vmpl_perms: super::arr(b, 0x65),
            gpa: super::u64_at(b, 0x68),
        })
    }
}

/// A running SNP launch digest (the GCTX LD field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpLaunchDigest {
    ld: [u8; LD_SIZE],
}

impl Default for SnpLaunchDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl SnpLaunchDigest {
    /// A fresh digest: 48 zero bytes, as after SNP_LAUNCH_START.
    pub fn new() -> Self {
        SnpLaunchDigest { ld: [0; LD_SIZE] }
    }

    /// Continues from a given digest value.
    pub fn from_digest(ld: [u8; LD_SIZE]) -> Self {
        SnpLaunchDigest { ld }
    }

    /// The current digest.
    pub fn digest(&self) -> [u8; LD_SIZE] {
        self.ld
    }

    /// Extends the digest by one PAGE_INFO for a 4 KiB page; returns the record used.
    /// `contents` is the contents digest (zero for the unmeasured types).
    pub fn extend(
        &mut self,
        page_type: PageType,
        gpa: u64,
        contents: [u8; LD_SIZE],
        vmpl_perms: [u8; 3],
    ) -> PageInfo {
        let pi = PageInfo {
            digest_cur: self.ld,
            contents,
            page_type,
            imi_page: false,
            vmpl_perms,
            gpa,
        };
        self.ld = sha384(&[&pi.to_bytes()]);
        pi
    }

    fn check_range(field: &'static str, gpa: u64, len: usize) -> Result<u64, FormatError> {
        if !gpa.is_multiple_of(PAGE_SIZE as u64) {
            return Err(FormatError::field(
                STRUCTURE,
                field,
                format!("GPA 0x{gpa:X} is not 4 KiB aligned"),
            ));
        }
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(FormatError::field(
                STRUCTURE,
                field,
                format!("length {len} is not a non-zero multiple of 4096"),
            ));
        }
        let pages = (len / PAGE_SIZE) as u64;
        gpa.checked_add((pages - 1) * PAGE_SIZE as u64)
            .filter(|last| *last <= VMSA_GPA | 0xFFF)
            .ok_or_else(|| {
                FormatError::field(
                    STRUCTURE,
                    field,
                    format!("GPA range 0x{gpa:X}+{len} leaves the 52-bit space"),
                )
            })?;
        Ok(pages)
    }

    fn update_unmeasured_type(
        &mut self,
        t: PageType,
        field: &'static str,
        gpa: u64,
        len: usize,
    ) -> Result<(), FormatError> {
        let pages = Self::check_range(field, gpa, len)?;
        for i in 0..pages {
            self.extend(t, gpa + i * PAGE_SIZE as u64, [0; LD_SIZE], [0; 3]);
        }
        Ok(())
    }

    /// NORMAL pages: `contents` (a multiple of 4 KiB) measured page by page from `gpa`.
    pub fn update_normal(&mut self, gpa: u64, contents: &[u8]) -> Result<(), FormatError> {
        Self::check_range("NORMAL", gpa, contents.len())?;
        for (i, page) in contents.chunks_exact(PAGE_SIZE).enumerate() {
            self.extend(
                PageType::Normal,
                gpa + (i * PAGE_SIZE) as u64,
                sha384(&[page]),
                [0; 3],
            );
        }
        Ok(())
    }

    /// ZERO pages: `len` bytes from `gpa`.
    pub fn update_zero(&mut self, gpa: u64, len: usize) -> Result<(), FormatError> {
        self.update_unmeasured_type(PageType::Zero, "ZERO", gpa, len)
    }

    /// UNMEASURED pages: `len` bytes from `gpa` (the contents are not measured).
    pub fn update_unmeasured(&mut self, gpa: u64, len: usize) -> Result<(), FormatError> {
        self.update_unmeasured_type(PageType::Unmeasured, "UNMEASURED", gpa, len)
    }

    /// The SECRETS page at `gpa`.
    pub fn update_secrets(&mut self, gpa: u64) -> Result<(), FormatError> {
        self.update_unmeasured_type(PageType::Secrets, "SECRETS", gpa, PAGE_SIZE)
    }

    /// The CPUID page at `gpa` (its contents are sanitised, not measured).
    pub fn update_cpuid(&mut self, gpa: u64) -> Result<(), FormatError> {
        self.update_unmeasured_type(PageType::Cpuid, "CPUID", gpa, PAGE_SIZE)
    }

    /// A VMSA page at [`VMSA_GPA`] (KVM's rule), hashed with GUEST_TSC_SCALE/OFFSET as zero.
    pub fn update_vmsa(&mut self, vmsa: &[u8]) -> Result<(), FormatError> {
        self.update_vmsa_at(VMSA_GPA, vmsa)
    }

    /// A VMSA page at an explicit GPA (non-KVM hypervisors, IGVM).
    pub fn update_vmsa_at(&mut self, gpa: u64, vmsa: &[u8]) -> Result<(), FormatError> {
        if vmsa.len() != PAGE_SIZE {
            return Err(FormatError::Length {
                structure: "VMSA",
                expected: PAGE_SIZE,
                got: vmsa.len(),
            });
        }
        Self::check_range("VMSA", gpa, PAGE_SIZE)?;
        let mut page = [0u8; PAGE_SIZE];
        page.copy_from_slice(vmsa);
        self.extend(PageType::Vmsa, gpa, vmsa_contents_digest(&page), [0; 3]);
        Ok(())
    }
}

/// OVMF SEV metadata section types (the "ASEV" table OVMF publishes for SNP launches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OvmfSectionType {
    /// 1: memory OVMF pre-validates (measured as ZERO pages under QEMU).
    SnpSecMem,
    /// 2: the secrets page.
    SnpSecrets,
    /// 3: the CPUID page.
    Cpuid,
    /// 4: the SVSM calling-area page (ZERO).
    SvsmCaa,
    /// 0x10: the kernel-hashes page (NORMAL with the hash table, or ZERO without `-kernel`).
    SnpKernelHashes,
}

/// One OVMF SEV metadata section `{u32 gpa, u32 size, u32 type}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OvmfSection {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// Section type.
    pub section_type: OvmfSectionType,
}

/// Parses the OVMF SEV metadata of a firmware image: the footer-table entry (GUID
/// dc886566-984a-4798-a75e-5585a7bf67cc) holds the header's offset from the end of the image;
/// the header is `"ASEV" · u32 size · u32 version (1) · u32 num_items`, followed by the items.
/// An image without the entry has no sections (`Ok(vec![])`).
pub fn ovmf_sev_metadata(fw: &[u8]) -> Result<Vec<OvmfSection>, FormatError> {
    const M: &str = "OVMF_SEV_METADATA";
    let footer = crate::ovmf::FooterTable::parse(fw)
        .map_err(|e| FormatError::field("OVMF", "footer table", e.to_string()))?;
    let Some(off) = footer.sev_metadata_offset() else {
        return Ok(Vec::new());
    };
    let start = fw.len().checked_sub(off as usize).ok_or_else(|| {
        FormatError::field(
            M,
            "offset",
            format!("{off} is larger than the {}-byte image", fw.len()),
        )
    })?;
    let hdr = fw.get(start..start + 16).ok_or_else(|| {
        FormatError::field(
            M,
            "header",
            format!("16 bytes at 0x{start:X} exceed the image"),
        )
    })?;
    if &hdr[..4] != b"ASEV" {
        return Err(FormatError::field(
            M,
            "signature",
            format!("{:02X?} is not \"ASEV\"", &hdr[..4]),
        ));
    }
    let size = super::u32_at(hdr, 4) as usize;
    let version = super::u32_at(hdr, 8);
    if version != 1 {
        return Err(FormatError::field(
            M,
            "version",
            format!("{version}, expected 1"),
        ));
    }
    let n = super::u32_at(hdr, 12) as usize;
    if size < 16 || (size - 16) / 12 < n {
        return Err(FormatError::field(
            M,
            "size",
            format!("{size} does not hold {n} items of 12 bytes"),
        ));
    }
    let items = fw.get(start + 16..start + size).ok_or_else(|| {
        FormatError::field(
            M,
            "size",
            format!("{size} bytes at 0x{start:X} exceed the image"),
        )
    })?;
    let mut out = Vec::with_capacity(n);
    for (i, it) in items.chunks_exact(12).take(n).enumerate() {
        let t = super::u32_at(it, 8);
        let section_type = match t {
            1 => OvmfSectionType::SnpSecMem,
            2 => OvmfSectionType::SnpSecrets,
            3 => OvmfSectionType::Cpuid,
            4 => OvmfSectionType::SvsmCaa,
            0x10 => OvmfSectionType::SnpKernelHashes,
            _ => {
                return Err(FormatError::field(
                    M,
                    "type",
                    format!("item {i}: unknown section type 0x{t:X}"),
                ))
            }
        };
        out.push(OvmfSection {
            gpa: super::u32_at(it, 0),
            size: super::u32_at(it, 4),
            section_type,
        });
    }
    Ok(out)
}

/// SHA-384 contents digest of a NORMAL page. It uses the streaming hasher, not
/// `openssl::sha::sha384`: OpenSSL 3's one-shot SHA384() goes through EVP_Q_digest (a provider
/// fetch and a context allocation per call), which cost ~15% of a 4 KiB page
/// (docs/PERFORMANCE.md §9).
pub fn normal_page_digest(page: &[u8]) -> [u8; LD_SIZE] {
    sha384(&[page])
}

/// SHA-384 contents digest of a VMSA page as the firmware measures it: GUEST_TSC_SCALE and
/// GUEST_TSC_OFFSET ([`VMSA_TSC_FIELDS`]) read as zero.
pub fn vmsa_contents_digest(vmsa: &[u8; PAGE_SIZE]) -> [u8; LD_SIZE] {
    let zeros = [0u8; 16];
    sha384(&[
        &vmsa[..VMSA_TSC_FIELDS.start],
        &zeros,
        &vmsa[VMSA_TSC_FIELDS.end..],
    ])
}

/// One measured page of a launch, as an observer of [`qemu_ovmf_launch`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct LaunchStep<'a> {
    /// Where the page comes from: `OVMF`, a metadata section name (`SNP_SEC_MEM`,
    /// `SNP_SECRETS`, `CPUID`, `SVSM_CAA`, `SNP_KERNEL_HASHES`) or `VMSA`.
    pub source: &'a str,
    /// The vCPU index for VMSA pages.
    pub vcpu: Option<usize>,
    /// The PAGE_INFO record hashed.
    pub page: &'a PageInfo,
    /// The launch digest after this page.
    pub ld: &'a [u8; LD_SIZE],
}

/// Drives a [`SnpLaunchDigest`] page by page, showing each PAGE_INFO to an observer.
struct Chain<'o> {
    ld: SnpLaunchDigest,
    observe: &'o mut dyn FnMut(&LaunchStep<'_>),
}

impl Chain<'_> {
    fn step(
        &mut self,
        source: &str,
        vcpu: Option<usize>,
        t: PageType,
        gpa: u64,
        contents: [u8; LD_SIZE],
    ) {
        let page = self.ld.extend(t, gpa, contents, [0; 3]);
        let ld = self.ld.digest();
        (self.observe)(&LaunchStep {
            source,
            vcpu,
            page: &page,
            ld: &ld,
        });
    }

    fn normal(&mut self, source: &str, gpa: u64, data: &[u8]) -> Result<(), FormatError> {
        SnpLaunchDigest::check_range("NORMAL", gpa, data.len())?;
        for (i, pg) in data.chunks_exact(PAGE_SIZE).enumerate() {
            let g = gpa + (i * PAGE_SIZE) as u64;
            self.step(source, None, PageType::Normal, g, sha384(&[pg]));
        }
        Ok(())
    }

    fn unmeasured(
        &mut self,
        source: &str,
        t: PageType,
        gpa: u64,
        len: usize,
    ) -> Result<(), FormatError> {
        let field = match t {
            PageType::Zero => "ZERO",
            PageType::Secrets => "SECRETS",
            PageType::Cpuid => "CPUID",
            _ => "UNMEASURED",
        };
        let pages = SnpLaunchDigest::check_range(field, gpa, len)?;
        for i in 0..pages {
            self.step(source, None, t, gpa + i * PAGE_SIZE as u64, [0; LD_SIZE]);
        }
        Ok(())
    }
}

/// The SNP launch digest QEMU + KVM produce for an OVMF image (the recipe sev-snp-measure
/// models for `--vmm-type QEMU`): the whole image as NORMAL pages ending at 4 GiB; then each
/// metadata section in order (SNP_SEC_MEM and SVSM_CAA as ZERO, SECRETS, CPUID, and the
/// kernel-hashes section as NORMAL pages holding `kernel_hashes` — the 176-byte padded table —
/// at the in-page offset of the footer's hashes area, or ZERO without it); then one VMSA per
/// vCPU (at [`VMSA_GPA`]).
pub fn qemu_ovmf_launch_digest(
    fw: &[u8],
    kernel_hashes: Option<&[u8; crate::kernel_hashes::PADDED_LEN]>,
    vmsas: &[[u8; PAGE_SIZE]],
) -> Result<[u8; LD_SIZE], FormatError> {
    qemu_ovmf_launch(fw, kernel_hashes, vmsas, &mut |_| {})
}

/// [`qemu_ovmf_launch_digest`], showing every PAGE_INFO to `observe` in measurement order (what
/// `sevm owner snp measure --dump-launch` prints). Nothing is measured when the image or the
/// inputs are refused: all checks run before the first page.
pub fn qemu_ovmf_launch(
    fw: &[u8],
    kernel_hashes: Option<&[u8; crate::kernel_hashes::PADDED_LEN]>,
    vmsas: &[[u8; PAGE_SIZE]],
    observe: &mut dyn FnMut(&LaunchStep<'_>),
) -> Result<[u8; LD_SIZE], FormatError> {
    const M: &str = "OVMF_SEV_METADATA";
    let len = u64::try_from(fw.len()).unwrap_or(u64::MAX);
    let gpa = (1u64 << 32).checked_sub(len).ok_or_else(|| {
        FormatError::field(
            "OVMF",
            "size",
            format!("{} bytes do not fit below 4 GiB", fw.len()),
        )
    })?;
    SnpLaunchDigest::check_range("NORMAL", gpa, fw.len())
        .map_err(|e| FormatError::field("OVMF", "size", e.to_string()))?;
    let sections = ovmf_sev_metadata(fw)?;
    let footer = crate::ovmf::FooterTable::parse(fw)
        .map_err(|e| FormatError::field("OVMF", "footer table", e.to_string()))?;
    // The kernel-hashes page, built (and checked) before anything is measured.
    let mut hashes_page = None;
    if let Some(t) = kernel_hashes {
        let s = sections
            .iter()
            .find(|s| s.section_type == OvmfSectionType::SnpKernelHashes)
            .ok_or_else(|| {
                FormatError::field(
                    M,
                    "SNP_KERNEL_HASHES",
                    "kernel hashes given but the image has no such section",
                )
            })?;
        let area = footer.hashes_area().ok_or_else(|| {
            FormatError::field(
                "OVMF",
                "hashes area",
                "kernel hashes given but the image has no hashes area",
            )
        })?;
        let n = s.size as usize;
        if n != PAGE_SIZE {
            return Err(FormatError::field(
                M,
                "SNP_KERNEL_HASHES",
                format!("section size {n}, expected one 4096-byte page"),
            ));
        }
        let at = (area.base & 0xFFF) as usize;
        let mut page = vec![0u8; n];
        page.get_mut(at..at + t.len())
            .ok_or_else(|| {
                FormatError::field(
                    M,
                    "SNP_KERNEL_HASHES",
                    format!("size {n} cannot hold the table at offset 0x{at:X}"),
                )
            })?
            .copy_from_slice(t);
        hashes_page = Some(page);
    }
    for s in &sections {
        let (field, n) = match s.section_type {
            OvmfSectionType::SnpSecrets => ("SECRETS", PAGE_SIZE),
            OvmfSectionType::Cpuid => ("CPUID", PAGE_SIZE),
            _ => ("ZERO", s.size as usize),
        };
        SnpLaunchDigest::check_range(field, u64::from(s.gpa), n)
            .map_err(|e| FormatError::field(M, section_name(s.section_type), e.to_string()))?;
    }
    let mut c = Chain {
        ld: SnpLaunchDigest::new(),
        observe,
    };
    c.normal("OVMF", gpa, fw)?;
    for s in &sections {
        let (g, n) = (u64::from(s.gpa), s.size as usize);
        let name = section_name(s.section_type);
        match s.section_type {
            OvmfSectionType::SnpSecMem | OvmfSectionType::SvsmCaa => {
                c.unmeasured(name, PageType::Zero, g, n)?
            }
            // The firmware takes one page for these (QEMU passes the section's size, which
            // OVMF makes one page).
            OvmfSectionType::SnpSecrets => c.unmeasured(name, PageType::Secrets, g, PAGE_SIZE)?,
            OvmfSectionType::Cpuid => c.unmeasured(name, PageType::Cpuid, g, PAGE_SIZE)?,
            OvmfSectionType::SnpKernelHashes => match &hashes_page {
                None => c.unmeasured(name, PageType::Zero, g, n)?,
                Some(page) => c.normal(name, g, page)?,
            },
        }
    }
    for (i, v) in vmsas.iter().enumerate() {
        c.step(
            "VMSA",
            Some(i),
            PageType::Vmsa,
            VMSA_GPA,
            vmsa_contents_digest(v),
        );
    }
    Ok(c.ld.digest())
}

/// The name of an OVMF SEV metadata section type, as in OVMF's `OvmfSevMetadata.asm`.
pub fn section_name(t: OvmfSectionType) -> &'static str {
    match t {
        OvmfSectionType::SnpSecMem => "SNP_SEC_MEM",
        OvmfSectionType::SnpSecrets => "SNP_SECRETS",
        OvmfSectionType::Cpuid => "CPUID",
        OvmfSectionType::SvsmCaa => "SVSM_CAA",
        OvmfSectionType::SnpKernelHashes => "SNP_KERNEL_HASHES",
    }
}

/// The name of a page type, as in the SNP ABI (`PAGE_TYPE_NORMAL` → `NORMAL`).
pub fn page_type_name(t: PageType) -> &'static str {
    match t {
        PageType::Normal => "NORMAL",
        PageType::Vmsa => "VMSA",
        PageType::Zero => "ZERO",
        PageType::Unmeasured => "UNMEASURED",
        PageType::Secrets => "SECRETS",
        PageType::Cpuid => "CPUID",
    }
}

/// QEMU x86 CPU models and their CPUID(1).EAX family/model/stepping (QEMU's `builtin_x86_defs`,
/// the models sev-snp-measure names): what `-cpu MODEL` puts in RDX at reset, and so in every
/// VMSA.
pub const QEMU_CPU_MODELS: [(&str, u32, u32, u32); 16] = [
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// The CPUID(1).EAX signature of a QEMU CPU model name (exact, case-sensitive as QEMU).
pub fn qemu_cpu_sig(model: &str) -> Option<u32> {
    QEMU_CPU_MODELS
        .iter()
        .find(|(n, ..)| *n == model)
        .map(|&(_, f, m, s)| crate::vmsa::cpu_sig(f, m, s))
}

/// The initial VMSAs of `vcpus` vCPUs of a QEMU SNP guest (VM made with `KVM_SEV_INIT2`, so
/// the FPU state is in the VMSA): vCPU 0 at the reset vector 0xFFFFFFF0, the others at the
/// OVMF SEV-ES reset address `ap_reset` (required when `vcpus > 1`), `cpu_sig` in RDX and
/// `sev_features` (KVM's `vmsa_features`) in SEV_FEATURES.
pub fn qemu_snp_vmsas(
    vcpus: usize,
    ap_reset: Option<u32>,
    cpu_sig: u32,
    sev_features: u64,
) -> Result<Vec<[u8; PAGE_SIZE]>, FormatError> {
    use crate::vmsa::{kvm_es_vmsa, KvmVmsaParams, VcpuState};
    let params = KvmVmsaParams {
        vmsa_features: sev_features,
        init2: true,
    };
    let bsp = kvm_es_vmsa(&VcpuState::qemu_reset(true, 0xFFFF_FFF0, cpu_sig), &params);
    let mut out = Vec::with_capacity(vcpus);
    if vcpus > 0 {
        out.push(bsp);
    }
    if vcpus > 1 {
        let eip = ap_reset.filter(|&e| e != 0).ok_or_else(|| {
            FormatError::field(
                "OVMF",
                "SEV-ES reset block",
                format!(
                    "{vcpus} vCPUs need the AP reset address (footer GUID \
                     00f771de-1a7e-4fcb-890e-68c77e2fb44e), which the image does not have"
                ),
            )
        })?;
        let ap = kvm_es_vmsa(&VcpuState::qemu_reset(false, eip, cpu_sig), &params);
        out.resize(vcpus, ap);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(pages: usize, salt: usize) -> Vec<u8> {
        (0..pages * 4096)
            .map(|i| (((i % 4096) * 7 + (i / 4096) * 13 + salt) & 0xFF) as u8)
            .collect()
    }

    fn vector() -> Vec<(String, String)> {
        let t = include_str!("../../tests/data/snp/ld_vector.txt");
        t.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.trim().to_string()))
            .collect()
    }

    #[test]
    fn sev_snp_measure_chain_known_answer() {
        let v = vector();
        assert_eq!(v.len(), 6, "ld_vector.txt has six steps");
        let mut ld = SnpLaunchDigest::new();
        let mut got = Vec::new();
        ld.update_normal(0x800000, &pattern(2, 1)).unwrap();
        got.push(ld.digest());
        ld.update_zero(0x809000, 3 * 4096).unwrap();
        got.push(ld.digest());
        ld.update_unmeasured(0x80C000, 4096).unwrap();
        got.push(ld.digest());
        ld.update_secrets(0x80D000).unwrap();
        got.push(ld.digest());
        ld.update_cpuid(0x80E000).unwrap();
        got.push(ld.digest());
        let mut vmsa = pattern(1, 5);
        vmsa[VMSA_TSC_FIELDS].fill(0);
        ld.update_vmsa(&vmsa).unwrap();
        got.push(ld.digest());
        for ((name, want), g) in v.iter().zip(got) {
            assert_eq!(&hex::encode(g), want, "step {name}");
        }
    }

    #[test]
    fn vmsa_tsc_fields_not_measured() {
        let mut a = SnpLaunchDigest::new();
        let mut b = SnpLaunchDigest::new();
        let v1 = pattern(1, 9);
        let mut v2 = v1.clone();
        v2[0x2F0..0x300].fill(0xAA);
        a.update_vmsa(&v1).unwrap();
        b.update_vmsa(&v2).unwrap();
        assert_eq!(a, b);
        v2[0x300] ^= 1;
        let mut c = SnpLaunchDigest::new();
        c.update_vmsa(&v2).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn page_info_layout_and_round_trip() {
        let mut ld = SnpLaunchDigest::from_digest([7; 48]);
        let pi = ld.extend(PageType::Cpuid, 0x1234_5000, [9; 48], [1, 2, 3]);
        let b = pi.to_bytes();
        assert_eq!(&b[..48], &[7; 48]);
        assert_eq!(&b[0x60..0x68], &[0x70, 0, 6, 0, 0, 1, 2, 3]);
        assert_eq!(&b[0x68..], &0x1234_5000u64.to_le_bytes());
        assert_eq!(PageInfo::from_bytes(&b).unwrap(), pi);
        assert_eq!(ld.digest(), sha384(&[&b]));
    }

    #[test]
    fn page_info_errors() {
        let b = SnpLaunchDigest::new()
            .extend(PageType::Normal, 0, [0; 48], [0; 3])
            .to_bytes();
        let e = PageInfo::from_bytes(&b[..0x6F]).unwrap_err();
        assert_eq!(
            e,
            FormatError::Length {
                structure: "PAGE_INFO",
                expected: 0x70,
                got: 0x6F
            }
        );
        let mut x = b;
        x[0x60] = 0x71;
        assert!(PageInfo::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .starts_with("PAGE_INFO.LENGTH"));
        for t in [0u8, 7, 0xFF] {
            let mut x = b;
            x[0x62] = t;
            assert!(PageInfo::from_bytes(&x)
                .unwrap_err()
                .to_string()
                .starts_with("PAGE_INFO.PAGE_TYPE"));
        }
        let mut x = b;
        x[0x63] = 2;
        assert!(PageInfo::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .starts_with("PAGE_INFO.IMI_PAGE"));
        let mut x = b;
        x[0x64] = 1;
        assert!(PageInfo::from_bytes(&x)
            .unwrap_err()
            .to_string()
            .starts_with("PAGE_INFO.reserved"));
        assert!(PageType::from_u8(0).is_err());
        assert_eq!(PageType::from_u8(6).unwrap(), PageType::Cpuid);
    }

    #[test]
    fn update_errors() {
        let mut ld = SnpLaunchDigest::new();
        let e = ld.update_normal(0x800, &[0; 4096]).unwrap_err();
        assert!(
            e.to_string()
                .contains("SNP_LAUNCH_UPDATE.NORMAL: GPA 0x800 is not 4 KiB aligned"),
            "{e}"
        );
        let e = ld.update_normal(0, &[0; 100]).unwrap_err();
        assert!(e.to_string().contains("length 100"), "{e}");
        assert!(ld.update_normal(0, &[]).is_err());
        assert!(ld.update_zero(0, 0).is_err());
        assert!(ld
            .update_unmeasured(0x1000, 1)
            .unwrap_err()
            .to_string()
            .contains("UNMEASURED"));
        assert!(ld
            .update_secrets(1)
            .unwrap_err()
            .to_string()
            .contains("SECRETS"));
        assert!(ld
            .update_cpuid(0xFFF)
            .unwrap_err()
            .to_string()
            .contains("CPUID"));
        let e = ld.update_zero(0xFFFF_FFFF_F000, 8192).unwrap_err();
        assert!(e.to_string().contains("52-bit"), "{e}");
        assert!(ld.update_zero(!0xFFF, 4096).is_err());
        let e = ld.update_vmsa(&[0; 100]).unwrap_err();
        assert_eq!(
            e,
            FormatError::Length {
                structure: "VMSA",
                expected: 4096,
                got: 100
            }
        );
        // Nothing was measured by the failing calls.
        assert_eq!(ld.digest(), [0; 48]);
    }

    #[test]
    fn two_pages_equal_two_single_updates() {
        let data = pattern(2, 3);
        let mut a = SnpLaunchDigest::new();
        a.update_normal(0x10000, &data).unwrap();
        let mut b = SnpLaunchDigest::new();
        b.update_normal(0x10000, &data[..4096]).unwrap();
        b.update_normal(0x11000, &data[4096..]).unwrap();
        assert_eq!(a, b);
        let mut c = SnpLaunchDigest::new();
        c.update_normal(0x11000, &data[4096..]).unwrap();
        c.update_normal(0x10000, &data[..4096]).unwrap();
        assert_ne!(a, c, "order matters");
    }
    /// A 4 KiB image: ASEV metadata at 0x100 (offset from end 0xF00) with `items`, a hashes
    /// area at 4 GiB - 0x2000 + 0x400, and the footer table at the end.
    fn synthetic_image(items: &[(u32, u32, u32)], version: u32) -> Vec<u8> {
        use crate::ovmf::{FooterTable, SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID};
        let mut fw = vec![0u8; 4096];
        let mut md = b"ASEV".to_vec();
        md.extend_from_slice(&(16 + 12 * items.len() as u32).to_le_bytes());
        md.extend_from_slice(&version.to_le_bytes());
        md.extend_from_slice(&(items.len() as u32).to_le_bytes());
        for (g, n, t) in items {
            for v in [g, n, t] {
                md.extend_from_slice(&v.to_le_bytes());
            }
        }
        fw[0x100..0x100 + md.len()].copy_from_slice(&md);
        let mut hashes = 0xFFFF_E400u32.to_le_bytes().to_vec();
        hashes.extend_from_slice(&0x400u32.to_le_bytes());
        let t = FooterTable {
            entries: vec![
                (SEV_METADATA_GUID, 0xF00u32.to_le_bytes().to_vec()),
                (SEV_HASH_TABLE_RV_GUID, hashes),
            ],
        }
        .encode()
        .unwrap();
        let end = 4096 - 32;
        fw[end - t.len()..end].copy_from_slice(&t);
        fw
    }

    #[test]
    fn ovmf_recipe_on_a_synthetic_image() {
        let items = [
            (0x80_0000, 0x2000, 1),
            (0x80_2000, 0x1000, 2),
            (0x80_3000, 0x1000, 3),
            (0xFFFF_E000, 0x1000, 0x10),
            (0x80_4000, 0x1000, 4),
        ];
        let fw = synthetic_image(&items, 1);
        let secs = ovmf_sev_metadata(&fw).unwrap();
        let types: Vec<_> = secs.iter().map(|s| s.section_type).collect();
        use OvmfSectionType::*;
        assert_eq!(
            types,
            [SnpSecMem, SnpSecrets, Cpuid, SnpKernelHashes, SvsmCaa]
        );
        let table = [0x5Au8; 176];
        let vmsa = [[0x11u8; 4096]];
        let got = qemu_ovmf_launch_digest(&fw, Some(&table), &vmsa).unwrap();
        // The same chain by hand.
        let mut ld = SnpLaunchDigest::new();
        ld.update_normal(0xFFFF_F000, &fw).unwrap();
        ld.update_zero(0x80_0000, 0x2000).unwrap();
        ld.update_secrets(0x80_2000).unwrap();
        ld.update_cpuid(0x80_3000).unwrap();
        let mut page = vec![0u8; 4096];
        page[0x400..0x400 + 176].copy_from_slice(&table);
        ld.update_normal(0xFFFF_E000, &page).unwrap();
        ld.update_zero(0x80_4000, 0x1000).unwrap();
        ld.update_vmsa(&vmsa[0]).unwrap();
        assert_eq!(got, ld.digest());
        // Without kernel hashes the section is ZERO.
        let mut ld2 = SnpLaunchDigest::new();
        ld2.update_normal(0xFFFF_F000, &fw).unwrap();
        ld2.update_zero(0x80_0000, 0x2000).unwrap();
        ld2.update_secrets(0x80_2000).unwrap();
        ld2.update_cpuid(0x80_3000).unwrap();
        ld2.update_zero(0xFFFF_E000, 0x1000).unwrap();
        ld2.update_zero(0x80_4000, 0x1000).unwrap();
        assert_eq!(
            qemu_ovmf_launch_digest(&fw, None, &[]).unwrap(),
            ld2.digest()
        );
    }

    #[test]
    fn ovmf_metadata_errors() {
        let e = ovmf_sev_metadata(&synthetic_image(&[(0, 0x1000, 7)], 1)).unwrap_err();
        assert!(
            e.to_string().starts_with("OVMF_SEV_METADATA.type: item 0"),
            "{e}"
        );
        let e = ovmf_sev_metadata(&synthetic_image(&[], 2)).unwrap_err();
        assert!(
            e.to_string().starts_with("OVMF_SEV_METADATA.version"),
            "{e}"
        );
        let e = qemu_ovmf_launch_digest(
            &synthetic_image(&[(0xFFFF_E000, 0x2000, 0x10)], 1),
            Some(&[0; 176]),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected one 4096-byte page"), "{e}");
        let e = qemu_ovmf_launch_digest(&synthetic_image(&[(0x1001, 0x1000, 1)], 1), None, &[])
            .unwrap_err();
        assert!(e.to_string().contains("not 4 KiB aligned"), "{e}");
        let e = ovmf_sev_metadata(&[0u8; 4096]).unwrap_err();
        assert!(e.to_string().starts_with("OVMF.footer table"), "{e}");
    }
}
