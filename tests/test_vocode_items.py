"""Issue 11, kinds 7, 8 and 12 on a tiny model: a clip's output does not depend on its batch, a mel
file carries its profile, and long work shows progress per chunk and honours --threads.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.config import mel_profile
from audiodiff.config_io import apply_overrides
from audiodiff.files import read_mel_file, save_mel
from audiodiff.generate import GenerativeModel, check_same_profile
from audiodiff.seeds import item_key
from audiodiff.synthesis import batches_by_length, positional_noise
from audiodiff.vocoder import Vocoder, check_mel

from .conftest import chirp_plus_noise, invoke, manifest_overrides, one_line_exit_2, random_export


@pytest.fixture
def model(tiny_config, tmp_path):
    return random_export(tiny_config, tmp_path / "tiny.safetensors", output_std=0.2)


def _mel(frames: int, seed: int) -> np.ndarray:
    """A plausible ln-mel of ``frames`` frames (inside the hifigan profile's range)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-9.0, 0.5, size=(80, frames)).astype(np.float32)


# --- kind 7: a clip's output does not depend on its batch ----


def test_positional_noise_is_keyed_by_item_not_row():
    alone = positional_noise(3, 1, 100, 5000, (1, 1), keys=[42])
    second = positional_noise(3, 1, 100, 5000, (2, 1), keys=[7, 42])
    assert torch.equal(second[1:], alone)
    assert not torch.equal(second[:1], alone)
    # The default keys are the row indices: the noise of the row-keyed engine is unchanged.
    assert torch.equal(
        positional_noise(3, 1, 0, 99, (2, 1)), positional_noise(3, 1, 0, 99, (2, 1), keys=[0, 1])
    )
    with pytest.raises(ValueError, match="2 non-negative noise keys"):
        positional_noise(3, 1, 0, 99, (2, 1), keys=[1])


def test_batches_hold_only_equal_lengths():
    assert batches_by_length([12, 20, 12, 7, 12], 2) == [[0, 2], [4], [1], [3]]
    assert batches_by_length([5, 5, 5], 1) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="at least 1"):
        batches_by_length([5], 0)


def test_vocoder_api_output_does_not_depend_on_batch(model):
    vocoder = Vocoder.from_pretrained(model)
    x, y = torch.from_numpy(_mel(12, 0))[None], torch.from_numpy(_mel(12, 1))[None]
    # Four chunks of 1000 samples (the halo path) with the default stochastic sampler; one pass
    # with a deterministic multistep sampler.
    for kw in ({"chunk_seconds": 1000 / vocoder.sample_rate}, {"sampler": "dpmpp-2m", "steps": 3}):
        alone = vocoder(x, seed=5, **kw)[0]
        assert torch.equal(vocoder(torch.cat([y, x]), seed=5, **kw)[1], alone)
        rows = vocoder(torch.cat([x, x, y]), seed=5, **kw)
        assert torch.equal(rows[0], alone) and torch.equal(rows[1], alone)
        assert not torch.equal(rows[2], alone)
    # Explicit keys replace the mel hash: the same key in another batch gives the same audio.
    keyed = vocoder(x, seed=5, keys=[9])[0]
    assert torch.equal(vocoder(torch.cat([y, x]), seed=5, keys=[3, 9])[1], keyed)
    assert item_key(x[0]) == item_key(x[0].clone()) != item_key(y[0])


