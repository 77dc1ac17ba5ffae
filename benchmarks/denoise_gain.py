"""How much a trained model denoises, per noise level, against doing nothing (a learning probe).

For each ``sigma`` it adds noise to the clean diffused variable of held-out clips (the domain's
whitened ``x0``; fixed seed) and prints the mean squared error of the model's ``x0`` estimate
divided by that of the *trivial* estimate ``x / (1 + sigma^2)``, which is what a network that
outputs nothing gives (a v- or eps-network at its zero initialisation). A ratio of 1.000 means the
network has learned nothing at that level; a perfect denoiser of Gaussian data of unit variance
would also be near 1, so what lies below 1 is structure the network found. For stft models it also
prints the ratio of a parameter-free reference, the *consistency projection* of the trivial
estimate (inverse STFT then STFT), which removes the part of the noise that no real signal's STFT
can contain; in the compressed, whitened variable that projection is nonlinear, and the probe
shows how much (or how little) it is worth there.

    python benchmarks/denoise_gain.py MODEL CLIPS_DIR [--limit 8] [--frames 64]

MODEL is anything ``Vocoder.from_pretrained`` takes (run dir, checkpoint, export, shipped name).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from audiodiff.audio import load_audio
from audiodiff.diffusion import Denoiser
from audiodiff.evaluation import audio_files
from audiodiff.vocoder import Vocoder

SIGMAS = (0.03, 0.1, 0.3, 1.0, 3.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("clips", type=Path, help="folder of held-out speech")
    parser.add_argument("--limit", type=int, default=8, help="clips (the first N by name)")
    parser.add_argument("--frames", type=int, default=64, help="frames cut from each clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        voc = Vocoder.from_pretrained(args.model)
    except (ValueError, FileNotFoundError) as err:
        print(f"denoise_gain: error: {err}", file=sys.stderr)
        return 2
    hop, n = voc.hop_length, args.frames * voc.hop_length
    audio = []
    for _, path in sorted(audio_files(args.clips, "clips").items())[: args.limit]:
        x, _ = load_audio(path, voc.sample_rate)
        if x.shape[-1] >= n:
            audio.append(x.reshape(1, 1, -1)[..., :n])
    if not audio:
        print(f"denoise_gain: error: no clip of {n} samples under {args.clips}", file=sys.stderr)
        return 2
    audio = torch.cat(audio)
    mel = voc.mel(audio, voc.sample_rate)[..., : n // hop]
    domain = voc.domain
    with torch.inference_mode():
        x0 = domain.to_model(audio, mel)
        denoiser = Denoiser(voc.net, voc.schedule, target=voc.config.diffusion.target)
        prepared = denoiser.prepare(mel)
        gen = torch.Generator().manual_seed(args.seed)
        print(f"{args.model}: {audio.shape[0]} clips of {args.frames} frames, domain {domain.name}")
        # How well the prior whitens: the variance of x0 per channel, averaged over the lower and
        # upper half of the channels' bins (for stft, the real parts' bins; 1.0 = unit scale).
        var = x0.square().mean(dim=(0, 2))
        half = var.shape[0] // (4 if domain.name == "stft" else 2)
        print(
            f"whitened x0 variance: all {float(var.mean()):.3f}, lower bins "
            f"{float(var[:half].mean()):.3f}, upper bins {float(var[half : 2 * half].mean()):.3f}"
        )
        print("sigma    model/trivial" + ("  consistency/trivial" if domain.frame_rate else ""))
        for sigma in SIGMAS:
            x = x0 + sigma * torch.randn(x0.shape, generator=gen)
            trivial = float((x / (1 + sigma**2) - x0).square().mean())
            model = float((denoiser(x, torch.tensor(sigma), prepared) - x0).square().mean())
            line = f"{sigma:<8g} {model / trivial:13.3f}"
            if domain.frame_rate:
                shrunk = x / (1 + sigma**2)
                projected = domain.to_model(domain.from_model(shrunk, mel), mel)
                line += f"  {float((projected - x0).square().mean()) / trivial:19.3f}"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
