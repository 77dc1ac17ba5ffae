"""Compare training runs of different denoiser stacks at equal compute (issue 13, item 2).

For every run directory: the stack (``model.architecture``), its parameters, its per-step cost
in multiply-accumulates per frame (MACs of every convolution and linear layer one
``denoise_step`` runs, counted by forward hooks on a 64-frame input; the step embedding's MLP,
run once per batch, and the prepared mel projection, run once per utterance, are excluded), the
median training throughput its log recorded, and its validation scores at every evaluation step
(copy synthesis of the same val clips with the same seeds: ``val_loss``, ``log_mel_l1``,
``mr_stft``). Runs trained with the same recipe otherwise are comparable step for step.

Usage::

    python benchmarks/architecture_compare.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch import nn

from audiodiff.config_io import load_config
from audiodiff.config_rules import validate
from audiodiff.model_blocks import DiffusionEmbedding
from audiodiff.subband import build_network


def macs_per_frame(cfg, frames: int = 64) -> float:
    """Per-step multiply-accumulates per frame of the network ``cfg`` describes (docstring)."""
    net = build_network(cfg).eval()
    prepared = net.prepare(torch.zeros(1, cfg.mel.n_mels, frames))
    total = 0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv1d):  # weight numel = MACs per output position
            total += module.weight.numel() * output.shape[0] * output.shape[-1]
        else:  # Linear over [..., features]: per row
            rows = output.numel() // output.shape[-1]
            total += module.weight.numel() * rows

    # The step embedding's MLP runs once per batch, not per frame.
    embeddings = [e for e in net.modules() if isinstance(e, DiffusionEmbedding)]
    per_batch = {id(m) for e in embeddings for m in e.modules()}
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    hooks = [m.register_forward_hook(count) for m in layers if id(m) not in per_batch]
    with torch.no_grad():
        # Eager: DiffWave's CPU kernels use the weights without calling the modules (no hooks).
        x = torch.zeros(1, net.in_channels, frames)
        net.denoise_step(x, torch.tensor([1.0]), prepared, backend="eager")
    for h in hooks:
        h.remove()
    return total / frames


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text("utf-8").splitlines()]
    train = [r for r in rows if r.get("kind") == "train"]
    return train, [r for r in rows if r.get("kind") == "eval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    evals = {}
    print("run | stack | parameters | MACs/frame/step | audio-s/s (median)")
    for run in args.runs:
        cfg = validate(load_config(run / "config.yaml"))
        net = build_network(cfg)
        params = sum(p.numel() for p in net.parameters())
        train, evals[run] = read_metrics(run)
        speed = statistics.median(r["audio_s_per_s"] for r in train) if train else float("nan")
        mo = cfg.model
        stack = f"{mo.architecture} {mo.residual_channels}x{mo.residual_layers} k{mo.kernel_size}"
        print(f"{run} | {stack} | {params:,} | {macs_per_frame(cfg) / 1e6:.2f} M | {speed:.2f}")
    steps = sorted({r["step"] for rows in evals.values() for r in rows})
    print("\nstep | run | val_loss | log_mel_l1 | mr_stft")
    for step in steps:
        for run, rows in evals.items():
            for r in rows:
                if r["step"] == step:
                    print(f"{step} | {run} | {r['val_loss']:.4f} | {r['log_mel_l1']:.4f} | "
                          f"{r['mr_stft']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
