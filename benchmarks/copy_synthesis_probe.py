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
        [--refine 16,32 --refine 0,0] [--perceptual] [--griffin-lim]

A setting is ``SAMPLER:STEPS`` or ``SAMPLER:STEPS:SIGMA,SIGMA,...`` (explicit noise levels, most
noise first, as a searched schedule stores them); without ``--setting`` each model samples with
its own defaults. ``--refine MEL_MATCH,GRIFFIN_LIM[,BLEND[,MOMENTUM]]`` (stft models,
repeatable) tries that refinement (:class:`audiodiff.consistency.Refinement`; BLEND the
magnitude blend, 1 the network's) with every setting; without it each model refines as its
config says.
``--perceptual`` adds DistillMOS and DNSMOS P.808 (slow: ~1 s a clip); ``--griffin-lim`` adds a
Griffin-Lim (64 iterations) row of the first model's profile.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from audiodiff.audio import load_audio
from audiodiff.evaluation import audio_files
from audiodiff.griffin_lim import griffin_lim
from audiodiff.mel import MelSpectrogram
from audiodiff.metrics import log_mel_l1, mr_stft_distance
from audiodiff.vocoder import Vocoder


def _scores(x: torch.Tensor, y: torch.Tensor, mel_fn: MelSpectrogram, scorer) -> list[float]:
    """MR-STFT, log-mel L1 (and DistillMOS, DNSMOS with a scorer) of ``y`` against clip ``x``."""
    n = min(len(x), len(y))
    out = [float(mr_stft_distance(x[:n], y[:n])), float(log_mel_l1(x[:n], y[:n], mel_fn))]
    if scorer is not None:
        out += [scorer.distillmos(y[:n], mel_fn.cfg.sample_rate),
                scorer.dnsmos_p808(y[:n], mel_fn.cfg.sample_rate)]  # fmt: skip
    return out


def _report(name: str, setting: str, rows: list[list[float]]) -> None:
    keys = ["MR-STFT", "log-mel L1", "DistillMOS", "DNSMOS"]
    means = [sum(col) / len(rows) for col in zip(*rows, strict=True)]
    text = " | ".join(f"{k} {v:.3f}" for k, v in zip(keys, means, strict=False))
    print(f"{name} | {setting} | {len(rows)} clips | {text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--refine", action="append", default=[])
    parser.add_argument("--perceptual", action="store_true")
    parser.add_argument("--griffin-lim", action="store_true")
    args = parser.parse_args()
    refines = [r.split(",") for r in args.refine] or [None]
    scorer = None
    if args.perceptual:
        from audiodiff.perceptual import PerceptualScorer

        scorer = PerceptualScorer()
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
            for refine in refines:
                if refine is not None:
                    sample.mel_match_iters, sample.griffin_lim_iters = map(int, refine[:2])
                    if len(refine) > 2:
                        sample.magnitude_blend = float(refine[2])
                    if len(refine) > 3:
                        sample.griffin_lim_momentum = float(refine[3])
                rows = []
                for x, mel in clips:
                    y = voc(mel, seed=0)
                    rows.append(_scores(x, y[0, 0], mel_fn, scorer))
                label = setting if refine is None else f"{setting} refine {','.join(refine)}"
                _report(model, label, rows)
        if args.griffin_lim and model == args.models[0]:
            rows = [_scores(x, griffin_lim(mel[0], voc.config.mel), mel_fn, scorer)
                    for x, mel in clips]  # fmt: skip
            _report("griffin-lim", "64 iterations", rows)


if __name__ == "__main__":
    main()
