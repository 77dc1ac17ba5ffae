"""A float16 mel (a TTS model running in half precision) is accepted wherever its float32 twin is
and gives the same audio within its rounding for one seed (issue 23, kind 7)."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch
from click.testing import CliRunner

from audiodiff.cli import main
from audiodiff.mel import MelSpectrogram
from audiodiff.seeds import item_key
from audiodiff.vocoder import Vocoder, check_mel

from .conftest import chirp_plus_noise, random_export


def _mel_with_silence(cfg) -> torch.Tensor:
    """``[1, n_mels, 24]`` float32: a chirp, then digital silence (values at the floor, ln 1e-5,
    which float16 rounds to -11.516, below the floor)."""
    audio = torch.from_numpy(chirp_plus_noise(cfg.sample_rate, 0.2)).float()
    audio = torch.cat([audio, torch.zeros(24 * cfg.hop_length - audio.numel())])[None]
    return MelSpectrogram(cfg)(audio[..., : 24 * cfg.hop_length])


def test_half_mel_is_accepted_and_sounds_as_its_float32_twin(tiny_config, tmp_path):
    mel = _mel_with_silence(tiny_config.mel)
    half = mel.half()
    assert float(half.min()) < float(mel.min()) - 2e-3  # the floor, rounded down by float16
    check_mel(half, tiny_config.mel)  # the range check allows for that rounding
    check_mel(half.float(), tiny_config.mel)  # and still when cast up (was: below the floor)
    check_mel(torch.cat([half.float(), mel]), tiny_config.mel)  # or batched with float32 twin
    # One noise key for a mel and its float16 rounding, so one seed gives one audio.
    assert item_key(mel[0]) == item_key(half[0]) == item_key(half[0].float())
    voc = Vocoder.from_pretrained(random_export(tiny_config, tmp_path / "m.safetensors"))
    full = voc(mel, seed=5, steps=6)

    # Within the rounding: the same noise, so the audio differs by a small fraction of itself
    # (another noise draw, which a float16 mel used to get, differs by about as much as it is).
    def rms(x: torch.Tensor) -> float:
        return float(x.pow(2).mean().sqrt())

    err = rms(voc(half, seed=5, steps=6) - full) / rms(full)
    other_noise = rms(voc(mel, seed=6, steps=6) - full) / rms(full)
    assert err < 0.05 and other_noise > 10 * err, (err, other_noise)


def test_cli_vocodes_a_float16_npy_as_its_float32_twin(tiny_config, tmp_path):
    mel = _mel_with_silence(tiny_config.mel)[0].numpy()
    np.save(tmp_path / "half.npy", mel.astype(np.float16))
    np.save(tmp_path / "full.npy", mel)
    model = random_export(tiny_config, tmp_path / "m.safetensors")
    args = ["vocode", str(model), str(tmp_path / "half.npy"), str(tmp_path / "full.npy")]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out"), "--steps", "6"])
    assert result.exit_code == 0, result.output
    a, _ = sf.read(tmp_path / "out" / "half.wav")
    b, _ = sf.read(tmp_path / "out" / "full.wav")
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.05 * np.sqrt(np.mean(b**2))
