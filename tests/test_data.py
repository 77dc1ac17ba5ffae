"""Manifests, broken-file scanning, hop-aligned deterministic crops, and the resumable sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import audiodiff.scan as scan_module
from audiodiff.audio import load_audio
from audiodiff.config import DataConfig
from audiodiff.data import ResumableDistributedSampler, SegmentDataset, make_loader
from audiodiff.dist import DistContext
from audiodiff.manifest import manifest_from_files, read_manifest
from audiodiff.scan import check_clip, data_report, scan_clips, summary_line, usable_clips

HOP, FRAMES, SR = 256, 8, 22050


def _dataset(paths, seed=0, random_crop=True, segment_frames=FRAMES):
    rows = [{"path": str(p)} for p in paths]
    checks = [check_clip(str(p), min_duration_s=0.1, silence_threshold=1e-4) for p in paths]
    assert all(c["reason"] is None for c in checks)
    return SegmentDataset(
        rows,
        checks,
        sample_rate=SR,
        hop_length=HOP,
        segment_frames=segment_frames,
        seed=seed,
        random_crop=random_crop,
    )


def test_manifest_round_trip_resolves_relative_paths(tmp_path, write_wav):
    a = write_wav("clips/a.wav")
    b = write_wav("clips/b.wav", sample_rate=16000, duration_s=0.25)
    manifest = manifest_from_files([a, b], tmp_path / "m.jsonl", labels=[1, "dog"], split="train")
    raw = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert raw[0]["path"] == "clips/a.wav"  # relative: manifest and data move together
    assert raw[1]["sample_rate"] == 16000 and raw[1]["duration_s"] == pytest.approx(0.25)
    rows = read_manifest(manifest)
    assert rows[0]["path"] == str(tmp_path / "clips/a.wav")
    assert rows[1]["label"] == "dog" and rows[1]["split"] == "train"


def test_manifest_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.wav"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        read_manifest(bad)
    bad.write_text('{"duration_s": 1.0}\n')
    with pytest.raises(ValueError, match="string 'path'"):
        read_manifest(bad)
    with pytest.raises(ValueError, match="cannot read manifest"):
        read_manifest(tmp_path / "missing.jsonl")


def test_scan_sorts_out_broken_files_with_reasons(tmp_path, write_wav):
    good = write_wav("good.wav")
    stereo = write_wav("stereo44k.wav", sample_rate=44100, channels=2)
    tiny = write_wav("tiny.wav", duration_s=0.05)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk" * 3)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), SR)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR // 2, np.float32), SR)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(SR // 2, np.nan, np.float32), SR, subtype="FLOAT")
    files = [good, stereo, tiny, corrupt, empty, silent, nan, tmp_path / "missing.wav"]
    rows = [{"path": str(p)} for p in files]
    checks = scan_clips(rows, min_duration_s=0.1, silence_threshold=1e-4)
    reasons = {files[i].name: c["reason"] for i, c in checks.items()}
    assert reasons["good.wav"] is None and reasons["stereo44k.wav"] is None
    assert reasons["tiny.wav"].startswith("too short: 0.050 s")
    assert reasons["corrupt.wav"].startswith("unreadable")
    assert reasons["missing.wav"].startswith("unreadable")
    assert reasons["empty.wav"].startswith("empty")
    assert reasons["silent.wav"].startswith("silent")
    assert reasons["nan.wav"].startswith("non-finite")
    report = data_report("m.jsonl", rows, checks)
    assert report["n_usable"] == 2 and report["n_skipped"] == 6
    assert report["sample_rates"] == {"22050": 1, "44100": 1}
    assert report["skipped_by_reason"] == {
        "empty": 1,
        "non-finite samples": 1,
        "silent": 1,
        "too short": 1,
        "unreadable": 2,
    }
    line = summary_line(report, "run/data_report.json")
    assert "2 of 8 clips usable" in line and "2 unreadable" in line and "\n" not in line


def _tone(path, rate, freq=440.0, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * rate / len(x)


def test_scan_cache_reprobes_a_file_converted_in_place(tmp_path, write_wav, monkeypatch):
    """Issue 11 kind 4: the dataset is converted in place from 44.1 to 22.05 kHz between two runs
    on one manifest (its bytes unchanged). The cache re-probes that file and only it, and the
    crop is still a 440 Hz tone (the bug read it at the old rate: 880 Hz)."""
    tone, other = tmp_path / "tone.wav", write_wav("other.wav")
    _tone(tone, 44100)
    manifest = manifest_from_files([tone, other], tmp_path / "train.jsonl")
    cache, cfg = tmp_path / ".scan_train.json", DataConfig()
    rows, checks, report = usable_clips(manifest, cfg, DistContext(), cache)
    assert report["n_probed"] == 2 and [c["file_rate"] for c in checks] == [44100, SR]

    _tone(tone, SR)
    probed = []
    real_check = scan_module.check_clip
    monkeypatch.setattr(
        scan_module, "check_clip", lambda path, **kw: probed.append(path) or real_check(path, **kw)
    )
    rows, checks, report = usable_clips(manifest, cfg, DistContext(), cache)
    assert report["n_probed"] == 1 and probed == [str(tone)]
    assert checks[0] == {"reason": None, "file_rate": SR, "n_frames": SR, "channels": 1}
    data = SegmentDataset(rows, checks, sample_rate=SR, hop_length=HOP, segment_frames=64, seed=0)
    crop = data[(0, 0)]["audio"][0].numpy()
    assert crop.shape == (64 * HOP,) and np.abs(crop).max() > 0.4
    assert abs(_dominant_hz(crop, SR) - 440.0) <= SR / len(crop)

    # Unchanged files are not decoded again, and the cache still holds both.
    _, again, report = usable_clips(manifest, cfg, DistContext(), cache)
    assert report["n_probed"] == 0 and again == checks and len(probed) == 1
    # A file changed under a running trainer is refused by name, not read at the scanned rate.
    _tone(tone, 44100)
    with pytest.raises(ValueError, match=r"tone.wav is now 44100 Hz but was 22050 Hz"):
        data[(0, 0)]


def test_crops_are_hop_aligned_deterministic_and_padded(write_wav):
    long = write_wav("long.wav", duration_s=1.0, seed=3)
    short = write_wav("short.wav", duration_s=0.15, seed=4)
    ds = _dataset([long, short], seed=7)
    full, _ = load_audio(long)
    starts = set()
    for epoch in range(6):
        item = ds[(epoch, 0)]
        crop = item["audio"]
        assert crop.shape == (1, FRAMES * HOP)
        # Locate the crop in the file: its start must be a multiple of the hop.
        idx = [s for s in range(0, full.shape[-1] - crop.shape[-1] + 1, HOP)
               if torch.equal(full[:, s : s + crop.shape[-1]], crop)]  # fmt: skip
        assert len(idx) == 1
        starts.add(idx[0])
        assert torch.equal(ds[(epoch, 0)]["audio"], crop)  # same (seed, epoch, index)
    assert len(starts) > 1  # epochs crop differently
    assert not torch.equal(_dataset([long], seed=8)[(0, 0)]["audio"], ds[(0, 0)]["audio"])
    padded = _dataset([long, short], segment_frames=16)[(0, 1)]["audio"]  # 0.19 s > 0.15 s
    short_audio = load_audio(short)[0]
    n_short = short_audio.shape[-1]
    assert padded.shape == (1, 16 * HOP)
    assert torch.equal(padded[:, :n_short], short_audio)
    assert torch.all(padded[:, n_short:] == 0)
    assert ds[(0, 1)]["label"].item() == -1 and ds[(0, 1)]["speaker"].item() == -1


def test_resampled_multichannel_crop_matches_whole_file_load(write_wav):
    path = write_wav("stereo44k.wav", sample_rate=44100, duration_s=0.6, channels=2)
    ds = _dataset([path])
    whole, _ = load_audio(path, SR)  # mixed down and resampled as a whole
    for start in (0, 5 * HOP, 20 * HOP):
        part = ds.read(0, start, FRAMES * HOP)
        ref = whole[:, start : start + FRAMES * HOP]
        # Windowed resampling differs from whole-file resampling only by filter edge effects.
        assert part.shape == ref.shape
        assert (part - ref).abs().max() < 2e-3 * ref.abs().max()


def test_sampler_ranks_together_equal_one_process_with_accumulation():
    data = list(range(23))
    one = list(ResumableDistributedSampler(data, batch_size=3, accum=2, seed=5))
    ranks = [
        list(ResumableDistributedSampler(data, batch_size=3, num_replicas=2, rank=r, seed=5))
        for r in range(2)
    ]
    assert len(one) == 18 and all(len(r) == 9 for r in ranks)  # whole steps of 6 clips
    for step in range(3):
        micro = [one[step * 6 : step * 6 + 3], one[step * 6 + 3 : step * 6 + 6]]
        assert micro == [ranks[0][step * 3 : step * 3 + 3], ranks[1][step * 3 : step * 3 + 3]]
    s = ResumableDistributedSampler(data, batch_size=3, seed=5)
    s.set_epoch(1)
    epoch1 = list(s)
    assert {e for e, _ in epoch1} == {1} and [i for _, i in epoch1] != [i for _, i in one]
    s.set_epoch(1, start=9)
    assert list(s) == epoch1[9:] and len(s) == len(epoch1) - 9
    tiny = list(ResumableDistributedSampler([0, 1], batch_size=3, num_replicas=2, seed=0))
    assert len(tiny) == 3  # fewer clips than a step: tiled, never an empty epoch


def test_loader_batches_identical_with_0_and_2_workers(write_wav):
    paths = [write_wav(f"c{i}.wav", duration_s=0.3 + 0.1 * i, seed=i) for i in range(5)]
    ds = _dataset(paths)
    runs = []
    for workers in (0, 2):
        sampler = ResumableDistributedSampler(ds, batch_size=2, seed=1)
        loader = make_loader(ds, sampler, num_workers=workers, seed=1)
        batches = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            batches += [b["audio"] for b in loader]
        runs.append(torch.stack(batches))
    assert runs[0].shape == (4, 2, 1, FRAMES * HOP)
    assert torch.equal(runs[0], runs[1])
