"""Manifests, the segment dataset, and the resumable distributed sampler.

A manifest is UTF-8 JSONL, one clip per line (DESIGN §8): ``path`` (absolute, or relative to the
manifest's folder; the UTF-8 spelling of the file name, whatever the locale), ``duration_s``,
``sample_rate``, and optionally ``speaker``, ``label`` (a class name, or an index with its name
in ``label_name``), ``text``, ``split``.

Training samples are hop-aligned random crops of ``segment_frames * hop_length`` samples, so the
mel computed from a crop has exactly ``segment_frames`` frames (DESIGN §4). A crop depends only on
``(seed, epoch, index)``: the sampler yields ``(epoch, index)`` pairs and the dataset derives a
private generator from them, so crops are identical with 0 or N workers, persistent or not, after a
resume, and under DDP. Only the crop is read from disk (plus a resampling margin), so long files
(MAESTRO pieces) cost no more than short ones.

Broken input loses nothing and stops nothing: :func:`scan_clips` opens every file once and sorts
out the unreadable, empty, non-finite, silent and too-short ones with the reason; the trainer
writes the result to ``RUN_DIR/data_report.json``.
"""

from __future__ import annotations

import json
import math
import os
import random
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from audiodiff.audio import AudioError, audio_info, resample
from audiodiff.config import DataConfig
from audiodiff.dist import DistContext, all_gather_object, broadcast_object
from audiodiff.encoding import json_text, native_path, path_from_text, path_to_text
from audiodiff.levels import OVER_RANGE_PEAK, level_problem, mono_peak

# Extra source samples read on both sides of a crop that must be resampled, so the soxr filter
# sees real signal instead of an edge; soxr_hq's kernel is well under this.
RESAMPLE_MARGIN = 256


# --------------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Scanning for broken input
# --------------------------------------------------------------------------------------------------


