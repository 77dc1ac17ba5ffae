"""Issue 20's levers: sampling from a DSP estimate (model.start: estimate) and training for that
start, the anti-wrapping phase losses on known signals, the consistency loss, and fine-tuning
from existing weights (train.init_from)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiodiff.config import ExperimentConfig
from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.diffusion import start_training_loss
from audiodiff.domains import build_domain
from audiodiff.mel import MelSpectrogram
from audiodiff.phase_loss import anti_wrap, phase_losses
from audiodiff.schedule import NoiseSchedule
from audiodiff.vocoder import Vocoder

from .conftest import STFT_TINY, chirp_plus_noise, manifest_overrides, random_export

ESTIMATE = ["model.start=estimate", "model.estimate_griffin_lim_iters=3", "sample.steps=1"]


def _cfg(tiny_config, *extra: str):
    return validate(apply_overrides(tiny_config, STFT_TINY + ESTIMATE + list(extra)))


def _spectrum(seed: int = 0, shape=(2, 33, 20)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))


def test_anti_wrap_is_the_distance_on_the_circle():
    x = torch.tensor([0.0, 2 * math.pi, -2 * math.pi, 0.5, 0.5 + 2 * math.pi, math.pi - 0.1])
    assert torch.allclose(anti_wrap(x), torch.tensor([0, 0, 0, 0.5, 0.5, math.pi - 0.1]), atol=1e-5)


def test_phase_losses_of_a_constant_phase_shift():
    """Every bin turned by the same angle: IP is that angle, GD and IAF are 0."""
    ref = _spectrum()
    ip, gd, iaf = phase_losses(ref * torch.polar(torch.tensor(1.0), torch.tensor(0.7)), ref)
    assert torch.allclose(ip, torch.full((2,), 0.7), atol=1e-5)
    assert float(gd.abs().max()) < 1e-5 and float(iaf.abs().max()) < 1e-5
    zero = phase_losses(ref, ref)
    assert all(float(z.abs().max()) < 1e-6 for z in zero)


def test_phase_losses_of_a_time_shift_and_a_frequency_shift():
    """A delay of d samples turns bin k by 2 pi k d / n_fft in every frame: GD is exactly that
    step, IAF 0. A phase advancing by w per frame (a frequency offset): IAF is w, GD 0."""
    ref = _spectrum(1)
    k = torch.arange(ref.shape[1], dtype=torch.float32)[None, :, None]
    step = 2 * math.pi * 3 / 64  # 3 samples in a 64-point frame
    ip, gd, iaf = phase_losses(ref * torch.polar(torch.ones_like(k), -step * k), ref)
    assert torch.allclose(gd, torch.full((2,), step), atol=1e-5)
    assert float(iaf.abs().max()) < 1e-5 and float(ip.min()) > 0
    n = torch.arange(ref.shape[2], dtype=torch.float32)[None, None, :]
    ip, gd, iaf = phase_losses(ref * torch.polar(torch.ones_like(n), 0.4 * n), ref)
    assert torch.allclose(iaf, torch.full((2,), 0.4), atol=1e-5)
    assert float(gd.abs().max()) < 1e-5


def test_phase_losses_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        phase_losses(_spectrum(shape=(1, 4, 5)), _spectrum(shape=(1, 4, 6)))


def test_estimate_start_rules(tiny_config):
    with pytest.raises(ValueError, match="stft-domain"):
        validate(apply_overrides(tiny_config, ["model.start=estimate"]))
    with pytest.raises(ValueError, match="start_sigma_min"):
        _cfg(tiny_config, "diffusion.start_sigma_min=0.5", "diffusion.start_sigma_max=0.1")
    with pytest.raises(ValueError, match="phase_loss"):
        validate(apply_overrides(tiny_config, ["train.phase_loss=1"]))


def test_estimate_is_close_to_the_mel_and_griffin_lim_iterations_improve_it(tiny_config):
    """The estimate decodes to audio whose mel is near the conditioning mel, nearer with phase
    iterations than with zero phase (which the overlap-add smears)."""
    audio = torch.from_numpy(chirp_plus_noise(22050, 1.0, seed=2))[None]
    cfg0 = _cfg(tiny_config, "model.estimate_griffin_lim_iters=0")
    mel_fn = MelSpectrogram(cfg0.mel)
    mel = mel_fn(audio)
    errors = []
    for iters in (0, 8):
        domain = build_domain(_cfg(tiny_config, f"model.estimate_griffin_lim_iters={iters}"))
        decoded = domain.from_model(domain.estimate(mel), mel)[:, 0]
        errors.append(float((mel_fn(decoded) - mel).abs().mean()))
    # measured 3.53 (zero phase) and 0.13 (8 iterations) ln-mel units
    assert errors[1] < 0.1 * errors[0]


@pytest.mark.parametrize("steps", [1, 2])
def test_estimate_start_chunked_equals_whole(tiny_config, tmp_path, steps):
    voc = Vocoder.from_pretrained(
        random_export(_cfg(tiny_config), tmp_path / "e.safetensors", output_std=0.05)
    )
    audio = np.concatenate([chirp_plus_noise(22050, 0.5, seed=s) for s in range(4)])
    mel = voc.mel(audio, 22050)
    whole = voc(mel, seed=3, steps=steps, chunk_seconds=None)
    chunked = voc(mel, seed=3, steps=steps, chunk_seconds=20 * 256 / 22050)
    assert voc.halo_samples(steps) < mel.shape[-1] // 2
    assert torch.isfinite(whole).all() and float((whole - chunked).abs().max()) <= 1e-5


def test_a_zero_network_returns_the_estimate_shrunk_by_c_skip(tiny_config, tmp_path):
    """With v = 0 one step from start_sigma returns c_skip * (estimate + sigma * noise): the
    start really is the estimate (its decoded mel matches the estimate's up to the noise)."""
    deviation = []
    for sigma in (0.001, 0.1):
        cfg = _cfg(tiny_config, f"sample.start_sigma={sigma}")
        export = random_export(cfg, tmp_path / f"z{sigma}.safetensors", output_std=0)
        voc = Vocoder.from_pretrained(export)
        mel = voc.mel(chirp_plus_noise(22050, 1.0, seed=4), 22050)
        out = voc(mel, seed=0)
        domain = build_domain(cfg)
        expected = domain.from_model(domain.estimate(mel) / (1 + sigma**2), mel)
        deviation.append(float((out - expected).abs().max()) / float(expected.abs().max()))
    # What is left is the start's noise, which scales with sigma (measured 1.0e-3 at 0.001).
    assert deviation[0] < 3e-3 < 10 * deviation[0] < deviation[1]


def test_start_training_loss_is_the_clean_estimate_error():
    """A network that outputs 0 (v target): x0_hat = c_skip x, and the loss is |x0_hat - x0|^2
    with the sigmas and noise drawn in the documented order."""

    class Zero(torch.nn.Module):
        def forward(self, x, c_noise, cond=None):
            return torch.zeros_like(x)

    schedule = NoiseSchedule.from_config(
        validate(apply_overrides(ExperimentConfig(), STFT_TINY)).diffusion
    )
    x0, x_start = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    gen = torch.Generator().manual_seed(7)
    loss = start_training_loss(
        Zero(), x0, x_start, schedule=schedule, sigma_range=(0.1, 0.5), generator=gen
    )
    gen.manual_seed(7)
    u = torch.rand(3, generator=gen, dtype=torch.float64)
    sigma = torch.exp(math.log(0.1) + u * (math.log(0.5) - math.log(0.1)))
    eps = torch.randn(x0.shape, generator=gen)
    x = x_start + sigma.float()[:, None, None] * eps
    expected = ((x / (1 + sigma.float() ** 2)[:, None, None] - x0) ** 2).mean(dim=(1, 2))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert bool((sigma >= 0.1).all() and (sigma <= 0.5).all())


def test_fine_tune_from_an_export_with_phase_and_consistency_losses(
    tiny_config, tmp_path, manifests
):
    from audiodiff.train import Trainer

    cfg = _cfg(tiny_config)
    source = random_export(cfg, tmp_path / "init.safetensors", seed=3, output_std=0.05)
    cfg = _cfg(
        tiny_config, *manifest_overrides(manifests), f"train.init_from={source}",
        "train.max_steps=2", "train.phase_loss=0.3", "train.consistency_loss=1",
        "train.spectral_loss=1", "train.mel_loss=1",
    )  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run", log=lambda _: None)
    want = Vocoder.from_pretrained(source).net.state_dict()
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, want[name]), name
    result = trainer.train()
    assert result.step == 2 and math.isfinite(result.last_loss or 0.0)
    with pytest.raises(ValueError, match="do not fit"):
        Trainer(
            validate(apply_overrides(cfg, ["model.residual_channels=12"])),
            tmp_path / "run2", log=lambda _: None,
        )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        Trainer(
            validate(apply_overrides(cfg, ["train.init_from=no-such-model"])),
            tmp_path / "run3", log=lambda _: None,
        )  # fmt: skip
    # Refused before the run directory is made: nothing to clean up, nothing lost.
    assert not (tmp_path / "run2").exists() and not (tmp_path / "run3").exists()


