"""Mel-consistency refinement (audiodiff.consistency): the windowed STFT it iterates with, mel
matching, Griffin-Lim from a given phase, and chunked refined synthesis equal to whole."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from audiodiff.config import mel_profile
from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.consistency import Refinement, griffin_lim_phase, match_mel
from audiodiff.griffin_lim import griffin_lim
from audiodiff.mel import MelSpectrogram, decompress_mel
from audiodiff.schedule import NoiseSchedule
from audiodiff.stft import profile_istft, profile_istft_window, profile_stft, profile_stft_window
from audiodiff.synthesis import make_sampling_spec
from audiodiff.vocoder import Vocoder
from tests.conftest import STFT_TINY, chirp_plus_noise, random_export


def _args(padding: str, n_fft: int = 256, hop: int = 64) -> dict:
    return {"n_fft": n_fft, "hop_length": hop, "win_length": n_fft, "padding": padding}


@pytest.mark.parametrize("padding", ["hifigan", "center"])
def test_window_stft_of_the_whole_signal_is_the_profile_stft(padding):
    args = _args(padding)
    x = torch.randn(2, 50 * 64, dtype=torch.float64)
    spec = profile_stft(x, **args)
    total = spec.shape[-1]
    audio = profile_istft_window(spec, first_frame=0, total_frames=total, start_frame=0,
                                 stop_frame=total, **args)  # fmt: skip
    again = profile_stft_window(audio, first_frame=0, n_frames=total, total_frames=total, **args)
    assert float((again - spec).abs().max()) < 1e-10


@pytest.mark.parametrize("padding", ["hifigan", "center"])
@pytest.mark.parametrize("first,n", [(10, 24), (26, 24)])  # an inner window, the last window
def test_window_stft_is_exact_away_from_inner_edges(padding, first, n):
    args = _args(padding)
    # An inconsistent spectrogram (random phase), as Griffin-Lim iterates on.
    mag = torch.rand(1, 129, 50, dtype=torch.float64)
    spec = torch.polar(mag, torch.rand_like(mag) * 6.28)
    whole = profile_stft(profile_istft(spec, **args), **args)
    audio = profile_istft_window(spec[..., first:first + n], first_frame=first, total_frames=50,
                                 start_frame=first, stop_frame=first + n, **args)  # fmt: skip
    got = profile_stft_window(audio, first_frame=first, n_frames=n, total_frames=50, **args)
    halo = 256 // 64
    lo = halo if first > 0 else 0
    hi = n - halo if first + n < 50 else n
    err = (got - whole[..., first : first + n]).abs().amax(dim=(0, 1))
    assert float(err[lo:hi].max()) < 1e-10
    assert float(err.max()) > 1e-3  # the inner edges really are wrong: the halo is needed


def test_window_stft_refuses_a_window_outside_the_utterance():
    with pytest.raises(ValueError, match="not inside"):
        profile_stft_window(torch.zeros(1, 640), first_frame=5, n_frames=10, total_frames=12,
                            **_args("hifigan"))  # fmt: skip


def test_match_mel_moves_a_wrong_envelope_to_the_mel_and_keeps_fine_structure():
    cfg = mel_profile("hifigan")
    mel_fn = MelSpectrogram(cfg)
    x = torch.as_tensor(chirp_plus_noise(22050, 0.5, seed=1))[None]
    target = decompress_mel(mel_fn(x), cfg).double()
    spec = profile_stft(x.double(), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                        win_length=cfg.win_length, padding=cfg.padding)  # fmt: skip
    frames = target.shape[-1]
    true_mag = spec.abs()[..., :frames]
    # The right fine structure under a wrong envelope: a 10 dB tilt across the bins.
    tilt = torch.logspace(0.5, -0.5, true_mag.shape[1], dtype=torch.float64)[:, None]
    basis = mel_fn.mel_basis.double()
    start = true_mag * tilt
    err = lambda m: float(((basis @ m) / target - 1).abs().median())  # noqa: E731
    fixed = match_mel(start, target, basis, power=cfg.power, iters=16)
    assert err(start) > 0.5 and err(fixed) < 0.05
    # Fine structure kept: within each bin, the fixed magnitude is close to the true one.
    covered = basis.sum(0) > 0
    ratio = (fixed / true_mag.clamp_min(1e-9))[:, covered]
    loud = true_mag[:, covered] > 0.1 * true_mag.max()
    assert float((ratio[loud].log().abs()).median()) < 0.2
    # Bins above f_max (8 kHz) keep their start: no band says anything about them.
    assert torch.equal(fixed[:, ~covered], start[:, ~covered])
    assert torch.equal(match_mel(start, target, basis, power=cfg.power, iters=0), start)


def test_match_mel_of_a_power_mel():
    cfg = dataclasses.replace(mel_profile("hifigan"), power=2.0)
    mel_fn = MelSpectrogram(cfg)
    x = torch.as_tensor(chirp_plus_noise(22050, 0.3, seed=2))[None]
    target = decompress_mel(mel_fn(x), cfg).double()
    basis = mel_fn.mel_basis.double()
    start = torch.ones(1, basis.shape[1], target.shape[-1], dtype=torch.float64)
    fixed = match_mel(start, target, basis, power=2.0, iters=200)
    rel = ((basis @ fixed.square()) / target - 1).abs()
    assert float(rel.median()) < 0.05


def test_griffin_lim_from_the_true_phase_stays_there_and_from_noise_improves():
    args = _args("hifigan")
    x = torch.as_tensor(chirp_plus_noise(16000, 0.4, seed=3)).double()[None, : 90 * 64]
    spec = profile_stft(x, **args)
    mag, phase = spec.abs(), spec / spec.abs().clamp_min(1e-12)
    total = spec.shape[-1]
    kw = {"first_frame": 0, "total_frames": total, "stft_args": args}
    kept = griffin_lim_phase(mag, phase, n_iter=4, **kw)
    assert float((mag * kept - spec).abs().max()) < 1e-6 * float(mag.max())

    def inconsistency(p):
        s = mag * p
        return float((profile_stft(profile_istft(s, **args), **args) - s).abs().norm() / s.norm())

    noisy = torch.polar(torch.ones_like(mag), torch.rand_like(mag) * 6.28)
    assert inconsistency(griffin_lim_phase(mag, noisy, n_iter=16, **kw)) < 0.6 * inconsistency(
        noisy
    )


def test_refinement_options_are_checked(tiny_config):
    with pytest.raises(ValueError, match=">= 0"):
        Refinement(-1, 0)
    with pytest.raises(ValueError, match="blend"):
        Refinement(magnitude_blend=1.5)
    with pytest.raises(ValueError, match="momentum"):
        Refinement(momentum=1.5)
    assert Refinement(magnitude_blend=0.5).active and not Refinement().active
    with pytest.raises(ValueError, match="magnitude_blend"):
        validate(apply_overrides(tiny_config, STFT_TINY + ["sample.magnitude_blend=-1"]))
    with pytest.raises(ValueError, match="model.domain 'stft'"):
        validate(apply_overrides(tiny_config, ["sample.magnitude_blend=0"]))
    assert Refinement(0, 0).halo_frames(1024, 256) == 0
    assert Refinement(3, 5).halo_frames(1024, 256) == 24
    assert Refinement(3, 0).halo_frames(1024, 256) == 4
    with pytest.raises(ValueError, match="model.domain 'stft'"):
        validate(apply_overrides(tiny_config, ["sample.griffin_lim_iters=4"]))
    with pytest.raises(ValueError, match=">= 0"):
        validate(apply_overrides(tiny_config, STFT_TINY + ["sample.mel_match_iters=-1"]))
    with pytest.raises(ValueError, match="stft-domain model"):
        make_sampling_spec(tiny_config, NoiseSchedule.from_config(tiny_config.diffusion),
                           griffin_lim_iters=2)  # fmt: skip


@pytest.fixture
def stft_vocoder(tiny_config, tmp_path):
    cfg = validate(apply_overrides(tiny_config, STFT_TINY))
    return Vocoder.from_pretrained(
        random_export(cfg, tmp_path / "stft.safetensors", output_std=0.05)
    )


@pytest.mark.parametrize("steps,blend", [(1, 1.0), (2, 1.0), (1, 0.25)])
def test_refined_chunked_synthesis_equals_whole(stft_vocoder, steps, blend):
    voc = stft_vocoder
    voc.config.sample.magnitude_blend = blend
    audio = np.concatenate([chirp_plus_noise(22050, 0.5, seed=s) for s in range(5)])
    mel = voc.mel(audio, 22050)
    frames = mel.shape[-1]
    kw = {"seed": 5, "sampler": "ddim", "steps": steps, "mel_match_iters": 4,
          "griffin_lim_iters": 6}  # fmt: skip
    refine_halo = (1 + 6) * 4
    assert voc.halo_samples(steps) + refine_halo < frames // 3  # the chunks really are cut
    whole = voc(mel, chunk_seconds=None, **kw)
    plain = voc(mel, seed=5, sampler="ddim", steps=steps, chunk_seconds=None)
    assert whole.shape == plain.shape and torch.isfinite(whole).all()
    assert float((whole - plain).abs().max()) > 1e-3  # the refinement did something
    chunked = voc(mel, chunk_seconds=25 * 256 / 22050, **kw)
    assert float((whole - chunked).abs().max()) <= 1e-5


def test_refinement_brings_the_output_mel_to_the_input_mel(stft_vocoder):
    """A random network's output is far from the mel; matching brings the output's own mel
    closer, and Griffin-Lim iterations (which make the matched STFT consistent) closer still."""
    voc = stft_vocoder
    mel = voc.mel(chirp_plus_noise(22050, 1.0, seed=7), 22050)
    mel_fn = MelSpectrogram(voc.mel_config)
    frames = mel.shape[-1]

    def mel_error(**refine):
        audio = voc(mel, seed=0, steps=1, sampler="ddim", **refine)
        return float((mel_fn(audio[:, 0])[..., :frames] - mel).abs().mean())

    plain = mel_error()
    matched = mel_error(mel_match_iters=16)
    refined = mel_error(mel_match_iters=16, griffin_lim_iters=16)
    assert matched < 0.7 * plain and refined < 0.8 * matched
    # From Griffin-Lim's own magnitude, the network's phase as the start: at least as close to
    # the mel as Griffin-Lim from a random phase with as many iterations.
    voc.config.sample.magnitude_blend = 0.0
    from_mel = mel_error(mel_match_iters=200, griffin_lim_iters=16)
    gl = griffin_lim(mel[0], voc.mel_config, n_iter=16)[None, None]
    assert from_mel < 0.8 * matched
    assert from_mel <= 1.1 * float((mel_fn(gl[:, 0])[..., :frames] - mel).abs().mean())


def test_magnitude_blend_ends_are_the_mel_estimate_and_the_matched_network_magnitude():
    from audiodiff.consistency import filterbank_inverse, refine_spectrum

    cfg = mel_profile("hifigan")
    mel_fn = MelSpectrogram(cfg)
    basis = mel_fn.mel_basis.double()
    x = torch.as_tensor(chirp_plus_noise(22050, 0.3, seed=4)).double()[None, : 25 * 256]
    target = decompress_mel(mel_fn(x.float()), cfg).double()
    frames = target.shape[-1]
    args = {"n_fft": cfg.n_fft, "hop_length": cfg.hop_length, "win_length": cfg.win_length,
            "padding": cfg.padding}  # fmt: skip
    # A consistent "network" spectrum (so the projection onto consistent STFTs keeps it).
    net = profile_stft(0.5 * x, **args)
    assert net.shape[-1] == frames
    kw = {"power": cfg.power, "first_frame": 0, "total_frames": frames, "stft_args": args}
    covered = basis.sum(0) > 0
    out0 = refine_spectrum(net, target, basis, Refinement(50, 0, magnitude_blend=0.0), **kw)
    want0 = filterbank_inverse(target, basis, power=cfg.power, iters=50)
    assert torch.allclose(out0.abs()[:, covered], want0[:, covered], rtol=1e-6, atol=1e-9)
    assert torch.allclose(out0.abs()[:, ~covered], net.abs()[:, ~covered], rtol=1e-6, atol=1e-9)
    out1 = refine_spectrum(net, target, basis, Refinement(50, 0, magnitude_blend=1.0), **kw)
    want1 = match_mel(net.abs(), target, basis, power=cfg.power, iters=50)
    assert torch.allclose(out1.abs(), want1, rtol=1e-6, atol=1e-9)
    half = refine_spectrum(net, target, basis, Refinement(50, 0, magnitude_blend=0.5), **kw)
    geo = (want0.clamp_min(1e-12) * want1.clamp_min(1e-12)).sqrt()
    assert torch.allclose(half.abs()[:, covered], geo[:, covered], rtol=1e-6, atol=1e-9)
    # The phase is the network's when no Griffin-Lim iteration runs.
    loud = net.abs() > 1e-3 * net.abs().max()
    assert torch.allclose((half / half.abs().clamp_min(1e-30))[loud],
                          (net / net.abs())[loud], atol=1e-6)  # fmt: skip


def test_call_overrides_turn_a_stored_refinement_off(stft_vocoder):
    voc = stft_vocoder
    mel = voc.mel(chirp_plus_noise(22050, 0.5, seed=8), 22050)
    plain = voc(mel, seed=1, steps=1)
    sample = voc.config.sample
    sample.mel_match_iters, sample.griffin_lim_iters, sample.magnitude_blend = 8, 4, 0.25
    refined = voc(mel, seed=1, steps=1)
    assert float((refined - plain).abs().max()) > 1e-3
    raw = voc(mel, seed=1, steps=1, mel_match_iters=0, griffin_lim_iters=0, magnitude_blend=1)
    assert torch.equal(raw, plain)
