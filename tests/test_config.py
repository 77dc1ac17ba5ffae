"""Config round trips, strict errors that carry the names, overrides and cross-field rules."""

from __future__ import annotations

import pytest

from audiodiff.config import ExperimentConfig, mel_profile, mel_profile_names
from audiodiff.config_io import apply_overrides, dump_config, from_dict, load_config, to_dict
from audiodiff.config_rules import architecture_changes, upsample_factors, validate


def test_default_round_trip_through_dict_and_yaml(tmp_path):
    cfg = apply_overrides(ExperimentConfig(), ["mel.name=bigvgan-24k", "train.lr=3e-4"])
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg
    path = tmp_path / "c.yaml"
    dump_config(cfg, path)
    assert load_config(path) == cfg


def test_to_dict_holds_only_primitives():
    def walk(v):
        if isinstance(v, dict):
            assert all(isinstance(k, str) for k in v)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        else:
            assert v is None or isinstance(v, (str, int, float, bool))

    walk(to_dict(ExperimentConfig()))


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown key train\.lrr.*max_steps, lr,"):
        from_dict(ExperimentConfig, {"train": {"lrr": 1e-4}})
    with pytest.raises(ValueError, match=r"unknown key bogus"):
        from_dict(ExperimentConfig, {"bogus": {}})


def test_wrong_type_names_field_value_and_type():
    with pytest.raises(ValueError, match=r"train\.lr = 'fast' is not a valid float"):
        from_dict(ExperimentConfig, {"train": {"lr": "fast"}})
    with pytest.raises(ValueError, match=r"model\.residual_layers = 2\.5 is not a valid int"):
        from_dict(ExperimentConfig, {"model": {"residual_layers": 2.5}})
    with pytest.raises(ValueError, match=r"mel\.padding = 'same'.*'hifigan' \| 'center'"):
        from_dict(ExperimentConfig, {"mel": {"padding": "same"}})
    with pytest.raises(ValueError, match=r"train\.compile = 1 is not a valid bool"):
        from_dict(ExperimentConfig, {"train": {"compile": 1}})


def test_int_widens_to_float():
    cfg = from_dict(ExperimentConfig, {"train": {"lr": 1}})
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0


def test_profile_name_starts_from_that_profile():
    cfg = from_dict(ExperimentConfig, {"mel": {"name": "bigvgan-24k", "hop_length": 300}})
    assert (cfg.mel.sample_rate, cfg.mel.n_mels, cfg.mel.f_max) == (24000, 100, 12000.0)
    assert cfg.mel.hop_length == 300
    assert from_dict(ExperimentConfig, {"mel": "diffwave"}).mel == mel_profile("diffwave")


def test_overrides_parse_types_and_reject_bad_keys():
    cfg = apply_overrides(
        ExperimentConfig(),
        [
            "train.lr=1e-4",
            "train.compile=true",
            "model.upsample_factors=[16, 16]",
            "mel.f_max=none",
        ],
    )
    assert cfg.train.lr == 1e-4 and cfg.train.compile is True
    assert cfg.model.upsample_factors == [16, 16] and cfg.mel.f_max is None
    assert apply_overrides(cfg, ["model.conditioning=none"]).model.conditioning == "none"
    with pytest.raises(ValueError, match="section.field=value"):
        apply_overrides(cfg, ["lr=1"])
    with pytest.raises(ValueError, match="unknown section 'trian'"):
        apply_overrides(cfg, ["trian.lr=1"])
    with pytest.raises(ValueError, match=r"unknown key train\.lrr"):
        apply_overrides(cfg, ["train.lrr=1"])


@pytest.mark.parametrize(
    ("hop", "factors"),
    [
        (200, [10, 20]),
        (240, [15, 16]),
        (256, [16, 16]),
        (300, [15, 20]),
        (441, [21, 21]),
        (512, [16, 32]),
    ],
)
def test_upsample_factors(hop, factors):
    assert upsample_factors(hop) == factors


def test_validate_rejects_cross_field_mistakes():
    validate(ExperimentConfig())
    for name in mel_profile_names():
        validate(apply_overrides(ExperimentConfig(), [f"mel.name={name}"]))
    with pytest.raises(ValueError, match="hop_length 257 cannot be split.*prime factor is 257"):
        validate(apply_overrides(ExperimentConfig(), ["mel.padding=center", "mel.hop_length=257"]))
    with pytest.raises(ValueError, match=r"upsample_factors \[16, 8\] multiply to 128 .*256"):
        validate(apply_overrides(ExperimentConfig(), ["model.upsample_factors=[16, 8]"]))
    with pytest.raises(ValueError, match="f_max"):
        validate(apply_overrides(ExperimentConfig(), ["mel.f_max=20000"]))
    with pytest.raises(ValueError, match="conditioning must be 'none'"):
        validate(apply_overrides(ExperimentConfig(), ["model.domain=mel"]))
    with pytest.raises(ValueError, match="label_dropout > 0 needs model.n_labels"):
        validate(apply_overrides(ExperimentConfig(), ["diffusion.label_dropout=0.1"]))
    with pytest.raises(ValueError, match="segment_frames must be at least 1"):
        validate(apply_overrides(ExperimentConfig(), ["data.segment_frames=0"]))


