"""What a training run shows and records on rank 0: messages, progress bar, metrics, TensorBoard.

On a terminal the progress is a tqdm bar with the latest window's values beside it. Anywhere else
(a log file, a pipe, a notebook's captured output) a redrawn bar would write a ``\\r`` update per
step into the log, so there is no bar: each logged window is one plain line instead. Either way,
after the first few steps one line estimates the time per 1,000 steps and to the next checkpoint
(the first step is left out of it: it pays one-time costs).

Every logged window and evaluation is one JSON row of ``RUN_DIR/metrics.jsonl`` and, when
tensorboard is installed, scalars (and copy-synthesis audio with its log-mel image) under
``RUN_DIR/tensorboard``. Other ranks show and record nothing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from audiodiff.config import ExperimentConfig
from audiodiff.mel import MelSpectrogram

# The speed estimate times the steps after the first one of the process (one-time costs) until
# there are this many, or this many seconds of them: a data loader still filling its queue made
# the stft recipe's steps 2-4 2.6x slower than its steps 5-40 (measured here), and a model at 20 s
# a step should not keep a user waiting minutes for its estimate.
ESTIMATE_STEPS, ESTIMATE_S = 10, 60.0


class RunLog:
    """Rank 0's output of a training run in ``run_dir``.

    Args:
        run_dir: where ``metrics.jsonl`` and ``tensorboard/`` go.
        is_main: this process is rank 0 (the others show and record nothing).
        sink: message sink (defaults to the progress bar's ``write``, else ``print``).
    """

    def __init__(
        self, run_dir: Path, is_main: bool, sink: Callable[[str], None] | None = None
    ) -> None:
        self.run_dir, self.is_main, self._sink = run_dir, is_main, sink
        self.bar: Any = None
        self.writer: Any = None
        self.total = self.step = 0
        self._timed: tuple[int, float] | None = None  # (step, time) the estimate counts from

    def start(self, total: int, step: int) -> None:
        """Open the progress bar (at ``step`` of ``total``; only on a terminal) and the
        TensorBoard writer."""
        from tqdm import tqdm

        self.total, self.step, self._timed = total, step, None
        # tqdm draws on stderr: a bar only where that is a terminal (see the module docstring).
        interactive = self.is_main and sys.stderr.isatty()
        self.bar = tqdm(
            total=total, initial=step, unit="step", disable=not interactive, dynamic_ncols=True
        )
        self.writer = tensorboard_writer(self.run_dir, purge_step=step) if self.is_main else None

    def close(self) -> None:
        """Close the progress bar and the TensorBoard writer."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.writer = None

    def message(self, message: str) -> None:
        """A message from rank 0 (through the progress bar when one is open)."""
        if not self.is_main:
            return
        if self._sink is not None:
            self._sink(message)
        elif self.bar is not None and not self.bar.disable:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def advance(self, step: int, save_every: int) -> None:
        """Step ``step`` is done: move the bar and, once, print the speed estimate."""
        self.step = step
        self.bar.update(1)
        now = time.perf_counter()
        if self._timed is None:
            self._timed = (step, now)  # the end of the first step: the timing starts here
        elif self._timed[0] >= 0 and (
            step - self._timed[0] >= ESTIMATE_STEPS or now - self._timed[1] >= ESTIMATE_S
        ):
            first, since = self._timed
            self.message(speed_estimate(now - since, first, step, self.total, save_every))
            self._timed = (-1, now)  # said once

    def show(self, stats: dict[str, float]) -> None:
        """The latest training window's values: beside the bar, or one line without a bar."""
        values = dict(
            loss=f"{stats['loss']:.4f}", gnorm=f"{stats['grad_norm']:.3f}",
            lr=f"{stats['lr']:.2e}", audio_s_per_s=f"{stats['audio_s_per_s']:.2f}",
        )  # fmt: skip
        if not self.bar.disable:
            self.bar.set_postfix(**values)
            return
        self.message(
            f"step {self.step}/{self.total}: "
            + ", ".join(f"{k} {v}" for k, v in values.items())
            + f", steps_per_s {stats['steps_per_s']:.3f}"
        )

    def record(self, kind: str, step: int, stats: dict[str, float]) -> None:
        """Append ``stats`` to ``RUN_DIR/metrics.jsonl`` and TensorBoard (rank 0)."""
        if not self.is_main:
            return
        row = {"kind": kind, "step": step, **stats}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in stats.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
        if kind == "eval":
            self.message(
                f"step {step} eval: "
                + ", ".join(f"{k} {v:.4f}" for k, v in stats.items() if isinstance(v, float))
            )

    def add_audio(self, tag: str, audio: torch.Tensor, mel: MelSpectrogram, step: int) -> None:
        """Audio ``[T]`` and its log-mel image to TensorBoard (when it is installed)."""
        if self.writer is None:
            return
        sr = mel.cfg.sample_rate
        self.writer.add_audio(tag, audio.clamp(-1, 1).unsqueeze(0), step, sample_rate=sr)
        spec = mel(audio.unsqueeze(0).float())[0]  # [n_mels, frames]
        image = (spec - spec.min()) / (spec.max() - spec.min()).clamp_min(1e-8)
        try:  # PNG encoding needs Pillow, which not every tensorboard install has
            self.writer.add_image(f"{tag}_mel", image.flip(0).unsqueeze(0), step)
        except ImportError:
            pass


class LogWindow:
    """The training values of the steps since the last log, summed on the device, so logging a
    window costs one host sync."""

    def __init__(
        self, cfg: ExperimentConfig, world_size: int, device: torch.device, first_step: int = 0
    ) -> None:
        self.sums = torch.zeros(3, device=device)  # loss sum, grad-norm sum, good steps
        self.start = time.perf_counter()
        self.first_step = first_step
        self.segment_s = cfg.data.segment_frames * cfg.mel.hop_length / cfg.mel.sample_rate
        self.global_batch = cfg.data.batch_size * cfg.train.grad_accum * world_size

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """A good step's loss and gradient norm (device scalars)."""
        self.sums += torch.stack([loss, grad_norm, torch.ones_like(loss)])

    def stats(self, step: int, lr: float, skipped: int) -> dict[str, float]:
        """The window's logged values, over its steps up to ``step``: counted from where it
        started, not assumed to be ``log_every`` (a resumed run's first window is shorter, and
        its speed was overstated 2-4x)."""
        loss_sum, norm_sum, n_good = self.sums.tolist()  # the one sync per log window
        rate = (step - self.first_step) / (time.perf_counter() - self.start)
        return {
            "loss": loss_sum / n_good if n_good else float("nan"),
            "grad_norm": norm_sum / n_good if n_good else float("nan"),
            "lr": lr,
            "steps_per_s": rate,
            "audio_s_per_s": rate * self.global_batch * self.segment_s,
            "skipped": skipped,
        }

    def restart(self, step: int) -> None:
        """Start the next window after step ``step``."""
        self.sums.zero_()
        self.start = time.perf_counter()
        self.first_step = step


def speed_estimate(seconds: float, first: int, step: int, total: int, save_every: int) -> str:
    """One line: time per 1,000 steps from steps ``first + 1 .. step`` that took ``seconds``,
    and the time to the next checkpoint and to ``total``."""
    per_step = seconds / (step - first)
    save_at = min((step // save_every + 1) * save_every, total)
    end = f", step {total} in about {_duration((total - step) * per_step)}"
    return (
        f"speed: {per_step:.3g} s/step ({1 / per_step:.3g} steps/s) over steps "
        f"{first + 1}-{step}: about {_duration(1000 * per_step)} per 1,000 steps; "
        f"checkpoint at step {save_at} in about {_duration((save_at - step) * per_step)}"
        + (end if save_at < total else "")
    )


def _duration(seconds: float) -> str:
    """``seconds`` as a rounded figure in s, min, h or days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def tensorboard_writer(run_dir: Path, purge_step: int = 0) -> Any:
    """A TensorBoard ``SummaryWriter`` when tensorboard is installed, else None (never needed).

    ``purge_step`` (the resumed step) hides events an interrupted run wrote after it.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step or None)
