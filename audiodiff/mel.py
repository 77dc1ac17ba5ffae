"""The MelConfig-driven mel spectrogram, its value range, and the per-bin mel normaliser.

No torchaudio (DESIGN.md §2): its ``MelSpectrogram`` is ``torch.stft`` plus a filterbank, which is
what :class:`MelSpectrogram` computes here, with every convention named by a :class:`MelConfig`
(DESIGN.md §5):

- ``padding="hifigan"`` (HiFi-GAN ``meldataset.mel_spectrogram``, BigVGAN): reflect-pad
  ``(n_fft - hop_length) / 2`` samples on both sides, STFT with ``center=False``, magnitude
  ``sqrt(re^2 + im^2 + 1e-9)``. Frames = ``T // hop_length`` (= ``T / hop_length`` for crops).
- ``padding="center"`` (torchaudio / lmnt-com/diffwave, Tacotron 2): ``torch.stft(center=True)``
  with reflect padding, magnitude ``|X|`` (no epsilon). Frames = ``T // hop_length + 1``.
- ``normalized=True`` divides the STFT by ``sqrt(sum(window^2))`` (torchaudio's
  ``normalized=True``, i.e. its ``"window"`` normalisation, which lmnt-com/diffwave uses).
- ``power`` raises the magnitude (1 = magnitude, 2 = power) before the filterbank.
- Filterbank: ``librosa.filters.mel`` (Slaney or HTK scale, Slaney or no area norm); window: a
  periodic Hann of ``win_length`` samples, centred in ``n_fft`` like ``torch.stft`` does.
- ``compression="ln"``: ``ln(max(mel, 1e-5))``; ``"diffwave-db"``:
  ``clamp((20 log10(max(mel, 1e-5)) - 20 + 100) / 100, 0, 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import librosa
import numpy as np
import torch

from audiodiff.config import MelConfig
from audiodiff.stft import profile_stft_power

# Floor of the mel before the logarithm: HiFi-GAN's and lmnt-com/diffwave's clip value.
MEL_FLOOR = 1e-5
# HiFi-GAN adds this under the square root of the magnitude (keeps its gradient finite at 0).
HIFIGAN_MAGNITUDE_EPS = 1e-9


def _filterbank(cfg: MelConfig) -> np.ndarray:
    """librosa mel filterbank ``[n_mels, n_fft // 2 + 1]`` in float64."""
    return librosa.filters.mel(
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        n_mels=cfg.n_mels,
        fmin=cfg.f_min,
        fmax=cfg.f_max,
        htk=cfg.mel_scale == "htk",
        norm="slaney" if cfg.norm == "slaney" else None,
        dtype=np.float64,
    )


def _compress(mel: torch.Tensor, compression: Literal["ln", "diffwave-db"]) -> torch.Tensor:
    floored = torch.clamp(mel, min=MEL_FLOOR)
    if compression == "ln":
        return torch.log(floored)
    if compression == "diffwave-db":
        db = 20.0 * torch.log10(floored) - 20.0
        return torch.clamp((db + 100.0) / 100.0, 0.0, 1.0)
    raise ValueError(f"unknown mel compression {compression!r}; expected 'ln' or 'diffwave-db'")


def decompress_mel(mel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Undo the profile's compression: the linear mel ``fb @ |STFT|**power``, same shape.

    Args:
        mel: compressed mel ``[..., n_mels, frames]``.
        cfg: its profile.

    Raises:
        ValueError: an unknown compression.
    """
    if cfg.compression == "ln":
        return mel.exp()
    if cfg.compression != "diffwave-db":
        raise ValueError(
            f"unknown mel compression {cfg.compression!r}; expected 'ln' or 'diffwave-db'"
        )
    # diffwave-db: mel = clamp((20 log10(max(M, 1e-5)) - 20 + 100) / 100, 0, 1), so
    # 20 log10(M) = 100 mel - 100 + 20 wherever the clamp did not bite.
    return torch.pow(10.0, (mel * 100.0 - 80.0) / 20.0)


class MelSpectrogram(torch.nn.Module):
    """Mel spectrogram exactly as a :class:`MelConfig` defines it (DESIGN.md §5).

    The filterbank is a non-persistent buffer: it is derived from the config, so it never goes
    stale in a checkpoint. The STFT is the profile's own (:mod:`audiodiff.stft`), shared with
    the STFT domain; its power comes from :func:`audiodiff.stft.profile_stft_power`, whose
    closed-form gradient the trainer's mel loss backpropagates through. The filterbank is kept in
    float64 and cast to the compute dtype.
    """

    mel_basis: torch.Tensor

    def __init__(self, cfg: MelConfig) -> None:
        super().__init__()
        if cfg.win_length > cfg.n_fft:
            raise ValueError(f"win_length {cfg.win_length} exceeds n_fft {cfg.n_fft}")
        if cfg.padding == "hifigan" and (cfg.n_fft - cfg.hop_length) % 2:
            raise ValueError(
                f"hifigan padding needs n_fft - hop_length even, got {cfg.n_fft} - {cfg.hop_length}"
            )
        self.cfg = cfg
        self.register_buffer("mel_basis", torch.from_numpy(_filterbank(cfg)), persistent=False)

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` input samples.

        ``hifigan`` padding: ``n_samples // hop_length`` (exactly ``n_samples / hop_length`` when
        divisible; a trailing partial hop yields no frame). ``center``: ``n_samples // hop + 1``.
        """
        hop = self.cfg.hop_length
        return n_samples // hop if self.cfg.padding == "hifigan" else n_samples // hop + 1

    def min_samples(self) -> int:
        """Shortest input accepted: reflect padding needs more samples than it pads."""
        if self.cfg.padding == "hifigan":
            return max((self.cfg.n_fft - self.cfg.hop_length) // 2 + 1, self.cfg.hop_length)
        return self.cfg.n_fft // 2 + 1

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Compute the compressed mel spectrogram.

        Args:
            audio: ``[B, T]`` or ``[B, 1, T]`` float waveform in [-1, 1]. float32 and float64 are
                computed in their own dtype; half precision is computed in float32. Autocast is
                disabled inside (an fp16 STFT loses the low bins).

        Returns:
            ``[B, n_mels, frames]`` with ``frames = self.n_frames(T)``.

        Raises:
            ValueError: wrong rank, a channel count other than 1, integer samples, or fewer
                samples than the reflect padding needs.
        """
        cfg = self.cfg
        if audio.dim() == 3:
            if audio.shape[1] != 1:
                raise ValueError(f"expected mono audio [B, 1, T], got shape {tuple(audio.shape)}")
            audio = audio[:, 0]
        if audio.dim() != 2:
            raise ValueError(f"expected audio [B, T] or [B, 1, T], got shape {tuple(audio.shape)}")
        if not audio.is_floating_point():
            raise ValueError(f"audio must be a float tensor in [-1, 1], got dtype {audio.dtype}")
        if audio.shape[-1] < self.min_samples():
            raise ValueError(
                f"audio has {audio.shape[-1]} samples ({audio.shape[-1] / cfg.sample_rate:.4f} s "
                f"at {cfg.sample_rate} Hz) but the {cfg.name!r} mel needs at least "
                f"{self.min_samples()} ({self.min_samples() / cfg.sample_rate:.4f} s)"
            )
        dtype = audio.dtype if audio.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.autocast(device_type=audio.device.type, enabled=False):
            x = audio.to(dtype)
            # |STFT|^2 with a closed-form gradient: the trainer's mel loss backpropagates here.
            power = profile_stft_power(
                x,
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                win_length=cfg.win_length,
                padding=cfg.padding,
                normalized=cfg.normalized,
            )
            if cfg.padding == "hifigan":
                power = power + HIFIGAN_MAGNITUDE_EPS
            magnitude = torch.sqrt(power)
            if cfg.power != 1.0:
                magnitude = magnitude**cfg.power
            mel = torch.matmul(self.mel_basis.to(device=x.device, dtype=dtype), magnitude)
            return _compress(mel, cfg.compression)


def mel_value_range(cfg: MelConfig) -> tuple[float, float]:
    """Range of values :class:`MelSpectrogram` can produce for ``cfg`` on audio in [-1, 1].

    ``diffwave-db`` clamps to (0, 1). For ``ln`` the lower end is ``ln(1e-5)``; the upper end is a
    proven bound, the smaller of two per filter row ``f`` (window ``w``, ``N = n_fft``):

    - triangle inequality: ``|X_k| <= sum(w)``, so ``mel <= sum(f) * sum(w)^power``;
    - for ``power`` 1, Cauchy-Schwarz with Parseval: ``mel <= ||f||_2 * sqrt(sum_k |X_k|^2)``, and
      for a real frame with ``|x| <= 1`` the one-sided ``sum_k |X_k|^2 <= (N sum(w^2) +
      2 sum(w)^2) / 2`` (the DC and Nyquist bins are not mirrored).

    Magnitudes are divided by ``sqrt(sum(w^2))`` when ``normalized``; HiFi-GAN's ``1e-9`` adds at
    most ``sqrt(1e-9) * sum(f)``. A margin of 1e-3 on the ln scale absorbs float32 rounding. Full-
    scale square waves come within about 0.7 nats of the bound for the built-in profiles.

    Returns:
        ``(low, high)`` on the compressed scale.
    """
    low = math.log(MEL_FLOOR)
    if cfg.compression == "diffwave-db":
        return 0.0, 1.0
    window = np.hanning(cfg.win_length + 1)[:-1]  # periodic Hann, as torch.hann_window
    scale = 1.0 / math.sqrt(float((window**2).sum())) if cfg.normalized else 1.0
    # sqrt(|X|^2 + eps) <= |X| + sqrt(eps): HiFi-GAN's epsilon shifts every magnitude bound.
    eps_shift = math.sqrt(HIFIGAN_MAGNITUDE_EPS) if cfg.padding == "hifigan" else 0.0
    fb = _filterbank(cfg)
    row_sum = fb.sum(axis=1)
    bound = row_sum * (float(window.sum()) * scale + eps_shift) ** cfg.power
    if cfg.power == 1.0:
        energy = (cfg.n_fft * float((window**2).sum()) + 2 * float(window.sum()) ** 2) / 2
        parseval = np.sqrt((fb**2).sum(axis=1)) * math.sqrt(energy) * scale + row_sum * eps_shift
        bound = np.minimum(bound, parseval)
    high = math.log(max(float(bound.max()), MEL_FLOOR)) + 1e-3
    return low, high


# --------------------------------------------------------------------------------------------------
# Mel normaliser (mel-domain diffusion)
# --------------------------------------------------------------------------------------------------


class MelStatsAccumulator:
    """Streaming per-bin mean and standard deviation over frames, accumulated in float64.

    Merges batches with Chan et al.'s parallel variance update (stable for millions of frames,
    unlike sum / sum-of-squares).
    """

    def __init__(self, n_mels: int) -> None:
        self.n_mels = n_mels
        self.count = 0
        self.mean = torch.zeros(n_mels, dtype=torch.float64)
        self.m2 = torch.zeros(n_mels, dtype=torch.float64)

    def update(self, mel: torch.Tensor) -> None:
        """Add frames from ``mel`` ``[n_mels, F]`` or ``[B, n_mels, F]``."""
        m = mel.detach().to("cpu", torch.float64)
        if m.dim() == 2:
            m = m.unsqueeze(0)
        if m.dim() != 3 or m.shape[1] != self.n_mels:
            raise ValueError(
                f"mel has shape {tuple(mel.shape)} but the accumulator expects "
                f"[B, {self.n_mels}, F]"
            )
        frames = m.transpose(0, 1).reshape(self.n_mels, -1)
        n = frames.shape[1]
        if n == 0:
            return
        batch_mean = frames.mean(dim=1)
        batch_m2 = ((frames - batch_mean[:, None]) ** 2).sum(dim=1)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def std(self) -> torch.Tensor:
        """Population standard deviation per bin, ``[n_mels]`` float64."""
        if self.count == 0:
            raise ValueError("no frames accumulated; call update() with at least one mel first")
        return torch.sqrt(self.m2 / self.count)

    def normalizer(self, min_std: float = 1e-3) -> MelNormalizer:
        """A :class:`MelNormalizer` holding the accumulated statistics."""
        return MelNormalizer.from_stats(self.mean, self.std(), min_std=min_std)


class MelNormalizer(torch.nn.Module):
    """Per-bin standardisation of mels: ``(mel - mean) / std`` and back.

    ``mean`` and ``std`` (``[n_mels]``) are persistent buffers, so they travel in state dicts with
    the model. ``std`` is floored at ``min_std``: bins that are constant in the data (for example
    always at the 1e-5 clamp) would otherwise blow up to +-inf.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_mels: int, min_std: float = 1e-3) -> None:
        super().__init__()
        if min_std <= 0:
            raise ValueError(f"min_std must be positive, got {min_std}")
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    @classmethod
    def from_stats(
        cls, mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray, min_std: float = 1e-3
    ) -> MelNormalizer:
        """Build from per-bin ``mean`` and ``std`` ``[n_mels]``; ``std`` floored at ``min_std``."""
        # ascontiguousarray: torch refuses NumPy views with negative strides (x[::-1]).
        if isinstance(mean, np.ndarray):
            mean = np.ascontiguousarray(mean)
        if isinstance(std, np.ndarray):
            std = np.ascontiguousarray(std)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean has {mean_t.numel()} bins but std has {std_t.numel()}")
        norm = cls(mean_t.numel(), min_std=min_std)
        norm.mean.copy_(mean_t)
        norm.std.copy_(torch.clamp(std_t, min=min_std))
        return norm

    @classmethod
    def fit(cls, mels: Iterable[torch.Tensor], min_std: float = 1e-3) -> MelNormalizer:
        """Statistics over every frame of ``mels`` (each ``[n_mels, F]`` or ``[B, n_mels, F]``)."""
        acc: MelStatsAccumulator | None = None
        for mel in mels:
            if acc is None:
                acc = MelStatsAccumulator(mel.shape[-2])
            acc.update(mel)
        if acc is None:
            raise ValueError("MelNormalizer.fit got no mels")
        return acc.normalizer(min_std=min_std)

    def _check(self, mel: torch.Tensor) -> None:
        if mel.dim() < 2 or mel.shape[-2] != self.mean.numel():
            raise ValueError(
                f"mel has shape {tuple(mel.shape)} but this normaliser expects "
                f"{self.mean.numel()} bins in [B, n_mels, F]"
            )

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, F]`` -> standardised ``[B, n_mels, F]`` (same dtype)."""
        self._check(mel)
        mean = self.mean.to(mel.dtype)[:, None]
        return (mel - mean) / self.std.to(mel.dtype)[:, None]

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`, ``[B, n_mels, F]``."""
        self._check(mel)
        return mel * self.std.to(mel.dtype)[:, None] + self.mean.to(mel.dtype)[:, None]
