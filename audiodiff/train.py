"""Training: one :class:`Trainer` for one CPU, one GPU, or N GPUs on M machines (torchrun DDP).

Read top to bottom, :meth:`Trainer.__init__` builds everything (device, data, model, EMA,
optimiser) and resumes from ``RUN_DIR/latest`` when there is one; :meth:`Trainer.train` is the loop;
:meth:`Trainer.train_step` is one optimiser step; :meth:`Trainer.model_inputs` is the only place
that turns a batch into ``(x0, cond, label)``, so the mel domain plugs in there, not in a second
loop. Beside it: the run directory and resume (:mod:`audiodiff.run_dir`), the run's data
(:mod:`audiodiff.train_data`), evaluation (:mod:`audiodiff.train_eval`), output
(:mod:`audiodiff.train_log`).

Exact resume. Everything the future depends on is in the checkpoint (weights, EMA, optimiser,
scaler, step, epoch, position in the epoch, skip counters, RNG states), crops depend only on
``(seed, epoch, index)`` (see :mod:`audiodiff.data`), and the diffusion noise of micro-batch ``m``
of step ``s`` comes from a generator seeded by ``(seed, s, shard)`` with ``shard = m * W + rank``.
So stop + resume is bit-identical on CPU, and N ranks with batch B equal (to float rounding) one
process with batch B and ``grad_accum = N``: the same shards see the same data and the same noise.

Host syncs: one per step (a single flag saying whether the loss and gradients are finite, needed
before the optimiser may step; under DDP it is summed over ranks so every rank skips together;
the adversarial stage's discriminator step reads its own such flag), plus one per ``log_every``
steps for the logged values. Under DDP every step also has one small collective of the stop and
save-clock flags (:mod:`audiodiff.interrupt`), so every rank saves and stops at the same step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audiodiff import dist
from audiodiff.checkpoint import (
    checkpoint_name,
    params_digest,
    save_checkpoint,
)
from audiodiff.config import ExperimentConfig
from audiodiff.config_rules import validate
from audiodiff.domains import build_domain
from audiodiff.interrupt import StopGuard
from audiodiff.manifest import check_manifests
from audiodiff.mel import MelSpectrogram
from audiodiff.run_dir import (
    open_run_dir,
    resume_training,
    training_state,
    write_config,
)
from audiodiff.schedule import NoiseSchedule
from audiodiff.seeds import derived_seed
from audiodiff.train_adversarial import AdversarialStage
from audiodiff.train_data import (
    class_names,
    load_datasets,
    measure_data_stats,
    model_inputs,
    train_loader,
)
from audiodiff.train_eval import check_sampling, evaluate, perceptual_scorer
from audiodiff.train_log import LogWindow, RunLog
from audiodiff.train_losses import auxiliary_loss, diffusion_loss
from audiodiff.train_setup import (  # noqa: F401  (lr_at, TrainingStopped: re-exported)
    TrainingStopped,
    build_networks,
    load_init_weights,
    lr_at,
    resolve_precision,
)

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
        cfg: the experiment, validated (:func:`audiodiff.config_rules.validate`) by its builder.
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
        self.cfg = cfg
        check_sampling(cfg)
        # Before the run directory exists: a refusal leaves nothing behind.
        check_manifests(train_manifest=cfg.data.train_manifest, val_manifest=cfg.data.val_manifest)
        self.perceptual = perceptual_scorer(cfg)  # a missing extra, also before the run dir
        init = load_init_weights(cfg)  # train.init_from: a wrong source, also before it
        self.run_dir = Path(run_dir)
        self.ctx = ctx if ctx is not None else dist.init(cfg.train.device)
        self.device = self.ctx.device
        self.run_log = RunLog(self.run_dir, self.ctx.is_main, log)

        # Precision: bf16 autocast where the GPU has it, fp16 + GradScaler on request, else fp32.
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        # Run directory: refuse a foreign one, write the resolved config.yaml first, and load the
        # checkpoint to resume (once; rank 0 decides and tells the others); hold it (run_lock).
        self.last_checkpoint, resume, self.run_lock = open_run_dir(
            cfg, self.run_dir, self.ctx, self.log
        )

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
                write_config(cfg, self.run_dir)
        self.sampler, self.loader = train_loader(cfg, self.train_set, self.ctx)

        self.model, self.ema, self.optimizer, self.net = build_networks(cfg, self.ctx)
        if resume is None and init is not None:
            self.model.load_state_dict(init[0])
            self.ema.load_state_dict(init[0])
            self.log(init[1])
        del init
        self.adversarial = None
        if cfg.train.adversarial > 0 or cfg.train.feature_matching > 0:
            autocast = (self.device.type, self.autocast_dtype)
            self.adversarial = AdversarialStage(cfg.train, self.ctx, autocast)
        self.disc_losses: list[torch.Tensor] = []  # device scalars, read when logged
        self.mel = MelSpectrogram(cfg.mel).to(self.device)
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        self.noise_gen = torch.Generator(self.device)

        # Counters, then resume: everything above may be overwritten by the checkpoint.
        self.step = self.epoch = self.position = 0
        self.skipped_steps = self.consecutive_bad = 0
        self.elapsed_s = 0.0
        if resume is not None:
            resume_training(self, resume)
            del resume  # the optimiser and EMA copies are in place: free the loaded ones
        elif cfg.model.domain == "mel":
            measure_data_stats(self)
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
            TrainingInterrupted: SIGTERM/SIGINT (:mod:`audiodiff.interrupt`), after a saved step.
        """
        cfg, tr, out = self.cfg, self.cfg.train, self.run_log
        out.start(tr.max_steps, self.step)
        batches = self.batches()
        window = LogWindow(cfg, self.ctx.world_size, self.device, first_step=self.step)
        last_loss = None
        stop = StopGuard(self.ctx, tr.save_every_minutes).install()  # SIGTERM/SIGINT, save clock
        try:
            while self.step < tr.max_steps:
                t0 = time.perf_counter()
                loss, grad_norm, ok = self.train_step(batches)
                self.step += 1
                if ok:
                    self.update_ema()
                    self.consecutive_bad = 0
                    window.add(loss, grad_norm)
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
                out.advance(self.step, tr.save_every)
                if self.step % tr.log_every == 0:
                    stats = window.stats(self.step, lr_at(tr, self.step - 1), self.skipped_steps)
                    if self.disc_losses:
                        stats["disc_loss"] = float(torch.stack(self.disc_losses).mean())
                        self.disc_losses = []
                    last_loss = stats["loss"]
                    out.record("train", self.step, stats)
                    out.show(stats)
                    window.restart(self.step)
                if self.step % tr.eval_every == 0 and self.val_set is not None:
                    if self.ctx.is_main:
                        out.record("eval", self.step, evaluate(self))
                    dist.barrier(self.ctx)
                # poll first: it is a collective every rank must reach at every step.
                if stop.poll() or self.step % tr.save_every == 0 or self.step == tr.max_steps:
                    self.save()
                    stop.saved()
                stop.check(self.step, self.last_checkpoint)
        finally:
            stop.restore()
            self.run_lock.release()
            out.close()
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
        if self.adversarial is not None and self.adversarial.active(self.step):
            disc_loss, _ = self.adversarial.step()
            if disc_loss is not None:
                self.disc_losses.append(disc_loss)
        return loss_mean, grad_norm.detach().float(), ok

    def model_inputs(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Batch -> ``(x0, cond, label)``, by :func:`audiodiff.train_data.model_inputs`."""
        return model_inputs(batch, self.cfg, self.mel, self.domain, self.device)

    def loss(
        self, x0: torch.Tensor, cond: torch.Tensor | None, label: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-example diffusion loss ``[B]`` with noise from this micro-batch's generator, plus
        the auxiliary losses (:mod:`audiodiff.train_losses`); ``model.start: estimate`` trains
        from the domain's DSP estimate (:func:`audiodiff.diffusion.start_training_loss`)."""
        stage = self.adversarial
        judge = stage.generator_terms if stage is not None and stage.active(self.step) else None
        return diffusion_loss(
            self.cfg, self.net, x0, cond, label, schedule=self.schedule, domain=self.domain,
            generator=self.noise_gen, label_dropout=self.cfg.diffusion.label_dropout,
            x0_loss=auxiliary_loss(self.cfg.train, self.domain, self.mel, x0, cond, judge),
        )  # fmt: skip

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
            save_checkpoint(training_state(self), self.run_dir, self.step, self.cfg.train.keep_last)
        dist.barrier(self.ctx)
        self.last_checkpoint = self.run_dir / checkpoint_name(self.step)

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
        self.run_log.message(message)


def run(cfg: ExperimentConfig, run_dir: str | Path) -> TrainResult:
    """Train ``cfg`` (validated) in ``run_dir`` (resuming when possible) under torchrun or alone."""
    ctx = dist.init(cfg.train.device)
    try:
        return Trainer(cfg, run_dir, ctx=ctx).train()
    finally:
        dist.teardown(ctx)
