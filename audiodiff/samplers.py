"""Samplers: plain functions over a denoiser ``D(x, sigma, **extra) -> x0_hat``.

They work in the variance-exploding form ``x = x0 + sigma * eps`` and import nothing else of
audiodiff (DESIGN.md §3): the training parametrisation is the ``Denoiser``'s business.

Common contract of every ``sample_NAME(denoiser, x, sigmas, *, extra, generator, callback,
noise_sampler, ...)``:

* ``x``: ``[B, ...]`` the start, already at noise level ``sigmas[0]`` (e.g. ``prior_std(sigmas[0])
  * N(0, I)``);
* ``sigmas``: 1-D, strictly descending, positive except the last entry, which is 0;
* exactly ``len(sigmas) - 1`` denoiser calls, one per step; nothing survives the call;
* fresh noise (ancestral steps only) comes from ``noise_sampler(step_index, x)`` when given (e.g.
  position-keyed noise, so chunked long-form synthesis equals whole-utterance synthesis), else from
  ``torch.randn(..., generator=generator)``; a stochastic sampler without either is an error,
  because randomness must be explicit;
* ``callback({"i", "x", "sigma", "sigma_next", "denoised"})`` after each denoiser call.

The ancestral step (``sample_ddpm``) is DDIM with ``eta = 1``. In VP terms DDIM (Song et al. 2021,
eq. 12) adds noise of variance ``eta^2 * (1 - ab') / (1 - ab) * (1 - ab / ab')``, which at
``eta = 1`` is the DDPM posterior variance ``beta_tilde`` (Ho et al. 2020, eq. 7) and whose mean is
then the DDPM posterior mean with ``x0_hat`` plugged in. Dividing by ``sqrt(ab')`` (VE form,
``sigma^2 = (1 - ab) / ab``) the same step reads ``sigma_up^2 = sigma'^2 (sigma^2 - sigma'^2) /
sigma^2``, ``sigma_down = sqrt(sigma'^2 - sigma_up^2)``, ``x' = x0_hat + sigma_down / sigma * (x -
x0_hat) + sigma_up * z`` -- every alpha_bar cancels, so the step depends on the sigmas alone. The
test suite checks it against a literal transcription of DiffWave's Algorithm 2.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

DenoiserFn = Callable[..., Tensor]
NoiseSampler = Callable[[int, Tensor], Tensor]
Callback = Callable[[dict[str, Any]], None]


def _check_sigmas(sigmas: Tensor) -> list[float]:
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got {tuple(sigmas.shape)}")
    values = [float(s) for s in sigmas]
    if values[-1] != 0:
        raise ValueError(f"sigmas must end in 0, got last sigma {values[-1]}")
    if any(not math.isfinite(s) for s in values) or any(s <= 0 for s in values[:-1]):
        raise ValueError(f"sigmas must be finite and positive before the final 0, got {values}")
    if any(a <= b for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"sigmas must strictly descend, got {values}")
    return values


def _noise(
    i: int, x: Tensor, generator: torch.Generator | None, noise_sampler: NoiseSampler | None
) -> Tensor:
    if noise_sampler is not None:
        z = noise_sampler(i, x)
        if z.shape != x.shape:
            raise ValueError(
                f"noise_sampler returned shape {tuple(z.shape)} for x of shape {tuple(x.shape)}"
            )
        return z.to(x.dtype)
    if generator is None:
        raise ValueError("a stochastic sampler needs a torch.Generator or a noise_sampler")
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _denoise(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    i: int,
    extra: dict[str, Any],
    callback: Callback | None,
) -> Tensor:
    """Step ``i``'s one denoiser call, reported to ``callback`` (the common contract)."""
    denoised = denoiser(x, sigmas[i], **extra)
    if callback is not None:
        callback(
            {
                "i": i,
                "x": x,
                "sigma": float(sigmas[i]),
                "sigma_next": float(sigmas[i + 1]),
                "denoised": denoised,
            }
        )
    return denoised


