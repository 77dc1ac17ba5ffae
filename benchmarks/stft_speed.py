"""Speed, training throughput and long-form memory of the STFT-domain vocoder against the rest.

All three parts are measured in ONE run on one machine, so the ratios compare like with like:

1. Vocoding speed, ``--threads`` CPU threads, ``--steps`` steps (6), batch 1, a ``--seconds``
   (10) long mel of a synthetic speech-like signal made here (harmonics over a gliding f0,
   syllable-rate envelope, formant-shaped spectrum, noise bursts; 22.05 kHz): real-time factor
   (compute seconds per audio second, median of ``--repeats`` after one warm-up call on the same
   input) of (a) the stft vocoder (``--stft MODEL``; default a random-weight export of
   ``recipes/klettres/stft.yaml``'s config, since speed does not depend on the weights),
   (b) Griffin-Lim, 64 iterations, on the same mel, (c) the base waveform model
   (``ExperimentConfig()`` defaults: 64 channels x 30 layers, random weights, its default
   sampler diffwave-fast), (d) the shipped waveform model ``small-speech-waveform``. Models run
   through ``Vocoder.__call__(mel, steps=STEPS, seed=0)`` (``--steps``; default each model's own:
   the shipped stft vocoder 1 step plus its refinement, the waveform models 6) with the default
   long-form chunking (``--chunk-seconds``; 0 = whole utterance). Ratios: stft vs Griffin-Lim,
   vs base waveform (target >= 20x faster), vs small-speech-waveform.
2. Training throughput: audio-seconds trained per second of the real
   :class:`audiodiff.train.Trainer` step (WAV read, crop, mel, forward, backward, clipping, Adam,
   EMA; timed per ``train_step`` call as in ``benchmarks/train_speed.py``) for
   ``recipes/klettres/shipped.yaml`` (small-speech-waveform) and ``recipes/klettres/stft.yaml``,
   each with its own batch size and crop, on synthetic WAV clips written to a temp dir. The
   recipes are stepped in interleaved rounds (one step of each, back to back; ``--train-steps``
   rounds after 2 warm-up rounds), so load changes on a shared machine hit both sides of a
   round. Ratio stft / waveform (target >= 10x): the median of the rounds' ratios.
3. Long form: peak RSS of vocoding ``--minutes`` (1 and 10) minutes with the stft vocoder
   (default chunking), each in a fresh process as ``benchmarks/sample_speed.py`` does (peak =
   ``VmHWM`` while vocoding, Linux), and the growth between them; and the max abs difference
   between chunked (``chunk_seconds`` default) and whole-utterance (``chunk_seconds=None``)
   synthesis of a ``--exact-seconds`` (30 s) input (target <= 1e-5).

    python benchmarks/stft_speed.py [--threads 2] [--stft MODEL] [--skip-train] [--skip-long]
    python benchmarks/stft_speed.py --quick          # smoke run: tiny lengths, not a measurement

Quote results together with what else ran on the machine at the time (other jobs, load average):
on a shared 2-core CPU every number here moves with the load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# The sibling benchmarks are scripts, not a package: import their helpers from this folder.
_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from sample_speed import base_vocoder  # noqa: E402
from train_speed import make_data  # noqa: E402

from audiodiff.config_io import load_config, to_dict  # noqa: E402
from audiodiff.domains import StftDomain  # noqa: E402
from audiodiff.griffin_lim import griffin_lim  # noqa: E402
from audiodiff.synthesis import DEFAULT_CHUNK_S  # noqa: E402
from audiodiff.vocoder import Vocoder  # noqa: E402

ROOT = _HERE.parent
STFT_RECIPE = ROOT / "recipes" / "klettres" / "stft.yaml"
WAVEFORM_RECIPE = ROOT / "recipes" / "klettres" / "shipped.yaml"
SAMPLE_RATE = 22050


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def speech_like(seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A synthetic speech-like signal, float32 ``[T]`` peaking near 0.5: voiced harmonics over a
    gliding f0 (90-200 Hz), shaped by three formants, gated at a syllable rate of ~4 Hz, with
    noise bursts (fricatives) in the gaps and a -40 dB noise floor."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    f0 = 145 + 40 * np.sin(2 * np.pi * 0.37 * t) + 15 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = np.zeros(n)
    for k in range(1, 48):
        fk = k * f0
        gain = sum(
            a * np.exp(-(((fk - f) / bw) ** 2))
            for f, bw, a in ((600, 250, 1.0), (1500, 300, 0.5), (2600, 400, 0.3))
        )
        voiced += (gain + 0.02) / k * np.sin(k * phase) * (fk < 0.45 * sample_rate)
    syllable = np.sin(2 * np.pi * 4.1 * t + 0.8 * np.sin(2 * np.pi * 0.5 * t))
    gate = np.clip(syllable, 0, None) ** 0.7
    fricative = np.clip(-syllable - 0.6, 0, None) * np.diff(rng.standard_normal(n + 1))
    x = gate * voiced / max(np.abs(voiced).max(), 1e-9) + 0.3 * fricative
    x = 0.5 * x / max(np.abs(x).max(), 1e-9) + 0.005 * rng.standard_normal(n)
    return x.astype(np.float32)


def mel_of(voc: Vocoder, seconds: float) -> torch.Tensor:
    """``[1, n_mels, frames]`` mel of ``seconds`` of :func:`speech_like`, in ``voc``'s profile.
    Beyond 10 s the mel of a 10 s signal is tiled, so making a long input costs little memory."""
    base = speech_like(min(seconds, 10.0))
    mel = voc.mel(torch.from_numpy(base), SAMPLE_RATE)
    frames = max(1, round(seconds * voc.sample_rate / voc.hop_length))
    return mel.repeat(1, 1, math.ceil(frames / mel.shape[-1]))[..., :frames].contiguous()


def random_stft_export(path: Path, seed: int = 0) -> Path:
    """A random-weight ``.safetensors`` export of the stft recipe's config (its zero-initialised
    output projection drawn small, so the output is not trivially zero)."""
    from audiodiff.checkpoint import export_safetensors
    from audiodiff.model import DiffWave

    cfg = load_config(STFT_RECIPE)
    gen = torch.Generator().manual_seed(seed)
    net = DiffWave.from_config(cfg, generator=gen)
    with torch.no_grad():
        net.output_projection.weight.normal_(0, 0.1, generator=gen)
    state = net.state_dict()
    return export_safetensors({"config": to_dict(cfg), "model": state, "ema": state}, path)


def chunk_arg(seconds: float) -> float | str | None:
    """-1: the vocoder's default for its domain; 0: whole utterance."""
    return "auto" if seconds < 0 else None if seconds == 0 else seconds


