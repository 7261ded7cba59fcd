//! sev-proto
