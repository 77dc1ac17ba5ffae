"""Probe every clip a layout names, split deterministically, write manifests and the report."""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import soundfile as sf

from audiodiff.atomic import atomic_write
from audiodiff.datasets.layouts import (
    FRACTIONS,
    READERS,
    SPLITS,
    STANDARD_SAMPLE_RATES,
    Clip,
    Layout,
    PrepareOptions,
)
from audiodiff.encoding import json_text, path_from_text, path_to_text, unreadable_reason
from audiodiff.probe import clip_problem, probe_clip

MANIFEST_NAMES = tuple(f"{s}.jsonl" for s in SPLITS) + ("prepare_report.json",)


# What makes a file unreadable for prepare; any other exception is a bug and propagates.
_UNREADABLE = (sf.LibsndfileError, RuntimeError, OSError, ValueError)


def probe_audio(
    path: Path, min_duration_s: float, silence_threshold: float, full: bool = True
) -> dict[str, Any]:
    """Open one file and say whether it is usable.

    Returns:
        ``{"sample_rate", "channels", "n_frames"}`` plus ``"skip": (kind, reason)`` when the file
        must not be used; kind is one of unreadable, empty, bad_sample_rate, non_finite,
        too_short, silent, over_range. ``full=True`` adds ``"content"``: the sha1 of the
        decoded float32 samples, rate and channel count (equal for a copy, or the same audio in
        another container). ``full=False`` trusts the header and skips the level check and the
        hash. The rules are :func:`audiodiff.probe.clip_problem`'s; the level rule is
        :func:`audiodiff.levels.level_problem` on the peak of the mono mix (what a model gets;
        the file's rate, as no model rate is known here).
    """
    probe = probe_clip(
        path, decode=full, hash_content=full, stop_at_non_finite=True, errors=_UNREADABLE
    )
    if probe.error is not None:
        reason = unreadable_reason(path, probe.error)
        return {"skip": ("empty" if reason.startswith("empty file") else "unreadable", reason)}
    out: dict[str, Any] = {"sample_rate": probe.sample_rate, "channels": probe.channels}
    if probe.content is not None:
        out["content"] = probe.content
    out["n_frames"] = probe.n_frames
    problem = clip_problem(
        probe,
        min_duration_s=min_duration_s,
        silence_threshold=silence_threshold,
        sample_rates=STANDARD_SAMPLE_RATES,
    )
    if problem is not None:
        out["skip"] = problem
    return out


def _probe_star(args: tuple[Path, float, float, bool]) -> dict[str, Any]:
    return probe_audio(*args)


