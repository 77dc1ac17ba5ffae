"""What a TTS server pays per call and per batch (issue 22, part 4), in one process:

1. Per-call cost of ``vocoder(mel, seed=0)`` on 1, 2 and 5 s of a synthetic speech-like signal
   (median of ``--repeats`` after a warm-up), the real-time factor of each, and the fixed cost per
   call: the intercept of a least-squares line through (seconds, time).
2. Where a call's time goes: cProfile of ``--profile-seconds`` (1 s and 5 s) calls, cumulative
   time of the pieces (network evaluations, the refinement's mel matching and Griffin-Lim, the
   inverse STFT, conditioning, positional noise, the mel hash, input checks) as shares of the call.
3. Batch throughput: 16 utterances of 2 s as 16 calls, as one ``[16, n_mels, frames]`` call, and
   streamed (:meth:`Vocoder.stream`, pieces of 7 frames): audio seconds per second.
4. Streaming 5 s: how much mel has arrived when the first audio comes, and the stream's cost.

    python benchmarks/serving_speed.py [--threads 1] [--model small-speech] [--repeats 5]

The machine the numbers come from matters: quote the load average printed with them.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Functions whose cumulative time the profile reports, as (label, file suffix, function name).
PIECES = [
    ("network (denoiser calls)", "diffusion.py", "forward"),
    ("refinement: whole", "consistency.py", "refine_spectrum"),
    ("refinement: mel matching", "consistency.py", "match_mel"),
    ("refinement: Griffin-Lim", "consistency.py", "griffin_lim_phase"),
    ("inverse STFT windows", "stft.py", "profile_istft_window"),
    ("STFT windows", "stft.py", "profile_stft_window"),
    ("prior std (mel envelope)", "domains.py", "prior_std"),
    ("conditioning (prepare)", "synthesis.py", "prepare_window"),
    ("positional noise", "noise.py", "positional_noise"),
    ("mel hash (noise key)", "seeds.py", "item_key"),
    ("input checks", "mel_checks.py", "check_mel"),
]


def speech_like(seconds: float, sample_rate: int = 22050, seed: int = 0) -> np.ndarray:
    """Harmonics over a gliding f0 with a syllable-rate envelope and a little noise, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 16))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    x = 0.15 * x * envelope + 0.005 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def profile_shares(fn) -> tuple[float, list[tuple[str, float]]]:
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.runcall(fn)
    total = time.perf_counter() - t
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    shares = []
    for label, suffix, name in PIECES:
        ct = sum(v[3] for (f, _, n), v in stats.items() if f.endswith(suffix) and n == name)
        # Recursive/nested entries of the same function count once: cProfile's ct already does.
        shares.append((label, ct))
    return total, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="small-speech")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batch-seconds", type=float, default=2.0)
    args = parser.parse_args()

    from audiodiff.cli import own_process_defaults

    own_process_defaults()
    import torch

    from audiodiff.vocoder import Vocoder

    torch.set_num_threads(args.threads)
    voc = Vocoder.from_pretrained(args.model)
    sr = voc.sample_rate
    print(f"{args.model}: {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}, "
          f"lookahead {voc.lookahead_frames} frames = {voc.lookahead_ms:.0f} ms")  # fmt: skip
    mels = {s: voc.mel(speech_like(s, sr, seed=i), sr) for i, s in enumerate((1.0, 2.0, 5.0))}
    voc(mels[1.0], seed=0)  # warm-up

    print("\n1. per call")
    rows = []
    for s, mel in mels.items():
        t = median_time(lambda mel=mel: voc(mel, seed=0), args.repeats)
        rows.append((s, t))
        print(f"   {s:3.0f} s: {t * 1000:7.1f} ms  RTF {t / s:.3f}")
    xs, ys = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    slope, intercept = np.polyfit(xs, ys, 1)
    print(f"   fixed cost per call {intercept * 1000:.1f} ms, {slope * 1000:.1f} ms per audio s")

    print("\n2. where the time goes (cProfile, cumulative; pieces nest)")
    for s in (1.0, 5.0):
        total, shares = profile_shares(lambda s=s: voc(mels[s], seed=0))
        print(f"   {s:.0f} s call, {total * 1000:.0f} ms under the profiler:")
        for label, ct in shares:
            if ct > 0:
                print(f"     {label:<28} {ct * 1000:7.1f} ms {100 * ct / total:5.1f}%")

    print(f"\n3. batch: {args.batch} x {args.batch_seconds:g} s")
    batch = [voc.mel(speech_like(args.batch_seconds, sr, seed=10 + i), sr)
             for i in range(args.batch)]  # fmt: skip
    audio_s = args.batch * args.batch_seconds
    one_by_one = median_time(lambda: [voc(m, seed=0) for m in batch], max(1, args.repeats // 2))
    stacked = torch.cat(batch)
    as_batch = median_time(lambda: voc(stacked, seed=0), max(1, args.repeats // 2))

    def stream_all() -> None:
        for m in batch:
            pieces = (m[..., i : i + 7] for i in range(0, m.shape[-1], 7))
            for _ in voc.stream(pieces, seed=0):
                pass

    streamed = median_time(stream_all, 1)
    for label, t in (("16 calls", one_by_one), ("one batched call", as_batch),
                     ("16 streams (7-frame pieces)", streamed)):  # fmt: skip
        print(f"   {label:<28} {t:6.2f} s  {audio_s / t:6.1f} audio s per s")
    print(f"   batched / sequential speed-up: {one_by_one / as_batch:.2f}x")

    print("\n4. streaming 5 s in 7-frame pieces (default chunk_frames = the lookahead)")
    mel = mels[5.0]
    fed = [0]

    def pieces():
        for i in range(0, mel.shape[-1], 7):
            fed[0] = min(mel.shape[-1], i + 7)
            yield mel[..., i : i + 7]

    ms = 1000 * voc.hop_length / sr
    t = time.perf_counter()
    stream = voc.stream(pieces(), seed=0)
    first = next(stream)
    t_first, at = time.perf_counter() - t, fed[0]
    rest = list(stream)
    total = time.perf_counter() - t
    print(f"   first audio ({first.shape[-1] / sr * 1000:.0f} ms of it) after {at} of "
          f"{mel.shape[-1]} frames ({at * ms:.0f} of {mel.shape[-1] * ms:.0f} ms of mel), "
          f"{t_first * 1000:.0f} ms of compute; {1 + len(rest)} pieces, {total:.2f} s in all "
          f"(RTF {total / 5.0:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
