"""End-to-end attested launch of a real `sevm run --qmp` VM, driven by `qemu.qmp`, with the
real sevctl 0.6.2 as the guest owner.

Flow: `sevm platform export --full` -> `sevctl session` -> `sevm run --paused --qmp` ->
`query-sev` (launch-secret) -> `query-sev-launch-measure` -> `sevctl measurement build` with
`sevm owner measure --vmm sevm` must give the same measurement -> `sevctl secret build` ->
`sev-inject-launch-secret` -> `cont` -> the `secret-reader` guest prints the secret's SHA-256
and the VM exits 0. A second injection after `cont` must fail with GenericError.

Run: .venv/bin/python -m unittest tests.qmp.test_qmp_sevm -v  (or discover -s tests/qmp)
Environment: SEVM_BIN (default: cargo build -p sevm), SEVCTL (default: sevctl on PATH or
~/.cargo/bin/sevctl). Missing sevctl or /dev/kvm: the test is skipped with the reason, or
fails when CI is set.
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
import uuid
from pathlib import Path

from qemu.qmp import ExecuteError, QMPClient

from sevm_qmp_common import _missing, sevm_binary
POLICY = 0x1  # NODBG: DBG_DECRYPT reads must be refused
SECRET_GUID = "736869e5-84f0-4973-92ec-06879ce3da0b"


def sevctl_binary() -> str:
    env = os.environ.get("SEVCTL")
    if env:
        return env
    found = shutil.which("sevctl") or str(Path.home() / ".cargo/bin/sevctl")
    if not os.access(found, os.X_OK):
        _missing("sevctl 0.6.2 is not installed (cargo install sevctl --version 0.6.2)")
    return found


def run(*cmd, cwd=None) -> str:
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}): {p.stdout}\n{p.stderr}")
    return p.stdout


async def arun(*cmd, cwd=None) -> str:
    """`run` off the event loop (the QMP client keeps reading events meanwhile)."""
    return await asyncio.to_thread(run, *cmd, cwd=cwd)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# An SEV guest with policy 0 (debug allowed), as the QEMU --object option names it.
SEV_OBJECT_POLICY0 = "sev-guest,id=sev0,policy=0x0,cbitpos=47,reduced-phys-bits=1"


def sev_args(plat: Path, obj: str) -> list:
    """`sevm run` options for a paused SEV guest on the soft platform in `plat`."""
    return ["--platform-dir", str(plat), "--object", obj,
            "--machine", "confidential-guest-support=sev0", "--paused"]


def spin_firmware(d: Path) -> Path:
    """Writes `d/spin.bin`: 4 KiB of `hlt` with `jmp $` at the reset vector (0xfffffff0)."""
    fw = bytearray(b"\xf4" * 4096)
    fw[4096 - 16:4096 - 14] = b"\xeb\xfe"
    path = d / "spin.bin"
    path.write_bytes(bytes(fw))
    return path


async def hmp(qmp, line: str) -> str:
    """What `human-monitor-command` prints for `line`."""
    return await qmp.execute("human-monitor-command", {"command-line": line})


async def status(qmp) -> str:
    """`query-status`'s status."""
    return (await qmp.execute("query-status"))["status"]


async def sev_state(qmp) -> str:
    """`query-sev`'s state."""
    return (await qmp.execute("query-sev"))["state"]


async def attestation_report(qmp, mnonce: bytes) -> bytes:
    """`query-sev-attestation-report` for `mnonce`, decoded."""
    return base64.b64decode(
        (await qmp.execute("query-sev-attestation-report", {"mnonce": b64(mnonce)}))["data"])


