"""The auxiliary multi-resolution STFT loss (``train.spectral_loss``): one computation shared with
the metric, the clean estimate it is applied to, and how the trainer adds it."""

from __future__ import annotations

import math

import pytest
import torch

from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.diffusion import add_noise, clean_estimate, training_loss, training_target
from audiodiff.metrics import mr_stft_distance
from audiodiff.schedule import NoiseSchedule
from audiodiff.spectral_loss import mr_stft_terms

from .conftest import STFT_TINY, chirp_plus_noise, manifest_overrides, tiny_diffwave


def _pair(seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.from_numpy(chirp_plus_noise(duration_s=0.2, seed=seed))[None].to(dtype)
    gen = ref + 0.1 * torch.randn(ref.shape, generator=g, dtype=dtype)
    return ref, gen


def test_the_loss_is_the_metric_differentiably():
    ref, gen = _pair()
    assert torch.equal(mr_stft_terms(ref, gen), mr_stft_distance(ref, gen))
    assert float(mr_stft_terms(ref, ref)) == 0.0
    gen32 = gen.float().requires_grad_()
    loss = mr_stft_terms(ref.float(), gen32)
    assert loss.dtype == torch.float32
    assert math.isclose(float(loss.detach()), float(mr_stft_distance(ref, gen)), rel_tol=1e-4)
    loss.sum().backward()
    assert gen32.grad is not None and torch.isfinite(gen32.grad).all()
    assert float(gen32.grad.abs().max()) > 0


def test_the_loss_compares_magnitudes_only():
    """A sign flip moves every bin's phase by pi and no magnitude: distance 0; a gain does not."""
    ref, _ = _pair(1)
    assert float(mr_stft_terms(ref, -ref)) < 1e-12
    assert float(mr_stft_terms(ref, 0.5 * ref)) > 0.5


def test_the_loss_refuses_mismatched_or_short_signals():
    ref, gen = _pair()
    with pytest.raises(ValueError, match="must both be"):
        mr_stft_terms(ref, gen[:, :-1])
    with pytest.raises(ValueError, match="too short"):
        mr_stft_terms(ref[:, :1000], gen[:, :1000])


@pytest.mark.parametrize("target", ["v", "eps"])
def test_clean_estimate_of_the_true_target_is_x0(target):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 50, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 2, 50, generator=g, dtype=torch.float64)
    alpha_bar = torch.tensor([0.999, 0.5, 0.01], dtype=torch.float64)
    x = add_noise(x0, eps, alpha_bar)
    got = clean_estimate(x, training_target(x0, eps, alpha_bar, target), alpha_bar, target)
    torch.testing.assert_close(got, x0, rtol=0, atol=1e-12)


def test_training_loss_adds_the_x0_loss_of_the_prediction():
    net = tiny_diffwave(torch.Generator().manual_seed(0), output_std=0.3)
    schedule = NoiseSchedule.linear(50, 1e-4, 0.05)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 1, 2048, generator=g)
    cond = torch.randn(2, 80, 8, generator=g)
    seen = []

    def x0_loss(x0_hat):
        seen.append(x0_hat)
        return x0_hat.square().mean(dim=(1, 2))

    kw = {"schedule": schedule, "cond": cond, "target": "v", "loss": "l2"}
    plain = training_loss(net, x0, generator=torch.Generator().manual_seed(5), **kw)
    both = training_loss(net, x0, generator=torch.Generator().manual_seed(5), x0_loss=x0_loss, **kw)
    assert len(seen) == 1 and seen[0].shape == x0.shape
    torch.testing.assert_close(both - plain, seen[0].square().mean(dim=(1, 2)))


@pytest.mark.parametrize("domain", ["waveform", "stft"])
def test_trainer_adds_the_weighted_auxiliary_losses(tmp_path, tiny_config, manifests, domain):
    """Same batch, same noise: each auxiliary loss adds weight x its distance, linearly, and the
    two add up."""
    from audiodiff.train import Trainer

    base = list(manifest_overrides(manifests)) + (STFT_TINY if domain == "stft" else [])
    losses = {}
    for spectral, mel in ((0, 0), (1, 0), (2, 0), (0, 1), (0, 2), (1, 1)):
        overrides = [*base, f"train.spectral_loss={spectral}", f"train.mel_loss={mel}"]
        cfg = validate(apply_overrides(tiny_config, overrides))
        trainer = Trainer(cfg, tmp_path / f"run{spectral}{mel}", log=lambda _: None)
        x0, cond, label = trainer.model_inputs(next(trainer.batches()))
        trainer.noise_gen.manual_seed(7)
        losses[spectral, mel] = trainer.loss(x0, cond, label).detach()
    base_loss = losses[0, 0]
    spectral, mel = losses[1, 0] - base_loss, losses[0, 1] - base_loss
    assert (spectral > 0.05).all() and (mel > 0.05).all()  # untrained audio is far off
    close = {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(losses[2, 0] - base_loss, 2 * spectral, **close)
    torch.testing.assert_close(losses[0, 2] - base_loss, 2 * mel, **close)
    torch.testing.assert_close(losses[1, 1] - base_loss, spectral + mel, **close)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.spectral_loss=-1"], "must be >= 0"),
        (["train.mel_loss=-0.5"], "train.mel_loss must be >= 0"),
        (["train.mel_loss=1", "model.domain=mel", "model.conditioning=none"], "produces mels"),
        (["train.spectral_loss=1", "model.domain=mel", "model.conditioning=none"], "produces mels"),
        (["train.spectral_loss=1", "data.segment_frames=4"], "crops longer than 1024"),
    ],
)
def test_spectral_loss_config_rules(tiny_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        validate(apply_overrides(tiny_config, overrides))
