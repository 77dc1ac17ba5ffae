"""CPU training kernel of DiffWave's residual stack (backend ``"cpu-fused"``): im2col GEMMs in
cache-sized time blocks.

Why it exists (issue 3): on a CPU, ``conv1d`` with a dilation and its backward run at about a
third of the fp32 matmul rate, and every elementwise op of the eager stack (bias add, conditioner
add, gating, residual update, skip sum and their backwards) streams a ``[B, 2C, T]`` tensor through
memory. Here each layer is, per batch item and per time block of ``block_samples`` columns:

- **one GEMM** ``z = W_cat @ col + b`` where ``col = [x(t - d); x(t); x(t + d); mel(t)]`` stacks
  the ``K`` dilated taps of the layer input ``x = h + bias`` (zero outside the signal, exactly the
  conv's zero padding) and the upsampled mel, and ``W_cat = [W_tap0, W_tap1, W_tap2, W_cond]``
  (``[2C, K*C + n_mels]``), so the dilated conv and the conditioner projection are one product
  with a deep inner dimension (K = 272 for the base model: ~90 % of the square-matmul rate, against
  ~65 % for three separate K = 64 products);
- the gate ``sigmoid(z[:C]) * tanh(z[C:])``, the output projection, the residual update
  ``(h + res) / sqrt(2)`` and the skip sum while the block is still in cache.

The backward walks the layers in reverse with the same blocks: ``dW_cat += dz @ col^T`` rebuilds
``col`` from the saved layer input, and ``dcol = W_cat^T @ dz`` is scattered back onto the taps'
time shifts (the transposed dilated conv), into the mel gradient and into the bias gradient.

Saved for backward: every layer's input ``h`` ``[B, C, T]`` and its gate halves
``[sigmoid(z[:C]); tanh(z[C:])]`` ``[B, 2C, T]`` (written in place over ``z``, so the backward
computes no transcendental function), i.e. ``3 * C * layers`` floats per sample (1.4 GiB for the
base model at batch 4 of 15,872 samples).

Buffers are allocated once per call and reused by every block (no per-block allocation: freshly
allocated megabyte tensors cost page faults on every block).

Exactness: forward and gradients equal the eager stack (:func:`audiodiff.model_compute.eager_stack`)
to float rounding; ``tests/test_fused_stack.py`` checks them with ``torch.autograd.gradcheck`` in
float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

INV_SQRT2 = 1 / math.sqrt(2.0)
# The default time block: [272, 4096] col + [128, 4096] z: ~6 MiB; fewer Python-level ops.
TRAIN_BLOCK_SAMPLES = 4096


@dataclass(frozen=True)
class StackShape:
    """Static description of a residual stack.

    Attributes:
        channels: residual channels ``C``.
        kernel_size: taps ``K`` of each dilated conv (odd).
        dilations: each layer's dilation.
        n_mels: conditioner rows at the end of ``col`` (0 for an unconditional stack).
    """

    channels: int
    kernel_size: int
    dilations: tuple[int, ...]
    n_mels: int

    @property
    def col_rows(self) -> int:
        """Rows of the im2col block, ``K * C + n_mels``."""
        return self.kernel_size * self.channels + self.n_mels

    def shifts(self, layer: int) -> list[int]:
        """Time offset (samples) that tap ``k`` of ``layer`` reads, for every ``k``."""
        half = (self.kernel_size - 1) // 2
        return [(k - half) * self.dilations[layer] for k in range(self.kernel_size)]


def _spans(length: int, block: int) -> list[tuple[int, int]]:
    return [(t0, min(length, t0 + block)) for t0 in range(0, length, block)]


def _valid(t0: int, t1: int, shift: int, length: int) -> tuple[int, int]:
    """Output columns ``[lo, hi)`` inside ``[t0, t1)`` whose tap at ``shift`` reads the signal."""
    lo, hi = max(t0, -shift), min(t1, length - shift)
    return lo, max(lo, hi)


def _gather_col(
    col: Tensor,
    shape: StackShape,
    layer: int,
    h_b: Tensor,
    bias_b: Tensor,
    mel_b: Tensor | None,
    t0: int,
    t1: int,
) -> None:
    """Fill ``col [K*C + M, t1 - t0]`` with the shifted taps of ``h_b + bias_b`` and the mel."""
    channels, length = shape.channels, h_b.shape[-1]
    for k, shift in enumerate(shape.shifts(layer)):
        dst = col[k * channels : (k + 1) * channels]
        lo, hi = _valid(t0, t1, shift, length)
        if lo > t0:
            dst[:, : lo - t0].zero_()
        if hi < t1:
            dst[:, hi - t0 :].zero_()
        if hi > lo:
            torch.add(
                h_b[:, lo + shift : hi + shift], bias_b[:, None], out=dst[:, lo - t0 : hi - t0]
            )
    if mel_b is not None:
        col[shape.kernel_size * channels :].copy_(mel_b[:, t0:t1])


def stack_forward(
    shape: StackShape,
    h0: Tensor,
    layer_bias: Tensor,
    mel: Tensor | None,
    w_cat: Tensor,
    b_cat: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    *,
    block_samples: int = TRAIN_BLOCK_SAMPLES,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The residual stack's skip sum and what :func:`stack_backward` needs.

    Args:
        shape: channels, kernel, dilations, mel rows.
        h0: input of the first layer ``[B, C, T]``.
        layer_bias: per-layer bias added to the layer input ``[B, L, C]`` (step + label terms).
        mel: upsampled mel ``[B, M, T]``, or None when ``shape.n_mels == 0``.
        w_cat: ``[L, 2C, K*C + M]`` (taps, then the conditioner projection).
        b_cat: ``[L, 2C]`` (conv bias + conditioner bias).
        w_out: ``[L, 2C, C]`` output projections (residual half, then skip half).
        b_out: ``[L, 2C]``.
        block_samples: time block.

    Returns:
        ``(skip [B, C, T], inputs, gates)``: the sum of every layer's skip output (biases
        included), every layer's input ``h [B, C, T]`` and its gate halves
        ``[sigmoid(z[:C]); tanh(z[C:])]`` ``[B, 2C, T]``.
    """
    batch, channels, length = h0.shape
    n_layers = len(shape.dilations)
    spans = _spans(length, max(1, min(block_samples, length)))
    width = spans[0][1] - spans[0][0]
    col = h0.new_empty(shape.col_rows, width)
    g_buf = h0.new_empty(channels, width)
    skip = h0.new_zeros(batch, channels, length)
    inputs, gates = [h0], []
    h = h0
    for i in range(n_layers):
        last = i == n_layers - 1
        h_next = None if last else h0.new_empty(batch, channels, length)
        z_all = h0.new_empty(batch, 2 * channels, length)
        w_res, w_skip = w_out[i, :channels], w_out[i, channels:]
        b_res = b_out[i, :channels, None] * INV_SQRT2
        for b in range(batch):
            mel_b = None if mel is None else mel[b]
            for t0, t1 in spans:
                n = t1 - t0
                c = col[:, :n]
                _gather_col(c, shape, i, h[b], layer_bias[b, i], mel_b, t0, t1)
                z = z_all[b, :, t0:t1]
                torch.addmm(b_cat[i, :, None], w_cat[i], c, out=z)
                # In place: what is saved is [sigmoid(gate); tanh(filter)], so the backward
                # needs no transcendental functions.
                s, t, g = z[:channels], z[channels:], g_buf[:, :n]
                torch.sigmoid(s, out=s)
                torch.tanh(t, out=t)
                torch.mul(s, t, out=g)
                if h_next is not None:
                    dst = h_next[b, :, t0:t1]
                    torch.addmm(h[b, :, t0:t1], w_res, g, beta=INV_SQRT2, alpha=INV_SQRT2, out=dst)
                    dst.add_(b_res)
                skip[b, :, t0:t1].addmm_(w_skip, g)
        gates.append(z_all)
        if h_next is not None:
            inputs.append(h_next)
            h = h_next
    skip += b_out[:, channels:].sum(0)[:, None]
    return skip, inputs, gates


