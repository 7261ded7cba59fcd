//! sev-firmware
