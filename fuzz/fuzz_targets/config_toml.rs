//! TOML configuration (`vmm::config::tomlfile::from_toml_str`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vmm::config::{tomlfile, ValidationInputs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent-sevm-fuzz/vm.toml");
    let inputs = ValidationInputs {
        platform_cbitpos: Some(51),
        cli_cpus: Some(1),
        base_dir: None,
    };
    if let Err(e) = tomlfile::from_toml_str(text, path, &inputs) {
        let _ = e.to_string();
        let _ = e.location();
    }
    let _ = tomlfile::from_toml_str(text, path, &ValidationInputs::default());
});
