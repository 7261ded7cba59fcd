"""Helpers shared by the real-VM QMP tests (test_qmp_sevm.py, test_qmp_snp.py): the repository
root, the missing-prerequisite rule (a failure when CI is set, else a skip with the reason) and
the sevm binary under test."""

import os
import subprocess
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _missing(reason: str):
    if os.environ.get("CI"):
        raise AssertionError(f"CI: {reason}")
    raise unittest.SkipTest(reason)


def sevm_binary() -> str:
    env = os.environ.get("SEVM_BIN")
    if env:
        return env
    subprocess.run(["cargo", "build", "-q", "-p", "sevm"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "sevm")
