"""Domains: how audio and its mel become the variable the network diffuses, and back (DESIGN §12).

A domain is the one object that knows the signal representation. Everything above it (the
trainer, the samplers, the synthesis loop) sees a tensor ``[B, channels, length]`` of roughly unit
scale and never learns which domain it is in:

* ``to_model(audio, mel) -> x0``: the *whitened* clean variable (data divided by the prior's
  scale), ``[B, channels, length]``.
* ``from_model(x0, mel) -> audio``: the inverse, ``[B, 1, T]`` (``mel`` domain: the mel).
* ``prior_std(mel)``: the prior's scale in data units, broadcastable against ``x0``.

Training diffuses the whitened variable with a standard-normal prior, which is the same as
drawing ``x_t = sqrt(ab) x0 + sqrt(1 - ab) * prior_std * eps`` in data units and running the
samplers unchanged on ``x / prior_std``; so a data-dependent prior (PriorGrad, Lee et al. 2022)
needs no new sampler. (Unlike PriorGrad's reference code the network also *sees* the whitened
input, which in the STFT domain puts every frequency bin on the same scale.)

Domains:

* ``waveform``: ``x0`` = audio, prior scale 1.
* ``mel``: ``x0`` = the per-bin normalised mel; the statistics are measured before step 1 and
  stored with the network's weights (its ``data_mean`` / ``data_std`` buffers).
* ``stft``: ``x0`` = the magnitude-compressed complex STFT ``|X|^a e^{i angle X}`` (SGMSE+,
  Richter et al. 2023, ``a = 0.5``), real and imaginary parts stacked as ``2 * (n_fft / 2 + 1)``
  channels, made with the mel profile's own STFT (:mod:`audiodiff.stft`) so STFT frame ``i`` and
  mel frame ``i`` cover the same samples, divided by the mel-shaped prior scale
  ``(max(envelope, floor))^a / sqrt(2)``, where ``envelope`` is the linear-frequency magnitude the
  conditioning mel implies (:func:`audiodiff.stft.mel_to_linear_envelope`): each of the real and
  imaginary parts of a compressed bin whose magnitude equals the envelope then has unit variance,
  and sampling starts from noise already shaped like the target's spectrum (the frequency-domain
  counterpart of PriorGrad; FreGrad and RFWave shape their priors the same way).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from audiodiff.config import ExperimentConfig, MelConfig
from audiodiff.config_rules import model_channels
from audiodiff.consistency import Refinement, dsp_estimate, refine_spectrum
from audiodiff.mel import MelSpectrogram, decompress_mel
from audiodiff.stft import (
    mel_frame_rms,
    mel_to_linear_envelope,
    profile_istft,
    profile_istft_window,
    profile_stft,
    signal_length,
)

# Floor of the mel-implied magnitude envelope, in raw STFT magnitude units (a periodic Hann window
# of 1024 sums to 512, so a full-scale sine gives ~256): bins quieter than this are treated as
# this loud. It is the ln-mel floor (1e-5) divided by a band's weight sum (~0.05 at 22.05 kHz),
# rounded up, so the prior never asks the network to produce exact digital silence.
ENVELOPE_FLOOR = 1e-3
# Smallest per-sample scale of the waveform domain's PriorGrad prior, in full-scale units (-40
# dBFS, 20 dB under ordinary speech): PriorGrad floors its normalised std at 0.1 of the loudest
# frame for the same reason, so near-silent frames do not ask for exact silence.
WAVEFORM_PRIOR_FLOOR = 1e-2
# Scale of the stft domain's "standard" prior: the RMS of the compressed real/imaginary parts of
# klettres speech at 22.05 kHz (measured 0.31 over 10 French clips), so the whitened variable has
# roughly unit variance overall (0.4 in the low bins, 0.003 above 8 kHz: what the mel prior fixes).
STANDARD_STFT_SCALE = 0.31


def linear_mel(mel: Tensor, cfg: MelConfig) -> Tensor:
    """The decompressed mel (``basis @ |X| ** power``) the mel-shaped priors start from, in
    float32 (float64 kept)."""
    dtype = mel.dtype if mel.dtype == torch.float64 else torch.float32
    return decompress_mel(mel.to(dtype), cfg)


class Domain:
    """Base class; see the module docstring. Subclasses set ``name``, ``channels``, ``frame_rate``.

    Attributes:
        name: ``"waveform"``, ``"mel"`` or ``"stft"``.
        channels: channels of the diffused variable.
        frame_rate: True when its time axis is in mel frames, False in samples.
        hop_length: samples per frame.
    """

    name = "waveform"
    # Default long-form chunk of the vocoder, in seconds of audio. Waveform models hold 2C floats
    # per layer per *sample* of prepared conditioning (330 MiB a second for the base model), so
    # their chunks are short; frame-rate models hold 256x less, so long chunks keep the halo
    # overhead (steps x receptive radius, ~3 s for the klettres stft model) small.
    default_chunk_s = 6.0
    # Frames of context either side that decoding a window of the diffused variable needs
    # (frame-rate domains decode chunk by chunk; see StftDomain.from_model_window).
    decode_halo = 0

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.config = cfg
        self.channels = model_channels(cfg)
        self.hop_length = cfg.mel.hop_length
        self.frame_rate = cfg.model.domain != "waveform"

    def length(self, n_samples: int) -> int:
        """Time steps of the diffused variable for ``n_samples`` of audio."""
        return n_samples // self.hop_length if self.frame_rate else n_samples

    def audio_length(self, frames: int) -> int:
        """Samples of audio that ``frames`` mel frames describe (``center`` padding: one frame
        fewer)."""
        return signal_length(frames, self.hop_length, self.config.mel.padding)

    def prior_std(self, mel: Tensor | None) -> Tensor | float:
        """Scale of the prior in data units, broadcastable against ``x0``; 1 by default."""
        return 1.0

    def to_model(self, audio: Tensor, mel: Tensor | None) -> Tensor:
        """``[B, 1, T]`` audio (and its ``[B, n_mels, T / hop]`` mel) -> whitened ``x0``."""
        return audio

    def from_model(self, x0: Tensor, mel: Tensor | None) -> Tensor:
        """Whitened ``x0`` -> ``[B, 1, T]`` audio."""
        return x0

    def estimate_halo(self) -> int:
        """Context either side that :meth:`estimate` needs (0: this domain has none)."""
        return 0

    def estimate(self, mel: Tensor, *, first: int = 0, total: int | None = None) -> Tensor:
        """The DSP estimate sampling may start from (``model.start: estimate``).

        Raises:
            ValueError: always; only the stft domain has one.
        """
        raise ValueError(f"the {self.name} domain has no DSP estimate to start from")


class WaveformDomain(Domain):
    """``x0`` = the waveform ``[B, 1, T]``, divided by the prior's scale.

    ``model.prior: standard``: scale 1 (DiffWave). ``mel``: PriorGrad's data-dependent prior (Lee
    et al. 2022, the vocoder of its section 4): each sample's scale is the RMS its mel frame
    implies (:func:`audiodiff.stft.mel_frame_rms`), held over the frame's ``hop_length``
    samples, floored at :data:`WAVEFORM_PRIOR_FLOOR`. PriorGrad min-max normalises the frame
    energy over the training set instead; an absolute scale needs no dataset statistics stored
    beside the weights, and makes the whitened variable roughly unit variance as its paper asks.
    """

    name = "waveform"

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.prior = cfg.model.prior
        if self.prior == "mel":
            self._mel_basis = MelSpectrogram(cfg.mel).mel_basis

    def prior_std(self, mel: Tensor | None) -> Tensor | float:
        """1 (standard prior), or ``[B, 1, frames * hop_length]`` (mel prior).

        Raises:
            ValueError: a mel prior without a mel.
        """
        if self.prior == "standard":
            return 1.0
        if mel is None:
            raise ValueError("the waveform domain's PriorGrad prior needs the conditioning mel")
        m = self.config.mel
        rms = mel_frame_rms(
            linear_mel(mel, m), self._mel_basis, n_fft=m.n_fft, win_length=m.win_length,
            normalized=m.normalized, power=m.power,
        )  # fmt: skip
        std = rms.clamp_min(WAVEFORM_PRIOR_FLOOR).repeat_interleave(self.hop_length, dim=1)
        return std.unsqueeze(1)

    def _scale(self, x: Tensor, mel: Tensor | None) -> Tensor | float:
        """The prior's scale cut to ``x``'s length (a ``center`` profile's mel has one frame
        more than its audio's ``T / hop``)."""
        std = self.prior_std(mel)
        if isinstance(std, float):
            return std
        if std.shape[-1] < x.shape[-1]:
            raise ValueError(
                f"a mel of {mel.shape[-1]} frames covers {std.shape[-1]} samples, fewer than "
                f"the {x.shape[-1]} given"
            )
        return std[..., : x.shape[-1]].to(x)

    def to_model(self, audio: Tensor, mel: Tensor | None) -> Tensor:
        """``[B, 1, T]`` audio -> ``audio / prior_std``."""
        return audio / self._scale(audio, mel)

    def from_model(self, x0: Tensor, mel: Tensor | None) -> Tensor:
        """Whitened ``[B, 1, T]`` -> audio."""
        return x0 * self._scale(x0, mel)


class MelDomain(Domain):
    """``x0`` = the per-bin normalised mel ``[B, n_mels, frames]``.

    Args:
        cfg: the experiment.
        mean, std: ``[n_mels]`` statistics of the training mels (the network's ``data_mean`` and
            ``data_std`` buffers, so they travel with the weights).
    """

    name = "mel"

    def __init__(self, cfg: ExperimentConfig, mean: Tensor, std: Tensor) -> None:
        super().__init__(cfg)
        self.mean, self.std = mean, std

    def to_model(self, audio: Tensor, mel: Tensor | None) -> Tensor:
        """The mel itself is the data: ``mel [B, n_mels, F]`` normalised (``audio`` unused)."""
        if mel is None:
            raise ValueError("the mel domain needs the mel of the audio")
        return (mel - self.mean[:, None].to(mel)) / self.std[:, None].to(mel)

    def from_model(self, x0: Tensor, mel: Tensor | None = None) -> Tensor:
        """Normalised mel -> mel in the profile's units (not audio: a vocoder does that)."""
        return x0 * self.std[:, None].to(x0) + self.mean[:, None].to(x0)


class StftDomain(Domain):
    """Compressed complex STFT with a mel-shaped prior (module docstring).

    Args:
        cfg: the experiment; ``model.stft_compression`` is the exponent ``a``, ``model.prior``
            ``"mel"`` (mel-shaped) or ``"standard"`` (constant scale).
    """

    name = "stft"
    default_chunk_s = 30.0

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        m = cfg.mel
        self.n_freq = m.n_fft // 2 + 1
        self.exponent = cfg.model.stft_compression
        self.prior = cfg.model.prior
        self._stft_args = {
            "n_fft": m.n_fft,
            "hop_length": m.hop_length,
            "win_length": m.win_length,
            "padding": m.padding,
            "normalized": m.normalized,
        }
        self._mel_basis = MelSpectrogram(m).mel_basis  # float64 [n_mels, n_freq]
        # Frames either side of a decoded window that overlap its samples.
        self.decode_halo = -(-m.n_fft // m.hop_length)

    def compress(self, spec: Tensor) -> Tensor:
        """Complex ``X`` -> ``|X|^a e^{i angle X}``; exact inverse: :meth:`decompress`. Below
        ``ENVELOPE_FLOOR`` the map is linear (``X * floor^(a - 1)``), so it stays invertible."""
        a = self.exponent
        return spec * spec.abs().clamp_min(ENVELOPE_FLOOR).pow(a - 1)

    def decompress(self, spec: Tensor) -> Tensor:
        """Inverse of :meth:`compress` (a compressed bin below ``floor^a`` came from below the
        floor)."""
        a = self.exponent
        return spec * spec.abs().clamp_min(ENVELOPE_FLOOR**a).pow(1 / a - 1)

    def prior_std(self, mel: Tensor | None) -> Tensor | float:
        """``[B, 2 * n_freq, frames]`` (mel prior) or a constant (standard prior).

        Raises:
            ValueError: a mel prior without a mel.
        """
        if self.prior == "standard":
            return STANDARD_STFT_SCALE
        if mel is None:
            raise ValueError("the stft domain's mel-shaped prior needs the conditioning mel")
        envelope = mel_to_linear_envelope(
            linear_mel(mel, self.config.mel), self._mel_basis, power=self.config.mel.power
        )
        std = envelope.clamp_min(ENVELOPE_FLOOR).pow(self.exponent) / math.sqrt(2.0)
        return torch.cat([std, std], dim=1)

    def to_model(self, audio: Tensor, mel: Tensor | None) -> Tensor:
        """``[B, 1, T]`` (or ``[B, T]``) audio -> whitened ``[B, 2 * n_freq, frames]``.

        ``frames`` is the mel's frame count when a mel is given (the profile's STFT of ``T``
        samples has exactly as many frames as its mel), else the STFT's own.
        """
        if audio.dim() == 3:
            audio = audio[:, 0]
        dtype = audio.dtype if audio.dtype == torch.float64 else torch.float32
        spec = profile_stft(audio.to(dtype), **self._stft_args)
        if mel is not None:
            spec = spec[..., : mel.shape[-1]]
        c = self.compress(spec)
        return torch.cat([c.real, c.imag], dim=1) / self.prior_std(mel)

    def compressed(self, x0: Tensor, mel: Tensor | None) -> Tensor:
        """Whitened ``[B, 2 * n_freq, frames]`` -> the compressed complex STFT ``|X|^a e^{i
        angle X}``, ``[B, n_freq, frames]`` (the phase losses compare these).

        Raises:
            ValueError: ``x0`` not ``[B, 2 * n_freq, frames]``.
        """
        if x0.dim() != 3 or x0.shape[1] != 2 * self.n_freq:
            raise ValueError(
                f"x0 has shape {tuple(x0.shape)} but this stft domain expects "
                f"[batch, {2 * self.n_freq}, frames]"
            )
        dtype = x0.dtype if x0.dtype == torch.float64 else torch.float32
        data = x0.to(dtype) * self.prior_std(mel)
        return torch.complex(data[:, : self.n_freq], data[:, self.n_freq :])

    def _spectrum(self, x0: Tensor, mel: Tensor | None) -> Tensor:
        """Whitened ``[B, 2 * n_freq, frames]`` -> the complex STFT ``[B, n_freq, frames]``."""
        return self.decompress(self.compressed(x0, mel))

    def from_model(self, x0: Tensor, mel: Tensor | None) -> Tensor:
        """Whitened ``[B, 2 * n_freq, frames]`` -> ``[B, 1, frames * hop]`` audio (``center``
        profiles: ``(frames - 1) * hop``)."""
        return profile_istft(self._spectrum(x0, mel), **self._stft_args).unsqueeze(1)

    def estimate_halo(self) -> int:
        """Frames either side of a window that :meth:`estimate` needs for an exact centre: one
        frame overlap per Griffin-Lim iteration (the NNLS magnitude is frame-local)."""
        if self.config.model.start != "estimate":
            return 0
        return self.config.model.estimate_griffin_lim_iters * self.decode_halo

    def estimate(self, mel: Tensor, *, first: int = 0, total: int | None = None) -> Tensor:
        """The whitened DSP estimate of the STFT ``mel`` implies (``model.start: estimate``;
        :func:`audiodiff.consistency.dsp_estimate`), compressed and whitened like
        :meth:`to_model`: ``[B, 2 * n_freq, n]`` for the ``[B, n_mels, n]`` frames ``[first,
        first + n)`` of a ``total``-frame mel (None: the whole mel); frames :meth:`estimate_halo`
        away from an inner window edge equal the whole utterance's."""
        m, mo = self.config.mel, self.config.model
        spec = dsp_estimate(
            linear_mel(mel, m), self._mel_basis, power=m.power,
            nnls_iters=mo.estimate_nnls_iters, griffin_lim_iters=mo.estimate_griffin_lim_iters,
            first_frame=first, total_frames=mel.shape[-1] if total is None else total,
            stft_args=self._stft_args,
        )  # fmt: skip
        c = self.compress(spec)
        return torch.cat([c.real, c.imag], dim=1) / self.prior_std(mel)

    def window_halo(self, refinement: Refinement | None = None) -> int:
        """Frames either side of a window that :meth:`from_model_window` needs for an exact
        centre: the inverse STFT's overlap, plus the refinement's reach."""
        extra = (
            0
            if refinement is None
            else refinement.halo_frames(self.config.mel.n_fft, self.config.mel.hop_length)
        )
        return self.decode_halo + extra

    def from_model_window(
        self,
        x0: Tensor,
        mel: Tensor | None,
        *,
        first: int,
        total: int,
        start: int,
        stop: int,
        refinement: Refinement | None = None,
    ) -> Tensor:
        """The audio of frames ``[start, stop)`` from a window ``x0`` of frames
        ``[first, first + n)`` of a ``total``-frame utterance (and the mel of that window):
        ``[B, 1, L]``, equal to the same samples of the whole utterance's decoding when the
        window holds :meth:`window_halo` frames either side (or the utterance's edge).

        ``refinement`` (:mod:`audiodiff.consistency`) moves the decoded STFT towards ``mel``
        and runs Griffin-Lim iterations from its phase before the inverse; it needs ``mel``.

        Raises:
            ValueError: a refinement without a mel, or an ``x0`` of the wrong shape.
        """
        spec = self._spectrum(x0, mel)
        if refinement is not None and refinement.active:
            if mel is None:
                raise ValueError("refining a decoded STFT needs the conditioning mel")
            spec = refine_spectrum(
                spec, linear_mel(mel, self.config.mel).to(spec.real.dtype), self._mel_basis,
                refinement, power=self.config.mel.power, first_frame=first, total_frames=total,
                stft_args=self._stft_args,
            )  # fmt: skip
        piece = profile_istft_window(
            spec, first_frame=first, total_frames=total, start_frame=start, stop_frame=stop,
            **self._stft_args,
        )  # fmt: skip
        return piece.unsqueeze(1)


def build_domain(cfg: ExperimentConfig, net: torch.nn.Module | None = None) -> Domain:
    """The domain an experiment config describes.

    Args:
        cfg: the experiment (its ``model.domain``).
        net: the network, for the mel domain's stored statistics (``data_mean``/``data_std``).

    Raises:
        ValueError: a mel domain without a network holding its statistics.
    """
    name = cfg.model.domain
    if name == "stft":
        return StftDomain(cfg)
    if name == "mel":
        if net is None or not hasattr(net, "data_mean"):
            raise ValueError("the mel domain's statistics live in the network: pass net")
        return MelDomain(cfg, net.data_mean, net.data_std)
    return WaveformDomain(cfg)
