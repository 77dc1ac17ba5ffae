"""What `train` shows: no progress-bar redraws where stderr is not a terminal (one plain line per
logged window instead), and one line estimating the time per 1,000 steps after the first steps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import TINY_OVERRIDES, invoke, manifest_overrides

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "smoke" / "vocoder.yaml"


def test_train_into_a_log_writes_plain_lines_and_a_speed_estimate(tmp_path, manifests):
    sets = [*TINY_OVERRIDES, *manifest_overrides(manifests), "train.max_steps=12",
            "train.log_every=4", "train.save_every=20"]  # fmt: skip
    result = invoke(
        "train", RECIPE, "--run-dir", tmp_path / "run", *(a for s in sets for a in ("--set", s))
    )
    assert result.exit_code == 0, result.output
    # click's runner is not a terminal, as a log file or a pipe is not: no bar and no redraws.
    assert "\r" not in result.output and "it/s" not in result.output, repr(result.output)
    windows = [line for line in result.output.splitlines() if line.startswith("step ")]
    assert [w.split(":")[0] for w in windows] == ["step 4/12", "step 8/12", "step 12/12"]
    assert all("loss " in w and "steps_per_s " in w for w in windows)
    # After step 1 (not timed: one-time costs) and ten timed steps: one estimate line.
    estimates = [line for line in result.output.splitlines() if line.startswith("speed:")]
    assert len(estimates) == 1, result.output
    assert re.search(
        r"over steps 2-11: about .+ per 1,000 steps; checkpoint at step 12 in about", estimates[0]
    )


@pytest.mark.parametrize(
    "seconds,first,step,total,save_every,text",
    [
        (
            3.0,
            1,
            4,
            200000,
            250,
            "1 s/step (1 steps/s) over steps 2-4: about 16.7 min per 1,000 "
            "steps; checkpoint at step 250 in about 4.1 min, step 200000 in about 2.31 days",
        ),
        (
            64.5,
            1001,
            1004,
            1000000,
            5000,
            "21.5 s/step (0.0465 steps/s) over steps 1002-1004: about "
            "5.97 h per 1,000 steps; checkpoint at step 5000 in about 23.9 h",
        ),
        (0.3, 1, 4, 6, 250, "checkpoint at step 6 in about 0.2 s"),  # the last step: said once
    ],
)
def test_speed_estimate_names_the_next_checkpoint(seconds, first, step, total, save_every, text):
    from audiodiff.train_log import speed_estimate

    line = speed_estimate(seconds, first, step, total, save_every)
    assert text in line and line.count("step 6 ") <= 1


def test_a_window_counts_its_own_steps_after_a_resume(monkeypatch):
    """A run resumed at step 21 logs at 25 after 4 steps: its speed is 4 steps over the
    window's time, not log_every's 5 (which overstated a resumed run's speed)."""
    import torch

    from audiodiff import train_log
    from audiodiff.config import ExperimentConfig

    clock = iter([100.0, 108.0])
    monkeypatch.setattr(train_log.time, "perf_counter", lambda: next(clock))
    window = train_log.LogWindow(ExperimentConfig(), 1, torch.device("cpu"), first_step=21)
    for _ in range(4):
        window.add(torch.tensor(1.0), torch.tensor(0.5))
    stats = window.stats(25, 1e-3, 0)
    assert stats["steps_per_s"] == pytest.approx(4 / 8.0)
    assert stats["loss"] == pytest.approx(1.0)
