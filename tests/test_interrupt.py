"""Interrupted and concurrent runs: SIGINT/SIGTERM save the finished step and exit with the
conventional code, a save clock bounds the work a kill loses, and one run directory is held by
one live process (issue 23, kinds 1 and 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from audiodiff import dist
from audiodiff.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from audiodiff.config import ExperimentConfig, TrainConfig
from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.interrupt import StopGuard, TrainingInterrupted
from audiodiff.run_lock import lock_run_dir
from audiodiff.train import Trainer

from .conftest import manifest_overrides

ROOT = Path(__file__).resolve().parent.parent
# Children import this checkout, whatever an installed copy points at.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
RECIPE = ROOT / "recipes" / "smoke" / "vocoder.yaml"


def _cfg(tiny_config, manifests, *overrides: str):
    base = [*manifest_overrides(manifests), "train.lr=1e-3", "train.save_every_minutes=0"]
    return apply_overrides(tiny_config, base + list(overrides))


class SignalAt(Trainer):
    """Sends itself ``signum`` while taking (0-based) step ``at``."""

    at, signum = 2, signal.SIGINT

    def train_step(self, batches):
        if self.step == self.at:
            signal.raise_signal(self.signum)
        return super().train_step(batches)


def test_sigint_finishes_the_step_saves_it_and_resumes_exactly(tmp_path, tiny_config, manifests):
    common = ["train.save_every=1000", "train.max_steps=6"]
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as err:
        SignalAt(_cfg(tiny_config, manifests, *common), run).train()
    # The step in progress (the third) was finished, saved and named; none was due by schedule.
    assert err.value.step == 3 and err.value.exit_code == 130
    assert err.value.checkpoint == run / "step_00000003.pt" == latest_checkpoint(run)
    assert "SIGINT: stopped after step 3, which is saved in" in str(err.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    # Resuming from it gives what an uninterrupted run gives.
    Trainer(_cfg(tiny_config, manifests, *common), run).train()
    Trainer(_cfg(tiny_config, manifests, *common), tmp_path / "straight").train()
    a, b = load_checkpoint(run), load_checkpoint(tmp_path / "straight")
    assert a["step"] == b["step"] == 6
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name])


def test_save_clock_saves_between_scheduled_saves(tmp_path, tiny_config, manifests):
    cfg = _cfg(
        tiny_config,
        manifests,
        "train.save_every=1000",
        "train.max_steps=3",
        "train.keep_last=10",
        "train.save_every_minutes=1e-9",  # due after every step
    )
    Trainer(cfg, tmp_path / "run").train()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [
        f"step_0000000{i}.pt" for i in (1, 2, 3)
    ]


def test_stop_guard_clock_and_default(tmp_path):
    ctx = dist.init("cpu")
    now = [0.0]
    guard = StopGuard(ctx, 5.0, clock=lambda: now[0])
    now[0] = 299.0
    assert not guard.poll()
    now[0] = 300.0
    assert guard.poll()
    guard.saved()
    assert not guard.poll()
    assert not StopGuard(ctx, 0.0, clock=lambda: 1e9).poll()  # 0 turns the clock off
    assert 0 < TrainConfig().save_every_minutes <= 10  # on by default: a few minutes at most
    with pytest.raises(ValueError, match="save_every_minutes must be >= 0"):
        validate(apply_overrides(ExperimentConfig(), ["train.save_every_minutes=-1"]))


def _cli(run: Path, manifests, *sets: str) -> list[str]:
    train, val = manifests
    cmd = [sys.executable, "-m", "audiodiff", "train", str(RECIPE), "--run-dir", str(run)]
    for s in [f"data.train_manifest={train}", f"data.val_manifest={val}", *sets]:
        cmd += ["--set", s]
    return cmd


def _wait_for(condition, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"trainer exited early ({proc.returncode}): {out}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def _train_rows(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count('"kind": "train"') if path.is_file() else 0


def test_sigterm_saves_says_how_to_resume_and_exits_143_and_the_dir_is_held(tmp_path, manifests):
    """The real CLI: while it trains, a second trainer on its directory is refused naming it;
    SIGTERM then saves the step it was on and exits with 143; the resume takes the directory."""
    run = tmp_path / "run"
    sets = ["train.max_steps=100000", "train.save_every=100000", "train.log_every=1"]
    # Two DataLoader workers: the signal goes to the whole process group, as Ctrl-C in a terminal
    # and a SLURM scancel send it, so the workers get it too and must not die of it.
    sets += ["train.eval_every=100000", "train.save_every_minutes=0", "data.num_workers=2"]
    env = ENV
    proc = subprocess.Popen(
        _cli(run, manifests, *sets),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _train_rows(run) >= 2, proc)
        second = subprocess.run(
            _cli(run, manifests, *sets), capture_output=True, text=True, cwd=tmp_path, env=env
        )
        assert second.returncode == 2
        assert len(second.stderr.strip().splitlines()) == 1
        assert f"is in use by PID {proc.pid} on " in second.stderr
        assert "since 20" in second.stderr
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    kept = latest_checkpoint(run)
    step = load_checkpoint(kept)["step"]
    assert step >= 2 and kept.name == f"step_{step:08d}.pt"
    assert f"SIGTERM: stopped after step {step}, which is saved in {kept}" in out
    assert "resume with: audiodiff train" in out and f"--run-dir {run}" in out
    # The killed-or-stopped process released the directory: a resume holds it again.
    assert json.loads((run / ".lock").read_text())["pid"] == proc.pid
    lock = lock_run_dir(run)
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_a_killed_holder_never_blocks_its_resume(tmp_path):
    """SIGKILL leaves the lock file but not the lock (the kernel drops it with the process)."""
    run = tmp_path / "run"
    code = "import sys, time; from audiodiff.run_lock import lock_run_dir; "
    code += "l = lock_run_dir(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=f"in use by PID {proc.pid} on .* since "):
        lock_run_dir(run)
    proc.kill()
    proc.wait()
    lock_run_dir(run).release()
