//! LAUNCH_SECRET packets: header decoding and `open_packet` with keys, measurement and
//! lengths taken from the input; plus a build/open round trip.
//! Input: 32 bytes of keys (TEK‖TIK), 32 bytes measure, 4 bytes guest_len, 52 bytes header,
//! then the ciphertext.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sev_proto::secret::{build_packet, open_packet, PacketHeader};
use sev_proto::session::TransportKeys;

fuzz_target!(|data: &[u8]| {
    let _ = PacketHeader::from_bytes(data);
    if data.len() < 120 {
        return;
    }
    let mut keys = TransportKeys::zero();
    keys.tek.copy_from_slice(&data[0..16]);
    keys.tik.copy_from_slice(&data[16..32]);
    let measure: [u8; 32] = data[32..64].try_into().unwrap();
    let guest_len = u32::from_le_bytes(data[64..68].try_into().unwrap());
    let hdr = PacketHeader::from_bytes(&data[68..120]).expect("52-byte header");
    assert_eq!(hdr.to_bytes()[..], data[68..120]);
    let ct = &data[120..];
    if let Err(e) = open_packet(&keys, &measure, &hdr, ct, guest_len) {
        let _ = e.status();
        let _ = e.to_string();
    }
    // Round trip: what build_packet produces, open_packet opens to the same plaintext,
    // and a flipped ciphertext bit is refused.
    if let Ok((h, c)) = build_packet(&keys, &measure, hdr.iv, hdr.flags, ct) {
        let len = c.len() as u32;
        let pt = open_packet(&keys, &measure, &h, &c, len).expect("open what we built");
        assert_eq!(&pt[..], ct);
        let mut bad = c.clone();
        bad[0] ^= 1;
        assert!(open_packet(&keys, &measure, &h, &bad, len).is_err(), "tampered packet opened");
    }
});
