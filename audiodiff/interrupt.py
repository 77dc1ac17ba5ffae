"""Stopping a training run without losing its work: signals and a save clock.

SIGTERM (what SLURM and Kubernetes send before a kill) and SIGINT (Ctrl-C) no longer stop the
process where they land. :class:`StopGuard` records the signal; the trainer finishes the step it
is in, saves a checkpoint (atomically, through :func:`audiodiff.checkpoint.save_checkpoint`) and
raises :class:`TrainingInterrupted`, which names the step kept and carries the conventional exit
code ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). A second signal while that happens is
not caught again: it acts as it would have without the guard (Ctrl-C twice stops at once).

Under DDP a signal may reach one rank or all of them, at different steps: :meth:`StopGuard.poll`
sums the ranks' flags every step (one small all-reduce), so every rank agrees on the step at which
to stop, and rank 0 writes the checkpoint after the others have reached it. The same sum carries
the save clock (``train.save_every_minutes``, measured from the last save on each rank), so a slow
rank and a fast one save at the same step.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from audiodiff import dist

__all__ = ["StopGuard", "TrainingInterrupted"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(RuntimeError):
    """A signal stopped training after a step that was saved.

    Attributes:
        signum: the signal received (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: optimiser steps taken, all of them in ``checkpoint``.
        checkpoint: the checkpoint holding ``step``.
        exit_code: ``128 + signum``, the shell's convention for a death by that signal.
        is_main: raised on rank 0 (the rank that says so).
    """

    def __init__(self, signum: int, step: int, checkpoint: Path | None, is_main: bool) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.is_main = is_main
        self.exit_code = 128 + int(signum)
        super().__init__(
            f"{signal.Signals(signum).name}: stopped after step {step}, which is saved in "
            f"{checkpoint}"
        )


class StopGuard:
    """Catches SIGINT/SIGTERM and keeps the save clock while the training loop runs.

    Use :meth:`install` before the loop and :meth:`restore` in its ``finally``; per step call
    :meth:`poll` (on every rank: it is a collective under DDP), save when it says so (or on the
    step schedule) and then :meth:`saved`, then :meth:`check`.

    Args:
        ctx: the run's distributed context.
        save_every_minutes: save at least this often (minutes of wall time); 0 turns the clock off.
        clock: seconds, monotonic (a parameter so tests can drive it).
    """

    def __init__(
        self,
        ctx: dist.DistContext,
        save_every_minutes: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx, self.clock = ctx, clock
        self.interval_s = save_every_minutes * 60.0
        self.last_save = clock()
        self.received: int | None = None  # the signal this rank caught
        self.agreed: int | None = None  # the signal every rank acts on
        self.previous: dict[int, Any] = {}

    def install(self) -> StopGuard:
        """Catch the stop signals (only possible in the main thread; elsewhere they act as
        before, which is what a library caller running the trainer in a thread gets)."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        """Put the handlers back that :meth:`install` replaced."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            # A second signal: the user means it. Act as the previous handler would have.
            self.restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    def poll(self) -> bool:
        """Whether to save after this step: a stop signal reached some rank, or the save clock
        ran out on some rank. Every rank gets the same answer (a collective under DDP)."""
        due = self.interval_s > 0 and self.clock() - self.last_save >= self.interval_s
        # On the CPU unless NCCL must carry it: alone, reading it back costs no device sync.
        nccl = self.ctx.distributed and self.ctx.device.type == "cuda"
        flags = torch.tensor(
            [float(self.received or 0), float(due)], device=self.ctx.device if nccl else None
        )
        # Any non-zero sum means stop; the signal named is this rank's own, or SIGTERM (what a
        # scheduler sends) on a rank that caught none.
        sig, any_due = dist.all_reduce_sum(self.ctx, flags).tolist()
        if sig:
            self.agreed = self.received or int(signal.SIGTERM)
        return bool(sig or any_due)

    def saved(self) -> None:
        """A checkpoint was written: restart the save clock."""
        self.last_save = self.clock()

    def check(self, step: int, checkpoint: Path | None) -> None:
        """Raise :class:`TrainingInterrupted` when the ranks agreed to stop (after the save).

        Raises:
            TrainingInterrupted: naming the signal, ``step`` and ``checkpoint``.
        """
        if self.agreed is not None:
            raise TrainingInterrupted(self.agreed, step, checkpoint, self.ctx.is_main)
