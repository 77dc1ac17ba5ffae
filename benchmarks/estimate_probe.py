"""Probe an estimate-start stft vocoder (``model.start: estimate``) on a folder of clips: the
network's one-step output and the DSP estimate it starts from, per estimate setting, and where
the phase comes from (issue 20's choices were made with it, on validation clips).

For every ``--setting NNLS:GL:SIGMA`` (the estimate's NNLS updates, its Griffin-Lim iterations,
the start sigma) it prints the mean MR-STFT, log-mel L1 and PESQ (eval extra) of the vocoded
clips and of the estimate alone; ``--swap`` adds the network's magnitude with the estimate's
phase and the estimate's magnitude with the network's phase. ``--set KEY=VALUE`` overrides the
model's stored config first (e.g. ``model.start=estimate`` probes a model trained from noise,
started from the estimate: the "no training" row of issue 20's note).

    python benchmarks/estimate_probe.py CLIPS MODEL [--setting 8:16:0.05 ...] [--swap]
        [--set model.start=estimate] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from audiodiff.audio import load_model_audio
from audiodiff.config_io import apply_overrides
from audiodiff.config_rules import validate
from audiodiff.domains import StftDomain
from audiodiff.evaluation import audio_files
from audiodiff.mel import MelSpectrogram
from audiodiff.metrics import log_mel_l1, mr_stft_distance, pesq_wb
from audiodiff.stft import profile_istft, profile_stft
from audiodiff.vocoder import Vocoder


def scores(ref: np.ndarray, out: torch.Tensor, mel_fn: MelSpectrogram, rate: int) -> list[float]:
    y = out.reshape(-1)[: len(ref)].double()
    x = torch.from_numpy(ref).double()
    return [float(mr_stft_distance(x, y)), float(log_mel_l1(x, y, mel_fn)),
            pesq_wb(ref, y.numpy(), rate)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", type=Path)
    parser.add_argument("model")
    parser.add_argument("--setting", action="append", default=[], help="NNLS:GL:SIGMA")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--swap", action="store_true")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    voc = Vocoder.from_pretrained(args.model)
    base = validate(apply_overrides(voc.config, args.overrides))
    rate = base.mel.sample_rate
    files = sorted(audio_files(args.clips, "clips").values())
    files = files[: args.limit] if args.limit else files
    clips = [load_model_audio(f, rate)[0].reshape(-1).numpy() for f in files]
    clips = [c[: len(c) // base.mel.hop_length * base.mel.hop_length] for c in clips]
    mel_fn = MelSpectrogram(base.mel).double()
    m = base.model
    settings = args.setting or [f"{m.estimate_nnls_iters}:{m.estimate_griffin_lim_iters}:"
                                f"{base.sample.start_sigma}"]  # fmt: skip
    for setting in settings:
        nnls, gl, sigma = setting.split(":")
        cfg = dataclasses.replace(
            base,
            model=dataclasses.replace(
                base.model, estimate_nnls_iters=int(nnls), estimate_griffin_lim_iters=int(gl)
            ),
            sample=dataclasses.replace(base.sample, start_sigma=float(sigma)),
        )
        voc.config, voc.domain = cfg, StftDomain(cfg)
        domain, stft_args = voc.domain, voc.domain._stft_args
        rows: dict[str, list[list[float]]] = {"network": [], "estimate alone": []}
        for clip in clips:
            with torch.inference_mode():
                mel = voc.mel(clip, rate)
                out = voc(mel, seed=0)
                estimate = domain._spectrum(domain.estimate(mel), mel)
            rows["network"].append(scores(clip, out, mel_fn, rate))
            rows["estimate alone"].append(
                scores(clip, profile_istft(estimate, **stft_args), mel_fn, rate)
            )
            if args.swap:
                net = profile_stft(out[:, 0], **stft_args)[..., : mel.shape[-1]]
                for name, spec in (
                    ("network magnitude, estimate phase", net.abs() * torch.sgn(estimate)),
                    ("estimate magnitude, network phase", estimate.abs() * torch.sgn(net)),
                ):
                    audio = profile_istft(spec, **stft_args)
                    rows.setdefault(name, []).append(scores(clip, audio, mel_fn, rate))
        for name, values in rows.items():
            mr, lm, pesq = np.mean(values, axis=0)
            head = f"nnls {nnls} gl {gl} sigma {sigma} | {name} | {len(values)} clips"
            print(f"{head} | MR-STFT {mr:.3f} | log-mel L1 {lm:.3f} | PESQ {pesq:.3f}", flush=True)


if __name__ == "__main__":
    main()
