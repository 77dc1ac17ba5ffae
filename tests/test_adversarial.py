"""The adversarial stage (issue 20): the discriminator's losses on known inputs, stop + resume
bit-identical with a discriminator in the checkpoint, a mel-only warm-up, fine-tuning a
checkpoint that had none, and exports that carry only the generator."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from audiodiff.checkpoint import export_safetensors, load_checkpoint
from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.discriminator import (
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from audiodiff.train import Trainer

from .conftest import STFT_TINY, manifest_overrides

ADV = [
    "train.adversarial=0.1", "train.feature_matching=0.2", "train.discriminator_channels=4",
    "train.lr=1e-3", "train.discriminator_lr=1e-3",
]  # fmt: skip


def _cfg(tiny_config, manifests, *extra: str):
    base = [*STFT_TINY, *manifest_overrides(manifests), "data.segment_frames=16"]
    return validate(apply_overrides(tiny_config, base + list(extra)))


def test_hinge_and_feature_matching_values():
    real = [torch.tensor([[2.0, 0.5]]), torch.tensor([[1.0]])]
    fake = [torch.tensor([[-2.0, 0.0]]), torch.tensor([[0.5]])]
    # D: relu(1 - real) = [0, .5] -> .25, [0] -> 0; relu(1 + fake) = [0, 1] -> .5, [1.5]
    assert torch.allclose(discriminator_loss(real, fake), torch.tensor([0.25 + 0.5 + 0 + 1.5]))
    # G: relu(1 - fake) = [3, 1] -> 2, [0.5]
    assert torch.allclose(generator_loss(fake), torch.tensor([2.5]))
    feats_r = [[torch.ones(1, 2), torch.zeros(1, 3)]]
    feats_f = [[torch.zeros(1, 2), torch.zeros(1, 3)]]
    assert torch.allclose(feature_matching_loss(feats_r, feats_f), torch.tensor([0.5]))


def test_discriminator_is_seeded_and_sees_every_resolution():
    a = MultiResolutionDiscriminator(channels=4, generator=torch.Generator().manual_seed(1))
    b = MultiResolutionDiscriminator(channels=4, generator=torch.Generator().manual_seed(1))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    logits, features = a(torch.randn(2, 8192))
    assert len(logits) == len(features) == 3 and all(x.shape[0] == 2 for x in logits)
    with pytest.raises(ValueError, match="channels"):
        MultiResolutionDiscriminator(channels=0)


def test_adversarial_rules(tiny_config):
    with pytest.raises(ValueError, match="vocoder"):
        validate(apply_overrides(tiny_config, ["model.conditioning=none", "train.adversarial=1"]))
    with pytest.raises(ValueError, match=">= 0"):
        validate(apply_overrides(tiny_config, ["train.feature_matching=-1"]))


def test_stop_and_resume_with_a_discriminator_is_bit_identical(tmp_path, tiny_config, manifests):
    common = [*ADV, "train.save_every=2", "train.adversarial_start_step=1"]
    straight = Trainer(_cfg(tiny_config, manifests, *common, "train.max_steps=4"), tmp_path / "a")
    straight.train()
    Trainer(_cfg(tiny_config, manifests, *common, "train.max_steps=2"), tmp_path / "b").train()
    resumed = Trainer(_cfg(tiny_config, manifests, *common, "train.max_steps=4"), tmp_path / "b")
    assert resumed.step == 2
    resumed.train()
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for key in ("model", "ema", "discriminator"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    da, db = a["discriminator_optimizer"]["state"], b["discriminator_optimizer"]["state"]
    assert da.keys() == db.keys() and len(da) > 0
    for i in da:
        for name in da[i]:
            assert torch.equal(da[i][name], db[i][name])
    # The discriminator trained: its weights moved from their seeded start.
    fresh = Trainer(_cfg(tiny_config, manifests, *common, "train.max_steps=0"), tmp_path / "c")
    moved = [
        not torch.equal(v, a["discriminator"][k])
        for k, v in fresh.adversarial.model.state_dict().items()
    ]
    assert any(moved)


def test_warm_up_then_fine_tune_a_checkpoint_without_discriminator(
    tmp_path, tiny_config, manifests
):
    """Train without the stage, then resume the same run with it: the discriminator starts new
    (said in the log) and the checkpoint gains it; before adversarial_start_step it never steps."""
    run = tmp_path / "run"
    Trainer(_cfg(tiny_config, manifests, "train.max_steps=2", "train.save_every=2"), run).train()
    messages: list[str] = []
    cfg = _cfg(
        tiny_config, manifests, *ADV, "train.max_steps=4", "train.save_every=2",
        "train.adversarial_start_step=3",
    )  # fmt: skip
    trainer = Trainer(cfg, run, log=messages.append)
    assert any("starts a new one" in m for m in messages)
    start = {k: v.clone() for k, v in trainer.adversarial.model.state_dict().items()}
    trainer.train_step(trainer.batches())  # step 2 < 3: warm-up, no discriminator step
    trainer.step += 1
    assert all(torch.equal(v, trainer.adversarial.model.state_dict()[k]) for k, v in start.items())
    trainer.train()
    ckpt = load_checkpoint(run)
    assert "discriminator" in ckpt and ckpt["step"] == 4


def test_export_carries_no_discriminator(tmp_path, tiny_config, manifests):
    run = tmp_path / "run"
    Trainer(
        _cfg(tiny_config, manifests, *ADV, "train.max_steps=1", "train.save_every=1"), run
    ).train()
    ckpt = load_checkpoint(run)
    assert "discriminator" in ckpt
    out = export_safetensors(ckpt, tmp_path / "x.safetensors")
    with safe_open(str(out), "pt") as fh:
        keys = list(fh.keys())
    assert keys and not any("discriminator" in k or "convs" in k for k in keys)
    assert set(keys) == set(ckpt["ema"].keys())
