//! SEV launch configuration: three equal ways in, one validated [`SevLaunchConfig`].
//!
//! * [`qemu::from_qemu_args`]: QEMU's `--object sev-guest,...` plus
//!   `--machine confidential-guest-support=ID` (or the old alias `memory-encryption=ID`);
//! * [`tomlfile::from_toml_file`]: a TOML file with a `[sev]` table (QEMU's kebab-case
//!   property names) and optional VM keys;
//! * [`sevlaunch::from_sev_launch_file`]: the 2016 RFC's `[sev-launch]` INI file
//!   (`--sev-config FILE`), every key of the seed plus `dh_cert_file` / `session_file`.
//!
//! All three fill the same intermediate record and go through the same final checks
//! (`finish`), so a key means the same thing whichever way it came in. Every error
//! names where the bad value was written: file and line and key, or the `--object`
//! option and key. No input makes this module panic.
//!
//! This module reads the owner's files (base64 GODH certificate and session blob) and
//! checks their sizes and the certificate's public key fields; it does not verify
//! signatures or curve points (the firmware does, at LAUNCH_START).

pub mod devices;
pub mod qemu;
pub mod sevlaunch;
pub mod snp;
pub mod tomlfile;

mod fields;

use std::fmt;
use std::path::{Path, PathBuf};

pub use fields::godh_public_key_le;

/// Largest config file we read (bytes). Larger files are refused, not truncated.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;
/// Largest owner file (base64 certificate or session) we read (bytes).
pub const MAX_OWNER_FILE: u64 = 64 << 10;
/// Largest vCPU count accepted anywhere in a launch configuration.
pub const MAX_VCPUS: u32 = 1024;
/// Largest vCPU count a sevm VM can have ([`crate::layout::MAX_LINUX_CPUS`]); `Vm::build` also
/// refuses more than KVM offers on the host (`KVM_CAP_MAX_VCPUS`), which only the run can
/// know, and more than [`crate::layout::MAX_CPUS`] for a bundled guest.
pub const MAX_VM_CPUS: u32 = crate::layout::MAX_LINUX_CPUS as u32;

/// QEMU's default guest policy: NODBG alone. The policy bits are
/// [`sev_proto::policy::GuestPolicy`]'s; none is defined here.
pub const DEFAULT_POLICY: u32 = sev_proto::policy::GuestPolicy::NODBG;

/// Which firmware backend runs the launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevBackend {
    /// The software model of the AMD Secure Processor (default).
    Soft,
    /// The real firmware behind `/dev/sev` and KVM.
    Hw,
}

impl SevBackend {
    /// Parses `soft` or `hw`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "soft" => Some(Self::Soft),
            "hw" => Some(Self::Hw),
            _ => None,
        }
    }
}

/// QEMU's `OnOffAuto` for `legacy-vm-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnOffAuto {
    /// `on`: use the legacy KVM_SEV_INIT / ES_INIT VM type.
    On,
    /// `off`: use KVM_SEV_INIT2 VM types.
    Off,
    /// `auto` (default): legacy unless a feature needs INIT2.
    #[default]
    Auto,
}

/// Where a [`SevLaunchConfig`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--object sev-guest,id=ID,...` selected by `--machine confidential-guest-support=ID`.
    QemuObject {
        /// The object's `id`.
        id: String,
    },
    /// The `[sev]` table of a TOML file.
    Toml {
        /// The file.
        path: PathBuf,
    },
    /// The `[sev-launch]` section of a `--sev-config` file.
    SevLaunch {
        /// The file.
        path: PathBuf,
    },
}

