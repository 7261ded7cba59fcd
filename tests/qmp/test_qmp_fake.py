"""Drive the sevm QMP monitor with the real `qemu.qmp` client library.

For now the server is `crates/vmm/examples/qmp_fake.rs` (the monitor over a fake backend);
the integrator points SEVM_QMP_CMD at `sevm run --qmp` later.

Run: .venv/bin/python -m unittest discover -s tests/qmp -v
Environment: SEVM_QMP_FAKE=path to a built qmp_fake binary (default: built with cargo).
"""

import asyncio
import base64
import json
import os
import socket
import subprocess
import tempfile
import unittest
from pathlib import Path

from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

REPO = Path(__file__).resolve().parents[2]


def fake_binary() -> str:
    env = os.environ.get("SEVM_QMP_FAKE")
    if env:
        return env
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    subprocess.run(
        ["cargo", "build", "-q", "-p", "vmm", "--example", "qmp_fake"],
        cwd=REPO,
        check=True,
    )
    return str(target / "debug" / "examples" / "qmp_fake")


BINARY = None


class FakeServer:
    """A qmp_fake process on a socket in a private temp dir."""

    def __init__(self, *extra: str):
        global BINARY
        if BINARY is None:
            BINARY = fake_binary()
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "qmp.sock")
        self.proc = subprocess.Popen(
            [BINARY, f"unix:{self.path}", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.kill()
            raise RuntimeError(f"qmp_fake did not start: {line!r} {self.proc.stderr.read()}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.dir.cleanup()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class QmpWithQemuQmp(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.srv = FakeServer()

    def tearDown(self):
        self.srv.close()

    async def client(self) -> QMPClient:
        qmp = QMPClient("sevm-test")
        await qmp.connect(self.srv.path)
        return qmp

    async def test_greeting_status_and_kvm(self):
        qmp = await self.client()
        greeting = qmp.greeting
        self.assertEqual(greeting.QMP.version["qemu"]["major"], 9)
        self.assertTrue(greeting.QMP.version["package"].startswith("sevm "))
        self.assertEqual(list(greeting.QMP.capabilities), [])
        self.assertEqual(await qmp.execute("query-status"), {"running": False, "status": "prelaunch"})
        self.assertEqual(await qmp.execute("query-kvm"), {"enabled": True, "present": True})
        ver = await qmp.execute("query-version")
        self.assertEqual(ver["qemu"], {"major": 9, "minor": 2, "micro": 0})
        await qmp.disconnect()

    async def test_attested_launch_flow_with_events(self):
        qmp = await self.client()
        sev = await qmp.execute("query-sev")
        self.assertEqual(sev["state"], "launch-secret")
        self.assertEqual(sev["sev-type"], "sev")
        measure = base64.b64decode((await qmp.execute("query-sev-launch-measure"))["data"])
        self.assertEqual(len(measure), 48)
        caps = await qmp.execute("query-sev-capabilities")
        self.assertEqual(caps["cbitpos"], 51)
        self.assertEqual(len(base64.b64decode(caps["pdh"])), 2084)
        ret = await qmp.execute(
            "sev-inject-launch-secret",
            {"packet-header": b64(bytes(52)), "secret": b64(b"s" * 32), "gpa": 0x800000},
        )
        self.assertEqual(ret, {})
        with qmp.listener(("SEV_LAUNCH_STATE", "RESUME")) as listener:
            self.assertEqual(await qmp.execute("cont"), {})
            ev1 = await asyncio.wait_for(listener.get(), 10)
            ev2 = await asyncio.wait_for(listener.get(), 10)
        self.assertEqual(ev1["event"], "SEV_LAUNCH_STATE")
        self.assertEqual(ev1["data"], {"state": "running"})
        self.assertEqual(ev2["event"], "RESUME")
        self.assertIn("seconds", ev2["timestamp"])
        self.assertIn("microseconds", ev2["timestamp"])
        with self.assertRaises(ExecuteError) as err:
            await qmp.execute(
                "sev-inject-launch-secret",
                {"packet-header": b64(bytes(52)), "secret": b64(b"s" * 32)},
            )
        self.assertEqual(err.exception.error_class, "GenericError")
        self.assertEqual(err.exception.error.error.desc, "SEV: Not in correct state. (LSECRET) 3")
        report = await qmp.execute("query-sev-attestation-report", {"mnonce": b64(bytes(range(16)))})
        self.assertEqual(base64.b64decode(report["data"])[:16], bytes(range(16)))
        with qmp.listener("STOP") as listener:
            await qmp.execute("stop")
            self.assertEqual((await asyncio.wait_for(listener.get(), 10))["event"], "STOP")
        with qmp.listener("RESET") as listener:
            await qmp.execute("system_reset")
            ev = await asyncio.wait_for(listener.get(), 10)
            self.assertEqual(ev["data"], {"guest": False, "reason": "host-qmp-system-reset"})
        await qmp.disconnect()

    async def test_errors(self):
        qmp = await self.client()
        cases = [
            ("no-such-command", None, "CommandNotFound", "The command no-such-command has not been found"),
            ("pmemsave", {"val": "x", "size": 1, "filename": "/dev/null"}, "GenericError",
             "Invalid parameter type for 'val', expected: integer"),
            ("pmemsave", {"val": 0, "size": 1}, "GenericError", "Parameter 'filename' is missing"),
            ("query-status", {"bogus": 1}, "GenericError", "Parameter 'bogus' is unexpected"),
            ("query-sev-attestation-report", {"mnonce": b64(bytes(8))}, "GenericError",
             "SEV: mnonce must be 16 bytes (got 8)"),
        ]
        for cmd, args, cls, desc in cases:
            with self.subTest(cmd=cmd, args=args):
                with self.assertRaises(ExecuteError) as err:
                    await qmp.execute(cmd, args)
                self.assertEqual(err.exception.error_class, cls)
                self.assertEqual(err.exception.error.error.desc, desc)
        # Still healthy.
        self.assertEqual((await qmp.execute("query-status"))["status"], "prelaunch")
        await qmp.disconnect()

    async def test_pmemsave_and_hmp(self):
        qmp = await self.client()
        out = os.path.join(self.srv.dir.name, "mem.bin")
        await qmp.execute("pmemsave", {"val": 0x100, "size": 300, "filename": out})
        with open(out, "rb") as f:
            self.assertEqual(f.read(), bytes(i % 251 for i in range(0x100, 0x100 + 300)))
        self.assertEqual(os.stat(out).st_mode & 0o777, 0o600)
        hmp = await qmp.execute("human-monitor-command", {"command-line": "info status"})
        self.assertEqual(hmp, "VM status: paused (prelaunch)\r\n")
        hmp = await qmp.execute("human-monitor-command", {"command-line": "xp /2xg 0"})
        self.assertEqual(hmp, "0000000000000000: 0x0706050403020100 0x0f0e0d0c0b0a0908\r\n")
        sev = await qmp.execute("human-monitor-command", {"command-line": "info sev"})
        self.assertIn("state: launch-secret\r\n", sev)
        await qmp.disconnect()

    async def test_fifty_clients_at_once(self):
        async def one(i):
            qmp = QMPClient(f"c{i}")
            await qmp.connect(self.srv.path)
            for _ in range(10):
                self.assertEqual((await qmp.execute("query-status"))["status"], "prelaunch")
            return qmp

        clients = await asyncio.gather(*(one(i) for i in range(50)))
        await asyncio.gather(*(c.disconnect() for c in clients))

    async def test_bad_raw_input_only_hurts_the_sender(self):
        qmp = await self.client()
        loop = asyncio.get_running_loop()

        def raw_session():
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(self.srv.path)
            f = s.makefile("rb")
            json.loads(f.readline())  # greeting
            s.sendall(b'{"execute": "qmp_capabilities"}')
            self.assertEqual(json.loads(f.readline()), {"return": {}})
            s.sendall(b'{"execute": oops}')
            err = json.loads(f.readline())["error"]
            self.assertEqual(err["class"], "GenericError")
            self.assertTrue(err["desc"].startswith("JSON parse error, "))
            # Over 1 MiB: answered, then dropped.
            try:
                s.sendall(b'{"execute": "query-status", "id": "' + b"a" * (1 << 20) + b'"}')
            except OSError:
                pass
            err = json.loads(f.readline())["error"]
            self.assertIn("exceeds 1048576 bytes", err["desc"])
            self.assertEqual(f.readline(), b"")
            s.close()
            # Mid-command disconnect.
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.srv.path)
            s.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-sev"}{"execute": "que')
            s.close()

        await loop.run_in_executor(None, raw_session)
        self.assertEqual((await qmp.execute("query-status"))["status"], "prelaunch")
        await qmp.disconnect()


class LegacySyncClient(unittest.TestCase):
    """The synchronous wrapper many scripts use, ending with `quit`."""

    def test_quit_ends_the_server(self):
        srv = FakeServer("--plain")
        try:
            mon = QEMUMonitorProtocol(srv.path)
            mon.connect()
            with self.assertRaises(ExecuteError):
                mon.cmd("query-sev")
            self.assertEqual(mon.cmd("query-kvm"), {"enabled": True, "present": True})
            self.assertEqual(mon.cmd("quit"), {})
            ev = mon.pull_event(wait=10)
            self.assertEqual(ev["event"], "SHUTDOWN")
            self.assertEqual(ev["data"], {"guest": False, "reason": "host-qmp-quit"})
            mon.close()
            self.assertEqual(srv.proc.wait(timeout=10), 0)
            self.assertFalse(os.path.exists(srv.path))
        finally:
            srv.close()


class SocketPath(unittest.TestCase):
    """`--qmp unix:PATH` never replaces a file that is not a stale socket."""

    def test_refuses_regular_file_and_replaces_stale_socket(self):
        global BINARY
        if BINARY is None:
            BINARY = fake_binary()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "qmp.sock")
            with open(path, "w") as f:
                f.write("precious")
            res = subprocess.run([BINARY, f"unix:{path}"], capture_output=True, text=True, timeout=30)
            self.assertEqual(res.returncode, 1)
            self.assertIn("is not a socket", res.stderr)
            with open(path) as f:
                self.assertEqual(f.read(), "precious")
            os.unlink(path)
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(path)
            stale.close()  # the file stays: a stale socket
            proc = subprocess.Popen([BINARY, f"unix:{path}"], stdout=subprocess.PIPE, text=True)
            try:
                self.assertEqual(proc.stdout.readline().strip(), "READY")
                self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
                mon = QEMUMonitorProtocol(path)
                mon.connect()
                self.assertEqual(mon.cmd("query-status")["status"], "prelaunch")
                mon.cmd("quit")
                mon.close()
                self.assertEqual(proc.wait(timeout=10), 0)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()


if __name__ == "__main__":
    unittest.main()
