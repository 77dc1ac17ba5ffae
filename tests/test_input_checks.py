"""Issue 11, kinds 1 and 11: checks look at the signal the model consumes and name the real cause
(level, precision, strides); what a run is trained with is usable by what comes after it (label
names, sampling settings, newer exports)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.audio import AudioError, check_level, load_model_audio
from audiodiff.config import mel_profile
from audiodiff.config_io import apply_overrides, to_dict
from audiodiff.datasets.prepare import probe_audio
from audiodiff.levels import OVER_RANGE_PEAK, SILENCE_PEAK, level_problem
from audiodiff.mel import MelSpectrogram
from audiodiff.metrics import mr_stft_distance
from audiodiff.scan import check_clip
from audiodiff.vocoder import Vocoder, check_mel, mel_range_tolerance

from .conftest import chirp_plus_noise, invoke, manifest_overrides, random_export

SR = 22050


def _write(path, x, sample_rate=SR, subtype="FLOAT"):
    sf.write(path, x, sample_rate, subtype=subtype)
    return path


@pytest.fixture
def vocoder(tiny_config, tmp_path):
    return Vocoder.from_pretrained(random_export(tiny_config, tmp_path / "v.safetensors"))


# --- kind 1: level checks on what the model gets, naming the peak and the limit -----------------


def test_level_rule_values():
    assert level_problem(0.5) is None and level_problem(1.9) is None  # speech, lossy overshoot
    kind, detail = level_problem(4.0)
    assert kind == "over_range"
    assert "peak 4.00 (+12.0 dBFS)" in detail and "above 2.00 (+6.0 dBFS)" in detail
    kind, detail = level_problem(3e-5)
    assert kind == "silent" and "3.00e-05 (-90.5 dBFS)" in detail and "1e-04 (-80.0 dBFS)" in detail
    assert level_problem(math.nan)[0] == "non_finite"
    assert (SILENCE_PEAK, OVER_RANGE_PEAK) == (1e-4, 2.0)


def test_float_wav_at_4_refused_by_vocode_naming_the_peak(tmp_path):
    x = chirp_plus_noise(44100, 0.5)
    loud = _write(tmp_path / "loud.wav", 4.0 * x / np.abs(x).max(), 44100)
    result = invoke("vocode", "small-speech", loud, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "loud.wav: after resampling from 44100 to 22050 Hz, peak 3.86 (+11.7 dBFS)" in line
    assert "above 2.00 (+6.0 dBFS)" in line and "scale it down" in line
    assert "looks like" not in line and "values span" not in line
    assert not (tmp_path / "out" / "loud.wav").exists()


def test_mel_command_refuses_over_range_and_silence(tmp_path):
    x = chirp_plus_noise(SR, 0.3)
    loud = _write(tmp_path / "loud.wav", 4.0 * x / np.abs(x).max())
    result = invoke("mel", loud, "--profile", "hifigan", "-o", tmp_path / "mels")
    assert result.exit_code == 2 and "peak 4.00 (+12.0 dBFS)" in result.output
    assert not (tmp_path / "mels").exists()  # refused before the output folder is made
    # Stereo in opposite phase mixes down to silence: checked after the mix-down.
    anti = _write(tmp_path / "anti.wav", np.stack([x, -x], axis=1), subtype="PCM_16")
    result = invoke("mel", anti, "--profile", "hifigan", "-o", tmp_path / "mels")
    assert result.exit_code == 2, result.output
    assert "after mix-down of 2 channels" in result.output and "silence threshold" in result.output
    ok = _write(tmp_path / "ok.wav", x, subtype="PCM_16")  # speech-level audio is accepted
    assert invoke("mel", ok, "--profile", "hifigan", "-o", tmp_path / "mels").exit_code == 0


def test_silence_after_resampling(tmp_path):
    # A faded 20 kHz tone at 48 kHz: nothing of it survives the resampling to 16 kHz.
    t = np.arange(48000 // 2) / 48000
    x = 0.5 * np.hanning(t.size) * np.sin(2 * np.pi * 20000 * t)
    tone = _write(tmp_path / "hf.wav", x, 48000)
    with pytest.raises(AudioError, match=r"after resampling from 48000 to 16000 Hz, peak .*silen"):
        load_model_audio(tone, 16000)
    audio, rate = load_model_audio(tone, 48000)
    assert rate == 48000 and float(audio.abs().max()) == pytest.approx(0.5, abs=1e-3)


def test_vocoder_api_checks_level_and_takes_reversed_views(vocoder):
    x = chirp_plus_noise(SR, 0.3)
    with pytest.raises(ValueError, match=r"audio: peak 4\.00 \(\+12\.0 dBFS\) is above"):
        vocoder.mel(x / np.abs(x).max() * 4.0, SR)
    with pytest.raises(ValueError, match="item 1.*silence threshold"):
        vocoder.mel(np.stack([x, np.zeros_like(x)]), SR)
    reversed_mel = vocoder.mel(x[::-1], SR)  # a negative-stride view
    assert torch.equal(reversed_mel, vocoder.mel(x[::-1].copy(), SR))
    mel = reversed_mel[0].numpy()
    out = vocoder(mel[:, ::-1], seed=0)  # reversed mel view into synthesis
    assert torch.equal(out, vocoder(np.ascontiguousarray(mel[:, ::-1]), seed=0))


def test_stereo_arrays_are_refused_with_how_to_pass_them(vocoder):
    # soundfile reads stereo as [frames, 2]; taken as [B, T] it was 22,050 items of 2 samples
    # and the refusal blamed silence. A [B, 2, T] batch silently lost its second channel.
    x = chirp_plus_noise(SR, 0.3)
    stereo = np.stack([x, 0.5 * x], axis=1)  # [frames, channels]
    with pytest.raises(ValueError, match=r"\(6615, 2\), soundfile's \[frames, channels\].*x\.T"):
        vocoder.mel(stereo, SR)
    with pytest.raises(ValueError, match=r"2 channels; pass mono audio \[B, 1, T\]"):
        vocoder.mel(torch.from_numpy(stereo.T[None].copy()), SR)
    with pytest.raises(ValueError, match=r"ref has shape \(6615, 2\), soundfile's"):
        mr_stft_distance(stereo, stereo)
    # The suggested layouts work: channels as a batch, or the mix-down.
    assert vocoder.mel(stereo.T, SR).shape[0] == 2
    torch.testing.assert_close(
        vocoder.mel(stereo.mean(axis=1), SR), vocoder.mel(0.75 * x, SR), rtol=0, atol=1e-5
    )


def test_check_level_names_stage_and_item():
    with pytest.raises(AudioError) as err:
        check_level(torch.full((1, 100), 16.0), "x.wav", stage="after resampling to 22050 Hz")
    assert str(err.value).startswith("x.wav: after resampling to 22050 Hz, peak 16.00 (+24.1 dBFS)")
    with pytest.raises(AudioError, match="NaN"):
        check_level(torch.tensor([[0.5, math.nan]]), "y")
    check_level(torch.full((2, 10), 0.9), "ok")  # full-scale-ish speech passes


def test_training_scan_and_prepare_refuse_peak_16_and_antiphase(tmp_path):
    x = chirp_plus_noise(SR, 0.3)
    loud = _write(tmp_path / "loud.wav", 16.0 * x / np.abs(x).max())
    anti = _write(tmp_path / "anti.wav", np.stack([x, -x], axis=1), subtype="PCM_16")
    ok = _write(tmp_path / "ok.wav", x, subtype="PCM_16")
    opts = dict(min_duration_s=0.1, silence_threshold=1e-4)
    reason = check_clip(str(loud), **opts)["reason"]
    assert reason.startswith("over range: peak 16.00 (+24.1 dBFS) is above 2.00")
    # int16 rounds x and -x apart by up to half a step: the mix peaks at 1.53e-05 (-96.3 dBFS).
    assert check_clip(str(anti), **opts)["reason"].startswith("silent: peak 1.53e-05 (-96.3 dBFS)")
    assert check_clip(str(ok), **opts)["reason"] is None
    kind, detail = probe_audio(loud, 0.1, 1e-4)["skip"]
    assert kind == "over_range" and "peak 16.00" in detail
    assert probe_audio(anti, 0.1, 1e-4)["skip"][0] == "silent"
    assert "skip" not in probe_audio(ok, 0.1, 1e-4)


# --- kind 1: the mel check names the real cause and covers the input's precision ---------------


def test_float16_hifigan_mel_accepted(vocoder):
    cfg = mel_profile("hifigan")
    audio = torch.from_numpy(chirp_plus_noise(SR, 0.3)).unsqueeze(0)
    audio[:, 2000:4000] = 0  # frames at the floor ln(1e-5)
    mel = MelSpectrogram(cfg)(audio)[0].numpy()
    half = mel.astype(np.float16)
    assert float(half.min()) < math.log(1e-5) - 1e-3  # the rounding that used to be refused
    assert mel_range_tolerance(torch.float16, cfg) == pytest.approx(2**-10 * 11.5129, rel=1e-3)
    assert mel_range_tolerance(torch.float32, cfg) == 1e-3
    checked = check_mel(half, cfg)
    assert checked.dtype == torch.float32 and checked.shape == (1, 80, mel.shape[1])
    assert vocoder(half, seed=0).shape[-1] == mel.shape[1] * 256
    # Beyond float16's rounding it is still refused, naming the floor and the tolerance.
    with pytest.raises(ValueError, match=r"minimum -11\.6.* below the profile's floor -11\.5129"):
        check_mel(half - np.float16(0.1), cfg)


def test_float16_mel_file_through_vocode(tmp_path):
    cfg = mel_profile("hifigan")
    audio = torch.from_numpy(chirp_plus_noise(SR, 0.2)).unsqueeze(0)
    audio[:, 1000:3000] = 0
    np.save(tmp_path / "m.npy", MelSpectrogram(cfg)(audio)[0].numpy().astype(np.float16))
    from audiodiff.files import load_mel_file

    assert load_mel_file(tmp_path / "m.npy").dtype == torch.float16  # cast in check_mel
    result = invoke("vocode", "small-speech", tmp_path / "m.npy", "-o", tmp_path / "o",
                    "--method", "griffin-lim")  # fmt: skip
    assert result.exit_code == 0, result.output


def test_mel_messages_name_values_and_limits():
    cfg = mel_profile("hifigan")
    too_high = torch.full((80, 5), 4.0)
    with pytest.raises(ValueError) as err:
        check_mel(too_high, cfg)
    msg = str(err.value)
    assert "the maximum 4.00 is above" in msg and "above full scale" in msg
    assert "looks like" not in msg
    with pytest.raises(ValueError, match="'diffwave' convention.*expects .*ln\\(mel\\)"):
        check_mel(torch.full((80, 5), 0.5), cfg)
    db = mel_profile("diffwave")
    with pytest.raises(ValueError, match="below 0 as an ln-compressed mel.*dB normalised"):
        check_mel(torch.full((80, 5), -11.5), db)
    with pytest.raises(ValueError, match="maximum is above 1"):
        check_mel(torch.full((80, 5), 1.5), db)


# --- kind 11: what a run is trained with is usable by what comes after it ----------------------


def test_label_index_names_integer_labels():
    from audiodiff.data import label_index

    rows = [{"label": 1, "label_name": "dog"}, {"label": 0, "label_name": "cat"}, {"label": 1}]
    assert label_index(rows) == {"cat": 0, "dog": 1}
    assert label_index([{"label": "b"}, {"label": "a"}, {"label": 3}]) == {"a": 0, "b": 1}
    with pytest.raises(ValueError, match="label 1 is named both 'dog' and 'cat'"):
        label_index([{"label": 1, "label_name": "dog"}, {"label": 1, "label_name": "cat"}])
    with pytest.raises(ValueError, match="label name 'dog' is on labels 0 and 1"):
        label_index([{"label": 0, "label_name": "dog"}, {"label": 1, "label_name": "dog"}])


def test_labels_section_validated():
    from audiodiff.config import ExperimentConfig
    from audiodiff.config_io import apply_overrides
    from audiodiff.config_rules import validate

    cfg = apply_overrides(ExperimentConfig(), ["model.conditioning=none", "model.n_labels=2"])
    validate(dataclasses.replace(cfg, labels=["cat", "dog"]))
    with pytest.raises(ValueError, match=r"labels names 3 classes \(a, b, c\) but model.n_labels"):
        validate(dataclasses.replace(cfg, labels=["a", "b", "c"]))


@pytest.fixture
def labelled_data(tmp_path, write_wav):
    """``prepare folder --label-from-folder`` over cat/ and dog/ (4 clips each): train.jsonl."""
    from audiodiff.datasets import PrepareOptions, prepare

    for i in range(4):
        write_wav(f"animals/cat/c{i}.wav", duration_s=0.3, seed=i)
        write_wav(f"animals/dog/d{i}.wav", duration_s=0.3, seed=10 + i)
    opts = PrepareOptions(label_from_folder=True, val_fraction=0.25, test_fraction=0.0)
    prepare("folder", tmp_path / "animals", tmp_path / "prep", opts)
    return tmp_path / "prep" / "train.jsonl"


def _label_overrides(manifest, n_labels=2):
    return [
        f"data.train_manifest={manifest}",
        "model.conditioning=none",
        f"model.n_labels={n_labels}",
        "train.max_steps=1",
        "train.save_every=1",
    ]


def test_folder_label_names_reach_the_model(tmp_path, tiny_config, labelled_data):
    from audiodiff.config_io import load_config
    from audiodiff.generate import GenerativeModel
    from audiodiff.train import Trainer

    rows = [json.loads(line) for line in labelled_data.read_text(encoding="utf-8").splitlines()]
    assert {(r["label"], r["label_name"]) for r in rows} == {(0, "cat"), (1, "dog")}
    cfg = apply_overrides(tiny_config, _label_overrides(labelled_data))
    Trainer(cfg, tmp_path / "run").train()
    assert load_config(tmp_path / "run" / "config.yaml").labels == ["cat", "dog"]
    model = GenerativeModel.from_pretrained(tmp_path / "run")
    assert model.labels == ["cat", "dog"] and model.label_index("dog") == 1
    out = tmp_path / "gen"
    result = invoke("generate", tmp_path / "run", "-n", "1", "--seconds", "0.05", "--label",
                    "dog", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "label-dog_000.wav").is_file()


def test_recipe_with_more_labels_than_the_data_is_refused(tmp_path, tiny_config, labelled_data):
    from audiodiff.train import Trainer

    cfg = apply_overrides(tiny_config, _label_overrides(labelled_data, n_labels=10))
    with pytest.raises(ValueError) as err:
        Trainer(cfg, tmp_path / "run")
    msg = str(err.value)
    assert "model.n_labels is 10" in msg and "clips of 2 label(s) (cat, dog)" in msg
    assert "labels [2, 3, 4, 5, 6, 7, 8, 9] would stay untrained" in msg
    assert "--set model.n_labels=2" in msg


def test_sampling_settings_checked_when_training_starts(tmp_path, tiny_config, manifests):
    from audiodiff.train import Trainer

    cfg = apply_overrides(
        tiny_config, [*manifest_overrides(manifests), "sample.steps=8", "train.max_steps=1"]
    )
    with pytest.raises(ValueError, match=r"sample: diffwave-fast has a fixed 6-step schedule but "):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory is written
    ok = apply_overrides(cfg, ["sample.sampler=ddim"])  # the same 8 steps with ddim: fine
    Trainer(ok, tmp_path / "run2")


def _export_with(tiny_config, path, section, key, value):
    """A random export whose stored config carries ``section.key = value``."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    random_export(tiny_config, path)
    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
    cfg = json.loads(metadata["config"])
    # Exports hold no run config since config_version 2; a newer file might: give it the section.
    cfg.setdefault(section, to_dict(tiny_config)[section])[key] = value
    metadata["config"] = json.dumps(cfg)
    save_file(load_file(str(path)), str(path), metadata=metadata)
    return path


