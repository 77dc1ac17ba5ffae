"""A quick copy-synthesis probe of checkpoints during training (minutes, not the full benchmark).

Takes every ``--every``-th clip of a held-out folder (at most ``--limit``, each cut to its first
``--seconds``), computes its mel in each model's profile, vocodes it (seed 0) and prints the mean
MR-STFT and log-mel L1 against the clip, per model and per sampling setting. It is how the
comparisons of issue 13 were made between runs at equal steps (ConvNeXt vs DiffWave, mel loss on
and off, PriorGrad vs the plain prior); ``benchmarks/vocoder_quality.py`` is the full measurement
(every clip, whole length, PESQ/STOI/MOS, Griffin-Lim in the same run).

Usage::

    python benchmarks/copy_synthesis_probe.py CLIPS_DIR MODEL [MODEL ...]
        [--setting ddim:1] [--setting ddim:2:31.62,0.2512] [--every 3 --limit 8 --seconds 3]

A setting is ``SAMPLER:STEPS`` or ``SAMPLER:STEPS:SIGMA,SIGMA,...`` (explicit noise levels, most
noise first, as a searched schedule stores them); without ``--setting`` each model samples with
its own defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from audiodiff.audio import load_audio
from audiodiff.evaluation import audio_files
from audiodiff.mel import MelSpectrogram
from audiodiff.metrics import log_mel_l1, mr_stft_distance
from audiodiff.vocoder import Vocoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    found = audio_files(Path(args.clips), "clips")
    files = [found[name] for name in sorted(found)][:: args.every][: args.limit]
    for model in args.models:
        voc = Vocoder.from_pretrained(model)
        mel_fn = MelSpectrogram(voc.config.mel)
        clips = []
        for f in files:
            x, _ = load_audio(f, voc.sample_rate)
            x = torch.as_tensor(x).float().reshape(-1)[: int(voc.sample_rate * args.seconds)]
            clips.append((x, voc.mel(x, voc.sample_rate)))
        sample = voc.config.sample
        for setting in args.setting or [f"{sample.sampler}:{sample.steps}"]:
            sampler, steps, *sigmas = setting.split(":")
            sample.sampler, sample.steps = sampler, int(steps)
            sample.sigmas = [float(s) for s in sigmas[0].split(",")] if sigmas else []
            mr = lm = 0.0
            for x, mel in clips:
                y = voc(mel, seed=0)[0, 0]
                n = min(len(x), len(y))
                mr += float(mr_stft_distance(x[:n], y[:n]))
                lm += float(log_mel_l1(x[:n], y[:n], mel_fn))
            print(
                f"{model} | {setting} | {len(clips)} clips | MR-STFT {mr / len(clips):.3f} | "
                f"log-mel L1 {lm / len(clips):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