def describe_chunk(seconds: float) -> str:
    if seconds < 0:
        return "each model's default chunks (6 s waveform, 30 s stft)"
    return "whole utterance" if seconds == 0 else f"{seconds:g} s chunks"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def faster(ratio: float) -> str:
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


# --------------------------------------------------------------------------------------------------
# 1. Vocoding speed
# --------------------------------------------------------------------------------------------------


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """``(median seconds of repeats calls, last result)`` after one untimed warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def steps_of(voc: Vocoder, args: argparse.Namespace) -> int:
    """``--steps``, or (0) the model's own ``sample.steps``: the shipped stft vocoder samples in
    1 step and refines (``sample.griffin_lim_iters``), the waveform models in 6."""
    return args.steps or voc.config.sample.steps


def vocoder_rtf(voc: Vocoder, mel: torch.Tensor, args: argparse.Namespace) -> float:
    def call() -> torch.Tensor:
        return voc(mel, steps=steps_of(voc, args), seed=0,
                   chunk_seconds=chunk_arg(args.chunk_seconds))  # fmt: skip

    elapsed, audio = median_time(call, args.repeats)
    if not torch.isfinite(audio).all():
        raise RuntimeError("non-finite vocoder output in the benchmark")
    return elapsed / (audio.shape[-1] / voc.sample_rate)


def speed_part(stft_path: str, args: argparse.Namespace) -> None:
    stft = Vocoder.from_pretrained(stft_path, device="cpu")
    mel = mel_of(stft, args.seconds)
    audio_s = mel.shape[-1] * stft.hop_length / stft.sample_rate
    print(
        f"\n## 1. vocoding speed: {audio_s:.2f} s of audio, batch 1, "
        f"{args.steps or 'each model its own'} steps, "
        f"{args.threads} threads, {describe_chunk(args.chunk_seconds)}, median of "
        f"{args.repeats} after 1 warm-up"
    )
    rows: list[tuple[str, str, float]] = []

    def model_row(label: str, voc: Vocoder) -> float:
        n_params = sum(p.numel() for p in voc.net.parameters())
        c = voc.config
        # The exactness halo each long-form chunk is extended by, either side (steps x the
        # receptive radius): the extra work chunking costs, next to the chunk length.
        unit = voc.hop_length if voc.domain.frame_rate else 1
        halo_s = voc.halo_samples(steps_of(voc, args)) * unit / voc.sample_rate
        refine = c.sample.griffin_lim_iters if c.model.domain == "stft" else 0
        what = (
            f"{c.model.domain}, {c.model.residual_channels} ch x {c.model.residual_layers} "
            f"layers, {n_params / 1e6:.2f} M params, {c.sample.sampler} {steps_of(voc, args)} "
            f"steps{f' + {refine} Griffin-Lim iterations' if refine else ''}, chunk halo "
            f"+-{halo_s:.2f} s"
        )
        # Each model gets the mel of its own profile (all defaults here share `hifigan`).
        own = mel if voc.mel_config == stft.mel_config else mel_of(voc, audio_s)
        rtf = vocoder_rtf(voc, own, args)
        rows.append((label, what, rtf))
        print(f"  {label}: RTF {rtf:.4f}", flush=True)
        return rtf

    rtf_stft = model_row("stft vocoder", stft)

    def gl() -> torch.Tensor:
        return griffin_lim(mel, stft.mel_config, n_iter=args.gl_iters)

    gl_s, gl_audio = median_time(gl, args.repeats)
    rtf_gl = gl_s / (gl_audio.shape[-1] / stft.sample_rate)
    rows.append(("Griffin-Lim", f"{args.gl_iters} iterations (fast GL, NNLS mel inverse)", rtf_gl))
    print(f"  Griffin-Lim: RTF {rtf_gl:.4f}", flush=True)
    rtf_base = model_row("base waveform", base_vocoder())
    rtf_small = model_row(
        "small-speech-waveform", Vocoder.from_pretrained(args.shipped, device="cpu")
    )

    width = max(len(r[0]) for r in rows)
    print(f"\n| {'vocoder':<{width}} | what | RTF | x real time |")
    print(f"|{'-' * (width + 2)}|------|-----|-------------|")
    for label, what, rtf in rows:
        print(f"| {label:<{width}} | {what} | {rtf:.4f} | {1 / rtf:.1f} |")
    print(f"stft vs Griffin-Lim: {faster(rtf_gl / rtf_stft)}")
    ratio = rtf_base / rtf_stft
    print(f"stft vs base waveform: {faster(ratio)} (target >= 20x: {verdict(ratio >= 20)})")
    print(f"stft vs small-speech-waveform: {faster(rtf_small / rtf_stft)}")


# --------------------------------------------------------------------------------------------------
# 2. Training throughput
# --------------------------------------------------------------------------------------------------


class TrainRow:
    """One recipe's real :class:`audiodiff.train.Trainer`, stepped one timed step at a time;
    ``fused`` forces the fused CPU training kernel on or off (None: the model's default)."""

    def __init__(
        self, name: str, recipe: Path, manifest: Path, run_dir: Path, args: argparse.Namespace,
        fused: bool | None = None,
    ) -> None:  # fmt: skip
        from audiodiff.train import Trainer

        big = 10**9
        overrides = [
            f"data.train_manifest={manifest}", "data.val_manifest=", "data.num_workers=0",
            "train.device=cpu", f"train.max_steps={big}",
            f"train.save_every={big}", f"train.log_every={big}", f"train.eval_every={big}",
        ]  # fmt: skip
        if args.train_batch:
            overrides.append(f"data.batch_size={args.train_batch}")
        self.name, self.recipe = name, recipe
        self.cfg = cfg = load_config(recipe, overrides)
        self.trainer = Trainer(cfg, run_dir, log=lambda message: None)
        if fused is not None:
            self.trainer.model.fused_training = fused
        self.batches = self.trainer.batches()
        self.audio_s = (
            cfg.data.batch_size * cfg.train.grad_accum * cfg.data.segment_frames
            * cfg.mel.hop_length / cfg.mel.sample_rate
        )  # fmt: skip
        self.times: list[float] = []

    def step(self) -> float:
        """Time one ``train_step`` plus its EMA update; returns seconds (also kept)."""
        t0 = time.perf_counter()
        _, _, ok = self.trainer.train_step(self.batches)
        self.trainer.step += 1
        self.trainer.update_ema()
        seconds = time.perf_counter() - t0
        if not ok:
            raise RuntimeError(f"non-finite training step on {self.recipe.name} in the benchmark")
        self.times.append(seconds)
        return seconds


def train_part(args: argparse.Namespace) -> None:
    # Interleaved: every round times one step of each recipe back to back, so a load change on
    # the shared machine lands on both sides of a round's ratio instead of on one recipe's block.
    print(
        f"\n## 2. training throughput: real Trainer step, {args.threads} threads, fp32 CPU, "
        f"{args.train_steps} interleaved rounds after {args.train_warmup} warm-up"
    )
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_data(Path(tmp), n_clips=8, duration_s=2.0, sr=SAMPLE_RATE)
        # stft-fused: the stft recipe through the fused CPU kernel, which its model leaves off
        # (DiffWave.fused_training); the row says whether that default still holds.
        rows = [
            TrainRow(name, recipe, manifest, Path(tmp) / f"run-{name}", args, fused)
            for name, recipe, fused in (
                ("waveform", WAVEFORM_RECIPE, None),
                ("stft", STFT_RECIPE, None),
                ("stft-fused", STFT_RECIPE, True),
            )
        ]
        ratios = []
        for round_ in range(args.train_warmup + args.train_steps):
            seconds = {row.name: row.step() for row in rows}
            if round_ >= args.train_warmup:
                ratios.append(
                    (rows[1].audio_s / seconds["stft"]) / (rows[0].audio_s / seconds["waveform"])
                )
        for row in rows:
            cfg = row.cfg
            step_s = statistics.median(row.times[args.train_warmup :])
            crop = cfg.data.segment_frames * cfg.mel.hop_length
            print(
                f"| {row.name:<10} | {row.recipe.relative_to(ROOT)} | batch "
                f"{cfg.data.batch_size} x {crop} samples ({cfg.data.segment_frames} frames) | "
                f"step {step_s:.3f} s (all: {', '.join(f'{t:.2f}' for t in row.times)}) | "
                f"{row.audio_s / step_s:.3f} audio-s/s |",
                flush=True,
            )
    ratio = statistics.median(ratios)
    print(
        f"stft / waveform training throughput, median of the rounds' ratios: {ratio:.2f}x "
        f"(rounds: {', '.join(f'{r:.1f}' for r in ratios)}; target >= 10x: {verdict(ratio >= 10)})"
    )


# --------------------------------------------------------------------------------------------------
# 3. Long form
# --------------------------------------------------------------------------------------------------


def memory_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB, from ``/proc/self/status``.

    Not ``getrusage``'s ``ru_maxrss``: a child started by ``subprocess`` inherits in it the peak of
    the (large) parent it was forked from, which would hide the child's own peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_child(seconds: float, stft_path: str, args: argparse.Namespace) -> None:
    """Vocode ``seconds`` with the stft vocoder in this process; print its memory as JSON: RSS
    before vocoding and the peak while vocoding (the high-water mark is reset to the current RSS
    first, through ``/proc/self/clear_refs``, so loading transients do not mask it)."""
    voc = Vocoder.from_pretrained(stft_path, device="cpu")
    mel = mel_of(voc, seconds)
    before = memory_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    start = time.perf_counter()
    audio = voc(mel, steps=steps_of(voc, args), seed=0)
    elapsed = time.perf_counter() - start
    row = {
        "seconds": audio.shape[-1] / voc.sample_rate,
        "peak_mib": memory_mib("VmHWM"),
        "before_mib": before,
        "audio_mib": audio.numel() * audio.element_size() / 2**20,
        "elapsed_s": elapsed,
        "finite": bool(torch.isfinite(audio).all()),
    }
    print(json.dumps(row))


def long_part(stft_path: str, args: argparse.Namespace) -> None:
    print(
        f"\n## 3. long form, stft vocoder, default chunking ({StftDomain.default_chunk_s:g} s), "
        f"{args.steps or 'its own'} steps; peak RSS while vocoding, a fresh process each"
    )
    print(
        f"| {'audio':>9} | peak MiB | RSS before vocoding MiB | output audio MiB | time s | RTF |"
    )
    print("|-----------|----------|-------------------------|------------------|--------|-----|")
    rows = []
    for minutes in args.minutes:
        cmd = [
            sys.executable, __file__, "--rss-child", str(minutes * 60), "--stft", stft_path,
            "--threads", str(args.threads), "--steps", str(args.steps),
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        if not row["finite"]:
            raise RuntimeError("non-finite long-form output in the benchmark")
        rows.append(row)
        print(
            f"| {row['seconds'] / 60:7.2f}mn | {row['peak_mib']:8.0f} | {row['before_mib']:23.0f}"
            f" | {row['audio_mib']:16.1f} | {row['elapsed_s']:6.1f} | "
            f"{row['elapsed_s'] / row['seconds']:.4f} |",
            flush=True,
        )
    if len(rows) > 1:
        lo, hi = rows[0], rows[-1]
        print(
            f"peak RSS growth {lo['seconds'] / 60:.2f} -> {hi['seconds'] / 60:.2f} min: "
            f"{hi['peak_mib'] - lo['peak_mib']:+.0f} MiB ({hi['peak_mib'] / lo['peak_mib']:.3f}x; "
            f"the output audio itself grows by {hi['audio_mib'] - lo['audio_mib']:.1f} MiB)"
        )

    voc = Vocoder.from_pretrained(stft_path, device="cpu")
    mel = mel_of(voc, args.exact_seconds)
    chunked = voc(mel, steps=steps_of(voc, args), seed=0, chunk_seconds=args.exact_chunk)
    whole = voc(mel, steps=steps_of(voc, args), seed=0, chunk_seconds=None)
    diff = float((chunked - whole).abs().max())
    n_chunks = math.ceil(
        mel.shape[-1] / (int(args.exact_chunk * voc.sample_rate) // voc.hop_length)
    )
    print(
        f"chunked ({args.exact_chunk:g} s chunks, {n_chunks} of them) == whole on "
        f"{whole.shape[-1] / voc.sample_rate:.1f} s: max abs difference {diff:.3g} "
        f"(peak |audio| {float(whole.abs().max()):.3g}; target <= 1e-5: {verdict(diff <= 1e-5)})"
    )


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=0, help="network evaluations (0: each model's own default)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="audio of the speed table")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk-seconds", type=float, default=-1.0,
        help="long-form chunk of the speed table (-1: each model's default, 0: whole utterance)",
    )  # fmt: skip
    parser.add_argument("--gl-iters", type=int, default=64)
    parser.add_argument("--stft", default=None, help="stft model (default: random-weight export)")
    parser.add_argument(
        "--shipped", default="small-speech-waveform", help="the shipped waveform model"
    )
    parser.add_argument(
        "--train-steps", type=int, default=10, help="timed rounds (one step of each recipe)"
    )
    parser.add_argument("--train-warmup", type=int, default=2)
    parser.add_argument("--train-batch", type=int, default=0, help="0: each recipe's own batch")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--exact-seconds", type=float, default=30.0)
    parser.add_argument("--exact-chunk", type=float, default=DEFAULT_CHUNK_S)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run with tiny lengths (not a measurement)"
    )
    parser.add_argument("--rss-child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child is not None:
        rss_child(args.rss_child, args.stft, args)
        return
    if args.quick:
        args.seconds, args.repeats = 0.3, 1
        args.train_steps, args.train_warmup, args.train_batch = 1, 1, 2
        args.minutes = [0.02, 0.05]
        args.exact_seconds, args.exact_chunk = 2.0, 0.5

    print(
        f"stft_speed: torch {torch.__version__}, {args.threads} threads of {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} at start"
    )
    if args.quick:
        print("QUICK MODE: tiny lengths and batches, a smoke run; these numbers are not results")
    with tempfile.TemporaryDirectory() as tmp:
        stft_path = args.stft or str(random_stft_export(Path(tmp) / "stft-random.safetensors"))
        print(f"stft model: {args.stft or f'random weights, config of {STFT_RECIPE.name}'}")
        if not args.skip_speed:
            speed_part(stft_path, args)
        if not args.skip_train:
            train_part(args)
        if not args.skip_long:
            long_part(stft_path, args)
    print(f"\nload average {', '.join(f'{x:.2f}' for x in os.getloadavg())} at end")


if __name__ == "__main__":
    main()