def ddim_step_scales(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """``(sigma_down, sigma_up)`` of one DDIM step from ``sigma`` to ``sigma_next > 0``.

    The step is ``x' = x0_hat + sigma_down / sigma * (x - x0_hat) + sigma_up * z`` with
    ``sigma_up = eta sigma' sqrt(1 - sigma'^2 / sigma^2)`` and ``sigma_down = sqrt(sigma'^2 -
    sigma_up^2)`` (module docstring); exporters hand these two numbers to runtimes without torch.
    """
    # sigma_up <= sigma_next for eta <= 1, so sigma_down is real.
    sigma_up = eta * sigma_next * math.sqrt(1 - (sigma_next / sigma) ** 2)
    sigma_down = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


def sample_ddim(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models"), in VE form.

    ``eta = 0`` is deterministic (the Euler step of the probability-flow ODE in sigma); ``eta = 1``
    is the DDPM ancestral step. See the module docstring for the common arguments.

    Args:
        eta: stochasticity in ``[0, 1]``.

    Returns:
        ``x`` at sigma 0, shape of the input.
    """
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    values = _check_sigmas(sigmas)
    extra = {} if extra is None else extra
    for i in range(len(values) - 1):
        sigma, sigma_next = values[i], values[i + 1]
        denoised = _denoise(denoiser, x, sigmas, i, extra, callback)
        if sigma_next == 0:
            x = denoised
            continue
        sigma_down, sigma_up = ddim_step_scales(sigma, sigma_next, eta)
        x = denoised + (sigma_down / sigma) * (x - denoised)
        if sigma_up > 0:
            x = x + sigma_up * _noise(i, x, generator, noise_sampler)
    return x


def sample_ddpm(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2; Kong et al. 2021, Alg. 2 over a fast schedule).

    The DDPM posterior step between consecutive sigmas, i.e. ``sample_ddim`` with ``eta = 1``
    (derivation in the module docstring). Over ``NoiseSchedule.training_sigmas()`` it is plain
    DDPM; over ``sigmas_from_betas(DIFFWAVE_FAST_BETAS["base"])`` with the ``"diffwave"`` t
    mapping it is DiffWave's fast sampler (without lmnt's per-step clamp to [-1, 1]).
    """
    return sample_ddim(
        denoiser,
        x,
        sigmas,
        extra=extra,
        generator=generator,
        callback=callback,
        noise_sampler=noise_sampler,
        eta=1.0,
    )


def sample_dpmpp_2m(
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), deterministic multistep, in VE form.

    With ``lambda = -log sigma`` and ``h = lambda' - lambda``: ``x' = (sigma'/sigma) x -
    expm1(-h) * D``, where ``D`` is ``x0_hat`` on the first step (first order, no history yet) and
    ``(1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev`` with ``r = h_prev / h`` afterwards. The last step
    to sigma = 0 has ``h = inf`` and returns ``x0_hat`` (the limit of the update).
    ``generator`` and ``noise_sampler`` are accepted for a uniform signature and never used.
    """
    del generator, noise_sampler
    values = _check_sigmas(sigmas)
    extra = {} if extra is None else extra
    previous: Tensor | None = None
    h_previous = 0.0
    for i in range(len(values) - 1):
        sigma, sigma_next = values[i], values[i + 1]
        denoised = _denoise(denoiser, x, sigmas, i, extra, callback)
        if sigma_next == 0:
            x = denoised
            break
        h = math.log(sigma / sigma_next)
        if previous is None:
            direction = denoised
        else:
            r = h_previous / h
            direction = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (sigma_next / sigma) * x - math.expm1(-h) * direction
        previous, h_previous = denoised, h
    return x


def _uniform(table: Any, steps: int) -> Tensor:
    return table.uniform_sigmas(steps)


def _karras(table: Any, steps: int) -> Tensor:
    return table.karras_sigmas(steps)


def _diffwave_fast(table: Any, steps: int) -> Tensor:
    return table.diffwave_fast_sigmas(steps)


@dataclass(frozen=True)
class Sampler:
    """One row of :data:`SAMPLERS`: the function, its default discretisation and its eta.

    As in k-diffusion's sampling module, a sampler and the sigmas it runs on by default travel
    together, so no other module switches on sampler names.

    Attributes:
        fn: ``sample_NAME(denoiser, x, sigmas, *, extra, generator, callback, noise_sampler)``.
        discretisation: ``(noise table, steps) -> [steps + 1]`` descending sigmas ending in 0;
            the table is a :class:`~audiodiff.schedule.NoiseSchedule` (duck-typed here, since
            this module imports nothing of ours).
        eta: the step's fixed stochasticity (1 ancestral, 0 deterministic), or None when the
            caller's ``eta`` applies (``ddim``).
    """

    fn: Callable[..., Tensor]
    discretisation: Callable[[Any, int], Tensor]
    eta: float | None

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.fn(*args, **kwargs)


# CLI name -> sampler. "diffwave-fast" is the ancestral step; what makes it DiffWave's is its
# schedule (NoiseSchedule.diffwave_fast_sigmas) and its alignment (Denoiser t_mapping
# "diffwave"). "ddpm" over all T rows is plain DDPM; DPM-Solver++ takes Karras et al.'s sigmas.
SAMPLERS: Mapping[str, Sampler] = types.MappingProxyType(
    {
        "ddpm": Sampler(sample_ddpm, _uniform, eta=1.0),
        "diffwave-fast": Sampler(sample_ddpm, _diffwave_fast, eta=1.0),
        "ddim": Sampler(sample_ddim, _uniform, eta=None),
        "dpmpp-2m": Sampler(sample_dpmpp_2m, _karras, eta=0.0),
    }
)


def sample(
    name: str,
    denoiser: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    eta: float = 0.0,
    extra: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Run the sampler registered as ``name``; ``eta`` reaches only samplers without a fixed one
    (``"ddim"``)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    entry = SAMPLERS[name]
    kwargs: dict[str, Any] = {"eta": eta} if entry.eta is None else {}
    return entry(
        denoiser,
        x,
        sigmas,
        extra=extra,
        generator=generator,
        callback=callback,
        noise_sampler=noise_sampler,
        **kwargs,
    )
