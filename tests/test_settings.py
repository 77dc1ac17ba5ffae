"""A setting that would do nothing is refused in one line, not accepted (issue 23, kind 4)."""

from __future__ import annotations

import pytest
import torch

from audiodiff.config_io import apply_overrides
from audiodiff.schedule import NoiseSchedule
from audiodiff.synthesis import make_sampling_spec
from audiodiff.train import Trainer, resolve_precision

from .conftest import manifest_overrides


def test_bf16_on_a_cpu_is_refused_before_the_run_dir_exists(tiny_config, manifests, tmp_path):
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="train.precision 'bf16' does nothing on a CPU"):
        resolve_precision("bf16", cpu)
    assert resolve_precision("auto", cpu) == resolve_precision("fp32", cpu) == "fp32"
    cfg = apply_overrides(
        tiny_config, [*manifest_overrides(manifests), "train.precision=bf16", "train.device=cpu"]
    )
    with pytest.raises(ValueError, match="use 'fp32' or 'auto'"):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_eta_for_a_sampler_with_a_fixed_eta_is_refused(tiny_config):
    schedule = NoiseSchedule.from_config(tiny_config.diffusion)
    for sampler in ("dpmpp-2m", "ddpm", "diffwave-fast"):
        with pytest.raises(ValueError, match=f"eta 0.5 does nothing with sampler '{sampler}'"):
            make_sampling_spec(tiny_config, schedule, sampler=sampler, steps=6, eta=0.5)
    assert make_sampling_spec(tiny_config, schedule, sampler="ddim", steps=3, eta=0.5).eta == 0.5
    # The value a sampler fixes is no contradiction, and no eta at all is the usual call.
    assert make_sampling_spec(tiny_config, schedule, sampler="ddpm", steps=6, eta=1.0).eta == 1.0
    assert make_sampling_spec(tiny_config, schedule, sampler="dpmpp-2m", steps=6).eta == 0.0
