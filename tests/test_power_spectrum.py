"""stft_power: the values of |torch.stft|^2 and the gradient autograd would take through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audiodiff.power_spectrum import stft_power
from audiodiff.stft import profile_stft, profile_stft_power


def reference_power(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, center: bool):
    spec = torch.stft(x, n_fft, hop, n_fft, window, center=center, return_complex=True)
    return spec.real**2 + spec.imag**2


@pytest.mark.parametrize(
    ("n_fft", "hop", "win", "center"),
    [(64, 16, 64, True), (64, 16, 48, False), (63, 20, 63, True), (32, 32, 32, False)],
)
def test_values_and_gradient_match_autograd_through_torch_stft(n_fft, hop, win, center):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 400, dtype=torch.float64, generator=gen, requires_grad=True)
    left = (n_fft - win) // 2
    window = F.pad(torch.hann_window(win, dtype=torch.float64), (left, n_fft - win - left))
    upstream = torch.randn(reference_power(x, n_fft, hop, window, center).shape, generator=gen,
                           dtype=torch.float64)  # fmt: skip

    ours = stft_power(x, n_fft=n_fft, hop_length=hop, window=window, center=center)
    ref = reference_power(x, n_fft, hop, window, center)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), x)
    (grad_ref,) = torch.autograd.grad((ref * upstream).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-10, atol=1e-10)


def test_gradcheck_on_dc_and_nyquist_heavy_frames():
    # A constant plus an alternating signal puts most energy in bins 0 and N/2, the two bins the
    # one-sided backward weights differently.
    n = torch.arange(80, dtype=torch.float64)
    x = (0.7 + 0.5 * (-1.0) ** n + 0.01 * torch.sin(0.3 * n)).unsqueeze(0).requires_grad_()
    window = torch.hann_window(16, dtype=torch.float64)

    def fn(signal):
        return stft_power(signal, n_fft=16, hop_length=4, window=window, center=True)

    assert torch.autograd.gradcheck(fn, (x,))


def test_profile_power_is_the_profile_stft_squared():
    x = torch.randn(2, 2048, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for padding, normalized in (("hifigan", False), ("center", True)):
        args = {"n_fft": 256, "hop_length": 64, "win_length": 200, "padding": padding,
                "normalized": normalized}  # fmt: skip
        spec = profile_stft(x, **args)
        torch.testing.assert_close(
            profile_stft_power(x, **args), spec.real**2 + spec.imag**2, rtol=1e-12, atol=1e-12
        )


def test_bad_inputs_are_refused_with_the_reason():
    window = torch.hann_window(64)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        stft_power(torch.zeros(1, 1, 100), n_fft=64, hop_length=16, window=window, center=True)
    with pytest.raises(ValueError, match="n_fft is 128"):
        stft_power(torch.zeros(1, 200), n_fft=128, hop_length=16, window=window, center=True)
    with pytest.raises(ValueError, match="too short to reflect-pad"):
        stft_power(torch.zeros(1, 32), n_fft=64, hop_length=16, window=window, center=True)
    with pytest.raises(ValueError, match="shorter than one frame"):
        stft_power(torch.zeros(1, 50), n_fft=64, hop_length=16, window=window, center=False)