@pytest.mark.parametrize("size", [1, 7, 64])
def test_estimate_start_streams_exactly(tiny_config, tmp_path, size):
    """The stream starts each chunk from the same windowed estimate offline synthesis uses."""
    voc = Vocoder.from_pretrained(
        random_export(_cfg(tiny_config), tmp_path / "s.safetensors", output_std=0.05)
    )
    audio = np.concatenate([chirp_plus_noise(22050, 0.5, seed=s) for s in range(3)])
    mel = voc.mel(audio, 22050)
    offline = voc(mel, seed=4, keys=[3])
    pieces = [mel[..., i : i + size] for i in range(0, mel.shape[-1], size)]
    out = torch.cat(list(voc.stream(pieces, seed=4, key=3, chunk_frames=16)), dim=-1)
    assert out.shape == offline.shape and float((out - offline).abs().max()) <= 1e-5


def test_residual_target_returns_the_start_plus_the_network_output(tiny_config):
    from audiodiff.diffusion import Denoiser

    class Const(torch.nn.Module):
        def forward(self, x, c_noise, cond=None):
            return torch.full_like(x, 0.25)

    cfg = _cfg(tiny_config, "diffusion.target=residual")
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    x = torch.randn(2, 3, 4)
    out = Denoiser(Const(), schedule, target="residual")(x, 0.05)
    assert torch.allclose(out, x + 0.25)
    loss = start_training_loss(
        Const(), x, x - 0.25, schedule=schedule, sigma_range=(1e-8, 1e-8), target="residual",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert float(loss.max()) < 1e-12  # x_start + tiny noise + 0.25 is x0 itself
    with pytest.raises(ValueError, match="needs model.start 'estimate'"):
        validate(apply_overrides(tiny_config, [*STFT_TINY, "diffusion.target=residual"]))
