"""The CLI's own process settings: OpenMP threads that sleep when idle unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A command refused before work, run through the real group in a fresh process; torch loads
# inside the command, after the group's callback.
CHILD = """
import os, sys
from click.testing import CliRunner
from audiodiff.cli import main
CliRunner().invoke(main, ["export", "small-speech", "x.bin"])
print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)
"""


def child_policy(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=base | env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def test_cli_sets_a_passive_wait_policy_unless_the_user_set_one():
    assert child_policy() == "PASSIVE True"
    assert child_policy(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE True"


def test_nothing_changes_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401 - loaded, as in any process that runs the CLI in-process

    from audiodiff.cli import own_process_defaults

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    own_process_defaults()
    assert "OMP_WAIT_POLICY" not in os.environ
