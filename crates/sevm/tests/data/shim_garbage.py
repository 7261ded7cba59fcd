"""Garbage /dev/sev ioctls through `sevm shim` (run by crates/sevm/tests/shim.rs).

Plain CPython (ctypes): os.open reaches libc's open64 and ctypes' ioctl libc's ioctl, both
intercepted by the preloaded library. Prints one JSON object: for each case, the errno (0 if
the call succeeded) and what the driver copied back.
"""
import ctypes
import json
import os
import struct

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
SEV_ISSUE_CMD = 0xC0105300
BAD = 0xDEAD0000  # not mapped in this process

fd = os.open("/dev/sev", os.O_RDWR)
ro = os.open("/dev/sev", os.O_RDONLY)


def raw(f, req, arg):
    r = libc.ioctl(f, req, arg)
    return ctypes.get_errno() if r < 0 else 0


def issue(cmd, data, f=fd):
    buf = ctypes.create_string_buffer(struct.pack("<IQI", cmd, data, 0), 16)
    e = raw(f, SEV_ISSUE_CMD, ctypes.addressof(buf))
    c, d, err = struct.unpack("<IQI", buf.raw)
    return {"errno": e, "error": err, "data": d}


out = {}
out["unknown_request"] = raw(fd, 0x1234, 0)
out["null_arg"] = raw(fd, SEV_ISSUE_CMD, 0)
out["bad_arg"] = raw(fd, SEV_ISSUE_CMD, BAD)
out["bad_cmd"] = issue(99, 0)
out["get_id_deprecated"] = issue(7, 0)
out["status_null"] = issue(1, 0)
out["status_bad"] = issue(1, BAD)
d = ctypes.create_string_buffer(struct.pack("<QI", BAD, 0x7FFFFFFF), 12)
out["id2_huge"] = issue(8, ctypes.addressof(d))
d = ctypes.create_string_buffer(struct.pack("<QI", BAD, 0x4001), 12)
out["csr_huge"] = issue(3, ctypes.addressof(d))
d = ctypes.create_string_buffer(struct.pack("<QIQI", 0, 0, 0, 0), 24)
out["import_empty"] = issue(6, ctypes.addressof(d))
d = ctypes.create_string_buffer(struct.pack("<QIQI", BAD, 2084, BAD, 2084), 24)
out["import_bad_ptrs"] = issue(6, ctypes.addressof(d))
out["pek_gen_readonly"] = issue(2, 0, ro)
d = ctypes.create_string_buffer(24)
r = issue(5, ctypes.addressof(d))
_, pdh_len, _, chain_len = struct.unpack("<QIQI", d.raw)
r.update({"pdh_len": pdh_len, "chain_len": chain_len})
out["pdh_probe"] = r
st = ctypes.create_string_buffer(12)
r = issue(1, ctypes.addressof(st))
r["state"] = st.raw[2]
out["status_ok"] = r
# The data pointer the program passed comes back unchanged (the server's translation is
# invisible).
out["status_data_echo"] = r["data"] == ctypes.addressof(st)
os.close(ro)
os.close(fd)
print(json.dumps(out))
