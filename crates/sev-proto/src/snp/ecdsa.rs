//! ecdsa (in progress).
