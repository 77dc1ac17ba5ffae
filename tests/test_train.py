"""The training loop: exact resume (also after SIGKILL), NaN handling, broken data, CLI errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from audiodiff.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from audiodiff.cli import main
from audiodiff.config import ExperimentConfig, TrainConfig
from audiodiff.config_io import apply_overrides, load_config
from audiodiff.config_rules import validate
from audiodiff.manifest import manifest_from_files
from audiodiff.train import Trainer, TrainingStopped, lr_at

from .conftest import manifest_overrides

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "smoke" / "vocoder.yaml"


def _cfg(tiny_config, manifests, *overrides: str):
    base = [*manifest_overrides(manifests), "train.lr=1e-3"]
    return apply_overrides(tiny_config, base + list(overrides))


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name in sa[i]:
            assert torch.equal(sa[i][name], sb[i][name]), f"optimizer state {i}.{name} differs"


@pytest.mark.parametrize("workers", [0, 2])
def test_stop_and_resume_is_bit_identical(tmp_path, tiny_config, manifests, workers):
    n = 6
    common = [f"data.num_workers={workers}", "train.save_every=3", "train.eval_every=3"]
    straight = Trainer(
        _cfg(tiny_config, manifests, *common, f"train.max_steps={n}"), tmp_path / "a"
    )
    assert straight.train().step == n
    Trainer(
        _cfg(tiny_config, manifests, *common, f"train.max_steps={n // 2}"), tmp_path / "b"
    ).train()
    resumed = Trainer(_cfg(tiny_config, manifests, *common, f"train.max_steps={n}"), tmp_path / "b")
    assert resumed.step == n // 2 and resumed.position == 2  # mid-epoch: 5 clips, batch 2
    resumed.train()
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    _assert_same_state(a, b)
    assert (tmp_path / "b" / "metrics.jsonl").read_text().count('"kind": "eval"') == 2


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path, tiny_config, manifests):
    """A run killed after its last checkpoint logged steps that the resumed run logs again."""
    common = ["train.save_every=2", "train.log_every=1", "train.eval_every=100"]
    run = tmp_path / "run"
    Trainer(_cfg(tiny_config, manifests, *common, "train.max_steps=4"), run).train()
    # As if killed after logging step 4 but before its checkpoint was written, in the middle of
    # writing one more row.
    (run / "step_00000004.pt").unlink()
    (run / "latest").write_text("step_00000002.pt\n")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')
    messages = []
    resumed = Trainer(
        _cfg(tiny_config, manifests, *common, "train.max_steps=5"), run, log=messages.append
    )
    assert resumed.step == 2
    assert any("dropped 3 metrics.jsonl rows" in m for m in messages)
    resumed.train()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5]


def _child(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, env=env)


def _latest_step(run: Path) -> int:
    path = latest_checkpoint(run)
    return 0 if path is None else int(path.stem.split("_")[1])


def _wait(condition, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out:\n{log.read_text()[-2000:]}")
        time.sleep(0.0005)


@pytest.mark.slow
def test_sigkill_at_random_moments_always_resumes(tmp_path, tiny_config, manifests):
    """Five SIGKILLs of the real CLI (one inside a checkpoint write); every checkpoint on disk
    loads after each, every restart resumes, and the result equals an uninterrupted run."""
    run, log = tmp_path / "run", tmp_path / "child.log"
    train, val = manifests
    sets = [f"data.train_manifest={train}", f"data.val_manifest={val}", "train.max_steps=500",
            "train.save_every=1", "train.keep_last=3", "data.num_workers=2", "train.lr=1e-3",
            "train.eval_every=100000", "train.log_every=1000"]  # fmt: skip
    cli = [sys.executable, "-m", "audiodiff", "train", str(RECIPE), "--run-dir", str(run)]
    for s in sets:
        cli += ["--set", s]
    # Trial 1 stretches every fsync to 0.1 s, so killing when a temp file appears lands
    # inside the write; the other trials kill at a random moment after some progress.
    slow_fsync = (
        "import os, sys, time; f = os.fsync; os.fsync = lambda fd: (time.sleep(0.1), f(fd))[1]; "
        "from audiodiff.cli import main; sys.argv[0] = 'audiodiff'; main()"
    )
    rng = random.Random(1234)
    mid_write = False
    for trial in range(5):
        before = _latest_step(run)
        cmd = [sys.executable, "-c", slow_fsync] + cli[3:] if trial == 1 else cli
        proc = _child(cmd, log)
        _wait(lambda b=before: _latest_step(run) > b, 120, proc, log)
        if trial == 1:
            _wait(lambda: any(p.name.startswith(".tmp-") for p in run.iterdir()), 30, proc, log)
            time.sleep(0.05)
        else:
            time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_write |= any(p.name.startswith(".tmp-") for p in run.iterdir())
        checkpoints = list_checkpoints(run)
        assert checkpoints and all(load_checkpoint(p)["step"] > 0 for p in checkpoints)
        assert _latest_step(run) > before  # the restart resumed and made progress
    assert mid_write, "no kill landed inside a checkpoint write"
    assert log.read_text().count("resumed from") == 4
    final = _latest_step(run) + 2
    cfg = load_config(RECIPE, [*sets, f"train.max_steps={final}", "data.num_workers=0"])
    Trainer(cfg, run).train()
    Trainer(cfg, tmp_path / "straight").train()
    _assert_same_state(load_checkpoint(run), load_checkpoint(tmp_path / "straight"))


class NaNTrainer(Trainer):
    """Injects NaN into the input of the given (0-based) steps."""

    nan_steps: set[int] = set()

    def model_inputs(self, batch):
        x0, cond, label = super().model_inputs(batch)
        if self.step in self.nan_steps:
            x0 = x0 * float("nan")
        return x0, cond, label


def test_nan_step_is_skipped_and_counted(tmp_path, tiny_config, manifests):
    cfg = _cfg(tiny_config, manifests, "train.max_steps=5", "train.save_every=5")
    trainer = NaNTrainer(cfg, tmp_path / "run")
    trainer.nan_steps = {2}
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.train()
    assert result.step == 5 and result.skipped_steps == 1
    state = load_checkpoint(tmp_path / "run")
    assert state["stats"]["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert any(not torch.equal(weights[k], state["model"][k]) for k in weights)  # it trained


def test_k_bad_steps_in_a_row_stop_with_the_step_named(tmp_path, tiny_config, manifests):
    cfg = _cfg(tiny_config, manifests, "train.max_steps=20", "train.save_every=2",
               "train.max_bad_steps=3")  # fmt: skip
    trainer = NaNTrainer(cfg, tmp_path / "run")
    trainer.nan_steps = set(range(3, 20))
    with pytest.raises(TrainingStopped, match=r"stopped at step 6: 3 steps in a row") as err:
        trainer.train()
    assert "step_00000004.pt" in str(err.value)  # the last good checkpoint is named
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_broken_manifest_trains_on_the_good_clips(tmp_path, tiny_config, write_wav):
    good = [write_wav(f"good{i}.wav", duration_s=0.3, seed=i) for i in range(2)]
    stereo = write_wav("stereo44k.wav", sample_rate=44100, duration_s=0.4, channels=2)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage")
    empty, silent = tmp_path / "empty.wav", tmp_path / "silent.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), 22050)
    sf.write(silent, np.zeros(11025, np.float32), 22050)
    tiny = write_wav("tiny.wav", duration_s=0.03)
    manifest = manifest_from_files(
        [*good, stereo, corrupt, empty, silent, tiny], tmp_path / "m.jsonl"
    )
    cfg = apply_overrides(tiny_config, [f"data.train_manifest={manifest}", "train.max_steps=2"])
    messages: list[str] = []
    result = Trainer(cfg, tmp_path / "run", log=messages.append).train()
    assert result.step == 2
    report = __import__("json").loads((tmp_path / "run" / "data_report.json").read_text())
    train = report["train"]
    assert train["n_usable"] == 3 and train["sample_rates"] == {"22050": 2, "44100": 1}
    reasons = {Path(s["path"]).name: s["reason"] for s in train["skipped"]}
    assert set(reasons) == {"corrupt.wav", "empty.wav", "silent.wav", "tiny.wav"}
    assert reasons["tiny.wav"].startswith("too short") and reasons["silent.wav"].startswith(
        "silent"
    )
    summary = [m for m in messages if m.startswith("train data:")]
    assert len(summary) == 1 and "3 of 7 clips usable" in summary[0]
    only_bad = manifest_from_files([corrupt, empty, silent], tmp_path / "bad.jsonl")
    bad_cfg = apply_overrides(tiny_config, [f"data.train_manifest={only_bad}"])
    with pytest.raises(ValueError, match=r"no usable clips .* all 3 skipped \(1 empty, 1 silent"):
        Trainer(bad_cfg, tmp_path / "run2")


def test_resume_keeps_this_machines_fused_optimizer(tmp_path, tiny_config, manifests):
    # A checkpoint written by a plain (unfused) Adam resumes into the fused kernel with its state.
    cfg = _cfg(tiny_config, manifests, "train.max_steps=2", "train.save_every=2")
    Trainer(cfg, tmp_path / "run").train()
    state = load_checkpoint(tmp_path / "run")
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = None
    save_checkpoint(state, tmp_path / "run", 2, keep_last=2)
    resumed = Trainer(_cfg(tiny_config, manifests, "train.max_steps=3"), tmp_path / "run")
    assert resumed.step == 2
    assert all(group["fused"] for group in resumed.optimizer.param_groups)
    loaded = resumed.optimizer.state_dict()["state"]
    for i, saved in state["optimizer"]["state"].items():
        assert torch.equal(loaded[i]["exp_avg"], saved["exp_avg"])
    resumed.train()  # the fused kernel steps from the restored moments
    assert resumed.step == 3


def test_resume_refuses_an_architecture_change(tmp_path, tiny_config, manifests):
    cfg = _cfg(tiny_config, manifests, "train.max_steps=1")
    Trainer(cfg, tmp_path / "run").train()
    (tmp_path / "run" / "config.yaml").unlink()  # the checkpoint's own config still decides
    wider = apply_overrides(cfg, ["diffusion.n_steps=20"])
    with pytest.raises(ValueError, match=r"diffusion.n_steps: 50 -> 20.*new --run-dir"):
        Trainer(wider, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing overwritten


def test_resume_on_changed_data_restarts_the_epoch_and_refuses_new_labels(
    tmp_path, tiny_config, write_wav
):
    """Issue 11 kind 4: a checkpoint's data position and label map describe the data it was
    trained on. Fewer clips on resume: the old mid-epoch position is dropped (next epoch); a label
    map that changed is refused instead of silently swapping classes."""
    clips = [write_wav(f"d/{i}.wav", duration_s=0.3, seed=i) for i in range(5)]
    five = manifest_from_files(clips, tmp_path / "five.jsonl", labels=list("aabba"))
    cfg = apply_overrides(
        tiny_config, [f"data.train_manifest={five}", "model.n_labels=2", "train.max_steps=1"]
    )
    Trainer(cfg, tmp_path / "run").train()
    same = Trainer(apply_overrides(cfg, ["train.max_steps=2"]), tmp_path / "run")
    assert (same.epoch, same.position) == (0, 2)  # unchanged data: mid-epoch, as saved

    four = manifest_from_files(clips[:4], tmp_path / "four.jsonl", labels=list("aabb"))
    messages: list[str] = []
    fewer = Trainer(
        apply_overrides(cfg, [f"data.train_manifest={four}", "train.max_steps=2"]),
        tmp_path / "run",
        log=messages.append,
    )
    assert (fewer.step, fewer.epoch, fewer.position) == (1, 1, 0)
    assert any("4 usable clips, the checkpoint's epoch had 5" in m for m in messages)

    renamed = manifest_from_files(clips, tmp_path / "renamed.jsonl", labels=list("aacca"))
    with pytest.raises(ValueError, match=r"labels \{'a': 0, 'b': 1\} but .* \{'a': 0, 'c': 1\}"):
        Trainer(apply_overrides(cfg, [f"data.train_manifest={renamed}"]), tmp_path / "run")


def test_lr_warmup_then_cosine():
    tr = TrainConfig(lr=1.0, warmup_steps=4, lr_decay="cosine", max_steps=14, min_lr_ratio=0.1)
    assert [lr_at(tr, s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(tr, 9) == pytest.approx(0.55) and lr_at(tr, 14) == pytest.approx(0.1)
    assert lr_at(TrainConfig(lr=0.5), 10**6) == 0.5


def test_lr_step_decay_and_its_validation():
    tr = TrainConfig(lr=1.0, warmup_steps=2, lr_decay="step", lr_milestones=[5, 8], lr_gamma=0.5)
    assert [lr_at(tr, s) for s in range(10)] == [0.5, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    base = ExperimentConfig()
    with pytest.raises(ValueError, match="lr_milestones: increasing steps"):
        validate(apply_overrides(base, ["train.lr_decay=step", "train.lr_milestones=[8, 5]"]))
    with pytest.raises(ValueError, match="lr_gamma must be in"):
        validate(
            apply_overrides(
                base, ["train.lr_decay=step", "train.lr_milestones=[5]", "train.lr_gamma=0"]
            )
        )


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, manifests):
    runner = CliRunner()
    train, _ = manifests

    def run(*args: str) -> str:
        result = runner.invoke(main, ["train", *args])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("audiodiff: error:"), result.output
        return lines[0]

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    assert "not valid YAML" in run(str(bad_yaml), "--run-dir", str(tmp_path / "r"))
    assert "unknown key train.speed" in run(
        str(RECIPE), "--run-dir", str(tmp_path / "r"), "--set", "train.speed=3"
    )
    assert "data.train_manifest nope.jsonl does not exist" in run(
        str(RECIPE), "--run-dir", str(tmp_path / "r"), "--set", "data.train_manifest=nope.jsonl"
    )
    assert not (tmp_path / "r").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert "not empty" in run(
        str(RECIPE), "--run-dir", str(foreign), "--set", f"data.train_manifest={train}"
    )
    assert os.listdir(foreign) == ["notes.txt"]  # nothing written into a foreign directory


def test_perceptual_validation_without_the_extra_is_refused_at_start(
    tmp_path, tiny_config, manifests, monkeypatch
):
    from audiodiff import perceptual

    monkeypatch.setattr(perceptual, "PACKAGES", ("no_such_mos_package",))
    cfg = _cfg(tiny_config, manifests, "train.eval_perceptual=true")
    with pytest.raises(ValueError, match=r"train.eval_perceptual: .*missing: no_such_mos_package"):
        Trainer(cfg, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / "data_report.json").exists()  # refused before any data work
    assert not (tmp_path / "run").exists()  # and before the run directory is made
