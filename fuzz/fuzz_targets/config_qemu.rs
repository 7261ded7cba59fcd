//! QEMU `--object`/`--machine` option syntax (`vmm::config::qemu`).
//! Input: text; lines become separate `--object` arguments, a line starting with `M:`
//! becomes the `--machine` argument.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmm::config::{qemu, ValidationInputs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = qemu::parse_options(text, "qom-type");
    let mut machine = None;
    let mut objects = Vec::new();
    for line in text.split('\n') {
        if let Some(m) = line.strip_prefix("M:") {
            machine = Some(m);
        } else {
            objects.push(line);
        }
    }
    let inputs = ValidationInputs {
        platform_cbitpos: Some(47),
        cli_cpus: Some(2),
        base_dir: None,
    };
    let _ = qemu::from_qemu_args(&objects, machine, &inputs);
    let _ = qemu::from_qemu_args(&objects, machine, &ValidationInputs::default());
});
