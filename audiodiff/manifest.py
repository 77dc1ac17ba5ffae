"""JSONL manifests: read, write, and list audio files as one.

A manifest is UTF-8 JSONL, one clip per line (DESIGN §8): ``path`` (absolute, or relative to the
manifest's folder; the UTF-8 spelling of the file name, whatever the locale), ``duration_s``,
``sample_rate``, and optionally ``speaker``, ``label`` (a class name, or an index with its name
in ``label_name``), ``text``, ``split``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audiodiff.audio import AudioError, audio_info
from audiodiff.encoding import json_text, path_from_text, path_to_text


def check_manifests(**manifests: str) -> None:
    """Refuse a named manifest that does not exist, before a run creates anything.

    Args:
        manifests: config key -> path, e.g. ``train_manifest="data/lj/train.jsonl"``; empty
            paths are skipped (an optional val set).

    Raises:
        ValueError: naming the key, the path, and for a relative path the folder it was taken
            from, with the two ways out.
    """
    for key, value in manifests.items():
        if not value or Path(value).is_file():
            continue
        where = (
            "" if Path(value).is_absolute() else f" (relative to the current folder {Path.cwd()})"
        )
        raise ValueError(
            f"data.{key} {value} does not exist{where}; run from the folder you ran prepare in, "
            f"or pass --set data.{key}=PATH"
        )


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL manifest (UTF-8, whatever the locale); relative ``path`` fields are resolved
    against its folder. Paths come back as this process spells file names
    (:func:`~audiodiff.encoding.path_from_text`).

    Raises:
        ValueError: unreadable file, a line that is not a JSON object, or one without ``path``.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise ValueError(f"cannot read manifest {path}: {reason}") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n} is not valid JSON: {err.msg}") from None
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise ValueError(f"{path}:{n} must be a JSON object with a string 'path'")
        clip = Path(path_from_text(row["path"]))
        row["path"] = str(clip if clip.is_absolute() else path.parent / clip)
        rows.append(row)
    return rows


def write_manifest(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as UTF-8 JSONL (one object per line, keys in the order given); ``path`` fields
    are written as text (:func:`~audiodiff.encoding.path_to_text`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**row, "path": path_to_text(row["path"])} if "path" in row else row for row in rows]
    path.write_text("".join(json_text(row) + "\n" for row in rows), encoding="utf-8")
    return path


def manifest_from_files(
    files: Sequence[str | Path],
    out_path: str | Path,
    *,
    labels: Sequence[int | str] | None = None,
    speakers: Sequence[str] | None = None,
    split: str | None = None,
) -> Path:
    """Write a manifest for a list of audio files (header reads only; broken files still listed).

    Args:
        files: audio paths; written relative to the manifest's folder when inside it.
        out_path: manifest to write.
        labels: optional class label per file.
        speakers: optional speaker id per file.
        split: optional split name for every row.
    """
    out_path = Path(out_path)
    rows = []
    for i, f in enumerate(files):
        f = Path(f)
        try:
            rate, n_frames, _ = audio_info(f)
            row: dict[str, Any] = {"path": "", "duration_s": n_frames / rate, "sample_rate": rate}
        except AudioError:
            row = {"path": "", "duration_s": 0.0, "sample_rate": 0}
        try:
            row["path"] = str(f.resolve().relative_to(out_path.parent.resolve()))
        except ValueError:
            row["path"] = str(f.resolve())
        if labels is not None:
            row["label"] = labels[i]
        if speakers is not None:
            row["speaker"] = speakers[i]
        if split is not None:
            row["split"] = split
        rows.append(row)
    return write_manifest(out_path, rows)
