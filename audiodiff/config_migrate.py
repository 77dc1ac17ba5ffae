"""Reading configs written by other versions of audiodiff: ``config_version`` migrations, and the
split of a stored config into what inference needs (the model config) and what only training
reads (the run config), as nanoGPT keeps ``model_args`` apart from its training settings.

Version history:

* 1: the first layout.
* 2: ``train.betas`` (Adam's, not the noise schedule's) is ``train.adam_betas``, and
  ``sample.schedule`` (a searched list of sigmas, not a noise schedule) is ``sample.sigmas``;
  "schedule" now names the training noise table alone (``diffusion.schedule``,
  :class:`~audiodiff.schedule.NoiseSchedule`) and the search for sigmas. ``sample.chunk_frames``,
  which nothing read, is gone. Exports store
  only the model config (mel, model, diffusion, sample, labels): no device, worker count or
  training manifest paths; checkpoints store the model config under ``config`` and the run
  config (data, train) under ``run_config``.

Every file written by version 1 or 2 loads (old spellings are renamed). A file from a *newer*
version loads for inference with a note (its unknown keys in the training-only sections are then
ignored by :func:`audiodiff.config_io.inference_from_dict`); training refuses it.
Like :mod:`audiodiff.config`, it imports no torch.
"""

from __future__ import annotations

import copy
from typing import Any

from audiodiff.config import CONFIG_VERSION, TRAINING_SECTIONS

# (section, old key, new key, version that renamed it).
RENAMED_KEYS = (("train", "betas", "adam_betas", 2), ("sample", "schedule", "sigmas", 2))
# (section, key, version that removed it): keys that never did anything, dropped from old files.
REMOVED_KEYS = (("sample", "chunk_frames", 2),)


def renamed_key(section: str, key: str) -> str:
    """The current spelling of ``section.key`` (itself when it was never renamed); lets ``--set``
    take old spellings too."""
    for sec, old, new, _ in RENAMED_KEYS:
        if (sec, old) == (section, key):
            return new
    return key


def migrate(data: dict[str, Any], *, allow_newer: bool = False) -> tuple[dict[str, Any], list[str]]:
    """A config dict of any supported ``config_version`` as this version's dict.

    A dict without ``config_version`` (a hand-written recipe) takes either spelling of a renamed
    key. The input is not modified.

    Args:
        data: the stored or written config (sections as nested dicts).
        allow_newer: read a newer version's file as this version (inference), noting it.

    Returns:
        ``(data, notes)``: ``notes`` says what was renamed or assumed, one line each.

    Raises:
        ValueError: a version that is not a positive integer, a newer version without
            ``allow_newer``, or a file spelling one key both ways.
    """
    version = data.get("config_version", CONFIG_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"config_version must be a positive integer, got {version!r}")
    notes: list[str] = []
    if version > CONFIG_VERSION:
        if not allow_newer:
            raise ValueError(
                f"config_version {version} was written by a newer audiodiff; this one reads "
                f"1..{CONFIG_VERSION}: upgrade audiodiff to train from it"
            )
        notes.append(
            f"config_version {version} is newer than this audiodiff's {CONFIG_VERSION}: read "
            "as that version"
        )
    out = copy.deepcopy(data)
    for section, old, new, renamed_in in RENAMED_KEYS:
        block = out.get(section)
        if not isinstance(block, dict) or old not in block:
            continue
        if new in block:
            raise ValueError(f"{section}.{old} and {section}.{new} are one key; give only {new}")
        if version >= renamed_in and "config_version" in data:
            continue  # a file of that version already means something else by the old name
        block[new] = block.pop(old)
        notes.append(f"{section}.{old} is now spelt {section}.{new}")
    for section, key, removed_in in REMOVED_KEYS:
        block = out.get(section)
        unversioned = "config_version" not in data  # a hand-written recipe: any version's keys
        if isinstance(block, dict) and key in block and (version < removed_in or unversioned):
            del block[key]
            notes.append(f"{section}.{key} was never used and is dropped")
    if "config_version" in out:
        out["config_version"] = CONFIG_VERSION
    return out, notes


def model_config(data: dict[str, Any]) -> dict[str, Any]:
    """What inference needs of a config dict: everything but the run config (data, train)."""
    return {k: v for k, v in data.items() if k not in TRAINING_SECTIONS}


def run_config(data: dict[str, Any]) -> dict[str, Any]:
    """The run config (data, train) of a config dict: what only training reads."""
    return {k: v for k, v in data.items() if k in TRAINING_SECTIONS}


def stored_config(stored: dict[str, Any]) -> dict[str, Any]:
    """The whole config dict of a checkpoint: its ``config`` with its ``run_config`` (version 2)
    or, for version 1, its ``config`` alone (which held both)."""
    return {**stored["config"], **stored.get("run_config", {})}