def test_cli_file_output_does_not_depend_on_its_batch(model, tmp_path, monkeypatch):
    """The same file alone, first, second, next to a longer and a shorter file: bit-identical."""
    import audiodiff.audio

    files = {}
    for name, frames, seed in (("x", 12, 0), ("y", 12, 1), ("long", 20, 2), ("short", 7, 3)):
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], _mel(frames, seed))
    written: dict[str, list[torch.Tensor]] = {}
    real_save = audiodiff.audio.save_audio

    def record(path, audio, rate, **kw):
        written.setdefault(f"{path.parent.name}/{path.stem}", []).append(torch.as_tensor(audio))
        return real_save(path, audio, rate, **kw)

    monkeypatch.setattr(audiodiff.audio, "save_audio", record)
    runs = {  # x first or second in its batch and in the list, next to longer and shorter files
        "alone": ["x"],
        "first": ["x", "long", "y"],
        "second": ["long", "y", "x", "short"],
        "short": ["short", "x"],
    }
    for method in ("diffusion", "griffin-lim"):
        for run, names in runs.items():
            out = tmp_path / f"{method}-{run}"
            result = invoke("vocode", model, *[files[n] for n in names], "-o", out,
                            "--batch-size", "4", "--seed", "3", "--method", method)  # fmt: skip
            assert result.exit_code == 0, result.output
        alone = written[f"{method}-alone/x"][0]
        assert alone.shape[-1] == 12 * 256
        for run in runs:
            assert torch.equal(written[f"{method}-{run}/x"][0], alone), (method, run)
        assert sf.read(tmp_path / f"{method}-second" / "short.wav")[0].shape == (7 * 256,)
        assert not torch.equal(written[f"{method}-second/y"][0], alone)


def test_generated_clip_does_not_depend_on_n(tiny_config, tmp_path):
    cfg = apply_overrides(
        tiny_config, ["model.conditioning=none", "model.n_labels=3", "diffusion.label_dropout=0.1"]
    )
    gen = GenerativeModel.from_pretrained(random_export(cfg, tmp_path / "g.safetensors"))
    for kw in ({}, {"label": 1}, {"label": 2, "guidance": 1.5}):
        three = gen.sample(3, seconds=0.05, seed=4, **kw)
        assert torch.equal(gen.sample(1, seconds=0.05, seed=4, **kw)[0], three[0])
        assert torch.equal(gen.sample(2, seconds=0.05, seed=4, **kw)[1], three[1])
        assert not torch.equal(three[0], three[1])


def test_validation_loss_does_not_depend_on_batch_size(tiny_config, manifests, tmp_path):
    from audiodiff.train import Trainer
    from audiodiff.train_eval import evaluate

    stats = []
    for batch_size in (1, 2):
        cfg = apply_overrides(
            tiny_config, [*manifest_overrides(manifests), f"data.batch_size={batch_size}"]
        )
        stats.append(evaluate(Trainer(cfg, tmp_path / f"run{batch_size}", log=lambda _: None)))
    assert stats[0] == stats[1] and math.isfinite(stats[0]["val_loss"])


# --- kind 8: a mel file carries its profile ----


def test_mel_file_records_its_profile_and_vocode_refuses_another(model, tmp_path):
    wav = tmp_path / "x.wav"
    sf.write(wav, chirp_plus_noise(16000, 0.5), 16000)
    assert invoke("mel", wav, "--profile", "16k", "-o", tmp_path / "m16").exit_code == 0
    mel, profile = read_mel_file(tmp_path / "m16" / "x.npz")
    assert profile == mel_profile("16k") and mel.shape == (1, 80, mel.shape[-1])
    out = tmp_path / "out"
    one_line_exit_2(
        invoke("vocode", model, tmp_path / "m16" / "x.npz", "-o", out),
        "mel profile '16k'",
        "uses 'hifigan'",
        "sample_rate: 16000 vs 22050",
    )
    assert not out.exists()  # refused before the output folder is made
    # The model's own profile (by name, or by --from) is accepted, and vocodes that mel.
    assert invoke("mel", wav, "--profile", "hifigan", "-o", tmp_path / "m22").exit_code == 0
    ok = invoke("vocode", model, tmp_path / "m22" / "x.npz", "-o", out)
    assert ok.exit_code == 0, ok.output
    frames = read_mel_file(tmp_path / "m22" / "x.npz")[0].shape[-1]
    assert sf.info(out / "x.wav").frames == frames * 256
    # A plain .npy from another tool carries no profile and keeps working.
    np.save(tmp_path / "plain.npy", np.load(tmp_path / "m16" / "x.npz")["mel"])
    plain = invoke("vocode", model, tmp_path / "plain.npy", "-o", tmp_path / "plain")
    assert plain.exit_code == 0, plain.output


