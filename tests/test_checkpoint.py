"""Checkpoint files: atomic save, latest pointer, keep-last-K, safe loading, exports, run dirs."""

from __future__ import annotations

import dataclasses
import pickle
import random

import numpy as np
import pytest
import torch

from audiodiff.checkpoint import (
    export_safetensors,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_export,
    params_digest,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from audiodiff.config_io import apply_overrides, load_config, to_dict
from audiodiff.config_migrate import model_config
from audiodiff.run_dir import prepare_run_dir


def _state(cfg, step: int) -> dict:
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(step)
    return {"config": to_dict(cfg), "model": model.state_dict(), "ema": model.state_dict(),
            "step": step}  # fmt: skip


class Payload:
    """Pickles to a call of ``open(marker, "w")``: proof of execution if the file appears."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_save_keeps_last_k_and_points_latest(tmp_path, tiny_config):
    for step in (10, 20, 30, 40):
        path = save_checkpoint(_state(tiny_config, step), tmp_path, step, keep_last=2)
    assert path.name == "step_00000040.pt"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000030.pt", "step_00000040.pt"]
    assert (tmp_path / "latest").read_text().strip() == "step_00000040.pt"
    assert latest_checkpoint(tmp_path) == path
    state = load_checkpoint(tmp_path)  # a run directory means its latest checkpoint
    assert state["step"] == 40 and torch.all(state["model"]["weight"] == 40)
    assert state["config"] == to_dict(tiny_config)
    # Plain weights_only loading works without audiodiff.
    assert torch.load(path, weights_only=True)["step"] == 40


def test_leftover_temp_and_broken_latest_are_survived(tmp_path, tiny_config):
    save_checkpoint(_state(tiny_config, 1), tmp_path, 1, keep_last=3)
    good = save_checkpoint(_state(tiny_config, 2), tmp_path, 2, keep_last=3)
    # What a kill mid-write leaves: a half-written temp file; a truncated final name is what a
    # non-atomic writer would leave, and must not be picked.
    (tmp_path / ".tmp-999-step_00000003.pt").write_bytes(good.read_bytes()[:100])
    (tmp_path / "step_00000004.pt").write_bytes(good.read_bytes()[:100])
    (tmp_path / "latest").write_text("step_00000004.pt\n")
    assert latest_checkpoint(tmp_path) == good
    save_checkpoint(_state(tiny_config, 5), tmp_path, 5, keep_last=3)
    assert not list(tmp_path.glob(".tmp-*"))


def test_refuses_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)
    with pytest.raises(ValueError, match="not an audiodiff checkpoint"):
        load_checkpoint(foreign)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load_checkpoint(empty)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="no loadable checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, container):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    payload = {"format": "audiodiff-checkpoint", "format_version": 1, "model": Payload(str(marker))}
    if container == "torch-zip":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match="refused without running"):
        load_checkpoint(evil)
    assert not marker.exists()
    # The same file named as latest in a run dir is skipped, not executed.
    run = tmp_path / "run"
    run.mkdir()
    evil.rename(run / "step_00000001.pt")
    assert latest_checkpoint(run) is None and not marker.exists()


def test_saving_a_non_primitive_object_is_refused(tmp_path, tiny_config):
    state = _state(tiny_config, 1)
    state["extra"] = {"schedule": np.arange(3)}
    with pytest.raises(TypeError, match="checkpoint.extra.schedule is a ndarray"):
        save_checkpoint(state, tmp_path, 1, keep_last=1)
    assert not list(tmp_path.iterdir())


def test_export_round_trip_and_overwrite(tmp_path, tiny_config):
    ckpt = _state(tiny_config, 7)
    ckpt["ema"] = {"weight": torch.full((2, 3), 0.5), "bias": torch.zeros(2)}
    out = export_safetensors(ckpt, tmp_path / "m.safetensors", extra_metadata={"sigmas": [1, 2]})
    weights, config, meta = load_export(out)
    assert torch.equal(weights["weight"], ckpt["ema"]["weight"])  # EMA, not the raw weights
    # Only what inference needs (issue 12): no run config (devices, workers, manifest paths).
    assert config == model_config(to_dict(tiny_config))
    assert "train" not in config and "data" not in config and config["model"]
    assert meta["step"] == "7" and meta["sigmas"] == "[1, 2]"
    with pytest.raises(FileExistsError):
        export_safetensors(ckpt, out)
    export_safetensors(ckpt, out, overwrite=True)
    (tmp_path / "not.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ValueError):
        load_export(tmp_path / "not.safetensors")


def test_half_export_stores_float16_and_loads_into_float32(tmp_path, tiny_config):
    from audiodiff.pretrained import load_network
    from audiodiff.subband import build_network

    state = build_network(tiny_config, generator=torch.Generator().manual_seed(0)).state_dict()
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in state.items()}  # fmt: skip
    ckpt = {"config": to_dict(tiny_config), "model": state, "ema": state, "step": 3}
    full = export_safetensors(ckpt, tmp_path / "full.safetensors")
    half = export_safetensors(ckpt, tmp_path / "half.safetensors", half=True)
    weights, _, _ = load_export(half)
    assert all(w.dtype == torch.float16 for w in weights.values() if w.is_floating_point())
    assert half.stat().st_size < 0.6 * full.stat().st_size
    net_full, _, _ = load_network(full)
    net_half, _, _ = load_network(half)
    for (name, a), (_, b) in zip(net_full.state_dict().items(), net_half.state_dict().items(),
                                 strict=True):  # fmt: skip
        if a.is_floating_point():
            assert b.dtype == torch.float32, name
            # float16 keeps 11 significant bits: relative rounding at most 2^-11.
            assert torch.allclose(a, b, rtol=2**-11, atol=1e-7), name


def test_rng_state_round_trip():
    gen = torch.Generator().manual_seed(3)
    state = rng_state(gen)
    expected = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen))
    restore_rng(state, gen)
    again = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
    assert torch.equal(expected[3], again[3])


def test_params_digest_sees_one_bit():
    model = torch.nn.Linear(4, 4)
    before = params_digest(model)
    with torch.no_grad():
        model.weight.view(-1)[5] = torch.nextafter(model.weight.view(-1)[5], torch.tensor(9.0))
    assert params_digest(model) != before


def test_run_dir_refuses_other_experiments(tmp_path, tiny_config):
    run = tmp_path / "run"
    prepare_run_dir(tiny_config, run, log=lambda m: None)
    assert load_config(run / "config.yaml") == tiny_config
    messages = []
    lr_changed = apply_overrides(tiny_config, ["train.lr=1e-3"])
    prepare_run_dir(lr_changed, run, log=messages.append)  # optimisation may change
    assert "train.lr: 0.0002 -> 0.001" in messages[0]
    with pytest.raises(ValueError, match="holds experiment 'tiny', not 'other'"):
        prepare_run_dir(dataclasses.replace(tiny_config, name="other"), run)
    wider = apply_overrides(tiny_config, ["model.residual_channels=16"])
    with pytest.raises(ValueError, match=r"model.residual_channels: 8 -> 16"):
        prepare_run_dir(wider, run)
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not empty and holds no audiodiff config.yaml"):
        prepare_run_dir(tiny_config, stranger)
