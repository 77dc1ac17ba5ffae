"""Output is never clipped silently (issue 23, kind 3): every command that writes audio scales a
clip that would clip down to full scale and says so in one note; in-range clips are untouched."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.output_level import PeakPolicy

from .conftest import chirp_plus_noise, invoke, random_export


def test_policy_scales_only_what_would_clip_and_says_so():
    policy = PeakPolicy()
    quiet = torch.linspace(-0.98, 0.98, 101)
    assert policy("quiet.wav", quiet) is quiet  # in range: the very same samples
    assert policy.note() is None
    loud = np.array([0.5, -1.26, 1.1, 0.2])
    out = policy("loud.wav", loud)
    np.testing.assert_allclose(out, loud / 1.26)  # one gain: the shape is kept
    assert np.abs(out).max() == pytest.approx(1.0)
    assert policy.note() == (
        "note: 1 of 2 outputs would have clipped (peak up to 1.26, 2 samples over full scale); "
        "each was scaled down to peak at full scale instead, by up to -2.0 dB: loud.wav"
    )
    for i in range(4):
        policy(f"x{i}.wav", torch.tensor([2.0, float("nan")]))
    assert "5 of 6 outputs" in policy.note() and "peak up to 2.00" in policy.note()
    assert policy.note().endswith("loud.wav, x0.wav, x1.wav and 2 more")


def _peak_at(monkeypatch, cls, method, peak):
    """Make ``cls.method``'s audio peak at ``peak`` (the random model's own level is arbitrary)."""
    real = getattr(cls, "_real_" + method, getattr(cls, method))
    monkeypatch.setattr(cls, "_real_" + method, real, raising=False)

    def scaled(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        return out / out.abs().amax(dim=-1, keepdim=True) * peak

    monkeypatch.setattr(cls, method, scaled)


def test_vocode_and_generate_scale_instead_of_clipping(tiny_config, tmp_path, monkeypatch):
    from audiodiff.config_io import apply_overrides
    from audiodiff.generate import GenerativeModel
    from audiodiff.vocoder import Vocoder

    model = random_export(tiny_config, tmp_path / "tiny.safetensors", output_std=0.2)
    speech = tmp_path / "speech.wav"
    sf.write(speech, chirp_plus_noise(22050, 0.4) * 0.9, 22050)
    _peak_at(monkeypatch, Vocoder, "__call__", 0.98)
    quiet = invoke("vocode", model, speech, "-o", tmp_path / "quiet", "--steps", "6")
    assert quiet.exit_code == 0 and "would have clipped" not in quiet.output
    _peak_at(monkeypatch, Vocoder, "__call__", 1.26)
    loud = invoke("vocode", model, speech, "-o", tmp_path / "loud", "--steps", "6")
    assert loud.exit_code == 0, loud.output
    assert "audiodiff: note: 1 of 1 outputs would have clipped (peak up to 1.26" in loud.stderr
    ints, _ = sf.read(tmp_path / "loud" / "speech.wav", dtype="int16")
    ref, _ = sf.read(tmp_path / "quiet" / "speech.wav", dtype="int16")
    assert np.abs(ints.astype(int)).max() == 32767
    # Scaled, not clipped: as many samples at full scale as the peak alone, and the same shape.
    assert (np.abs(ints.astype(int)) == 32767).sum() <= 2
    assert np.corrcoef(ints, ref)[0, 1] > 0.999

    cfg = apply_overrides(tiny_config, ["model.conditioning=none"])
    gen = random_export(cfg, tmp_path / "gen.safetensors", output_std=0.2)
    _peak_at(monkeypatch, GenerativeModel, "sample", 1.5)
    result = invoke("generate", gen, "-n", "2", "--seconds", "0.05", "--sampler", "ddim",
                    "--steps", "2", "-o", tmp_path / "gen")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "audiodiff: note: 2 of 2 outputs would have clipped (peak up to 1.50" in result.stderr
    for i in range(2):
        ints, _ = sf.read(tmp_path / "gen" / f"sample_00{i}.wav", dtype="int16")
        assert (np.abs(ints.astype(int)) == 32767).sum() <= 2


def test_demo_scales_instead_of_clipping(tmp_path, write_wav, monkeypatch):
    import audiodiff.demo as demo
    from audiodiff.vocoder import Vocoder

    monkeypatch.setattr(demo, "spectrogram_png", lambda *a, **k: None)  # not what is tested
    _peak_at(monkeypatch, Vocoder, "__call__", 1.26)
    messages = []
    clip = write_wav("short.wav", duration_s=0.3)
    demo.run_demo(tmp_path / "out", clip=clip, log=messages.append)
    assert any(
        m.startswith("note: 1 of 3 outputs would have clipped (peak up to 1.26") for m in messages
    ), messages
    ints, _ = sf.read(tmp_path / "out" / "diffusion" / "example.wav", dtype="int16")
    assert (np.abs(ints.astype(int)) == 32767).sum() <= 2
