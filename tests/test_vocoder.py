"""The Vocoder API: rebuilt from stored config, mel convention checks, chunked long-form synthesis
equal to whole-utterance synthesis, and export -> from_pretrained reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiodiff.config_io import apply_overrides
from audiodiff.mel import MelSpectrogram
from audiodiff.synthesis import positional_noise
from audiodiff.vocoder import Vocoder

from .conftest import chirp_plus_noise, random_export


@pytest.fixture
def vocoder(tiny_config, tmp_path):
    return Vocoder.from_pretrained(random_export(tiny_config, tmp_path / "v.safetensors"))


def _mel(vocoder, seconds=0.3, seed=0):
    audio = chirp_plus_noise(vocoder.sample_rate, seconds, seed)
    return vocoder.mel(audio, vocoder.sample_rate)


def test_rebuilt_from_stored_config(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config, ["model.residual_layers=3", "model.residual_channels=6"])
    voc = Vocoder.from_pretrained(random_export(cfg, tmp_path / "a.safetensors"))
    assert len(voc.net.residual_layers) == 3 and voc.net.residual_channels == 6
    assert (voc.sample_rate, voc.hop_length, voc.n_mels) == (22050, 256, 80)


def test_output_length_and_rank(vocoder):
    mel = _mel(vocoder)
    audio = vocoder(mel, seed=1)
    assert audio.shape == (1, 1, mel.shape[-1] * vocoder.hop_length)
    assert torch.isfinite(audio).all()
    batch = vocoder(torch.cat([mel, mel]), seed=1)
    assert batch.shape == (2, 1, mel.shape[-1] * vocoder.hop_length)
    # A clip's noise does not depend on its batch (only GEMM blocking rounding differs).
    assert torch.allclose(batch[:1], audio, atol=1e-5)
    unbatched = vocoder(mel[0].numpy(), seed=1)  # [n_mels, frames] NumPy input
    assert torch.equal(unbatched, audio)


def test_fixed_seed_reproduces_and_generator_is_honoured(vocoder):
    mel = _mel(vocoder)
    a = vocoder(mel, generator=torch.Generator().manual_seed(3))
    b = vocoder(mel, generator=torch.Generator().manual_seed(3))
    c = vocoder(mel, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("sampler,steps", [("diffwave-fast", 6), ("ddim", 3), ("dpmpp-2m", 4)])
def test_chunked_equals_whole_utterance(vocoder, sampler, steps):
    mel = _mel(vocoder, seconds=0.4)
    n = mel.shape[-1] * vocoder.hop_length
    assert vocoder.halo_samples(steps) < n  # the chunks really are cut inside the utterance
    whole = vocoder(mel, seed=7, sampler=sampler, steps=steps, chunk_seconds=None)
    chunk_s = 1000 / vocoder.sample_rate  # 9 chunks of 1000 samples, the last one shorter
    chunked = vocoder(mel, seed=7, sampler=sampler, steps=steps, chunk_seconds=chunk_s)
    assert float((whole - chunked).abs().max()) <= 1e-5


def test_positional_noise_independent_of_window():
    whole = positional_noise(5, 2, 0, 10_000, (2, 1))
    part = positional_noise(5, 2, 3_000, 9_000, (2, 1))
    assert torch.equal(whole[..., 3_000:9_000], part)
    assert not torch.equal(positional_noise(5, 3, 0, 100, (1, 1)), whole[:1, :, :100])


def test_refuses_wrong_bins_range_and_rank(vocoder):
    mel = _mel(vocoder)
    with pytest.raises(ValueError, match=r"mel has 100 bins but this vocoder expects 80"):
        vocoder(torch.zeros(1, 100, 10) - 3)
    zero_one = (mel - mel.min()) / (mel.max() - mel.min())
    with pytest.raises(ValueError, match=r"0\.\.1.*diffwave.*expects profile 'hifigan'"):
        vocoder(zero_one)
    with pytest.raises(ValueError, match=r"values span"):
        vocoder(mel + 40.0)
    with pytest.raises(ValueError, match=r"\[n_mels, frames\] or \[batch, n_mels, frames\]"):
        vocoder(mel[0, 0])
    with pytest.raises(ValueError, match=r"NaN"):
        vocoder(torch.full_like(mel, float("nan")))


def test_diffwave_profile_refuses_ln_mels(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config, ["mel.name=diffwave"])
    voc = Vocoder.from_pretrained(random_export(cfg, tmp_path / "d.safetensors"))
    ln_mel = MelSpectrogram(tiny_config.mel)(torch.from_numpy(chirp_plus_noise())[None])
    with pytest.raises(ValueError, match=r"ln-compressed.*expects profile 'diffwave'"):
        voc(ln_mel)


def test_mel_resamples_input(vocoder):
    audio = chirp_plus_noise(44100, 0.5)
    mel = vocoder.mel(audio, 44100)
    assert mel.shape[-1] == vocoder._mel.n_frames(int(round(0.5 * 22050)))
    assert np.isfinite(mel.numpy()).all()
