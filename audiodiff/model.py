"""DiffWave network: diffusion-step embedding, conditioner upsampler and dilated residual stack.

Kong et al. 2021, "DiffWave: A Versatile Diffusion Model for Audio Synthesis" (ICLR 2021).

The module knows nothing about diffusion: it maps a noisy signal ``x [B, C_in, T]``, a noise level
given as a fractional training step index ``c_noise [B]`` and optional conditioning (a mel
``[B, n_mels, frames]`` and/or a class label ``[B]``) to a tensor shaped like ``x``.

Decisions (DESIGN.md §6, §11):

- **Noise input** is the fractional training step index, as in DiffWave: a fractional step linearly
  interpolates between the two neighbouring rows of the sinusoidal table, so DiffWave weights work
  unchanged and ``Denoiser`` (diffusion.py) can map any sigma to a step.
- **Step-invariant work** (mel upsampling, every layer's conditioner projection, the label
  embedding and its per-layer projection) is done once per utterance in :meth:`DiffWave.prepare`;
  :meth:`DiffWave.denoise_step` runs only the step embedding and the residual stack.
- **Fast per-step path** (:mod:`audiodiff.fast_stack`). Under ``torch.no_grad``/
  ``inference_mode`` on a CPU, ``denoise_step`` walks the residual stack in cache-sized time
  blocks, in place and allocation-free; it equals the eager path within float32 rounding. The
  eager path (:meth:`DiffWave.denoise_step` with ``fast=False``) stays the reference and the GPU
  path.
- **Fused CPU training path.** With gradients on, ``forward`` on a CPU runs the residual stack
  through :class:`audiodiff.fused_stack.FusedResidualStack` (one im2col GEMM per layer and time
  block for the dilated conv plus the conditioner projection, gating and residual/skip updates in
  cache, a hand-written blocked backward): 1.6-1.9x faster per training step than the eager stack
  and a third of its peak memory on the 2-core CPU (benchmarks/train_speed.py); ``fused=False``
  or ``fused_training = False`` selects the eager stack. The inference path keeps its own kernel:
  the same im2col kernel without saving, tried for inference, ran 10-20 % slower than the
  in-place fast path above (its tap copies and ping-pong buffers cost more than the deeper GEMM
  gains when the conditioner projection is precomputed).

Deliberate differences from lmnt-com/diffwave (parameter names are the same, so its state dict maps
one to one; its ``embedding`` buffer is likewise non-persistent):

- input and output are ``[B, C_in, T]``, not ``[B, T]``; ``C_in = n_mels`` for mel-domain models;
- the upsampler has one ``ConvTranspose2d`` stage per stride derived from ``hop_length``
  (``conv1``, ``conv2``[, ``conv3``]); odd strides are cropped to exactly ``frames * hop`` samples;
- ``output_projection`` has its bias zeroed as well as its weight, so the output at init is 0;
- optional ``label_embedding`` (``n_labels + 1`` rows, the last one the null label for
  classifier-free guidance) with a per-layer ``label_projection``, added like the step embedding;
- the last layer's residual half is never computed (nothing reads it; its weights still exist);
- parameters can be initialised from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff import config_rules
from audiodiff.config import ExperimentConfig, ModelConfig
from audiodiff.fast_stack import INFERENCE_BLOCK_SAMPLES, denoise_fast
from audiodiff.fused_stack import TRAIN_BLOCK_SAMPLES, FusedResidualStack, StackShape

_LEAKY_SLOPE = 0.4  # lmnt's upsampler activation


@dataclass(frozen=True)
class Conditioning:
    """Step-invariant conditioning of one batch, made by :meth:`DiffWave.prepare`.

    A batch of 1 broadcasts against any batch of ``x``. The conditioner costs
    ``layers * 2 * residual_channels`` floats per sample (15 KiB for the base model, 330 MiB per
    second at 22.05 kHz), so long inputs are prepared per chunk (:meth:`slice_time`,
    :meth:`DiffWave.conditioner_halo_frames`).

    Attributes:
        conditioner: every layer's conditioner projection of the upsampled mel,
            ``[B, layers, 2 * residual_channels, T]`` in samples, or None (unconditional).
        label_bias: every layer's projection of the label embedding, ``[B, layers,
            residual_channels]``, or None (no labels).
        mel: the upsampled mel ``[B, n_mels, T]`` instead of ``conditioner``, for the fused
            training kernel, which projects it inside each layer's GEMM (``prepare(...,
            project_mel=False)``); None otherwise.
    """

    conditioner: Tensor | None = None
    label_bias: Tensor | None = None
    mel: Tensor | None = None

    def _tensors(self) -> dict[str, Tensor]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    @property
    def batch_size(self) -> int | None:
        """Batch size of the stored tensors, or None when there are none."""
        tensors = list(self._tensors().values())
        return tensors[0].shape[0] if tensors else None

    @property
    def length(self) -> int | None:
        """Number of samples covered, or None when nothing depends on time."""
        timed = self.conditioner if self.conditioner is not None else self.mel
        return None if timed is None else timed.shape[-1]

    def slice_time(self, start: int, stop: int) -> Conditioning:
        """The conditioning of samples ``[start, stop)``; a no-op without a time axis.

        Raises:
            ValueError: when ``0 <= start < stop <= length`` does not hold.
        """
        if self.length is None:
            return self
        if not 0 <= start < stop <= self.length:
            raise ValueError(
                f"slice [{start}, {stop}) is not inside the {self.length} conditioned samples"
            )
        timed = {
            k: getattr(self, k) for k in ("conditioner", "mel") if getattr(self, k) is not None
        }
        return replace(self, **{k: v[..., start:stop] for k, v in timed.items()})

    def to(self, *args: Any, **kwargs: Any) -> Conditioning:
        """``Tensor.to`` applied to every stored tensor (device and/or dtype)."""
        return replace(self, **{k: v.to(*args, **kwargs) for k, v in self._tensors().items()})

    def repeat(self, n: int) -> Conditioning:
        """The batch tiled ``n`` times (``[a, b] -> [a, b, a, b]``)."""
        return replace(
            self,
            **{k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in self._tensors().items()},
        )

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Concatenate along the batch, e.g. ``[cond, uncond]`` for classifier-free guidance.

        Raises:
            ValueError: when the parts do not hold the same kinds of conditioning.
        """
        keys = [tuple(p._tensors()) for p in parts]
        if not parts or any(k != keys[0] for k in keys):
            raise ValueError(f"cannot concatenate conditionings holding {keys}")
        return replace(parts[0], **{k: torch.cat([getattr(p, k) for p in parts]) for k in keys[0]})


