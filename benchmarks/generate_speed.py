"""Seconds to generate audio from noise: two-stage (mel model + vocoder) vs waveform-only (issue 6).

Both routes use the SC09 recipes' networks (recipes/sc09/unconditional.yaml for waveform-only;
recipes/sc09/mel.yaml + recipes/sc09/vocoder.yaml for two-stage) with widths divided by
``--scale`` so they run on a CPU, random weights (speed does not depend on them), the same sampler
and step count for the two generators, and the vocoder at its own 6-step fast schedule. Prints one
table and the ratio. Run:

    python benchmarks/generate_speed.py            # 4 s of 16 kHz audio, 12 steps, 2 threads
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from audiodiff.config import ExperimentConfig
from audiodiff.config_io import apply_overrides, load_config
from audiodiff.generate import GenerativeModel
from audiodiff.model import DiffWave
from audiodiff.vocoder import Vocoder

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "sc09"


def scaled(recipe: str, scale: int, extra: list[str]) -> ExperimentConfig:
    cfg = load_config(RECIPES / recipe)
    width = max(8, cfg.model.residual_channels // scale)
    return apply_overrides(cfg, [f"model.residual_channels={width}", *extra])


def build(cfg: ExperimentConfig) -> DiffWave:
    net = DiffWave.from_config(cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.output_projection.weight.normal_(0, 0.1)
    return net


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--sampler", default="dpmpp-2m")
    parser.add_argument("--scale", type=int, default=4, help="divide every width by this")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sampling = [f"sample.sampler={args.sampler}", f"sample.steps={args.steps}"]

    wave_cfg = scaled("unconditional.yaml", args.scale, sampling)
    mel_cfg = scaled("mel.yaml", args.scale, sampling)
    voc_cfg = scaled("vocoder.yaml", args.scale, [])
    wave = GenerativeModel(build(wave_cfg), wave_cfg, device="cpu")
    mel_model = GenerativeModel(build(mel_cfg), mel_cfg, device="cpu")
    vocoder = Vocoder(build(voc_cfg), voc_cfg, device="cpu")

    def two_stage() -> torch.Tensor:
        mels = mel_model.sample(1, seconds=args.seconds, label=3, seed=0)
        return vocoder(mels, seed=0)

    t_wave = timed(lambda: wave.sample(1, seconds=args.seconds, seed=0), args.repeats)
    t_mel = timed(lambda: mel_model.sample(1, seconds=args.seconds, label=3, seed=0), args.repeats)
    t_two = timed(two_stage, args.repeats)

    def size(cfg: ExperimentConfig) -> str:
        m = cfg.model
        return f"{m.residual_channels} ch x {m.residual_layers} layers"

    print(
        f"{args.seconds:g} s of 16 kHz audio, batch 1, {args.threads} threads, widths / "
        f"{args.scale}; generators: {args.sampler} {args.steps} steps; vocoder: diffwave-fast 6"
    )
    print(f"{'route':<34} {'network(s)':<40} {'seconds':>8}")
    print(f"{'waveform-only':<34} {size(wave_cfg):<40} {t_wave:8.2f}")
    print(f"{'  two-stage: mel model alone':<34} {size(mel_cfg):<40} {t_mel:8.2f}")
    print(
        f"{'two-stage: mel model + vocoder':<34} "
        f"{size(mel_cfg) + ' + ' + size(voc_cfg):<40} {t_two:8.2f}"
    )
    print(f"two-stage / waveform-only time: {t_two / t_wave:.3f}")


if __name__ == "__main__":
    main()
