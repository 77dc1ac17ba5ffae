"""A training run's directory: what it holds, whether a run may use it, and what it resumes from.

Layout (besides the step checkpoints and ``latest`` pointer of :mod:`audiodiff.checkpoint`)::

    RUN_DIR/config.yaml        the resolved experiment, rewritten by every run in the directory
    RUN_DIR/metrics.jsonl      one JSON row per logged window and evaluation
    RUN_DIR/data_report.json   usable and skipped clips of each manifest
    RUN_DIR/tensorboard/       TensorBoard events (when tensorboard is installed)

A directory is new, empty, or this experiment's: another experiment's, or another architecture,
mel or diffusion setup, is refused before anything is written. A resume reads its checkpoint once
(:func:`open_run_dir`), refuses a checkpoint whose architecture or label map differs from the
run's, and continues at the checkpoint's position in the epoch when the data's layout allows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from audiodiff import dist
from audiodiff.checkpoint import (
    atomic_write,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    restore_rng,
    rng_state,
)
from audiodiff.config import ExperimentConfig
from audiodiff.config_io import dump_config, from_dict, load_config, to_dict
from audiodiff.config_migrate import migrate, model_config, run_config, stored_config
from audiodiff.config_rules import architecture_changes
from audiodiff.run_lock import LOCK_NAME, RunLock, lock_run_dir


def open_run_dir(
    cfg: ExperimentConfig, run_dir: Path, ctx: dist.DistContext, log: Callable[[str], None]
) -> tuple[Path | None, dict[str, Any] | None, RunLock]:
    """Hold ``run_dir`` (:func:`audiodiff.run_lock.lock_run_dir`), :func:`prepare_run_dir` on
    rank 0, and the checkpoint to resume, loaded once per rank.

    Rank 0 decides (lock, refusal and checkpoint) and tells the others, so a refusal stops every
    rank instead of hanging them, and every rank resumes from the same checkpoint (the run dir must
    be on a filesystem all machines share, as for any multi-node resume).

    Returns:
        ``(checkpoint path, its contents on ctx.device, the lock)``, with ``(None, None, lock)``
        for a new run; the lock is held on rank 0 only (the one writer).

    Raises:
        ValueError: the directory is held by another live process (naming its PID, host and
            start), or belongs to another experiment or setup (see :func:`prepare_run_dir`).
    """
    refusal, found, lock = None, None, RunLock(run_dir / LOCK_NAME, None)
    if ctx.is_main:
        try:
            lock = lock_run_dir(run_dir)
            found = load_latest(run_dir, map_location=ctx.device)
            prepare_run_dir(cfg, run_dir, log, resume=found)
        except ValueError as err:
            refusal = str(err)
    refusal = dist.broadcast_object(ctx, refusal)
    if refusal is not None:
        lock.release(undo=True)  # nothing of ours stays in a directory we refuse
        raise ValueError(refusal)
    path = dist.broadcast_object(ctx, None if found is None else found[0])
    if path is None:
        return None, None, lock
    state = found[1] if found is not None else load_checkpoint(path, map_location=ctx.device)
    return path, state, lock


def prepare_run_dir(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    log: Any = print,
    resume: tuple[Path, dict[str, Any]] | None = None,
) -> None:
    """Check that ``run_dir`` is new, empty, or this experiment's; write the resolved config.yaml.

    Optimisation and logging fields may change between runs in one directory (the change is
    reported); the experiment name and the architecture, mel and diffusion fields may not.
    ``resume`` is the checkpoint :func:`load_latest` found, when the caller has loaded it already
    (it decides when config.yaml was deleted); otherwise it is loaded here when needed.

    Raises:
        ValueError: the directory holds another experiment, an unreadable config.yaml, or files
            that are not an audiodiff run.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run dir {run_dir} exists and is not a directory")
    stored = run_dir / "config.yaml"
    old: ExperimentConfig | None = None
    if stored.is_file():
        try:
            old = load_config(stored)
        except ValueError as err:
            raise ValueError(f"run dir {run_dir} holds an unreadable config.yaml: {err}") from None
    elif list_checkpoints(run_dir):
        # config.yaml deleted by hand: the newest checkpoint's own config decides.
        found = resume if resume is not None else load_latest(run_dir)
        if found is not None:
            old = from_dict(ExperimentConfig, migrate(stored_config(found[1]))[0])
    elif run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise ValueError(
            f"run dir {run_dir} is not empty and holds no audiodiff config.yaml; choose an empty "
            "or new directory"
        )
    if old is not None:
        if old.name != cfg.name:
            raise ValueError(
                f"run dir {run_dir} holds experiment {old.name!r}, not {cfg.name!r}; choose "
                "another --run-dir"
            )
        changes = architecture_changes(old, cfg)
        if changes:
            raise ValueError(
                f"run dir {run_dir} holds {old.name!r} with another architecture, mel or "
                f"diffusion setup ({'; '.join(changes)}); these cannot change on resume, use a "
                "new --run-dir"
            )
        old_d, new_d = to_dict(old), to_dict(cfg)
        changed = [
            f"{s}.{k}: {old_d[s][k]!r} -> {new_d[s][k]!r}"
            for s in new_d
            if isinstance(new_d[s], dict)
            for k in new_d[s]
            if old_d[s][k] != new_d[s][k]
        ]
        if changed:
            log(f"config changed since the last run in {run_dir}: {'; '.join(changed)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir)


def training_state(trainer: Any) -> dict[str, Any]:
    """Everything a :class:`audiodiff.train.Trainer` needs to continue exactly (a checkpoint's
    contents): tensors and primitive containers only."""
    return {
        # The model config apart from the run config (config_migrate): inference reads the first.
        "config": model_config(to_dict(trainer.cfg)),
        "run_config": run_config(to_dict(trainer.cfg)),
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "step": trainer.step,
        "epoch": trainer.epoch,
        "data_position": trainer.position,
        "world_size": trainer.ctx.world_size,
        "batch_size": trainer.cfg.data.batch_size,
        "labels": dict(trainer.train_set.labels),
        "n_train_clips": len(trainer.train_set),  # what data_position is a position in
        "stats": {
            "skipped_steps": trainer.skipped_steps,
            "consecutive_bad": trainer.consecutive_bad,
            "elapsed_s": trainer.elapsed_s,
        },
        "rng": rng_state(trainer.noise_gen),
        **(trainer.adversarial.state_dict() if trainer.adversarial is not None else {}),
    }


def restore_training_state(trainer: Any, state: dict[str, Any]) -> None:
    """Restore :func:`training_state` into ``trainer`` (built from the same config); refuses
    architecture, mel, diffusion or label changes (:func:`check_resume`)."""
    check_resume(state, trainer.cfg, dict(trainer.train_set.labels), trainer.run_dir)
    trainer.model.load_state_dict(state["model"])
    trainer.ema.load_state_dict(state["ema"])
    # Which kernel runs the update (fused, foreach) is this machine's choice, not training state:
    # keep it when the checkpoint was written by another build or device.
    kernels = [{k: g.get(k) for k in ("fused", "foreach")} for g in trainer.optimizer.param_groups]
    trainer.optimizer.load_state_dict(state["optimizer"])
    for group, kernel in zip(trainer.optimizer.param_groups, kernels, strict=True):
        group.update(kernel)
    if trainer.scaler.is_enabled() and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.step = int(state["step"])
    trainer.epoch, trainer.position = resume_position(
        state,
        world_size=trainer.ctx.world_size,
        batch_size=trainer.cfg.data.batch_size,
        n_clips=len(trainer.train_set),
        log=trainer.log,
    )
    stats = state["stats"]
    trainer.skipped_steps = int(stats["skipped_steps"])
    trainer.consecutive_bad = int(stats["consecutive_bad"])
    trainer.elapsed_s = float(stats["elapsed_s"])
    restore_rng(state["rng"], trainer.noise_gen)
    if trainer.adversarial is not None and not trainer.adversarial.load_state_dict(state):
        trainer.log("the checkpoint has no discriminator: the adversarial stage starts a new one")


def resume_training(trainer: Any, state: dict[str, Any]) -> None:
    """Continue ``trainer`` from the checkpoint ``state`` :func:`open_run_dir` loaded: restore it,
    say so, and drop the ``metrics.jsonl`` rows the interrupted run logged after it."""
    restore_training_state(trainer, state)
    trainer.log(f"resumed from {trainer.last_checkpoint} at step {trainer.step}")
    if trainer.ctx.is_main:
        dropped = drop_metrics_after(trainer.run_dir / "metrics.jsonl", trainer.step)
        if dropped:
            trainer.log(
                f"dropped {dropped} metrics.jsonl rows that the interrupted run logged "
                f"after step {trainer.step} (those steps are trained again)"
            )


def write_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Write the resolved ``RUN_DIR/config.yaml`` (atomically)."""
    text = dump_config(cfg).encode("utf-8")
    atomic_write(Path(run_dir) / "config.yaml", lambda f: f.write(text))


def check_resume(
    state: dict[str, Any], cfg: ExperimentConfig, labels: dict[str, int], run_dir: Path
) -> None:
    """Refuse to resume ``state`` into ``cfg``: architecture, mel or diffusion changes, or a
    training manifest whose ``{name: index}`` label map differs from the checkpoint's.

    Raises:
        ValueError: naming the change and asking for a new ``--run-dir``.
    """
    old = from_dict(ExperimentConfig, migrate(stored_config(state))[0])
    changes = architecture_changes(old, cfg)
    if changes:
        raise ValueError(
            f"{run_dir} was trained with another architecture, mel or diffusion setup "
            f"({'; '.join(changes)}); these cannot change on resume, use a new --run-dir"
        )
    # The saved label map describes the data it was built from: if the data's labels changed,
    # the same index would now mean another class. (Checkpoints before it saved {}.)
    saved = state.get("labels") or {}
    if cfg.model.n_labels > 0 and saved and saved != labels:
        raise ValueError(
            f"{run_dir} was trained with labels {saved} but the training data now has "
            f"{labels}; label indices cannot change on resume, "
            "use a new --run-dir"
        )


def resume_position(
    state: dict[str, Any],
    *,
    world_size: int,
    batch_size: int,
    n_clips: int,
    log: Callable[[str], None],
) -> tuple[int, int]:
    """``(epoch, position in the epoch)`` to continue from: the checkpoint's, or the start of the
    next epoch when the world size, the batch size or the number of usable clips changed."""
    epoch, position = int(state["epoch"]), int(state["data_position"])
    same_layout = (state["world_size"], state["batch_size"]) == (world_size, batch_size)
    saved_clips = state.get("n_train_clips", n_clips)
    if not same_layout:
        # Another world size or batch cuts epochs differently: continue at the next epoch.
        log("world size or batch size changed: continuing from the next epoch")
        epoch, position = epoch + 1, 0
    elif saved_clips != n_clips and position:
        # The position is one in a permutation of the old clip count, not of today's clips.
        log(
            f"the training data has {n_clips} usable clips, the checkpoint's "
            f"epoch had {saved_clips}: continuing from the next epoch"
        )
        epoch, position = epoch + 1, 0
    return epoch, position


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
