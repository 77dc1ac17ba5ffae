"""PriorGrad's data-dependent prior for waveform vocoders (Lee et al. 2022; ``model.prior: mel``
in the waveform domain): the frame RMS a mel implies, the whitening it gives, the exact round
trip, chunked synthesis, and the config rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from audiodiff.config import mel_profile
from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.domains import WAVEFORM_PRIOR_FLOOR, build_domain
from audiodiff.mel import MelSpectrogram, decompress_mel
from audiodiff.stft import mel_frame_rms
from audiodiff.vocoder import Vocoder

from .conftest import chirp_plus_noise, random_export

SR = 22050


def _estimate(x: torch.Tensor) -> torch.Tensor:
    m = mel_profile("hifigan")
    mel_fn = MelSpectrogram(m)
    magnitude = decompress_mel(mel_fn(x), m)
    basis = mel_fn.mel_basis.float()
    return mel_frame_rms(magnitude, basis, n_fft=m.n_fft, win_length=m.win_length)


def test_frame_rms_from_the_mel_reads_the_signal_level():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, SR, generator=g)
    t = torch.arange(SR) / SR
    sine = torch.sin(2 * np.pi * 220 * t)[None]
    # Measured 0.91 (noise) and 0.81 (sine) of the true RMS: band means under-read (docstring).
    assert 0.85 < float(_estimate(0.1 * noise).median()) / 0.1 < 0.97
    assert 0.75 < float(_estimate(0.5 * sine).median()) / (0.5 / np.sqrt(2)) < 0.9
    # A power mel (mel.power 2) averages |X|^2 inside each band: the noise's level exactly.
    m2 = dataclasses.replace(mel_profile("hifigan"), power=2.0)
    fn2 = MelSpectrogram(m2)
    est2 = mel_frame_rms(
        decompress_mel(fn2(0.1 * noise), m2), fn2.mel_basis.float(), n_fft=m2.n_fft,
        win_length=m2.win_length, power=2.0,
    )  # fmt: skip
    assert 0.95 < float(est2.median()) / 0.1 < 1.05
    # A level, so linear in the gain (away from the mel's log floor).
    ratio = _estimate(0.2 * noise) / _estimate(0.1 * noise)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 2.0), rtol=1e-3, atol=0)


def _prior_cfg(tiny_config):
    return validate(apply_overrides(tiny_config, ["model.prior=mel"]))


def test_priorgrad_whitens_loud_and_quiet_frames_alike_and_round_trips(tiny_config):
    domain = build_domain(_prior_cfg(tiny_config))
    g = torch.Generator().manual_seed(1)
    half = 256 * 40
    noise = torch.randn(1, 2 * half, generator=g)
    audio = torch.cat([0.3 * noise[:, :half], 0.03 * noise[:, half:]], dim=1)  # 20 dB apart
    mel = MelSpectrogram(mel_profile("hifigan"))(audio)
    x0 = domain.to_model(audio[:, None], mel)
    assert x0.shape == (1, 1, 2 * half)
    inner = slice(2048, half - 2048), slice(half + 2048, 2 * half - 2048)
    loud, quiet = (float(x0[..., s].std()) for s in inner)
    assert 0.9 < loud / quiet < 1.1  # the raw halves differ 10x
    assert 0.9 < loud < 1.3  # the estimate under-reads noise by ~0.91
    back = domain.from_model(x0, mel)
    torch.testing.assert_close(back, audio[:, None], rtol=1e-6, atol=1e-7)
    silence_std = domain.prior_std(MelSpectrogram(mel_profile("hifigan"))(torch.zeros(1, 4096)))
    assert torch.equal(silence_std, torch.full_like(silence_std, WAVEFORM_PRIOR_FLOOR))


def test_standard_prior_is_the_identity(tiny_config):
    domain = build_domain(tiny_config)
    audio = torch.from_numpy(chirp_plus_noise(SR, 0.2))[None, None]
    assert torch.equal(domain.to_model(audio, None), audio)
    assert domain.prior_std(None) == 1.0


@pytest.mark.parametrize("sampler,steps", [("diffwave-fast", 6), ("dpmpp-2m", 3)])
def test_priorgrad_vocoder_chunked_equals_whole_and_follows_the_level(
    tiny_config, tmp_path, sampler, steps
):
    voc = Vocoder.from_pretrained(
        random_export(_prior_cfg(tiny_config), tmp_path / "p.safetensors", output_std=0.0)
    )
    audio = torch.from_numpy(chirp_plus_noise(SR, 0.4, seed=2))
    mel = voc.mel(audio, SR)
    whole = voc(mel, seed=3, sampler=sampler, steps=steps, chunk_seconds=None)
    chunked = voc(mel, seed=3, sampler=sampler, steps=steps, chunk_seconds=1000 / SR)
    assert float((whole - chunked).abs().max()) <= 1e-5
    # A zero eps-network leaves the prior's noise in place, so the output is that noise times
    # the prior's per-sample scale: 20 dB quieter input, 20 dB quieter output.
    quiet = voc(voc.mel(0.1 * audio, SR), seed=3, sampler=sampler, steps=steps)
    ratio = float(quiet.std() / whole.std())
    assert 0.08 < ratio < 0.12


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.prior=mel", "model.conditioning=none"],
        ["model.prior=mel", "model.domain=mel", "model.conditioning=none"],
    ],
)
def test_mel_prior_needs_a_mel_conditioned_vocoder(tiny_config, overrides):
    with pytest.raises(ValueError, match="needs the conditioning mel"):
        validate(apply_overrides(tiny_config, overrides))