def check_clip(path: str, *, min_duration_s: float, silence_threshold: float) -> dict[str, Any]:
    """Open a clip, read it once in blocks, and say whether it is usable.

    The level rule is :func:`audiodiff.audio.level_problem` (silent below
    ``silence_threshold``, over range above +6 dBFS), on the peak of the mono mix the trainer
    crops (an out-of-phase stereo pair is silent), measured at the file's rate: resampling every
    file here would double the scan, and the over-range limit's margin covers the resampler's
    overshoot.

    Returns:
        ``{"reason": None | str, "file_rate": Hz, "n_frames": decoded frames, "channels": n}``.
        The decoded frame count is used, not the header's (a truncated file is shorter).
    """
    try:
        with sf.SoundFile(native_path(path)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            n_frames, peak, finite = 0, 0.0, True
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                n_frames += block.shape[0]
                if block.size and finite:
                    block_peak = mono_peak(block)
                    finite = math.isfinite(block_peak)
                    peak = max(peak, block_peak) if finite else peak
    except Exception as err:  # libsndfile raises LibsndfileError, RuntimeError or OSError
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return {"reason": f"unreadable: {reason}", "file_rate": 0, "n_frames": 0, "channels": 0}
    info = {"file_rate": rate, "n_frames": n_frames, "channels": channels}
    duration_s = n_frames / rate if rate else 0.0
    if n_frames == 0:
        return {"reason": "empty: 0 frames", **info}
    if not finite:
        return {"reason": "non-finite samples (NaN or inf)", **info}
    if duration_s < min_duration_s:
        return {"reason": f"too short: {duration_s:.3f} s < {min_duration_s} s", **info}
    problem = level_problem(peak, silence_threshold=silence_threshold)
    if problem is not None:
        kind, detail = problem
        return {"reason": f"{kind.replace('_', ' ')}: {detail}", **info}
    return {"reason": None, **info}


def scan_clips(
    rows: Sequence[dict[str, Any]],
    *,
    min_duration_s: float,
    silence_threshold: float,
    indices: Sequence[int] | None = None,
    max_threads: int = 8,
) -> dict[int, dict[str, Any]]:
    """:func:`check_clip` for ``rows[i]`` for each ``i`` in ``indices`` (all by default).

    libsndfile releases the GIL while decoding, so a few threads overlap the disk reads.
    """
    indices = range(len(rows)) if indices is None else indices

    def one(i: int) -> tuple[int, dict[str, Any]]:
        return i, check_clip(
            rows[i]["path"], min_duration_s=min_duration_s, silence_threshold=silence_threshold
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


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


def derived_seed(purpose: str, *keys: int) -> int:
    """A 63-bit generator seed that depends only on ``purpose`` and the non-negative ``keys``.

    ``SeedSequence`` hashes its entropy, so nearby keys give unrelated streams. The purpose
    ("crop", "order", "noise", ...) keeps the streams of different uses apart, and the key count
    is mixed in because ``SeedSequence`` zero-pads short entropy ((a, b) would equal (a, b, 0)).
    """
    entropy = [zlib.crc32(purpose.encode()), len(keys), *keys]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def label_index(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Map of class names to indices: string labels sorted by name; an integer label keeps its
    value and is named by the row's ``label_name`` (as ``prepare`` writes them) when it has one.

    Raises:
        ValueError: one index with two names, or one name on two indices.
    """
    names = sorted({str(r["label"]) for r in rows if isinstance(r.get("label"), str)})
    index = {name: i for i, name in enumerate(names)}
    named: dict[int, str] = {}
    for r in rows:
        label, name = r.get("label"), r.get("label_name")
        if name is None or label is None or isinstance(label, str):
            continue
        name, label = str(name), int(label)
        if named.setdefault(label, name) != name:
            raise ValueError(f"label {label} is named both {named[label]!r} and {name!r}")
        if index.setdefault(name, label) != label:
            raise ValueError(f"label name {name!r} is on labels {index[name]} and {label}")
    return index


class SegmentDataset(Dataset):
    """Hop-aligned crops of usable clips, resampled to ``sample_rate`` and mixed to mono.

    Items are dicts: ``audio [1, segment_frames * hop_length]`` float32, ``label`` (long, -1 when
    the clip has none), ``speaker`` (long index into :attr:`speakers`, -1 when none) and ``index``.
    Clips shorter than a segment are zero-padded at the end (not dropped).

    Args:
        rows: manifest rows of usable clips.
        checks: :func:`check_clip` results, aligned with ``rows`` (file rate, decoded length).
        sample_rate: model sample rate in Hz.
        hop_length: mel hop in samples; crop starts are multiples of it.
        segment_frames: crop length in mel frames.
        seed: experiment seed.
        labels: string label -> index map (:func:`label_index` of the training rows).
        random_crop: ``False`` always takes the start of the clip (validation).
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        checks: Sequence[dict[str, Any]],
        *,
        sample_rate: int,
        hop_length: int,
        segment_frames: int,
        seed: int,
        labels: dict[str, int] | None = None,
        random_crop: bool = True,
    ) -> None:
        if len(rows) != len(checks):
            raise ValueError(f"{len(rows)} rows but {len(checks)} checks")
        self.rows, self.checks = list(rows), list(checks)
        self.sample_rate, self.hop_length = sample_rate, hop_length
        self.segment_samples = segment_frames * hop_length
        self.seed, self.random_crop = seed, random_crop
        self.labels = labels or {}
        self.speakers = sorted({str(r["speaker"]) for r in rows if r.get("speaker") is not None})
        self._speaker_ids = {s: i for i, s in enumerate(self.speakers)}

    def __len__(self) -> int:
        return len(self.rows)

    def n_samples(self, index: int) -> int:
        """Length of clip ``index`` at the model sample rate."""
        c = self.checks[index]
        return math.floor(c["n_frames"] * self.sample_rate / c["file_rate"])

    def label_of(self, index: int) -> int:
        """Class index of clip ``index``, -1 when it has none."""
        label = self.rows[index].get("label")
        if label is None:
            return -1
        if isinstance(label, str):
            return self.labels.get(label, -1)
        return int(label)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        n, length = self.n_samples(index), self.segment_samples
        start = 0
        if self.random_crop and n > length:
            g = torch.Generator().manual_seed(derived_seed("crop", self.seed, epoch, index))
            start = int(torch.randint((n - length) // self.hop_length + 1, (1,), generator=g))
            start *= self.hop_length
        audio = self.read(index, start, min(length, n))
        if audio.shape[-1] < length:
            audio = torch.nn.functional.pad(audio, (0, length - audio.shape[-1]))
        speaker = self.rows[index].get("speaker")
        return {
            "audio": audio,
            "label": torch.tensor(self.label_of(index), dtype=torch.long),
            "speaker": torch.tensor(
                self._speaker_ids[str(speaker)] if speaker is not None else -1, dtype=torch.long
            ),
            "index": torch.tensor(index, dtype=torch.long),
        }

    def read(self, index: int, start: int, length: int) -> torch.Tensor:
        """Samples ``[start, start + length)`` of clip ``index`` at the model rate, ``[1, L]``.

        At another file rate, reads the matching source span plus a margin, starting on a source
        sample that maps to a whole target sample, resamples, and trims.
        """
        path, file_rate = native_path(self.rows[index]["path"]), self.checks[index]["file_rate"]
        if file_rate == self.sample_rate:
            data, rate = sf.read(path, start=start, frames=length, dtype="float32", always_2d=True)
            self._same_rate(index, rate)
            return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1))).unsqueeze(0)
        g = math.gcd(file_rate, self.sample_rate)
        src_step, tgt_step = file_rate // g, self.sample_rate // g
        blocks_before = max(0, start // tgt_step - -(-RESAMPLE_MARGIN // src_step))
        src_start, tgt_offset = blocks_before * src_step, start - blocks_before * tgt_step
        src_stop = math.ceil((start + length) * file_rate / self.sample_rate) + RESAMPLE_MARGIN
        data, rate = sf.read(path, start=src_start, stop=src_stop, dtype="float32", always_2d=True)
        self._same_rate(index, rate)
        mono = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1))).unsqueeze(0)
        out = resample(mono, file_rate, self.sample_rate)
        return out[:, tgt_offset : tgt_offset + length]

    def _same_rate(self, index: int, rate: int) -> None:
        # The scan's facts describe the file as it was; a file rewritten at another rate since
        # would otherwise be cropped and resampled as if at the old one (a pitch shift).
        scanned = self.checks[index]["file_rate"]
        if rate != scanned:
            raise ValueError(
                f"{self.rows[index]['path']} is now {rate} Hz but was {scanned} Hz when scanned; "
                "it changed during the run: restart to re-scan"
            )


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` and can start mid-epoch.

    The epoch order is a permutation seeded by ``(seed, epoch)`` (call :meth:`set_epoch` every
    epoch), tiled when there are fewer clips than one optimiser step needs, and cut to whole steps
    of ``B * W * A`` clips (batch, world size, accumulation). It is dealt out in blocks of ``B``:
    block ``b`` goes to rank ``b % W``. So micro-batch ``m`` of rank ``r`` is block (shard)
    ``m * W + r`` of its step, whatever ``W`` and ``A`` are: two ranks with batch B see exactly
    the data of one process with batch B and ``A = 2``.

    Args:
        dataset: the dataset (only its length is used).
        batch_size: per-rank micro-batch size ``B``.
        num_replicas, rank: world size ``W`` and this rank.
        seed: shuffling seed.
        accum: gradient-accumulation steps ``A``.
        shuffle: permute each epoch (else clip order).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        accum: int = 1,
        shuffle: bool = True,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.batch_size, self.start = batch_size, 0
        per_step = batch_size * num_replicas * accum
        self.total = max(len(dataset), per_step) // per_step * per_step
        self.num_samples = self.total // num_replicas

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order; skip this rank's first ``start`` samples (resume mid-epoch)."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(derived_seed("order", self.seed, self.epoch))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        blocks = order.repeat(-(-self.total // n))[: self.total].view(-1, self.batch_size)
        mine = blocks[self.rank :: self.num_replicas].flatten()[self.start :].tolist()
        return iter([(self.epoch, i) for i in mine])

    def __len__(self) -> int:
        return self.num_samples - self.start


def seed_worker(worker_id: int) -> None:
    """Seed python and numpy in a DataLoader worker from torch's per-worker seed.

    Crops do not depend on these (they use their own generators); this only keeps any library
    that draws from the global generators reproducible.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: SegmentDataset,
    sampler: ResumableDistributedSampler,
    *,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``sampler`` with whole batches, seeded workers and a seeded generator."""
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
