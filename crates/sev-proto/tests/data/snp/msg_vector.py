# Makes msg_vector.txt: an SNP guest-message (MSG_REPORT_REQ) known answer computed with the
# Python `cryptography` package's AESGCM (layout per snp-spec-notes §4.2; reproduces the notes'
# self-consistency vector: tag b69109101f47fda9ba87090c78fc501c, ciphertext a689a1396b66c520...).
# Run: python3 msg_vector.py > msg_vector.txt   (cryptography 48.0.0 here)
import struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

vmpck = bytes(32)
seqno = 1
payload = bytes(range(64)) + bytes(32)  # REPORT_DATA 00..3F, VMPL 0, KEY_SEL 0, reserved
hdr_tail = struct.pack("<BBHBBH", 1, 1, 0x60, 5, 1, len(payload)) + bytes(4) + bytes([0]) + bytes(0x23)
assert len(hdr_tail) == 0x30
iv = struct.pack("<Q", seqno) + bytes(4)
ct_tag = AESGCM(vmpck).encrypt(iv, payload, hdr_tail)
ct, tag = ct_tag[:-16], ct_tag[-16:]
msg = tag + bytes(16) + struct.pack("<Q", seqno) + bytes(8) + hdr_tail + ct
print("message", msg.hex())
