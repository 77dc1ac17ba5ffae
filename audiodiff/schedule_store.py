"""Store a sampling schedule in a copy of a model: ``sample.sigmas`` of a checkpoint or an export.

What ``audiodiff search-schedule`` writes once :mod:`audiodiff.schedule_search` has found the
sigmas; ``Vocoder.from_pretrained`` of the copy then samples with them by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from audiodiff.atomic import atomic_write
from audiodiff.checkpoint import export_safetensors, load_checkpoint, load_export
from audiodiff.config_migrate import migrate
from audiodiff.pretrained import config_from_dict, resolve_source


def _check_sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(s) for s in sigmas)
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"a schedule needs finite positive sigmas, got {list(values)}")
    if any(a <= b for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"a schedule's sigmas must strictly descend, got {list(values)}")
    return values


def check_store_target(source: str | Path, out_path: str | Path) -> bool:
    """Whether ``source`` (any model source: a file, run directory or shipped name) is an export;
    refuses an ``out_path`` of the other kind. Cheap, so the CLI calls it before the search.

    Raises:
        ValueError: a checkpoint stored as ``.safetensors``, or an export as anything else.
    """
    source, out = resolve_source(source), Path(out_path)
    is_export = source.is_file() and source.suffix == ".safetensors"
    if is_export != (out.suffix == ".safetensors"):
        raise ValueError(
            f"{source} is {'an export' if is_export else 'a checkpoint'} but {out} would be "
            f"{'an export' if not is_export else 'a checkpoint'}; keep the kind (use `audiodiff "
            "export` to turn a checkpoint into an export)"
        )
    return is_export


def store_schedule(
    source_path: str | Path,
    sigmas: Sequence[float],
    out_path: str | Path,
    *,
    sampler: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a copy of a model whose config carries a searched sampling schedule.

    ``sample.sigmas`` becomes ``sigmas`` and ``sample.steps`` their count (and ``sample.sampler``
    ``sampler`` when given), so ``Vocoder.from_pretrained(out_path)`` uses them by default. A
    checkpoint gives a checkpoint (every other entry unchanged), an export an export (weights and
    other metadata unchanged); the source is only read.

    Args:
        source_path: training checkpoint, run directory, ``.safetensors`` export or shipped
            model name.
        sigmas: the N noise levels, strictly descending, positive (no final 0).
        out_path: destination; ``.safetensors`` exactly when the source is an export.
        sampler: the sampler the schedule was searched for.
        overwrite: replace an existing ``out_path``.

    Returns:
        ``out_path``.

    Raises:
        FileNotFoundError: no source.
        FileExistsError: ``out_path`` exists and ``overwrite`` is false.
        ValueError: bad sigmas, an unreadable source, or an output suffix of the other kind.
    """
    source, out = resolve_source(source_path), Path(out_path)
    values = _check_sigmas(sigmas)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    is_export = check_store_target(source, out)

    def with_schedule(config: dict[str, Any]) -> dict[str, Any]:
        # In this version's spelling first: an older file's sample.schedule is sample.sigmas.
        config = migrate(config, allow_newer=True)[0]
        sample = {**config.get("sample", {}), "sigmas": list(values), "steps": len(values)}
        if sampler is not None:
            sample["sampler"] = sampler
        new = {**config, "sample": sample}
        config_from_dict(new, str(source))  # refuse a config this audiodiff could not load
        return new

    out.parent.mkdir(parents=True, exist_ok=True)
    if is_export:
        tensors, config, metadata = load_export(source)
        ckpt: dict[str, Any] = {
            "config": with_schedule(config),
            "model": tensors,
            "step": int(metadata.get("step", 0)),
        }
        if metadata.get("weights") == "ema":
            ckpt["ema"] = tensors
        own = ("format", "format_version", "config", "step", "weights")
        extra = {k: v for k, v in metadata.items() if k not in own}
        return export_safetensors(ckpt, out, overwrite=overwrite, extra_metadata=extra)
    ckpt = load_checkpoint(source)
    ckpt["config"] = with_schedule(ckpt["config"])
    atomic_write(out, lambda f: torch.save(ckpt, f))
    return out
