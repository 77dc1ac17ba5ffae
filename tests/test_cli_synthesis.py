"""The synthesis commands end to end on a tiny model: mel, vocode, generate, export, demo.

WAV files come out at the model's rate with frames * hop samples; every bad input is one line on
stderr with exit code 2; nothing is overwritten without --overwrite.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.checkpoint import load_export
from audiodiff.config_io import apply_overrides, to_dict
from audiodiff.config_migrate import model_config
from audiodiff.model import DiffWave

from .conftest import chirp_plus_noise, invoke, one_line_exit_2, random_export


def _export(cfg, path):
    return random_export(cfg, path, output_std=0.2)


@pytest.fixture
def model(tiny_config, tmp_path):
    return _export(tiny_config, tmp_path / "tiny.safetensors")


@pytest.fixture
def speech(tmp_path):
    path = tmp_path / "in" / "speech.wav"
    path.parent.mkdir()
    sf.write(path, chirp_plus_noise(44100, 0.4), 44100)  # another rate: resampled on load
    return path


def test_mel_then_vocode_mel_and_audio(model, speech, tmp_path):
    mels = tmp_path / "mels"
    result = invoke("mel", speech, "--from", model, "-o", mels, "--plot")
    assert result.exit_code == 0, result.output
    mel = np.load(mels / "speech.npz")["mel"]
    assert mel.shape == (80, int(0.4 * 22050) // 256)
    assert (mels / "speech.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "out"
    result = invoke("vocode", model, mels / "speech.npz", "-o", out, "--steps", "6")
    assert result.exit_code == 0, result.output
    assert "real-time factor" in result.output
    audio, rate = sf.read(out / "speech.wav")
    assert rate == 22050 and audio.shape == (mel.shape[1] * 256,)
    copy = invoke("vocode", model, speech, "-o", tmp_path / "copy", "--sampler", "ddim",
                  "--steps", "3", "--batch-size", "2")  # fmt: skip
    assert copy.exit_code == 0, copy.output
    assert sf.info(tmp_path / "copy" / "speech.wav").frames == mel.shape[1] * 256
    gl = invoke("vocode", model, speech, "-o", tmp_path / "gl", "--method", "griffin-lim")
    assert gl.exit_code == 0, gl.output
    assert sf.info(tmp_path / "gl" / "speech.wav").frames == mel.shape[1] * 256


def test_mel_without_a_profile_uses_hifigan_the_profile_of_every_shipped_model(speech, tmp_path):
    from audiodiff.config import mel_profile
    from audiodiff.pretrained import load_model_source, shipped_models

    assert {load_model_source(m)[1].mel.name for m in shipped_models()} == {"hifigan"}
    result = invoke("mel", speech, "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "m" / "speech.npz") as written:
        assert json.loads(str(written["profile"]))["name"] == "hifigan"
        assert written["mel"].shape == (mel_profile("hifigan").n_mels, int(0.4 * 22050) // 256)


def test_vocode_batches_inputs_of_different_lengths(model, tmp_path):
    mels = []
    for i, frames in enumerate((7, 12, 9)):
        path = tmp_path / f"m{i}.npy"
        np.save(path, np.full((80, frames), -4.0, dtype=np.float32))
        mels.append(path)
    result = invoke("vocode", model, *mels, "-o", tmp_path / "out", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    for i, frames in enumerate((7, 12, 9)):
        assert sf.info(tmp_path / "out" / f"m{i}.wav").frames == frames * 256


def test_bad_inputs_are_one_line_with_exit_2(model, speech, tmp_path):
    out = tmp_path / "out"
    one_line_exit_2(invoke("vocode", tmp_path / "nope.pt", speech, "-o", out), "nope.pt")
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    one_line_exit_2(invoke("vocode", model, text, "-o", out), "text.wav")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((100, 10), dtype=np.float32))
    one_line_exit_2(
        invoke("vocode", model, wrong, "-o", out), "100 bins but this vocoder expects 80"
    )
    pickle = tmp_path / "evil.npy"
    np.save(pickle, np.array([object()], dtype=object), allow_pickle=True)
    one_line_exit_2(invoke("vocode", model, pickle, "-o", out), "not a readable mel file")
    one_line_exit_2(invoke("vocode", model, speech, "-o", out, "--steps", "4"), "fixed 6-step")
    one_line_exit_2(
        invoke("mel", speech, "--profile", "16k", "--from", model, "-o", out), "not both"
    )
    one_line_exit_2(invoke("mel", speech, "--profile", "nope", "-o", out), "unknown mel profile")
    one_line_exit_2(invoke("generate", model, "-o", out), "mel-conditioned vocoder")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    one_line_exit_2(
        invoke("export", foreign, tmp_path / "x.safetensors"), "not an audiodiff export"
    )
    one_line_exit_2(invoke("export", "no-such-model", tmp_path / "x.safetensors"), "shipped model")
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_no_overwrite_without_flag(model, speech, tmp_path):
    out = tmp_path / "out"
    assert invoke("vocode", model, speech, "-o", out).exit_code == 0
    before = (out / "speech.wav").read_bytes()
    one_line_exit_2(invoke("vocode", model, speech, "-o", out, "--seed", "1"), "exists")
    assert (out / "speech.wav").read_bytes() == before
    again = invoke("vocode", model, speech, "-o", out, "--seed", "1", "--overwrite")
    assert again.exit_code == 0 and (out / "speech.wav").read_bytes() != before


def test_generate_unconditional_and_labelled(tiny_config, tmp_path):
    cfg = apply_overrides(
        tiny_config, ["model.conditioning=none", "model.n_labels=3", "diffusion.label_dropout=0.1"]
    )
    path = _export(cfg, tmp_path / "gen.safetensors")
    out = tmp_path / "out"
    result = invoke("generate", path, "-n", "2", "--seconds", "0.05", "--label", "1",
                    "--guidance", "2", "--sampler", "ddim", "--steps", "3", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    for i in range(2):
        audio, rate = sf.read(out / f"label-1_00{i}.wav")
        assert rate == 22050 and audio.shape == (round(0.05 * 22050),)
    one_line_exit_2(invoke("generate", path, "--label", "9", "-o", out), "unknown label '9'")


def test_export_round_trip_is_bit_identical(tiny_config, tmp_path, speech):
    """A training checkpoint and its export give the same audio."""
    from audiodiff.checkpoint import save_checkpoint
    from audiodiff.vocoder import Vocoder

    net = DiffWave.from_config(tiny_config)
    with torch.no_grad():
        net.output_projection.weight.normal_(0, 0.2)
    state = {"config": to_dict(tiny_config), "model": net.state_dict(), "ema": net.state_dict(),
             "step": 7, "optimizer": {}, "rng": {}}  # fmt: skip
    ckpt = save_checkpoint(state, tmp_path / "run", 7, keep_last=2)
    out = tmp_path / "m.safetensors"
    result = invoke("export", tmp_path / "run", out)
    assert result.exit_code == 0, result.output
    tensors, cfg, metadata = load_export(out)
    assert cfg == model_config(to_dict(tiny_config)) and metadata["step"] == "7"
    mel = Vocoder.from_pretrained(ckpt).mel_from_file(speech)
    a = Vocoder.from_pretrained(ckpt)(mel, seed=5)
    b = Vocoder.from_pretrained(out)(mel, seed=5)
    assert torch.equal(a, b)
    one_line_exit_2(invoke("export", tmp_path / "run", out), "exists")


def test_export_takes_a_shipped_name_and_an_export(tmp_path):
    from audiodiff.vocoder import Vocoder

    out = tmp_path / "half.safetensors"
    result = invoke("export", "small-speech", out, "--half")
    assert result.exit_code == 0, result.output
    shipped = Vocoder.from_pretrained("small-speech")
    tensors, cfg, metadata = load_export(out)
    # The stored config as written (keys added since default on reading), read back the same.
    assert Vocoder.from_pretrained(out).config.model == shipped.config.model
    assert metadata["weights"] == "ema"
    for name, value in shipped.net.state_dict().items():
        assert torch.allclose(tensors[name].float(), value, rtol=1e-3, atol=1e-4), name
    again = invoke("export", out, tmp_path / "again.safetensors")  # an export re-exported
    assert again.exit_code == 0, again.output
    assert load_export(tmp_path / "again.safetensors")[2] == metadata


def test_real_subprocess_vocode(model, speech, tmp_path):
    out = tmp_path / "sub"
    cmd = [sys.executable, "-m", "audiodiff", "vocode", str(model), str(speech), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sf.info(out / "speech.wav").samplerate == 22050
    bad = subprocess.run(cmd[:5] + [str(tmp_path / "missing.wav"), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    usage = subprocess.run(cmd[:5], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    assert "Missing argument 'INPUTS...'" in usage.stderr


def _run_dir(cfg, run_dir, *, labels=None):
    """A run directory holding one checkpoint of ``cfg`` with random weights (step 3)."""
    from audiodiff.checkpoint import save_checkpoint
    from audiodiff.subband import build_network

    gen = torch.Generator().manual_seed(0)
    net = build_network(cfg, generator=gen)
    with torch.no_grad():
        getattr(net, "net", net).output_projection.weight.normal_(0, 0.2, generator=gen)
    state = {"config": to_dict(cfg), "model": net.state_dict(), "ema": net.state_dict(),
             "step": 3, "optimizer": {}, "rng": {}}  # fmt: skip
    if labels:
        state["labels"] = {name: i for i, name in enumerate(labels)}
    save_checkpoint(state, run_dir, 3, keep_last=1)
    return run_dir


def test_every_readme_command_in_its_plainest_form(tiny_config, tmp_path, monkeypatch):
    """Each line of README.md's "Everyday commands" (torchrun aside: tests/test_dist.py), with the
    README's own arguments where they fit a tiny run; only sizes and steps are made small."""
    from pathlib import Path

    from audiodiff.config_io import load_config

    from .conftest import TINY_OVERRIDES
    from .test_datasets import build_folder, build_ljspeech
    from .test_diffwave_import import _params, _save_like_lmnt, lmnt_state_dict

    recipes = Path(__file__).resolve().parent.parent / "recipes"
    monkeypatch.chdir(tmp_path)  # the recipes' manifests are relative: data/<layout>/*.jsonl
    # The first steps: any folder of audio, the CPU-sized folder recipe (the stft vocoder; only
    # its sizes made tiny), its speed estimate and first checkpoint, and a resume from its config.
    build_folder(tmp_path / "my-audio")
    ok = invoke("prepare", "folder", "my-audio", "--out", "data/folder")
    assert ok.exit_code == 0, ok.output
    tiny = [*TINY_OVERRIDES, "train.max_steps=12", "train.save_every=200"]
    sets = [a for s in tiny for a in ("--set", s)]
    ok = invoke("train", recipes / "folder" / "vocoder.yaml", "--run-dir", "runs/voc", *sets)
    assert ok.exit_code == 0, ok.output
    assert "\r" not in ok.output  # not a terminal: no progress-bar redraws
    estimate = [line for line in ok.output.splitlines() if line.startswith("speed: ")]
    assert len(estimate) == 1 and "per 1,000 steps; checkpoint at step 12 in about" in estimate[0]
    assert "trained to step 12" in ok.output
    assert load_config("runs/voc/config.yaml").model.domain == "stft"
    ok = invoke(
        "train", "runs/voc/config.yaml", "--run-dir", "runs/voc", "--set", "train.max_steps=13"
    )
    assert ok.exit_code == 0, ok.output
    assert "trained to step 13" in ok.output

    build_ljspeech(tmp_path / "LJSpeech-1.1")
    ok = invoke("prepare", "ljspeech", "LJSpeech-1.1", "--out", "data/ljspeech")
    assert ok.exit_code == 0, ok.output
    assert {p.name for p in Path("data/ljspeech").iterdir()} >= {"train.jsonl", "val.jsonl"}
    # The torchrun line in one process (two ranks: tests/test_dist.py).
    sets = [a for s in [*TINY_OVERRIDES, "train.max_steps=3"] for a in ("--set", s)]
    ok = invoke("train", recipes / "ljspeech" / "base.yaml", "--run-dir", "runs/lj", *sets)
    assert ok.exit_code == 0, ok.output
    assert "trained to step 3" in ok.output

    sf.write("speech.wav", chirp_plus_noise(22050, 0.3), 22050)
    ok = invoke("mel", "speech.wav", "-o", "mels/", "--plot")  # the hifigan profile by default
    assert ok.exit_code == 0, ok.output
    with np.load("mels/speech.npz") as written:  # the mel and its recorded profile
        frames = written["mel"].shape[1]
        np.savez("mel.npz", mel=written["mel"][:, :7], profile=written["profile"])
    ok = invoke("vocode", "runs/lj", "speech.wav", "mel.npz", "-o", "out/", "--steps", "6")
    assert ok.exit_code == 0, ok.output
    assert sf.info("out/speech.wav").frames == frames * 256
    assert sf.info("out/mel.wav").frames == 7 * 256

    labelled = apply_overrides(
        tiny_config, ["model.conditioning=none", "model.n_labels=10", "diffusion.label_dropout=0.1"]
    )
    _run_dir(labelled, tmp_path / "runs" / "sc09", labels=[str(i) for i in range(10)])
    ok = invoke("generate", "runs/sc09", "-n", "2", "--seconds", "0.05", "--label", "3",
                "--guidance", "1", "-o", "gen/")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in Path("gen").iterdir()) == ["label-3_000.wav", "label-3_001.wav"]
    assert sf.info("gen/label-3_000.wav").frames == round(0.05 * 22050)

    mel_cfg = apply_overrides(tiny_config, ["model.domain=mel", "model.conditioning=none"])
    _run_dir(mel_cfg, tmp_path / "runs" / "sc09-mel")
    _run_dir(tiny_config, tmp_path / "runs" / "sc09-voc")
    # The plain form, without --save-mels (it raised IndexError: mels saved to unplanned paths).
    ok = invoke("generate", "runs/sc09-mel", "--vocoder", "runs/sc09-voc", "-n", "2",
                "--seconds", "0.1", "-o", "two/")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in Path("two").iterdir()) == ["sample_000.wav", "sample_001.wav"]
    assert sf.info("two/sample_000.wav").frames == round(0.1 * 22050 / 256) * 256
    ok = invoke("generate", "runs/sc09-mel", "--vocoder", "runs/sc09-voc", "-n", "2",
                "--seconds", "0.1", "-o", "two-mels/", "--save-mels")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert np.load("two-mels/sample_001.npz")["mel"].shape == (80, round(0.1 * 22050 / 256))

    Path("refs").mkdir()
    sf.write("refs/speech.wav", sf.read("speech.wav")[0][: frames * 256], 22050)
    ok = invoke("evaluate", "refs/", "out/", "--json", "scores.json", "--no-pesq")
    assert ok.exit_code == 0, ok.output
    scores = json.loads(Path("scores.json").read_text(encoding="utf-8"))
    assert scores["total"]["files"] == 1 and scores["unmatched_gen"] == ["mel"]

    ok = invoke("export", "runs/lj", "lj.safetensors")
    assert ok.exit_code == 0, ok.output
    assert load_export("lj.safetensors")[2]["step"] == "3"

    ok = invoke("search-schedule", "runs/lj", "--steps", "2", "--manifest",
                "data/ljspeech/val.jsonl", "-o", "lj-6.pt", "--max-clips", "1")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    from audiodiff.checkpoint import load_checkpoint

    assert len(load_checkpoint("lj-6.pt")["config"]["sample"]["sigmas"]) == 2

    _save_like_lmnt(tmp_path / "diffwave-ljspeech.pt", lmnt_state_dict(), _params())
    ok = invoke("import-diffwave", "diffwave-ljspeech.pt", "lj-diffwave.safetensors")
    assert ok.exit_code == 0, ok.output
    assert json.loads(load_export("lj-diffwave.safetensors")[2]["config"])["mel"]["name"] == (
        "diffwave"
    )
