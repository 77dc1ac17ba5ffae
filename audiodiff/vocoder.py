"""The stable inference API: ``Vocoder`` (mel -> waveform) and the chunked synthesis engine.

Long-form synthesis (DESIGN §9, open choice §11). The sampler runs over time chunks, each extended
by a halo of ``steps x receptive_radius`` samples on both sides, and all steps of one chunk run
before the next chunk starts. After S network evaluations an output sample depends on the initial
noise and the conditioning within S receptive radii, so the centre of an extended chunk is exactly
what whole-utterance sampling gives, provided the noise is the same. Noise is therefore drawn
*by position*: sample n of noise stream k comes from a generator seeded by (seed, k, n // block),
so any window of the utterance can redraw exactly the noise the whole utterance would see. Each
chunk prepares its conditioning (mel upsampling, every layer's conditioner projection) once for all
its steps; peak memory is bounded by the chunk size, not by the input length.

This chunking is deliberately a separate mechanism from cache-sized time blocks inside one network
evaluation: exactness across S sampler steps needs a halo of S receptive fields (~0.8 s for the
base model at 6 steps), far too large for a cache block, while a single evaluation can be blocked
layer by layer with much smaller halos.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiodiff.audio import MelSpectrogram, load_audio, mel_value_range, resample
from audiodiff.config import ExperimentConfig, MelConfig
from audiodiff.diffusion import Denoiser, prior_std
from audiodiff.domains import build_domain
from audiodiff.model import DiffWave
from audiodiff.pretrained import load_network
from audiodiff.samplers import SAMPLERS, sample
from audiodiff.schedule import NoiseSchedule, sampling_sigmas

# Noise is drawn in blocks of this many samples (frames for mel-domain models) per stream.
NOISE_BLOCK = 4096
# Default long-form chunk, in seconds of output audio: bounds peak memory (the prepared
# conditioning holds 2C floats per layer per sample) while keeping the halo overhead small.
DEFAULT_CHUNK_S = 6.0
_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One round of SplitMix64 (Steele et al. 2014): decorrelates nearby integer seeds."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 31)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def positional_noise(
    seed: int, stream: int, start: int, stop: int, shape: tuple[int, int], *, device: Any = "cpu"
) -> torch.Tensor:
    """Standard normal noise for positions ``[start, stop)`` of one stream, whatever the window.

    Args:
        seed: the draw's base seed.
        stream: which noise stream (0 = initial noise, k = noise added after step k).
        start, stop: time range in samples (frames for mel-domain models).
        shape: ``(batch, channels)``.

    Returns:
        float32 tensor ``[batch, channels, stop - start]`` on ``device``; row ``b`` is the same
        whatever the batch size.
    """
    batch, channels = shape
    first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
    rows = []
    # Keyed by batch row too, so a clip's noise does not depend on what it is batched with.
    for row in range(batch):
        row_key = _splitmix64(_splitmix64(_splitmix64(seed) ^ stream) ^ (row << 32))
        pieces = []
        for block in range(first, last + 1):
            gen = torch.Generator().manual_seed(_splitmix64(row_key ^ block) >> 1)
            pieces.append(torch.randn(channels, NOISE_BLOCK, generator=gen))
        rows.append(torch.cat(pieces, dim=-1))
    noise = torch.stack(rows)
    offset = start - first * NOISE_BLOCK
    return noise[..., offset : offset + stop - start].to(device)


@dataclass(frozen=True)
class SamplingSpec:
    """What one sampling run does: sampler name, its sigmas, its eta and the step alignment."""

    sampler: str
    sigmas: torch.Tensor
    eta: float
    t_mapping: str

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1


def make_sampling_spec(
    cfg: ExperimentConfig,
    schedule: NoiseSchedule,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    alignment: str = "diffwave",
) -> SamplingSpec:
    """Resolve sampler/steps/eta against the model's stored defaults and searched schedule.

    Raises:
        ValueError: unknown sampler (known ones listed) or an impossible step count.
    """
    name = sampler or cfg.sample.sampler
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)}")
    n_steps = steps if steps is not None else cfg.sample.steps
    stored = list(cfg.sample.schedule) or None
    if stored is not None and len(stored) != n_steps:
        stored = None  # a searched schedule is only valid for the step count it was searched for
    sigmas = sampling_sigmas(schedule, name, n_steps, stored=stored)
    if alignment not in ("diffwave", "log-sigma"):
        raise ValueError(f"alignment must be 'diffwave' or 'log-sigma', got {alignment!r}")
    resolved_eta = cfg.sample.eta if eta is None else eta
    if name == "ddpm" or name == "diffwave-fast":
        resolved_eta = 1.0
    return SamplingSpec(name, sigmas, float(resolved_eta), alignment)


def synthesize(
    denoiser: Callable[..., torch.Tensor],
    spec: SamplingSpec,
    *,
    n_samples: int,
    shape: tuple[int, int],
    prepare_window: Callable[[int, int], Any],
    halo_samples: int,
    chunk_samples: int,
    seed: int,
    device: Any,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run ``spec``'s sampler over ``n_samples`` in halo-extended chunks; see the module docstring.

    Args:
        denoiser: ``D(x, sigma, cond=prepared) -> x0_hat``.
        n_samples: output length (samples, or frames for mel-domain models).
        shape: ``(batch, channels)`` of the signal.
        prepare_window: ``(start, stop) -> prepared conditioning`` covering exactly that range.
        halo_samples: exactness halo on each side (steps x receptive radius).
        chunk_samples: centre length of one chunk; ``n_samples`` or more means one pass.
        seed: base seed of the positional noise.
        progress: called with the number of steps just done.

    Returns:
        ``[batch, channels, n_samples]`` float32 on CPU.
    """
    out = torch.empty(shape[0], shape[1], n_samples)
    start_std = prior_std(float(spec.sigmas[0]))
    chunk_samples = max(1, chunk_samples)
    for s0 in range(0, n_samples, chunk_samples):
        s1 = min(n_samples, s0 + chunk_samples)
        e0, e1 = max(0, s0 - halo_samples), min(n_samples, s1 + halo_samples)
        prepared = prepare_window(e0, e1)
        x = positional_noise(seed, 0, e0, e1, shape, device=device) * start_std

        def noise_sampler(
            step: int, like: torch.Tensor, e0: int = e0, e1: int = e1
        ) -> torch.Tensor:
            return positional_noise(seed, step + 1, e0, e1, shape, device=like.device).to(
                like.dtype
            )

        def callback(info: Any) -> None:
            if progress is not None:
                progress(1)

        x = sample(
            spec.sampler,
            denoiser,
            x,
            spec.sigmas,
            eta=spec.eta,
            extra={"cond": prepared},
            noise_sampler=noise_sampler,
            callback=callback,
        )
        out[..., s0:s1] = x[..., s0 - e0 : s1 - e0].float().cpu()
    return out


