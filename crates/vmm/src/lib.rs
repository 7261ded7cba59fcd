//! vmm
pub mod config;
