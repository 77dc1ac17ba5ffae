"""The ``evaluate`` job: pair two folders' audio files by name, score every pair, print the table.

Names are paths relative to each folder without the extension, so ``gen/a/b.flac`` pairs with
``ref/a/b.wav``. Each pair is scored with the signal metrics of :mod:`audiodiff.metrics` (and,
with ``perceptual=True``, the MOS predictors of :mod:`audiodiff.perceptual`);
:func:`format_table` prints the result as one row per file and the mean.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from audiodiff.audio import load_audio
from audiodiff.config import MelConfig, mel_profile
from audiodiff.files import walk_files
from audiodiff.mel import MelSpectrogram
from audiodiff.metrics import (
    EVAL_EXTRA_HINT,
    align_pair,
    eval_extra_available,
    f0_errors,
    log_mel_l1,
    mel_cepstral_distortion,
    mr_stft_distance,
    pesq_wb,
    stoi,
)
from audiodiff.perceptual import PERCEPTUAL_KEYS, PerceptualScorer

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
# Metric keys in table order, and which way is better.
DISTANCES = ("mr_stft", "log_mel_l1", "mcd_db", "f0_rmse_hz", "vuv_error")
SIMILARITIES = ("pesq_wb", "stoi", *PERCEPTUAL_KEYS)
METRIC_ORDER = ("mr_stft", "log_mel_l1", "mcd_db", *SIMILARITIES, "f0_rmse_hz", "vuv_error")


def audio_files(folder: Path, role: str, refused: list[str] | None = None) -> dict[str, Path]:
    """Audio files under ``folder`` (recursive, symlinked folders followed, hidden ones skipped)
    by name: relative path without extension. Links not followed (a loop, a folder walked
    already, a broken link) are appended to ``refused`` as ``"ROLE link PATH not followed: why"``.

    Raises:
        FileNotFoundError: ``folder`` is missing.
        ValueError: ``folder`` is a file, or two files share a name (``a.wav``, ``a.flac``).
    """
    if not folder.exists():
        raise FileNotFoundError(f"{role} directory {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{role} directory {folder} is a file, not a directory")
    files: dict[str, Path] = {}
    walked, links = walk_files(folder, skip_hidden=True)
    if refused is not None:
        refused += [f"{role} link {r['path']} not followed: {r['reason']}" for r in links]
    for path in walked:
        rel = path.relative_to(folder)
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        name = rel.with_suffix("").as_posix()
        if name in files:
            raise ValueError(f"{files[name]} and {path} in {role} both have the name {name!r}")
        files[name] = path
    return files


def evaluate_dirs(
    ref_dir: str | Path,
    gen_dir: str | Path,
    *,
    mel_cfg: MelConfig | None = None,
    pesq: bool | None = None,
    f0: bool = False,
    perceptual: bool = False,
    names: list[str] | None = None,
    ref_mos: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Score every generated file against the reference file of the same name.

    Names are paths relative to each folder without the extension (``a/b.flac`` pairs with
    ``a/b.wav``). Both sides are loaded as mono at the profile's sample rate. Pairs whose lengths
    differ by more than one hop, and files that cannot be read, are listed under ``errors``.

    Args:
        ref_dir: folder of reference audio.
        gen_dir: folder of generated audio.
        mel_cfg: profile of the log-mel L1 and the common sample rate (default ``hifigan``).
        pesq: compute PESQ WB and STOI; ``None`` computes them when the extra is installed.
        f0: compute F0 RMSE and voicing error (pYIN; slow, about a second per second of audio).
        perceptual: predict the MOS of each generated file, and of its reference as ``ref_<key>``,
            with DistillMOS and DNSMOS P.808 (:mod:`audiodiff.perceptual`; the eval extra).
        names: score only these names; files with other names are ignored, not reported.
        ref_mos: a cache of the references' MOS, read and filled here, so that scoring several
            generated folders against one reference folder scores each reference once. Keyed on
            what was scored (the reference file's real path, size and mtime, and the sample rate),
            not on its name: one cache may serve several reference folders and profiles.

    Returns:
        JSON-ready dict: ``files`` (per-file rows: ``name``, ``duration_s``, ``trimmed_samples``
        and one key per metric), ``total`` (mean of each metric over the scored files, plus
        ``files`` and ``duration_s``), ``metrics``, ``unmatched_ref``, ``unmatched_gen``,
        ``errors``, ``notes``, ``profile``, ``sample_rate``.

    Raises:
        FileNotFoundError: a folder is missing.
        ModuleNotFoundError: ``pesq=True`` or ``perceptual=True`` without the ``eval`` extra.
        ValueError: no names in common, or two files of one folder with the same name.
    """
    cfg = mel_cfg or mel_profile("hifigan")
    notes: list[str] = []
    ref_files = audio_files(Path(ref_dir), "reference", notes)
    gen_files = audio_files(Path(gen_dir), "generated", notes)
    if names is not None:
        ref_files = {k: v for k, v in ref_files.items() if k in names}
        gen_files = {k: v for k, v in gen_files.items() if k in names}
    common = sorted(set(ref_files) & set(gen_files))
    if not common:
        raise ValueError(
            f"no file names in common: reference {ref_dir} holds {len(ref_files)} audio "
            f"file{'' if len(ref_files) == 1 else 's'}, generated {gen_dir} {len(gen_files)}"
        )
    if pesq and not eval_extra_available():
        raise ModuleNotFoundError(f"PESQ and STOI need pesq and pystoi; {EVAL_EXTRA_HINT}")
    if pesq is None:
        pesq = eval_extra_available()
        if not pesq:
            notes.append(f"PESQ and STOI skipped: {EVAL_EXTRA_HINT}")
    metrics = ["mr_stft", "log_mel_l1", "mcd_db"]
    metrics += ["pesq_wb", "stoi"] if pesq else []
    scorer = PerceptualScorer() if perceptual else None  # fails here without the extra
    ref_mos = {} if ref_mos is None else ref_mos
    metrics += [*PERCEPTUAL_KEYS, *(f"ref_{k}" for k in PERCEPTUAL_KEYS)] if perceptual else []
    metrics += ["f0_rmse_hz", "vuv_error"] if f0 else []
    mel = MelSpectrogram(cfg).double()
    sr = cfg.sample_rate
    rows, errors = [], []
    for name in common:
        try:
            ref_file, _ = load_audio(ref_files[name], sr)
            gen_file, _ = load_audio(gen_files[name], sr)
            ref, gen, trimmed = align_pair(ref_file[0], gen_file[0], cfg.hop_length)
            row: dict[str, Any] = {"name": name, "duration_s": ref.shape[-1] / sr}
            row["trimmed_samples"] = trimmed
            row["mr_stft"] = float(mr_stft_distance(ref, gen))
            row["log_mel_l1"] = float(log_mel_l1(ref, gen, mel))
            row["mcd_db"] = float(mel_cepstral_distortion(ref, gen, sr))
        except ValueError as err:  # AudioError is a ValueError
            errors.append({"name": name, "error": str(err)})
            continue
        if pesq:
            # One unscorable file (PESQ finds no speech in silence) must not sink the evaluation.
            try:
                row["pesq_wb"] = pesq_wb(ref, gen, sr)
            except ValueError as err:
                row["pesq_wb"] = None
                notes.append(f"{name}: pesq_wb not computed: {err}")
            row["stoi"] = stoi(ref, gen, sr)
        if f0:
            row["f0_rmse_hz"], row["vuv_error"] = f0_errors(ref, gen, sr)
            row["f0_rmse_hz"] = None if math.isnan(row["f0_rmse_hz"]) else row["f0_rmse_hz"]
        if scorer is not None:  # of each whole file: DNSMOS tiles short clips, so length matters
            row.update(scorer.score(gen_file, sr))
            st = ref_files[name].stat()
            scored = f"{ref_files[name].resolve()}|{st.st_size}|{st.st_mtime_ns}|{sr}"
            if scored not in ref_mos:
                ref_mos[scored] = scorer.score(ref_file, sr)
            row.update({f"ref_{k}": v for k, v in ref_mos[scored].items()})
        rows.append(row)
    total: dict[str, Any] = {"files": len(rows), "duration_s": sum(r["duration_s"] for r in rows)}
    for key in metrics:
        values = [r[key] for r in rows if r.get(key) is not None]
        total[key] = sum(values) / len(values) if values else None
    return {
        "ref_dir": str(ref_dir),
        "gen_dir": str(gen_dir),
        "profile": cfg.name,
        "sample_rate": sr,
        "metrics": metrics,
        "files": rows,
        "total": total,
        "unmatched_ref": sorted(set(ref_files) - set(gen_files)),
        "unmatched_gen": sorted(set(gen_files) - set(ref_files)),
        "errors": errors,
        "notes": notes,
    }


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key in ("files", "trimmed_samples"):
        return str(value)
    return (
        f"{value:.3f}"
        if key in ("mcd_db", "pesq_wb", "f0_rmse_hz", "duration_s", "rtf") or "mos" in key
        else (f"{value:.4f}")
    )


