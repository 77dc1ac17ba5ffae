"""Shared fixtures: synthetic audio made here (nothing downloads) and tiny configs that train in
seconds on 2 CPU cores."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.config import ExperimentConfig
from audiodiff.config_io import apply_overrides

# The tests run tiny models: one intra-op thread is fastest for them, and with two threads on a
# shared 2-core machine every op waits on the busier core (measured here: up to 15x slower).
torch.set_num_threads(1)


def chirp_plus_noise(
    sample_rate: int = 22050, duration_s: float = 0.5, seed: int = 0, amplitude: float = 0.5
) -> np.ndarray:
    """A linear chirp 100 Hz -> 0.45 * sample_rate plus white noise at -30 dB; float32 [T]."""
    rng = np.random.default_rng(seed)
    n = int(round(sample_rate * duration_s))
    t = np.arange(n) / sample_rate
    f0, f1 = 100.0, 0.45 * sample_rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(duration_s, 1e-9)))
    x = amplitude * np.sin(phase) + 0.03 * amplitude * rng.standard_normal(n)
    return x.astype(np.float32)


@pytest.fixture
def make_audio() -> Callable[..., np.ndarray]:
    """Factory: ``make_audio(sample_rate=22050, duration_s=0.5, seed=0)`` -> float32 [T]."""
    return chirp_plus_noise


@pytest.fixture
def write_wav(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a synthetic clip: ``write_wav(name, sample_rate=22050, duration_s=0.5,
    channels=1, subtype="PCM_16", seed=0)`` -> path under tmp_path."""
    import soundfile as sf

    def _write(
        name: str,
        sample_rate: int = 22050,
        duration_s: float = 0.5,
        channels: int = 1,
        subtype: str = "PCM_16",
        seed: int = 0,
    ) -> Path:
        x = chirp_plus_noise(sample_rate, duration_s, seed)
        data = np.stack([x * (0.5 + 0.5 * c / max(channels, 1)) for c in range(channels)], axis=1)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, sample_rate, subtype=subtype)
        return path

    return _write


# Overrides of TINY_OVERRIDES for a tiny stft-domain vocoder (mel prior, v on a zero-terminal-SNR
# table, DPM-Solver++ 2M: the stft recipes' choices).
STFT_TINY = [
    "model.domain=stft",
    "model.prior=mel",
    "model.residual_channels=16",
    "diffusion.target=v",
    "diffusion.schedule=linear-zsnr",
    "sample.sampler=dpmpp-2m",
]


TINY_OVERRIDES = [
    "model.residual_channels=8",
    "model.residual_layers=4",
    "model.dilation_cycle=2",
    "model.step_embedding_dim=16",
    "model.step_mlp_dim=32",
    "data.segment_frames=8",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.log_every=5",
    "train.eval_every=1000000",
    "train.save_every=10",
]


@pytest.fixture
def manifests(tmp_path, write_wav) -> tuple[Path, Path]:
    """Five training clips (two steps of batch 2 per epoch, so resumes land mid-epoch), two val."""
    from audiodiff.manifest import manifest_from_files

    train = [write_wav(f"data/t{i}.wav", duration_s=0.2 + 0.05 * i, seed=i) for i in range(5)]
    val = [write_wav(f"data/v{i}.wav", duration_s=0.3, seed=10 + i) for i in range(2)]
    return (
        manifest_from_files(train, tmp_path / "data" / "train.jsonl"),
        manifest_from_files(val, tmp_path / "data" / "val.jsonl"),
    )


def manifest_overrides(manifests: tuple[Path, Path]) -> list[str]:
    """``--set`` overrides pointing a config at the ``manifests`` fixture's train and val sets."""
    train, val = manifests
    return [f"data.train_manifest={train}", f"data.val_manifest={val}"]


@pytest.fixture
def tiny_config() -> ExperimentConfig:
    """A vocoder config small enough to train a few steps in well under a second per step."""
    return apply_overrides(dataclasses.replace(ExperimentConfig(), name="tiny"), TINY_OVERRIDES)


def random_export(
    cfg: ExperimentConfig, path: Path, *, seed: int = 0, output_std: float = 0.3
) -> Path:
    """Export a model of ``cfg`` with random weights (the zero-initialised output projection drawn
    with ``output_std`` so the output is not trivially 0; 0 keeps it zero) as ``.safetensors``."""
    from audiodiff.checkpoint import export_safetensors
    from audiodiff.config_io import to_dict
    from audiodiff.subband import build_network

    gen = torch.Generator().manual_seed(seed)
    net = build_network(cfg, generator=gen)
    if output_std:
        with torch.no_grad():
            head = getattr(net, "net", net)  # a sub-band model's shared DiffWave
            head.output_projection.weight.normal_(0, output_std, generator=gen)
    state = net.state_dict()
    return export_safetensors({"config": to_dict(cfg), "model": state, "ema": state}, path)


def tiny_diffwave(generator: torch.Generator, *, output_std: float, **model: object):
    """A few-thousand-parameter vocoder (80 mels, hop 256, T = 50) drawn from ``generator``, its
    zero-initialised output projection drawn with ``output_std`` so outputs depend on inputs."""
    from torch import nn

    from audiodiff.config import ModelConfig
    from audiodiff.model import DiffWave

    shape = dict(residual_channels=8, residual_layers=4, dilation_cycle=2)
    cfg = ModelConfig(**shape, step_embedding_dim=16, step_mlp_dim=32, **model)
    net = DiffWave(cfg, n_mels=80, hop_length=256, n_steps=50, generator=generator)
    nn.init.normal_(net.output_projection.weight, std=output_std, generator=generator)
    return net


def invoke(*args):
    """Run the ``audiodiff`` CLI in-process with ``args`` (paths welcome); click's Result."""
    from click.testing import CliRunner

    from audiodiff.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_exit_2(result, *texts: str) -> None:
    """The CLI's refusal contract: exit code 2 and one line ``audiodiff: error: ...`` holding every
    one of ``texts``."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiodiff: error:"), result.output
    for text in texts:
        assert text in lines[0], lines[0]
