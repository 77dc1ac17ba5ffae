"""Training throughput of the base DiffWave vocoder on the CPU, against the fp32 matmul rate.

What it measures (issue 3): the real :class:`audiodiff.train.Trainer` step (data read from WAV
files, mel on the fly, forward, backward, clipping, Adam, EMA) for the base model (64 channels,
30 layers), batch 4, 62-frame crops (15,872 samples at hop 256), fp32, ``--threads`` intra-op
threads. It prints the median step time, audio-seconds trained per second, and the achieved
GFLOP/s (matmul/conv FLOPs of forward + backward counted by ``torch.utils.flop_counter``) as a
fraction of (a) the square fp32 matmul rate and (b) the rate of thin products shaped like this
network's layers, both measured in the same run.

Reference (quoted from the issue, not measured here): lmnt-com/diffwave on a 2-core CPU of this
kind, 7.8 s per step, 0.37 audio-s/s, about 25 % of a ~250 GFLOP/s matmul rate.

    python benchmarks/train_speed.py [--threads 2] [--steps 5] [--compile] [--eager] [--block N]

``--eager`` trains through the eager residual stack (conv1d) instead of the fused CPU kernel
(audiodiff/kernels/fused.py), for the before/after comparison.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode

from audiodiff.config import ExperimentConfig
from audiodiff.config_io import apply_overrides
from audiodiff.manifest import manifest_from_files
from audiodiff.train import Trainer


def matmul_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Median fp32 rate of ``[m, k] @ [k, n]`` products, in GFLOP/s."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates) < 5:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_data(folder: Path, n_clips: int = 8, duration_s: float = 2.0, sr: int = 22050) -> Path:
    """Chirps plus noise as 16-bit WAVs, and their manifest."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(n_clips):
        t = np.arange(int(duration_s * sr)) / sr
        x = 0.5 * np.sin(2 * np.pi * (100 + 2000 * i / n_clips) * t * (1 + t))
        x += 0.02 * rng.standard_normal(t.size)
        path = folder / f"clip{i}.wav"
        sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
        files.append(path)
    return manifest_from_files(files, folder / "train.jsonl")


def step_flops(trainer: Trainer, fused: bool) -> int:
    """Matmul/conv FLOPs of one forward + backward of the training loss (one micro-batch)."""
    batches = trainer.batches()
    x0, cond, label = trainer.model_inputs(next(batches))
    # Counted on the plain module through the eager stack: a compiled graph would hide its ops
    # from the counter, and the fused kernel's in-place ``addmm_`` GEMMs are not counted by it.
    net, trainer.net = trainer.net, trainer.model
    trainer.model.fused_training = False
    with FlopCounterMode(display=False) as counter:
        trainer.loss(x0, cond, label).mean().backward()
    trainer.net = net
    trainer.model.fused_training = fused
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=62)
    parser.add_argument("--compile", action="store_true", help="train.compile=true")
    parser.add_argument(
        "--eager", action="store_true", help="the eager residual stack, not the fused CPU kernel"
    )
    parser.add_argument("--profile", action="store_true", help="print the top ops of one step")
    parser.add_argument(
        "--block", type=int, default=0, help="time block of the fused kernel (0: its default)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    square = matmul_gflops(2048, 2048, 2048)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_data(Path(tmp))
        cfg = apply_overrides(ExperimentConfig(), [
            f"data.train_manifest={manifest}", f"data.batch_size={args.batch}",
            f"data.segment_frames={args.frames}", "data.num_workers=0", "train.device=cpu",
            "train.precision=fp32", f"train.compile={str(args.compile).lower()}",
        ])  # fmt: skip
        trainer = Trainer(cfg, Path(tmp) / "run", log=lambda message: None)
        fused = not args.eager
        if args.block:
            trainer.model.train_block_samples = args.block
        block = trainer.model.train_block_samples
        samples = args.batch * args.frames * cfg.mel.hop_length
        channels = cfg.model.residual_channels
        # The network's dominant products: [2C, C] taps and [2C, C] output projections over
        # batch x time columns.
        thin = matmul_gflops(2 * channels, channels, samples)
        # The fused kernel's product: all taps and the mel rows stacked along the inner dimension.
        inner = cfg.model.kernel_size * channels + cfg.mel.n_mels
        im2col = matmul_gflops(2 * channels, inner, block)
        trainer.model.fused_training = fused
        batches = trainer.batches()
        times, squares = [], []
        for i in range(2 + args.steps):
            # The matmul rate is re-measured beside every step, so a machine whose load changes
            # during the run still gives a fair ratio (the median of the per-step ratios).
            square_now = matmul_gflops(2048, 2048, 2048, seconds=0.3) if i >= 2 else 0.0
            t0 = time.perf_counter()
            _, _, ok = trainer.train_step(batches)
            trainer.step += 1
            trainer.update_ema()
            times.append(time.perf_counter() - t0)
            squares.append(square_now)
            assert ok, "non-finite step in the benchmark"
        # Before the FLOP count, whose eager pass has its own memory peak.
        rss_mib = peak_rss_mib()
        flops = step_flops(trainer, fused)
        ratios = [flops / t / 1e9 / sq for t, sq in zip(times[2:], squares[2:], strict=True)]
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                trainer.train_step(batches)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    step_s = statistics.median(times[2:])
    audio_s = samples / cfg.mel.sample_rate
    achieved = flops / step_s / 1e9
    n_params = sum(p.numel() for p in trainer.model.parameters())
    rows = [
        ("model", f"{channels} ch x {cfg.model.residual_layers} layers, {n_params / 1e6:.2f} M"),
        ("batch x crop", f"{args.batch} x {samples // args.batch} samples ({args.frames} frames)"),
        ("threads", f"{args.threads}" + (" (torch.compile)" if args.compile else "")),
        ("residual stack", "eager (conv1d)" if args.eager else f"fused, {block}-sample blocks"),
        ("peak RSS during training", f"{rss_mib:.0f} MiB"),
        ("step time, median", f"{step_s:.3f} s  (all: {', '.join(f'{t:.2f}' for t in times)})"),
        ("audio-seconds trained / s", f"{audio_s / step_s:.3f}"),
        ("FLOP per step (fwd + bwd)", f"{flops / 1e9:.1f} GFLOP"),
        ("achieved", f"{achieved:.1f} GFLOP/s"),
        ("square fp32 matmul (2048^3)", f"{square:.1f} GFLOP/s (at start)"),
        ("  achieved / square, per step", f"{100 * statistics.median(ratios):.1f} % (median)"),
        (f"thin matmul ({2 * channels}x{channels} @ {channels}x{samples})", f"{thin:.1f} GFLOP/s"),
        ("  achieved / thin", f"{100 * achieved / thin:.1f} %"),
        (f"im2col matmul ({2 * channels}x{inner} @ {inner}x{block})", f"{im2col:.1f} GFLOP/s"),
        ("reference lmnt-com/diffwave", "7.8 s/step, 0.37 audio-s/s, ~25 % (issue, not run)"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'quantity':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
