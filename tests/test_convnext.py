"""The ConvNeXt stack of the stft domain (``model.architecture: convnext``; Vocos's blocks): its
declared receptive field and conditioning halo, the trivial start, chunked synthesis equal to
whole-utterance synthesis, training steps, and the config rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.convnext import ConvNeXtDenoiser
from audiodiff.subband import build_network
from audiodiff.vocoder import Vocoder

from .conftest import STFT_TINY, chirp_plus_noise, manifest_overrides, random_export

CONVNEXT_TINY = [
    *STFT_TINY,
    "model.architecture=convnext",
    "model.residual_layers=3",
    "model.kernel_size=5",
]


def _cfg(tiny_config, *extra: str):
    return validate(apply_overrides(tiny_config, CONVNEXT_TINY + list(extra)))


def _randomised(tiny_config) -> ConvNeXtDenoiser:
    net = build_network(_cfg(tiny_config), generator=torch.Generator().manual_seed(0))
    assert isinstance(net, ConvNeXtDenoiser)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in net.parameters():  # the zero-initialised parts too: every path must be live
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net


def test_receptive_field_and_conditioning_halo_are_what_they_claim(tiny_config):
    net = _randomised(tiny_config)
    assert net.receptive_field() == 1 + 4 * 4  # kernel 5: the input conv and 3 blocks
    frames, centre = 41, 20
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, net.in_channels, frames, generator=g, requires_grad=True)
    mel = torch.randn(1, 80, frames, generator=g, requires_grad=True)
    out = net(x, torch.tensor([3.0]), mel)
    out[0, :, centre].sum().backward()
    reach_x = (x.grad[0].abs().sum(0) > 0).nonzero().flatten()
    reach_mel = (mel.grad[0].abs().sum(0) > 0).nonzero().flatten()
    radius = (net.receptive_field() - 1) // 2
    assert (int(reach_x.min()), int(reach_x.max())) == (centre - radius, centre + radius)
    # The mel's projection is added beside the input's, so it reaches as far.
    assert (int(reach_mel.min()), int(reach_mel.max())) == (centre - radius, centre + radius)
    mel.grad = None
    net.prepare(mel).conditioner[0, :, centre].sum().backward()
    reach = (mel.grad[0].abs().sum(0) > 0).nonzero().flatten()
    halo = net.conditioner_halo_frames()
    assert (int(reach.min()), int(reach.max())) == (centre - halo, centre + halo)


def test_untrained_network_outputs_zero(tiny_config):
    net = build_network(_cfg(tiny_config), generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, net.in_channels, 9)
    assert torch.equal(net(x, torch.tensor([1.0, 2.5]), torch.randn(2, 80, 9)), torch.zeros_like(x))


def test_convnext_vocoder_chunked_equals_whole(tiny_config, tmp_path):
    voc = Vocoder.from_pretrained(
        random_export(_cfg(tiny_config), tmp_path / "c.safetensors", output_std=0.05)
    )
    audio = np.concatenate([chirp_plus_noise(22050, 0.5, seed=s) for s in range(3)])
    mel = voc.mel(audio, 22050)
    whole = voc(mel, seed=5, steps=3, chunk_seconds=None)
    assert whole.shape == (1, 1, mel.shape[-1] * 256) and torch.isfinite(whole).all()
    chunked = voc(mel, seed=5, steps=3, chunk_seconds=20 * 256 / 22050)
    assert float((whole - chunked).abs().max()) <= 1e-5
    assert float(whole.abs().max()) > 0


def test_convnext_trains(tmp_path, tiny_config, manifests):
    from audiodiff.train import Trainer

    cfg = _cfg(tiny_config, *manifest_overrides(manifests), "train.max_steps=3", "train.lr=1e-3")
    trainer = Trainer(cfg, tmp_path / "run", log=lambda _: None)
    result = trainer.train()
    assert result.step == 3 and math.isfinite(result.last_loss or 0.0)
    head = trainer.model.output_projection.weight.detach()
    assert float(head.abs().max()) > 0  # the zero-initialised head moved


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.architecture=convnext"], "only for model.domain 'stft'"),
        (CONVNEXT_TINY + ["model.bands=4"], "neither sub-bands nor labels"),
        (CONVNEXT_TINY + ["model.kernel_size=4"], "odd"),
    ],
)
def test_convnext_config_rules(tiny_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        validate(apply_overrides(tiny_config, overrides))