class DiffusionEmbedding(nn.Module):
    """Sinusoidal table over the integer training steps, then a 2-layer SiLU MLP.

    Args:
        n_steps: number of training steps (table rows).
        embedding_dim: table width (sin half, cos half); DiffWave uses 128.
        mlp_dim: MLP width; DiffWave uses 512.
    """

    def __init__(self, n_steps: int, embedding_dim: int = 128, mlp_dim: int = 512) -> None:
        super().__init__()
        if embedding_dim < 4 or embedding_dim % 2:
            raise ValueError(f"step_embedding_dim must be even and >= 4, got {embedding_dim}")
        # Derivable from n_steps, so not saved (lmnt's buffer is non-persistent too).
        self.register_buffer(
            "embedding", self._build_table(n_steps, embedding_dim), persistent=False
        )
        self.projection1 = nn.Linear(embedding_dim, mlp_dim)
        self.projection2 = nn.Linear(mlp_dim, mlp_dim)

    @staticmethod
    def _build_table(n_steps: int, embedding_dim: int) -> Tensor:
        # float32 in lmnt's operation order: sin(t * 10**(4d/63)) reaches ~5e5 rad, where the
        # float32 rounding of the product changes the value, and imported weights expect lmnt's.
        half = embedding_dim // 2
        steps = torch.arange(n_steps).unsqueeze(1)  # [n_steps, 1] int64
        dims = torch.arange(half).unsqueeze(0)  # [1, half] int64
        table = steps * 10.0 ** (dims * 4.0 / (half - 1.0))  # [n_steps, half] float32
        return torch.cat([torch.sin(table), torch.cos(table)], dim=1)

    def lookup(self, step: Tensor) -> Tensor:
        """Table rows ``[B, embedding_dim]``; a float step lerps between its integer neighbours."""
        if not step.is_floating_point():
            return self.embedding[step]
        low = torch.floor(step).long()
        high = torch.ceil(step).long()
        frac = (step - low).to(self.embedding.dtype).unsqueeze(-1)
        low_row = self.embedding[low]
        return low_row + (self.embedding[high] - low_row) * frac

    def forward(self, step: Tensor) -> Tensor:
        """``[B]`` step indices (int or fractional) -> ``[B, mlp_dim]``."""
        x = F.silu(self.projection1(self.lookup(step)))
        return F.silu(self.projection2(x))


