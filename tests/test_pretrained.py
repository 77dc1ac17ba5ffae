"""The shipped `small-speech` vocoder and the README's main job (`audiodiff demo`)."""

from __future__ import annotations

import functools

import pytest
import torch
from click.testing import CliRunner

from audiodiff.audio import load_audio
from audiodiff.cli import main
from audiodiff.config import mel_profile
from audiodiff.demo import DEFAULT_CLIP
from audiodiff.griffin_lim import griffin_lim
from audiodiff.metrics import mr_stft_distance
from audiodiff.pretrained import resolve_source, shipped_models
from audiodiff.vocoder import Vocoder


@pytest.mark.parametrize(
    "name,domain,limit_mib",
    # The stft vocoder's 9.3 M float16 weights are 18 MB; the waveform one's 0.66 M float32 3 MB.
    [("small-speech", "stft", 20), ("small-speech-waveform", "waveform", 4)],
)
def test_shipped_models_are_safetensors_exports_with_the_hifigan_profile(name, domain, limit_mib):
    assert name in shipped_models()
    path = resolve_source(name)
    assert path.suffix == ".safetensors" and path.stat().st_size <= limit_mib * 2**20
    vocoder = Vocoder.from_pretrained(name, device="cpu")
    assert vocoder.mel_config == mel_profile("hifigan")  # TTS front ends' mels fit
    assert vocoder.config.model.domain == domain


@functools.cache
def _copy_synthesis():
    """The shipped clip vocoded once for every test here (the tests only read the tensors)."""
    vocoder = Vocoder.from_pretrained("small-speech", device="cpu")
    audio, rate = load_audio(DEFAULT_CLIP, vocoder.sample_rate)
    mel = vocoder.mel(audio, rate)
    n = mel.shape[-1] * vocoder.hop_length
    out = vocoder(mel, seed=0)
    gl = griffin_lim(mel, vocoder.mel_config, generator=torch.Generator().manual_seed(0))
    return audio[0, :n], out[0, 0], gl[0], vocoder


def test_shipped_clip_vocodes_to_finite_audio_of_the_right_length():
    ref, out, _, vocoder = _copy_synthesis()
    assert vocoder.sample_rate == 22050 and out.shape == ref.shape
    assert torch.isfinite(out).all() and float(out.abs().max()) < 2.0


def test_readme_main_job_demo(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["demo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("original/example.wav", "diffusion/example.wav", "griffin-lim/example.wav",
                 "spectrograms.png"):  # fmt: skip
        assert (out / name).is_file()
    header, rule, diffusion, griffin = result.output.splitlines()[2:6]
    assert header.split()[:3] == ["method", "rtf", "mr_stft"] and set(rule) == {"-"}
    assert diffusion.startswith("diffusion ") and griffin.startswith("griffin-lim ")
    assert float(diffusion.split()[1]) > 0 and float(griffin.split()[1]) > 0
    again = CliRunner().invoke(main, ["demo", "-o", str(out)])
    assert again.exit_code == 2 and "exists" in again.output


def test_shipped_model_beats_griffin_lim_on_the_shipped_clip():
    """A regression guard, and the claim it guards: on the shipped clip (speech it never heard;
    seed 0) the shipped stft vocoder, one network step plus its mel-consistency refinement, has
    a lower MR-STFT distance than Griffin-Lim (64 iterations) from the same mel: 0.832 against
    1.412 at export. The held-out quality table is in MODEL.md. The margin 0.15 covers BLAS
    rounding across machines and is far below the gap; a worse network, refinement or decode
    shows (the network alone, unrefined, scores 0.99 here; the earlier waveform model 2.39).
    """
    ref, out, gl, vocoder = _copy_synthesis()
    assert vocoder.config.model.domain == "stft"
    model_score = float(mr_stft_distance(ref, out))
    gl_score = float(mr_stft_distance(ref, gl))
    assert model_score <= 0.832 + 0.15, model_score
    assert gl_score <= 1.412 + 0.25
    assert model_score < gl_score


def test_shipped_waveform_model_still_loads_and_vocodes():
    """The earlier waveform vocoder stays available under its own name (MR-STFT 2.39 on the
    shipped clip with its stored 6-step schedule; margin 0.25 for BLAS rounding)."""
    vocoder = Vocoder.from_pretrained("small-speech-waveform", device="cpu")
    audio, rate = load_audio(DEFAULT_CLIP, vocoder.sample_rate)
    mel = vocoder.mel(audio, rate)
    out = vocoder(mel, seed=0)[0, 0]
    n = mel.shape[-1] * vocoder.hop_length
    assert float(mr_stft_distance(audio[0, :n], out)) <= 2.393 + 0.25


@pytest.mark.filterwarnings("ignore:Not enough STFT frames")  # STOI of a 0.3 s clip
def test_demo_without_its_extras_writes_the_audio_and_says_what_it_left_out(
    tmp_path, write_wav, monkeypatch
):
    import audiodiff.demo as demo

    def missing() -> None:
        raise ModuleNotFoundError("no matplotlib")

    monkeypatch.setattr(demo, "check_plotting_available", missing)
    monkeypatch.setattr("audiodiff.evaluation.eval_extra_available", lambda: False)
    clip = write_wav("short.wav", duration_s=0.3)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["demo", "-o", str(out), "--clip", str(clip)])
    assert result.exit_code == 0, result.output
    assert "matplotlib is missing, so no spectrograms.png (pip install 'audiodiff[plot]'" in (
        result.output
    )
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["example.wav"] * 3
    # Nor the eval extra: the table has no PESQ and STOI, and says so.
    assert "pesq_wb" not in result.output
    assert "note: PESQ and STOI skipped: install the eval extra" in result.output
