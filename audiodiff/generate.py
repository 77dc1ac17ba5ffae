"""Generation without a mel input: unconditional or label-conditional waveform models, mel-domain
models (sample a mel, then vocode it), with classifier-free guidance.

Sampling uses the same halo-chunked engine as the vocoder (``synthesis.synthesize``): for a model
with no time-varying conditioning the prepared conditioning (label embeddings) is one per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from audiodiff.audio import mel_value_range
from audiodiff.config import ExperimentConfig
from audiodiff.diffusion import Denoiser, GuidedDenoiser
from audiodiff.dist import resolve_device
from audiodiff.model import DiffWave
from audiodiff.pretrained import load_network
from audiodiff.schedule import NoiseSchedule
from audiodiff.synthesis import (
    DEFAULT_CHUNK_S,
    SamplingSpec,
    make_sampling_spec,
    resolve_seed,
    synthesize,
)
from audiodiff.vocoder import Vocoder


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
    ) -> torch.Tensor:
        """Draw ``n`` samples of ``seconds`` each.

        Args:
            label: class index or name (label-conditional models); None = unconditional.
            guidance: classifier-free guidance weight w (0 = plain conditional).

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
            labels = torch.full((n,), index, dtype=torch.long, device=self.device)
        elif cfg.model.n_labels > 0:
            labels = torch.full((n,), self.net.null_label, dtype=torch.long, device=self.device)
        prepared = denoiser.prepare(None, labels)
        per_unit = 1 if self.domain == "waveform" else cfg.mel.hop_length
        chunk = (
            length if chunk_seconds is None else int(chunk_seconds * self.sample_rate / per_unit)
        )
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
        )
        if self.domain == "mel":
            # Back to the profile's scale, then into the range real audio can produce (values
            # beyond it are sampling overshoot that no waveform in [-1, 1] has).
            lo, hi = mel_value_range(cfg.mel)
            out = self.net.denormalize_output(out).clamp(lo, hi)
        return out


def check_same_profile(mel_model: GenerativeModel, vocoder: Vocoder) -> None:
    """Two-stage generation needs the mel model and the vocoder to share one mel profile.

    Raises:
        ValueError: naming both profiles and the first differing field.
    """
    a, b = mel_model.config.mel, vocoder.mel_config
    if a != b:
        diff = next(k for k in a.__dataclass_fields__ if getattr(a, k) != getattr(b, k))
        raise ValueError(
            f"the mel model uses mel profile {a.name!r} but the vocoder uses {b.name!r} "
            f"({diff}: {getattr(a, diff)!r} vs {getattr(b, diff)!r}); they must match"
        )
