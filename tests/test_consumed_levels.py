"""Levels are checked on the signal the model consumes, after every conversion (issue 23, kind
6): a clip with nothing below the model's Nyquist frequency is silent once resampled, so the
training scan skips it instead of counting it usable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from audiodiff.audio import AudioError, load_model_audio
from audiodiff.config_io import apply_overrides
from audiodiff.manifest import manifest_from_files
from audiodiff.scan import check_clip
from audiodiff.train import Trainer

from .conftest import chirp_plus_noise


def _ultrasonic(path, rate=44100, seconds=0.5):
    """A loud 15 kHz tone at 44.1 kHz: above a 22.05 kHz model's Nyquist frequency (11 kHz).
    Faded in and out, as a recording is: an abrupt start would leave the resampler's transient."""
    t = np.arange(int(rate * seconds)) / rate
    fade = np.hanning(t.size)
    sf.write(path, 0.5 * fade * np.sin(2 * np.pi * 15000 * t), rate, subtype="FLOAT")
    return path


def test_scan_measures_after_the_resampling(tmp_path):
    tone = _ultrasonic(tmp_path / "tone.wav")
    opts = {"min_duration_s": 0.1, "silence_threshold": 1e-4}
    assert check_clip(str(tone), **opts)["reason"] is None  # at the file's rate: loud
    reason = check_clip(str(tone), **opts, sample_rate=22050)["reason"]
    assert reason.startswith("silent: after resampling from 44100 to 22050 Hz, peak ")
    # What vocode and the other commands load says the same.
    with pytest.raises(AudioError, match="after resampling from 44100 to 22050 Hz, peak .* below"):
        load_model_audio(tone, 22050)
    speech = tmp_path / "speech.wav"
    sf.write(speech, chirp_plus_noise(44100, 0.5), 44100)
    assert check_clip(str(speech), **opts, sample_rate=22050)["reason"] is None


def test_training_skips_what_resampling_silences(tiny_config, write_wav, tmp_path):
    good = [write_wav(f"g{i}.wav", duration_s=0.3, seed=i) for i in range(2)]
    tone = _ultrasonic(tmp_path / "tone.wav")
    manifest = manifest_from_files([*good, tone], tmp_path / "train.jsonl")
    cfg = apply_overrides(tiny_config, [f"data.train_manifest={manifest}", "train.max_steps=0"])
    trainer = Trainer(cfg, tmp_path / "run", log=lambda _: None)
    assert len(trainer.train_set) == 2
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())["train"]
    assert report["skipped_by_reason"] == {"silent": 1}
    assert "after resampling from 44100 to 22050 Hz" in report["skipped"][0]["reason"]
