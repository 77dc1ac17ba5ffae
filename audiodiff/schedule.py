"""Noise schedules: betas, alpha_bar, sigma, the t <-> sigma maps, and sampling discretisations.

Notation (see the glossary in ``diffusion.py``): a training table of ``T`` rows indexed
``t = 0 .. T-1``; ``alpha_bar[t] = prod_{i <= t} (1 - betas[i])`` (so row 0 already holds one step
of noise, as in lmnt-com/diffwave); ``sigma[t] = sqrt((1 - alpha_bar[t]) / alpha_bar[t])``, the
noise-to-signal ratio of the variance-exploding (VE) form ``x = x0 + sigma * eps`` that the samplers
work in. ``sigma`` increases with ``t``.

Every sampling discretisation is a **descending** float64 tensor of sigmas ending in an exact 0
(``[steps + 1]``): a sampler takes ``steps`` network calls, one per adjacent pair.

Fractional steps. The network's noise input is a (fractional) training-step index, so a sampler's
sigma must be mapped to a ``t`` in ``[0, T-1]`` by interpolating between table rows:

* ``"diffwave"``: linear in ``sqrt(alpha_bar)`` between neighbouring rows, exactly the "twiddle" of
  lmnt-com/diffwave's fast inference (``t + (sqrt(ab[t]) - sqrt(ab_s)) / (sqrt(ab[t]) -
  sqrt(ab[t+1]))``), so DiffWave's fast sampler is reproduced;
* ``"log-sigma"``: linear in ``log sigma``, the natural scale of the VE samplers.

Both agree on integer rows. **Clamping rule**: a sigma below ``sigma[0]`` maps to ``t = 0`` and a
sigma above ``sigma[T-1]`` to ``t = T-1`` -- the nearest step the network was trained on (its step
embedding has no rows outside the table); the denoiser still scales its input by the true sigma.
lmnt's loop instead silently drops such a step (and then indexes past the end), which is what
happens when DiffWave's LARGE fast schedule (terminal alpha_bar 0.225) meets the T = 50 table
(terminal alpha_bar 0.276).
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from audiodiff.config import DiffusionConfig

TMapping = Literal["diffwave", "log-sigma"]

# DiffWave's 6-step fast-inference beta schedules (Kong et al. 2021, §4 / Appendix): BASE is the
# one lmnt-com/diffwave ships; LARGE was used with the T = 200 models. Read-only.
DIFFWAVE_FAST_BETAS: Mapping[str, tuple[float, ...]] = types.MappingProxyType(
    {
        "base": (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5),
        "large": (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.7),
    }
)

# Terminal alpha_bar of the "linear-zsnr" schedule. Lin et al. (2024) rescale to exactly 0, which
# makes sigma_max infinite: the VE samplers cannot start there, and with an eps target the x0
# estimate x - sigma * eps_hat is undefined. 1e-4 keeps sqrt(alpha_bar_T) = 0.01, i.e. the clean
# signal sits 40 dB below the noise at the last step (DiffWave's T = 50 table: 5.6 dB), so the
# N(0, I) start matches the training marginal to within ~1e-4 of the data energy, while
# sigma_max ~ 100 keeps the float32 cancellation error of x - sigma * eps_hat at ~1e-5, below the
# 16-bit quantisation step (3e-5).
ZSNR_TERMINAL_ALPHA_BAR = 1e-4


def _as_float64_betas(betas: Tensor | Sequence[float]) -> Tensor:
    b = torch.as_tensor(betas, dtype=torch.float64).detach().clone().cpu()
    if b.ndim != 1 or b.numel() < 1:
        raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {tuple(b.shape)}")
    if not bool(torch.all((b > 0) & (b < 1))):
        raise ValueError(
            f"every beta must lie in (0, 1), got min {b.min().item()} and max {b.max().item()}"
        )
    return b


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


class NoiseSchedule:
    """A discrete DDPM noise schedule of ``T`` training steps, with its VE view.

    Args:
        betas: ``[T]`` per-step noise variances, each in (0, 1); stored as float64 on the CPU.
    """

    def __init__(self, betas: Tensor | Sequence[float]) -> None:
        self._betas = _as_float64_betas(betas)
        self._alpha_bar = torch.cumprod(1.0 - self._betas, dim=0)
        self._sigmas = torch.sqrt((1.0 - self._alpha_bar) / self._alpha_bar)
        if not bool(torch.all(self._sigmas[1:] > self._sigmas[:-1])):
            raise ValueError("sigmas must strictly increase with t (betas too small to resolve)")

    # ---------------------------------------------------------------- construction

    @classmethod
    def linear(cls, n_steps: int, beta_start: float, beta_end: float) -> NoiseSchedule:
        """Betas evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020; DiffWave)."""
        if n_steps < 1:
            raise ValueError(f"n_steps must be at least 1, got {n_steps}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(
                f"linear schedule needs 0 < beta_start <= beta_end < 1, got beta_start "
                f"{beta_start} and beta_end {beta_end}"
            )
        return cls(torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64))

    @classmethod
    def diffwave_vocoder(cls) -> NoiseSchedule:
        """DiffWave's vocoder table: T = 50, betas linear 1e-4 -> 0.05 (alpha_bar_T ~ 0.276)."""
        return cls.linear(50, 1e-4, 0.05)

    @classmethod
    def diffwave_unconditional(cls) -> NoiseSchedule:
        """DiffWave's unconditional / class-conditional table: T = 200, betas 1e-4 -> 0.02."""
        return cls.linear(200, 1e-4, 0.02)

    @classmethod
    def cosine(cls, n_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Cosine alpha_bar (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17).

        ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos((t / T + offset) / (1 + offset) * pi / 2)^2``
        for table row ``t`` at time ``(t + 1) / T``; betas clipped at ``max_beta`` as in the paper,
        which keeps the last sigma finite.
        """
        if n_steps < 1:
            raise ValueError(f"n_steps must be at least 1, got {n_steps}")
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
        u = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
        f = torch.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        return cls(betas)

    @classmethod
    def linear_zsnr(
        cls,
        n_steps: int,
        beta_start: float,
        beta_end: float,
        terminal_alpha_bar: float = ZSNR_TERMINAL_ALPHA_BAR,
    ) -> NoiseSchedule:
        """The linear schedule rescaled to (near) zero terminal SNR (Lin et al. 2024, Alg. 1).

        ``sqrt(alpha_bar)`` is shifted and scaled so that row 0 is unchanged and row ``T-1``
        becomes ``sqrt(terminal_alpha_bar)`` instead of 0 (why not 0: see
        ``ZSNR_TERMINAL_ALPHA_BAR``).
        """
        base = cls.linear(n_steps, beta_start, beta_end)
        if n_steps < 2:
            raise ValueError(f"linear-zsnr needs at least 2 steps, got {n_steps}")
        root = base._alpha_bar.sqrt()
        first, last = root[0], root[-1]
        target = math.sqrt(terminal_alpha_bar)
        if not 0 < target < last:
            raise ValueError(
                f"terminal_alpha_bar {terminal_alpha_bar} must lie in (0, {last.item() ** 2}) "
                "(the linear schedule's own terminal alpha_bar)"
            )
        root = target + (root - last) * (first - target) / (first - last)
        alpha_bar = root**2
        prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        return cls(1 - alpha_bar / prev)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> NoiseSchedule:
        """The training table named by ``cfg.schedule`` with ``cfg.n_steps`` steps."""
        if cfg.schedule == "linear":
            return cls.linear(cfg.n_steps, cfg.beta_start, cfg.beta_end)
        if cfg.schedule == "cosine":
            return cls.cosine(cfg.n_steps)
        if cfg.schedule == "linear-zsnr":
            return cls.linear_zsnr(cfg.n_steps, cfg.beta_start, cfg.beta_end)
        raise ValueError(
            f"unknown diffusion.schedule {cfg.schedule!r}; expected 'linear', 'cosine' or "
            "'linear-zsnr'"
        )

    # ---------------------------------------------------------------- tables

    @property
    def n_steps(self) -> int:
        """``T``, the number of training steps."""
        return int(self._betas.numel())

    @property
    def betas(self) -> Tensor:
        """``[T]`` float64 copy of the betas."""
        return self._betas.clone()

    @property
    def alpha_bar(self) -> Tensor:
        """``[T]`` float64 cumulative products of ``1 - beta``, decreasing."""
        return self._alpha_bar.clone()

    @property
    def sigmas(self) -> Tensor:
        """``[T]`` float64 VE noise levels ``sqrt((1 - alpha_bar) / alpha_bar)``, increasing."""
        return self._sigmas.clone()

    @property
    def sigma_min(self) -> float:
        """``sigma[0]``, the least noise the network was trained on."""
        return float(self._sigmas[0])

    @property
    def sigma_max(self) -> float:
        """``sigma[T-1]``, the most noise the network was trained on."""
        return float(self._sigmas[-1])

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(T={self.n_steps}, sigma_min={self.sigma_min:.4g}, "
            f"sigma_max={self.sigma_max:.4g})"
        )

    # ---------------------------------------------------------------- t <-> sigma

    @staticmethod
    def _check_mapping(t_mapping: str) -> None:
        if t_mapping not in ("diffwave", "log-sigma"):
            raise ValueError(f"unknown t_mapping {t_mapping!r}; expected 'diffwave' or 'log-sigma'")

    def t_to_sigma(self, t: Tensor | float, t_mapping: TMapping = "diffwave") -> Tensor:
        """Noise level of a fractional step index; the inverse of ``sigma_to_t``.

        Args:
            t: any shape; clamped to ``[0, T-1]``.
            t_mapping: how to interpolate between rows (module docstring).

        Returns:
            float64 tensor, shape of ``t``, on ``t``'s device.
        """
        self._check_mapping(t_mapping)
        t = torch.as_tensor(t, dtype=torch.float64)
        sigmas = self._sigmas.to(t.device)
        if self.n_steps == 1:
            return sigmas[0].expand(t.shape).clone()
        t = t.clamp(0, self.n_steps - 1)
        low = t.floor().long().clamp(max=self.n_steps - 2)
        frac = t - low
        if t_mapping == "diffwave":
            root = self._alpha_bar.to(t.device).sqrt()
            r = root[low] + frac * (root[low + 1] - root[low])
            return torch.sqrt(1 - r * r) / r
        log_s = sigmas.log()
        return torch.exp(log_s[low] + frac * (log_s[low + 1] - log_s[low]))

    def sigma_to_t(self, sigma: Tensor | float, t_mapping: TMapping = "diffwave") -> Tensor:
        """Fractional training-step index of a noise level, clamped to ``[0, T-1]``.

        Args:
            sigma: any shape, non-negative.
            t_mapping: ``"diffwave"`` (linear in ``sqrt(alpha_bar)``, lmnt's twiddle) or
                ``"log-sigma"`` (linear in ``log sigma``).

        Returns:
            float64 tensor, shape of ``sigma``, on ``sigma``'s device.
        """
        self._check_mapping(t_mapping)
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if self.n_steps == 1:
            return torch.zeros_like(sigma)
        sigmas = self._sigmas.to(sigma.device)
        # Row `low` is the last one whose sigma <= the query; clamping keeps the pair inside the
        # table and the clamp of `frac` below implements the documented out-of-range rule.
        low = (torch.searchsorted(sigmas, sigma.contiguous(), right=True) - 1).clamp(
            0, self.n_steps - 2
        )
        if t_mapping == "diffwave":
            root = self._alpha_bar.to(sigma.device).sqrt()
            r = torch.rsqrt(1 + sigma * sigma)
            frac = (root[low] - r) / (root[low] - root[low + 1])
        else:
            log_s = sigmas.log()
            frac = (sigma.log() - log_s[low]) / (log_s[low + 1] - log_s[low])
        return low + frac.clamp(0, 1)

    # ---------------------------------------------------------------- discretisations

    def training_sigmas(self) -> Tensor:
        """Every training step, most noise first: ``[T + 1]`` descending, ending in 0 (DDPM)."""
        return _append_zero(self._sigmas.flip(0))

    def uniform_sigmas(self, steps: int) -> Tensor:
        """``steps`` evenly spaced training rows from ``T-1`` down to 0 (DDIM-style "trailing"
        spacing: the last row is always visited, Lin et al. 2024 §3.3); ``[steps + 1]``.

        Raises:
            ValueError: ``steps`` outside ``[1, T]``.
        """
        if not 1 <= steps <= self.n_steps:
            raise ValueError(
                f"uniform spacing needs 1 <= steps <= T, got steps {steps} and T {self.n_steps}"
            )
        rows = torch.linspace(self.n_steps - 1, 0, steps, dtype=torch.float64).round().long()
        return _append_zero(self._sigmas[rows])

    def karras_sigmas(self, steps: int, rho: float = 7.0) -> Tensor:
        """``karras_sigmas(steps, sigma_min, sigma_max, rho)`` over this table's sigma range."""
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, rho)

    def diffwave_fast_sigmas(self, steps: int) -> Tensor:
        """DiffWave's fast schedule for this table: ``sigmas_from_betas`` of the fitting
        ``DIFFWAVE_FAST_BETAS`` preset (:func:`diffwave_fast_preset`), fixed at its 6 steps.

        Raises:
            ValueError: ``steps`` is not the preset's step count.
        """
        preset = diffwave_fast_preset(self)
        n = len(DIFFWAVE_FAST_BETAS[preset])
        if steps < 1:  # not a schedule question: no sampler takes 0 steps
            raise ValueError(f"steps must be at least 1 (one network evaluation each), got {steps}")
        if steps != n:
            raise ValueError(
                f"diffwave-fast has a fixed {n}-step schedule but steps is {steps}; use 'ddim' "
                "or 'dpmpp-2m' for other step counts"
            )
        return sigmas_from_betas(DIFFWAVE_FAST_BETAS[preset])


def sigmas_from_betas(betas: Sequence[float] | Tensor) -> Tensor:
    """Noise levels of an inference beta schedule (DiffWave fast sampling, Kong et al. 2021).

    Args:
        betas: ``[S]`` inference betas in the order they were listed (least noise first), e.g.
            ``DIFFWAVE_FAST_BETAS["base"]``.

    Returns:
        ``[S + 1]`` float64, ``sqrt((1 - gamma_s) / gamma_s)`` for ``gamma = cumprod(1 - betas)``,
        most noise first, ending in 0.
    """
    b = _as_float64_betas(betas)
    gamma = torch.cumprod(1.0 - b, dim=0)
    return _append_zero(torch.sqrt((1.0 - gamma) / gamma).flip(0))


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """``steps`` sigmas evenly spaced in ``sigma^(1/rho)`` (Karras et al. 2022, eq. 5).

    Returns:
        ``[steps + 1]`` float64, from ``sigma_max`` down to ``sigma_min``, then 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(
            f"karras sigmas need 0 < sigma_min <= sigma_max, got sigma_min {sigma_min} and "
            f"sigma_max {sigma_max}"
        )
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    if steps > 1 and sigma_min == sigma_max:
        raise ValueError(f"{steps} steps need sigma_min < sigma_max, both are {sigma_min}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def diffwave_fast_preset(schedule: NoiseSchedule) -> str:
    """The DiffWave fast schedule meant for a training table: the one reaching most noise while
    staying inside the table (``"base"`` for T = 50 / 1e-4..0.05, ``"large"`` for T = 200 /
    1e-4..0.02, as in the paper); ``"base"`` if none fits."""
    best, best_gamma = "base", math.inf
    for name, betas in DIFFWAVE_FAST_BETAS.items():
        gamma = math.prod(1 - b for b in betas)
        if gamma >= float(schedule._alpha_bar[-1]) and gamma < best_gamma:
            best, best_gamma = name, gamma
    return best


def stored_sigmas(stored: Sequence[float]) -> Tensor:
    """A stored (searched) schedule as sampler sigmas: sorted descending, 0 appended.

    Returns:
        ``[n + 1]`` float64, descending, ending in 0.

    Raises:
        ValueError: non-finite, non-positive or repeated sigmas.
    """
    s = torch.as_tensor(list(stored), dtype=torch.float64)
    if s.ndim != 1 or not bool(torch.all(torch.isfinite(s) & (s > 0))):
        raise ValueError(f"a stored schedule needs finite positive sigmas, got {list(stored)}")
    s = s.sort(descending=True).values
    if bool(torch.any(s[1:] == s[:-1])):
        raise ValueError(f"a stored schedule needs distinct sigmas, got {list(stored)}")
    return _append_zero(s)
