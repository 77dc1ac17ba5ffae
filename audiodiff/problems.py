"""Refusals that name every problem of a command line at once, not the first one: three inputs
whose outputs collide, or two mistyped names, used to take one run each to learn about.

Pure path and text logic (no torch, no audio): the CLI calls it before importing the library, so
a refusal still costs a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

# Names a message lists before it only counts the rest ("and 12 more").
LIST_LIMIT = 10


def listed(items: Sequence[object], limit: int = LIST_LIMIT) -> str:
    """``a``, ``a and b``, ``a, b and c``, or the first ``limit`` and ``and N more``."""
    names = [str(i) for i in items]
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def collisions(outputs: Iterable[str | Path]) -> list[str]:
    """One message per output path that more than one input would write (inputs counted from 1),
    e.g. ``inputs 1, 2 and 3 would all write o/x.wav``; empty when every path is distinct."""
    writers: dict[Path, list[int]] = {}
    for i, path in enumerate(outputs):
        writers.setdefault(Path(path), []).append(i + 1)
    return [
        f"inputs {listed(ids)} would {'both' if len(ids) == 2 else 'all'} write {path}"
        for path, ids in writers.items()
        if len(ids) > 1
    ]


def missing(paths: Iterable[str | Path], *, kind: str = "file", role: str = "input") -> list[str]:
    """One message per path that is not an existing ``kind`` (``"file"`` or ``"directory"``):
    ``"{role} {kind} PATH does not exist"`` or ``"{role} PATH is not a {kind}"``."""
    is_kind = Path.is_dir if kind == "directory" else Path.is_file
    out = []
    for path in map(Path, paths):
        if not is_kind(path):
            exists = path.exists()
            out.append(
                f"{role} {path} is not a {kind}"
                if exists
                else f"{role} {kind} {path} does not exist"
            )
    return out


def joined(problems: Sequence[str]) -> str:
    """The problems as one message: all of them, separated by semicolons."""
    return "; ".join(problems)
