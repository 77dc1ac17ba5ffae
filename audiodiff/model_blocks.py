"""The pieces of the DiffWave network: its blocks and the conditioning they consume.

:class:`DiffusionEmbedding` (step embedding), :class:`SpectrogramUpsampler` (mel frames to
samples) and :class:`ResidualBlock` (one gated layer's weights) are the modules
:class:`audiodiff.model.DiffWave` is built of (:func:`check_network_shape` refuses impossible
shapes, :func:`init_weights` is lmnt's initialisation); :class:`Conditioning` is what its
``prepare`` makes once per utterance. What the network computes with them (the preparation, the
eager stack and its backends) is :mod:`audiodiff.model_compute`. Of ours it imports only the
config dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.config import ModelConfig

_LEAKY_SLOPE = 0.4  # lmnt's upsampler activation


@dataclass(frozen=True)
class Conditioning:
    """Step-invariant conditioning of one batch, made by :meth:`audiodiff.model.DiffWave.prepare`.

    A batch of 1 broadcasts against any batch of ``x``. The conditioner costs
    ``layers * 2 * residual_channels`` floats per sample (15 KiB for the base model, 330 MiB per
    second at 22.05 kHz), so long inputs are prepared per chunk (:meth:`slice_time`,
    :meth:`audiodiff.model.DiffWave.conditioner_halo_frames`).

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
    """One gated residual layer; the computation lives in :class:`audiodiff.model.DiffWave`
    (prepare/step split) and the stack functions (:func:`audiodiff.model_compute.eager_stack`, the
    fused and fast kernels).

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


def check_network_shape(cfg: ModelConfig, *, n_mels: int, n_steps: int) -> None:
    """Refuse a DiffWave shape that cannot be built.

    Raises:
        ValueError: a size below 1, an even kernel, negative ``n_labels``, or a mel domain with
            mel conditioning.
    """
    sizes = {
        "residual_channels": cfg.residual_channels,
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
        raise ValueError("domain 'mel' generates mels, so conditioning must be 'none', not 'mel'")


def init_weights(net: nn.Module, generator: torch.Generator | None = None) -> None:
    """lmnt's initialisation of the DiffWave ``net``: Kaiming-normal conv weights, torch defaults
    elsewhere, zero output projection; every draw comes from ``generator``."""
    for module in net.modules():
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
    nn.init.zeros_(net.output_projection.weight)
    nn.init.zeros_(net.output_projection.bias)
