//! certs (in progress).
