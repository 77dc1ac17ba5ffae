"""audiodiff: diffusion-based audio generation with DiffWave-style networks.

Public surface: ``Vocoder`` (mel -> waveform inference API), ``DiffWave`` (the network), the config
dataclasses, ``load_checkpoint`` and ``__version__``. Heavy modules are imported on first use, so
``import audiodiff`` stays cheap and never pulls in click or tensorboard.
"""

from __future__ import annotations

import importlib
from typing import Any

from audiodiff.config import (
    DataConfig,
    DiffusionConfig,
    ExperimentConfig,
    MelConfig,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    mel_profile,
)
from audiodiff.config_io import load_config

__version__ = "0.1.0"

_LAZY = {
    "Vocoder": "audiodiff.vocoder",
    "DiffWave": "audiodiff.model",
    "load_checkpoint": "audiodiff.checkpoint",
}

__all__ = [
    "DataConfig",
    "DiffWave",
    "DiffusionConfig",
    "ExperimentConfig",
    "MelConfig",
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "Vocoder",
    "__version__",
    "load_checkpoint",
    "load_config",
    "mel_profile",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiodiff' has no attribute {name!r}")
