//! `vm-run (--firmware FILE | --guest NAME) [--memory SIZE]`: boot one VM with the vmm library
//! (serial to stdout, one vCPU) and exit with `ExitStatus::exit_code()`. Benchmark fallback for
//! `sevm run`; no SEV.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = vmm::VmConfig::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(v) = it.next() else {
            eprintln!("vm-run: {a} needs a value");
            return ExitCode::from(2);
        };
        match a.as_str() {
            "--firmware" => cfg.boot = vmm::BootSource::Firmware(PathBuf::from(v)),
            "--guest" => cfg.boot = vmm::BootSource::Bundled(v.clone()),
            "--memory" => match vmm::parse_memory_size(v) {
                Ok(m) => cfg.memory = m,
                Err(e) => {
                    eprintln!("vm-run: --memory {v}: {e}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: vm-run (--firmware FILE | --guest NAME) [--memory SIZE]");
                return ExitCode::from(2);
            }
        }
    }
    let mut vm = match vmm::Vm::build(&cfg) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("vm-run: {e}");
            return ExitCode::from(1);
        }
    };
    match vm.run() {
        Ok(st) => ExitCode::from(u8::try_from(st.exit_code()).unwrap_or(1)),
        Err(e) => {
            eprintln!("vm-run: {e}");
            ExitCode::from(1)
        }
    }
}
