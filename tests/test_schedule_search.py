"""Schedule search on a tiny random-weight vocoder: one printed row per candidate, a winner never
worse than the baseline, and a stored copy that the vocoder then samples with by default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audiodiff.checkpoint import export_safetensors, load_checkpoint, save_checkpoint
from audiodiff.config_io import to_dict
from audiodiff.model import DiffWave
from audiodiff.schedule_search import (
    MIN_CLIP_SAMPLES,
    family_sigmas,
    load_clips_from_manifest,
    search_schedule,
)
from audiodiff.schedule_store import store_schedule
from audiodiff.synthesis import make_sampling_spec
from audiodiff.vocoder import Vocoder

from .conftest import chirp_plus_noise

STEPS = 3


def _state(cfg, seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = DiffWave.from_config(cfg, generator=gen)
    with torch.no_grad():  # a non-zero output layer, so the schedule changes the audio
        net.output_projection.weight.normal_(0, 0.3, generator=gen)
    sd = net.state_dict()
    return {"config": to_dict(cfg), "model": sd, "ema": sd, "step": 7}


@pytest.fixture
def export_path(tiny_config, tmp_path):
    return export_safetensors(_state(tiny_config), tmp_path / "model.safetensors")


@pytest.fixture
def clips():
    return [torch.from_numpy(chirp_plus_noise(22050, 0.2, seed))[None] for seed in (0, 1)]


@pytest.fixture
def searched(export_path, clips):
    lines = []
    vocoder = Vocoder.from_pretrained(export_path)
    result = search_schedule(
        vocoder, clips, steps=STEPS, seed=3, sampler="ddim", coarse=2, refine_rounds=1,
        log=lines.append,
    )  # fmt: skip
    return vocoder, result, lines


def _score_rows(lines):
    return [line for line in lines if line.split()[0].isdigit()]


def test_search_prints_every_candidate_and_never_loses(searched):
    vocoder, result, lines = searched
    rows = _score_rows(lines)
    assert len(rows) == len(result.table) >= 1 + 8  # baseline + 2 * coarse**2 grid points
    assert [int(r.split()[0]) for r in rows] == list(range(len(rows)))
    assert result.table[0].stage == "default"
    expected_default = make_sampling_spec(vocoder.config, vocoder.schedule, sampler="ddim", steps=3)
    assert np.allclose(result.default_sigmas, expected_default.sigmas[:-1].numpy(), rtol=0)
    assert result.default_score == result.table[0].score
    assert result.score <= result.default_score
    assert result.score == min(c.score for c in result.table)
    assert len({round(c.score, 9) for c in result.table}) > 1  # schedules really differ here
    assert all(len(c.sigmas) == STEPS for c in result.table)
    assert all(a > b for c in result.table for a, b in zip(c.sigmas, c.sigmas[1:], strict=False))
    assert "best:" in lines[-1] and f"{result.default_score:.5f}" in lines[-1]


def test_stored_export_is_used_and_reproduces_the_score(searched, export_path, clips, tmp_path):
    vocoder, result, _ = searched
    before = export_path.read_bytes()
    out = store_schedule(export_path, result.sigmas, tmp_path / "tuned.safetensors", sampler="ddim")
    assert export_path.read_bytes() == before  # the original is untouched
    tuned = Vocoder.from_pretrained(out)
    assert tuned.config.sample.steps == STEPS and tuned.config.sample.sampler == "ddim"
    spec = make_sampling_spec(tuned.config, tuned.schedule)  # defaults only
    assert spec.sigmas[:-1].tolist() == list(result.sigmas) and spec.sigmas[-1] == 0
    # Synthesis with the stored defaults is what the winning candidate was scored on.
    mel = tuned.mel(clips[0], tuned.sample_rate)
    default_out = tuned(mel, seed=3, chunk_seconds=None)
    original = vocoder(mel, seed=3, chunk_seconds=None, sampler="ddim", steps=STEPS)
    assert not torch.equal(default_out, original) or result.sigmas == result.default_sigmas
    rescored = search_schedule(
        tuned, clips, steps=STEPS, seed=3, sampler="ddim", coarse=1, refine_rounds=0,
        log=lambda _: None,
    )  # fmt: skip
    assert rescored.default_sigmas == result.sigmas and rescored.default_score == result.score
    for key in ("residual_layers.0.dilated_conv.weight", "output_projection.weight"):
        assert torch.equal(tuned.net.state_dict()[key], vocoder.net.state_dict()[key])


def test_store_into_checkpoint_and_no_overwrite(tiny_config, tmp_path):
    src = save_checkpoint(_state(tiny_config), tmp_path / "run", step=7, keep_last=2)
    before = src.read_bytes()
    sigmas = (1.2, 0.3, 0.05, 0.011)
    out = store_schedule(src, sigmas, tmp_path / "tuned.pt")
    assert src.read_bytes() == before
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["sample"]["sigmas"] == list(sigmas)
    assert ckpt["config"]["sample"]["steps"] == 4 and ckpt["step"] == 7
    assert torch.equal(
        ckpt["ema"]["input_projection.weight"],
        load_checkpoint(src)["ema"]["input_projection.weight"],
    )
    voc = Vocoder.from_pretrained(out)
    assert make_sampling_spec(voc.config, voc.schedule).sigmas[:-1].tolist() == list(sigmas)
    # Another step count ignores the stored schedule (it was searched for 4 steps).
    assert len(make_sampling_spec(voc.config, voc.schedule, sampler="ddim", steps=3).sigmas) == 4
    # Issue 11 kind 4: so does another sampler at the same step count (the schedule was searched
    # for the model's sampler); it gets its own discretisation, as on a model without one.
    other = next(s for s in ("ddim", "dpmpp-2m") if s != voc.config.sample.sampler)
    plain = Vocoder.from_pretrained(src)
    expected = make_sampling_spec(plain.config, plain.schedule, sampler=other, steps=4).sigmas
    got = make_sampling_spec(voc.config, voc.schedule, sampler=other, steps=4).sigmas
    assert torch.equal(got, expected) and got[:-1].tolist() != list(sigmas)
    with pytest.raises(FileExistsError, match="overwrite"):
        store_schedule(src, sigmas, out)
    store_schedule(src, sigmas[:3], out, overwrite=True)
    assert load_checkpoint(out)["config"]["sample"]["sigmas"] == list(sigmas[:3])
    with pytest.raises(ValueError, match="strictly descend"):
        store_schedule(src, (0.1, 0.5), tmp_path / "x.pt")
    with pytest.raises(ValueError, match="a checkpoint but .* would be an export"):
        store_schedule(src, sigmas, tmp_path / "x.safetensors")


def test_family_sigmas():
    geometric = family_sigmas(5, 0.01, 1.0, 0.0)
    assert np.allclose(np.diff(np.log(geometric)), np.log(0.01) / 4)
    karras = family_sigmas(5, 0.01, 1.0, 1 / 7)
    assert karras[0] == pytest.approx(1.0) and karras[-1] == pytest.approx(0.01)
    assert family_sigmas(1, 0.01, 1.0, 0.5) == (1.0,)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        family_sigmas(3, 1.0, 0.5, 0.0)


def test_load_clips_from_manifest(write_wav, tmp_path):
    good = write_wav("a.wav", sample_rate=16000, duration_s=2.0)
    short = write_wav("b.wav", duration_s=0.01)
    broken = tmp_path / "c.wav"
    broken.write_bytes(b"RIFF junk")
    manifest = tmp_path / "val.jsonl"
    rows = [{"path": p.name} for p in (broken, short, good, good, good)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = []
    clips = load_clips_from_manifest(
        manifest, 22050, max_clips=2, max_seconds=0.5, log=lines.append
    )
    assert len(clips) == 2 and all(c.shape == (1, 11025) for c in clips)
    assert len(lines) == 2 and "c.wav" in lines[0] and f"{MIN_CLIP_SAMPLES}" in lines[1]
    empty = tmp_path / "bad.jsonl"
    empty.write_text(json.dumps({"path": "c.wav"}) + "\n")
    with pytest.raises(ValueError, match="none of its 1 clips is usable"):
        load_clips_from_manifest(empty, 22050, log=lambda _: None)


def test_search_refuses_bad_input(export_path, clips):
    vocoder = Vocoder.from_pretrained(export_path)
    with pytest.raises(ValueError, match="at least one validation clip"):
        search_schedule(vocoder, [], steps=3, log=lambda _: None)
    with pytest.raises(ValueError, match=f"needs at least {MIN_CLIP_SAMPLES}"):
        search_schedule(vocoder, [clips[0][:, :1000]], steps=3, log=lambda _: None)


def test_fixed_step_sampler_compares_against_uniform_rows(export_path, clips):
    vocoder = Vocoder.from_pretrained(export_path)
    lines = []
    result = search_schedule(
        vocoder, clips[:1], steps=2, sampler="diffwave-fast", coarse=1, refine_rounds=0,
        log=lines.append,
    )  # fmt: skip
    assert "baseline = the uniform schedule" in lines[0]
    assert result.default_sigmas == tuple(vocoder.schedule.uniform_sigmas(2)[:-1].tolist())
    assert result.sampler == "diffwave-fast" and result.score <= result.default_score
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        search_schedule(vocoder, clips, steps=2, sampler="euler", log=lambda _: None)


def test_a_shipped_model_name_is_a_source_to_store_from(tmp_path):
    """store_schedule and check_store_target resolve model names as every loader does (was: the
    CLI's early check passed for `-o x.safetensors`, then the store, given the bare name, took it
    for a checkpoint and failed after the whole search)."""
    from audiodiff.schedule_store import check_store_target

    assert check_store_target("small-speech", tmp_path / "x.safetensors") is True
    with pytest.raises(ValueError, match="is an export but .*x.pt would be a checkpoint"):
        check_store_target("small-speech", tmp_path / "x.pt")
    out = store_schedule("small-speech", [2.0, 0.5, 0.05], tmp_path / "x.safetensors")
    assert Vocoder.from_pretrained(out).config.sample.sigmas == [2.0, 0.5, 0.05]
