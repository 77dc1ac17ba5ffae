"""What a training run shows and records on rank 0: messages, progress bar, metrics, TensorBoard.

Every logged window and evaluation is one JSON row of ``RUN_DIR/metrics.jsonl`` and, when
tensorboard is installed, scalars (and copy-synthesis audio with its log-mel image) under
``RUN_DIR/tensorboard``. Other ranks show and record nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from audiodiff.config import ExperimentConfig
from audiodiff.mel import MelSpectrogram


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

    def start(self, total: int, step: int) -> None:
        """Open the progress bar (at ``step`` of ``total``) and the TensorBoard writer."""
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, initial=step, unit="step", disable=not self.is_main, dynamic_ncols=True
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

    def show(self, stats: dict[str, float]) -> None:
        """The latest training window's values beside the progress bar."""
        self.bar.set_postfix(
            loss=f"{stats['loss']:.4f}", gnorm=f"{stats['grad_norm']:.3f}",
            lr=f"{stats['lr']:.2e}", audio_s_per_s=f"{stats['audio_s_per_s']:.2f}",
        )  # fmt: skip

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

    def __init__(self, cfg: ExperimentConfig, world_size: int, device: torch.device) -> None:
        self.sums = torch.zeros(3, device=device)  # loss sum, grad-norm sum, good steps
        self.start = time.perf_counter()
        self.segment_s = cfg.data.segment_frames * cfg.mel.hop_length / cfg.mel.sample_rate
        self.global_batch = cfg.data.batch_size * cfg.train.grad_accum * world_size

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """A good step's loss and gradient norm (device scalars)."""
        self.sums += torch.stack([loss, grad_norm, torch.ones_like(loss)])

    def stats(self, n_steps: int, lr: float, skipped: int) -> dict[str, float]:
        """The window's logged values, over its ``n_steps`` steps."""
        loss_sum, norm_sum, n_good = self.sums.tolist()  # the one sync per log window
        rate = n_steps / (time.perf_counter() - self.start)
        return {
            "loss": loss_sum / n_good if n_good else float("nan"),
            "grad_norm": norm_sum / n_good if n_good else float("nan"),
            "lr": lr,
            "steps_per_s": rate,
            "audio_s_per_s": rate * self.global_batch * self.segment_s,
            "skipped": skipped,
        }

    def restart(self) -> None:
        """Start the next window."""
        self.sums.zero_()
        self.start = time.perf_counter()


def tensorboard_writer(run_dir: Path, purge_step: int = 0) -> Any:
    """A TensorBoard ``SummaryWriter`` when tensorboard is installed, else None (never needed).

    ``purge_step`` (the resumed step) hides events an interrupted run wrote after it.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step or None)
