"""Training: one :class:`Trainer` for one CPU, one GPU, or N GPUs on M machines (torchrun DDP).

Read top to bottom, :meth:`Trainer.__init__` builds everything (device, data, model, EMA,
optimiser) and resumes from ``RUN_DIR/latest`` when there is one; :meth:`Trainer.train` is the loop;
:meth:`Trainer.train_step` is one optimiser step; :meth:`Trainer.model_inputs` is the only place
that turns a batch into ``(x0, cond, label)``, so the mel domain plugs in there, not in a second
loop.

Exact resume. Everything the future depends on is in the checkpoint (weights, EMA, optimiser,
scaler, step, epoch, position in the epoch, skip counters, RNG states), crops depend only on
``(seed, epoch, index)`` (see :mod:`audiodiff.data`), and the diffusion noise of micro-batch ``m``
of step ``s`` comes from a generator seeded by ``(seed, s, shard)`` with ``shard = m * W + rank``.
So stop + resume is bit-identical on CPU, and N ranks with batch B equal (to float rounding) one
process with batch B and ``grad_accum = N``: the same shards see the same data and the same noise.

Host syncs: one per step (a single flag saying whether the loss and gradients are finite, needed
before the optimiser may step; under DDP it is summed over ranks so every rank skips together),
plus one per ``log_every`` steps for the logged values.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from audiodiff import dist
from audiodiff.checkpoint import (
    atomic_write,
    checkpoint_name,
    label_names,
    latest_checkpoint,
    load_checkpoint,
    params_digest,
    prepare_run_dir,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from audiodiff.config import (
    ExperimentConfig,
    TrainConfig,
    architecture_changes,
    dump_config,
    from_dict,
    to_dict,
    validate,
)
from audiodiff.data import (
    ResumableDistributedSampler,
    SegmentDataset,
    derived_seed,
    label_index,
    make_loader,
)
from audiodiff.diffusion import Denoiser, training_loss
from audiodiff.domains import build_domain
from audiodiff.mel import MelSpectrogram, MelStatsAccumulator
from audiodiff.perceptual import PerceptualScorer
from audiodiff.scan import no_usable_clips_error, summary_line, usable_clips
from audiodiff.schedule import NoiseSchedule
from audiodiff.subband import build_network
from audiodiff.synthesis import make_sampling_spec, vocode_mel

# Copy synthesis during validation: clips and length (seconds) per clip.
EVAL_CLIPS, EVAL_SECONDS = 2, 2.0
# Validation loss uses at most this many clips, so an eval costs the same on any dataset.
EVAL_LOSS_CLIPS = 64

__all__ = ["TrainResult", "Trainer", "TrainingStopped", "run"]


@dataclass
class TrainResult:
    """What a finished run reports."""

    step: int
    skipped_steps: int
    checkpoint: Path | None
    last_loss: float | None
    elapsed_s: float
    weights_digest: str
    is_main: bool


class Trainer:
    """Trains a DiffWave model from an :class:`ExperimentConfig` into ``run_dir``.

    Args:
        cfg: the experiment (validated here).
        run_dir: where ``config.yaml``, ``data_report.json``, checkpoints and logs go.
        ctx: the distributed context (:func:`audiodiff.dist.init` when omitted).
        log: message sink on rank 0 (defaults to the progress bar's ``write``).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path,
        *,
        ctx: dist.DistContext | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg = validate(cfg)
        # The sampling settings are checked now by the samplers' own resolver (generate and the
        # in-training evaluation call it too), not found broken after training.
        try:
            make_sampling_spec(cfg, NoiseSchedule.from_config(cfg.diffusion))
        except ValueError as err:
            raise ValueError(f"sample: {err}") from None
        self.run_dir = Path(run_dir)
        self.ctx = ctx if ctx is not None else dist.init(cfg.train.device)
        self.device = self.ctx.device
        self._log = log
        self.writer: Any = None
        self._bar: Any = None

        # Precision: bf16 autocast where the GPU has it, fp16 + GradScaler on request, else fp32.
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        # Run directory: refuse a foreign one, then write the resolved config.yaml first. Rank 0
        # decides and tells the others, so a refusal stops every rank instead of hanging them.
        refusal = None
        if self.ctx.is_main:
            try:
                prepare_run_dir(cfg, self.run_dir, self.log)
            except ValueError as err:
                refusal = str(err)
        refusal = dist.broadcast_object(self.ctx, refusal)
        if refusal is not None:
            raise ValueError(refusal)

        # Perceptual validation needs optional packages: the scorer checks them now (its models
        # load at the first evaluation), so a missing extra is refused before any data work.
        self.perceptual: PerceptualScorer | None = None
        if cfg.train.eval_perceptual:
            try:
                self.perceptual = PerceptualScorer()
            except ModuleNotFoundError as err:
                raise ValueError(f"train.eval_perceptual: {err}") from None

        # Data: usable clips only (broken ones reported), hop-aligned crops, resumable sampler.
        self.train_set, self.val_set = load_datasets(cfg, self.run_dir, self.ctx, self.log)
        # The class names the data uses go into the stored config (config.yaml, checkpoints,
        # exports), so generate --label NAME resolves them.
        names = class_names(self.train_set.labels, cfg.model.n_labels)
        if names and names != cfg.labels:
            if cfg.labels:
                raise ValueError(
                    f"labels {cfg.labels} differ from the training manifest's class names {names}"
                )
            self.cfg = cfg = validate(dataclasses.replace(cfg, labels=names))
            if self.ctx.is_main:
                text = dump_config(cfg).encode("utf-8")
                atomic_write(self.run_dir / "config.yaml", lambda f: f.write(text))
        self.sampler = ResumableDistributedSampler(
            self.train_set,
            batch_size=cfg.data.batch_size,
            num_replicas=self.ctx.world_size,
            rank=self.ctx.rank,
            seed=cfg.train.seed,
            accum=cfg.train.grad_accum,
        )
        self.loader = make_loader(
            self.train_set,
            self.sampler,
            num_workers=cfg.data.num_workers,
            seed=cfg.train.seed,
            pin_memory=self.device.type == "cuda",
        )

        # Model, EMA copy, optimiser. Seeded so every rank starts from the same weights.
        init_gen = torch.Generator().manual_seed(derived_seed("init", cfg.train.seed))
        self.model = build_network(cfg, generator=init_gen).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        opt_cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(
            self.model.parameters(),
            lr=cfg.train.lr,
            betas=tuple(cfg.train.betas),
            weight_decay=cfg.train.weight_decay,
        )
        self.net: torch.nn.Module = self.model
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        self.mel = MelSpectrogram(cfg.mel).to(self.device)
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        self.noise_gen = torch.Generator(self.device)

        # Counters, then resume: everything above may be overwritten by the checkpoint.
        self.step = self.epoch = self.position = 0
        self.skipped_steps = self.consecutive_bad = 0
        self.elapsed_s = 0.0
        # Rank 0 picks the checkpoint so every rank resumes from the same one (the run dir must
        # be on a filesystem all machines share, as for any multi-node resume).
        latest = latest_checkpoint(self.run_dir) if self.ctx.is_main else None
        self.last_checkpoint: Path | None = dist.broadcast_object(self.ctx, latest)
        if self.last_checkpoint is not None:
            self.load_state(load_checkpoint(self.last_checkpoint, map_location=self.device))
            self.log(f"resumed from {self.last_checkpoint} at step {self.step}")
            if self.ctx.is_main:
                dropped = drop_metrics_after(self.run_dir / "metrics.jsonl", self.step)
                if dropped:
                    self.log(
                        f"dropped {dropped} metrics.jsonl rows that the interrupted run logged "
                        f"after step {self.step} (those steps are trained again)"
                    )
        elif cfg.model.domain == "mel":
            self.measure_data_stats()
        # After the statistics: the mel domain reads them from the network's buffers (updated in
        # place by a resume), so it is built once here.
        self.domain = build_domain(cfg, self.model)

    # ----------------------------------------------------------------------------------------------
    # The loop
    # ----------------------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        """Train until ``train.max_steps``; checkpoint every ``save_every`` steps and at the end.

        Raises:
            TrainingStopped: ``train.max_bad_steps`` non-finite steps in a row (the last good
                checkpoint is kept; the message names the step).
        """
        cfg, tr = self.cfg, self.cfg.train
        from tqdm import tqdm

        bar = tqdm(
            total=tr.max_steps,
            initial=self.step,
            unit="step",
            disable=not self.ctx.is_main,
            dynamic_ncols=True,
        )
        self._bar = bar
        self.writer = writer = (
            tensorboard_writer(self.run_dir, purge_step=self.step) if self.ctx.is_main else None
        )
        batches = self.batches()
        window = torch.zeros(3, device=self.device)  # loss sum, grad-norm sum, good steps
        window_start, last_loss = time.perf_counter(), None
        segment_s = cfg.data.segment_frames * cfg.mel.hop_length / cfg.mel.sample_rate
        global_batch = cfg.data.batch_size * tr.grad_accum * self.ctx.world_size
        try:
            while self.step < tr.max_steps:
                t0 = time.perf_counter()
                loss, grad_norm, ok = self.train_step(batches)
                self.step += 1
                if ok:
                    self.update_ema()
                    self.consecutive_bad = 0
                    window += torch.stack([loss, grad_norm, torch.ones_like(loss)])
                else:
                    self.skipped_steps += 1
                    self.consecutive_bad += 1
                    self.log(f"step {self.step}: non-finite loss or gradient, step skipped")
                    if self.consecutive_bad >= tr.max_bad_steps:
                        raise TrainingStopped(
                            f"stopped at step {self.step}: {self.consecutive_bad} steps in a row "
                            f"had a non-finite loss or gradient ({self.skipped_steps} skipped in "
                            f"all); the last good checkpoint is {self.last_checkpoint}"
                        )
                self.elapsed_s += time.perf_counter() - t0
                bar.update(1)
                if self.step % tr.log_every == 0:
                    loss_sum, norm_sum, n_good = window.tolist()  # the one sync per log window
                    rate = tr.log_every / (time.perf_counter() - window_start)
                    last_loss = loss_sum / n_good if n_good else float("nan")
                    stats = {
                        "loss": last_loss,
                        "grad_norm": norm_sum / n_good if n_good else float("nan"),
                        "lr": lr_at(tr, self.step - 1),
                        "steps_per_s": rate,
                        "audio_s_per_s": rate * global_batch * segment_s,
                        "skipped": self.skipped_steps,
                    }
                    self.record("train", stats, writer)
                    bar.set_postfix(
                        loss=f"{stats['loss']:.4f}", gnorm=f"{stats['grad_norm']:.3f}",
                        lr=f"{stats['lr']:.2e}", audio_s_per_s=f"{stats['audio_s_per_s']:.2f}",
                    )  # fmt: skip
                    window.zero_()
                    window_start = time.perf_counter()
                if self.step % tr.eval_every == 0 and self.val_set is not None:
                    if self.ctx.is_main:
                        self.record("eval", evaluate(self), writer)
                    dist.barrier(self.ctx)
                if self.step % tr.save_every == 0 or self.step == tr.max_steps:
                    self.save()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            self.writer = None
        digest = self.check_ranks_agree()
        return TrainResult(
            self.step,
            self.skipped_steps,
            self.last_checkpoint,
            last_loss,
            self.elapsed_s,
            digest,
            self.ctx.is_main,
        )

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches forever, epoch after epoch, starting at the resumed position."""
        while True:
            self.sampler.set_epoch(self.epoch, start=self.position)
            for batch in self.loader:
                self.position += self.cfg.data.batch_size
                yield batch
            self.epoch += 1
            self.position = 0

    def train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> tuple[Any, Any, bool]:
        """One optimiser step over ``grad_accum`` micro-batches.

        Returns:
            ``(mean loss, grad norm before clipping, stepped)``; the first two stay on the device.
        """
        tr, ctx = self.cfg.train, self.ctx
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(tr, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(tr.grad_accum):
            x0, cond, label = self.model_inputs(next(batches))
            shard = micro * ctx.world_size + ctx.rank
            self.noise_gen.manual_seed(derived_seed("noise", tr.seed, self.step, shard))
            # Gradients are all-reduced only on the last micro-batch.
            last = micro == tr.grad_accum - 1
            sync = nullcontext() if last or not ctx.distributed else self.net.no_sync()
            with sync:
                with torch.autocast(
                    self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None
                ):
                    loss = self.loss(x0, cond, label).mean()
                self.scaler.scale(loss / tr.grad_accum).backward()
            loss_sum += loss.detach().float()
        self.scaler.unscale_(self.optimizer)
        max_norm = tr.grad_clip if tr.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        loss_mean = loss_sum / tr.grad_accum
        # Under fp16 an overflowing gradient is the GradScaler's business (it skips the step and
        # lowers the scale); only a non-finite loss counts as bad there.
        bad = ~torch.isfinite(loss_mean)
        if self.precision != "fp16":
            bad = bad | ~torch.isfinite(grad_norm)
        ok = dist.all_reduce_sum(ctx, bad.float()).item() == 0
        if ok:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_mean, grad_norm.detach().float(), ok

    def model_inputs(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Batch -> ``(x0, cond [B, n_mels, T / hop] or None, label [B] or None)``; ``x0`` is the
        domain's whitened clean variable (:mod:`audiodiff.domains`): ``[B, 1, T]`` waveform,
        ``[B, n_mels, T / hop]`` mel, ``[B, 2 * (n_fft / 2 + 1), T / hop]`` stft.

        The conditioning mel is computed here, on the device, from the crop itself, by the same
        :class:`MelSpectrogram` the vocoder uses; ``center`` profiles give one frame more than
        ``T / hop``, which is dropped so ``frames * hop == T`` (DESIGN §4).
        """
        audio = batch["audio"].to(self.device, non_blocking=True)
        x0, cond, label = audio, None, None
        mo = self.cfg.model
        if mo.domain != "waveform" or mo.conditioning == "mel":
            with torch.no_grad():
                mel = self.mel(audio)[..., : audio.shape[-1] // self.cfg.mel.hop_length]
                # mel: the data itself (mel domain), or the input a vocoder is conditioned on.
                x0 = self.domain.to_model(audio, mel)
                cond = mel if mo.conditioning == "mel" else None
        if self.cfg.model.n_labels > 0:
            label = batch["label"].to(self.device, non_blocking=True)
        return x0, cond, label

    @torch.no_grad()
    def measure_data_stats(self, max_clips: int = 512) -> None:
        """Mel-domain models: per-bin mean/std of the training mels, before the first step.

        Measured on the epoch-0 crops of up to ``max_clips`` clips (the same on every rank, so no
        broadcast is needed) and stored in the model's buffers, hence in every checkpoint.
        """
        stats = MelStatsAccumulator(self.cfg.mel.n_mels)
        hop = self.cfg.mel.hop_length
        for i in range(min(len(self.train_set), max_clips)):
            audio = self.train_set[(0, i)]["audio"].to(self.device)  # [1, T]
            stats.update(self.mel(audio)[..., : audio.shape[-1] // hop])
        norm = stats.normalizer()
        for net in (self.model, self.ema):
            net.set_data_stats(norm.mean.to(self.device), norm.std.to(self.device))
        self.log(
            f"mel statistics from {min(len(self.train_set), max_clips)} clips: mean "
            f"{float(norm.mean.mean()):.2f}, std {float(norm.std.mean()):.2f} (averaged over bins)"
        )

    def loss(
        self, x0: torch.Tensor, cond: torch.Tensor | None, label: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-example diffusion loss ``[B]`` with noise from this micro-batch's generator."""
        d = self.cfg.diffusion
        return training_loss(
            self.net,
            x0,
            schedule=self.schedule,
            cond=cond,
            label=label,
            target=d.target,
            loss=d.loss,
            generator=self.noise_gen,
            label_dropout=d.label_dropout,
        )

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA of the weights; the decay ramps up over the first steps ((1+s)/(10+s), as in
        Tensorflow's ExponentialMovingAverage with num_updates) so short runs still move it."""
        decay = min(self.cfg.train.ema_decay, (1 + self.step) / (10 + self.step))
        ema_p, p = list(self.ema.parameters()), list(self.model.parameters())
        torch._foreach_lerp_(ema_p, p, 1.0 - decay)
        for eb, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            eb.copy_(b)

    # ----------------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------------

    def save(self) -> None:
        """Checkpoint from rank 0 (the others wait), then remember it as the last good one."""
        if self.ctx.is_main:
            save_checkpoint(self.state_dict(), self.run_dir, self.step, self.cfg.train.keep_last)
        dist.barrier(self.ctx)
        self.last_checkpoint = self.run_dir / checkpoint_name(self.step)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly; tensors and primitive containers only."""
        return {
            "config": to_dict(self.cfg),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "data_position": self.position,
            "world_size": self.ctx.world_size,
            "batch_size": self.cfg.data.batch_size,
            "labels": dict(self.train_set.labels),
            "n_train_clips": len(self.train_set),  # what data_position is a position in
            "stats": {
                "skipped_steps": self.skipped_steps,
                "consecutive_bad": self.consecutive_bad,
                "elapsed_s": self.elapsed_s,
            },
            "rng": rng_state(self.noise_gen),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses architecture, mel or diffusion changes."""
        old = from_dict(ExperimentConfig, state["config"])
        changes = architecture_changes(old, self.cfg)
        if changes:
            raise ValueError(
                f"{self.run_dir} was trained with another architecture, mel or diffusion setup "
                f"({'; '.join(changes)}); these cannot change on resume, use a new --run-dir"
            )
        # The saved label map describes the data it was built from: if the data's labels changed,
        # the same index would now mean another class. (Checkpoints before it saved {}.)
        saved = state.get("labels") or {}
        if self.cfg.model.n_labels > 0 and saved and saved != dict(self.train_set.labels):
            raise ValueError(
                f"{self.run_dir} was trained with labels {saved} but the training data now has "
                f"{dict(self.train_set.labels)}; label indices cannot change on resume, "
                "use a new --run-dir"
            )
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.position = int(state["data_position"])
        same_layout = (state["world_size"], state["batch_size"]) == (
            self.ctx.world_size,
            self.cfg.data.batch_size,
        )
        n_clips = state.get("n_train_clips", len(self.train_set))
        if not same_layout:
            # Another world size or batch cuts epochs differently: continue at the next epoch.
            self.log("world size or batch size changed: continuing from the next epoch")
            self.epoch, self.position = self.epoch + 1, 0
        elif n_clips != len(self.train_set) and self.position:
            # The position is one in a permutation of the old clip count, not of today's clips.
            self.log(
                f"the training data has {len(self.train_set)} usable clips, the checkpoint's "
                f"epoch had {n_clips}: continuing from the next epoch"
            )
            self.epoch, self.position = self.epoch + 1, 0
        stats = state["stats"]
        self.skipped_steps = int(stats["skipped_steps"])
        self.consecutive_bad = int(stats["consecutive_bad"])
        self.elapsed_s = float(stats["elapsed_s"])
        restore_rng(state["rng"], self.noise_gen)

    def check_ranks_agree(self) -> str:
        """Digest of the weights; under DDP, raise if the ranks disagree (they never should)."""
        digest = params_digest(self.model)
        digests = dist.all_gather_object(self.ctx, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks ended with different weights: {digests}")
        if self.ctx.distributed:
            self.log(f"weights identical on {self.ctx.world_size} ranks: sha256 {digest[:16]}")
        return digest

    # ----------------------------------------------------------------------------------------------
    # Logging
    # ----------------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """A message from rank 0 (through the progress bar when one is open)."""
        if not self.ctx.is_main:
            return
        if self._log is not None:
            self._log(message)
        elif getattr(self, "_bar", None) is not None and not self._bar.disable:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def record(self, kind: str, stats: dict[str, float], writer: Any) -> None:
        """Append ``stats`` to ``RUN_DIR/metrics.jsonl`` and TensorBoard (rank 0)."""
        if not self.ctx.is_main:
            return
        import json

        row = {"kind": kind, "step": self.step, **stats}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if writer is not None:
            for key, value in stats.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"{kind}/{key}", value, self.step)
        if kind == "eval":
            self.log(
                f"step {self.step} eval: "
                + ", ".join(f"{k} {v:.4f}" for k, v in stats.items() if isinstance(v, float))
            )

    def add_audio(self, tag: str, audio: torch.Tensor, mel: MelSpectrogram) -> None:
        """Audio ``[T]`` and its log-mel image to TensorBoard (when it is installed)."""
        if getattr(self, "writer", None) is None:
            return
        sr = self.cfg.mel.sample_rate
        self.writer.add_audio(tag, audio.clamp(-1, 1).unsqueeze(0), self.step, sample_rate=sr)
        spec = mel(audio.unsqueeze(0).float())[0]  # [n_mels, frames]
        image = (spec - spec.min()) / (spec.max() - spec.min()).clamp_min(1e-8)
        try:  # PNG encoding needs Pillow, which not every tensorboard install has
            self.writer.add_image(f"{tag}_mel", image.flip(0).unsqueeze(0), self.step)
        except ImportError:
            pass


def run(cfg: ExperimentConfig, run_dir: str | Path) -> TrainResult:
    """Train ``cfg`` in ``run_dir`` (resuming when possible) under torchrun or alone."""
    ctx = dist.init(validate(cfg).train.device)
    try:
        return Trainer(cfg, run_dir, ctx=ctx).train()
    finally:
        dist.teardown(ctx)


# --------------------------------------------------------------------------------------------------
# Helpers of the Trainer
# --------------------------------------------------------------------------------------------------


def class_names(labels: dict[str, int], n_labels: int) -> list[str]:
    """Names of classes ``0..n_labels-1`` from a ``{name: index}`` map (:func:`label_index`); an
    unnamed class is named by its index; ``[]`` when no class has a name."""
    by_index = {i: name for name, i in labels.items() if 0 <= i < n_labels}
    if not by_index:
        return []
    return [by_index.get(i, str(i)) for i in range(n_labels)]


class TrainingStopped(RuntimeError):
    """Training cannot go on (too many non-finite steps in a row); the message names the step."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` -> ``"fp32" | "bf16" | "fp16"``; ``auto`` is bf16 on capable GPUs.

    Raises:
        ValueError: fp16 requested without CUDA (GradScaler and fp16 kernels need a GPU).
    """
    if precision == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if bf16 else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"train.precision 'fp16' needs a CUDA device, but the device is {device}")
    return precision


def lr_at(tr: TrainConfig, step: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then constant, step decay (times ``lr_gamma`` from each of
    ``lr_milestones`` on) or cosine decay to ``min_lr_ratio * lr`` at ``max_steps``
    (Loshchilov & Hutter 2017, without restarts)."""
    if step < tr.warmup_steps:
        return tr.lr * (step + 1) / tr.warmup_steps
    if tr.lr_decay == "constant":
        return tr.lr
    if tr.lr_decay == "step":
        return tr.lr * tr.lr_gamma ** sum(step >= m for m in tr.lr_milestones)
    progress = min(1.0, (step - tr.warmup_steps) / max(1, tr.max_steps - tr.warmup_steps))
    return tr.lr * (
        tr.min_lr_ratio + (1 - tr.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def tensorboard_writer(run_dir: Path, purge_step: int = 0) -> Any:
    """A TensorBoard ``SummaryWriter`` when tensorboard is installed, else None (never needed).

    ``purge_step`` (the resumed step) hides events an interrupted run wrote after it.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step or None)


def drop_metrics_after(path: Path, step: int) -> int:
    """Remove the rows of a ``metrics.jsonl`` logged after ``step`` (atomically); returns how many.

    A run killed after its last checkpoint logged steps that the resumed run trains and logs
    again; without this the file would hold two rows per such step. A row the kill cut short
    (not JSON) is dropped too, so the next append starts on a clean line.
    """
    import json

    def keep(line: str) -> bool:
        try:
            return json.loads(line).get("step", 0) <= step
        except ValueError:
            return False

    if not path.is_file():
        return 0
    # surrogateescape: bytes that are not UTF-8 (a row cut inside a character) are kept as bytes.
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and keep(line)]
    if len(kept) == len(lines):
        return 0
    atomic_write(path, lambda f: f.write("".join(kept).encode("utf-8", "surrogateescape")))
    return len(lines) - len(kept)


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
        rows, checks, report = usable_clips(manifest, d, ctx, run_dir / f".scan_{split}.json")
        splits[split], reports[split] = (rows, checks), report
        log(f"{split} {summary_line(report, report_path)}")
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


@torch.no_grad()
def evaluate(trainer: Trainer) -> dict[str, float]:
    """Validation with the EMA weights: loss on fixed crops with fixed noise, and (vocoders) a
    copy synthesis of two clips with the model's own sampler and steps (``sample``), through the
    synthesis engine, scored by log-mel L1 and MR-STFT distance (and, with
    ``train.eval_perceptual``, DistillMOS and DNSMOS P.808)."""
    from audiodiff.metrics import log_mel_l1, mr_stft_distance

    cfg, val, ema, device = trainer.cfg, trainer.val_set, trainer.ema, trainer.device
    assert val is not None
    gen = torch.Generator(device)
    losses = []
    # One clip at a time, its noise seeded by its index: a clip's loss does not depend on
    # data.batch_size (which may change between resumes) or on the clips batched with it.
    for i in range(min(len(val), EVAL_LOSS_CLIPS)):
        batch = {k: v.unsqueeze(0) for k, v in val[i].items()}
        x0, cond, label = trainer.model_inputs(batch)
        gen.manual_seed(derived_seed("eval-loss", cfg.train.seed, i))
        d = cfg.diffusion
        losses.append(
            training_loss(ema, x0, schedule=trainer.schedule, cond=cond, label=label,
                          target=d.target, loss=d.loss, generator=gen)
        )  # fmt: skip
    stats = {"val_loss": float(torch.cat(losses).mean())}
    if cfg.model.conditioning != "mel":
        return stats
    # The model's own sampler and step count, through the one engine the vocoder uses.
    spec = make_sampling_spec(cfg, trainer.schedule)
    denoiser = Denoiser(
        ema, trainer.schedule, target=cfg.diffusion.target, t_mapping=spec.t_mapping
    )
    mel_cpu = MelSpectrogram(cfg.mel)
    hop, scores = cfg.mel.hop_length, {"log_mel_l1": [], "mr_stft": []}
    for i in range(min(EVAL_CLIPS, len(val))):
        n = min(val.n_samples(i), int(EVAL_SECONDS * cfg.mel.sample_rate)) // hop * hop
        ref = val.read(i, 0, n).to(device).unsqueeze(0)  # [1, 1, T]
        _, cond, _ = trainer.model_inputs({"audio": ref, "label": torch.tensor([val.label_of(i)])})
        seed = derived_seed("eval-synthesis", cfg.train.seed, i)
        out = vocode_mel(
            denoiser, spec, trainer.domain, cond, seed=seed, chunk_samples=None, device=device
        ).clamp(-1, 1)
        r, g = ref[0, 0].double().cpu(), out[0, 0].double().cpu()
        scores["log_mel_l1"].append(float(log_mel_l1(r, g, mel_cpu.double())))
        scores["mr_stft"].append(float(mr_stft_distance(r, g)))
        if trainer.perceptual is not None:
            for key, value in trainer.perceptual.score(g.float(), cfg.mel.sample_rate).items():
                scores.setdefault(key, []).append(value)
        trainer.add_audio(f"copy_synthesis/{i}", out[0, 0].float().cpu(), mel_cpu)
    stats.update({k: sum(v) / len(v) for k, v in scores.items() if v})
    return stats
