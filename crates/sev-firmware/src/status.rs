//! SEV firmware status codes: re-exported from `sev-proto` so every crate shares one type.

pub use sev_proto::status::Status;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_used_by_the_model() {
        assert_eq!(Status::BadMeasurement.code(), 0x0B);
        assert_eq!(Status::from_u32(0x10), Some(Status::InvalidGuest));
        assert_eq!(Status::BadMeasurement.name(), "BAD_MEASUREMENT");
    }
}