/// The validated SEV launch configuration, the same whichever way it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SevLaunchConfig {
    /// Guest policy (LAUNCH_START); default 0x1 (NODBG) as in QEMU.
    pub policy: u32,
    /// C-bit position if given; it equals the platform's when the platform's was known.
    pub cbitpos: Option<u8>,
    /// Physical address bits lost to memory encryption, 1..=63 (default 1 outside QEMU syntax).
    pub reduced_phys_bits: u8,
    /// The guest owner's Diffie-Hellman certificate and launch session blob (each decoded
    /// from its base64 file and parsed); both or neither.
    pub owner: Option<sev_proto::session::LaunchOwner>,
    /// LAUNCH_START handle: 0 = new key, else share the key of that guest.
    pub handle: u32,
    /// Measure the kernel-hashes table into a firmware that carries one.
    pub kernel_hashes: bool,
    /// Number of vCPUs if the configuration (or `--cpus`) says.
    pub vcpus: Option<u32>,
    /// Firmware backend if the configuration says (`--sev-backend` overrides).
    pub backend: Option<SevBackend>,
    /// Soft platform directory if the configuration says (`--platform-dir` overrides).
    pub platform_dir: Option<PathBuf>,
    /// QEMU's `sev-device` (default `/dev/sev`), used by the hw backend.
    pub sev_device: PathBuf,
    /// QEMU's `legacy-vm-type`. sevm honours only `on` and `auto` (see
    /// [`SevLaunchConfig::check_supported`]).
    pub legacy_vm_type: OnOffAuto,
    /// Where `legacy-vm-type` was written, if it was.
    pub legacy_vm_type_at: Option<Where>,
    /// QEMU's `debug-swap` (SEV-ES only). sevm honours only `off` (see
    /// [`SevLaunchConfig::check_supported`]).
    pub debug_swap: bool,
    /// Where `debug-swap` was written, if it was.
    pub debug_swap_at: Option<Where>,
    /// Where this came from.
    pub source: ConfigSource,
}

impl SevLaunchConfig {
    /// True when the policy asks for SEV-ES.
    pub fn es(&self) -> bool {
        sev_proto::policy::GuestPolicy(self.policy).es()
    }

    /// Refuses the well-formed QEMU values that sevm's launch cannot honour, naming the key
    /// and where it was written. Parsing accepts them (they are valid QEMU); `sevm run` and
    /// `sevm config check` call this so that nothing is silently ignored:
    ///
    /// * `legacy-vm-type=off` asks for a KVM_SEV_INIT2 VM type. sevm creates the VM with
    ///   KVM's default type and starts SEV with KVM_SEV_INIT / KVM_SEV_ES_INIT (the hw
    ///   backend) or the soft model, which is what `on` and `auto` (legacy unless a feature
    ///   needs INIT2; none that sevm supports does) mean, so only those are accepted.
    /// * `debug-swap=on` asks for the DebugSwap VMSA feature, which needs KVM_SEV_INIT2's
    ///   `vmsa_features`; sevm's VMSAs never set it, so only `off` is accepted.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        let at = |w: &Option<Where>, key: &str| {
            w.clone().unwrap_or_else(|| Where::Option {
                option: "the SEV configuration".into(),
                key: Some(key.into()),
            })
        };
        if self.legacy_vm_type == OnOffAuto::Off {
            return Err(ConfigError::Unsupported {
                at: at(&self.legacy_vm_type_at, "legacy-vm-type"),
                msg: "legacy-vm-type=off needs a KVM_SEV_INIT2 VM type; sevm uses the legacy \
                      KVM_SEV_INIT / KVM_SEV_ES_INIT (accepted: on, auto)"
                    .into(),
            });
        }
        if self.debug_swap {
            return Err(ConfigError::Unsupported {
                at: at(&self.debug_swap_at, "debug-swap"),
                msg: "debug-swap=on needs the DebugSwap VMSA feature (KVM_SEV_INIT2 \
                      vmsa_features), which sevm does not set (accepted: off)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Facts from outside the configuration that it is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationInputs {
    /// The platform's C-bit position (CPUID 0x8000001F EBX[5:0], or the soft platform's).
    pub platform_cbitpos: Option<u8>,
    /// `--cpus N` from the command line, which the configuration must agree with.
    pub cli_cpus: Option<u32>,
    /// Directory that relative file names in `--object` options are resolved against
    /// (default: the process's current directory). Files named in config files are
    /// resolved against the config file's directory.
    pub base_dir: Option<PathBuf>,
}

/// Where a bad value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    /// A line of a config file.
    Line {
        /// The config file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The key as written (empty for a line that is not a key).
        key: String,
    },
    /// A config file as a whole (e.g. a key that is missing from it).
    File {
        /// The config file.
        file: PathBuf,
        /// The key concerned, if any.
        key: Option<String>,
    },
    /// A command-line option (`--object ...`, `--machine ...`, `--cpus`).
    Option {
        /// The option and its text, e.g. `--object sev-guest,id=sev0`.
        option: String,
        /// The key inside the option, if any.
        key: Option<String>,
    },
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Where::Line { file, line, key } if key.is_empty() => {
                write!(f, "{}:{}", file.display(), line)
            }
            Where::Line { file, line, key } => {
                write!(f, "{}:{}: key `{}`", file.display(), line, key)
            }
            Where::File { file, key: None } => write!(f, "{}", file.display()),
            Where::File { file, key: Some(k) } => write!(f, "{}: key `{}`", file.display(), k),
            Where::Option { option, key: None } => write!(f, "`{option}`"),
            Where::Option {
                option,
                key: Some(k),
            } => write!(f, "`{option}`: key `{k}`"),
        }
    }
}