def _hash_unit(key: str, seed: int) -> float:
    # surrogateescape: a file name that is not UTF-8 hashes as its own bytes instead of failing.
    digest = hashlib.blake2b(f"{seed}/{key}".encode("utf-8", "surrogateescape"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def ranked_split(
    keys: list[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Assign each key to a split: sort by seeded hash, take exact val then test counts.

    Counts are ``round(n * fraction)``, but at least one when the fraction is positive (a small
    folder still gets a validation clip), and at least one key always stays in train.
    """
    ranked = sorted(keys, key=lambda k: (_hash_unit(k, seed), k))
    room = max(len(ranked) - 1, 0)  # everything but one train key
    n_val = min(max(round(len(ranked) * val_fraction), int(val_fraction > 0)), room)
    n_test = min(max(round(len(ranked) * test_fraction), int(test_fraction > 0)), room - n_val)
    return {
        k: "val" if i < n_val else "test" if i < n_val + n_test else "train"
        for i, k in enumerate(ranked)
    }


def _fractions(name: str, opts: PrepareOptions) -> tuple[float, float]:
    out = []
    for given, default, flag in zip(
        (opts.val_fraction, opts.test_fraction), FRACTIONS[name], ("val", "test"), strict=True
    ):
        if default is None and given is not None:
            raise ValueError(f"{name} decides its {flag} split itself; drop --{flag}-fraction")
        value = default if given is None else given
        if value is not None and not 0 <= value < 1:
            raise ValueError(f"--{flag}-fraction must be in [0, 1), got {value}")
        out.append(value or 0.0)
    if out[0] + out[1] >= 1:
        raise ValueError(f"val fraction {out[0]} + test fraction {out[1]} leaves nothing to train")
    return out[0], out[1]


def _write_text(path: Path, text: str) -> None:
    # A crash never leaves half a manifest behind.
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _probe_all(layout: Layout, opts: PrepareOptions) -> list[dict[str, Any]]:
    jobs = [
        (c.path, opts.min_duration_s, opts.silence_threshold, opts.check_audio == "full")
        for c in layout.clips
    ]
    if opts.workers > 1 and len(jobs) > 1:
        # Decoding dominates on big corpora; map() keeps the input order, so output is identical.
        with ProcessPoolExecutor(opts.workers) as pool:
            return list(pool.map(_probe_star, jobs, chunksize=16))
    return [probe_audio(*job) for job in jobs]


def _duplicate_groups(
    root: Path, usable: list[tuple[Clip, dict[str, Any]]]
) -> tuple[dict[int, int], list[list[int]]]:
    """Clips of identical decoded content: ``(first member of each clip's group, the groups of two
    or more)``, indices into ``usable``; members sorted by relative path, the first leads."""
    by_content: dict[str, list[int]] = {}
    for n, (_, probe) in enumerate(usable):
        if "content" in probe:
            by_content.setdefault(probe["content"], []).append(n)
    lead: dict[int, int] = {}
    groups = []
    for members in by_content.values():
        members.sort(key=lambda n: path_to_text(usable[n][0].path.relative_to(root).as_posix()))
        lead.update({n: members[0] for n in members})
        if len(members) > 1:
            groups.append(members)
    return lead, sorted(groups)


def _manifest_rows(
    name: str,
    root: Path,
    layout: Layout,
    probes: list[dict[str, Any]],
    fractions: tuple[float, float],
    seed: int,
) -> tuple[
    dict[str, list[dict[str, Any]]],
    dict[str, list[dict[str, str]]],
    Counter,
    Counter,
    list[dict[str, Any]],
]:
    """Rows per split, skipped files per kind, the sample-rate and channel counts found, and the
    groups of identical clips (each kept in one split: its first member's)."""
    skipped: dict[str, list[dict[str, str]]] = {}
    rates, channels = Counter(), Counter()
    usable: list[tuple[Clip, dict[str, Any]]] = []
    for clip, probe in zip(layout.clips, probes, strict=True):
        rel = clip.path.relative_to(root).as_posix()
        if "sample_rate" in probe:
            rates[str(probe["sample_rate"])] += 1
            channels[str(probe["channels"])] += 1
        if "skip" in probe:
            kind, reason = probe["skip"]
            if rel in layout.known_bad:
                reason += f" ({layout.known_bad[rel]})"
            skipped.setdefault(kind, []).append({"path": path_to_text(rel), "reason": reason})
        else:
            usable.append((clip, probe))
    if not usable:
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(skipped.items()))
        why = (
            f"{len(layout.clips)} file(s) found, none usable: {counts}"
            if layout.clips
            else ("no audio files where this layout keeps them")
        )
        raise ValueError(f"{name}: nothing usable in {root}: {why}")

    # Identical clips (a copied file, GTZAN's duplicate pairs) must never straddle splits: every
    # member of a group takes the split of its first member, fixed by the layout or ranked below.
    lead, duplicates = _duplicate_groups(root, usable)

    def rel(n: int) -> str:
        # Hashed as text, so the split does not depend on the locale prepare runs under.
        return path_to_text(usable[n][0].path.relative_to(root).as_posix())

    # Clips without a fixed split are ranked within their speaker/label group (stratified).
    groups: dict[tuple[str, str], list[str]] = {}
    for n, (clip, _) in enumerate(usable):
        if clip.split is None and lead.get(n, n) == n:
            key = (clip.speaker or "", str(clip.label))
            groups.setdefault(key, []).append(rel(n))
    assigned: dict[str, str] = {}
    for keys in groups.values():
        assigned.update(ranked_split(keys, *fractions, seed))

    def split_of(n: int) -> str:
        first = lead.get(n, n)
        return usable[first][0].split or assigned[rel(first)]

    duplicate_report = [
        {
            "split": split_of(members[0]),
            "paths": [rel(n) for n in members],
            # members whose layout split (official list, held-out speaker...) was another one
            "moved": [rel(n) for n in members if usable[n][0].split not in (None, split_of(n))],
        }
        for members in duplicates
    ]
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for n, (clip, probe) in enumerate(usable):
        split = split_of(n)
        row = {
            "path": path_to_text(clip.path),
            "duration_s": round(probe["n_frames"] / probe["sample_rate"], 6),
            "sample_rate": probe["sample_rate"],
            "channels": probe["channels"],
            "split": split,
        }
        for key in ("speaker", "label", "text"):
            if getattr(clip, key) is not None:
                row[key] = getattr(clip, key)
        if clip.label is not None and clip.label < len(layout.label_names):
            row["label_name"] = layout.label_names[clip.label]  # the trainer names classes by it
        rows[split].append(row)
    if not rows["train"]:
        raise ValueError(f"{name}: {len(usable)} usable clip(s) but none in the train split")
    for split_rows in rows.values():
        split_rows.sort(key=lambda x: x["path"])
    return rows, skipped, rates, channels, duplicate_report


def prepare(
    name: str,
    data_dir: str | Path,
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Read dataset ``name`` from ``data_dir``; write manifests and report into ``out_dir``.

    Returns:
        The report (also written as ``prepare_report.json``): ``clips``, ``hours`` and
        ``speakers`` per split, ``sample_rates`` and ``channels`` found, ``missing_files``
        (metadata rows with no file), ``unlisted_files`` (files with no metadata row),
        ``refused_links`` (symlinks not followed, with why: a loop, a broken link),
        ``skipped`` (per kind: path and reason), ``duplicates`` (groups of clips with identical
        decoded audio, each kept in one split: ``split``, ``paths``, ``moved`` = members taken
        out of their layout's split; None when not checked), ``label_names``, ``split_rule``,
        ``notes``.

    Raises:
        ValueError: unknown layout, missing metadata, bad option, or nothing usable (says why).
        FileExistsError: ``out_dir`` already holds manifests and ``overwrite`` is False.
    """
    opts = options or PrepareOptions()
    if name not in READERS:
        raise ValueError(f"unknown dataset layout {name!r}; known: {', '.join(READERS)}")
    root, out = Path(data_dir).resolve(), Path(out_dir).resolve()
    if not root.is_dir():
        raise ValueError(f"data folder {data_dir} does not exist or is not a folder")
    if out == root or root in out.parents:
        raise ValueError(
            f"--out {out} is inside the dataset folder {root}; prepare never writes there"
        )
    existing = [n for n in MANIFEST_NAMES if (out / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out / existing[0]} exists; pass --overwrite to replace it")
    val_fraction, test_fraction = _fractions(name, opts)  # bad options fail before any decoding
    layout = READERS[name](root, opts)
    probes = _probe_all(layout, opts)
    fractions = (val_fraction, test_fraction)
    rows, skipped, rates, channels, duplicates = _manifest_rows(
        name, root, layout, probes, fractions, opts.seed
    )

    options_used = {**opts.__dict__, "val_fraction": val_fraction, "test_fraction": test_fraction}
    options_used["holdout"] = list(opts.holdout) if opts.holdout is not None else None
    report = {
        "dataset": name,
        "data_dir": path_to_text(root),
        "options": options_used,
        "split_rule": layout.split_rule,
        "files_found": len(layout.clips),
        "clips": {s: len(r) for s, r in rows.items()},
        "hours": {s: round(sum(x["duration_s"] for x in r) / 3600, 4) for s, r in rows.items()},
        "speakers": {s: len({x["speaker"] for x in r if "speaker" in x}) for s, r in rows.items()},
        "label_names": layout.label_names,
        "sample_rates": dict(sorted(rates.items(), key=lambda kv: int(kv[0]))),
        "channels": dict(sorted(channels.items(), key=lambda kv: int(kv[0]))),
        "missing_files": [path_to_text(p) for p in layout.missing],
        "unlisted_files": [path_to_text(p) for p in layout.unlisted],
        "refused_links": [{**r, "path": path_to_text(r["path"])} for r in layout.refused_links],
        "skipped": {k: skipped[k] for k in sorted(skipped)},
        # None: not checked (--check-audio header decodes nothing, so there is nothing to hash)
        "duplicates": duplicates if opts.check_audio == "full" else None,
        "notes": layout.notes
        + (
            ["duplicates not checked: --check-audio header decodes no audio to compare"]
            if opts.check_audio != "full"
            else []
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        text = "".join(json_text(x) + "\n" for x in split_rows)
        _write_text(out / f"{split}.jsonl", text)
    _write_text(out / "prepare_report.json", json_text(report, indent=2) + "\n")
    return report


def format_summary(report: dict[str, Any]) -> str:
    """A few human lines: clips, hours and speakers per split, rates found, what was skipped."""
    where = path_from_text(report["data_dir"])  # as this terminal shows file names
    lines = [f"{report['dataset']}: {report['files_found']} files found in {where}"]
    for split in SPLITS:
        speakers = report["speakers"][split]
        lines.append(
            f"  {split:5s} {report['clips'][split]:7d} clips {report['hours'][split]:9.3f} h"
            + (f"  {speakers} speakers" if speakers else "")
        )
    lines.append(f"  sample rates {report['sample_rates']}  channels {report['channels']}")
    # Only what happened: a folder without metadata has no "rows without a file" to speak of.
    counts = [
        (len(report["missing_files"]), "metadata rows without a file"),
        (len(report["unlisted_files"]), "files without a metadata row"),
        *((len(v), k) for k, v in report["skipped"].items()),
        (len(report.get("refused_links", [])), "links not followed"),
    ]
    problems = [f"{n} {what}" for n, what in counts if n]
    lines.append("  " + ("; ".join(problems) if problems else "no file skipped"))
    duplicates = report.get("duplicates")
    if duplicates:
        moved = sum(len(d["moved"]) for d in duplicates)
        files = sum(len(d["paths"]) for d in duplicates)
        lines.append(
            f"  {len(duplicates)} groups of identical clips ({files} files), each kept in one split"
            + (f" ({moved} moved from their layout's split)" if moved else "")
            + "; listed under duplicates in prepare_report.json"
        )
    refused = report.get("refused_links", [])
    lines += [f"  link not followed: {path_from_text(r['path'])}: {r['reason']}" for r in refused]
    lines += [f"  note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def prepare_options(**kwargs: Any) -> PrepareOptions:
    """Build :class:`PrepareOptions` from keyword arguments, ``None`` meaning "the default"."""
    return replace(PrepareOptions(), **{k: v for k, v in kwargs.items() if v is not None})
