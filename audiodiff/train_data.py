"""A training run's data: usable clips of its manifests, their class names, sampler and loader.

:func:`load_datasets` keeps the usable clips of the train and val manifests (the broken ones are
reported in ``RUN_DIR/data_report.json``) and checks their labels against ``model.n_labels``;
:func:`train_loader` cuts the training set into resumable, rank-sharded batches;
:func:`model_inputs` turns a batch into what the network trains on (the only place that does, so
the mel domain plugs in there); :func:`measure_data_stats` measures what a mel-domain model
normalises its data by.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from audiodiff import dist
from audiodiff.checkpoint import label_names
from audiodiff.config import ExperimentConfig
from audiodiff.data import (
    ResumableDistributedSampler,
    SegmentDataset,
    label_index,
    make_loader,
)
from audiodiff.input_notes import InputNotes
from audiodiff.mel import MelSpectrogram, MelStatsAccumulator
from audiodiff.scan import no_usable_clips_error, summary_line, usable_clips


def load_datasets(
    cfg: ExperimentConfig, run_dir: Path, ctx: dist.DistContext, log: Callable[[str], None]
) -> tuple[SegmentDataset, SegmentDataset | None]:
    """Train and (optional) val datasets of usable clips; writes ``RUN_DIR/data_report.json``.

    A label-conditional model (``model.n_labels`` > 0) must find clips of every class
    ``0..n_labels-1`` in the training manifest, and no other label: a class without clips would
    stay untrained, yet ``generate --label`` would accept it (refused, not warned: the check
    costs nothing, runs before any training, and the fix is one ``--set model.n_labels=K``).

    Raises:
        ValueError: no train manifest, an unreadable one, nothing usable, labels that do not
            fit ``model.n_labels``, or classes with no training clip.
    """
    import json

    d = cfg.data
    if not d.train_manifest:
        raise ValueError("data.train_manifest is empty; pass --set data.train_manifest=PATH")
    report_path = run_dir / "data_report.json"
    splits: dict[str, tuple[list, list]] = {}
    reports = {}
    for split, manifest in (("train", d.train_manifest), ("val", d.val_manifest)):
        if not manifest:
            continue
        cache = run_dir / f".scan_{split}.json"
        rows, checks, report = usable_clips(manifest, d, ctx, cache, cfg.mel.sample_rate)
        splits[split], reports[split] = (rows, checks), report
        log(f"{split} {summary_line(report, report_path)}")
        notes = InputNotes(cfg.mel.sample_rate, cfg.mel.f_max)  # what the loader converts
        notes.add_counts(report["sample_rates"], report["channels"])
        if notes.note():
            log(f"{split} data {notes.note()}")
    if ctx.is_main:
        report_path.write_text(json.dumps(reports, indent=1) + "\n", encoding="utf-8")
    for report in reports.values():
        if report["n_usable"] == 0:
            raise no_usable_clips_error(report, report_path)
    labels = label_index(splits["train"][0])
    common = {
        "sample_rate": cfg.mel.sample_rate,
        "hop_length": cfg.mel.hop_length,
        "segment_frames": d.segment_frames,
        "seed": cfg.train.seed,
        "labels": labels,
    }
    train = SegmentDataset(*splits["train"], **common)
    val = SegmentDataset(*splits["val"], random_crop=False, **common) if "val" in splits else None
    if cfg.model.n_labels > 0:
        for ds in (train, val) if val is not None else (train,):
            for i in range(len(ds)):
                if not 0 <= ds.label_of(i) < cfg.model.n_labels:
                    raise ValueError(
                        f"{ds.rows[i]['path']} has label {ds.rows[i].get('label')!r} but "
                        f"model.n_labels is {cfg.model.n_labels} (labels 0..n_labels-1 needed)"
                    )
        present = {train.label_of(i) for i in range(len(train))}
        missing = sorted(set(range(cfg.model.n_labels)) - present)
        if missing:
            names = label_names(labels)
            found = f" ({', '.join(names)})" if names else ""
            raise ValueError(
                f"model.n_labels is {cfg.model.n_labels} but the training manifest "
                f"{d.train_manifest} has clips of {len(present)} label(s){found}: labels "
                f"{missing} would stay untrained; set model.n_labels to the data's classes "
                f"(--set model.n_labels={len(present)}, with labels numbered 0..{len(present) - 1})"
            )
    return train, val


def class_names(labels: dict[str, int], n_labels: int) -> list[str]:
    """Names of classes ``0..n_labels-1`` from a ``{name: index}`` map (:func:`label_index`); an
    unnamed class is named by its index; ``[]`` when no class has a name."""
    by_index = {i: name for name, i in labels.items() if 0 <= i < n_labels}
    if not by_index:
        return []
    return [by_index.get(i, str(i)) for i in range(n_labels)]


def train_loader(
    cfg: ExperimentConfig, train_set: SegmentDataset, ctx: dist.DistContext
) -> tuple[ResumableDistributedSampler, torch.utils.data.DataLoader]:
    """The resumable, rank-sharded sampler of ``train_set`` and the loader that reads it."""
    sampler = ResumableDistributedSampler(
        train_set,
        batch_size=cfg.data.batch_size,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        seed=cfg.train.seed,
        accum=cfg.train.grad_accum,
    )
    loader = make_loader(
        train_set,
        sampler,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
        pin_memory=ctx.device.type == "cuda",
    )
    return sampler, loader


def model_inputs(
    batch: dict[str, torch.Tensor],
    cfg: ExperimentConfig,
    mel_fn: MelSpectrogram,
    domain: Any,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Batch -> ``(x0, cond [B, n_mels, T / hop] or None, label [B] or None)``; ``x0`` is the
    domain's whitened clean variable (:mod:`audiodiff.domains`): ``[B, 1, T]`` waveform,
    ``[B, n_mels, T / hop]`` mel, ``[B, 2 * (n_fft / 2 + 1), T / hop]`` stft.

    The conditioning mel is computed here, on the device, from the crop itself, by the same
    :class:`MelSpectrogram` the vocoder uses; ``center`` profiles give one frame more than
    ``T / hop``, which is dropped so ``frames * hop == T`` (DESIGN §4).
    """
    audio = batch["audio"].to(device, non_blocking=True)
    x0, cond, label = audio, None, None
    mo = cfg.model
    if mo.domain != "waveform" or mo.conditioning == "mel":
        with torch.no_grad():
            mel = mel_fn(audio)[..., : audio.shape[-1] // cfg.mel.hop_length]
            # mel: the data itself (mel domain), or the input a vocoder is conditioned on.
            x0 = domain.to_model(audio, mel)
            cond = mel if mo.conditioning == "mel" else None
    if cfg.model.n_labels > 0:
        label = batch["label"].to(device, non_blocking=True)
    return x0, cond, label


@torch.no_grad()
def measure_data_stats(trainer: Any, max_clips: int = 512) -> None:
    """Mel-domain models: per-bin mean/std of the training mels, before the first step.

    Measured on the epoch-0 crops of up to ``max_clips`` clips (the same on every rank, so no
    broadcast is needed) and stored in the buffers of ``trainer``'s model and EMA copy, hence in
    every checkpoint.
    """
    stats = MelStatsAccumulator(trainer.cfg.mel.n_mels)
    hop = trainer.cfg.mel.hop_length
    for i in range(min(len(trainer.train_set), max_clips)):
        audio = trainer.train_set[(0, i)]["audio"].to(trainer.device)  # [1, T]
        stats.update(trainer.mel(audio)[..., : audio.shape[-1] // hop])
    norm = stats.normalizer()
    for net in (trainer.model, trainer.ema):
        net.set_data_stats(norm.mean.to(trainer.device), norm.std.to(trainer.device))
    trainer.log(
        f"mel statistics from {min(len(trainer.train_set), max_clips)} clips: mean "
        f"{float(norm.mean.mean()):.2f}, std {float(norm.std.mean()):.2f} (averaged over bins)"
    )
