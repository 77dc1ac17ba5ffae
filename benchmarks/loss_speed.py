"""The two training-step savings of issue 13's throughput work, each against what it replaced,
measured in one run:

1. The multi-resolution STFT loss (``MR_STFT_RESOLUTIONS``), forward + backward, on a batch of
   ``--batch`` x ``--samples`` samples: its power spectra through
   :func:`audiodiff.power_spectrum.stft_power` (closed-form backward) against autograd through
   ``torch.stft`` and ``re^2 + im^2`` (the previous code, rebuilt here as the reference). The
   two losses' values and gradients are compared too.
2. One Adam step over the parameters of ``recipes/klettres/stft.yaml``'s network: the fused
   kernel the trainer uses against the plain (for-loop) one.

Median of ``--repeats`` after 2 warm-up calls, ``--threads`` threads; ratios are old / new.

    python benchmarks/loss_speed.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from audiodiff.config import MR_STFT_RESOLUTIONS
from audiodiff.config_io import load_config
from audiodiff.spectral_loss import STFT_POWER_FLOOR, mr_stft_terms
from audiodiff.subband import build_network

ROOT = Path(__file__).resolve().parent.parent


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def autograd_mr_stft(ref: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
    """The MR-STFT distance as it was computed before power_spectrum.py: autograd through the
    complex ``torch.stft``."""
    total = torch.zeros(ref.shape[0], dtype=ref.dtype)
    for n_fft, hop, win in MR_STFT_RESOLUTIONS:
        window = torch.hann_window(win, dtype=ref.dtype)

        def magnitude(x: torch.Tensor, n_fft=n_fft, hop=hop, win=win, window=window):
            spec = torch.stft(x, n_fft, hop, win, window, center=True, return_complex=True)
            return (spec.real**2 + spec.imag**2).clamp_min(STFT_POWER_FLOOR).sqrt()

        mag_r, mag_g = magnitude(ref), magnitude(gen)
        sc = (mag_r - mag_g).flatten(1).norm(dim=1) / mag_r.flatten(1).norm(dim=1)
        lm = (mag_r.log() - mag_g.log()).abs().flatten(1).mean(dim=1)
        total = total + sc + lm
    return total / len(MR_STFT_RESOLUTIONS)


def loss_part(args: argparse.Namespace) -> None:
    gen_ = torch.Generator().manual_seed(0)
    ref = 0.1 * torch.randn(args.batch, args.samples, generator=gen_)
    start = 0.1 * torch.randn(args.batch, args.samples, generator=gen_)

    def run(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        gen = start.clone().requires_grad_()
        loss = loss_fn(ref, gen).sum()
        loss.backward()
        return loss.detach(), gen.grad

    (v_old, g_old), (v_new, g_new) = run(autograd_mr_stft), run(mr_stft_terms)
    old = median_ms(lambda: run(autograd_mr_stft), args.repeats)
    new = median_ms(lambda: run(mr_stft_terms), args.repeats)
    print(
        f"MR-STFT loss fwd+bwd, {args.batch} x {args.samples} samples: torch.stft autograd "
        f"{old:.1f} ms, stft_power {new:.1f} ms: {old / new:.2f}x (value diff "
        f"{float((v_old - v_new).abs()):.1e}, max grad diff "
        f"{float((g_old - g_new).abs().max()):.1e} of max |grad| {float(g_old.abs().max()):.1e})"
    )


def adam_part(args: argparse.Namespace) -> None:
    cfg = load_config(ROOT / "recipes" / "klettres" / "stft.yaml", [])
    net = build_network(cfg, generator=torch.Generator().manual_seed(0))
    params = list(net.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    times = {}
    for name, fused in (("plain", False), ("fused", True)):
        opt = torch.optim.Adam(params, lr=1e-4, fused=fused)
        times[name] = median_ms(opt.step, args.repeats)
    n = sum(p.numel() for p in params)
    print(
        f"Adam step, {n / 1e6:.2f} M parameters (stft.yaml): plain {times['plain']:.1f} ms, "
        f"fused {times['fused']:.1f} ms: {times['plain'] / times['fused']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samples", type=int, default=16384)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"loss_speed: torch {torch.__version__}, {args.threads} threads of {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    loss_part(args)
    adam_part(args)


if __name__ == "__main__":
    main()
