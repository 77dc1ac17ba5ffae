"""Messages that used to mislead (issue 23, kind 8): a failed checkpoint write, a transposed mel,
an empty file, ``--steps 0``, and ``f_max: null`` against the same band written as a number."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from audiodiff.audio import AudioError, load_audio
from audiodiff.checkpoint import latest_checkpoint, load_checkpoint
from audiodiff.cli import main
from audiodiff.config import ExperimentConfig, mel_profile
from audiodiff.config_rules import architecture_changes
from audiodiff.datasets.prepare import probe_audio
from audiodiff.files import read_mel_file
from audiodiff.mel import MelSpectrogram
from audiodiff.scan import check_clip
from audiodiff.schedule import NoiseSchedule
from audiodiff.vocoder import check_mel, check_profile, profile_difference

from .conftest import manifest_overrides

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "smoke" / "vocoder.yaml"


def _one_error_line(result) -> str:
    # stderr also carries a training run's progress bar; the error is its one "audiodiff:" line.
    lines = [line for line in result.stderr.splitlines() if "audiodiff:" in line]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("audiodiff: error: ") and "Traceback" not in result.output
    return lines[0]


def test_a_full_disk_is_one_line_naming_the_file_and_the_kept_checkpoint(
    tmp_path, manifests, monkeypatch
):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step", 0) >= 4:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    args = ["train", str(RECIPE), "--run-dir", str(run)]
    for s in [*manifest_overrides(manifests), "train.max_steps=4", "train.save_every=2"]:
        args += ["--set", s]
    line = _one_error_line(CliRunner().invoke(main, args))
    assert f"could not write {run / 'step_00000004.pt'}: No space left on device" in line
    assert f"the latest checkpoint, {run / 'step_00000002.pt'}, is intact" in line
    assert latest_checkpoint(run) == run / "step_00000002.pt"
    assert load_checkpoint(run)["step"] == 2
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]


def test_a_transposed_mel_is_named_as_such(tiny_config):
    cfg = tiny_config.mel
    mel = MelSpectrogram(cfg)(torch.randn(1, 66 * cfg.hop_length) * 0.1)  # [1, 80, 66]
    assert check_mel(mel, cfg).shape == (1, 80, 66)
    with pytest.raises(ValueError, match=r"mel has 66 bins .* likely transposed .*pass mel\.T"):
        check_mel(mel[0].T, cfg)
    with pytest.raises(ValueError) as err:  # a real bin-count mismatch says nothing of the sort
        check_mel(mel[:, :60], cfg)
    assert "transposed" not in str(err.value)


def test_an_empty_file_is_called_empty_not_a_format_error(tmp_path):
    for name in ("empty.wav", "empty.flac", "empty.npy", "empty.pt"):
        (tmp_path / name).write_bytes(b"")
    for name in ("empty.wav", "empty.flac"):
        path = tmp_path / name
        with pytest.raises(AudioError) as err:
            load_audio(path)
        assert str(err.value) == f"{path}: empty file (0 bytes), not audio"
        report = check_clip(str(path), min_duration_s=0.1, silence_threshold=1e-4)
        assert report["reason"] == "empty: empty file (0 bytes)"
        assert probe_audio(path, 0.1, 1e-4)["skip"] == ("empty", "empty file (0 bytes)")
    for name in ("empty.npy", "empty.pt"):
        with pytest.raises(ValueError, match=r"is not a readable mel file: empty file \(0 bytes\)"):
            read_mel_file(tmp_path / name)
    # A broken (non-empty) file keeps libsndfile's reason, without its b'...' spelling of the name.
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError) as err:
        load_audio(tmp_path / "bad.wav")
    assert "not a readable audio file" in str(err.value) and "b'" not in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ["vocode", "no-such-model", "no-such.wav", "-o", "out", "--steps", "0"],
        ["generate", "no-such-model", "-o", "out", "--steps", "0"],
        ["demo", "--steps", "0"],
    ],
)
def test_steps_0_is_refused_first_and_as_a_step_count(tmp_path, args, monkeypatch):
    """(search-schedule and export refused it first already, in their own words.)"""
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(CliRunner().invoke(main, args))
    assert "'--steps': 0 is not in the range x>=1" in line  # not "model not found", not a schedule
    assert not (tmp_path / "out").exists()


def test_steps_0_in_the_library_is_a_step_count_not_a_schedule_question():
    with pytest.raises(ValueError, match="steps must be at least 1") as err:
        NoiseSchedule.from_config(ExperimentConfig().diffusion).diffwave_fast_sigmas(0)
    assert "diffwave-fast" not in str(err.value)


def test_f_max_null_is_the_nyquist_band_and_suggestions_are_accepted():
    full = dataclasses.replace(mel_profile("hifigan"), f_max=11025.0)  # keeps the name hifigan
    null = dataclasses.replace(full, name="custom", f_max=None)
    assert profile_difference(null, full) is None
    check_profile(null, full)  # accepted
    a = dataclasses.replace(ExperimentConfig(), mel=full)
    same_name = dataclasses.replace(null, name="hifigan")
    assert architecture_changes(a, dataclasses.replace(a, mel=same_name)) == []  # a resume
    # The named profile 'hifigan' (f_max 8000) is not this model's: suggest only --from.
    with pytest.raises(ValueError) as err:
        check_profile("hifigan", full)
    assert "f_max: 8000.0 vs 11025.0" in str(err.value)
    assert "--profile hifigan" not in str(err.value) and "--from MODEL" in str(err.value)
    with pytest.raises(ValueError, match="recompute it with --profile bigvgan-24k or --from"):
        check_profile("hifigan", mel_profile("bigvgan-24k"))