def test_profiles_are_compared_by_parameters_not_names(model, tmp_path):
    hifigan = mel_profile("hifigan")
    mel = torch.from_numpy(_mel(10, 0))
    renamed = save_mel(tmp_path / "renamed.npz", mel, overwrite=False,
                       profile=dataclasses.replace(hifigan, name="my-tts"))  # fmt: skip
    changed = save_mel(tmp_path / "changed.npz", mel, overwrite=False,
                       profile=dataclasses.replace(hifigan, f_max=7600.0))  # fmt: skip
    loaded, profile = read_mel_file(renamed)
    assert torch.equal(loaded[0], mel) and profile.name == "my-tts"
    assert invoke("vocode", model, renamed, "-o", tmp_path / "a").exit_code == 0
    one_line_exit_2(
        invoke("vocode", model, changed, "-o", tmp_path / "b"),
        "profile 'hifigan' but this vocoder uses 'hifigan'",
        "f_max: 7600.0 vs 8000.0",
    )
    # The same rule for two-stage generation: a renamed copy of the vocoder's profile is fine.
    voc = SimpleNamespace(mel_config=hifigan)
    check_same_profile(SimpleNamespace(config=SimpleNamespace(mel=profile)), voc)  # "my-tts"
    bigvgan = SimpleNamespace(config=SimpleNamespace(mel=mel_profile("bigvgan-24k")))
    with pytest.raises(ValueError, match="sample_rate: 24000 vs 22050"):
        check_same_profile(bigvgan, voc)


def test_api_checks_an_optional_profile(model):
    vocoder = Vocoder.from_pretrained(model)
    mel = torch.from_numpy(_mel(10, 0))
    with pytest.raises(ValueError, match="'16k' but this vocoder uses 'hifigan'"):
        vocoder(mel, seed=0, profile="16k")
    with pytest.raises(ValueError, match="hop_length: 200 vs 256"):
        check_mel(
            mel, vocoder.mel_config, dataclasses.replace(mel_profile("hifigan"), hop_length=200)
        )
    assert torch.equal(vocoder(mel, seed=0, profile="hifigan"), vocoder(mel, seed=0))
    assert torch.equal(check_mel(mel, vocoder.mel_config, vocoder.mel_config)[0], mel)


def test_unreadable_npz_is_one_line(model, tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((80, 4), np.float32), b=np.zeros(3, np.float32))
    one_line_exit_2(invoke("vocode", model, tmp_path / "two.npz", "-o", tmp_path / "o"),
                     "not a readable mel file", "expected an array named 'mel'")  # fmt: skip
    np.savez(tmp_path / "future.npz", mel=_mel(4, 0), profile=np.array('{"warp": 2}'))
    one_line_exit_2(invoke("vocode", model, tmp_path / "future.npz", "-o", tmp_path / "o"),
                     "records a mel profile this version cannot read")  # fmt: skip


# --- kind 12: progress per chunk, --threads ----


