"""The one policy for audio about to be written: never a silent clip.

A vocoder or generator can overshoot full scale from in-range input (the shipped waveform vocoder
gave a peak of 1.26 on a clip peaking at 0.98), and the 16-bit writer
(:func:`audiodiff.audio.save_audio`) can only flatten such samples at +-1, which is audible
distortion that nothing reported. Every command that writes audio (vocode, generate, demo, and
through vocode the ``samples/`` script) passes each clip through one :class:`PeakPolicy` first:

- a clip whose peak is above full scale (``|x| > 1``) is scaled down as a whole so that its peak
  is exactly full scale: one gain per clip, so its waveform keeps its shape (a limiter would
  change the sound; float WAVs would move the problem to every player that clips them);
- a clip within full scale is written as it is, bit for bit;
- the run ends with one note counting the clips that would have clipped, their largest peak, the
  number of samples over full scale, and the largest gain applied (:meth:`PeakPolicy.note`).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

A = TypeVar("A", torch.Tensor, np.ndarray)


class PeakPolicy:
    """Scales clips that would clip down to full scale and remembers them for one note.

    One instance per run (per command call); it holds only that run's counts.
    """

    def __init__(self) -> None:
        self.total = 0
        self.scaled: list[tuple[str, float, int]] = []  # (name, peak, samples over full scale)

    def __call__(self, name: str, audio: A) -> A:
        """``audio`` (any shape, float, nominal range [-1, 1]) ready to write as ``name``: as it
        is when its peak is at most 1, else divided by its peak. Non-finite samples are left to
        the writer (the peak ignores them)."""
        self.total += 1
        x = audio.detach().cpu().double().numpy() if isinstance(audio, torch.Tensor) else audio
        x = np.asarray(x, dtype=np.float64)
        finite = np.abs(x[np.isfinite(x)])
        peak = float(finite.max()) if finite.size else 0.0
        if peak <= 1.0:
            return audio
        self.scaled.append((name, peak, int((finite > 1.0).sum())))
        return audio / peak

    def note(self) -> str | None:
        """One line about the clips scaled in this run, or None when none was.

        E.g. ``"note: 2 of 5 outputs would have clipped (peak up to 1.26, 812 samples over full
        scale); each was scaled down to peak at full scale instead, by up to -2.0 dB: a.wav,
        b.wav"``.
        """
        if not self.scaled:
            return None
        peak = max(p for _, p, _ in self.scaled)
        over = sum(n for _, _, n in self.scaled)
        names = [n for n, _, _ in self.scaled]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return (
            f"note: {len(names)} of {self.total} outputs would have clipped (peak up to "
            f"{peak:.2f}, {over} samples over full scale); each was scaled down to peak at full "
            f"scale instead, by up to {-20 * math.log10(peak):.1f} dB: {shown}"
        )
