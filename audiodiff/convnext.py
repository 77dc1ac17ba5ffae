"""ConvNeXt block stack at frame rate: the other denoiser of the stft domain (DESIGN §12).

Vocos (Siuzdak 2024) and RFWave (Liu et al. 2024) produce STFT frames with a stack of ConvNeXt
blocks (Liu et al. 2022) over mel frames instead of dilated convolutions: each block is a depthwise
convolution over time, a LayerNorm, and a pointwise MLP (``dim -> 3 dim -> dim``, GELU) scaled by a
learned per-channel factor (layer scale, initialised to ``1 / blocks``) and added to its input.
Here the noise level enters every block as an adaptive LayerNorm (scale and shift projected from
the same step embedding as DiffWave's, zero-initialised, so each block starts as a plain
LayerNorm); the mel enters once, as a convolution added to the input projection (Vocos feeds the
mel in the same place). ``model.architecture: convnext`` selects it; ``residual_channels`` is the
width, ``residual_layers`` the number of blocks and ``kernel_size`` the depthwise kernel (7 in
Vocos). The module knows no diffusion: ``[B, in_channels, frames]`` noisy frames, a fractional
step index ``c_noise [B]`` and the mel ``[B, n_mels, frames]`` to the same shape as the input.

Measured against the DiffWave stack at equal compute (issue 13; klettres ``stft.yaml`` with
``train.spectral_loss: 1``, same data order and noise, 2-core x86): ConvNeXt 256 wide x 12
blocks, kernel 7, is 6.89 M multiply-accumulates per frame per step and 10.5 M parameters against
6.78 M and 9.3 M for the recipe's DiffWave stack (``benchmarks/architecture_compare.py``). Over
steps 751-1,000 its mean training loss was 2.088 against 2.031; at step 1,000 its one-step output
on 4 held-out clips scored MR-STFT 1.325 against 1.249; run side by side on one thread each it
trained 7.17 audio-s/s against 7.59. DiffWave stays the default.

It offers the calls the samplers and the synthesis engine use of :class:`audiodiff.model.DiffWave`
(``prepare``, ``denoise_step``, ``forward``, ``receptive_field``, ``conditioner_halo_frames``), so
nothing above it knows which stack it runs. Eager PyTorch only: the CPU kernels of
:mod:`audiodiff.kernels` are DiffWave's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.config import ExperimentConfig
from audiodiff.config_rules import model_channels
from audiodiff.model_blocks import Conditioning, DiffusionEmbedding
from audiodiff.model_compute import check_step_inputs

# Width of each block's pointwise MLP over its input width (Vocos: 1536 for 512).
MLP_RATIO = 3
# LayerNorm epsilon (ConvNeXt's and Vocos's).
NORM_EPS = 1e-6
# Standard deviation of the truncated-normal weight initialisation (ConvNeXt's and Vocos's).
INIT_STD = 0.02


class ConvNeXtBlock(nn.Module):
    """One block: depthwise conv, adaptive LayerNorm, pointwise MLP, layer scale, residual.

    Args:
        dim: channels.
        kernel_size: depthwise kernel over frames (odd).
        embedding_dim: width of the step embedding that modulates the LayerNorm.
        layer_scale: initial per-channel output scale.
    """

    def __init__(self, dim: int, kernel_size: int, embedding_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS, elementwise_affine=False)
        self.modulation = nn.Linear(embedding_dim, 2 * dim)
        self.pwconv1 = nn.Linear(dim, MLP_RATIO * dim)
        self.pwconv2 = nn.Linear(MLP_RATIO * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        """``x [B, dim, T]``, ``embedding [B, embedding_dim]`` -> ``[B, dim, T]``."""
        h = self.dwconv(x).transpose(1, 2)  # [B, T, dim]: LayerNorm and Linear act on the last dim
        scale, shift = self.modulation(embedding).unsqueeze(1).chunk(2, dim=-1)
        h = self.norm(h) * (1 + scale) + shift
        h = self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + (self.gamma * h).transpose(1, 2)


class ConvNeXtDenoiser(nn.Module):
    """ConvNeXt stack over stft-domain frames, conditioned on the mel (module docstring).

    Args:
        cfg: the experiment (``model.architecture == "convnext"``, ``model.domain == "stft"``).
        generator: source of the initial weights.

    Raises:
        ValueError: an even kernel or fewer than one block.
    """

    def __init__(self, cfg: ExperimentConfig, *, generator: torch.Generator | None = None):
        super().__init__()
        mo = cfg.model
        dim, blocks, kernel = mo.residual_channels, mo.residual_layers, mo.kernel_size
        if kernel % 2 == 0 or blocks < 1:
            raise ValueError(f"need an odd kernel and >= 1 block, got {kernel} and {blocks}")
        self.in_channels = model_channels(cfg)
        self.n_mels = cfg.mel.n_mels
        self.n_steps = cfg.diffusion.n_steps
        self.kernel_size = kernel
        # What the shared step-input checks (model_compute.check_step_inputs) read of a network.
        self.mel_conditioned = True
        self.label_embedding = None
        self.embedding = DiffusionEmbedding(self.n_steps, mo.step_embedding_dim, mo.step_mlp_dim)
        self.input_projection = nn.Conv1d(self.in_channels, dim, kernel, padding=kernel // 2)
        self.mel_projection = nn.Conv1d(self.n_mels, dim, kernel, padding=kernel // 2)
        self.input_norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, kernel, mo.step_mlp_dim, 1.0 / blocks) for _ in range(blocks)
        )
        self.output_norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.output_projection = nn.Linear(dim, self.in_channels)
        self._init_weights(generator)

    def _init_weights(self, generator: torch.Generator | None) -> None:
        """Truncated normal (std 0.02) weights and zero biases, as ConvNeXt and Vocos; the
        modulation and the output projection start at zero, so the untrained network outputs
        0 (the trivial estimate) and every block starts as a plain LayerNorm."""
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=INIT_STD, generator=generator)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.zeros_(block.modulation.weight)
        nn.init.zeros_(self.output_projection.weight)

    def receptive_field(self) -> int:
        """Frames one output frame depends on, per evaluation: the input projection and every
        block's depthwise convolution."""
        return 1 + (self.kernel_size - 1) * (len(self.blocks) + 1)

    def conditioner_halo_frames(self) -> int:
        """Mel frames either side that a prepared frame depends on (the mel projection)."""
        return self.kernel_size // 2

    def prepare(self, cond: Tensor | None = None, label: Tensor | None = None) -> Conditioning:
        """The mel's projection ``[B, dim, frames]``, once per utterance.

        Raises:
            ValueError: no mel, a label, or a mel with the wrong band count.
        """
        if label is not None:
            raise ValueError("a convnext stft model takes no class label")
        if cond is None or cond.dim() != 3 or cond.shape[1] != self.n_mels:
            shape = None if cond is None else tuple(cond.shape)
            raise ValueError(f"this model needs a mel [batch, {self.n_mels}, frames], got {shape}")
        return Conditioning(conditioner=self.mel_projection(cond))

    def denoise_step(self, x: Tensor, c_noise: Tensor, prepared: Conditioning, **_: Any) -> Tensor:
        """One evaluation: ``x [B, in_channels, frames]`` -> same shape.

        Args:
            x: noisy frames.
            c_noise: fractional training step ``[B]`` or a scalar, in ``[0, n_steps - 1]``.
            prepared: from :meth:`prepare`, covering exactly ``frames`` (batch ``B`` or 1).

        Raises:
            ValueError: shape, length, batch or step range mismatches.
        """
        c_noise = check_step_inputs(self, x, c_noise, prepared)
        embedding = self.embedding(c_noise)
        h = self.input_projection(x) + prepared.conditioner
        h = self.input_norm(h.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h, embedding)
        return self.output_projection(self.output_norm(h.transpose(1, 2))).transpose(1, 2)

    def forward(
        self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None, label: Tensor | None = None
    ) -> Tensor:
        """``denoise_step(x, c_noise, prepare(cond, label))``."""
        return self.denoise_step(x, c_noise, self.prepare(cond, label))