def test_progress_counts_chunks(model, tiny_config, tmp_path, monkeypatch):
    vocoder = Vocoder.from_pretrained(model)
    mel = torch.from_numpy(_mel(30, 0))  # 7680 samples
    done = []
    chunk_s = 2000 / vocoder.sample_rate
    vocoder(mel, seed=0, chunk_seconds=chunk_s, chunk_progress=done.append)
    assert sum(done) == len(done) == vocoder.chunk_count(30, chunk_s) == 4
    assert vocoder.chunk_count(30) == 1 and vocoder.chunk_count(30, None) == 1
    cfg = apply_overrides(tiny_config, ["model.conditioning=none"])
    gen = GenerativeModel.from_pretrained(random_export(cfg, tmp_path / "g.safetensors"))
    done.clear()
    gen.sample(2, seconds=0.5, chunk_seconds=0.1, seed=0, chunk_progress=done.append)
    assert sum(done) == gen.chunk_count(0.5, 0.1) == math.ceil(0.5 / 0.1)

    # The CLI's bar counts chunks (6 s each for a waveform model), not files.
    import tqdm

    bars = []

    class Recorder:
        def __init__(self, *args, total=None, unit=None, **kwargs):
            self.total, self.unit, self.n = total, unit, 0
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix_str(self, text):
            self.postfix = text

        def close(self):
            pass

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    np.save(tmp_path / "long.npy", _mel(1100, 1))  # 12.8 s: 3 chunks
    np.save(tmp_path / "short.npy", _mel(20, 2))
    result = invoke("vocode", model, tmp_path / "long.npy", tmp_path / "short.npy", "-o",
                    tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    (bar,) = bars
    assert (bar.unit, bar.total, bar.n, bar.postfix) == ("chunk", 4, 4, "2/2 files")
    result = invoke("generate", tmp_path / "g.safetensors", "-n", "2", "--seconds", "13",
                    "--steps", "2", "--sampler", "ddim", "-o", tmp_path / "gen")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (bars[1].unit, bars[1].total, bars[1].n) == ("chunk", 3, 3)  # 13 s in 6 s chunks


@pytest.mark.parametrize(
    "command,target",
    [
        (["vocode", "M", "x.npy", "-o", "out"], "audiodiff.vocoder.Vocoder.from_pretrained"),
        (["generate", "M", "-o", "out"], "audiodiff.generate.GenerativeModel.from_pretrained"),
        (["train", "r.yaml", "--run-dir", "run"], "audiodiff.config_io.load_config"),
        (["demo", "-o", "out"], "audiodiff.demo.run_demo"),
        (["search-schedule", "M", "--steps", "3", "--manifest", "m.jsonl", "-o", "s.pt"],
         "audiodiff.vocoder.Vocoder.from_pretrained"),
        (["evaluate", "ref", "gen"], "audiodiff.evaluation.evaluate_dirs"),
    ],
)  # fmt: skip
def test_threads_option(command, target, model, tmp_path, monkeypatch):
    """--threads N sets torch's threads while the command runs and is checked before any work."""
    monkeypatch.chdir(tmp_path)
    Path("M").write_bytes(model.read_bytes())
    np.save("x.npy", _mel(10, 0))
    for name in ("r.yaml", "m.jsonl"):
        Path(name).write_text("", encoding="utf-8")
    Path("ref").mkdir()
    Path("gen").mkdir()
    seen = []

    def probe(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise ValueError("stopped by the test")

    monkeypatch.setattr(target, probe)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        one_line_exit_2(invoke(*command, "--threads", "1"), "stopped by the test")
        assert seen == [1] and torch.get_num_threads() == 3  # set for the command, then restored
        for bad in ("0", "-2"):
            result = invoke(*command, "--threads", bad)
            assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
            assert "--threads" in result.output and ">=1" in result.output
        assert seen == [1]  # refused before any work
        assert "--threads" in invoke(command[0], "--help").output
    finally:
        torch.set_num_threads(before)


def test_cli_and_api_give_the_same_audio_for_one_mel_and_seed(model, tmp_path, monkeypatch):
    """The CLI keys a file's noise exactly as Vocoder.__call__ keys the same mel (was: the CLI
    hashed [1, n_mels, F], the API [n_mels, F], so the two gave different audio)."""
    import audiodiff.audio

    mel = _mel(12, 0)
    np.save(tmp_path / "x.npy", mel)
    written = []
    real_save = audiodiff.audio.save_audio

    def record(path, audio, rate, **kw):
        written.append(torch.as_tensor(audio))
        return real_save(path, audio, rate, **kw)

    monkeypatch.setattr(audiodiff.audio, "save_audio", record)
    result = invoke("vocode", model, tmp_path / "x.npy", "-o", tmp_path / "out", "--seed", "3")
    assert result.exit_code == 0, result.output
    api = Vocoder.from_pretrained(model)(mel, seed=3)
    # Exactly the API's audio, through the one policy every written file gets (this random
    # model overshoots full scale, so the file holds it scaled to peak at 1: output_level).
    from audiodiff.output_level import PeakPolicy

    assert torch.equal(written[0], PeakPolicy()("x.wav", api[0]))
