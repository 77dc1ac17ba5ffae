"""Anti-wrapping phase losses between two complex spectrograms (APNet2's, without its network).

APNet / APNet2 (Ai & Ling 2023; Du et al. 2023) supervise a frame-rate vocoder's phase
explicitly with three losses, each the mean of the *anti-wrapped* difference
``f_AW(x) = |x - 2 pi round(x / 2 pi)|`` (the distance on the circle, so 2 pi apart counts as
equal):

* **instantaneous phase** (IP): ``f_AW(phi_gen - phi_ref)``;
* **group delay** (GD): ``f_AW(dF phi_gen - dF phi_ref)``, ``dF`` the difference between
  neighbouring frequency bins;
* **instantaneous angular frequency** (IAF): the same along time, ``dT`` between neighbouring
  frames (what drifts as pitch error when it is wrong).

Differences are taken as angles of complex products (``angle(a * conj(b))`` is ``phi_a -
phi_b`` already wrapped), so nothing is unwrapped. Unlike APNet2, each bin is weighted by the
reference's magnitude (normalised to mean 1 per example): the phase of a bin that holds no energy
is noise that no listener hears, and a network asked to copy it spends its capacity there. GD and
IAF weight a pair of bins by the smaller of their two magnitudes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Keeps angle() differentiable where a bin is exactly zero (its gradient is 1 / |z|).
_TINY = 1e-8


def anti_wrap(x: Tensor) -> Tensor:
    """``|x - 2 pi round(x / 2 pi)|``: the distance of an angle difference from 0 on the circle,
    in ``[0, pi]``."""
    return (x - 2 * math.pi * torch.round(x / (2 * math.pi))).abs()


def _angle(z: Tensor) -> Tensor:
    return torch.atan2(z.imag, z.real + _TINY)


def _weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """``[B, ...]`` values and weights -> ``[B]`` weighted mean."""
    w = weight.flatten(1)
    return (values.flatten(1) * w).sum(dim=1) / w.sum(dim=1).clamp_min(_TINY)


def phase_losses(gen: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The three anti-wrapping losses of ``gen``'s phase against ``ref``'s (module docstring).

    Args:
        gen: ``[B, n_freq, frames]`` complex spectrogram (differentiable).
        ref: ``[B, n_freq, frames]`` complex, the target (no gradient needed).

    Returns:
        ``(ip, gd, iaf)``, each ``[B]``, in radians, in ``[0, pi]``.

    Raises:
        ValueError: shapes differ or are not ``[B, F, T]``.
    """
    if gen.shape != ref.shape or gen.dim() != 3:
        raise ValueError(
            f"phase losses need two [B, n_freq, frames] spectrograms of one shape, got "
            f"{tuple(gen.shape)} and {tuple(ref.shape)}"
        )
    weight = ref.abs().detach()
    ip = _weighted_mean(anti_wrap(_angle(gen * ref.conj())), weight)

    def along(dim: int) -> Tensor:
        n = gen.shape[dim]
        a, b = (slice(1, n), slice(0, n - 1))
        idx_a = [slice(None)] * 3
        idx_b = [slice(None)] * 3
        idx_a[dim], idx_b[dim] = a, b
        d_gen = _angle(gen[tuple(idx_a)] * gen[tuple(idx_b)].conj())
        d_ref = _angle(ref[tuple(idx_a)] * ref[tuple(idx_b)].conj())
        w = torch.minimum(weight[tuple(idx_a)], weight[tuple(idx_b)])
        return _weighted_mean(anti_wrap(d_gen - d_ref), w)

    return ip, along(1), along(2)
