"""ONNX export: onnxruntime's step and upsampler match PyTorch within 1e-4, the README's loop
reproduces the PyTorch sampler from the same noise, and bad requests are refused before work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from audiodiff.cli import main
from audiodiff.config_io import apply_overrides
from audiodiff.diffusion import Denoiser
from audiodiff.samplers import sample
from audiodiff.synthesis import make_sampling_spec
from audiodiff.vocoder import Vocoder

from .conftest import chirp_plus_noise, one_line_exit_2, random_export

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from audiodiff.config import ExperimentConfig

    from .conftest import TINY_OVERRIDES

    tmp = tmp_path_factory.mktemp("onnx")
    cfg = apply_overrides(ExperimentConfig(), TINY_OVERRIDES)
    model = random_export(cfg, tmp / "tiny.safetensors", output_std=0.2)
    result = CliRunner().invoke(
        main, ["export", str(model), str(tmp / "voc.onnx"), "--sampler", "ddpm", "--steps", "4"]
    )
    assert result.exit_code == 0, result.output
    return model, tmp


def test_export_writes_the_three_files_and_the_schedule(exported):
    model, tmp = exported
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("voc")) == [
        "voc.json",
        "voc.onnx",
        "voc.prepare.onnx",
    ]
    with open(tmp / "voc.json", encoding="utf-8") as fh:
        schedule = json.load(fh)
    vocoder = Vocoder.from_pretrained(model, device="cpu")
    spec = make_sampling_spec(vocoder.config, vocoder.schedule, sampler="ddpm", steps=4)
    sigmas = [row["sigma"] for row in schedule["steps"]]
    assert sigmas == [float(s) for s in spec.sigmas[:-1]]
    assert schedule["sampler"] == "ddpm" and schedule["eta"] == 1.0
    assert schedule["mel"]["name"] == vocoder.mel_config.name
    assert schedule["mel"]["hop_length"] == vocoder.hop_length
    assert schedule["start_std"] == pytest.approx((1 + sigmas[0] ** 2) ** 0.5)
    # The last step lands on x0: nothing of x and no fresh noise is kept.
    assert schedule["steps"][-1]["sigma_down"] == 0 and schedule["steps"][-1]["sigma_up"] == 0
    for row, sigma_next in zip(schedule["steps"], sigmas[1:], strict=False):
        # Ancestral (eta 1): fresh noise every step, and sigma_down^2 + sigma_up^2 = sigma_next^2.
        assert row["sigma_up"] > 0
        assert row["sigma_down"] ** 2 + row["sigma_up"] ** 2 == pytest.approx(sigma_next**2)
    c_noise = vocoder.schedule.sigma_to_t(torch.tensor(sigmas, dtype=torch.float64))
    assert [row["c_noise"] for row in schedule["steps"]] == pytest.approx(c_noise.tolist())


@pytest.mark.parametrize("batch,frames", [(1, 7), (3, 12)])
def test_runtime_matches_pytorch_within_1e_4(exported, batch, frames):
    model, tmp = exported
    vocoder = Vocoder.from_pretrained(model, device="cpu")
    step = ort.InferenceSession(str(tmp / "voc.onnx"))
    prepare = ort.InferenceSession(str(tmp / "voc.prepare.onnx"))
    gen = torch.Generator().manual_seed(batch)
    mel = torch.randn(batch, vocoder.n_mels, frames, generator=gen) - 4.0
    mel_up = prepare.run(None, {"mel": mel.numpy()})[0]
    with torch.no_grad():
        expected_up = vocoder.net.spectrogram_upsampler(mel)
    assert mel_up.shape == (batch, vocoder.n_mels, frames * vocoder.hop_length)
    np.testing.assert_allclose(mel_up, expected_up.numpy(), atol=1e-4, rtol=0)
    denoiser = Denoiser(vocoder.net, vocoder.schedule, target=vocoder.config.diffusion.target)
    prepared = denoiser.prepare(mel)
    with open(tmp / "voc.json", encoding="utf-8") as fh:
        rows = json.load(fh)["steps"]
    for row in rows:
        x = torch.randn(batch, 1, mel_up.shape[-1], generator=gen) * (1 + row["sigma"])
        feed = {
            "x": x.numpy(),
            "sigma": np.full(batch, row["sigma"], np.float32),
            "c_noise": np.full(batch, row["c_noise"], np.float32),
            "mel_up": mel_up,
        }
        got = step.run(None, feed)[0]
        with torch.no_grad():
            want = denoiser(x, row["sigma"], prepared)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)


def readme_loop(marker: str = "onnx-loop-waveform") -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker}:[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, f"README lost its ONNX loop ({marker})"
    return match.group(1)


def test_readme_loop_reproduces_the_pytorch_sampler(exported, monkeypatch):
    model, tmp = exported
    vocoder = Vocoder.from_pretrained(model, device="cpu")
    mel = torch.randn(1, vocoder.n_mels, 9, generator=torch.Generator().manual_seed(5)) - 4.0
    monkeypatch.chdir(tmp)
    scope = {"mel": mel.numpy()}
    exec(compile(readme_loop(), "README.md", "exec"), scope)  # noqa: S102 - our own README
    audio = scope["audio"]

    # The same draws, in the loop's order: the start, then one per step.
    rng = np.random.default_rng(0)
    n = mel.shape[-1] * vocoder.hop_length
    with open(tmp / "voc.json", encoding="utf-8") as fh:
        schedule = json.load(fh)
    start = rng.standard_normal((1, 1, n), np.float32)
    draws = [rng.standard_normal((1, 1, n), np.float32) for _ in schedule["steps"]]
    spec = make_sampling_spec(vocoder.config, vocoder.schedule, sampler="ddpm", steps=4)
    denoiser = Denoiser(vocoder.net, vocoder.schedule, target=vocoder.config.diffusion.target)
    with torch.no_grad():
        x = torch.from_numpy(start) * float(schedule["start_std"])
        want = sample(
            spec.sampler,
            denoiser,
            x,
            spec.sigmas,
            eta=spec.eta,
            extra={"cond": denoiser.prepare(mel)},
            noise_sampler=lambda i, like: torch.from_numpy(draws[i]),
        )
    assert audio.shape == (n,)
    np.testing.assert_allclose(audio, want[0, 0].numpy(), atol=1e-4, rtol=0)


def test_refusals_come_before_any_work(exported, tiny_config, tmp_path):
    model, tmp = exported
    invoke = CliRunner().invoke
    before = (tmp / "voc.onnx").read_bytes()
    one_line_exit_2(
        invoke(main, ["export", str(model), str(tmp / "voc.onnx")]),
        "voc.onnx exists; pass --overwrite",
    )
    assert (tmp / "voc.onnx").read_bytes() == before
    one_line_exit_2(
        invoke(main, ["export", str(model), str(tmp_path / "v.bin")]),
        "must end in .safetensors or .onnx, got",
    )
    one_line_exit_2(
        invoke(main, ["export", str(model), str(tmp_path / "v.onnx"), "--steps", "0"]),
        "--steps must be at least 1, got 0",
    )
    stft_cfg = apply_overrides(tiny_config, ["model.domain=stft", "model.residual_channels=8"])
    stft = random_export(stft_cfg, tmp_path / "stft.safetensors")
    one_line_exit_2(
        invoke(main, ["export", str(stft), str(tmp_path / "s.onnx")]),
        "ONNX export of stft models covers the hifigan padding, ln mels of power 1, the mel "
        "prior and a start from noise; this model has prior 'standard'",
    )
    estimate_cfg = apply_overrides(
        tiny_config,
        ["model.domain=stft", "model.residual_channels=8", "model.prior=mel",
         "model.start=estimate"],
    )  # fmt: skip
    estimate = random_export(estimate_cfg, tmp_path / "estimate.safetensors")
    one_line_exit_2(
        invoke(main, ["export", str(estimate), str(tmp_path / "e.onnx")]),
        "this model has a DSP-estimate start (model.start 'estimate')",
    )
    prior_cfg = apply_overrides(tiny_config, ["model.prior=mel"])
    prior = random_export(prior_cfg, tmp_path / "prior.safetensors")
    one_line_exit_2(
        invoke(main, ["export", str(prior), str(tmp_path / "p.onnx")]),
        "covers vocoders with the standard prior; this model's prior is 'mel' (PriorGrad)",
    )
    dpm_cfg = apply_overrides(tiny_config, ["sample.sampler=dpmpp-2m"])
    dpm = random_export(dpm_cfg, tmp_path / "dpm.safetensors")
    one_line_exit_2(
        invoke(main, ["export", str(dpm), str(tmp_path / "d.onnx")]),
        "dpmpp-2m is multistep: pass --sampler ddim",
    )
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.json"))
    assert not list(tmp_path.glob("*.npz"))


@pytest.fixture(scope="module")
def stft_exported(tmp_path_factory):
    from audiodiff.config import ExperimentConfig

    from .conftest import STFT_TINY, TINY_OVERRIDES

    tmp = tmp_path_factory.mktemp("onnx_stft")
    refine = [
        "sample.steps=1",  # small-speech's form: one DPM-Solver++ step, then the refinement
        "sample.mel_match_iters=3",
        "sample.griffin_lim_iters=2",
        "sample.magnitude_blend=0.5",
    ]
    cfg = apply_overrides(ExperimentConfig(), TINY_OVERRIDES + STFT_TINY + refine)
    model = random_export(cfg, tmp / "tiny-stft.safetensors", output_std=0.2)
    result = CliRunner().invoke(main, ["export", str(model), str(tmp / "voc.onnx")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp.glob("voc*")) == [
        "voc.json", "voc.npz", "voc.onnx", "voc.prepare.onnx"
    ]  # fmt: skip
    return Vocoder.from_pretrained(model, device="cpu"), tmp


def test_stft_step_and_prepare_match_pytorch_within_1e_4(stft_exported):
    vocoder, tmp = stft_exported
    step = ort.InferenceSession(str(tmp / "voc.onnx"))
    prepare = ort.InferenceSession(str(tmp / "voc.prepare.onnx"))
    gen = torch.Generator().manual_seed(0)
    mel = torch.randn(2, vocoder.n_mels, 11, generator=gen) - 4.0
    denoiser = Denoiser(vocoder.net, vocoder.schedule, target=vocoder.config.diffusion.target)
    with torch.no_grad():
        prepared = denoiser.prepare(mel)
    cond = prepare.run(None, {"mel": mel.numpy()})[0]
    np.testing.assert_allclose(cond, prepared.conditioner.numpy(), atol=1e-4, rtol=0)
    for sigma in (80.0, 1.0, 0.05):
        x = torch.randn(2, vocoder.domain.channels, 11, generator=gen) * (1 + sigma)
        c_noise = float(vocoder.schedule.sigma_to_t(torch.tensor([sigma], dtype=torch.float64)))
        feed = {"x": x.numpy(), "sigma": np.full(2, sigma, np.float32),
                "c_noise": np.full(2, c_noise, np.float32), "conditioner": cond}  # fmt: skip
        with torch.no_grad():
            want = denoiser(x, sigma, prepared)
        np.testing.assert_allclose(step.run(None, feed)[0], want.numpy(), atol=1e-4, rtol=0)


def test_readme_stft_loop_equals_pytorch_from_the_same_start(stft_exported, monkeypatch):
    vocoder, tmp = stft_exported
    audio = np.concatenate([chirp_plus_noise(22050, 0.3, seed=s) for s in range(2)])
    mel = vocoder.mel(audio, 22050)
    monkeypatch.chdir(tmp)
    scope = {"mel": mel.numpy()}
    exec(compile(readme_loop("onnx-loop"), "README.md", "exec"), scope)  # noqa: S102
    spec = make_sampling_spec(vocoder.config, vocoder.schedule)
    assert spec.steps == 1 and spec.refinement.active  # what the JSON's numbers describe
    denoiser = Denoiser(vocoder.net, vocoder.schedule, target=vocoder.config.diffusion.target)
    n = mel.shape[-1]
    with torch.no_grad():
        scale = vocoder.domain.prior_std(mel)
        np.testing.assert_allclose(scope["scale"], scale.numpy(), rtol=1e-5, atol=0)
        x0 = denoiser(torch.from_numpy(scope["start"]), float(spec.sigmas[0]),
                      denoiser.prepare(mel))  # fmt: skip
        np.testing.assert_allclose(scope["x0"], x0.numpy(), atol=1e-4, rtol=0)
        want = vocoder.domain.from_model_window(
            x0, mel, first=0, total=n, start=0, stop=n, refinement=spec.refinement
        )
    assert scope["audio"].shape == (want.shape[-1],)
    assert float(np.abs(want[0, 0].numpy()).max()) > 1e-3
    np.testing.assert_allclose(scope["audio"], want[0, 0].numpy(), atol=1e-4, rtol=0)
