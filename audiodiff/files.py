"""Inputs and outputs of the batch commands (``mel``, ``vocode``, ``generate``): reading mel files,
telling mel files from audio files, walking input folders (symlinked folders followed, loop-safe),
and planning output paths so that an existing file is refused *before* any work starts (nothing is
computed and then lost to a refusal at the end).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import torch

MEL_SUFFIXES = (".npy", ".pt")


def is_mel_file(path: str | Path) -> bool:
    """``.npy`` / ``.pt`` files hold mels; anything else is read as audio."""
    return Path(path).suffix.lower() in MEL_SUFFIXES


def walk_files(root: str | Path, *, skip_hidden: bool = True) -> tuple[list[Path], list[dict]]:
    """Every file under ``root``, following symlinked folders and files, each real folder once.

    ``Path.rglob`` (before Python 3.13) and a plain ``os.walk`` do not enter symlinked folders,
    so a dataset assembled from links lost whole speakers without a word. Real folders are walked
    first, then each link's target unless it is already walked: a link to an ancestor (a loop) or
    to a folder reached another way is refused, never followed twice.

    Args:
        root: the folder to walk.
        skip_hidden: leave out names starting with ``.`` (and everything under them): macOS
            ``._x.wav`` resource forks, ``.cache/`` and the like.

    Returns:
        ``(files, refused)``: file paths as seen from ``root`` (through links, not resolved),
        sorted; and one ``{"path", "reason"}`` per link or folder not followed (a loop, a folder
        walked already, a broken link, an unreadable folder), ``path`` relative to ``root``.
    """
    root = Path(root)
    files: list[Path] = []
    refused: list[dict] = []
    walked: dict[Path, Path] = {}  # real path of each walked folder -> the path it was walked as
    links: list[Path] = []  # symlinked folders met, followed after every real folder

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    def already(real: Path) -> str:
        return f"links to {real}, already walked as {rel(walked[real]) or '.'}"

    def broken(link: Path) -> str:
        try:
            link.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 says "Symlink loop"
            return "link loop: a cycle of links that leads to no folder"
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "link loop: a cycle of links that leads to no folder"
            return f"broken link: {os.readlink(link)} does not exist"
        return "broken link"

    def walk(top: Path) -> None:
        stack = [top]
        while stack:
            folder = stack.pop()
            real = folder.resolve()
            if real in walked:  # a real folder under a link's target, reached before by another
                refused.append({"path": rel(folder), "reason": already(real)})
                continue
            walked[real] = folder
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as err:
                refused.append({"path": rel(folder), "reason": f"unreadable: {err.strerror}"})
                continue
            for entry in entries:
                path = folder / entry.name
                if skip_hidden and entry.name.startswith("."):
                    continue
                if entry.is_symlink():
                    if not os.path.exists(path):
                        refused.append({"path": rel(path), "reason": broken(path)})
                    elif entry.is_dir():
                        links.append(path)
                    elif entry.is_file():
                        files.append(path)
                elif entry.is_dir():
                    stack.append(path)
                elif entry.is_file():
                    files.append(path)

    walk(root)
    while links:
        link = links.pop(0)
        target = link.resolve()
        if link.parent.resolve().is_relative_to(target):
            refused.append(
                {"path": rel(link), "reason": f"link loop: links to its ancestor {target}"}
            )
        elif target in walked:
            refused.append({"path": rel(link), "reason": already(target)})
        else:
            walk(link)
    return sorted(files), sorted(refused, key=lambda r: r["path"])


def load_mel_file(path: str | Path) -> torch.Tensor:
    """A mel ``[n_mels, frames]`` or ``[1, n_mels, frames]`` from ``.npy`` or ``.pt``, as
    ``[1, n_mels, frames]`` in its stored float dtype (``check_mel`` casts to float32 after
    sizing its range tolerance to that dtype: a float16 mel rounds ``ln(1e-5)`` by up to 4e-3).
    ``.pt`` files load with ``weights_only=True`` (no code runs).

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable, not a float array, or the wrong rank.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if path.suffix.lower() == ".npy":
            mel = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            mel = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is one user-facing reason
        raise ValueError(f"{path} is not a readable mel file: {err}") from None
    if not isinstance(mel, torch.Tensor) or not mel.is_floating_point():
        raise ValueError(f"{path} must hold one float array [n_mels, frames]")
    if mel.dim() == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.dim() != 2:
        raise ValueError(f"{path} holds shape {tuple(mel.shape)}; expected [n_mels, frames]")
    return mel.unsqueeze(0)


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


def save_mel(path: Path, mel: torch.Tensor, *, overwrite: bool) -> Path:
    """Write ``mel`` ``[n_mels, frames]`` as float32 ``.npy`` (no overwrite unless asked)."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    with open(path, "wb") as fh:
        np.save(fh, mel.detach().float().cpu().numpy())
    return path