def test_architecture_changes_names_fields():
    a = ExperimentConfig()
    b = apply_overrides(a, ["model.residual_layers=20", "train.lr=1e-3"])
    assert architecture_changes(a, b) == ["model.residual_layers: 30 -> 20"]


# ------------------------------------------------------------------------------------------------
# config_version migrations and the model/run config split (issue 12, item 3)
# ------------------------------------------------------------------------------------------------


def _version_1(cfg) -> dict:
    """``cfg`` as version 1 wrote it: one dict with every section, Adam's betas as train.betas."""
    from audiodiff.config_io import to_dict

    data = to_dict(cfg)
    data["config_version"] = 1
    data["train"]["betas"] = data["train"].pop("adam_betas")
    data["sample"]["schedule"] = data["sample"].pop("sigmas")
    data["sample"]["chunk_frames"] = 0  # a key version 1 had and never read
    return data


def test_version_1_files_load_with_their_old_spellings(tmp_path):
    import yaml

    from audiodiff.config import CONFIG_VERSION, ExperimentConfig
    from audiodiff.config_io import from_dict, inference_from_dict, load_config
    from audiodiff.config_migrate import migrate

    cfg = ExperimentConfig()
    cfg.train.adam_betas = [0.8, 0.99]
    cfg.sample.steps, cfg.sample.sigmas = 2, [1.5, 0.1]  # a searched schedule
    old = _version_1(cfg)
    data, notes = migrate(old)
    assert notes == [
        "train.betas is now spelt train.adam_betas",
        "sample.schedule is now spelt sample.sigmas",
        "sample.chunk_frames was never used and is dropped",
    ]
    assert data["config_version"] == CONFIG_VERSION == 2 and "betas" not in data["train"]
    assert data["sample"]["sigmas"] == [1.5, 0.1] and "schedule" not in data["sample"]
    assert from_dict(ExperimentConfig, data) == cfg
    assert old["train"]["betas"] == [0.8, 0.99]  # the input is not modified
    assert inference_from_dict(old) == (cfg, [])  # an old export: no note, nothing ignored
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old), encoding="utf-8")
    assert load_config(tmp_path / "old.yaml") == cfg
    # A recipe without config_version takes either spelling, and so does --set.
    (tmp_path / "r.yaml").write_text("train:\n  betas: [0.8, 0.99]\n", encoding="utf-8")
    assert load_config(tmp_path / "r.yaml").train.adam_betas == [0.8, 0.99]
    assert load_config(tmp_path / "r.yaml", ["train.betas=[0.5, 0.9]"]).train.adam_betas == [
        0.5,
        0.9,
    ]


def test_migration_refusals_name_the_problem():
    from audiodiff.config import ExperimentConfig
    from audiodiff.config_io import from_dict, to_dict
    from audiodiff.config_migrate import migrate

    both = to_dict(ExperimentConfig())
    both["train"]["betas"] = [0.9, 0.999]
    del both["config_version"]
    with pytest.raises(ValueError, match="train.betas and train.adam_betas are one key"):
        migrate(both)
    # A version-2 file means nothing by the old name: strict loading refuses it.
    current = to_dict(ExperimentConfig())
    current["train"]["betas"] = current["train"].pop("adam_betas")
    with pytest.raises(ValueError, match="unknown key train.betas"):
        from_dict(ExperimentConfig, migrate(current)[0])
    with pytest.raises(ValueError, match="config_version must be a positive integer, got '2'"):
        migrate({"config_version": "2"})
    with pytest.raises(ValueError, match="config_version 3 was written by a newer audiodiff"):
        migrate({"config_version": 3})


def test_a_newer_export_loads_for_inference_with_a_note(tmp_path, tiny_config):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from audiodiff.pretrained import IgnoredSettingsWarning
    from audiodiff.vocoder import Vocoder

    from .conftest import random_export

    path = random_export(tiny_config, tmp_path / "v3.safetensors")
    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
    cfg = json.loads(metadata["config"])
    assert "train" not in cfg and "data" not in cfg  # exports carry the model config only
    cfg["config_version"] = 3
    metadata["config"] = json.dumps(cfg)
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.warns(IgnoredSettingsWarning, match=r"config_version 3 \(read as 2\)"):
        voc = Vocoder.from_pretrained(path)
    assert voc.config.model == tiny_config.model


def test_checkpoints_keep_the_run_config_apart_and_version_1_ones_resume(tiny_config):
    from audiodiff.config import ExperimentConfig
    from audiodiff.config_io import from_dict, to_dict
    from audiodiff.config_migrate import migrate, model_config, run_config, stored_config

    data = to_dict(tiny_config)
    split = {"config": model_config(data), "run_config": run_config(data)}
    assert set(split["run_config"]) == {"data", "train"}
    assert not {"data", "train"} & set(split["config"])
    assert from_dict(ExperimentConfig, migrate(stored_config(split))[0]) == tiny_config
    old = {"config": _version_1(tiny_config)}  # version 1: one dict under "config"
    assert from_dict(ExperimentConfig, migrate(stored_config(old))[0]) == tiny_config


def test_a_recipe_without_version_takes_removed_keys_as_it_takes_renamed_ones(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "train:\n  betas: [0.8, 0.99]\nsample:\n  chunk_frames: 0\n", encoding="utf-8"
    )
    cfg = load_config(tmp_path / "r.yaml")
    assert cfg.train.adam_betas == [0.8, 0.99] and cfg.sample == ExperimentConfig().sample
