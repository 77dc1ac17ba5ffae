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
- **Backends of the residual stack**, named by a ``backend`` argument of :meth:`DiffWave.forward`
  and :meth:`DiffWave.denoise_step` (:mod:`audiodiff.kernels.backend`; ``"auto"``, the default,
  is resolved there by one rule from the input's device, the grad mode, autocast and compiling):
  ``"eager"`` (layer by layer; the reference and the GPU path), ``"cpu-fast"`` and
  ``"cpu-fused"``.
- **Fast per-step path** (``"cpu-fast"``, :mod:`audiodiff.kernels.fast`; ``"auto"`` under
  ``torch.no_grad``/``inference_mode`` on a CPU). ``denoise_step`` walks the residual stack in
  cache-sized time blocks, in place and allocation-free; it equals the eager path within float32
  rounding.
- **Fused CPU training path** (``"cpu-fused"``; ``"auto"`` with gradients on, on a CPU, when
  ``fused_training`` is True). ``forward`` runs the residual stack through
  :class:`audiodiff.kernels.fused.FusedResidualStack` (one im2col GEMM per layer and time block
  of ``train_block_samples`` for the dilated conv plus the conditioner projection, gating and
  residual/skip updates in cache, a hand-written blocked backward): 1.6-1.9x faster per training
  step than the eager stack and a third of its peak memory on the 2-core CPU
  (benchmarks/train_speed.py); ``backend="eager"`` or ``fused_training = False`` selects the
  eager stack. The inference path keeps its own kernel: the same im2col kernel without saving,
  tried for inference, ran 10-20 % slower than the in-place fast path above (its tap copies and
  ping-pong buffers cost more than the deeper GEMM gains when the conditioner projection is
  precomputed).

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
from dataclasses import replace

import torch
from torch import Tensor, nn

from audiodiff import config_rules
from audiodiff.config import ExperimentConfig, ModelConfig
from audiodiff.kernels.backend import Backend, resolve_backend
from audiodiff.kernels.fast import INFERENCE_BLOCK_SAMPLES, denoise_fast
from audiodiff.kernels.fused import TRAIN_BLOCK_SAMPLES
from audiodiff.model_blocks import (
    Conditioning,
    DiffusionEmbedding,
    ResidualBlock,
    SpectrogramUpsampler,
    check_network_shape,
    init_weights,
)
from audiodiff.model_compute import (
    check_step_inputs,
    evaluate_layers,
    prepare_conditioning,
    project_conditioner,
)


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
        check_network_shape(cfg, n_mels=n_mels, n_steps=n_steps)
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
        self.train_block_samples = TRAIN_BLOCK_SAMPLES  # the fused kernel's time block

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
        init_weights(self, generator)

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
        return prepare_conditioning(self, cond, label, project_mel=project_mel)

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
        backend: Backend = "auto",
    ) -> Tensor:
        """``denoise_step(x, c_noise, prepare(cond, label))``: ``[B, C_in, T]`` -> same shape.

        Args:
            backend: the residual stack's backend (:mod:`audiodiff.kernels.backend`); ``"auto"``
                picks the fused CPU training kernel (``"cpu-fused"``, in time blocks of
                ``train_block_samples``) with gradients on when ``fused_training`` is True.
        """
        backend = resolve_backend(backend, x, fused_training=self.fused_training)
        if backend != "cpu-fused":
            return self.denoise_step(x, c_noise, self.prepare(cond, label), backend=backend)
        prepared = self.prepare(cond, label, project_mel=False)
        return evaluate_layers(
            self, x, check_step_inputs(self, x, c_noise, prepared), prepared, backend
        )

    def denoise_step(
        self,
        x: Tensor,
        c_noise: Tensor,
        prepared: Conditioning,
        *,
        backend: Backend = "auto",
        block_samples: int = INFERENCE_BLOCK_SAMPLES,
    ) -> Tensor:
        """One network evaluation given prepared conditioning.

        Args:
            x: noisy signal ``[B, in_channels, T]``.
            c_noise: training step index ``[B]`` (or a scalar), fractional allowed, in
                ``[0, n_steps - 1]``.
            prepared: from :meth:`prepare`, covering exactly ``T`` samples when conditioned.
            backend: ``"eager"``, ``"cpu-fast"`` (the blocked in-cache path, see the module
                docstring) or ``"auto"`` (:func:`audiodiff.kernels.backend.resolve_backend`:
                ``"cpu-fast"`` when gradients are off and ``x`` is on a CPU).
            block_samples: time block of the ``"cpu-fast"`` path, in samples.

        Returns:
            ``[B, in_channels, T]``.

        Raises:
            ValueError: shape, batch, length or step range mismatches; ``"cpu-fast"`` with grad
                on; ``"cpu-fused"`` (it runs through :meth:`forward` only).
        """
        c_noise = check_step_inputs(self, x, c_noise, prepared)
        if prepared.mel is not None and prepared.conditioner is None:
            prepared = replace(
                prepared,
                conditioner=project_conditioner(self.residual_layers, prepared.mel),
                mel=None,
            )
        backend = resolve_backend(backend, x, fused_training=False)
        if backend == "cpu-fused":
            raise ValueError("backend 'cpu-fused' runs through forward(x, c_noise, cond, label)")
        if backend == "cpu-fast":
            if torch.is_grad_enabled():
                raise ValueError(
                    "backend 'cpu-fast' needs gradients off (torch.no_grad/inference_mode)"
                )
            return denoise_fast(self, x, c_noise, prepared, block_samples)
        return evaluate_layers(self, x, c_noise, prepared, backend)