class SpectrogramUpsampler(nn.Module):
    """Mel frames to samples: per stride ``s`` a ``ConvTranspose2d`` (kernel ``[3, 2s]``, stride
    ``[1, s]``, padding ``[1, s // 2]``) and leaky ReLU 0.4; lmnt's layout for ``[16, 16]``.

    An even stride yields exactly ``s`` outputs per input; an odd one yields one extra at the end,
    which is cropped, so the output always has ``frames * prod(factors)`` samples.
    """

    def __init__(self, factors: list[int]) -> None:
        super().__init__()
        self.factors = tuple(factors)
        for i, s in enumerate(self.factors, 1):
            conv = nn.ConvTranspose2d(1, 1, [3, 2 * s], stride=[1, s], padding=[1, s // 2])
            self.add_module(f"conv{i}", conv)

    def forward(self, mel: Tensor) -> Tensor:
        """``[B, n_mels, frames]`` -> ``[B, n_mels, frames * hop]``."""
        x = mel.unsqueeze(1)
        for i, s in enumerate(self.factors, 1):
            n_out = x.shape[-1] * s
            x = F.leaky_relu(getattr(self, f"conv{i}")(x)[..., :n_out], _LEAKY_SLOPE)
        return x.squeeze(1)

    def halo_frames(self) -> int:
        """Frames of context on either side that one frame's samples depend on."""
        # Output o of a stage depends on inputs j with 0 <= o + pad - j*s < 2s; propagate the
        # sample interval of frame 0 back through the stages (shift-invariant, so frame 0 will do).
        lo, hi = 0, math.prod(self.factors) - 1
        for s in reversed(self.factors):
            pad = s // 2
            lo, hi = -((-(lo + pad - 2 * s + 1)) // s), (hi + pad) // s
        return max(-lo, hi)


class ResidualBlock(nn.Module):
    """One gated residual layer; the computation lives in :class:`DiffWave` (prepare/step split).

    Args:
        channels: residual channels ``C``.
        dilation: dilation of the ``kernel_size`` conv (same-length padding).
        kernel_size: odd kernel size of the dilated conv.
        step_dim: width of the step embedding MLP output.
        n_mels: conditioner input channels, or None for an unconditional layer.
        labelled: whether a label projection exists.
    """

    def __init__(
        self,
        channels: int,
        dilation: int,
        kernel_size: int,
        step_dim: int,
        n_mels: int | None,
        labelled: bool,
    ) -> None:
        super().__init__()
        self.dilation = dilation
        self.dilated_conv = nn.Conv1d(
            channels,
            2 * channels,
            kernel_size,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
        )
        self.diffusion_projection = nn.Linear(step_dim, channels)
        self.conditioner_projection = (
            nn.Conv1d(n_mels, 2 * channels, 1) if n_mels is not None else None
        )
        self.label_projection = nn.Linear(channels, channels) if labelled else None
        self.output_projection = nn.Conv1d(channels, 2 * channels, 1)


class DiffWave(nn.Module):
    """The DiffWave denoiser (Kong et al. 2021) with a prepare / per-step split.

    Args:
        cfg: network shape (``residual_channels``, ``residual_layers``, ``dilation_cycle``,
            ``kernel_size``, step embedding sizes, ``n_labels``, ``domain``, ``conditioning``).
        n_mels: mel bands: conditioner input for a vocoder, ``in_channels`` for ``domain="mel"``.
        hop_length: samples per mel frame (vocoder only).
        n_steps: training steps T, the rows of the step embedding table.
        upsample_factors: upsampler strides; derived from ``hop_length`` when None or empty.
        generator: source of the initial weights (torch's default generator when None).

    Raises:
        ValueError: an impossible shape (even kernel, mel domain with mel conditioning, strides
            whose product is not ``hop_length``).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        n_mels: int,
        hop_length: int,
        n_steps: int,
        upsample_factors: list[int] | None = None,
        in_channels: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        channels = cfg.residual_channels
        sizes = {
            "residual_channels": channels,
            "residual_layers": cfg.residual_layers,
            "dilation_cycle": cfg.dilation_cycle,
            "n_mels": n_mels,
            "n_steps": n_steps,
        }
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length conv), got {cfg.kernel_size}")
        if cfg.n_labels < 0:
            raise ValueError(f"n_labels must be >= 0, got {cfg.n_labels}")
        if cfg.domain == "mel" and cfg.conditioning == "mel":
            raise ValueError(
                "domain 'mel' generates mels, so conditioning must be 'none', not 'mel'"
            )
        conditional = cfg.conditioning == "mel"
        self.domain = cfg.domain
        if in_channels is None:
            in_channels = n_mels if cfg.domain == "mel" else 1
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        self.in_channels = in_channels
        # Mel-conditioned. Frame-rate domains (stft) take the mel as it is: no upsampler.
        self.mel_conditioned = conditional
        self.n_mels = n_mels
        self.hop_length = hop_length
        self.n_steps = n_steps
        self.n_labels = cfg.n_labels
        self.null_label = cfg.n_labels
        self.residual_channels = channels
        self.kernel_size = cfg.kernel_size
        factors: list[int] = []
        if conditional and cfg.domain == "waveform":
            factors = list(upsample_factors or config_rules.upsample_factors(hop_length))
            if math.prod(factors) != hop_length or min(factors) < 1:
                raise ValueError(
                    f"upsample_factors {factors} multiply to {math.prod(factors)} but hop_length "
                    f"is {hop_length}"
                )
        self.upsample_factors = tuple(factors)
        # Set False to train on a CPU through the eager stack (reference; FLOP counting). Frame-rate
        # stft models train eagerly: their time axis is short (64-frame crops) and their layers
        # wide, so the eager convolutions already run as large GEMMs (`benchmarks/stft_speed.py
        # --skip-speed --skip-long`: 0.72 s a step eager vs 0.93 s fused, 2 threads).
        self.fused_training = cfg.domain != "stft"

        self.input_projection = nn.Conv1d(self.in_channels, channels, 1)
        self.diffusion_embedding = DiffusionEmbedding(
            n_steps, cfg.step_embedding_dim, cfg.step_mlp_dim
        )
        self.spectrogram_upsampler = SpectrogramUpsampler(factors) if factors else None
        self.label_embedding = (
            nn.Embedding(cfg.n_labels + 1, channels) if cfg.n_labels > 0 else None
        )
        self.residual_layers = nn.ModuleList(
            ResidualBlock(
                channels,
                2 ** (i % cfg.dilation_cycle),
                cfg.kernel_size,
                cfg.step_mlp_dim,
                n_mels if conditional else None,
                cfg.n_labels > 0,
            )
            for i in range(cfg.residual_layers)
        )
        self.skip_projection = nn.Conv1d(channels, channels, 1)
        self.output_projection = nn.Conv1d(channels, self.in_channels, 1)
        if cfg.domain == "mel":
            # Per-channel statistics of the data a mel-domain model generates, measured on the
            # training set before the first step and stored with the weights (so they travel in
            # checkpoints, EMA copies and exports); the network sees (mel - mean) / std.
            self.register_buffer("data_mean", torch.zeros(n_mels))
            self.register_buffer("data_std", torch.ones(n_mels))
        self.reset_parameters(generator)

    @classmethod
    def from_config(
        cls, cfg: ExperimentConfig, *, generator: torch.Generator | None = None
    ) -> DiffWave:
        """Build the network an experiment config describes (the checkpoint's, at load time)."""
        conditional = cfg.model.domain == "waveform" and cfg.model.conditioning == "mel"
        return cls(
            cfg.model,
            n_mels=cfg.mel.n_mels,
            hop_length=cfg.mel.hop_length,
            n_steps=cfg.diffusion.n_steps,
            upsample_factors=config_rules.resolved_upsample_factors(cfg) if conditional else None,
            in_channels=config_rules.model_channels(cfg),
            generator=generator,
        )

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """lmnt's initialisation: Kaiming-normal conv weights, torch defaults elsewhere, zero
        output projection; every draw comes from ``generator``."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, generator=generator)
            elif isinstance(module, (nn.Conv1d, nn.Linear, nn.ConvTranspose2d)):
                if isinstance(module, nn.Conv1d):
                    nn.init.kaiming_normal_(module.weight, generator=generator)
                else:
                    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        nn.init.zeros_(self.output_projection.weight)
        nn.init.zeros_(self.output_projection.bias)

    def set_data_stats(self, mean: Tensor, std: Tensor) -> None:
        """Store the per-channel mean and std ``[n_mels]`` of a mel-domain model's data.

        Raises:
            ValueError: not a mel-domain model, wrong shapes, or a non-positive std.
        """
        if self.domain != "mel":
            raise ValueError("data statistics belong to mel-domain models; this is a waveform one")
        if mean.shape != (self.in_channels,) or std.shape != (self.in_channels,):
            raise ValueError(
                f"stats have shapes {tuple(mean.shape)}, {tuple(std.shape)} but this model has "
                f"{self.in_channels} channels"
            )
        if not bool((std > 0).all()):
            raise ValueError("every std must be positive")
        self.data_mean.copy_(mean)
        self.data_std.copy_(std)

    def normalize_input(self, data: Tensor) -> Tensor:
        """``[B, C_in, T]`` data -> the unit-scale signal the network models (identity for
        waveform models)."""
        if self.domain != "mel":
            return data
        return (data - self.data_mean[:, None]) / self.data_std[:, None]

    def denormalize_output(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`normalize_input`: a sampled signal back to data scale."""
        if self.domain != "mel":
            return x
        return x * self.data_std[:, None].to(x.device) + self.data_mean[:, None].to(x.device)

    def receptive_field(self) -> int:
        """Input samples that one output sample depends on, per network evaluation."""
        return 1 + (self.kernel_size - 1) * sum(layer.dilation for layer in self.residual_layers)

    def conditioner_halo_frames(self) -> int:
        """Mel frames of context either side that the prepared conditioning of a frame needs
        (0 without a mel conditioner): prepare ``mel[a - h : b + h]`` and slice to get frames
        ``a..b`` exactly."""
        up = self.spectrogram_upsampler
        return 0 if up is None else up.halo_frames()

    # ------------------------------------------------------------------------------------------
    # Step-invariant work
    # ------------------------------------------------------------------------------------------

    def prepare(
        self, cond: Tensor | None = None, label: Tensor | None = None, *, project_mel: bool = True
    ) -> Conditioning:
        """All work that does not depend on ``x`` or ``c_noise``, once per utterance.

        Args:
            cond: mel ``[B, n_mels, frames]`` for a vocoder; None otherwise.
            label: class indices ``[B]`` (``null_label`` = unconditional); None means the null
                label for a label-conditional model.
            project_mel: compute every layer's conditioner projection (``conditioner``); when
                False only the upsampled ``mel`` is kept (the fused training kernel projects it).

        Returns:
            The :class:`Conditioning` that :meth:`denoise_step` consumes.

        Raises:
            ValueError: missing or unexpected ``cond``, wrong band count, label out of range.
        """
        conditioner = None
        if self.mel_conditioned:
            if cond is None:
                raise ValueError(
                    f"this model is mel-conditioned ({self.n_mels} bands) but cond is None"
                )
            if cond.dim() != 3 or cond.shape[1] != self.n_mels or cond.shape[2] < 1:
                raise ValueError(
                    f"mel has shape {tuple(cond.shape)} but this model expects "
                    f"[batch, {self.n_mels}, frames]"
                )
            up = self.spectrogram_upsampler
            mel = cond if up is None else up(cond)  # [B, n_mels, T]
            if not project_mel:
                return replace(self._prepare_label(label, cond), mel=mel)
            conditioner = self._project_mel(mel)
        elif cond is not None:
            raise ValueError(
                f"this model is unconditional (no mel input) but a cond of shape "
                f"{tuple(cond.shape)} was given"
            )
        return replace(self._prepare_label(label, cond), conditioner=conditioner)

    def _project_mel(self, mel: Tensor) -> Tensor:
        """Upsampled mel ``[B, n_mels, T]`` -> every layer's projection ``[B, L, 2C, T]``."""
        # All layers' 1x1 projections as one [layers * 2C, n_mels] product.
        weight = torch.cat([layer.conditioner_projection.weight for layer in self.residual_layers])
        bias = torch.cat([layer.conditioner_projection.bias for layer in self.residual_layers])
        proj = F.conv1d(mel, weight, bias)
        return proj.view(mel.shape[0], len(self.residual_layers), -1, mel.shape[-1])

    def _prepare_label(self, label: Tensor | None, cond: Tensor | None) -> Conditioning:
        """The label part of :meth:`prepare` (checked)."""
        label_bias = None
        if self.label_embedding is not None:
            if label is None:
                batch = 1 if cond is None else cond.shape[0]
                device = self.label_embedding.weight.device
                label = torch.full((batch,), self.null_label, dtype=torch.long, device=device)
            if label.dim() != 1 or label.is_floating_point():
                raise ValueError(
                    f"label must be an integer tensor [B], got {label.dtype} {tuple(label.shape)}"
                )
            if cond is not None and label.shape[0] != cond.shape[0]:
                raise ValueError(
                    f"label has batch {label.shape[0]} but cond has batch {cond.shape[0]}"
                )
            if label.numel() and not 0 <= int(label.min()) <= int(label.max()) <= self.null_label:
                raise ValueError(
                    f"label values {label.tolist()} must lie in [0, {self.null_label}] "
                    f"({self.n_labels} classes, {self.null_label} = null label)"
                )
            emb = self.label_embedding(label)  # [B, C]
            weight = torch.stack([layer.label_projection.weight for layer in self.residual_layers])
            bias = torch.stack([layer.label_projection.bias for layer in self.residual_layers])
            label_bias = torch.einsum("loc,bc->blo", weight, emb) + bias  # [B, layers, C]
        elif label is not None:
            raise ValueError("this model has no labels (n_labels 0) but a label was given")
        return Conditioning(label_bias=label_bias)

    # ------------------------------------------------------------------------------------------
    # Per-step work
    # ------------------------------------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        cond: Tensor | None = None,
        label: Tensor | None = None,
        *,
        fused: bool | None = None,
    ) -> Tensor:
        """``denoise_step(x, c_noise, prepare(cond, label))``: ``[B, C_in, T]`` -> same shape.

        Args:
            fused: run the residual stack through the fused CPU training kernel
                (:mod:`audiodiff.fused_stack`); None picks it when ``self.fused_training`` is
                True (the default), gradients are on, ``x`` is a float32/float64 CPU tensor,
                CPU autocast is off and nothing is being compiled.
        """
        if fused is None:
            fused = (
                self.fused_training
                and torch.is_grad_enabled()
                and x.device.type == "cpu"
                and x.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled("cpu")
                and not torch.compiler.is_compiling()
            )
        if fused:
            return self._forward_fused(x, c_noise, cond, label)
        return self.denoise_step(x, c_noise, self.prepare(cond, label))

    def _forward_fused(
        self, x: Tensor, c_noise: Tensor, cond: Tensor | None, label: Tensor | None
    ) -> Tensor:
        """:meth:`forward` with the residual stack as one :class:`FusedResidualStack` call."""
        prepared = self.prepare(cond, label, project_mel=False)
        c_noise = self._check_step_inputs(x, c_noise, prepared)
        batch = x.shape[0]
        layers = self.residual_layers
        h = F.relu(self.input_projection(x))
        step = self.diffusion_embedding(c_noise)  # [B, step_mlp_dim]
        w_step = torch.stack([layer.diffusion_projection.weight for layer in layers])
        b_step = torch.stack([layer.diffusion_projection.bias for layer in layers])
        layer_bias = torch.einsum("lcs,bs->blc", w_step, step) + b_step  # [B, L, C]
        if prepared.label_bias is not None:
            layer_bias = layer_bias + prepared.label_bias
        mel = prepared.mel
        if mel is not None:
            mel = mel.expand(batch, -1, -1)
        w_cat, b_cat = [], []
        for layer in layers:
            conv, proj = layer.dilated_conv, layer.conditioner_projection
            # conv.weight [2C, C, K] -> [2C, K * C]: column k * C + c multiplies tap k, channel c.
            taps = conv.weight.permute(0, 2, 1).reshape(conv.weight.shape[0], -1)
            w_cat.append(taps if proj is None else torch.cat([taps, proj.weight[:, :, 0]], 1))
            b_cat.append(conv.bias if proj is None else conv.bias + proj.bias)
        shape = StackShape(
            channels=self.residual_channels,
            kernel_size=self.kernel_size,
            dilations=tuple(layer.dilation for layer in layers),
            n_mels=0 if mel is None else mel.shape[1],
        )
        skip = FusedResidualStack.apply(
            shape,
            TRAIN_BLOCK_SAMPLES,
            h.contiguous(),
            layer_bias.expand(batch, -1, -1).contiguous(),
            mel,
            torch.stack(w_cat),
            torch.stack(b_cat),
            torch.stack([layer.output_projection.weight[:, :, 0] for layer in layers]),
            torch.stack([layer.output_projection.bias for layer in layers]),
        )
        return self._output_head(skip)

    def _output_head(self, skip: Tensor) -> Tensor:
        """Summed skips ``[B, C, T]`` -> output ``[B, C_in, T]``."""
        h = F.relu(self.skip_projection(skip / math.sqrt(len(self.residual_layers))))
        return self.output_projection(h)

    def denoise_step(
        self,
        x: Tensor,
        c_noise: Tensor,
        prepared: Conditioning,
        *,
        fast: bool | None = None,
        block_samples: int = INFERENCE_BLOCK_SAMPLES,
    ) -> Tensor:
        """One network evaluation given prepared conditioning.

        Args:
            x: noisy signal ``[B, in_channels, T]``.
            c_noise: training step index ``[B]`` (or a scalar), fractional allowed, in
                ``[0, n_steps - 1]``.
            prepared: from :meth:`prepare`, covering exactly ``T`` samples when conditioned.
            fast: the blocked in-cache path (see module docstring); None picks it when gradients
                are off and ``x`` is on a CPU.
            block_samples: time block of the fast path, in samples.

        Returns:
            ``[B, in_channels, T]``.

        Raises:
            ValueError: shape, batch, length or step range mismatches; ``fast=True`` with grad on.
        """
        c_noise = self._check_step_inputs(x, c_noise, prepared)
        if prepared.mel is not None and prepared.conditioner is None:
            prepared = replace(prepared, conditioner=self._project_mel(prepared.mel), mel=None)
        if fast is None:
            fast = (
                not torch.is_grad_enabled()
                and x.device.type == "cpu"
                and not torch.compiler.is_compiling()
            )
        if fast:
            if torch.is_grad_enabled():
                raise ValueError("fast=True needs gradients off (torch.no_grad/inference_mode)")
            return denoise_fast(self, x, c_noise, prepared, block_samples)
        return self._denoise_eager(x, c_noise, prepared)

    def _check_step_inputs(self, x: Tensor, c_noise: Tensor, prepared: Conditioning) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this model expects "
                f"[batch, {self.in_channels}, time]"
            )
        batch, length = x.shape[0], x.shape[-1]
        if self.mel_conditioned and prepared.length is None:
            raise ValueError(
                "this model is mel-conditioned but the prepared conditioning has no mel"
            )
        if self.label_embedding is not None and prepared.label_bias is None:
            raise ValueError("this model is label-conditional but the conditioning has no label")
        if prepared.length is not None and prepared.length != length:
            raise ValueError(
                f"x has {length} samples but the conditioning covers {prepared.length}"
            )
        if prepared.batch_size not in (None, 1, batch):
            raise ValueError(
                f"x has batch {batch} but the conditioning has batch {prepared.batch_size}"
            )
        c_noise = torch.as_tensor(c_noise, device=x.device)
        if c_noise.dim() == 0 or c_noise.shape == (1,):
            c_noise = c_noise.reshape(1).expand(batch)
        if c_noise.shape != (batch,):
            raise ValueError(f"c_noise has shape {tuple(c_noise.shape)} but x has batch {batch}")
        # A traced or compiled graph cannot keep a data-dependent check: it would freeze the
        # example input's answer into the graph.
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            lo, hi = torch.aminmax(c_noise)
            if lo < 0 or hi > self.n_steps - 1:
                raise ValueError(
                    f"c_noise must be a training step index in [0, {self.n_steps - 1}], got "
                    f"values from {float(lo)} to {float(hi)}"
                )
        return c_noise

    def _denoise_eager(self, x: Tensor, c_noise: Tensor, prepared: Conditioning) -> Tensor:
        """The plain layer-by-layer evaluation (reference, training, GPU)."""
        channels = self.residual_channels
        h = F.relu(self.input_projection(x))
        step = self.diffusion_embedding(c_noise)  # [B, step_mlp_dim]
        n_layers = len(self.residual_layers)
        skip: Tensor | None = None
        # Unbind once: indexing conditioner[:, i] per layer makes autograd fill a zero gradient
        # of the whole [B, layers, 2C, T] tensor for every layer (a third of a training step).
        conditioners = prepared.conditioner.unbind(1) if prepared.conditioner is not None else None
        for i, layer in enumerate(self.residual_layers):
            bias = layer.diffusion_projection(step)  # [B, C]
            if prepared.label_bias is not None:
                bias = bias + prepared.label_bias[:, i]
            y = layer.dilated_conv(h + bias.unsqueeze(-1))
            if conditioners is not None:
                y = y + conditioners[i]
            gate, filt = y.chunk(2, dim=1)
            y = torch.sigmoid(gate) * torch.tanh(filt)
            out = layer.output_projection
            if i == n_layers - 1:  # the last residual half is never read: project the skip only
                skip_i = F.conv1d(y, out.weight[channels:], out.bias[channels:])
            else:
                residual, skip_i = out(y).chunk(2, dim=1)
                h = (h + residual) / math.sqrt(2.0)
            skip = skip_i if skip is None else skip + skip_i
        return self._output_head(skip)