def _aligned(rows: list[list[str]], footer: list[str] | None) -> list[str]:
    """Rows of cells as aligned lines (first column left, the rest right), a rule under the
    header and, when there is a ``footer``, a rule above it."""
    widths = [max(len(row[i]) for row in [*rows, *([footer] if footer else [])])
              for i in range(len(rows[0]))]  # fmt: skip

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(rows[0]))
    out = [line(rows[0]), rule, *(line(r) for r in rows[1:])]
    return [*out, rule, line(footer)] if footer else out


def _better_line(metrics: list[str]) -> str:
    lower = [k for k in metrics if k in DISTANCES]
    higher = [k for k in metrics if k in SIMILARITIES]
    return (
        f"lower is better: {', '.join(lower)}"
        + (f"; higher is better: {', '.join(higher)}" if higher else "")
        + ("; ref_*: the reference's own MOS" if any(k in PERCEPTUAL_KEYS for k in higher) else "")
    )


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table of an :func:`evaluate_dirs` result: one row per file, then the mean (when
    there is more than one file)."""
    keys = ["duration_s", *result["metrics"]]
    header = ["name", *keys]
    body = [[r["name"], *(_cell(r.get(k), k) for k in keys)] for r in result["files"]]
    total = result["total"]
    footer = None
    if total["files"] > 1:
        footer = [f"mean of {total['files']}", *(_cell(total.get(k), k) for k in keys)]
        footer[1] = _cell(total["duration_s"], "duration_s") + " (sum)"
    out = _aligned([header, *body], footer)
    out.append(_better_line(result["metrics"]))
    out.append(f"profile {result['profile']} at {result['sample_rate']} Hz")
    return "\n".join(out + _left_out(result))


def _left_out(result: dict[str, Any], prefix: str = "") -> list[str]:
    """What a table of ``result`` does not show, one line each: unmatched names, files not
    scored (``prefix`` names the method) and the notes (metrics skipped, and why)."""
    out = []
    for key, label in (("unmatched_ref", "only in reference"), ("unmatched_gen", "only generated")):
        if result[key]:
            out.append(f"{prefix}{label} ({len(result[key])}): {', '.join(result[key])}")
    out += [f"{prefix}not scored: {e['name']}: {e['error']}" for e in result["errors"]]
    return out + [f"note: {n}" for n in result["notes"]]


def format_comparison(results: dict[str, dict[str, Any]], rtf: dict[str, float]) -> str:
    """Plain-text table comparing methods scored against the same references: one row per
    method (``results``: method -> its :func:`evaluate_dirs` result, same files and metrics),
    its mean over the files and its real-time factor ``rtf`` (compute seconds per audio second).
    Whatever the table leaves out is listed under it, as :func:`format_table` does: files a
    method could not score or could not pair, and the notes (e.g. PESQ and STOI skipped without
    the eval extra), each note once."""
    first = next(iter(results.values()))
    metrics = list(first["metrics"])
    header = ["method", "rtf", *metrics]
    body = [
        [name, _cell(rtf.get(name), "rtf"), *(_cell(r["total"].get(k), k) for k in metrics)]
        for name, r in results.items()
    ]
    total = first["total"]
    out = [
        f"{total['files']} clip{'' if total['files'] == 1 else 's'}, "
        f"{_cell(total['duration_s'], 'duration_s')} s, against the original (profile "
        f"{first['profile']} at {first['sample_rate']} Hz):",
        *_aligned([header, *body], None),
        _better_line(metrics),
        "rtf: real-time factor, compute seconds per second of audio",
    ]
    left = [line for name, r in results.items() for line in _left_out(r, prefix=f"{name}: ")]
    return "\n".join(out + list(dict.fromkeys(left)))  # a note both methods share is said once
