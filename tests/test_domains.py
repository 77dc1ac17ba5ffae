"""Domains (DESIGN §12): the profile STFT pair, the stft domain's exact round trip and mel-shaped
prior, the frame-rate network, chunked stft synthesis equal to whole-utterance synthesis, and a
few training steps in the stft domain."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from audiodiff.config import mel_profile
from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.domains import StftDomain, build_domain
from audiodiff.mel import MelSpectrogram
from audiodiff.model import DiffWave
from audiodiff.stft import mel_to_linear_envelope, profile_istft, profile_stft
from audiodiff.vocoder import Vocoder

from .conftest import STFT_TINY, chirp_plus_noise, manifest_overrides, random_export


def _stft_cfg(tiny_config, *extra: str):
    return validate(apply_overrides(tiny_config, STFT_TINY + list(extra)))


@pytest.mark.parametrize(
    "profile,padding,win",
    [("hifigan", "hifigan", None), ("16k-200", "hifigan", None), ("hifigan", "center", 800)],
)
def test_profile_istft_inverts_profile_stft(profile, padding, win):
    m = dataclasses.replace(mel_profile(profile), padding=padding)
    if win is not None:
        m = dataclasses.replace(m, win_length=win)
    args = dict(n_fft=m.n_fft, hop_length=m.hop_length, win_length=m.win_length, padding=padding)
    x = torch.from_numpy(chirp_plus_noise(m.sample_rate, 0.3, seed=1)).double()
    x = x[: x.shape[0] // m.hop_length * m.hop_length].unsqueeze(0)
    spec = profile_stft(x, **args)
    expected_frames = x.shape[-1] // m.hop_length + (padding == "center")
    assert spec.shape == (1, m.n_fft // 2 + 1, expected_frames)
    y = profile_istft(spec, **args)
    assert y.shape == x.shape
    assert float((y - x).abs().max()) < 1e-12


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_stft_domain_round_trip_is_exact(tiny_config, dtype, tol):
    cfg = _stft_cfg(tiny_config)
    domain = build_domain(cfg)
    assert isinstance(domain, StftDomain) and domain.channels == 1026 and domain.frame_rate
    mel_fn = MelSpectrogram(cfg.mel).to(dtype)
    audio = torch.stack(
        [torch.from_numpy(chirp_plus_noise(22050, 0.4, seed=s)[: 34 * 256]) for s in (0, 1)]
    )
    audio = audio.to(dtype).unsqueeze(1)  # [2, 1, 8704]
    # A stretch of exact digital silence: magnitudes below the compression's floor.
    audio[1, :, 2000:4000] = 0
    mel = mel_fn(audio)
    x0 = domain.to_model(audio, mel)
    assert x0.shape == (2, 1026, 34) and x0.dtype == dtype
    back = domain.from_model(x0, mel)
    assert back.shape == audio.shape
    assert float((back - audio).abs().max()) <= tol


def test_compression_is_the_power_law_with_phase_kept(tiny_config):
    domain = build_domain(_stft_cfg(tiny_config))
    spec = torch.tensor([[4.0 + 3.0j, 1e-6 + 0j, -9.0 + 0j]], dtype=torch.complex128)
    c = domain.compress(spec)
    # |4+3i| = 5 -> sqrt(5), same angle; -9 -> -3; below the 1e-3 floor the map is linear.
    expected = torch.tensor(
        [[(4.0 + 3.0j) / 5 * math.sqrt(5), 1e-6 * 1e-3**-0.5 + 0j, -3.0 + 0j]],
        dtype=torch.complex128,
    )
    assert torch.allclose(c, expected)
    assert torch.allclose(domain.decompress(c), spec)


def test_envelope_of_white_noise_is_flat_at_its_mean_magnitude():
    m = mel_profile("hifigan")
    mel_fn = MelSpectrogram(m).double()
    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(1, 256 * 400, generator=gen, dtype=torch.float64)
    magnitude = profile_stft(
        x, n_fft=m.n_fft, hop_length=m.hop_length, win_length=m.win_length, padding=m.padding
    ).abs()
    envelope = mel_to_linear_envelope(mel_fn(x).exp(), mel_fn.mel_basis)
    assert envelope.shape == magnitude.shape
    per_bin = envelope.mean(dim=-1)[0]
    true_mean = float(magnitude[0, 5:370].mean())  # bins inside the 0..8 kHz filterbank
    assert float((per_bin[5:370] / true_mean - 1).abs().max()) < 0.1
    # Above f_max (8 kHz, bin 372) the envelope holds the top band's value.
    assert torch.allclose(per_bin[400:], per_bin[400].expand(per_bin[400:].shape))
    # A power mel (power 2) gives each band's RMS magnitude (measured within 7% of the true RMS
    # in every bin); read as a magnitude mel, as before `power`, it came out 2.2x too loud.
    power_fn = MelSpectrogram(dataclasses.replace(m, power=2.0)).double()
    power_env = mel_to_linear_envelope(power_fn(x).exp(), power_fn.mel_basis, power=2.0)
    true_rms = float(magnitude[0, 5:370].square().mean().sqrt())
    per_bin = power_env.square().mean(dim=-1)[0].sqrt()
    assert float((per_bin[5:370] / true_rms - 1).abs().max()) < 0.1


def test_mel_prior_whitens_speech_like_spectra(tiny_config):
    """A loud low band and a quiet high band (40 dB apart) come out at about unit variance in both
    bands under the mel prior; under the standard prior their variances stay 100x apart."""
    cfg = _stft_cfg(tiny_config)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(1, 256 * 300, generator=gen, dtype=torch.float64)
    spec = torch.fft.rfft(noise)
    freqs = torch.fft.rfftfreq(noise.shape[-1], 1 / 22050)
    spec = spec * torch.where(freqs < 2000, 0.3, 0.003)
    audio = torch.fft.irfft(spec, n=noise.shape[-1]).unsqueeze(1)
    mel = MelSpectrogram(cfg.mel).double()(audio)
    ratios = {}
    for prior in ("mel", "standard"):
        domain = build_domain(
            dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, prior=prior))
        )
        x0 = domain.to_model(audio, mel)
        var = x0.square().mean(dim=-1)[0]  # [1026]
        low, high = float(var[10:80].mean()), float(var[150:350].mean())
        ratios[prior] = low / high
        if prior == "mel":
            assert 0.5 < low < 2.0 and 0.5 < high < 2.0
    assert 0.5 < ratios["mel"] < 2.0
    # 40 dB of magnitude is 20 dB after the square-root compression: a variance ratio of 100.
    assert 50 < ratios["standard"] < 200


def test_frame_rate_network_has_no_upsampler_and_takes_the_mel_per_frame(tiny_config):
    cfg = _stft_cfg(tiny_config)
    net = DiffWave.from_config(cfg, generator=torch.Generator().manual_seed(0))
    assert net.spectrogram_upsampler is None and net.in_channels == 1026
    assert net.conditioner_halo_frames() == 0
    torch.nn.init.normal_(net.output_projection.weight, std=0.3)
    x = torch.randn(2, 1026, 12)
    mel = torch.randn(2, 80, 12)
    out = net(x, torch.tensor([3.0, 40.5]), cond=mel)
    assert out.shape == x.shape
    # Frame-rate conditioning: changing the mel of the last frame changes only frames within
    # the receptive radius of it.
    mel2 = mel.clone()
    mel2[..., -1] += 1.0
    out2 = net(x, torch.tensor([3.0, 40.5]), cond=mel2)
    radius = (net.receptive_field() - 1) // 2
    changed = (out2 - out).abs().amax(dim=(0, 1)) > 0
    assert bool(changed[-1]) and not bool(changed[: 12 - 1 - radius].any())
    with pytest.raises(ValueError, match="80"):
        net(x, torch.tensor([3.0, 4.0]), cond=torch.randn(2, 100, 12))


def test_stft_config_rules(tiny_config):
    with pytest.raises(ValueError, match="conditioning must be 'mel'"):
        validate(apply_overrides(tiny_config, ["model.domain=stft", "model.conditioning=none"]))
    with pytest.raises(ValueError, match="ln-compressed"):
        validate(apply_overrides(tiny_config, ["model.domain=stft", "mel.compression=diffwave-db"]))
    with pytest.raises(ValueError, match="needs the conditioning mel"):
        validate(apply_overrides(tiny_config, ["model.prior=mel", "model.conditioning=none"]))
    with pytest.raises(ValueError, match="stft_compression"):
        validate(apply_overrides(tiny_config, ["model.domain=stft", "model.stft_compression=0"]))


@pytest.fixture
def stft_vocoder(tiny_config, tmp_path):
    cfg = _stft_cfg(tiny_config)
    return Vocoder.from_pretrained(
        random_export(cfg, tmp_path / "stft.safetensors", output_std=0.05)
    )


@pytest.mark.parametrize("sampler,steps", [("dpmpp-2m", 4), ("ddim", 3), ("ddim", 1)])
def test_stft_chunked_equals_whole_utterance(stft_vocoder, sampler, steps):
    voc = stft_vocoder
    audio = np.concatenate([chirp_plus_noise(22050, 0.5, seed=s) for s in range(4)])
    mel = voc.mel(audio, 22050)  # 172 frames
    frames = mel.shape[-1]
    assert voc.halo_samples(steps) < frames // 2  # halos in frames; the chunks really are cut
    whole = voc(mel, seed=5, sampler=sampler, steps=steps, chunk_seconds=None)
    assert whole.shape == (1, 1, frames * 256) and torch.isfinite(whole).all()
    chunked = voc(mel, seed=5, sampler=sampler, steps=steps, chunk_seconds=20 * 256 / 22050)
    assert float((whole - chunked).abs().max()) <= 1e-5


def test_stft_vocoder_noise_is_shaped_by_the_mel(tiny_config, tmp_path):
    """With a zero network output the sampler returns its (whitened) start noise scaled down to
    the last sigma; decoded, its spectrum follows the conditioning mel: the mel prior at work."""
    cfg = _stft_cfg(tiny_config, "sample.steps=1", "sample.sampler=ddim")
    voc = Vocoder.from_pretrained(random_export(cfg, tmp_path / "z.safetensors", output_std=0))
    audio = chirp_plus_noise(22050, 1.0, seed=3)
    mel = voc.mel(audio, 22050)
    out = voc(mel, seed=0)
    # v = 0 -> x0_hat = x / (1 + sigma^2): one DDIM step from sigma_max returns almost 0, and its
    # mel is far below the input's. The check that matters: the output is finite and its
    # spectral shape (mel minus its mean over bins) correlates with the input's.
    got = MelSpectrogram(cfg.mel)(out[:, 0] / out.abs().max())
    ref = mel - mel.mean(dim=1, keepdim=True)
    shape = got - got.mean(dim=1, keepdim=True)
    corr = float(torch.corrcoef(torch.stack([ref.flatten(), shape.flatten()]))[0, 1])
    assert corr > 0.5


def test_stft_training_steps_and_evaluation(tmp_path, tiny_config, manifests):
    from audiodiff.train import Trainer
    from audiodiff.train_eval import evaluate

    cfg = _stft_cfg(
        tiny_config, *manifest_overrides(manifests), "train.max_steps=3", "train.lr=1e-3"
    )
    trainer = Trainer(cfg, tmp_path / "run", log=lambda _: None)
    x0, cond, _ = trainer.model_inputs(next(trainer.batches()))
    assert x0.shape == (2, 1026, 8) and cond.shape == (2, 80, 8)
    result = trainer.train()
    assert result.step == 3 and math.isfinite(result.last_loss or 0.0)
    stats = evaluate(trainer)
    assert {"val_loss", "log_mel_l1", "mr_stft"} <= stats.keys()
    assert all(math.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("padding", ["hifigan", "center"])
def test_istft_window_pieces_equal_the_whole_inverse(padding):
    """Chunked decoding: pieces of frames [s0, s1) from windows with ceil(n_fft / hop) frames of
    context (cut at the utterance's edges) concatenate to the whole inverse STFT."""
    from audiodiff.stft import profile_istft_window

    args = dict(n_fft=1024, hop_length=256, win_length=1024, padding=padding)
    x = torch.from_numpy(chirp_plus_noise(22050, 0.5, seed=4)).double()[None, : 40 * 256]
    spec = profile_stft(x, **args)
    total = spec.shape[-1]
    whole = profile_istft(spec, **args)
    halo = 4
    pieces = []
    for s0 in range(0, total, 7):
        s1 = min(total, s0 + 7)
        e0, e1 = max(0, s0 - halo), min(total, s1 + halo)
        piece = profile_istft_window(
            spec[..., e0:e1], first_frame=e0, total_frames=total, start_frame=s0, stop_frame=s1,
            **args,
        )  # fmt: skip
        pieces.append(piece)
    joined = torch.cat(pieces, dim=-1)
    assert joined.shape == whole.shape
    assert float((joined - whole).abs().max()) < 1e-12
    with pytest.raises(ValueError, match="not inside the window"):
        profile_istft_window(
            spec[..., 5:10], first_frame=5, total_frames=total, start_frame=3, stop_frame=8, **args
        )


def test_subband_fold_is_a_lossless_regrouping_and_bands_share_weights(tiny_config):
    from audiodiff.subband import SubbandDiffWave, build_network

    cfg = _stft_cfg(tiny_config, "model.bands=4")
    net = build_network(cfg, generator=torch.Generator().manual_seed(0))
    assert isinstance(net, SubbandDiffWave) and net.band_bins == 129  # ceil(513 / 4)
    x = torch.randn(2, 1026, 5)
    folded = net.fold(x)
    assert folded.shape == (8, 258, 5)
    assert torch.equal(net.unfold(folded), x)
    # Band 1 of item 0 holds bins 129..257 of the real part, then the same of the imaginary part.
    assert torch.equal(folded[1, :129], x[0, 129:258]) and torch.equal(
        folded[1, 129:], x[0, 642:771]
    )
    torch.nn.init.normal_(net.net.output_projection.weight, std=0.3)
    mel = torch.randn(2, 80, 5)
    out = net(x, torch.tensor([2.0, 7.0]), cond=mel)
    assert out.shape == x.shape
    prepared = net.prepare(mel)
    assert torch.allclose(net.denoise_step(x, torch.tensor([2.0, 7.0]), prepared), out, atol=1e-5)
    with pytest.raises(ValueError, match="only for model.domain 'stft'"):
        validate(apply_overrides(tiny_config, ["model.bands=4"]))


def test_subband_stft_vocoder_chunked_equals_whole(tiny_config, tmp_path):
    cfg = _stft_cfg(tiny_config, "model.bands=8")
    voc = Vocoder.from_pretrained(random_export(cfg, tmp_path / "sb.safetensors", output_std=0.05))
    mel = voc.mel(np.concatenate([chirp_plus_noise(22050, 0.5, seed=s) for s in range(3)]), 22050)
    whole = voc(mel, seed=2, steps=3, chunk_seconds=None)
    chunked = voc(mel, seed=2, steps=3, chunk_seconds=20 * 256 / 22050)
    assert whole.shape == (1, 1, mel.shape[-1] * 256)
    assert float((whole - chunked).abs().max()) <= 1e-5
