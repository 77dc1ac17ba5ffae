"""Resolve a model source to ``(weights, config)``: a training checkpoint, a run directory, an
exported ``.safetensors`` file, or the name of a model shipped inside the package.

Inference always rebuilds the network from the config returned here (never from defaults), and
always prefers EMA weights, which are what samples and exports are made with.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audiodiff.checkpoint import label_names, load_checkpoint, load_export
from audiodiff.config import ExperimentConfig
from audiodiff.config_io import inference_from_dict
from audiodiff.config_rules import validate
from audiodiff.encoding import one_line
from audiodiff.subband import build_network

SHIPPED_DIR = Path(__file__).resolve().parent / "pretrained_models"


def shipped_models() -> list[str]:
    """Names of the models shipped with the package (``Vocoder.from_pretrained(name)``)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.safetensors"))


def resolve_source(source: str | Path) -> Path:
    """The file or run directory behind ``source``.

    Raises:
        FileNotFoundError: neither an existing path nor a shipped model name.
    """
    path = Path(source)
    if path.exists():
        return path
    shipped = SHIPPED_DIR / f"{source}.safetensors"
    if shipped.is_file():
        return shipped
    names = ", ".join(shipped_models()) or "none"
    raise FileNotFoundError(f"{source} is neither an existing file nor a shipped model ({names})")


class IgnoredSettingsWarning(UserWarning):
    """A stored model's config holds training-only settings this audiodiff does not know."""


def config_from_dict(data: dict[str, Any], where: str) -> ExperimentConfig:
    """Rebuild and validate a stored config for inference (:func:`inference_from_dict`):
    strict in the sections inference uses; unknown training-only keys (a newer version's) are
    left out with an :class:`IgnoredSettingsWarning` naming them.

    Raises:
        ValueError: the stored config does not fit this version of audiodiff where it matters.
    """
    try:
        cfg, ignored = inference_from_dict(data)
        cfg = validate(cfg)
    except ValueError as err:
        raise ValueError(f"{where}: stored config is not usable: {err}") from None
    if ignored:
        warnings.warn(
            f"{where}: ignored training-only settings this audiodiff does not know: "
            f"{', '.join(ignored)} (not needed to run the model)",
            IgnoredSettingsWarning,
            stacklevel=2,
        )
    return cfg


def load_model_source(
    source: str | Path,
) -> tuple[dict[str, torch.Tensor], ExperimentConfig, dict[str, Any]]:
    """Weights (EMA when present), config and metadata of any model source.

    Returns:
        ``(state_dict, config, info)``; ``info`` holds ``path``, ``kind`` ("checkpoint" or
        "export"), ``step`` and the export metadata when there is one.

    Raises:
        FileNotFoundError: nothing at ``source``.
        ValueError: not an audiodiff checkpoint or export, or an unusable config.
    """
    path = resolve_source(source)
    if path.is_file() and path.suffix == ".safetensors":
        state, cfg_dict, metadata = load_export(path)
        info: dict[str, Any] = {"path": str(path), "kind": "export", "metadata": metadata}
        info["step"] = int(metadata.get("step", 0))
        cfg = config_from_dict(cfg_dict, str(path))
        # The config's labels section; before it existed, names travelled in the metadata.
        info["labels"] = cfg.labels or (
            json.loads(metadata["labels"]) if "labels" in metadata else []
        )
        return state, cfg, info
    ckpt = load_checkpoint(path)
    state = ckpt.get("ema") or ckpt["model"]
    info = {"path": str(path), "kind": "checkpoint", "step": int(ckpt.get("step", 0))}
    cfg = config_from_dict(ckpt["config"], str(path))
    info["labels"] = cfg.labels or label_names(ckpt.get("labels") or {})
    return state, cfg, info


def load_network(
    source: str | Path,
) -> tuple[nn.Module, ExperimentConfig, dict[str, Any]]:
    """The network of any model source, rebuilt from its stored config with its (EMA) weights.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_model_source`, or weights that do not fit
            the stored config.
    """
    state, cfg, info = load_model_source(source)
    net = build_network(cfg)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{info['path']}: weights do not fit the stored config ({one_line(err)})"
        ) from None
    return net, cfg, info
