"""What DiffWave computes with its blocks: the step-invariant preparation and one evaluation.

:func:`prepare_conditioning` is :meth:`audiodiff.model.DiffWave.prepare`: the mel checks and
upsampling, every layer's conditioner projection (:func:`project_conditioner`) and the label
projection (:func:`prepare_label`). :func:`check_step_inputs` checks one evaluation's inputs, and
:func:`evaluate_layers` runs the input projection, the residual stack through the ``"eager"``
backend (:func:`eager_stack`, the plain layer-by-layer stack: the reference the fused training
kernel (:mod:`audiodiff.kernels.fused`) and the fast inference kernel
(:mod:`audiodiff.kernels.fast`) match) or the ``"cpu-fused"`` one, and the output head. The
``"cpu-fast"`` backend is one function over the whole network
(:func:`audiodiff.kernels.fast.denoise_fast`). Of ours it imports the blocks and the kernels.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.kernels.fused import fused_stack
from audiodiff.model_blocks import Conditioning


def prepare_conditioning(
    net: nn.Module, cond: Tensor | None, label: Tensor | None, *, project_mel: bool = True
) -> Conditioning:
    """:meth:`audiodiff.model.DiffWave.prepare` of the DiffWave ``net`` (checked): the upsampled
    mel's conditioner projection for every layer (only the upsampled ``mel`` when not
    ``project_mel``), and the label projection.

    Raises:
        ValueError: missing or unexpected ``cond``, wrong band count, label out of range.
    """
    conditioner = None
    if net.mel_conditioned:
        if cond is None:
            raise ValueError(f"this model is mel-conditioned ({net.n_mels} bands) but cond is None")
        if cond.dim() != 3 or cond.shape[1] != net.n_mels or cond.shape[2] < 1:
            raise ValueError(
                f"mel has shape {tuple(cond.shape)} but this model expects "
                f"[batch, {net.n_mels}, frames]"
            )
        up = net.spectrogram_upsampler
        mel = cond if up is None else up(cond)  # [B, n_mels, T]
        if not project_mel:
            return replace(
                prepare_label(
                    net.label_embedding, net.residual_layers, label, cond, net.null_label
                ),
                mel=mel,
            )
        conditioner = project_conditioner(net.residual_layers, mel)
    elif cond is not None:
        raise ValueError(
            f"this model is unconditional (no mel input) but a cond of shape "
            f"{tuple(cond.shape)} was given"
        )
    return replace(
        prepare_label(net.label_embedding, net.residual_layers, label, cond, net.null_label),
        conditioner=conditioner,
    )


def project_conditioner(layers: nn.ModuleList, mel: Tensor) -> Tensor:
    """Upsampled mel ``[B, n_mels, T]`` -> every layer's projection ``[B, L, 2C, T]``."""
    # All layers' 1x1 projections as one [layers * 2C, n_mels] product.
    weight = torch.cat([layer.conditioner_projection.weight for layer in layers])
    bias = torch.cat([layer.conditioner_projection.bias for layer in layers])
    proj = F.conv1d(mel, weight, bias)
    return proj.view(mel.shape[0], len(layers), -1, mel.shape[-1])


