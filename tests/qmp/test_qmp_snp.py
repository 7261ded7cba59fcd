"""`sevm run --qmp` of an SEV-SNP guest (soft backend), driven by `qemu.qmp`: `query-sev` is
QEMU's `sev-snp` branch, HMP `info sev` prints QEMU's SNP lines, `query-sev-capabilities`
answers, and what QEMU refuses for SNP (`query-sev-launch-measure`, `sev-inject-launch-secret`)
is refused with QEMU's errors; `quit` ends the VM.

Run: .venv/bin/python -m unittest discover -s tests/qmp -p test_qmp_snp.py -v
Environment: SEVM_BIN (default: cargo build -p sevm). No /dev/kvm: skipped with the reason, or
a failure when CI is set.
"""

import asyncio
import os
import subprocess
import tempfile
import unittest
from pathlib import Path

from qemu.qmp import ExecuteError, QMPClient

from sevm_qmp_common import _missing, sevm_binary


class SnpMonitor(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            _missing("/dev/kvm is not usable")
        self.sevm = sevm_binary()
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        self.proc = None

    def tearDown(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.tmp.cleanup()

    async def test_query_sev_is_the_snp_branch_and_snp_refusals_are_qemus(self):
        sock = self.d / "qmp.sock"
        self.proc = subprocess.Popen(
            [self.sevm, "run", "--guest", "ticker", "--memory", "16M",
             "--platform-dir", str(self.d / "plat"),
             "--object", "sev-snp-guest,id=snp0,policy=0x30000,reduced-phys-bits=1",
             "--machine", "confidential-guest-support=snp0",
             "--qmp", f"unix:{sock}", "--serial", "none", "--timeout", "60"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6000):
            if sock.exists():
                break
            if self.proc.poll() is not None:
                self.fail(f"sevm exited early ({self.proc.returncode}): {self.proc.stderr.read()}")
            await asyncio.sleep(0.02)
        else:
            self.fail("sevm did not create the QMP socket")
        qmp = QMPClient("snp")
        await qmp.connect(str(sock))
        try:
            info = await qmp.execute("query-sev")
            self.assertEqual(info["sev-type"], "sev-snp")
            self.assertEqual(info["snp-policy"], 0x30000)
            self.assertTrue(info["enabled"])
            self.assertEqual((info["api-major"], info["api-minor"]), (1, 55))
            self.assertNotIn("handle", info)
            self.assertNotIn("policy", info)
            # The launch finishes before the guest runs.
            for _ in range(500):
                if (await qmp.execute("query-sev"))["state"] == "running":
                    break
                await asyncio.sleep(0.02)
            self.assertEqual((await qmp.execute("query-sev"))["state"], "running")
            text = await qmp.execute("human-monitor-command", {"command-line": "info sev"})
            self.assertIn("SEV type: sev-snp", text)
            self.assertIn("debug: off", text)
            self.assertIn("SMT allowed: on", text)
            caps = await qmp.execute("query-sev-capabilities")
            self.assertIn("cbitpos", caps)
            with self.assertRaises(ExecuteError) as ctx:
                await qmp.execute("query-sev-launch-measure")
            self.assertEqual(ctx.exception.error_class, "GenericError")
            self.assertEqual(str(ctx.exception), "SEV launch measurement is not available")
            with self.assertRaises(ExecuteError) as ctx:
                await qmp.execute("sev-inject-launch-secret",
                                  {"packet-header": "AAAA", "secret": "AAAA"})
            self.assertIn("SEV: Not in correct state. (LSECRET)", str(ctx.exception))
            await qmp.execute("quit")
        finally:
            try:
                await qmp.disconnect()
            except Exception:  # the server went away with the VM
                pass
        rc = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.proc.wait(timeout=30))
        self.assertEqual(rc, 0, self.proc.stderr.read())


if __name__ == "__main__":
    unittest.main()