def _as_mel_tensor(mel: Any) -> torch.Tensor:
    if isinstance(mel, np.ndarray):
        mel = torch.from_numpy(np.ascontiguousarray(mel))
    if not isinstance(mel, torch.Tensor):
        raise ValueError(f"mel must be a NumPy array or torch tensor, got {type(mel).__name__}")
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.dim() != 3:
        raise ValueError(
            f"mel must be [n_mels, frames] or [batch, n_mels, frames], got shape {tuple(mel.shape)}"
        )
    if not mel.is_floating_point():
        raise ValueError(f"mel must hold floats, got dtype {mel.dtype}")
    return mel.float()


def describe_convention(cfg: MelConfig) -> str:
    """One phrase naming a profile's mel convention, for error messages."""
    lo, hi = mel_value_range(cfg)
    kind = "ln(mel)" if cfg.compression == "ln" else "dB normalised to 0..1"
    return (
        f"profile {cfg.name!r}: {cfg.n_mels} bins, {cfg.sample_rate} Hz, hop {cfg.hop_length}, "
        f"{kind}, values in [{lo:.2f}, {hi:.2f}]"
    )


def check_mel(mel: Any, cfg: MelConfig) -> torch.Tensor:
    """Validate a mel against a profile; return it as float32 ``[B, n_mels, frames]``.

    Raises:
        ValueError: wrong rank, wrong number of bins, non-finite values, or values outside the
            profile's range (e.g. a 0..1 dB-normalised mel given to an ln-mel model), naming both
            conventions.
    """
    mel = _as_mel_tensor(mel)
    if mel.shape[1] != cfg.n_mels:
        raise ValueError(
            f"mel has {mel.shape[1]} bins but this vocoder expects {cfg.n_mels} "
            f"({describe_convention(cfg)})"
        )
    if mel.shape[2] < 1:
        raise ValueError("mel has no frames")
    if not torch.isfinite(mel).all():
        raise ValueError("mel holds NaN or infinite values")
    lo, hi = mel_value_range(cfg)
    v_min, v_max = float(mel.min()), float(mel.max())
    tol = 1e-3
    looks_01 = v_min >= 0.0 and v_max <= 1.0
    if v_min < lo - tol or v_max > hi + tol or (cfg.compression == "ln" and looks_01):
        seen = (
            "looks like a dB mel normalised to 0..1 (the 'diffwave' convention)"
            if looks_01
            else "looks like an ln-compressed mel (hifigan/bigvgan convention)"
            if v_min < 0
            else "matches no known convention"
        )
        raise ValueError(
            f"mel values span [{v_min:.2f}, {v_max:.2f}], which {seen}; this vocoder expects "
            f"{describe_convention(cfg)}"
        )
    return mel


