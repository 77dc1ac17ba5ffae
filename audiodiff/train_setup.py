"""What the :class:`audiodiff.train.Trainer` builds before its loop: the networks (model, EMA copy,
optimiser, the DDP/compiled wrapper), weights to start from (``train.init_from``), the resolved
precision and the learning-rate schedule; and the exception that stops a run."""

from __future__ import annotations

import copy
import math

import torch
from torch.nn.parallel import DistributedDataParallel

from audiodiff import dist
from audiodiff.config import ExperimentConfig, TrainConfig
from audiodiff.encoding import one_line
from audiodiff.pretrained import load_model_source
from audiodiff.seeds import derived_seed
from audiodiff.subband import build_network


class TrainingStopped(RuntimeError):
    """Training cannot go on (too many non-finite steps in a row); the message names the step."""


def build_networks(
    cfg: ExperimentConfig, ctx: dist.DistContext
) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, torch.nn.Module]:
    """``(model, EMA copy, optimiser, the network a step runs: DDP-wrapped and/or compiled)``."""
    # Model, EMA copy, optimiser. Seeded so every rank starts from the same weights.
    init_gen = torch.Generator().manual_seed(derived_seed("init", cfg.train.seed))
    model = build_network(cfg, generator=init_gen).to(ctx.device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt_cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel makes the same update in one pass over all parameters instead of a loop of
    # small ops: 44-67 -> 16-18 ms a step for the 9.3 M-parameter stft network on 2 CPU threads
    # (benchmarks/loss_speed.py).
    optimizer = opt_cls(
        model.parameters(),
        lr=cfg.train.lr,
        betas=tuple(cfg.train.adam_betas),
        weight_decay=cfg.train.weight_decay,
        fused=ctx.device.type in ("cpu", "cuda"),
    )
    net: torch.nn.Module = model
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    if cfg.train.compile:
        net = torch.compile(net)
    return model, ema, optimizer, net


def load_init_weights(cfg: ExperimentConfig) -> tuple[dict[str, torch.Tensor], str] | None:
    """The (EMA) weights ``train.init_from`` names (a checkpoint, run directory, export or
    shipped model name), checked against the network ``cfg`` builds, as float32, with a line
    saying where they came from; None without ``init_from``. Called before the run directory
    is touched, so a wrong source costs nothing.

    Raises:
        FileNotFoundError: nothing at the source.
        ValueError: weights that do not fit this run's architecture.
    """
    source = cfg.train.init_from
    if not source:
        return None
    state, _, info = load_model_source(source)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        build_network(cfg).load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"train.init_from {source}: its weights do not fit this run's model ({one_line(err)})"
        ) from None
    return state, f"initialised from {info['path']} (step {info['step']})"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` -> ``"fp32" | "bf16" | "fp16"``; ``auto`` is bf16 on capable GPUs.

    Raises:
        ValueError: fp16 requested without CUDA (GradScaler and fp16 kernels need a GPU), or
            bf16 on a CPU, where it would change nothing.
    """
    if precision == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if bf16 else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"train.precision 'fp16' needs a CUDA device, but the device is {device}")
    if precision == "bf16" and device.type == "cpu":  # refused, not ignored (issue 23)
        raise ValueError(
            "train.precision 'bf16' does nothing on a CPU (the network stays float32 under "
            "autocast: its loss is fp32's bit for bit); use 'fp32' or 'auto' (bf16 on GPUs)"
        )
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
