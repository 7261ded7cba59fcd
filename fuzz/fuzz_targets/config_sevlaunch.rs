//! The 2016 seed's `[sev-launch]` file (`vmm::config::sevlaunch::from_sev_launch_str`):
//! the parser whose C original overflowed fixed buffers on long hex values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vmm::config::{sevlaunch, ValidationInputs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent-sevm-fuzz/launch.conf");
    let inputs = ValidationInputs {
        platform_cbitpos: Some(47),
        cli_cpus: Some(4),
        base_dir: None,
    };
    match sevlaunch::from_sev_launch_str(text, path, &inputs) {
        Ok(cfg) => {
            let _ = cfg.es();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = sevlaunch::from_sev_launch_str(text, path, &ValidationInputs::default());
});
