"""Inputs and outputs of the commands: reading mel files, telling mel files from audio files,
walking input folders (symlinked folders followed, loop-safe), and planning output paths so that
every refusal comes *before* any work starts (nothing is computed and then lost to a refusal at the
end): an output that is one of the run's inputs (never replaced, not even with ``overwrite``), an
existing file, or a folder that cannot be created or written.

Mel files the toolkit writes are ``.npz`` archives holding the mel (``mel``, float32
``[n_mels, frames]``) and the profile it was computed with (``profile``, every
:class:`~audiodiff.config.MelConfig` parameter as a JSON string), so the profile cannot be lost on
the way to ``vocode`` (a sidecar file can be left behind by a copy) and a mismatch is refused
instead of playing at the wrong speed. Any NumPy reads them: ``np.load(path)["mel"]``. Plain
``.npy`` and ``.pt`` mels from other tools carry no profile and are checked by shape and range only.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from audiodiff.atomic import atomic_write
from audiodiff.config import MelConfig
from audiodiff.encoding import unreadable_reason
from audiodiff.problems import collisions, joined, listed

MEL_SUFFIXES = (".npz", ".npy", ".pt")


def is_mel_file(path: str | Path) -> bool:
    """``.npz`` / ``.npy`` / ``.pt`` files hold mels; anything else is read as audio."""
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
    as ``[1, n_mels, frames]`` in its stored float dtype (``check_mel`` casts to float32 after
    sizing its range tolerance to that dtype: a float16 mel rounds ``ln(1e-5)`` by up to 4e-3),
    and the profile it records (``.npz`` written by
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
        raise ValueError(
            f"{path} is not a readable mel file: {unreadable_reason(path, err)}"
        ) from None
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
    return mel.unsqueeze(0), profile


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:  # hard links and other spellings that realpath cannot see through
        return a.is_file() and b.is_file() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Refuse an output that resolves (``realpath``, or the same inode) to an input of the run.

    Raises:
        ValueError: naming both spellings; ``overwrite`` never lifts it (an input is never
            replaced by the run that reads it).
    """
    ins = [Path(p) for p in inputs if p is not None]
    for out in outputs:
        for src in ins:
            if _same_file(Path(out), src):
                shown = "" if str(src) == str(out) else f" (as {src})"
                raise ValueError(
                    f"output {out} is an input of this run{shown}; choose another output path "
                    "(an input is never replaced, not even with --overwrite)"
                )


def check_writable_dir(directory: str | Path) -> Path:
    """Check, creating nothing, that ``directory`` is a writable folder or can be created as one.

    Raises:
        ValueError: it is not a folder, lies below a regular file, or its nearest existing folder
            is not writable.
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {out} exists and is not a directory")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"output directory {out} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is" if existing == out else f"cannot be created: {existing} is"
        raise ValueError(f"output directory {out} {where} not writable")
    return out


def ensure_writable_dir(directory: str | Path) -> Path:
    """:func:`check_writable_dir`, then create ``directory`` (and its parents).

    Raises:
        ValueError: as :func:`check_writable_dir`, or the OS refuses to create it (its reason
            named).
    """
    out = check_writable_dir(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"output directory {out} cannot be created: {err.strerror}") from None
    return out


def plan_output(
    path: str | Path,
    *,
    overwrite: bool,
    inputs: Iterable[str | Path] = (),
    suffix: str | None = None,
) -> Path:
    """One output file of a command (``export``, ``--json``...), checked like :func:`plan_outputs`:
    the suffix (when given), not an input, not existing (without ``overwrite``), its folder
    creatable and writable. Nothing is created (the writer creates the folder).

    Raises:
        ValueError: wrong suffix, an input, a folder, or an unusable folder.
        FileExistsError: it exists and ``overwrite`` is false.
    """
    out = Path(path)
    if suffix is not None and out.suffix != suffix:
        raise ValueError(f"the output must be a {suffix} file, got {out}")
    check_not_inputs([out], inputs)
    if out.is_dir():
        raise ValueError(f"output {out} is a directory; give a file path")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    check_writable_dir(out.parent)
    return out


def plan_outputs(
    out_dir: str | Path,
    names: list[str],
    *,
    overwrite: bool,
    inputs: Iterable[str | Path] = (),
    create: bool = True,
) -> list[Path]:
    """Output paths ``out_dir/name``; refuses duplicates, outputs that are inputs of the run (even
    with ``overwrite``), (without ``overwrite``) existing files, and a folder that cannot be
    created or written. The folders are created unless ``create`` is false: a command that still
    has inputs to check calls :func:`make_output_dirs` once they passed, so a refusal leaves no
    empty folder behind.

    Raises:
        ValueError: two inputs would write the same file, an output is one of ``inputs``, or the
            folder is unusable.
        FileExistsError: a target exists and ``overwrite`` is false.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {out} exists and is not a directory")
    paths = [out / name for name in names]
    clashes = collisions(paths)
    if clashes:  # every one of them, not the first
        raise ValueError(joined(clashes))
    # Before the existence check, so the refusal of an input never suggests --overwrite.
    check_not_inputs(paths, inputs)
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise ValueError(f"output {folders[0]} is a directory; move it or choose another -o")
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            more = f", and so do {listed(existing[1:])}" if len(existing) > 1 else ""
            raise FileExistsError(f"{existing[0]} exists{more}; pass --overwrite to replace")
    for folder in dict.fromkeys([out, *(p.parent for p in paths)]):
        check_writable_dir(folder)
    if create:
        make_output_dirs(paths)
    return paths


def make_output_dirs(paths: list[Path]) -> None:
    """Create the folders of planned outputs (:func:`plan_outputs`), e.g. the demo's
    ``original/``, ``diffusion/`` ...

    Raises:
        ValueError: the OS refuses to create one (its reason named).
    """
    for folder in dict.fromkeys(p.parent for p in paths):
        ensure_writable_dir(folder)


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
    if suffix == ".npz":
        recorded = np.array(json.dumps(dataclasses.asdict(profile), sort_keys=True))
        return atomic_write(path, lambda f: np.savez(f, mel=array, profile=recorded))
    return atomic_write(path, lambda f: np.save(f, array))