class AttestedLaunch(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        # One soft platform for every test (its key generation is the slow part).
        cls.plat_tmp = tempfile.TemporaryDirectory()
        cls.plat = Path(cls.plat_tmp.name) / "plat"

    @classmethod
    def tearDownClass(cls):
        cls.plat_tmp.cleanup()

    def setUp(self):
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            _missing("/dev/kvm is not usable")
        self.sevctl = sevctl_binary()
        self.sevm = sevm_binary()
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        self.proc = None

    def tearDown(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.tmp.cleanup()

    def _start_vm(self, sock: Path, *args, serial: str = "none"):
        """Starts `sevm run ARGS` with a QMP monitor on `sock`, COM1 to `serial`, 60 s timeout."""
        self.proc = subprocess.Popen(
            [self.sevm, "run", *[str(a) for a in args], "--qmp", f"unix:{sock}",
             "--serial", serial, "--timeout", "60"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )

    async def _wait_socket(self, path: Path):
        # A fresh soft platform generates its identity keys first: slow on a loaded host.
        for _ in range(6000):
            if path.exists():
                return
            if self.proc.poll() is not None:
                out = self.proc.stderr.read()
                self.fail(f"sevm exited early ({self.proc.returncode}): {out}")
            await asyncio.sleep(0.02)
        self.fail("sevm did not create the QMP socket")

    @contextlib.asynccontextmanager
    async def _monitor(self, name: str, sock: Path):
        """Waits for sevm's QMP socket on `sock` and connects as `name`; yields the client and
        the list its events are collected into. On leaving, stops collecting and disconnects
        (the server may already have gone away with the VM)."""
        await self._wait_socket(sock)
        qmp = QMPClient(name)
        await qmp.connect(str(sock))
        events = []

        async def collect():
            async for ev in qmp.events:
                events.append(ev)

        collector = asyncio.ensure_future(collect())
        try:
            yield qmp, events
        finally:
            collector.cancel()
            try:
                await qmp.disconnect()
            except Exception:  # the server went away with the VM
                pass

    async def _expect_exit_zero(self, timeout: int) -> str:
        """Waits for sevm to exit, asserts exit code 0 and returns its stderr (after a moment
        for the last events to arrive)."""
        rc = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.proc.wait(timeout=timeout))
        stderr = self.proc.stderr.read()
        self.assertEqual(rc, 0, stderr)
        await asyncio.sleep(0.05)
        return stderr

    async def _assert_refused(self, qmp, cmd: str, args=None, contains=None):
        """`cmd` must fail with a GenericError whose text contains `contains` (if given)."""
        with self.assertRaises(ExecuteError, msg=cmd) as ctx:
            await qmp.execute(cmd, args)
        self.assertEqual(ctx.exception.error_class, "GenericError", cmd)
        if contains is not None:
            self.assertIn(contains, str(ctx.exception))

    async def _assert_spinning_at_reset_vector(self, qmp):
        """The paused vCPU sits on the `jmp $` of `spin_firmware`."""
        self.assertIn("RIP=000000000000fff0", await hmp(qmp, "info registers"))
        self.assertIn("0xeb 0xfe", await hmp(qmp, "x /2xb 0xfffffff0"))

    async def _check_attestation(self, qmp, d: Path, digest_hex: str):
        """`query-sev-attestation-report`: mnonce at 0x00, launch digest at 0x10, policy at
        0x30, usage PEK / ECDSA-SHA256, and an ECDSA P-384 signature over SHA-256 of bytes
        [0, 0x34) that verifies with the PEK of `sevm platform export --full`."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        mnonce = os.urandom(16)
        rep = await attestation_report(qmp, mnonce)
        self.assertEqual(len(rep), 0xD0)
        self.assertEqual(rep[0x00:0x10], mnonce)
        self.assertEqual(rep[0x10:0x30].hex(), digest_hex)
        self.assertEqual(int.from_bytes(rep[0x30:0x34], "little"), POLICY)
        self.assertEqual(int.from_bytes(rep[0x34:0x38], "little"), 0x1002)  # PEK
        self.assertEqual(int.from_bytes(rep[0x38:0x3C], "little"), 2)  # ECDSA_SHA256
        # The PEK is the second 2084-byte certificate of the exported chain.
        pek = (d / "chain.cert").read_bytes()[2084:2 * 2084]
        self.assertEqual(int.from_bytes(pek[8:12], "little"), 0x1002)
        self.assertEqual(int.from_bytes(pek[0x10:0x14], "little"), 2)  # curve P-384
        qx = int.from_bytes(pek[0x14:0x14 + 72], "little")
        qy = int.from_bytes(pek[0x5C:0x5C + 72], "little")
        key = ec.EllipticCurvePublicNumbers(qx, qy, ec.SECP384R1()).public_key()
        sig = encode_dss_signature(int.from_bytes(rep[0x40:0x88], "little"),
                                   int.from_bytes(rep[0x88:0xD0], "little"))
        key.verify(sig, rep[:0x34], ec.ECDSA(hashes.SHA256()))
        # Any change to the signed bytes breaks the signature.
        forged = bytes([rep[0] ^ 1]) + rep[1:0x34]
        with self.assertRaises(InvalidSignature):
            key.verify(sig, forged, ec.ECDSA(hashes.SHA256()))
        # A second nonce gives a second, fresh report.
        rep2 = await attestation_report(qmp, bytes(16))
        self.assertEqual(rep2[:0x10], bytes(16))
        self.assertEqual(rep2[0x10:0x34], rep[0x10:0x34])
        # QEMU's argument errors.
        for bad, msg in ((b64(bytes(15)), "SEV: mnonce must be 16 bytes (got 15)"),
                         ("not base64!", "SEV: failed to decode mnonce input")):
            await self._assert_refused(qmp, "query-sev-attestation-report", {"mnonce": bad},
                                       contains=msg)
        # sevctl 0.6.2 accepts the report against the exported chain, and rejects a forgery.
        (d / "report.bin").write_bytes(rep)
        await arun(self.sevctl, "validate", d / "chain.cert", d / "report.bin")
        (d / "forged.bin").write_bytes(rep[:0x10] + bytes([rep[0x10] ^ 1]) + rep[0x11:])
        p = await asyncio.to_thread(
            subprocess.run, [self.sevctl, "validate", str(d / "chain.cert"), str(d / "forged.bin")],
            capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0, f"sevctl validate accepted a forged report: {p}")
        return rep

    async def test_attested_launch_with_sevctl(self):
        d, plat = self.d, self.plat
        # 1. Platform chain and the owner's session (sevctl).
        await arun(self.sevm, "platform", "--platform-dir", plat, "export", "--full", d / "chain.cert")
        await arun(self.sevctl, "session", "--name", "t", d / "chain.cert", str(POLICY), cwd=d)
        for f in ("t_godh.b64", "t_session.b64", "t_tek.bin", "t_tik.bin"):
            self.assertTrue((d / f).is_file(), f)
        # The digest the owner expects for the bundled guest, computed without KVM.
        digest_hex = json.loads(
            await arun(self.sevm, "--json", "owner", "measure", "--vmm", "sevm",
                "--guest", "secret-reader")
        )["launch_digest"]

        # 2. The paused VM with a QMP monitor.
        sock, out = d / "qmp.sock", d / "serial.txt"
        obj = (f"sev-guest,id=sev0,policy={POLICY:#x},cbitpos=47,reduced-phys-bits=1,"
               f"dh-cert-file={d / 't_godh.b64'},session-file={d / 't_session.b64'}")
        self._start_vm(sock, "--guest", "secret-reader", *sev_args(plat, obj),
                       serial=f"file:{out}")
        async with self._monitor("e2e", sock) as (qmp, events):
            self.assertEqual(sock.stat().st_mode & 0o777, 0o600)
            st = await qmp.execute("query-status")
            self.assertEqual(st["status"], "prelaunch")
            self.assertFalse(st["running"])
            sev = await qmp.execute("query-sev")
            self.assertEqual(sev["state"], "launch-secret")
            self.assertEqual(sev["policy"], POLICY)
            self.assertTrue(sev["enabled"])
            kvm = await qmp.execute("query-kvm")
            self.assertEqual(kvm, {"enabled": True, "present": True})
            caps = await qmp.execute("query-sev-capabilities")
            self.assertEqual(len(base64.b64decode(caps["pdh"])), 2084)
            self.assertEqual(len(base64.b64decode(caps["cert-chain"])), 3 * 2084)
            chain = (d / "chain.cert").read_bytes()
            self.assertEqual(base64.b64decode(caps["pdh"]), chain[:2084])
            self.assertEqual(caps["cbitpos"], 47)
            self.assertEqual(caps["reduced-phys-bits"], 1)

            # 3. The measurement, checked by sevctl against the expected digest.
            blob_b64 = (await qmp.execute("query-sev-launch-measure"))["data"]
            blob = base64.b64decode(blob_b64)
            self.assertEqual(len(blob), 48)
            expect = await arun(
                self.sevctl, "measurement", "build",
                "--api-major", str(sev["api-major"]), "--api-minor", str(sev["api-minor"]),
                "--build-id", str(sev["build-id"]), "--policy", str(POLICY),
                "--tik", d / "t_tik.bin", "--launch-measure-blob", blob_b64,
                "--launch-digest", b64(bytes.fromhex(digest_hex)),
                "--outfile", d / "expected.bin",
            )
            self.assertEqual((d / "expected.bin").read_bytes(), blob,
                             f"sevctl's measurement differs: {expect}")

            # 3b. The attestation report (legal in launch-secret): the owner's nonce, the
            # launch digest and the policy, signed by the platform's PEK.
            await self._check_attestation(qmp, d, digest_hex)

            # NODBG: guest memory cannot be read through the debug path; HMP prints the
            # reason on the line it could not read.
            text = await hmp(qmp, "xp /4xb 0x1000")
            self.assertIn("Cannot access memory", text)
            self.assertIn("NODBG", text)

            # 4. The secret, built by sevctl and injected over QMP.
            secret = os.urandom(37)
            (d / "secret.bin").write_bytes(secret)
            await arun(self.sevctl, "secret", "build", "--tik", d / "t_tik.bin", "--tek", d / "t_tek.bin",
                "--launch-measure-blob", blob_b64, "--secret", f"{SECRET_GUID}:{d / 'secret.bin'}",
                d / "hdr.bin", d / "payload.bin")
            packet = {
                "packet-header": b64((d / "hdr.bin").read_bytes()),
                "secret": b64((d / "payload.bin").read_bytes()),
            }
            await qmp.execute("sev-inject-launch-secret", packet)
            self.assertEqual(await sev_state(qmp), "launch-secret")

            # 5. cont: LAUNCH_FINISH, vCPUs start.
            await qmp.execute("cont")
            self.assertEqual(await sev_state(qmp), "running")
            # Wrong state: the launch is finished; the VM keeps going.
            await self._assert_refused(qmp, "sev-inject-launch-secret", packet,
                                       contains="Not in correct state")
            stderr = await self._expect_exit_zero(timeout=60)
        serial = out.read_text()
        want = (f"secret entry {SECRET_GUID} len={len(secret):08x} "
                f"sha256={hashlib.sha256(secret).hexdigest()}\n")
        self.assertIn(want, serial)
        self.assertIn("secret entries: 01\n", serial)
        names = [e["event"] for e in events]
        self.assertIn("RESUME", names)
        self.assertIn("SHUTDOWN", names)
        sev_states = [e["data"]["state"] for e in events if e["event"] == "SEV_LAUNCH_STATE"]
        self.assertIn("running", sev_states)
        # The secret never reaches sevm's output.
        self.assertNotIn(b64(secret), stderr)
        self.assertNotIn(secret.hex(), stderr)


    async def test_debug_reads_and_quit(self):
        """Policy 0 (debug allowed): `pmemsave` of the first measured range reads, through
        DBG_DECRYPT, exactly the bytes sevm measured (`--dump-launch`); prelaunch `stop`
        is a no-op, `system_reset` is refused, `quit` ends the VM with SHUTDOWN."""
        d = self.d
        sock, dump = d / "q.sock", d / "dump"
        self._start_vm(sock, "--guest", "secret-reader",
                       *sev_args(self.plat, SEV_OBJECT_POLICY0), "--dump-launch", dump)
        async with self._monitor("dbg", sock) as (qmp, events):
            ranges = sorted(p for p in dump.iterdir() if p.name[:2].isdigit())
            self.assertTrue(ranges, "no measured range dumped")
            first = ranges[0]
            gpa = int(first.stem.rsplit("-", 1)[1], 16)
            want = first.read_bytes()[:4096]
            await qmp.execute("pmemsave", {"val": gpa, "size": len(want),
                                           "filename": str(d / "mem.bin")})
            self.assertEqual((d / "mem.bin").read_bytes(), want)
            self.assertIn(f"0x{want[0]:02x} 0x{want[1]:02x}", await hmp(qmp, f"xp /2xb {gpa:#x}"))
            self.assertIn("launch-secret", await hmp(qmp, "info sev"))

            await qmp.execute("stop")
            self.assertEqual(await status(qmp), "prelaunch")
            await self._assert_refused(qmp, "system_reset")
            await qmp.execute("quit")
            await self._expect_exit_zero(timeout=30)
        shut = [e for e in events if e["event"] == "SHUTDOWN"]
        self.assertEqual(len(shut), 1, events)
        self.assertEqual(shut[0]["data"], {"guest": False, "reason": "host-qmp-quit"})
        self.assertFalse(sock.exists(), "the socket is removed when sevm exits")


    async def test_plain_vm_stop_cont_reset_powerdown(self):
        """A plain (non-SEV) VM whose firmware spins at the reset vector: stop/cont with
        STOP/RESUME, registers and `x` while paused, system_reset with RESET, SEV commands
        refused, system_powerdown ends the VM (POWERDOWN, SHUTDOWN)."""
        sock = self.d / "p.sock"
        self._start_vm(sock, "--firmware", spin_firmware(self.d))
        async with self._monitor("plain", sock) as (qmp, events):
            self.assertEqual(await status(qmp), "running")
            await qmp.execute("stop")
            st = await qmp.execute("query-status")
            self.assertEqual((st["status"], st["running"]), ("paused", False))
            await self._assert_spinning_at_reset_vector(qmp)
            await qmp.execute("cont")
            self.assertEqual(await status(qmp), "running")
            await self._assert_refused(qmp, "query-sev", contains="SEV feature is not available")
            await self._assert_refused(qmp, "query-sev-attestation-report",
                                       {"mnonce": b64(bytes(16))}, contains="SEV is not enabled")
            await qmp.execute("system_reset")
            self.assertEqual(await status(qmp), "running")
            await qmp.execute("system_powerdown")
            await self._expect_exit_zero(timeout=30)
        names = [e["event"] for e in events]
        self.assertEqual(names, ["STOP", "RESUME", "RESET", "POWERDOWN", "SHUTDOWN"])
        self.assertEqual(events[2]["data"], {"guest": False, "reason": "host-qmp-system-reset"})


    async def test_running_sev_guest_wrong_state_and_debug(self):
        """An SEV guest (policy 0) whose firmware spins: after `cont` a secret injection gets
        GenericError and the VM keeps running; while stopped, `info registers` and `x`
        (paging off: through DBG_DECRYPT) show the spin loop; `quit` ends it."""
        sock = self.d / "s.sock"
        self._start_vm(sock, "--firmware", spin_firmware(self.d),
                       *sev_args(self.plat, SEV_OBJECT_POLICY0))
        async with self._monitor("sev-running", sock) as (qmp, events):
            await qmp.execute("cont")
            self.assertEqual(await sev_state(qmp), "running")
            await self._assert_refused(
                qmp, "sev-inject-launch-secret",
                {"packet-header": b64(bytes(52)), "secret": b64(bytes(16))},
                contains="SEV: Not in correct state. (LSECRET) 3")
            # The attestation report is also legal while the guest runs (firmware RUNNING).
            nonce = os.urandom(16)
            rep = await attestation_report(qmp, nonce)
            self.assertEqual(len(rep), 0xD0)
            self.assertEqual(rep[:0x10], nonce)
            self.assertEqual(int.from_bytes(rep[0x30:0x34], "little"), 0)
            self.assertEqual(int.from_bytes(rep[0x34:0x38], "little"), 0x1002)
            await asyncio.sleep(0.2)
            self.assertEqual(await status(qmp), "running")
            self.assertIsNone(self.proc.poll())
            await qmp.execute("stop")
            await self._assert_spinning_at_reset_vector(qmp)
            await qmp.execute("cont")
            await qmp.execute("quit")
            await self._expect_exit_zero(timeout=30)
        names = [e["event"] for e in events]
        self.assertEqual(names, ["SEV_LAUNCH_STATE", "RESUME", "STOP", "RESUME", "SHUTDOWN"],
                         events)
        self.assertEqual(events[0]["data"], {"state": "running"})


if __name__ == "__main__":
    unittest.main()
