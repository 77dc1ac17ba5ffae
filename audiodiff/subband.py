"""Sub-band processing of a frame-rate spectrum: one shared DiffWave over bands of frequency bins.

The stft domain's variable has ``2 * (n_fft / 2 + 1)`` channels (1026 at n_fft 1024). Pushed
through a residual stack of a few hundred channels, the input projection is a rank bottleneck: it
cannot carry what a denoiser of an STFT needs most, the near-identity map between neighbouring
bins and frames that overlapping windows impose. RFWave (Liu et al. 2024, "RFWave: Multi-band
Rectified Flow for Audio Waveform Reconstruction") splits the spectrum into bands and runs one
shared network over all of them, telling them apart by a band embedding. Here each of ``bands``
bands of ``ceil(n_freq / bands)`` bins (the last zero-padded) becomes one batch row of
``2 * bins`` channels (its real and imaginary parts), the band index is the inner network's
label (its label embedding is the band embedding), and every band sees the whole mel. With 8
bands at n_fft 1024 a band has 130 channels, so a 128-channel stack has no bottleneck.

:class:`SubbandDiffWave` exposes the network interface the rest of the package uses (``prepare``,
``denoise_step``, ``forward``, ``receptive_field``, ...), so the domain, the samplers, the
trainer and the synthesis engine do not know about bands.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.config import ExperimentConfig
from audiodiff.config_rules import model_channels
from audiodiff.convnext import ConvNeXtDenoiser
from audiodiff.model import DiffWave
from audiodiff.model_blocks import Conditioning


class SubbandDiffWave(nn.Module):
    """A :class:`DiffWave` shared by ``bands`` frequency bands of an stft-domain variable.

    Args:
        cfg: the experiment (``model.bands > 1``, ``model.domain == "stft"``).
        generator: source of the initial weights.

    Raises:
        ValueError: fewer than 2 bands, or more bands than bins.
    """

    def __init__(self, cfg: ExperimentConfig, *, generator: torch.Generator | None = None):
        super().__init__()
        bands = cfg.model.bands
        n_freq = model_channels(cfg) // 2
        if not 2 <= bands <= n_freq:
            raise ValueError(f"model.bands must be in [2, {n_freq}], got {bands}")
        self.bands = bands
        self.n_freq = n_freq
        self.band_bins = math.ceil(n_freq / bands)
        inner = replace(cfg.model, n_labels=bands)
        self.net = DiffWave(
            inner,
            n_mels=cfg.mel.n_mels,
            hop_length=cfg.mel.hop_length,
            n_steps=cfg.diffusion.n_steps,
            in_channels=2 * self.band_bins,
            generator=generator,
        )
        self.in_channels = 2 * n_freq

    # What callers (Denoiser, synthesis engine) read from a network.
    def receptive_field(self) -> int:
        """Frames one output frame depends on, per network evaluation."""
        return self.net.receptive_field()

    def conditioner_halo_frames(self) -> int:
        return 0

    def fold(self, x: Tensor) -> Tensor:
        """``[B, 2 * n_freq, T]`` -> ``[B * bands, 2 * band_bins, T]`` (band-major per item)."""
        batch, _, length = x.shape
        pad = self.bands * self.band_bins - self.n_freq
        parts = x.view(batch, 2, self.n_freq, length)
        parts = F.pad(parts, (0, 0, 0, pad)).view(batch, 2, self.bands, self.band_bins, length)
        return parts.transpose(1, 2).reshape(batch * self.bands, 2 * self.band_bins, length)

    def unfold(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`fold` (the padding bins dropped)."""
        batch = x.shape[0] // self.bands
        length = x.shape[-1]
        parts = x.view(batch, self.bands, 2, self.band_bins, length).transpose(1, 2)
        parts = parts.reshape(batch, 2, self.bands * self.band_bins, length)
        return parts[:, :, : self.n_freq].reshape(batch, 2 * self.n_freq, length)

    def _band_labels(self, batch: int, device: Any) -> Tensor:
        return torch.arange(self.bands, device=device).repeat(batch)

    def prepare(self, cond: Tensor | None = None, label: Tensor | None = None) -> Conditioning:
        """Every band's step-invariant conditioning: the whole mel and its band embedding.

        Args:
            cond: ``[B, n_mels, frames]``.
            label: must be None (the band index is the inner network's label).
        """
        if label is not None:
            raise ValueError("a sub-band stft model takes no class label")
        if cond is None:
            raise ValueError("this model is mel-conditioned but cond is None")
        labels = self._band_labels(cond.shape[0], cond.device)
        return self.net.prepare(cond.repeat_interleave(self.bands, dim=0), labels)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this model expects "
                f"[batch, {self.in_channels}, time]"
            )

    def _steps(self, c_noise: Tensor, batch: int, device: Any) -> Tensor:
        c_noise = torch.as_tensor(c_noise, device=device)
        if c_noise.dim() == 0 or c_noise.shape == (1,):
            c_noise = c_noise.reshape(1).expand(batch)
        return c_noise.repeat_interleave(self.bands)

    def denoise_step(self, x: Tensor, c_noise: Tensor, prepared: Conditioning, **kwargs) -> Tensor:
        """One evaluation of all bands: ``[B, 2 * n_freq, T]`` -> same shape."""
        self._check(x)
        out = self.net.denoise_step(
            self.fold(x), self._steps(c_noise, x.shape[0], x.device), prepared, **kwargs
        )
        return self.unfold(out)

    def forward(
        self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None, label: Tensor | None = None
    ) -> Tensor:
        """``denoise_step(x, c_noise, prepare(cond, label))``."""
        self._check(x)
        if label is not None:
            raise ValueError("a sub-band stft model takes no class label")
        labels = self._band_labels(x.shape[0], x.device)
        cond_b = None if cond is None else cond.repeat_interleave(self.bands, dim=0)
        out = self.net(self.fold(x), self._steps(c_noise, x.shape[0], x.device), cond_b, labels)
        return self.unfold(out)


def build_network(
    cfg: ExperimentConfig, *, generator: torch.Generator | None = None
) -> DiffWave | SubbandDiffWave | ConvNeXtDenoiser:
    """The network an experiment config describes: a :class:`DiffWave`, a
    :class:`SubbandDiffWave` for an stft model with ``model.bands > 1``, or a
    :class:`~audiodiff.convnext.ConvNeXtDenoiser` for ``model.architecture: convnext``."""
    if cfg.model.architecture == "convnext":
        return ConvNeXtDenoiser(cfg, generator=generator)
    if cfg.model.domain == "stft" and cfg.model.bands > 1:
        return SubbandDiffWave(cfg, generator=generator)
    return DiffWave.from_config(cfg, generator=generator)