/// Shortens user text for an error message (values can be arbitrarily long).
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}... ({} chars)", s.chars().count())
    }
}

/// Every way a launch configuration can be wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file itself cannot be read.
    #[error("{path}: cannot read config file: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not a regular file, too large or not text (the message names it).
    #[error(transparent)]
    File(sevm_files::FileError),
    /// A file named by a key is missing, unreadable or too large.
    #[error("{at}: cannot read file {path}: {reason}")]
    MissingFile {
        /// Where the file was named.
        at: Where,
        /// The file (resolved).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The text is not in the format's syntax.
    #[error("{at}: syntax error: {msg}")]
    Syntax {
        /// Where.
        at: Where,
        /// What is wrong.
        msg: String,
    },
    /// A key this format does not have.
    #[error("{at}: unknown key{hint}")]
    UnknownKey {
        /// Where.
        at: Where,
        /// A suggestion, starting with "; " or empty.
        hint: String,
    },
    /// A key given twice.
    #[error("{at}: duplicate key (first given {first})")]
    DuplicateKey {
        /// The second occurrence.
        at: Where,
        /// The first occurrence, described.
        first: String,
    },
    /// A required key is absent.
    #[error("{at}: missing required key: {why}")]
    MissingKey {
        /// Where it should have been.
        at: Where,
        /// Why it is required.
        why: String,
    },
    /// A value of the wrong type or form.
    #[error("{at}: invalid value `{value}`: expected {expected}")]
    InvalidValue {
        /// Where.
        at: Where,
        /// The value (clipped).
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A number outside its allowed range.
    #[error("{at}: value {value} out of range: {range}")]
    OutOfRange {
        /// Where.
        at: Where,
        /// The value (clipped).
        value: String,
        /// The allowed range, in words.
        range: String,
    },
    /// Hex text of the wrong length.
    #[error("{at}: hex value has {got_digits} digits ({got_bytes} bytes), expected {want_digits} digits ({want_bytes} bytes){note}")]
    HexLength {
        /// Where.
        at: Where,
        /// Hex digits given.
        got_digits: usize,
        /// Bytes given (digits / 2, rounded down).
        got_bytes: usize,
        /// Hex digits expected.
        want_digits: usize,
        /// Bytes expected.
        want_bytes: usize,
        /// Extra explanation, starting with "; " or empty.
        note: String,
    },
    /// A base64 owner file that does not decode, or decodes to the wrong size.
    #[error("{at}: file {path}: {msg}")]
    OwnerFile {
        /// Where the file was named.
        at: Where,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The configuration's C-bit position differs from the platform's.
    #[error("{at}: cbitpos {requested} does not match the platform's C-bit position {platform}")]
    CbitposMismatch {
        /// Where.
        at: Where,
        /// The platform's value.
        platform: u8,
        /// The configured value.
        requested: u8,
    },
    /// Two values that must agree do not (a key vs a file, a key vs `--cpus`, ...).
    #[error("{at}: {msg}")]
    Mismatch {
        /// Where.
        at: Where,
        /// What disagrees.
        msg: String,
    },
    /// A combination of keys that cannot work.
    #[error("{at}: {msg}")]
    Conflict {
        /// Where.
        at: Where,
        /// What conflicts.
        msg: String,
    },
    /// A value that is well-formed but has no meaning sevm can honour.
    #[error("{at}: unsupported: {msg}")]
    Unsupported {
        /// Where.
        at: Where,
        /// Why.
        msg: String,
    },
}

impl ConfigError {
    /// Where the error was, if it is tied to a place.
    pub fn location(&self) -> Option<&Where> {
        match self {
            ConfigError::ReadConfig { .. } | ConfigError::File(_) => None,
            ConfigError::MissingFile { at, .. }
            | ConfigError::Syntax { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::DuplicateKey { at, .. }
            | ConfigError::MissingKey { at, .. }
            | ConfigError::InvalidValue { at, .. }
            | ConfigError::OutOfRange { at, .. }
            | ConfigError::HexLength { at, .. }
            | ConfigError::OwnerFile { at, .. }
            | ConfigError::CbitposMismatch { at, .. }
            | ConfigError::Mismatch { at, .. }
            | ConfigError::Conflict { at, .. }
            | ConfigError::Unsupported { at, .. } => Some(at),
        }
    }
}

/// Checks a VM's vCPU count `n`, written at `at`: it must be 1..=[`MAX_VM_CPUS`], the range
/// `Vm::build` accepts (KVM permitting), so that `sevm config check` refuses what `sevm run`
/// would refuse.
pub fn check_vm_cpus(n: i64, at: Where) -> Result<u8, ConfigError> {
    match u8::try_from(n) {
        Ok(c) if (1..=MAX_VM_CPUS).contains(&u32::from(c)) => Ok(c),
        _ => Err(ConfigError::OutOfRange {
            at,
            value: n.to_string(),
            range: format!("1..={MAX_VM_CPUS} vCPUs (sevm's limit per VM)"),
        }),
    }
}

/// Checks `--cpus N` from the command line (see [`check_vm_cpus`]); the error names `--cpus`.
pub fn check_cli_cpus(n: u32) -> Result<u8, ConfigError> {
    check_vm_cpus(
        i64::from(n),
        Where::Option {
            option: format!("--cpus {n}"),
            key: None,
        },
    )
}

/// Reads a config file (at most [`MAX_CONFIG_FILE`] bytes of UTF-8; FIFOs, devices and
/// directories are refused without blocking).
pub(crate) fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    let r = sevm_files::Limit::new("config file", MAX_CONFIG_FILE)
        .why("a configuration file is a few KiB")
        .allow_empty()
        .read_to_string(path);
    r.map_err(|e| match e {
        sevm_files::FileError::Open { source, .. } | sevm_files::FileError::Read { source, .. } => {
            ConfigError::ReadConfig {
                path: path.to_path_buf(),
                source,
            }
        }
        other => ConfigError::File(other),
    })
}

/// 1-based line number of byte offset `pos` in `text`.
pub(crate) fn line_of(text: &str, pos: usize) -> usize {
    let end = pos.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_display() {
        let w = Where::Line {
            file: "a/sev.conf".into(),
            line: 4,
            key: "dh_pub_qx".into(),
        };
        assert_eq!(w.to_string(), "a/sev.conf:4: key `dh_pub_qx`");
        let w = Where::Option {
            option: "--object sev-guest,id=s".into(),
            key: Some("cbitpos".into()),
        };
        assert_eq!(w.to_string(), "`--object sev-guest,id=s`: key `cbitpos`");
        let w = Where::File {
            file: "x.toml".into(),
            key: None,
        };
        assert_eq!(w.to_string(), "x.toml");
    }

    #[test]
    fn clip_and_lines() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(100);
        assert!(clip(&long).ends_with("(100 chars)"));
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }

    #[test]
    fn vm_cpu_counts() {
        assert_eq!(check_cli_cpus(1).unwrap(), 1);
        assert_eq!(check_cli_cpus(MAX_VM_CPUS).unwrap() as u32, MAX_VM_CPUS);
        for bad in [0, MAX_VM_CPUS + 1, 255, u32::MAX] {
            let e = check_cli_cpus(bad).unwrap_err();
            assert!(matches!(e, ConfigError::OutOfRange { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("`--cpus {bad}`")) && msg.contains("out of range"),
                "{msg}"
            );
        }
        let at = Where::File {
            file: "vm.toml".into(),
            key: Some("cpus".into()),
        };
        assert!(check_vm_cpus(-1, at.clone()).is_err());
        assert!(check_vm_cpus(i64::MAX, at.clone()).is_err());
        assert_eq!(check_vm_cpus(2, at).unwrap(), 2);
    }

    #[test]
    fn config_files_take_devices_in_the_cli_syntax() {
        let inputs = ValidationInputs::default();
        let ok = tomlfile::from_toml_str(
            "disk = [\"path=d.img,readonly=on\", \"path=/abs.img\"]\nnet = [\"tap=tap0\"]\nvsock = \"cid=3,uds=/tmp/v.sock\"\n",
            Path::new("/etc/sevm/vm.toml"),
            &inputs,
        )
        .unwrap();
        assert_eq!(ok.vm.disks.len(), 2);
        assert_eq!(ok.vm.disks[0].path, Path::new("/etc/sevm/d.img"));
        assert!(ok.vm.disks[0].readonly);
        assert_eq!(ok.vm.disks[1].path, Path::new("/abs.img"));
        assert_eq!(ok.vm.nets[0].tap, "tap0");
        assert_eq!(ok.vm.vsock.as_ref().map(|v| v.cid), Some(3));
        for (text, line, key, says) in [
            (
                "memory = 64\ndisk = \"path=x\"\n",
                2,
                "disk",
                "an array of strings",
            ),
            (
                "disk = [\"readonly=on\"]\n",
                1,
                "disk",
                "path=FILE is required",
            ),
            (
                "net = [\"tap=t,mac=01:00:00:00:00:00\"]\n",
                1,
                "net",
                "multicast",
            ),
            (
                "\n\nvsock = \"cid=1,uds=/x\"\n",
                3,
                "vsock",
                "cid must be 3",
            ),
        ] {
            let e = tomlfile::from_toml_str(text, Path::new("vm.toml"), &inputs)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("vm.toml:{line}: key `{key}`")) && e.contains(says),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn config_files_refuse_vm_cpu_counts_a_vm_cannot_have() {
        let inputs = ValidationInputs::default();
        let e = tomlfile::from_toml_str("memory = 64\ncpus = 255\n", Path::new("vm.toml"), &inputs)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("vm.toml:2: key `cpus`") && msg.contains("out of range"),
            "{msg}"
        );
        let ok = tomlfile::from_toml_str("cpus = 254\n", Path::new("vm.toml"), &inputs).unwrap();
        assert_eq!(ok.vm.cpus, Some(254));
        // `--cpus 0` is refused by every format, naming the option.
        let zero = ValidationInputs {
            cli_cpus: Some(0),
            ..ValidationInputs::default()
        };
        let e = tomlfile::from_toml_str("", Path::new("vm.toml"), &zero).unwrap_err();
        assert!(e.to_string().contains("`--cpus 0`"), "{e}");
        let e = qemu::from_qemu_args(
            &["sev-guest,id=s,cbitpos=47,reduced-phys-bits=1".to_string()],
            Some("confidential-guest-support=s"),
            &zero,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`--cpus 0`"), "{e}");
    }

    #[test]
    fn finding11_toml_memory_is_checked_as_run_checks_it() {
        let inputs = ValidationInputs::default();
        for (text, why) in [
            ("memory = 1\n", "too small"),
            ("memory = 1048576\n", "too large"),
            ("memory = \"1G\"\nmemory2 = 1\n", ""),
            ("memory = -5\n", "negative"),
            ("memory = \"8192G\"\n", "too large"),
        ] {
            let r = tomlfile::from_toml_str(text, Path::new("vm.toml"), &inputs);
            if why.is_empty() {
                assert!(r.is_err(), "{text}: unknown key accepted");
                continue;
            }
            let msg = r.unwrap_err().to_string();
            assert!(
                msg.contains("vm.toml:1: key `memory`")
                    && msg.contains("out of range")
                    && msg.contains("4..=3072 MiB")
                    && msg.contains(why),
                "{text}: {msg}"
            );
        }
        // What the VM takes is still accepted, at both ends.
        for (text, mib) in [("memory = 4\n", 4), ("memory = \"3G\"\n", 3072)] {
            let c = tomlfile::from_toml_str(text, Path::new("vm.toml"), &inputs).unwrap();
            assert_eq!(c.vm.memory_mib, Some(mib), "{text}");
            crate::memory::check_memory_size(mib << 20).unwrap();
        }
    }

    #[test]
    fn finding20_vcpu_count_beyond_the_vm_limit_names_the_limit() {
        let inputs = ValidationInputs::default();
        // 1024 vCPUs; a mask of 256 set bits.
        let mask = "ff".repeat(32);
        for (key, value) in [("vcpu_count", "1024"), ("vcpu_mask", mask.as_str())] {
            let text = format!("[sev-launch]\n{key} = \"{value}\"\n");
            let e =
                sevlaunch::from_sev_launch_str(&text, Path::new("s.conf"), &inputs).unwrap_err();
            assert!(matches!(e, ConfigError::OutOfRange { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("s.conf:2: key `{key}`"))
                    && msg.contains(&format!("1..={MAX_VM_CPUS} vCPUs"))
                    && !msg.contains("--cpus"),
                "{msg}"
            );
        }
        let ok = sevlaunch::from_sev_launch_str(
            "[sev-launch]\nvcpu_count = \"8\"\n",
            Path::new("s.conf"),
            &inputs,
        )
        .unwrap();
        assert_eq!(ok.vcpus, Some(8));
    }

    #[test]
    fn unsupported_vm_type_and_debug_swap_are_refused() {
        let inputs = ValidationInputs::default();
        let parse = |sev: &str| {
            tomlfile::from_toml_str(&format!("[sev]\n{sev}"), Path::new("vm.toml"), &inputs)
                .unwrap()
                .sev
                .unwrap()
        };
        for ok in [
            "",
            "legacy-vm-type = \"on\"\n",
            "legacy-vm-type = \"auto\"\n",
        ] {
            parse(ok).check_supported().unwrap();
        }
        parse("policy = 5\ndebug-swap = false\n")
            .check_supported()
            .unwrap();
        let e = parse("policy = 1\nlegacy-vm-type = \"off\"\n")
            .check_supported()
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("vm.toml:3: key `legacy-vm-type`")
                && msg.contains("unsupported")
                && msg.contains("KVM_SEV_INIT2"),
            "{msg}"
        );
        let e = parse("policy = 5\ndebug-swap = true\n")
            .check_supported()
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("vm.toml:3: key `debug-swap`") && msg.contains("unsupported"),
            "{msg}"
        );
        // The QEMU syntax names the --object option and key.
        let cfg = qemu::from_qemu_args(
            &["sev-guest,id=s,policy=5,reduced-phys-bits=1,debug-swap=on".to_string()],
            Some("confidential-guest-support=s"),
            &inputs,
        )
        .unwrap()
        .unwrap();
        let msg = cfg.check_supported().unwrap_err().to_string();
        assert!(msg.contains("key `debug-swap`: unsupported"), "{msg}");
    }

    #[test]
    fn backend_names() {
        assert_eq!(SevBackend::parse("soft"), Some(SevBackend::Soft));
        assert_eq!(SevBackend::parse("hw"), Some(SevBackend::Hw));
        assert_eq!(SevBackend::parse("HW"), None);
    }
}
