"""Conversions are said, once per run (issue 23, kind 5): resampled inputs and from which rates,
mixed-down inputs, and inputs whose rate leaves the mel empty below the model's f_max."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from audiodiff.config_io import apply_overrides
from audiodiff.input_notes import InputNotes
from audiodiff.schedule_search import load_clips_from_manifest
from audiodiff.train import Trainer

from .conftest import chirp_plus_noise, invoke, random_export


def _inputs(tmp_path):
    """An 8 kHz mono file, a 48 kHz stereo file and a 22.05 kHz mono one (the model's rate)."""
    paths = []
    for name, rate, channels in (("tel", 8000, 1), ("studio", 48000, 2), ("plain", 22050, 1)):
        x = chirp_plus_noise(rate, 0.3) * 0.5
        path = tmp_path / "in" / f"{name}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, np.stack([x] * channels, axis=1), rate)
        paths.append(path)
    return paths


EXPECTED = (
    "note: of 3 inputs, 2 resampled to 22050 Hz (from 8000 Hz: 1, from 48000 Hz: 1), 1 mixed "
    "down to mono (from 2 channels: 1), 1 band-limited below the model's f_max 8000 Hz (a file "
    "at 8000 Hz holds nothing above 4000 Hz, so the mel is empty there)"
)


def test_the_note_counts_and_is_silent_when_nothing_was_done():
    notes = InputNotes(22050, 8000.0)
    notes.add(22050, 1)
    assert notes.note() is None
    notes = InputNotes(22050, None)  # f_max null: the whole band, so 16 kHz files are limited
    notes.add(16000, 1, count=2)
    assert notes.note() == (
        "note: of 2 inputs, 2 resampled to 22050 Hz (from 16000 Hz: 2), 2 band-limited below "
        "the model's f_max 11025 Hz (a file at 16000 Hz holds nothing above 8000 Hz, so the mel "
        "is empty there)"
    )


def test_vocode_and_mel_say_what_they_converted(tiny_config, tmp_path):
    paths = _inputs(tmp_path)
    model = random_export(tiny_config, tmp_path / "m.safetensors")
    result = invoke("vocode", model, *paths, "-o", tmp_path / "out", "--steps", "6")
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "note: of" in line] == [
        f"audiodiff: {EXPECTED}"
    ]
    result = invoke("mel", *paths, "--profile", "hifigan", "-o", tmp_path / "mels")
    assert result.exit_code == 0, result.output
    assert f"audiodiff: {EXPECTED}" in result.stderr
    plain = invoke("vocode", model, paths[2], "-o", tmp_path / "plain", "--steps", "6")
    assert plain.exit_code == 0 and "note: of" not in plain.output


def test_training_and_the_schedule_search_say_it_too(tiny_config, tmp_path):
    from audiodiff.manifest import manifest_from_files

    paths = _inputs(tmp_path)
    manifest = manifest_from_files(paths, tmp_path / "train.jsonl")
    notes = InputNotes(22050, 8000.0)
    load_clips_from_manifest(manifest, 22050, log=print, notes=notes)
    assert notes.note() == EXPECTED
    cfg = apply_overrides(tiny_config, [f"data.train_manifest={manifest}", "train.max_steps=0"])
    messages = []
    Trainer(cfg, tmp_path / "run", log=messages.append)
    assert f"train data {EXPECTED}" in messages
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["train"]["sample_rates"] == {"22050": 1, "48000": 1, "8000": 1}
