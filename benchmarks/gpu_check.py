"""GPU training check: the base vocoder in bf16 at batch 16 for a few hundred steps.

Runs the real :class:`audiodiff.train.Trainer` on synthetic WAVs and prints the GPU's name, steps/s
and audio-seconds trained per second (global, over all ranks). It checks itself and exits non-zero
when something is wrong: a non-finite step, a loss that did not go down, bf16 not in use on a GPU
that has it, ranks whose weights differ, or a checkpoint that does not load back.

    python benchmarks/gpu_check.py                              # one GPU
    torchrun --standalone --nproc_per_node=N benchmarks/gpu_check.py   # N GPUs, NCCL
    python benchmarks/gpu_check.py --device cpu --tiny --steps 4 --warmup 1   # dry run, no GPU

Per-GPU batch is ``--batch``; the global batch is ``--batch x N``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiodiff import dist
from audiodiff.checkpoint import load_checkpoint
from audiodiff.config import ExperimentConfig
from audiodiff.config_io import apply_overrides
from audiodiff.manifest import manifest_from_files
from audiodiff.train import Trainer

TINY = ["model.residual_channels=8", "model.residual_layers=4", "model.dilation_cycle=2"]


def write_clips(folder: Path, n_clips: int, sample_rate: int = 22050) -> Path:
    """Deterministic 2-s tone sweeps plus noise; every node writes identical files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n_clips):
        t = np.arange(2 * sample_rate) / sample_rate
        x = 0.4 * np.sin(2 * np.pi * (110 * (1 + i % 12)) * t * (1 + 0.3 * t))
        x += 0.01 * rng.standard_normal(t.size)
        files.append(folder / f"clip{i:03d}.wav")
        sf.write(files[-1], x.astype(np.float32), sample_rate, subtype="PCM_16")
    return manifest_from_files(files, folder / "train.jsonl")


def fail(message: str) -> None:
    print(f"gpu_check: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=16, help="per-GPU batch")
    parser.add_argument("--frames", type=int, default=62, help="crop length in mel frames")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="tiny network (dry runs)")
    parser.add_argument("--work-dir", default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail("CUDA is not available (use --device cpu --tiny for a dry run)")

    ctx = dist.init(args.device)
    try:
        # Each node's local rank 0 writes the clips (identical everywhere); the run dir is fresh.
        shared = Path(args.work_dir or tempfile.gettempdir()) / "audiodiff_gpu_check"
        if ctx.local_rank == 0:
            shutil.rmtree(shared, ignore_errors=True)
            manifest = write_clips(shared / "data", n_clips=max(64, 4 * args.batch))
        dist.barrier(ctx)
        manifest = shared / "data" / "train.jsonl"
        precision = "bf16" if args.device.startswith("cuda") else "fp32"
        total = args.warmup + args.steps
        cfg = apply_overrides(ExperimentConfig(name="gpu-check"), [
            f"data.train_manifest={manifest}", f"data.batch_size={args.batch}",
            f"data.segment_frames={args.frames}", f"data.num_workers={args.workers}",
            f"train.device={args.device}", f"train.precision={precision}",
            f"train.compile={str(args.compile).lower()}", f"train.max_steps={total}",
            f"train.log_every={total}", f"train.save_every={total}", f"train.eval_every={total}",
        ] + (TINY if args.tiny else []))  # fmt: skip
        trainer = Trainer(cfg, shared / "run", ctx=ctx, log=lambda m: None)
        if args.device.startswith("cuda") and torch.cuda.is_bf16_supported():
            if trainer.precision != "bf16":
                fail(f"precision resolved to {trainer.precision}, expected bf16")

        batches = trainer.batches()
        losses, times = [], []
        for i in range(total):
            if i == args.warmup:
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize(trainer.device)
                    torch.cuda.reset_peak_memory_stats(trainer.device)
                start = time.perf_counter()
            t0 = time.perf_counter()
            loss, _, ok = trainer.train_step(batches)
            trainer.step += 1
            if not ok:
                fail(f"non-finite loss or gradient at step {trainer.step}")
            trainer.update_ema()
            losses.append(loss)
            times.append(time.perf_counter() - t0)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        elapsed = time.perf_counter() - start
        losses = torch.stack(losses).float().cpu().tolist()

        digest = trainer.check_ranks_agree()  # raises if the ranks' weights differ
        trainer.save()
        if ctx.is_main:
            state = load_checkpoint(shared / "run")
            if state["step"] != total or state["config"]["name"] != "gpu-check":
                fail(f"checkpoint reloaded with step {state['step']}, expected {total}")
        n = max(5, len(losses) // 10)
        first, last = statistics.mean(losses[:n]), statistics.mean(losses[-n:])
        if not last < first:
            fail(f"loss did not go down: first {n} steps {first:.4f}, last {n} steps {last:.4f}")

        steps_per_s = args.steps / elapsed
        samples = args.batch * args.frames * cfg.mel.hop_length * ctx.world_size
        if ctx.is_main:
            name = (
                torch.cuda.get_device_name(trainer.device)
                if trainer.device.type == "cuda"
                else "CPU"
            )
            peak = (
                f"{torch.cuda.max_memory_allocated(trainer.device) / 2**30:.2f} GiB"
                if trainer.device.type == "cuda"
                else "n/a"
            )
            backend = "single process"
            if ctx.distributed:
                backend = "DDP, NCCL" if trainer.device.type == "cuda" else "DDP, gloo"
            n_params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
            print(
                f"device               {name} x {ctx.world_size} ({backend})\n"
                f"model                {cfg.model.residual_channels} ch x "
                f"{cfg.model.residual_layers} layers, {n_params:.2f} M params, {trainer.precision}"
                f"{', torch.compile' if args.compile else ''}\n"
                f"batch                {args.batch} per rank x {ctx.world_size} ranks, "
                f"{args.frames * cfg.mel.hop_length} samples per crop\n"
                f"steps timed          {args.steps} (after {args.warmup} warm-up)\n"
                f"steps/s              {steps_per_s:.2f}\n"
                f"audio-seconds/s      {steps_per_s * samples / cfg.mel.sample_rate:.1f}\n"
                f"median step          {1000 * statistics.median(times[args.warmup :]):.1f} ms\n"
                f"peak GPU memory      {peak} (rank 0)\n"
                f"loss                 {first:.4f} -> {last:.4f}\n"
                f"weights              identical on all ranks, sha256 {digest[:16]}\n"
                "gpu_check: OK",
                flush=True,
            )
    finally:
        dist.teardown(ctx)


if __name__ == "__main__":
    main()