def prepare_label(
    embedding: nn.Embedding | None,
    layers: nn.ModuleList,
    label: Tensor | None,
    cond: Tensor | None,
    null_label: int,
) -> Conditioning:
    """The label part of :meth:`audiodiff.model.DiffWave.prepare` (checked): every layer's
    projection of the label embedding; ``null_label`` is the class count (the unconditional row)."""
    label_bias = None
    if embedding is not None:
        if label is None:
            batch = 1 if cond is None else cond.shape[0]
            device = embedding.weight.device
            label = torch.full((batch,), null_label, dtype=torch.long, device=device)
        if label.dim() != 1 or label.is_floating_point():
            raise ValueError(
                f"label must be an integer tensor [B], got {label.dtype} {tuple(label.shape)}"
            )
        if cond is not None and label.shape[0] != cond.shape[0]:
            raise ValueError(f"label has batch {label.shape[0]} but cond has batch {cond.shape[0]}")
        if label.numel() and not 0 <= int(label.min()) <= int(label.max()) <= null_label:
            raise ValueError(
                f"label values {label.tolist()} must lie in [0, {null_label}] "
                f"({null_label} classes, {null_label} = null label)"
            )
        emb = embedding(label)  # [B, C]
        weight = torch.stack([layer.label_projection.weight for layer in layers])
        bias = torch.stack([layer.label_projection.bias for layer in layers])
        label_bias = torch.einsum("loc,bc->blo", weight, emb) + bias  # [B, layers, C]
    elif label is not None:
        raise ValueError("this model has no labels (n_labels 0) but a label was given")
    return Conditioning(label_bias=label_bias)


def check_step_inputs(net: nn.Module, x: Tensor, c_noise: Tensor, prepared: Conditioning) -> Tensor:
    """Check one evaluation's inputs against the DiffWave ``net``; return ``c_noise`` as ``[B]``.

    Raises:
        ValueError: shape, batch, length or step range mismatches.
    """
    if x.dim() != 3 or x.shape[1] != net.in_channels:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but this model expects [batch, {net.in_channels}, time]"
        )
    batch, length = x.shape[0], x.shape[-1]
    if net.mel_conditioned and prepared.length is None:
        raise ValueError("this model is mel-conditioned but the prepared conditioning has no mel")
    if net.label_embedding is not None and prepared.label_bias is None:
        raise ValueError("this model is label-conditional but the conditioning has no label")
    if prepared.length is not None and prepared.length != length:
        raise ValueError(f"x has {length} samples but the conditioning covers {prepared.length}")
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
        if lo < 0 or hi > net.n_steps - 1:
            raise ValueError(
                f"c_noise must be a training step index in [0, {net.n_steps - 1}], got "
                f"values from {float(lo)} to {float(hi)}"
            )
    return c_noise


def eager_stack(
    layers: nn.ModuleList, h: Tensor, step: Tensor, prepared: Conditioning, channels: int
) -> Tensor:
    """The residual stack layer by layer (reference, training, GPU): input projection
    ``h [B, C, T]`` and step embedding ``[B, step_mlp_dim]`` -> summed skips ``[B, C, T]``."""
    n_layers = len(layers)
    skip: Tensor | None = None
    # Unbind once: indexing conditioner[:, i] per layer makes autograd fill a zero gradient
    # of the whole [B, layers, 2C, T] tensor for every layer (a third of a training step).
    conditioners = prepared.conditioner.unbind(1) if prepared.conditioner is not None else None
    for i, layer in enumerate(layers):
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
    return skip


def evaluate_layers(
    net: nn.Module, x: Tensor, c_noise: Tensor, prepared: Conditioning, backend: str
) -> Tensor:
    """One evaluation of the DiffWave ``net`` on checked inputs: input projection, the residual
    stack through ``backend`` (``"eager"``: :func:`eager_stack`, layer by layer, the reference;
    ``"cpu-fused"``: one :class:`audiodiff.kernels.fused.FusedResidualStack` call over the
    unprojected mel, in time blocks of ``net.train_block_samples``), output head."""
    h = F.relu(net.input_projection(x))
    step = net.diffusion_embedding(c_noise)  # [B, step_mlp_dim]
    if backend == "cpu-fused":
        skip = fused_stack(
            net.residual_layers,
            h,
            step,
            prepared.label_bias,
            prepared.mel,
            channels=net.residual_channels,
            kernel_size=net.kernel_size,
            block_samples=net.train_block_samples,
        )
    else:
        skip = eager_stack(net.residual_layers, h, step, prepared, net.residual_channels)
    h = F.relu(net.skip_projection(skip / math.sqrt(len(net.residual_layers))))
    return net.output_projection(h)