def stack_backward(
    shape: StackShape,
    grad_skip: Tensor,
    inputs: list[Tensor],
    gates: list[Tensor],
    layer_bias: Tensor,
    mel: Tensor | None,
    w_cat: Tensor,
    w_out: Tensor,
    *,
    block_samples: int = TRAIN_BLOCK_SAMPLES,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`stack_forward` given ``d loss / d skip``.

    Returns:
        ``(d_h0, d_layer_bias, d_mel, d_w_cat, d_b_cat, d_w_out, d_b_out)`` shaped like the
        inputs (``d_mel`` None without a mel).
    """
    batch, channels, length = grad_skip.shape
    n_layers = len(shape.dilations)
    spans = _spans(length, max(1, min(block_samples, length)))
    width = spans[0][1] - spans[0][0]
    new = grad_skip.new_empty
    col, dcol = new(shape.col_rows, width), new(shape.col_rows, width)
    g_buf, a_buf, b_buf = (new(channels, width) for _ in range(3))
    dy_buf, dz_buf = new(2 * channels, width), new(2 * channels, width)
    d_w_cat, d_w_out = torch.zeros_like(w_cat), torch.zeros_like(w_out)
    d_b_cat = grad_skip.new_zeros(n_layers, 2 * channels)
    d_b_out = grad_skip.new_zeros(n_layers, 2 * channels)
    d_bias = torch.zeros_like(layer_bias)
    d_mel = None if mel is None else torch.zeros_like(mel)
    mel_row = shape.kernel_size * channels
    d_h_next: Tensor | None = None  # d loss / d (input of layer i + 1)
    d_b_out[:, channels:] = grad_skip.sum((0, 2))
    for i in reversed(range(n_layers)):
        d_h = d_h_next * INV_SQRT2 if d_h_next is not None else torch.zeros_like(grad_skip)
        shifts = shape.shifts(i)
        # The last layer's residual half is never used: its rows of dy stay out of the products.
        rows = slice(channels, 2 * channels) if d_h_next is None else slice(0, 2 * channels)
        w_o = w_out[i, rows]
        for b in range(batch):
            h_b, z_b = inputs[i][b], gates[i][b]
            mel_b = None if mel is None else mel[b]
            for t0, t1 in spans:
                n = t1 - t0
                s, t = z_b[:channels, t0:t1], z_b[channels:, t0:t1]
                g, a, tmp = g_buf[:, :n], a_buf[:, :n], b_buf[:, :n]
                torch.mul(s, t, out=g)
                dy = dy_buf[:, :n]
                if d_h_next is not None:
                    torch.mul(d_h_next[b, :, t0:t1], INV_SQRT2, out=dy[:channels])
                dy[channels:].copy_(grad_skip[b, :, t0:t1])
                d_w_out[i, rows].addmm_(dy[rows], g.t())
                dg = g  # g is no longer needed once dW_out has it
                torch.mm(w_o.t(), dy[rows], out=dg)
                dz = dz_buf[:, :n]
                # d gate = dg t s (1 - s), d filter = dg s (1 - t^2), via a = dg s.
                torch.mul(dg, s, out=a)
                torch.mul(t, t, out=tmp)
                tmp.neg_().add_(1.0)
                torch.mul(a, tmp, out=dz[channels:])
                torch.sub(1.0, s, out=tmp)
                a.mul_(t)
                torch.mul(a, tmp, out=dz[:channels])
                _gather_col(col[:, :n], shape, i, h_b, layer_bias[b, i], mel_b, t0, t1)
                d_w_cat[i].addmm_(dz, col[:, :n].t())
                d_b_cat[i] += dz.sum(1)
                dc = dcol[:, :n]
                torch.mm(w_cat[i].t(), dz, out=dc)
                for k, shift in enumerate(shifts):
                    lo, hi = _valid(t0, t1, shift, length)
                    if hi > lo:
                        part = dc[k * channels : (k + 1) * channels, lo - t0 : hi - t0]
                        d_h[b, :, lo + shift : hi + shift] += part
                if d_mel is not None:
                    d_mel[b, :, t0:t1] += dc[mel_row:]
        # Per layer, not per block: the bias reaches the layer input wherever the conv reads
        # the signal, so its gradient is the time sum of the conv-input gradient, i.e. of d_h
        # less the residual path's share; the residual bias gets that share's time sum.
        d_conv_sum = d_h.sum(-1)  # [B, C]
        if d_h_next is not None:
            residual_sum = d_h_next.sum(-1) * INV_SQRT2
            d_conv_sum -= residual_sum
            d_b_out[i, :channels] = residual_sum.sum(0)
        d_bias[:, i] = d_conv_sum
        d_h_next = d_h
    return d_h_next, d_bias, d_mel, d_w_cat, d_b_cat, d_w_out, d_b_out


class FusedResidualStack(torch.autograd.Function):
    """Autograd wrapper of :func:`stack_forward` / :func:`stack_backward` (CPU, float32/64).

    ``apply(shape, block_samples, h0, layer_bias, mel, w_cat, b_cat, w_out, b_out) -> skip``.
    """

    @staticmethod
    def forward(ctx, shape, block_samples, h0, layer_bias, mel, w_cat, b_cat, w_out, b_out):
        skip, inputs, gates = stack_forward(
            shape, h0, layer_bias, mel, w_cat, b_cat, w_out, b_out, block_samples=block_samples
        )
        ctx.shape, ctx.block_samples = shape, block_samples
        ctx.has_mel = mel is not None
        ctx.save_for_backward(layer_bias, w_cat, w_out, *([mel] if mel is not None else []))
        # Activations made inside forward are plain tensors, not inputs: kept on ctx directly.
        ctx.inputs, ctx.gates = inputs, gates
        return skip

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_skip):
        layer_bias, w_cat, w_out, *rest = ctx.saved_tensors
        mel = rest[0] if ctx.has_mel else None
        grads = stack_backward(
            ctx.shape, grad_skip.contiguous(), ctx.inputs, ctx.gates, layer_bias, mel,
            w_cat, w_out, block_samples=ctx.block_samples,
        )  # fmt: skip
        d_h0, d_bias, d_mel, d_w_cat, d_b_cat, d_w_out, d_b_out = grads
        return None, None, d_h0, d_bias, d_mel, d_w_cat, d_b_cat, d_w_out, d_b_out


def fused_stack(
    layers: nn.ModuleList,
    h: Tensor,
    step: Tensor,
    label_bias: Tensor | None,
    mel: Tensor | None,
    *,
    channels: int,
    kernel_size: int,
    block_samples: int = TRAIN_BLOCK_SAMPLES,
) -> Tensor:
    """DiffWave's residual layers (:class:`audiodiff.model_blocks.ResidualBlock`) as one
    :class:`FusedResidualStack` call, in time blocks of ``block_samples``.

    Args:
        layers: the residual blocks (their ``dilated_conv``, ``diffusion_projection``,
            ``conditioner_projection`` and ``output_projection`` weights are stacked here).
        h: the input projection ``[B, C, T]``.
        step: the step embedding ``[B, step_mlp_dim]``.
        label_bias: every layer's label projection ``[B, layers, C]``, or None.
        mel: the upsampled mel ``[B or 1, n_mels, T]``, or None (unconditional).
        channels: residual channels ``C``.
        kernel_size: the dilated convolutions' kernel size.
        block_samples: time block of the kernel, in samples.

    Returns:
        The summed skips ``[B, C, T]``.
    """
    batch = h.shape[0]
    w_step = torch.stack([layer.diffusion_projection.weight for layer in layers])
    b_step = torch.stack([layer.diffusion_projection.bias for layer in layers])
    layer_bias = torch.einsum("lcs,bs->blc", w_step, step) + b_step  # [B, L, C]
    if label_bias is not None:
        layer_bias = layer_bias + label_bias
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
        channels=channels,
        kernel_size=kernel_size,
        dilations=tuple(layer.dilation for layer in layers),
        n_mels=0 if mel is None else mel.shape[1],
    )
    return FusedResidualStack.apply(
        shape,
        block_samples,
        h.contiguous(),
        layer_bias.expand(batch, -1, -1).contiguous(),
        mel,
        torch.stack(w_cat),
        torch.stack(b_cat),
        torch.stack([layer.output_projection.weight[:, :, 0] for layer in layers]),
        torch.stack([layer.output_projection.bias for layer in layers]),
    )
