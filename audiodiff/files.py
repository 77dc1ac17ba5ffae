"""Inputs and outputs of the batch commands (``mel``, ``vocode``, ``generate``): reading mel files,
telling mel files from audio files, and planning output paths so that an existing file is refused
*before* any work starts (nothing is computed and then lost to a refusal at the end).

Mel files the toolkit writes are ``.npz`` archives holding the mel (``mel``, float32
``[n_mels, frames]``) and the profile it was computed with (``profile``, every
:class:`~audiodiff.config.MelConfig` parameter as a JSON string), so the profile cannot be lost on
the way to ``vocode`` (a sidecar file can be left behind by a copy) and a mismatch is refused
instead of playing at the wrong speed. Any NumPy reads them: ``np.load(path)["mel"]``. Plain
``.npy`` and ``.pt`` mels from other tools carry no profile and are checked by shape and range only.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from audiodiff.config import MelConfig

MEL_SUFFIXES = (".npz", ".npy", ".pt")


def is_mel_file(path: str | Path) -> bool:
    """``.npz`` / ``.npy`` / ``.pt`` files hold mels; anything else is read as audio."""
    return Path(path).suffix.lower() in MEL_SUFFIXES


def load_mel_file(path: str | Path) -> torch.Tensor:
    """The mel of :func:`read_mel_file`, without its profile."""
    return read_mel_file(path)[0]


def _read_npz(path: Path) -> tuple[np.ndarray, str | None]:
    """``(mel, recorded profile JSON or None)`` of an ``.npz`` (one unnamed array is the mel)."""
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if "mel" not in names and len(names) != 1:
            raise ValueError(f"it holds {names}; expected an array named 'mel'")
        mel = archive["mel" if "mel" in names else names[0]]
        return mel, str(archive["profile"]) if "profile" in names else None


def read_mel_file(path: str | Path) -> tuple[torch.Tensor, MelConfig | None]:
    """A mel ``[n_mels, frames]`` or ``[1, n_mels, frames]`` from ``.npz``, ``.npy`` or ``.pt``,
    as float32 ``[1, n_mels, frames]``, and the profile it records (``.npz`` written by
    :func:`save_mel`), or None. ``.pt`` files load with ``weights_only=True`` (no code runs).

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable, not a float array, the wrong rank, or an unreadable profile.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    recorded = None
    try:
        if path.suffix.lower() == ".npz":
            array, recorded = _read_npz(path)
            mel = torch.from_numpy(array)
        elif path.suffix.lower() == ".npy":
            mel = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            mel = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is one user-facing reason
        raise ValueError(f"{path} is not a readable mel file: {err}") from None
    profile = None
    if recorded is not None:
        try:
            profile = MelConfig(**json.loads(recorded))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{path} records a mel profile this version cannot read: {err}"
            ) from None
    if not isinstance(mel, torch.Tensor) or not mel.is_floating_point():
        raise ValueError(f"{path} must hold one float array [n_mels, frames]")
    if mel.dim() == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.dim() != 2:
        raise ValueError(f"{path} holds shape {tuple(mel.shape)}; expected [n_mels, frames]")
    return mel.float().unsqueeze(0), profile


def plan_outputs(out_dir: str | Path, names: list[str], *, overwrite: bool) -> list[Path]:
    """Output paths ``out_dir/name``; refuses duplicates and (without ``overwrite``) existing files.

    Raises:
        ValueError: two inputs would write the same file.
        FileExistsError: a target exists and ``overwrite`` is false.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {out} exists and is not a directory")
    paths = [out / name for name in names]
    seen: dict[Path, int] = {}
    for i, path in enumerate(paths):
        if path in seen:
            raise ValueError(f"inputs {seen[path] + 1} and {i + 1} would both write {path}")
        seen[path] = i
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise FileExistsError(f"{existing[0]} exists{more}; pass --overwrite to replace")
    out.mkdir(parents=True, exist_ok=True)
    return paths


def save_mel(
    path: Path, mel: torch.Tensor, *, overwrite: bool, profile: MelConfig | None = None
) -> Path:
    """Write ``mel`` ``[n_mels, frames]`` as float32: ``.npz`` with its ``profile`` (see the
    module docstring), or a plain ``.npy`` (no overwrite unless asked).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: an ``.npz`` path without a profile, or another suffix.
    """
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy") or (suffix == ".npz" and profile is None):
        raise ValueError(f"a mel is written as .npz with its profile or as .npy, not {path}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    array = mel.detach().float().cpu().numpy()
    with open(path, "wb") as fh:
        if suffix == ".npz":
            recorded = json.dumps(dataclasses.asdict(profile), sort_keys=True)
            np.savez(fh, mel=array, profile=np.array(recorded))
        else:
            np.save(fh, array)
    return path