class Vocoder:
    """Mel spectrogram -> waveform with a trained (or imported) DiffWave model.

    Build it with :meth:`from_pretrained`; the network is rebuilt from the config stored with the
    weights, never from defaults.
    """

    def __init__(self, net: DiffWave, cfg: ExperimentConfig, *, device: Any = None) -> None:
        if cfg.model.domain not in ("waveform", "stft") or cfg.model.conditioning != "mel":
            raise ValueError(
                f"a Vocoder needs a mel-conditioned waveform or stft model, but this one has "
                f"domain={cfg.model.domain!r}, conditioning={cfg.model.conditioning!r}"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.config = cfg
        self.net = net.to(self.device).eval()
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        self._mel = MelSpectrogram(cfg.mel).to(self.device)
        self.domain = build_domain(cfg, self.net)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: Any = None) -> Vocoder:
        """Load a training checkpoint, a run directory, an exported ``.safetensors`` or a name.

        Raises:
            ValueError: unreadable file, not an audiodiff model, or not a vocoder.
        """
        net, cfg, _ = load_network(path)
        return cls(net, cfg, device=device)

    @property
    def mel_config(self) -> MelConfig:
        return self.config.mel

    @property
    def sample_rate(self) -> int:
        return self.config.mel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.mel.hop_length

    @property
    def n_mels(self) -> int:
        return self.config.mel.n_mels

    @torch.inference_mode()
    def mel(self, audio: Any, sample_rate: int) -> torch.Tensor:
        """Mel features of ``audio`` exactly as in training (resampled to the model's rate).

        Args:
            audio: ``[T]``, ``[B, T]`` or ``[B, 1, T]``, NumPy or torch, in [-1, 1].
            sample_rate: rate of ``audio`` in Hz.

        Returns:
            ``[B, n_mels, frames]`` float32 on CPU.
        """
        x = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio)
        x = x.float()
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() == 3:
            x = x[:, 0]
        if sample_rate != self.sample_rate:
            x = resample(x, sample_rate, self.sample_rate)
        return self._mel(x.to(self.device)).float().cpu()

    def mel_from_file(self, path: str | Path) -> torch.Tensor:
        """``[1, n_mels, frames]`` mel of an audio file (any rate; resampled)."""
        audio, rate = load_audio(path, self.sample_rate)
        return self.mel(audio, rate)

    def halo_samples(self, steps: int) -> int:
        """Exactness halo of chunked synthesis, in the domain's time steps (samples for waveform
        models, frames for stft ones): ``steps`` network evaluations x the receptive radius."""
        return steps * (self.net.receptive_field() - 1) // 2

    @torch.inference_mode()
    def __call__(
        self,
        mel: Any,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        eta: float | None = None,
        alignment: str = "diffwave",
        chunk_seconds: float | None = DEFAULT_CHUNK_S,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Synthesize audio from mel spectrograms.

        Args:
            mel: ``[n_mels, frames]`` or ``[B, n_mels, frames]``, NumPy or torch, in this model's
                mel convention (:attr:`mel_config`).
            steps: network evaluations; default the model's ``sample.steps`` (6).
            sampler: ``"diffwave-fast"`` (default), ``"ddpm"``, ``"ddim"`` or ``"dpmpp-2m"``.
            generator: source of the seed of all noise (a fixed generator reproduces the output).
            seed: alternative to ``generator``.
            eta: DDIM stochasticity (0 = deterministic).
            alignment: ``"diffwave"`` (the paper's step alignment) or ``"log-sigma"``.
            chunk_seconds: long-form chunk length; ``None`` evaluates the whole utterance at once.

        Returns:
            ``[B, 1, frames * hop_length]`` float32 on CPU, in [-1, 1] up to model error.
        """
        mel = check_mel(mel, self.config.mel).to(self.device)
        spec = make_sampling_spec(
            self.config, self.schedule, sampler=sampler, steps=steps, eta=eta, alignment=alignment
        )
        denoiser = Denoiser(
            self.net, self.schedule, target=self.config.diffusion.target, t_mapping=spec.t_mapping
        )
        seed = resolve_seed(generator, seed)
        frames = mel.shape[2]
        # The diffused variable's time unit: a sample (waveform) or a frame (stft).
        hop = 1 if self.domain.frame_rate else self.hop_length
        n_units = frames * hop
        frame_halo = self.net.conditioner_halo_frames()

        def prepare_window(start: int, stop: int) -> Any:
            f0 = max(0, start // hop - frame_halo)
            f1 = min(frames, math.ceil(stop / hop) + frame_halo)
            prepared = denoiser.prepare(mel[..., f0:f1], None)
            return prepared.slice_time(start - f0 * hop, stop - f0 * hop)

        chunk = (
            n_units
            if chunk_seconds is None
            else int(chunk_seconds * self.sample_rate) // (self.hop_length // hop)
        )
        x = synthesize(
            denoiser,
            spec,
            n_samples=n_units,
            shape=(mel.shape[0], self.domain.channels),
            prepare_window=prepare_window,
            halo_samples=self.halo_samples(spec.steps),
            chunk_samples=chunk,
            seed=seed,
            device=self.device,
            progress=progress,
        )
        if not self.domain.frame_rate:
            return x
        return self.domain.from_model(x, mel.cpu()).float()

    def timed(self, mel: Any, **kwargs: Any) -> tuple[torch.Tensor, float]:
        """``(audio, real_time_factor)``: compute seconds per second of audio produced."""
        start = time.perf_counter()
        audio = self(mel, **kwargs)
        elapsed = time.perf_counter() - start
        return audio, elapsed / (audio.shape[-1] / self.sample_rate)


def resolve_seed(generator: torch.Generator | None, seed: int | None) -> int:
    if seed is not None:
        return int(seed)
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    return int(torch.randint(0, 2**62, (1,), generator=generator))
