"""Multi-resolution STFT distance: one computation for the metric and the training loss.

Parallel WaveGAN's auxiliary loss (Yamamoto et al. 2020, eq. 4-6): for each resolution
``(n_fft, hop_length, win_length)``, with a periodic Hann window and a ``center=True`` STFT,
magnitudes ``|X| = sqrt(max(re^2 + im^2, 1e-7))``, spectral convergence
``SC = ||X_ref| - |X_gen||_F / ||X_ref||_F`` plus log-magnitude
``LM = mean |ln|X_ref| - ln|X_gen||``; the distance is the mean of ``SC + LM`` over the
resolutions (0 for identical inputs; unitless).

:func:`audiodiff.metrics.mr_stft_distance` measures it in float64 without gradients; the trainer's
auxiliary spectral loss (``diffusion.spectral_loss``) calls :func:`mr_stft_terms` on the audio
decoded from the network's clean estimate, in the input's dtype, differentiably. Both compare
magnitudes only, so a prediction is not pulled towards the (unknowable) phase of its target at one
resolution; across resolutions, overlapping frames still reward a consistent phase.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from audiodiff.config import MR_STFT_RESOLUTIONS as DEFAULT_RESOLUTIONS
from audiodiff.power_spectrum import stft_power

# Floor of |X|^2 before the square root and log: Parallel WaveGAN's value.
STFT_POWER_FLOOR = 1e-7


def stft_magnitude(x: Tensor, n_fft: int, hop_length: int, win_length: int) -> Tensor:
    """``[B, T]`` -> ``[B, n_fft // 2 + 1, frames]`` floored magnitude (module docstring); the
    power comes from :func:`audiodiff.power_spectrum.stft_power`, whose closed-form gradient
    makes the training loss's backward pass cheaper than autograd through ``torch.stft``."""
    window = torch.hann_window(win_length, dtype=x.dtype, device=x.device)
    left = (n_fft - win_length) // 2  # torch.stft centres a short window in the frame
    window = F.pad(window, (left, n_fft - win_length - left))
    power = stft_power(x, n_fft=n_fft, hop_length=hop_length, window=window, center=True)
    return power.clamp_min(STFT_POWER_FLOOR).sqrt()


def mr_stft_terms(
    ref: Tensor,
    gen: Tensor,
    *,
    resolutions: tuple[tuple[int, int, int], ...] = DEFAULT_RESOLUTIONS,
) -> Tensor:
    """Per-example multi-resolution STFT distance (module docstring), differentiable in ``gen``.

    Args:
        ref: ``[B, T]`` reference waveform (float32 or float64, any device).
        gen: ``[B, T]`` generated waveform, same shape, dtype and device.
        resolutions: ``(n_fft, hop_length, win_length)`` triples.

    Returns:
        ``[B]`` in the inputs' dtype.

    Raises:
        ValueError: shapes differ or the signals are too short for the longest STFT (its
            reflect padding needs more than ``n_fft / 2`` samples).
    """
    if ref.shape != gen.shape or ref.dim() != 2:
        raise ValueError(
            f"ref and gen must both be [B, T], got {tuple(ref.shape)} and {tuple(gen.shape)}"
        )
    longest = max(n_fft for n_fft, _, _ in resolutions)
    if ref.shape[-1] <= longest // 2:
        raise ValueError(
            f"signals of {ref.shape[-1]} samples are too short for an STFT of n_fft {longest}"
        )
    total = torch.zeros(ref.shape[0], dtype=ref.dtype, device=ref.device)
    for n_fft, hop, win in resolutions:
        mag_r = stft_magnitude(ref, n_fft, hop, win)
        mag_g = stft_magnitude(gen, n_fft, hop, win)
        sc = (mag_r - mag_g).flatten(1).norm(dim=1) / mag_r.flatten(1).norm(dim=1)
        lm = (mag_r.log() - mag_g.log()).abs().flatten(1).mean(dim=1)
        total = total + sc + lm
    return total / len(resolutions)
