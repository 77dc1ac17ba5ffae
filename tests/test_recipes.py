"""Recipes: every YAML loads strictly and validates, overrides only non-default values (each with
a comment), every recipe folder has a README with its two commands; each recipe family trains a
few steps on data its own `prepare` layout wrote."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from audiodiff.config import ExperimentConfig, mel_profile, mel_profile_names
from audiodiff.config_io import load_config
from audiodiff.config_rules import validate

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
YAMLS = sorted(RECIPES.rglob("*.yaml"))
# Folders whose data comes from `audiodiff prepare <layout>` (smoke is fed by the tests directly).
PREPARED = ("ljspeech", "vctk", "libritts", "sc09", "maestro", "gtzan", "folder", "klettres")


def test_every_layout_has_a_recipe_folder():
    from audiodiff.datasets import READERS

    assert sorted(READERS) == sorted(PREPARED)
    for name in PREPARED:
        assert list((RECIPES / name).glob("*.yaml")), f"recipes/{name} has no config"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_loads_strictly_and_validates(path):
    cfg = validate(load_config(path))
    assert isinstance(cfg, ExperimentConfig)
    if path.parent.name in PREPARED:
        folder = path.parent.name
        assert cfg.data.train_manifest == f"data/{folder}/train.jsonl"
        assert cfg.data.val_manifest == f"data/{folder}/val.jsonl"


@pytest.mark.parametrize(
    "path",
    [p for p in YAMLS if p.parent.name in PREPARED],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_recipe_overrides_only_non_defaults_each_with_a_reason(path):
    data = yaml.safe_load(path.read_text())
    defaults = ExperimentConfig()
    for section, values in data.items():
        if not isinstance(values, dict):
            assert values != getattr(defaults, section), f"{section} repeats the default"
            continue
        base = getattr(defaults, section)
        if section == "mel" and values.get("name") in mel_profile_names():
            base = mel_profile(values["name"])
            assert values["name"] != "hifigan", "mel.name hifigan is the default"
            values = {k: v for k, v in values.items() if k != "name"}
        for key, value in values.items():
            default = getattr(base, key)
            assert value != default, f"{path.name}: {section}.{key} = {value!r} is the default"
    # Every leaf override line carries a comment saying why.
    for line in path.read_text().splitlines():
        if re.match(r"^\s*[a-z_]+:\s*\S", line):
            assert "#" in line, f"{path.name}: no reason given on {line.strip()!r}"


@pytest.mark.parametrize("name", PREPARED)
def test_recipe_readme_has_download_licence_commands_and_marked_figures(name):
    text = (RECIPES / name / "README.md").read_text()
    assert f"audiodiff prepare {name} " in text
    for config in (RECIPES / name).glob("*.yaml"):
        if f"recipes/{name}/{config.name}" not in text:
            assert config.name in text, f"{config.name} not mentioned in {name}/README.md"
    assert f"audiodiff train recipes/{name}/" in text
    assert "Licence" in text
    assert "measured here" in text
    assert "Hardware assumed" in text


@pytest.mark.parametrize("name", PREPARED)
def test_recipe_readme_states_speed_and_first_checkpoint_on_cpu_and_gpu(name):
    """Each config of the folder has a row: speed and first checkpoint on 2 CPU cores, and one
    GPU, every figure marked measured (or derived from a measured one) or unmeasured."""
    text = (RECIPES / name / "README.md").read_text()
    assert "**Speed and first checkpoint**" in text, f"{name}/README.md has no speed table"
    section = text.split("**Speed and first checkpoint**", 1)[1]
    lines = section.split("\n\n", 2)[1].splitlines()
    assert lines[0] == ("| config | 2 CPU cores: speed | 2 CPU cores: first checkpoint | one GPU |")
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 4, line
        rows[cells[0].strip("`")] = cells[1:]
    assert sorted(rows) == sorted(p.name for p in (RECIPES / name).glob("*.yaml"))
    for config, (speed, checkpoint, gpu) in rows.items():
        assert "measured here" in speed or "*unmeasured*" in speed, (config, speed)
        assert "steps/s" in speed or "*unmeasured*" in speed, (config, speed)
        assert checkpoint.startswith("step "), (config, checkpoint)
        assert any(w in checkpoint for w in ("derived", "measured")), (config, checkpoint)
        assert "measured here" in gpu or gpu == "*unmeasured*", (config, gpu)


# The slowest the folder recipe's stft step was measured at on the shared 2-core machine (at
# --threads 1 with other users' jobs running: recipes/folder/README.md), and its start-up.
FOLDER_WORST_S_PER_STEP, FOLDER_START_S = 2.0, 30


def test_folder_recipe_is_sized_for_a_cpu_and_keeps_the_base_model_for_a_gpu():
    cpu = load_config(RECIPES / "folder" / "vocoder.yaml")
    gpu = load_config(RECIPES / "folder" / "vocoder-gpu.yaml")
    assert cpu.model.domain == "stft" and gpu.model.domain == "waveform"
    assert (gpu.model.residual_channels, gpu.model.residual_layers) == (64, 30)  # DiffWave BASE
    # A first checkpoint within 15 minutes on 2 CPU cores, even at the slowest measured speed.
    first = FOLDER_START_S + cpu.train.save_every * FOLDER_WORST_S_PER_STEP
    assert first <= 15 * 60, first
    assert cpu.train.log_every * FOLDER_WORST_S_PER_STEP <= 120  # a loss line every two minutes


def test_recipes_index_lists_every_config_and_torchrun():
    text = (RECIPES / "README.md").read_text()
    for path in YAMLS:
        assert path.name in text and f"[{path.parent.name}]" in text
    assert "--rdzv_endpoint" in text and "--nproc_per_node" in text
    assert "per GPU" in text
    # Throughput figures are measured ones, with the command that measured them; none for GPUs.
    assert "benchmarks/train_speed.py" in text and "No recipe has been timed on a GPU" in text


def test_sc09_recipes_are_the_paper_network():
    for name in ("unconditional", "class_conditional"):
        cfg = load_config(RECIPES / "sc09" / f"{name}.yaml")
        assert (cfg.model.residual_layers, cfg.model.residual_channels) == (36, 256)
        assert 2 ** (cfg.model.dilation_cycle - 1) == 2048
        assert (cfg.diffusion.n_steps, cfg.diffusion.beta_start, cfg.diffusion.beta_end) == (
            200,
            1e-4,
            0.02,
        )
        # One crop is the whole 1 s clip at 16 kHz.
        assert cfg.mel.sample_rate == 16000
        assert cfg.data.segment_frames * cfg.mel.hop_length == 16000
    cond = load_config(RECIPES / "sc09" / "class_conditional.yaml")
    assert cond.model.n_labels == 10 and cond.diffusion.label_dropout > 0


def test_music_and_speech_rates():
    rates = {
        p.parent.name + "/" + p.stem: load_config(p).mel.sample_rate
        for p in YAMLS
        if p.parent.name in PREPARED
    }
    assert rates["vctk/bigvgan24k"] == rates["libritts/bigvgan24k"] == 24000
    for key in ("maestro/unconditional", "maestro/vocoder", "gtzan/unconditional"):
        assert rates[key] == 22050
    assert load_config(RECIPES / "maestro" / "vocoder.yaml").mel.f_max == 11025.0
    assert dataclasses.asdict(load_config(RECIPES / "ljspeech" / "base.yaml").mel) == (
        dataclasses.asdict(mel_profile("hifigan"))
    )


# Sizes shrunk so that three steps of any recipe take about a second on 2 CPU cores; everything
# else (mel profile, conditioning, labels, schedule length, sampler) is the recipe's own.
SHRINK = (
    "model.residual_channels=8",
    "model.residual_layers=2",
    "model.dilation_cycle=2",
    "model.step_embedding_dim=16",
    "model.step_mlp_dim=32",
    "data.segment_frames=5",  # 1280 samples at hop 256: the stft recipes' MR-STFT needs > 1024
    "data.batch_size=2",
    "data.num_workers=0",
    "train.max_steps=3",
    "train.log_every=1",
    "train.eval_every=1000000",
    "train.save_every=3",
    "train.init_from=",  # a fine-tuning recipe's weights do not fit the shrunk model
)


# ljspeech/large differs from ljspeech/base only in sizes SHRINK replaces and in T = 200, which the
# SC09 and music recipes train with; every other config trains on its own layout's data.
TRAINED = [p for p in YAMLS if p.parent.name in PREPARED and p.name != "large.yaml"]


@pytest.mark.parametrize("path", TRAINED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_trains_three_steps_on_its_prepared_layout(path, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from audiodiff.cli import main

    from .test_datasets import BUILDERS

    layout = path.parent.name
    monkeypatch.chdir(tmp_path)  # the recipes name their manifests relative to the working dir
    runner = CliRunner()
    root = BUILDERS[layout](tmp_path / "download")
    prepared = runner.invoke(main, ["prepare", layout, str(root), "--out", f"data/{layout}"])
    assert prepared.exit_code == 0, prepared.output
    args = ["train", str(path), "--run-dir", "run"]
    for item in SHRINK:
        args += ["--set", item]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "trained to step 3" in result.output
    cfg = load_config(tmp_path / "run" / "config.yaml")
    recipe = load_config(path)
    # The run kept what makes the recipe what it is.
    assert cfg.mel == recipe.mel
    assert cfg.model.conditioning == recipe.model.conditioning
    assert cfg.model.n_labels == recipe.model.n_labels
    assert cfg.diffusion == recipe.diffusion
