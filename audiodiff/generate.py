"""Generation without a mel input: unconditional or label-conditional waveform models, mel-domain
models (sample a mel, then vocode it), with classifier-free guidance.

Sampling uses the same halo-chunked engine as the vocoder (``synthesis.synthesize``): for a model
with no time-varying conditioning the prepared conditioning (label embeddings) is one per batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from audiodiff.config import ExperimentConfig
from audiodiff.diffusion import Denoiser, GuidedDenoiser
from audiodiff.dist import resolve_device
from audiodiff.domains import build_domain
from audiodiff.mel import mel_value_range
from audiodiff.model import DiffWave
from audiodiff.pretrained import load_network
from audiodiff.schedule import NoiseSchedule
from audiodiff.seeds import resolve_seed
from audiodiff.synthesis import (
    DEFAULT_CHUNK_S,
    SamplingSpec,
    chunk_count,
    make_sampling_spec,
    synthesize,
)
from audiodiff.vocoder import Vocoder, profile_difference


class GenerativeModel:
    """A trained model that samples from noise alone (optionally guided by a class label).

    ``domain="waveform"`` models return audio ``[n, 1, T]``; ``domain="mel"`` models return mels
    ``[n, n_mels, frames]`` in the profile's own scale (the model's data normalisation undone).
    """

    def __init__(
        self,
        net: DiffWave,
        cfg: ExperimentConfig,
        *,
        labels: list[str] | None = None,
        device: Any = None,
    ) -> None:
        if cfg.model.conditioning != "none":
            raise ValueError(
                "this is a mel-conditioned vocoder, not a generator: use `audiodiff vocode` (or "
                "pass it as --vocoder to a mel-domain generator)"
            )
        self.device = resolve_device(None if device is None else str(device), option="device")
        self.config = cfg
        self.net = net.to(self.device).eval()
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        self.labels = list(labels or [])

    @classmethod
    def from_pretrained(cls, source: str | Path, device: Any = None) -> GenerativeModel:
        """Load a checkpoint, run directory or export; the network is rebuilt from its config.

        Raises:
            ValueError: a device this machine lacks (checked before loading), or an unusable model.
        """
        device = resolve_device(None if device is None else str(device), option="device")
        net, cfg, info = load_network(source)
        return cls(net, cfg, labels=info.get("labels"), device=device)

    @property
    def domain(self) -> str:
        return self.config.model.domain

    @property
    def sample_rate(self) -> int:
        return self.config.mel.sample_rate

    def length_for(self, seconds: float) -> int:
        """Samples (waveform) or frames (mel domain) for ``seconds`` of output audio.

        Raises:
            ValueError: not a finite number, or shorter than one hop (one mel frame), the
                shortest output there is; the measured length and the limit are named.
        """
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"--seconds must be a positive number, got {seconds}")
        n = round(seconds * self.sample_rate)
        hop = self.config.mel.hop_length
        if n < hop:
            raise ValueError(
                f"--seconds {seconds:g} is {n} samples at {self.sample_rate} Hz; the shortest "
                f"output is one hop, {hop} samples ({hop / self.sample_rate:.4f} s)"
            )
        return max(1, round(n / hop)) if self.domain == "mel" else n

    def label_index(self, label: int | str | None) -> int | None:
        """Resolve ``label`` (index or class name) against the model's classes.

        Raises:
            ValueError: a label for an unlabelled model, or an unknown label (known ones listed).
        """
        n_labels = self.config.model.n_labels
        if label is None:
            return None
        if n_labels == 0:
            raise ValueError(f"label {label!r} given, but this model has no labels (n_labels 0)")
        if isinstance(label, str) and label in self.labels:
            return self.labels.index(label)
        try:
            index = int(label)
        except ValueError:
            index = -1
        if not 0 <= index < n_labels:
            names = f" ({', '.join(self.labels)})" if self.labels else ""
            raise ValueError(
                f"unknown label {label!r}: this model has labels 0..{n_labels - 1}{names}"
            )
        return index

    def check_request(
        self,
        n: int,
        *,
        seconds: float,
        label: int | str | None = None,
        guidance: float = 0.0,
        steps: int | None = None,
        sampler: str | None = None,
    ) -> tuple[int | None, SamplingSpec, int]:
        """Validate every setting of :meth:`sample` without sampling, so a caller (the CLI) can
        refuse a request before it creates any output.

        Returns:
            ``(label index or None, sampling spec, length in samples or frames)``.

        Raises:
            ValueError: ``n`` < 1, a length under one hop, an unknown label, a guidance the model
                cannot follow, or an impossible sampler/steps pair.
        """
        if n < 1:
            raise ValueError(f"-n must be at least 1, got {n}")
        cfg = self.config
        length = self.length_for(seconds)
        index = self.label_index(label)
        if guidance < 0:
            raise ValueError(f"--guidance must be >= 0, got {guidance}")
        if guidance > 0 and (index is None or cfg.diffusion.label_dropout == 0):
            raise ValueError(
                f"--guidance {guidance} needs --label and a model trained with label dropout; "
                f"this one has n_labels={cfg.model.n_labels}, "
                f"label_dropout={cfg.diffusion.label_dropout}"
            )
        spec = make_sampling_spec(cfg, self.schedule, sampler=sampler, steps=steps)
        return index, spec, length

    def _units(self, seconds: float, chunk_seconds: float | None) -> tuple[int, int]:
        """``(length, chunk)`` of :meth:`sample`, in samples (waveform) or frames (mel)."""
        length = self.length_for(seconds)
        per_unit = 1 if self.domain == "waveform" else self.config.mel.hop_length
        if chunk_seconds is None:
            return length, length
        return length, int(chunk_seconds * self.sample_rate / per_unit)

    def chunk_count(self, seconds: float, chunk_seconds: float | None = DEFAULT_CHUNK_S) -> int:
        """How many chunks :meth:`sample` runs for clips of ``seconds`` (a progress bar's total)."""
        return chunk_count(*self._units(seconds, chunk_seconds))

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        *,
        seconds: float,
        label: int | str | None = None,
        guidance: float = 0.0,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        chunk_seconds: float | None = DEFAULT_CHUNK_S,
        progress: Callable[[int], None] | None = None,
        chunk_progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` samples of ``seconds`` each. Clip ``i`` is the same for any ``n > i`` (its
        noise is keyed by ``i``; on a CPU bit for bit).

        Args:
            label: class index or name (label-conditional models); None = unconditional.
            guidance: classifier-free guidance weight w (0 = plain conditional).
            progress: called with 1 after each sampler step of each chunk.
            chunk_progress: called with 1 after each chunk (:meth:`chunk_count` of them).

        Returns:
            ``[n, 1, T]`` audio or ``[n, n_mels, frames]`` mels, float32 on CPU.
        """
        cfg = self.config
        index, spec, length = self.check_request(
            n, seconds=seconds, label=label, guidance=guidance, steps=steps, sampler=sampler
        )
        common = {"target": cfg.diffusion.target, "t_mapping": spec.t_mapping}
        if guidance > 0:
            denoiser: Denoiser = GuidedDenoiser(
                self.net, self.schedule, guidance=guidance, **common
            )
        else:
            denoiser = Denoiser(self.net, self.schedule, **common)
        labels = None
        if index is not None:
            labels = torch.full((1,), index, dtype=torch.long, device=self.device)
        elif cfg.model.n_labels > 0:
            labels = torch.full((1,), self.net.null_label, dtype=torch.long, device=self.device)
        # Every clip has the same label: prepared once for one row (a batched projection could
        # round clip i differently for another n); a batch of 1 broadcasts, the guided
        # [conditional; unconditional] pair is repeated to [n conditional; n unconditional].
        prepared = denoiser.prepare(None, labels)
        if guidance > 0 and n > 1:
            prepared = dataclasses.replace(
                prepared, label_bias=prepared.label_bias.repeat_interleave(n, dim=0)
            )
        length, chunk = self._units(seconds, chunk_seconds)
        out = synthesize(
            denoiser,
            spec,
            n_samples=length,
            shape=(n, self.net.in_channels),
            prepare_window=lambda start, stop: prepared,
            halo_samples=spec.steps * (self.net.receptive_field() - 1) // 2,
            chunk_samples=chunk,
            seed=resolve_seed(generator, seed),
            device=self.device,
            progress=progress,
            chunk_progress=chunk_progress,
        )
        if self.domain == "mel":
            # Back to the profile's scale, then into the range real audio can produce (values
            # beyond it are sampling overshoot that no waveform in [-1, 1] has).
            lo, hi = mel_value_range(cfg.mel)
            out = build_domain(cfg, self.net).from_model(out).clamp(lo, hi)
        return out


def check_same_profile(mel_model: GenerativeModel, vocoder: Vocoder) -> None:
    """Two-stage generation needs the mel model and the vocoder to share one mel profile.

    Raises:
        ValueError: naming both profiles and the first differing field.
    """
    a, b = mel_model.config.mel, vocoder.mel_config
    diff = profile_difference(a, b)  # parameters, not names
    if diff is not None:
        raise ValueError(
            f"the mel model uses mel profile {a.name!r} but the vocoder uses {b.name!r} "
            f"({diff}); they must match"
        )
