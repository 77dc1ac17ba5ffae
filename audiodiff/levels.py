"""The level rule for audio a model consumes: silence, over range and non-finite samples.

Every consumer applies it to the peak of what the model gets (mono mix, at the model's rate where
the caller resamples): ``vocode``, ``mel``, ``Vocoder.mel``, the training scan
(:func:`audiodiff.scan.check_clip`) and ``prepare``
(:func:`audiodiff.datasets.prepare.probe_audio`).
:func:`audiodiff.audio.check_level` and :func:`audiodiff.audio.load_model_audio` apply it to
tensors and files. NumPy only (no torch), so ``prepare`` and its worker processes stay light.
"""

from __future__ import annotations

import math

import numpy as np

# Level limits on the signal a model consumes (mono, at the model's rate), checked by
# :func:`level_problem` for every consumer: vocode, mel, Vocoder.mel, the training scan, prepare.
# Silence: a peak below -80 dBFS holds nothing to learn or vocode (the default of
# data.silence_threshold and prepare's --silence-threshold, which override it there).
SILENCE_PEAK = 1e-4
# Over range: a peak above +6 dBFS is audio in another scale (float files peaking at 4 or 16,
# integers stored as float), not audio in [-1, 1]. Integer PCM cannot exceed 1.0 before resampling;
# the margin above 1.0 covers what legitimately goes over: lossy decoders (mp3/ogg of limited
# masters overshoot by up to about +3 dB) and soxr's Gibbs overshoot on full-scale integer audio
# (1.16 to 1.34 for full-scale square waves resampled from 44.1 kHz to 16, 22.05, 24 or 48 kHz).
# Clipping (flat tops at full scale) is not refused: clipped recordings are real data.
OVER_RANGE_PEAK = 2.0


def dbfs(peak: float) -> str:
    """``peak`` on the dBFS scale (full scale 1.0), e.g. ``"+12.0 dBFS"``, for messages."""
    return f"{20 * math.log10(peak):+.1f} dBFS" if peak > 0 else "-inf dBFS"


def level_problem(
    peak: float,
    *,
    silence_threshold: float = SILENCE_PEAK,
    max_peak: float = OVER_RANGE_PEAK,
) -> tuple[str, str] | None:
    """The level rule every consumer of audio applies, on the peak of what the model gets.

    Args:
        peak: max ``|x|`` of the signal after mix-down to mono (and resampling where the caller
            resamples); NaN for non-finite samples.
        silence_threshold: peaks below it are silence (default :data:`SILENCE_PEAK`).
        max_peak: peaks above it are over range (default :data:`OVER_RANGE_PEAK`).

    Returns:
        ``None`` for a usable level, else ``(kind, detail)``: kind ``"non_finite"``,
        ``"silent"`` or ``"over_range"``; the detail names the measured peak and the limit.
    """
    if not math.isfinite(peak):
        return "non_finite", "holds NaN or infinite samples"
    if peak < silence_threshold:
        return "silent", (
            f"peak {peak:.2e} ({dbfs(peak)}) is below the silence threshold "
            f"{silence_threshold:.0e} ({dbfs(silence_threshold)})"
        )
    if peak > max_peak:
        return "over_range", (
            f"peak {peak:.2f} ({dbfs(peak)}) is above {max_peak:.2f} ({dbfs(max_peak)}), the "
            "most accepted for audio in [-1, 1] (full scale 1.0): scale it down"
        )
    return None


def mono_peak(frames: np.ndarray) -> float:
    """Peak ``|x|`` of the mono mix (channel mean, as :func:`load_audio` mixes) of a
    ``[frames, channels]`` block; NaN when the block holds a non-finite sample; 0 when empty."""
    if frames.size == 0:
        return 0.0
    if not np.isfinite(frames).all():
        return math.nan
    mono = frames.mean(axis=1, dtype=np.float32) if frames.ndim == 2 else frames
    return float(np.abs(mono).max())
