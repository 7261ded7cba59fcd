//! Crypto helpers the model needs beyond `sev-proto` (KDF, session unwrap, measurement
//! and secret packets all come from `sev-proto`).

/// Constant-time equality (false when lengths differ).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ct_eq_checks_length_and_content() {
        assert!(super::ct_eq(b"abc", b"abc"));
        assert!(!super::ct_eq(b"abc", b"abd"));
        assert!(!super::ct_eq(b"abc", b"ab"));
    }
}
