//! msg (in progress).
