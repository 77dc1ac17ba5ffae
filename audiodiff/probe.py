"""One look at one audio file: open it, read its header, decode it, measure it, name its problem.

The training scan (:func:`audiodiff.scan.check_clip`) and ``prepare``
(:func:`audiodiff.datasets.prepare.probe_audio`) both ask the same questions of a file: can it be
read, how long is it, is it empty, does it hold NaN or inf, is it too short, silent or over range.
:func:`probe_clip` answers them once (:class:`ClipProbe`) and :func:`clip_problem` applies the
rules in one order; each caller words the answer for its own report. NumPy and soundfile only (no
torch), so ``prepare``'s worker processes stay light.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from audiodiff.encoding import native_path
from audiodiff.levels import level_problem, mono_peak


@dataclass(frozen=True)
class ClipProbe:
    """What :func:`probe_clip` found in one file.

    Attributes:
        sample_rate: the header's rate (0 when unreadable).
        channels: the header's channel count (0 when unreadable).
        n_frames: decoded frames (a truncated file is shorter than its header says); the header's
            count when the file was not decoded; up to the first non-finite block when decoding
            stopped there.
        peak: peak ``|x|`` of the mono mix (:func:`audiodiff.levels.mono_peak`) at the file's rate,
            NaN when a sample is not finite, None when the file was not decoded.
        content: sha1 of the rate, channel count and decoded float32 samples (equal for a copy,
            or the same audio in another container), when asked for and every sample is finite.
        error: why the file could not be opened or decoded, or None.
    """

    sample_rate: int = 0
    channels: int = 0
    n_frames: int = 0
    peak: float | None = None
    content: str | None = None
    error: Exception | None = None


def probe_clip(
    path: str | os.PathLike[str],
    *,
    decode: bool = True,
    hash_content: bool = False,
    stop_at_non_finite: bool = False,
    errors: tuple[type[Exception], ...] = (Exception,),
) -> ClipProbe:
    """Open ``path`` and, when ``decode``, read it once in blocks of 65,536 frames.

    Args:
        path: the file (text or :class:`pathlib.Path`).
        decode: decode the samples (frame count, peak); False trusts the header.
        hash_content: also compute :attr:`ClipProbe.content`.
        stop_at_non_finite: stop decoding at the first block holding NaN or inf (the frame count
            then ends there); otherwise the rest is still counted.
        errors: the exceptions that make a file unreadable (kept in :attr:`ClipProbe.error`);
            others propagate. libsndfile raises LibsndfileError, RuntimeError or OSError.
    """
    try:
        with sf.SoundFile(native_path(path)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            if not decode:
                return ClipProbe(sample_rate=rate, channels=channels, n_frames=int(f.frames))
            n_frames, peak = 0, 0.0
            content = hashlib.sha1(f"{rate}/{channels}/".encode()) if hash_content else None
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                n_frames += block.shape[0]
                if not math.isfinite(peak):
                    continue
                block_peak = mono_peak(block)  # NaN when the block holds a non-finite sample
                if not math.isfinite(block_peak):
                    peak = math.nan
                    if stop_at_non_finite:
                        break
                    continue
                peak = max(peak, block_peak)
                if content is not None:
                    content.update(np.ascontiguousarray(block).tobytes())
    except errors as err:
        return ClipProbe(error=err)
    finite = math.isfinite(peak)
    return ClipProbe(
        sample_rate=rate,
        channels=channels,
        n_frames=n_frames,
        peak=peak,
        content=content.hexdigest() if content is not None and finite else None,
    )


def clip_problem(
    probe: ClipProbe,
    *,
    min_duration_s: float,
    silence_threshold: float,
    sample_rates: Collection[int] | None = None,
) -> tuple[str, str] | None:
    """The first problem of a readable file, as ``(kind, detail)``, or None when it is usable.

    In this order: ``empty`` (no frames), ``non_finite`` (NaN or inf), ``bad_sample_rate`` (a
    rate outside ``sample_rates``, when given), ``too_short`` (under ``min_duration_s``), then
    the level rule :func:`audiodiff.levels.level_problem` (``silent`` below
    ``silence_threshold``, ``over_range`` above +6 dBFS) on the mono mix's peak, measured at the
    file's rate (resampling every file here would double the work, and the over-range limit's
    margin covers the resampler's overshoot). Undecoded files skip the sample checks.
    """
    rate, n_frames = probe.sample_rate, probe.n_frames
    if n_frames == 0:
        return "empty", "no samples"
    if probe.peak is not None and not math.isfinite(probe.peak):
        return "non_finite", "NaN/inf"
    if sample_rates is not None and rate not in sample_rates:
        return "bad_sample_rate", f"{rate} Hz is not an audio rate; header is wrong"
    duration_s = n_frames / rate if rate else 0.0
    if duration_s < min_duration_s:
        return "too_short", f"{duration_s:.3f} s < {min_duration_s} s"
    if probe.peak is None:
        return None
    return level_problem(probe.peak, silence_threshold=silence_threshold)
