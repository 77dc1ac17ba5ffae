"""Griffin-Lim inversion of a mel spectrogram of any profile: the quality floor of every vocoder.

A mel spectrogram keeps no phase and only ``n_mels`` bands of magnitude, so inverting it takes
three steps, each undoing one step of :class:`audiodiff.mel.MelSpectrogram`:

1. undo the compression (``ln`` -> ``exp``; ``diffwave-db`` -> back from the [0, 1] dB scale),
2. undo the mel filterbank: non-negative least squares ``min ||fb @ P - mel||``, ``P >= 0`` for the
   linear power-``p`` spectrogram ``P = |STFT|**p`` (pseudo-inverse start, then multiplicative
   updates, which keep ``P`` non-negative without clipping it to a hard floor),
3. recover a phase with the fast Griffin-Lim iteration, using an STFT/ISTFT pair with exactly the
   profile's window, padding and normalisation, so that the signal it returns has the mel it was
   given as nearly as the information left allows.

Bins outside ``[f_min, f_max]`` carry no mel energy and come back silent: with the ``hifigan``
profile (f_max 8 kHz at 22.05 kHz) Griffin-Lim output has no content above 8 kHz.

Output length: ``frames * hop_length`` for ``hifigan`` padding (the inverse of frames = T / hop);
``(frames - 1) * hop_length`` for ``center`` padding (frames = T // hop + 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from audiodiff.config import MelConfig
from audiodiff.consistency import filterbank_inverse, griffin_lim_phase
from audiodiff.mel import MelSpectrogram, decompress_mel
from audiodiff.stft import normalized_scale, pad_left, profile_istft, signal_length


def mel_basis(cfg: MelConfig) -> Tensor:
    """The profile's mel filterbank, float32 ``[n_mels, n_fft // 2 + 1]``, exactly the one
    :class:`~audiodiff.mel.MelSpectrogram` applies."""
    return MelSpectrogram(cfg).mel_basis.float()


def output_length(cfg: MelConfig, frames: int) -> int:
    """Samples of the waveform that ``frames`` mel frames of this profile describe."""
    return signal_length(frames, cfg.hop_length, cfg.padding)


def mel_to_linear(mel_linear: Tensor, cfg: MelConfig, *, nnls_iters: int = 200) -> Tensor:
    """Non-negative least-squares inverse of the mel filterbank.

    Lee & Seung 2001 (multiplicative updates for non-negative least squares), started from the
    pseudo-inverse solution clipped to a small positive value.

    Args:
        mel_linear: linear (decompressed) mel ``[..., n_mels, frames]``.
        cfg: its profile.
        nnls_iters: multiplicative updates after the pseudo-inverse start (0: clipped pinv only).

    Returns:
        Linear STFT magnitude ``[..., n_fft // 2 + 1, frames]`` (power 1, the STFT's own scale).
    """
    fb = mel_basis(cfg).to(mel_linear.device)
    magnitude = filterbank_inverse(mel_linear, fb, power=cfg.power, iters=nnls_iters)
    # normalized profiles (legacy diffwave) divide the STFT by the window norm: back to raw scale.
    return magnitude * normalized_scale(cfg.win_length, cfg.n_fft, cfg.normalized)


def _stft_args(cfg: MelConfig) -> dict:
    """The profile's STFT without normalisation (the magnitude is brought to this raw scale by
    :func:`mel_to_linear`)."""
    return {
        "n_fft": cfg.n_fft, "hop_length": cfg.hop_length, "win_length": cfg.win_length,
        "padding": cfg.padding,
    }  # fmt: skip


def _istft(spec: Tensor, cfg: MelConfig) -> Tensor:
    """Least-squares inverse of the profile's raw STFT (:func:`audiodiff.stft.profile_istft`):
    ``[B, output_length(cfg, frames)]``."""
    return profile_istft(spec, **_stft_args(cfg))


def griffin_lim(
    mel: Tensor,
    cfg: MelConfig,
    *,
    n_iter: int = 64,
    momentum: float = 0.99,
    init: Literal["random", "zeros"] = "random",
    nnls_iters: int = 200,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Invert a compressed mel spectrogram of profile ``cfg`` to a waveform.

    Fast Griffin-Lim: Perraudin, Balazs & Sondergaard 2013, "A fast Griffin-Lim algorithm"
    (Griffin & Lim 1984 with momentum ``alpha``; ``momentum=0`` is the original algorithm).

    Args:
        mel: compressed mel ``[..., n_mels, frames]`` as made by ``MelSpectrogram(cfg)``.
        cfg: the mel profile it was made with.
        n_iter: phase-recovery iterations; 0 returns the magnitude with the initial phase
            (random-phase inversion, the floor below Griffin-Lim).
        momentum: fast Griffin-Lim's ``alpha`` in [0, 1]; 0.99 as librosa.
        init: initial phase, uniform random or all zero.
        nnls_iters: multiplicative NNLS updates of the filterbank inversion.
        generator: source of the random initial phase; ``None`` uses a generator seeded with 0,
            so the result is reproducible.

    Returns:
        Waveform ``[..., T]`` with ``T = frames * hop_length`` (hifigan padding) or
        ``(frames - 1) * hop_length`` (center padding), float32 on ``mel``'s device.

    Raises:
        ValueError: wrong number of mel bands, non-finite values, or a bad option.
    """
    if mel.dim() < 2 or mel.shape[-2] != cfg.n_mels:
        raise ValueError(
            f"mel of shape {tuple(mel.shape)} has {mel.shape[-2] if mel.dim() >= 2 else 'no'} "
            f"bands but profile {cfg.name!r} expects [..., {cfg.n_mels}, frames]"
        )
    if not torch.isfinite(mel).all():
        raise ValueError("mel contains NaN or infinite values")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if init not in ("random", "zeros"):
        raise ValueError(f"init must be 'random' or 'zeros', got {init!r}")
    frames = mel.shape[-1]
    length = output_length(cfg, frames)
    pad = pad_left(cfg.n_fft, cfg.hop_length, cfg.padding)
    if length < 1 or length <= pad:
        raise ValueError(
            f"{frames} mel frames are too few to invert with profile {cfg.name!r} "
            f"(the reflect padding of {pad} samples needs a longer signal)"
        )
    lead = mel.shape[:-2]
    mel = mel.detach().float().reshape(-1, cfg.n_mels, frames)
    magnitude = mel_to_linear(decompress_mel(mel, cfg), cfg, nnls_iters=nnls_iters)

    if init == "random":
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        # Drawn on the CPU so one seed gives the same phases on every device.
        phase = torch.rand(magnitude.shape, generator=generator) * (2 * math.pi)
        angles = torch.polar(torch.ones_like(phase), phase).to(mel.device)
    else:
        angles = torch.ones_like(magnitude, dtype=torch.complex64)

    angles = griffin_lim_phase(
        magnitude, angles, n_iter=n_iter, momentum=momentum, first_frame=0,
        total_frames=frames, stft_args=_stft_args(cfg),
    )  # fmt: skip
    audio = _istft(magnitude * angles, cfg)
    return audio.reshape(*lead, length)
