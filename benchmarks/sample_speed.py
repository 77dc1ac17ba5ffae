"""Sampling speed and memory of the vocoder (DESIGN §9, issue 4).

Prints, for the base model (64 channels, 30 layers, random weights) at 6 steps, batch 1, on
``--threads`` CPU threads: the real-time factor (compute seconds per second of audio) for 1 s and
10 s of 22.05 kHz audio, and its ratio to the FLOP floor

    floor_s = 2 * MACs_per_output_sample (whole network, step-invariant work included, as the
              reference counts them) * samples * steps / fp32 matmul FLOP/s measured in this run.

Then peak RSS when vocoding long inputs (default 1 and 10 minutes), each in a fresh process, to
show that memory does not grow with the input length. Run:

    python benchmarks/sample_speed.py                    # speed table + memory table
    python benchmarks/sample_speed.py --skip-memory
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from audiodiff.config import ExperimentConfig
from audiodiff.config_io import apply_overrides
from audiodiff.model import DiffWave
from audiodiff.vocoder import Vocoder


def matmul_flops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an n x n x n matmul on ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def macs_per_sample(cfg: ExperimentConfig) -> int:
    """Multiply-accumulates per output sample of one full network evaluation (invariant work
    included): input projection, per layer the dilated conv, conditioner and output projections,
    the skip and output projections, and the two transposed-conv upsampler stages."""
    c, n_mels, k = cfg.model.residual_channels, cfg.mel.n_mels, cfg.model.kernel_size
    per_layer = c * 2 * c * k + n_mels * 2 * c + c * 2 * c
    upsampler = 0
    factors = [16, 16] if cfg.mel.hop_length == 256 else []
    rate = 1.0
    for s in reversed(factors):  # per output sample: 3 x 2 kernel taps per mel bin and stage
        upsampler += int(n_mels * 3 * 2 * rate)
        rate /= s
    return c + cfg.model.residual_layers * per_layer + c * c + c + upsampler


def base_vocoder(overrides: list[str] = ()) -> Vocoder:
    cfg = apply_overrides(ExperimentConfig(), list(overrides))
    net = DiffWave.from_config(cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.output_projection.weight.normal_(0, 0.1)
    return Vocoder(net, cfg, device="cpu")


def speed_table(threads: int, seconds_list: list[float], steps: int, repeats: int) -> None:
    torch.set_num_threads(threads)
    flops = matmul_flops(threads)
    voc = base_vocoder()
    mac = macs_per_sample(voc.config)
    print(
        f"threads {threads}, fp32 matmul {flops / 1e9:.1f} GFLOP/s, base model "
        f"{sum(p.numel() for p in voc.net.parameters()):,} parameters, {mac:,} MACs per "
        f"output sample per step (invariant work {30 * 80 * 128 / mac:.1%} of it)"
    )
    print(f"{'audio':>8} {'steps':>5} {'time s':>8} {'RTF':>7} {'floor RTF':>9} {'x floor':>8}")
    for seconds in seconds_list:
        frames = round(seconds * voc.sample_rate / voc.hop_length)
        mel = torch.randn(1, voc.n_mels, frames) - 5.0
        voc(mel[..., : min(frames, 20)], steps=steps, seed=0)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            voc(mel, steps=steps, seed=0, chunk_seconds=None)
            times.append(time.perf_counter() - start)
        elapsed = statistics.median(times)
        audio_s = frames * voc.hop_length / voc.sample_rate
        floor_s = 2 * mac * frames * voc.hop_length * steps / flops
        print(
            f"{audio_s:7.2f}s {steps:5d} {elapsed:8.2f} {elapsed / audio_s:7.3f} "
            f"{floor_s / audio_s:9.3f} {elapsed / floor_s:8.2f}"
        )


def rss_child(seconds: float, overrides: list[str], steps: int, threads: int) -> None:
    """Vocode ``seconds`` of audio in this process; print peak RSS (MiB) as JSON."""
    torch.set_num_threads(threads)
    voc = base_vocoder(overrides)
    frames = round(seconds * voc.sample_rate / voc.hop_length)
    mel = torch.randn(1, voc.n_mels, frames) - 5.0
    start = time.perf_counter()
    audio = voc(mel, steps=steps, seed=0, sampler="diffwave-fast" if steps == 6 else "ddim")
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": audio.shape[-1] / voc.sample_rate, "peak_mib": peak, "elapsed_s": elapsed}
        )
    )


def memory_table(minutes: list[float], overrides: list[str], steps: int, threads: int) -> None:
    print(f"peak RSS, fresh process each, model overrides {overrides or 'none'}, {steps} steps")
    print(f"{'audio':>9} {'peak MiB':>9} {'time s':>8}")
    peaks = []
    for m in minutes:
        cmd = [
            sys.executable,
            __file__,
            "--rss-child",
            str(m * 60),
            "--threads",
            str(threads),
            "--memory-steps",
            str(steps),
        ] + [f"--override={o}" for o in overrides]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        peaks.append(row["peak_mib"])
        print(f"{row['seconds'] / 60:7.2f}mn {row['peak_mib']:9.0f} {row['elapsed_s']:8.1f}")
    print(f"largest / smallest peak: {max(peaks) / min(peaks):.3f} (target <= 1.20)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    # Ten minutes of the base model at 6 steps takes most of an hour on 2 cores; the memory run
    # defaults to a 4-layer, 16-channel model at 2 DDIM steps so it finishes in minutes. That is
    # the harder case for flatness: its per-chunk working set is small next to the input/output.
    parser.add_argument("--override", action="append", default=None)
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--rss-child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = args.override
    if overrides is None:
        overrides = ["model.residual_layers=4", "model.residual_channels=16"]
    if args.rss_child is not None:
        rss_child(args.rss_child, overrides, args.memory_steps, args.threads)
        return
    if not args.skip_speed:
        speed_table(args.threads, args.seconds, args.steps, args.repeats)
    if not args.skip_memory:
        memory_table(args.minutes, overrides, args.memory_steps, args.threads)


if __name__ == "__main__":
    main()
