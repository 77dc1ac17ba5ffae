"""Griffin-Lim mel inversion: lengths, finiteness, batching, and quality against random phase."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiodiff.config import mel_profile
from audiodiff.griffin_lim import griffin_lim, mel_basis, mel_to_linear
from audiodiff.mel import MelSpectrogram, decompress_mel
from audiodiff.metrics import log_mel_l1, mr_stft_distance


def harmonic(sample_rate: int, duration_s: float = 0.5, f0_hz: float = 150.0) -> torch.Tensor:
    """Harmonics below 7 kHz of an F0 with 10 % vibrato, amplitude-modulated at 3 Hz: [T]."""
    t = np.arange(int(sample_rate * duration_s)) / sample_rate
    f0 = f0_hz * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, int(7000 / f0_hz)))
    x = x * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t))
    return torch.tensor(0.3 * x / np.abs(x).max(), dtype=torch.float32)


@pytest.mark.parametrize("profile", ["hifigan", "diffwave"])
def test_griffin_lim_beats_random_phase(profile):
    # Measured (this 0.5 s clip, 64 iterations, seed 0): MR-STFT to the original, Griffin-Lim
    # vs random phase: hifigan 0.809 vs 1.441 (ratio 0.56), diffwave 0.803 vs 1.504 (0.53).
    # Log-mel L1 of the re-analysed output: hifigan 0.146 vs 0.734 nepers (0.20), diffwave
    # 0.0133 vs 0.0618 on its [0, 1] = 100 dB scale (0.21).
    cfg = mel_profile(profile)
    x = harmonic(cfg.sample_rate)
    mel_fn = MelSpectrogram(cfg)
    mel = mel_fn(x[None])
    frames = mel.shape[-1]
    expected = frames * cfg.hop_length if profile == "hifigan" else (frames - 1) * cfg.hop_length
    gl = griffin_lim(mel, cfg)
    random_phase = griffin_lim(mel, cfg, n_iter=0)
    assert gl.shape == random_phase.shape == (1, expected)
    assert torch.isfinite(gl).all()
    n = expected
    d_gl = float(mr_stft_distance(x[:n], gl[0]))
    d_random = float(mr_stft_distance(x[:n], random_phase[0]))
    assert d_gl < 0.65 * d_random, (d_gl, d_random)
    mel64 = MelSpectrogram(cfg).double()
    err_gl = float(log_mel_l1(x[:n], gl[0], mel64))
    err_random = float(log_mel_l1(x[:n], random_phase[0], mel64))
    assert err_gl < 0.3 * err_random, (err_gl, err_random)


def test_output_length_of_other_hops_and_leading_dims():
    cfg = mel_profile("16k-200")
    mel = MelSpectrogram(cfg)(harmonic(cfg.sample_rate, 0.3)[None])
    out = griffin_lim(mel[0], cfg, n_iter=2)
    assert out.shape == (mel.shape[-1] * 200,)


def test_batch_items_are_independent():
    cfg = mel_profile("hifigan")
    a, b = harmonic(22050, 0.4), harmonic(22050, 0.4, 220.0)
    mel_fn = MelSpectrogram(cfg)
    out_ab = griffin_lim(mel_fn(torch.stack([a, b])), cfg, n_iter=8)
    out_aa = griffin_lim(mel_fn(torch.stack([a, a])), cfg, n_iter=8)
    # Same batch shape and seed, so item 0 starts from the same phase: it must not see item 1.
    # (Against an unbatched call only a loose match is possible: phases of near-silent bins are
    # set by rounding, which batched FFTs do differently, and the iteration amplifies it.)
    assert torch.equal(out_ab[0], out_aa[0])
    assert not torch.equal(out_ab[1], out_aa[1])


def test_random_phase_is_reproducible_from_a_generator():
    cfg = mel_profile("hifigan")
    mel = MelSpectrogram(cfg)(harmonic(22050, 0.3)[None])
    a = griffin_lim(mel, cfg, n_iter=2, generator=torch.Generator().manual_seed(3))
    b = griffin_lim(mel, cfg, n_iter=2, generator=torch.Generator().manual_seed(3))
    c = griffin_lim(mel, cfg, n_iter=2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_filterbank_inverse_is_non_negative_and_consistent():
    cfg = mel_profile("hifigan")
    mel_linear = decompress_mel(MelSpectrogram(cfg)(harmonic(22050, 0.3)[None]), cfg)
    magnitude = mel_to_linear(mel_linear, cfg)
    assert magnitude.shape == (1, cfg.n_fft // 2 + 1, mel_linear.shape[-1])
    assert (magnitude >= 0).all()
    # Re-applying the filterbank gives back the mel it was fitted to (measured: 0.075 % error).
    rebuilt = mel_basis(cfg) @ magnitude
    assert float((rebuilt - mel_linear).norm() / mel_linear.norm()) < 0.01


def test_rejects_a_mel_of_another_profile():
    mel = torch.zeros(1, 100, 20)
    with pytest.raises(ValueError, match="has 100 bands but profile 'hifigan' expects"):
        griffin_lim(mel, mel_profile("hifigan"))
    with pytest.raises(ValueError, match="NaN"):
        griffin_lim(torch.full((1, 80, 20), float("nan")), mel_profile("hifigan"))
