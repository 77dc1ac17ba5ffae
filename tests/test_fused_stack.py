"""The fused CPU training kernel of the residual stack (audiodiff/kernels/fused.py).

Gradients are checked against finite differences in float64 (``gradcheck``) on tiny stacks whose
time blocks are shorter than the dilations and do not divide the length, so every tap crosses
block edges and the signal ends; the DiffWave path is checked against the eager stack.
"""

from __future__ import annotations

import pytest
import torch

from audiodiff.config import ModelConfig
from audiodiff.kernels.fused import FusedResidualStack, StackShape, stack_forward
from audiodiff.model import DiffWave


def _stack_inputs(shape: StackShape, batch: int, length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n_layers, c = len(shape.dilations), shape.channels

    def rand(*size, scale=0.5):
        return (scale * torch.randn(*size, generator=g, dtype=torch.float64)).requires_grad_()

    mel = rand(batch, shape.n_mels, length) if shape.n_mels else None
    return (
        rand(batch, c, length),
        rand(batch, n_layers, c),
        mel,
        rand(n_layers, 2 * c, shape.col_rows),
        rand(n_layers, 2 * c),
        rand(n_layers, 2 * c, c),
        rand(n_layers, 2 * c),
    )


@pytest.mark.parametrize(
    ("kernel", "n_mels", "block"),
    [(3, 2, 5), (3, 0, 4), (5, 1, 7), (3, 2, 1000)],
)
def test_gradients_match_finite_differences(kernel, n_mels, block):
    shape = StackShape(channels=2, kernel_size=kernel, dilations=(1, 4, 8), n_mels=n_mels)
    inputs = _stack_inputs(shape, batch=2, length=17)
    present = [t for t in inputs if t is not None]

    def run(*tensors):
        it = iter(tensors)
        args = [next(it) if t is not None else None for t in inputs]
        return FusedResidualStack.apply(shape, block, *args)

    assert torch.autograd.gradcheck(run, present, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_saved_gates_are_the_sigmoid_and_tanh_halves():
    """What the forward keeps for the backward: every layer's input and [sigmoid; tanh] gates."""
    shape = StackShape(channels=4, kernel_size=3, dilations=(1, 2, 4, 1, 2), n_mels=3)
    with torch.no_grad():
        inputs = [t.detach() if t is not None else None for t in _stack_inputs(shape, 3, 23)]
        skip, h, gates = stack_forward(shape, *inputs, block_samples=6)
    assert skip.shape == (3, 4, 23)
    assert len(h) == len(gates) == 5 and torch.equal(h[0], inputs[0])
    assert all(0 < float(g[:, :4].min()) and float(g[:, 4:].abs().max()) < 1 for g in gates)


def _net(**model) -> DiffWave:
    cfg = ModelConfig(residual_channels=8, residual_layers=6, dilation_cycle=3, **model)
    net = DiffWave(cfg, n_mels=5, hop_length=16, n_steps=50)
    with torch.no_grad():
        for p in net.parameters():  # away from the zero-output init, so every gradient is live
            p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    return net


@pytest.mark.parametrize(
    "model",
    [{}, {"n_labels": 3}, {"conditioning": "none"}, {"domain": "mel", "conditioning": "none"}],
)
def test_diffwave_fused_training_matches_eager(model, monkeypatch):
    net = _net(**model)
    batch, frames = 3, 9
    x = torch.randn(batch, net.in_channels, frames * 16, generator=torch.Generator().manual_seed(1))
    # Seeded inputs: the two paths round differently (~1e-7), so an unlucky draw puts a ReLU
    # pre-activation within rounding of 0 and its gradient flips between them (measured: 1 draw in
    # 40 moved some gradients by up to 9% of their scale, outputs still within 6e-7). Unseeded,
    # this test failed now and then (CI, 2026-11-30).
    draw = torch.Generator().manual_seed(2)
    mel = (
        torch.randn(batch, 5, frames, generator=draw)
        if net.spectrogram_upsampler is not None
        else None
    )
    label = torch.tensor([0, 3, 2]) if net.n_labels else None
    c_noise = torch.tensor([0.0, 12.5, 49.0])
    weight = torch.randn(x.shape, generator=draw)
    # A small block so the test crosses block edges like a long crop does.
    net.train_block_samples = 37
    calls = []
    real_apply = FusedResidualStack.apply
    monkeypatch.setattr(FusedResidualStack, "apply", lambda *a: calls.append(1) or real_apply(*a))

    def grads(backend):
        net.zero_grad()
        out = net(x, c_noise, mel, label, backend=backend)
        (out * weight).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}

    out_e, grads_e = grads("eager")
    assert not calls
    out_f, grads_f = grads("auto")  # the default on a CPU with gradients on
    assert calls == [1]
    torch.testing.assert_close(out_f, out_e, rtol=1e-5, atol=1e-5)
    for name, g in grads_e.items():
        scale = float(g.abs().max()) + 1e-12
        err = float((grads_f[name] - g).abs().max())
        assert err <= 1e-4 * scale, f"{name}: {err:.2e} vs gradient scale {scale:.2e}"


def test_inference_and_opt_out_skip_the_fused_kernel(monkeypatch):
    net = _net()
    x, mel = torch.randn(1, 1, 64), torch.randn(1, 5, 4)
    monkeypatch.setattr(FusedResidualStack, "apply", None)  # any call would fail
    with torch.no_grad():
        net(x, torch.tensor([3.0]), mel)
    net.fused_training = False
    net(x, torch.tensor([3.0]), mel).sum().backward()
