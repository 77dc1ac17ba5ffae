"""Scanning a manifest's clips for broken input: the check of one clip, the scan cache, the report.

Broken input loses nothing and stops nothing: :func:`scan_clips` opens every file once and sorts
out the unreadable, empty, non-finite, silent and too-short ones with the reason; the trainer
writes the result to ``RUN_DIR/data_report.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import soundfile as sf

from audiodiff.audio import load_audio
from audiodiff.config import DataConfig
from audiodiff.dist import DistContext, all_gather_object, broadcast_object
from audiodiff.encoding import native_path, path_from_text, path_to_text, unreadable_reason
from audiodiff.levels import OVER_RANGE_PEAK, level_problem
from audiodiff.manifest import read_manifest
from audiodiff.probe import clip_problem, probe_clip

# How the scan words the problems whose prepare wording (audiodiff.probe.clip_problem) it predates.
_SCAN_REASONS = {"empty": "empty: 0 frames", "non_finite": "non-finite samples (NaN or inf)"}


def check_clip(
    path: str, *, min_duration_s: float, silence_threshold: float, sample_rate: int | None = None
) -> dict[str, Any]:
    """Open a clip, read it once in blocks, and say whether it is usable.

    The rules are :func:`audiodiff.probe.clip_problem`'s (the level rule on the peak of the mono
    mix the trainer crops, so an out-of-phase stereo pair is silent), on
    :func:`audiodiff.probe.probe_clip`'s measurement at the file's rate; with ``sample_rate``
    (the model's), a file above it is measured again after the resampling the loader applies,
    so a clip with nothing below the model's Nyquist frequency is skipped as silent.

    Returns:
        ``{"reason": None | str, "file_rate": Hz, "n_frames": decoded frames, "channels": n}``.
        The decoded frame count is used, not the header's (a truncated file is shorter).
    """
    probe = probe_clip(path)
    if probe.error is not None:
        err = probe.error
        reason = unreadable_reason(path, err)
        kind = "empty" if reason.startswith("empty file") else "unreadable"
        return {"reason": f"{kind}: {reason}", "file_rate": 0, "n_frames": 0, "channels": 0}
    info = {"file_rate": probe.sample_rate, "n_frames": probe.n_frames, "channels": probe.channels}
    problem = clip_problem(
        probe, min_duration_s=min_duration_s, silence_threshold=silence_threshold
    )
    if problem is None and sample_rate is not None and probe.sample_rate > sample_rate:
        # Downsampling drops everything above the model's Nyquist frequency: a clip with nothing
        # below it (an ultrasonic tone, a test signal) is silent in what the model consumes.
        audio, _ = load_audio(path, sample_rate)
        problem = level_problem(float(audio.abs().max()), silence_threshold=silence_threshold)
        if problem is not None:
            kind, detail = problem
            where = f"after resampling from {probe.sample_rate} to {sample_rate} Hz"
            return {"reason": f"{kind.replace('_', ' ')}: {where}, {detail}", **info}
    if problem is None:
        return {"reason": None, **info}
    kind, detail = problem
    return {"reason": _SCAN_REASONS.get(kind, f"{kind.replace('_', ' ')}: {detail}"), **info}


def scan_clips(
    rows: Sequence[dict[str, Any]],
    *,
    min_duration_s: float,
    silence_threshold: float,
    indices: Sequence[int] | None = None,
    max_threads: int = 8,
    sample_rate: int | None = None,
) -> dict[int, dict[str, Any]]:
    """:func:`check_clip` for ``rows[i]`` for each ``i`` in ``indices`` (all by default).

    libsndfile releases the GIL while decoding, so a few threads overlap the disk reads.
    """
    indices = range(len(rows)) if indices is None else indices

    def one(i: int) -> tuple[int, dict[str, Any]]:
        return i, check_clip(
            rows[i]["path"],
            min_duration_s=min_duration_s,
            silence_threshold=silence_threshold,
            sample_rate=sample_rate,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(max_threads, len(indices)))) as pool:
        return dict(pool.map(one, indices))


def data_report(
    manifest: str | Path, rows: Sequence[dict[str, Any]], checks: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """The ``data_report.json`` content: usable count and hours, and every skipped clip with why."""
    skipped = [
        {"path": path_to_text(rows[i]["path"]), "reason": c["reason"]}
        for i, c in sorted(checks.items())
        if c["reason"] is not None
    ]
    usable = [c for c in checks.values() if c["reason"] is None]
    kinds = Counter(s["reason"].split(":")[0].split(" (")[0] for s in skipped)
    return {
        "manifest": path_to_text(manifest),
        "n_rows": len(rows),
        "n_usable": len(usable),
        "usable_hours": sum(c["n_frames"] / c["file_rate"] for c in usable) / 3600,
        "n_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(kinds.items())),
        "sample_rates": dict(sorted(Counter(str(c["file_rate"]) for c in usable).items())),
        "channels": dict(sorted(Counter(str(c["channels"]) for c in usable).items())),
        "skipped": skipped,
    }


def summary_line(report: dict[str, Any], report_path: str | Path | None = None) -> str:
    """One line: usable clips and hours, and what was skipped, by reason."""
    line = (
        f"data: {report['n_usable']} of {report['n_rows']} clips usable "
        f"({report['usable_hours']:.3f} h) from {path_from_text(report['manifest'])}"
    )
    if report["n_skipped"]:
        reasons = ", ".join(f"{n} {k}" for k, n in report["skipped_by_reason"].items())
        line += f"; skipped {report['n_skipped']} ({reasons})"
        if report_path is not None:
            line += f", listed in {report_path}"
    return line


def no_usable_clips_error(report: dict[str, Any], report_path: str | Path | None) -> ValueError:
    """The error for a manifest with nothing usable, saying why."""
    manifest = path_from_text(report["manifest"])  # as the terminal shows file names
    if report["n_rows"] == 0:
        return ValueError(f"manifest {manifest} has no rows")
    reasons = ", ".join(f"{n} {k}" for k, n in report["skipped_by_reason"].items())
    where = f" (details in {report_path})" if report_path else ""
    return ValueError(
        f"no usable clips in {manifest}: all {report['n_rows']} skipped ({reasons})" + where
    )


def file_identity(path: str) -> list[Any]:
    """What a cached scan of ``path`` describes: ``[size, mtime_ns, header rate, header frames]``.

    A file converted or rewritten in place changes at least one of these (a rate conversion
    changes the header's rate even when size and time happen to match). Only the header is read.
    A missing file is ``[None, None, 0, 0]``; an unreadable header gives rate and frames 0.
    """
    try:
        st = os.stat(native_path(path))
    except OSError:
        return [None, None, 0, 0]
    try:
        info = sf.info(native_path(path))
        rate, frames = int(info.samplerate), int(info.frames)
    except Exception:  # libsndfile raises LibsndfileError, RuntimeError or OSError
        rate, frames = 0, 0
    return [int(st.st_size), int(st.st_mtime_ns), rate, frames]


SCAN_CACHE_FORMAT = "audiodiff-scan-v2"


def _read_scan_cache(cache_path: Path | None, thresholds: list[float]) -> dict[str, Any]:
    """``path text -> {"identity", "check"}`` from a scan cache; empty when it is absent, of
    another format (the v1 cache was keyed on the manifest's bytes only), or other thresholds."""
    if cache_path is None or not cache_path.is_file():
        return {}
    try:
        cached = json.loads(cache_path.read_text(encoding="utf-8"))
        if cached.get("format") != SCAN_CACHE_FORMAT or cached.get("thresholds") != thresholds:
            return {}
        return {
            e["path"]: {"identity": e["identity"], "check": e["check"]} for e in cached["files"]
        }
    except (ValueError, KeyError, TypeError, AttributeError):  # not JSON / not UTF-8 / not ours
        return {}


def usable_clips(
    manifest: str | Path,
    data_cfg: DataConfig,
    ctx: DistContext,
    cache_path: Path | None = None,
    sample_rate: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Read a manifest and sort out its broken clips.

    Every file is opened once; under DDP the ranks scan disjoint shares and exchange results.
    Each file's result is cached in ``cache_path`` under its path and its :func:`file_identity`
    (size, mtime, header rate and frames; thresholds apply to the whole cache), so a resumed run
    decodes only the files that were added or changed since (a dataset converted in place is
    re-probed, never read at the old rate); the rest cost one header read each.

    Returns:
        ``(rows, checks, report)``: the usable rows, their :func:`check_clip` results (aligned),
        and the :func:`data_report` of the whole manifest, plus ``n_probed`` (files decoded by
        this call; the others came from the cache).

    Raises:
        ValueError: unreadable manifest.
    """
    rows = read_manifest(manifest)
    # Every limit check_clip applies: a cache made under other limits describes another scan.
    thresholds = [data_cfg.min_duration_s, data_cfg.silence_threshold, OVER_RANGE_PEAK]
    if sample_rate is not None:  # the model's rate: the level is checked after resampling
        thresholds.append(sample_rate)
    cache = _read_scan_cache(cache_path, thresholds) if ctx.is_main else None
    cache = broadcast_object(ctx, cache)

    def one(i: int) -> tuple[int, list[Any], dict[str, Any] | None]:
        identity = file_identity(rows[i]["path"])
        hit = cache.get(path_to_text(rows[i]["path"]))
        return i, identity, hit["check"] if hit and hit["identity"] == identity else None

    mine = range(ctx.rank, len(rows), ctx.world_size)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(mine)))) as pool:
        known = list(pool.map(one, mine))
    stale = [i for i, _, check in known if check is None]
    probed = scan_clips(
        rows,
        min_duration_s=data_cfg.min_duration_s,
        silence_threshold=data_cfg.silence_threshold,
        indices=stale,
        sample_rate=sample_rate,
    )
    share = {i: (identity, probed.get(i, check)) for i, identity, check in known}
    entries: dict[int, tuple[list[Any], dict[str, Any]]] = {}
    n_probed = 0
    for part, n in all_gather_object(ctx, (share, len(stale))):
        entries.update(part)
        n_probed += n
    checks = {i: entries[i][1] for i in range(len(rows))}
    if ctx.is_main and cache_path is not None and n_probed:
        files = {
            path_to_text(rows[i]["path"]): {"identity": identity, "check": check}
            for i, (identity, check) in sorted(entries.items())
        }
        payload = {
            "format": SCAN_CACHE_FORMAT,
            "thresholds": thresholds,
            "files": [{"path": k, **v} for k, v in files.items()],
        }
        cache_path.write_text(json.dumps(payload), encoding="utf-8")
    report = {**data_report(manifest, rows, checks), "n_probed": n_probed}
    good = [i for i in range(len(rows)) if checks[i]["reason"] is None]
    return [rows[i] for i in good], [checks[i] for i in good], report
