"""The segment dataset, the resumable distributed sampler, and the loader over them.

Training samples are hop-aligned random crops of ``segment_frames * hop_length`` samples, so the
mel computed from a crop has exactly ``segment_frames`` frames (DESIGN §4). A crop depends only on
``(seed, epoch, index)``: the sampler yields ``(epoch, index)`` pairs and the dataset derives a
private generator from them, so crops are identical with 0 or N workers, persistent or not, after a
resume, and under DDP. Only the crop is read from disk (plus a resampling margin), so long files
(MAESTRO pieces) cost no more than short ones. The clips come from :mod:`audiodiff.manifest`
manifests, sorted by :func:`audiodiff.scan.usable_clips`.
"""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from audiodiff.audio import resample
from audiodiff.encoding import native_path
from audiodiff.seeds import derived_seed

# Extra source samples read on both sides of a crop that must be resampled, so the soxr filter
# sees real signal instead of an edge; soxr_hq's kernel is well under this.
RESAMPLE_MARGIN = 256


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
        checks: :func:`~audiodiff.scan.check_clip` results, aligned with ``rows`` (file rate,
            decoded length).
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
    """Seed python and numpy in a DataLoader worker from torch's per-worker seed, and leave
    SIGINT/SIGTERM to the trainer.

    Crops do not depend on these (they use their own generators); this only keeps any library
    that draws from the global generators reproducible.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group, workers included. The
    # trainer answers them by finishing its step and saving (audiodiff.interrupt), which needs
    # its workers alive; it stops them itself when it exits (and a worker whose trainer died
    # notices within seconds).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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