def test_newer_export_with_unknown_training_keys_still_loads(tiny_config, tmp_path):
    from audiodiff.pretrained import IgnoredSettingsWarning

    path = _export_with(tiny_config, tmp_path / "new.safetensors", "train", "lion_beta", 0.9)
    with pytest.warns(IgnoredSettingsWarning, match=r"new\.safetensors: ignored training-only "
                      r"settings this audiodiff does not know: train\.lion_beta"):  # fmt: skip
        voc = Vocoder.from_pretrained(path)
    assert voc.config.train.lr == tiny_config.train.lr  # the known training keys are kept
    x = chirp_plus_noise(SR, 0.2)
    assert voc(voc.mel(x, SR), seed=0).shape[-1] == voc.mel(x, SR).shape[-1] * 256
    bad_value = _export_with(tiny_config, tmp_path / "v.safetensors", "data", "batch_size", "x")
    with pytest.warns(IgnoredSettingsWarning, match=r"data\.batch_size"):
        assert Vocoder.from_pretrained(bad_value).config.data.batch_size == 16  # the default
    # What inference reads stays strict: an unknown model key could change the network.
    strict = _export_with(tiny_config, tmp_path / "m.safetensors", "model", "gated_attn", True)
    with pytest.raises(ValueError, match=r"unknown key model\.gated_attn"):
        Vocoder.from_pretrained(strict)
