"""Metrics, folder evaluation and the ``evaluate`` command, on synthetic speech-like audio."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from audiodiff import evaluation, metrics
from audiodiff.cli import main
from audiodiff.config import mel_profile
from audiodiff.evaluation import evaluate_dirs, format_comparison, format_table
from audiodiff.mel import MelSpectrogram
from audiodiff.metrics import (
    align_pair,
    f0_errors,
    log_mel_l1,
    mel_cepstral_distortion,
    mr_stft_distance,
    real_time_factor,
)

SR = 22050
HAVE_EVAL = all(importlib.util.find_spec(m) is not None for m in ("pesq", "pystoi"))


def speechlike(
    sample_rate: int = SR, duration_s: float = 1.5, f0_hz: float = 120.0, vibrato: float = 0.08
) -> np.ndarray:
    """Harmonics of a gliding F0 under two moving formants, in four syllables: float32 [T].

    Speech-like enough that PESQ and STOI respond to noise over their whole range.
    """
    n = int(sample_rate * duration_s)
    t = np.arange(n) / sample_rate
    f0 = f0_hz * (1 + vibrato * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formant1 = 500 + 300 * np.sin(2 * np.pi * 2 * t)
    formant2 = 1500 + 600 * np.cos(2 * np.pi * 1.3 * t)
    x = np.zeros(n)
    for k in range(1, int(7000 / f0_hz)):
        fk = k * f0
        resonance = np.exp(-(((fk - formant1) / 200) ** 2))
        resonance += 0.5 * np.exp(-(((fk - formant2) / 300) ** 2)) + 0.02
        x += resonance / np.sqrt(k) * np.sin(k * phase)
    x *= 0.05 + 0.95 * np.sin(np.pi * 4 * t / duration_s) ** 2
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def with_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.size)
    return (x + noise * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))).astype(np.float32)


def write(folder: Path, name: str, x: np.ndarray, sample_rate: int = SR) -> Path:
    path = folder / f"{name}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    # FLOAT keeps the samples exact, so identical inputs stay identical after the round trip.
    sf.write(path, x, sample_rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speechlike()


def test_identical_files_give_exactly_zero_distances(tmp_path, clip):
    for folder in ("ref", "gen"):
        write(tmp_path / folder, "a", clip)
        write(tmp_path / folder, "sub/b", clip[: SR // 2])
    result = evaluate_dirs(tmp_path / "ref", tmp_path / "gen", pesq=False)
    assert [row["name"] for row in result["files"]] == ["a", "sub/b"]
    for row in [*result["files"], result["total"]]:
        assert row["mr_stft"] == 0.0
        assert row["log_mel_l1"] == 0.0
        assert row["mcd_db"] == 0.0
    assert result["total"]["files"] == 2
    assert result["unmatched_ref"] == result["unmatched_gen"] == result["errors"] == []


@pytest.mark.skipif(not HAVE_EVAL, reason="needs the eval extra (pesq, pystoi)")
def test_identical_files_give_best_pesq_and_stoi(clip):
    # 4.64 is the ceiling of P.862.2's MOS-LQO mapping.
    assert metrics.pesq_wb(clip, clip, SR) == pytest.approx(4.644, abs=1e-3)
    assert metrics.stoi(clip, clip, SR) == pytest.approx(1.0, abs=1e-6)


def test_every_metric_is_monotone_in_added_noise(tmp_path, clip):
    # Measured (this clip, seed 0): SNR 30/20/10/0 dB -> MR-STFT 2.35/3.23/4.41/6.14,
    # MCD 6.6/8.0/9.3/10.4 dB, PESQ WB 2.52/1.59/1.22/1.05, STOI 0.991/0.936/0.881/0.807.
    write(tmp_path / "ref", "a", clip)
    totals = []
    for snr_db in (30, 20, 10, 0):
        write(tmp_path / f"snr{snr_db}", "a", with_noise(clip, snr_db))
        totals.append(evaluate_dirs(tmp_path / "ref", tmp_path / f"snr{snr_db}")["total"])
    for key in ("mr_stft", "log_mel_l1", "mcd_db"):
        values = [t[key] for t in totals]
        assert all(a < b for a, b in zip(values, values[1:], strict=False)), (key, values)
        assert values[0] > 0.1, (key, values)
    if HAVE_EVAL:
        for key in ("pesq_wb", "stoi"):
            values = [t[key] for t in totals]
            assert all(a > b for a, b in zip(values, values[1:], strict=False)), (key, values)


def test_mr_stft_follows_its_definition_for_a_gain():
    # Doubling every magnitude: SC = ||2X - X|| / ||X|| = 1 and LM = ln 2 at every resolution.
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0)) * 0.1
    assert torch.allclose(
        mr_stft_distance(x, 2 * x),
        torch.full((2,), 1 + math.log(2), dtype=torch.float64),
        atol=1e-4,
    )
    assert mr_stft_distance(x[0], x[0]).shape == ()


def test_log_mel_l1_and_mcd_under_a_gain(clip):
    mel = MelSpectrogram(mel_profile("hifigan")).double()
    # ln-compressed mels shift by exactly ln 2 where above the 1e-5 floor: everywhere for noise.
    noise = torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.1
    assert float(log_mel_l1(noise, 2 * noise, mel)) == pytest.approx(math.log(2), abs=1e-9)
    # A gain only moves c0, which MCD excludes (where no band sits at the floor).
    assert float(mel_cepstral_distortion(noise, 2 * noise, SR)) < 1e-9
    assert float(mel_cepstral_distortion(clip, with_noise(clip, 10), SR)) > 5.0


def test_align_pair_trims_within_one_hop_and_refuses_more():
    ref, gen = torch.zeros(1000), torch.zeros(1000 - 256)
    r, g, trimmed = align_pair(ref, gen, hop_length=256)
    assert r.shape == g.shape == (744,) and trimmed == 256
    with pytest.raises(ValueError, match="1000 samples but generated has 743"):
        align_pair(ref, torch.zeros(743), hop_length=256)


def test_evaluate_trims_small_and_reports_large_length_mismatch(tmp_path, clip):
    write(tmp_path / "ref", "short", clip)
    write(tmp_path / "ref", "long", clip)
    write(tmp_path / "gen", "short", clip[:-100])
    write(tmp_path / "gen", "long", clip[:-1000])
    result = evaluate_dirs(tmp_path / "ref", tmp_path / "gen", pesq=False)
    assert [r["name"] for r in result["files"]] == ["short"]
    assert result["files"][0]["trimmed_samples"] == 100
    assert result["files"][0]["mr_stft"] == 0.0  # trimmed at the end, not shifted
    (error,) = result["errors"]
    assert error["name"] == "long" and str(clip.size) in error["error"]
    assert f"not scored: long: {error['error']}" in format_table(result)


def test_tables_mean_rows_and_method_comparison(tmp_path, clip):
    for name in ("a", "b"):
        write(tmp_path / "ref", name, clip)
        write(tmp_path / "gen", name, with_noise(clip, 20))
        write(tmp_path / "same", name, clip)
    noisy = evaluate_dirs(tmp_path / "ref", tmp_path / "gen", pesq=False)
    footer = format_table(noisy).splitlines()[5]
    assert footer.startswith("mean of 2") and "(sum)" in footer
    exact = evaluate_dirs(tmp_path / "ref", tmp_path / "same", pesq=False)
    table = format_comparison({"noisy": noisy, "exact": exact}, {"noisy": 0.5})
    lines = table.splitlines()
    assert lines[0].startswith("2 clips, ")
    assert lines[1].split()[:3] == ["method", "rtf", "mr_stft"]
    noisy_row, exact_row = lines[3].split(), lines[4].split()
    assert noisy_row[:2] == ["noisy", "0.500"] and exact_row[:2] == ["exact", "-"]
    assert float(noisy_row[2]) == pytest.approx(noisy["total"]["mr_stft"], abs=1e-4)
    assert float(exact_row[2]) == 0.0


def test_method_comparison_says_what_it_leaves_out(tmp_path, clip, monkeypatch):
    """The demo's table: without the eval extra PESQ and STOI are skipped, and it says so (the
    note evaluate prints was dropped), once for both methods; unpaired files are named."""
    import audiodiff.evaluation

    monkeypatch.setattr(audiodiff.evaluation, "eval_extra_available", lambda: False)
    write(tmp_path / "ref", "a", clip)
    write(tmp_path / "gen", "a", with_noise(clip, 20))
    write(tmp_path / "gen", "extra", clip)
    write(tmp_path / "same", "a", clip)
    results = {
        "noisy": evaluate_dirs(tmp_path / "ref", tmp_path / "gen"),
        "exact": evaluate_dirs(tmp_path / "ref", tmp_path / "same"),
    }
    assert "pesq_wb" not in results["noisy"]["metrics"]
    lines = format_comparison(results, {}).splitlines()
    notes = [line for line in lines if line.startswith("note: PESQ and STOI skipped")]
    assert notes == ["note: PESQ and STOI skipped: install the eval extra: pip install "
                     "'audiodiff[eval]'"]  # fmt: skip
    assert "noisy: only generated (1): extra" in lines


def test_unmatched_names_are_reported(tmp_path, clip):
    write(tmp_path / "ref", "a", clip)
    write(tmp_path / "ref", "b", clip)
    write(tmp_path / "gen", "a", clip)
    write(tmp_path / "gen", "c", clip)
    result = evaluate_dirs(tmp_path / "ref", tmp_path / "gen", pesq=False)
    assert result["unmatched_ref"] == ["b"] and result["unmatched_gen"] == ["c"]
    table = format_table(result)
    assert "only in reference (1): b" in table and "only generated (1): c" in table
    only_a = evaluate_dirs(tmp_path / "ref", tmp_path / "gen", pesq=False, names=["a"])
    assert [r["name"] for r in only_a["files"]] == ["a"]
    assert only_a["unmatched_ref"] == only_a["unmatched_gen"] == []
    write(tmp_path / "other", "z", clip)
    with pytest.raises(ValueError, match="no file names in common"):
        evaluate_dirs(tmp_path / "ref", tmp_path / "other", pesq=False)


def test_evaluate_follows_symlinked_folders_and_notes_refused_links(tmp_path, clip):
    """Issue 11 kind 5: a reference folder assembled from symlinked speaker folders is scored in
    full (rglob skipped them: 1 of 3 names), a loop is not followed, and it is noted."""
    for side in ("ref", "gen"):
        write(tmp_path / side / "alice", "a", clip)
        for name in ("bob", "carol"):
            write(tmp_path / f"{side}-store" / name, "a", clip)
            (tmp_path / side / name).symlink_to(tmp_path / f"{side}-store" / name)
    (tmp_path / "ref" / "alice" / "loop").symlink_to(tmp_path / "ref")
    result = evaluate_dirs(tmp_path / "ref", tmp_path / "gen", pesq=False)
    assert [r["name"] for r in result["files"]] == ["alice/a", "bob/a", "carol/a"]
    assert all(r["mr_stft"] == 0.0 for r in result["files"])
    (note,) = result["notes"]
    assert note.startswith("reference link alice/loop not followed: link loop")
    assert f"note: {note}" in format_table(result)


def test_missing_eval_extra_is_explained(tmp_path, clip, monkeypatch):
    write(tmp_path / "ref", "a", clip)
    monkeypatch.setattr(evaluation, "eval_extra_available", lambda: False)
    with pytest.raises(ModuleNotFoundError, match=r"audiodiff\[eval\]"):
        evaluate_dirs(tmp_path / "ref", tmp_path / "ref", pesq=True)
    result = evaluate_dirs(tmp_path / "ref", tmp_path / "ref")
    assert "pesq_wb" not in result["metrics"]
    assert any("audiodiff[eval]" in note for note in result["notes"])


def test_f0_errors_measure_a_pitch_shift():
    ref = speechlike(duration_s=0.6, f0_hz=200.0, vibrato=0.0)
    shifted = speechlike(duration_s=0.6, f0_hz=210.0, vibrato=0.0)
    assert f0_errors(ref, ref, SR) == (0.0, 0.0)
    rmse_hz, vuv_error = f0_errors(ref, shifted, SR)
    assert rmse_hz == pytest.approx(10.0, abs=1.5)
    assert vuv_error < 0.1


def test_real_time_factor():
    assert real_time_factor(3.0, 2.0) == 1.5
    with pytest.raises(ValueError, match="audio_s must be positive, got 0"):
        real_time_factor(1.0, 0.0)


def test_cli_evaluate_table_json_and_refusals(tmp_path, clip):
    write(tmp_path / "ref", "a", clip)
    write(tmp_path / "gen", "a", with_noise(clip, 20))
    out = tmp_path / "scores.json"
    args = ["evaluate", str(tmp_path / "ref"), str(tmp_path / "gen"), "--no-pesq"]
    runner = CliRunner()
    result = runner.invoke(main, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "mr_stft" in result.output and "a  " in result.output
    assert "mean of" not in result.output  # one file: its row is the mean
    saved = json.loads(out.read_text())
    assert saved["files"][0]["name"] == "a" and saved["total"]["mcd_db"] > 0
    out.write_text("keep me")
    refused = runner.invoke(main, [*args, "--json", str(out)])
    assert refused.exit_code == 2 and "exists" in refused.output
    assert out.read_text() == "keep me"
    assert runner.invoke(main, [*args, "--json", str(out), "--overwrite"]).exit_code == 0
    assert json.loads(out.read_text())["profile"] == "hifigan"
    missing = runner.invoke(main, ["evaluate", str(tmp_path / "nope"), str(tmp_path / "gen")])
    assert missing.exit_code == 2
    assert missing.output.strip().splitlines() == [
        f"audiodiff: error: reference directory {tmp_path / 'nope'} does not exist"
    ]


class _CountingScorer:
    """Stands in for the MOS predictors (the eval extra CI does not install): a score that depends
    on the audio, and a count of the clips scored."""

    calls = 0

    def score(self, audio, sample_rate):
        type(self).calls += 1
        from audiodiff.perceptual import PERCEPTUAL_KEYS

        return {k: float(np.abs(np.asarray(audio)).mean()) for k in PERCEPTUAL_KEYS}


def test_reference_mos_cache_is_keyed_on_the_file_not_its_name(tmp_path, monkeypatch):
    """Issue 11 kind 4, without the eval extra: each reference is scored once per cache, and
    another folder's file of the same name is scored, not looked up (the cache was keyed on the
    name and gave the first folder's MOS)."""
    from .conftest import chirp_plus_noise

    monkeypatch.setattr(evaluation, "PerceptualScorer", _CountingScorer)
    _CountingScorer.calls = 0
    x = chirp_plus_noise(22050, 0.5)
    for side, audio in (("ref", x), ("gen", 0.5 * x), ("ref2", 0.1 * x)):
        (tmp_path / side).mkdir()
        sf.write(tmp_path / side / "a.wav", audio, 22050, subtype="FLOAT")
    cache: dict = {}

    def run(ref):
        return evaluate_dirs(tmp_path / ref, tmp_path / "gen", pesq=False, perceptual=True,
                             ref_mos=cache)["files"][0]  # fmt: skip

    first = run("ref")
    assert _CountingScorer.calls == 2 and len(cache) == 1  # the generated file and its reference
    assert [*cache][0].startswith(f"{(tmp_path / 'ref' / 'a.wav').resolve()}|")
    second = run("ref")
    assert _CountingScorer.calls == 3  # only the generated file again
    third = run("ref2")
    assert _CountingScorer.calls == 5 and len(cache) == 2
    key = [k for k in first if k.startswith("ref_")][0]
    assert second[key] == first[key] != third[key]
