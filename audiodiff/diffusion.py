"""Training objective and the ``Denoiser`` adapter between the network and the samplers.

Glossary (DESIGN.md §6; no letter is reused with another meaning):

* ``x0``: clean signal (waveform ``[B, 1, T]`` or mel ``[B, n_mels, F]``).
* ``x``: noisy signal. In training and inside the network it is the variance-preserving (VP) form
  ``x_vp = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps``; in the samplers it is the
  variance-exploding (VE) form ``x = x_vp / sqrt(alpha_bar) = x0 + sigma * eps``.
* ``eps``: standard Gaussian noise, same shape as ``x0``.
* ``t``: (possibly fractional) training-step index in ``[0, T-1]``.
* ``beta``: per-step noise variance; ``alpha_bar[t] = prod_{i <= t} (1 - beta[i])``.
* ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``: the VE noise scale used by samplers.
* ``v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0`` (Salimans & Ho 2022).

Parametrisation (DESIGN §11 open choice, decided): the network's noise input ``c_noise`` is the
**fractional training-step index** ``t``, obtained from sigma by interpolating over the training
table (``NoiseSchedule.sigma_to_t``). Why: it is what DiffWave's step embedding was trained on, so
imported lmnt-com/diffwave weights work unchanged and its fast sampler (whose "twiddle" alignment is
exactly such an interpolation) is reproduced bit for bit up to float rounding; a continuous
``log sigma`` input would need retraining for no gain at T <= 200. Only ``Denoiser`` knows this
choice: samplers see ``D(x, sigma) -> x0_hat`` and nothing else, so switching to ``log sigma`` later
touches this file alone.

The sampler's start: DiffWave draws ``x_vp ~ N(0, I)`` at its noisiest step; in VE space that is
``x = x_vp / sqrt(alpha_bar) ~ N(0, (1 + sigma_max^2) I)``, hence ``prior_std(sigma_max)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from audiodiff.schedule import NoiseSchedule, TMapping

Target = Literal["eps", "v", "residual"]
LossKind = Literal["l1", "l2"]


def _per_example(values: Tensor, like: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1, ..., 1]`` broadcastable against ``like``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """Forward diffusion ``x = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps`` (Ho et al. 2020).

    Args:
        x0: ``[B, ...]`` clean signal.
        eps: noise, shape of ``x0``.
        alpha_bar_t: ``[B]`` cumulative alpha of each example's step.

    Returns:
        ``[B, ...]`` noisy VP signal, dtype of ``x0``.
    """
    ab = _per_example(alpha_bar_t.to(device=x0.device, dtype=torch.float64), x0)
    return (ab.sqrt().to(x0.dtype) * x0) + ((1 - ab).sqrt().to(x0.dtype) * eps)


def training_target(x0: Tensor, eps: Tensor, alpha_bar_t: Tensor, target: Target) -> Tensor:
    """What the network learns to predict: ``eps``, or ``v`` (Salimans & Ho 2022).

    Args:
        x0, eps: ``[B, ...]``.
        alpha_bar_t: ``[B]``.
        target: ``"eps"`` or ``"v"``.
    """
    if target == "eps":
        return eps
    if target == "v":
        ab = _per_example(alpha_bar_t.to(device=x0.device, dtype=torch.float64), x0)
        return ab.sqrt().to(x0.dtype) * eps - (1 - ab).sqrt().to(x0.dtype) * x0
    raise ValueError(f"unknown target {target!r}; expected 'eps' or 'v'")


def training_loss(
    net: nn.Module,
    x0: Tensor,
    *,
    schedule: NoiseSchedule,
    cond: Tensor | None = None,
    label: Tensor | None = None,
    target: Target = "eps",
    loss: LossKind = "l1",
    generator: torch.Generator | None = None,
    label_dropout: float = 0.0,
    x0_loss: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Per-example DiffWave training loss (Kong et al. 2021, Algorithm 1), unreduced.

    Draws, in this order from ``generator`` (torch's default generator when ``None``):
    ``t ~ U{0..T-1}`` ``[B]``, ``eps ~ N(0, I)`` like ``x0``, and (only when ``label_dropout > 0``
    and labels are given) ``u ~ U[0, 1)`` ``[B]``; labels with ``u < label_dropout`` become
    ``net.null_label`` (classifier-free guidance training, Ho & Salimans 2022).

    Args:
        net: ``net(x, c_noise, cond=None, label=None) -> same shape as x``.
        x0: ``[B, C, L]`` clean signal.
        schedule: the training table.
        cond: ``[B, n_mels, frames]`` conditioning mel, or ``None``.
        label: ``[B]`` int64 class labels, or ``None``.
        target: ``"eps"`` or ``"v"``.
        loss: ``"l1"`` (lmnt-com/diffwave) or ``"l2"`` (the paper).
        label_dropout: probability of replacing a label by the null label.
        x0_loss: an auxiliary loss of the network's clean estimate, ``x0_hat [B, C, L] -> [B]``,
            added to the diffusion loss (the trainer's ``train.spectral_loss``). ``x0_hat`` is
            the prediction turned into the clean signal it implies: ``sqrt(ab) x - sqrt(1 - ab) v``
            (v), ``(x - sqrt(1 - ab) eps) / sqrt(ab)`` (eps; it amplifies the error by
            ``1 / sqrt(ab)`` at the noisiest steps, which is why v suits such losses better).

    Returns:
        ``[B]`` mean absolute / squared error of each example (plus ``x0_loss``).
    """
    if loss not in ("l1", "l2"):
        raise ValueError(f"unknown loss {loss!r}; expected 'l1' or 'l2'")
    if not 0 <= label_dropout < 1:
        raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
    batch = x0.shape[0]
    t = torch.randint(0, schedule.n_steps, (batch,), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if label is not None and label_dropout > 0:
        drop = torch.rand(batch, generator=generator, device=x0.device) < label_dropout
        label = torch.where(drop, torch.full_like(label, int(net.null_label)), label)
    alpha_bar_t = schedule.alpha_bar.to(x0.device)[t]
    x = add_noise(x0, eps, alpha_bar_t)
    prediction = net(x, t.to(x0.dtype), cond=cond, label=label)
    error = prediction - training_target(x0, eps, alpha_bar_t, target)
    error = error.abs() if loss == "l1" else error.square()
    per_example = error.reshape(batch, -1).mean(dim=1)
    if x0_loss is None:
        return per_example
    return per_example + x0_loss(clean_estimate(x, prediction, alpha_bar_t, target))


def start_training_loss(
    net: nn.Module,
    x0: Tensor,
    x_start: Tensor,
    *,
    schedule: NoiseSchedule,
    sigma_range: tuple[float, float],
    cond: Tensor | None = None,
    target: Target = "v",
    loss: LossKind = "l2",
    generator: torch.Generator | None = None,
    x0_loss: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Per-example loss for sampling that starts from an estimate, not from noise (SDEdit, Meng
    et al. 2022, trained for its own start as MelFlow and FreeV do), unreduced.

    The network sees ``x = x_start + sigma * eps`` (VE) at ``sigma`` drawn log-uniformly from
    ``sigma_range``, in the :class:`Denoiser`'s parametrisation (so sampling needs nothing new),
    and the loss is the error of the denoiser's clean estimate, ``|x0_hat - x0|``. Not the v
    (eps) loss: that weights the ``x0`` error by ``1 / c_out^2`` (``1 / sigma^2``), right when
    the corruption is the noise, but here most of it is the estimate's own error, which does not
    shrink with sigma, and the small sigmas would swamp the rest (measured: a loss of ~100 at
    the start of a fine-tune, against ~1 for the auxiliary losses). For the same reason
    ``target="residual"`` suits this start best: ``x0_hat = x + F``, where v's ``c_out = sigma /
    sqrt(1 + sigma^2)`` lets the network move the estimate by only ~sigma (0.05 at the sampling
    sigma) per unit of output.

    Draws, in this order from ``generator``: ``u ~ U[0, 1)`` ``[B]`` (the sigmas) and ``eps ~
    N(0, I)`` like ``x0``.

    Args:
        net: ``net(x, c_noise, cond=None) -> same shape as x``.
        x0: ``[B, C, L]`` clean (whitened) signal; ``x_start``: the estimate, same shape.
        schedule: the training table (sigma -> the network's fractional step index).
        sigma_range: ``(sigma_min, sigma_max)``, ``0 < sigma_min <= sigma_max``.
        cond, target, loss, x0_loss: as :func:`training_loss`.

    Returns:
        ``[B]``.
    """
    if loss not in ("l1", "l2"):
        raise ValueError(f"unknown loss {loss!r}; expected 'l1' or 'l2'")
    lo, hi = sigma_range
    if not 0 < lo <= hi:
        raise ValueError(f"sigma_range must satisfy 0 < min <= max, got {sigma_range}")
    batch = x0.shape[0]
    u = torch.rand(batch, generator=generator, device=x0.device, dtype=torch.float64)
    sigma = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x = x_start + _per_example(sigma.to(x0.dtype), x0) * eps
    # The sampler's own denoiser: training and sampling share one preconditioning.
    x0_hat = Denoiser(net, schedule, target=target)(x, sigma, cond)
    error = x0_hat - x0
    error = error.abs() if loss == "l1" else error.square()
    per_example = error.reshape(batch, -1).mean(dim=1)
    return per_example if x0_loss is None else per_example + x0_loss(x0_hat)


def clean_estimate(x: Tensor, prediction: Tensor, alpha_bar_t: Tensor, target: Target) -> Tensor:
    """The clean signal a prediction implies, from the VP noisy ``x`` (both ``[B, ...]``):
    ``sqrt(ab) x - sqrt(1 - ab) v`` or ``(x - sqrt(1 - ab) eps) / sqrt(ab)``."""
    ab = _per_example(alpha_bar_t.to(device=x.device, dtype=torch.float64), x)
    if target == "v":
        return ab.sqrt().to(x.dtype) * x - (1 - ab).sqrt().to(x.dtype) * prediction
    if target == "eps":
        return (x - (1 - ab).sqrt().to(x.dtype) * prediction) * ab.rsqrt().to(x.dtype)
    raise ValueError(f"unknown target {target!r}; expected 'eps' or 'v'")


def prior_std(sigma_max: float | Tensor) -> float | Tensor:
    """VE-space standard deviation of DiffWave's ``x_vp ~ N(0, I)`` start: ``sqrt(1 + sigma^2)``.

    A sampler starting at ``sigmas[0]`` takes ``x = prior_std(sigmas[0]) * N(0, I)``. (The true
    marginal there is ``N(0, sigma^2 + Var x0)``; the two agree when ``Var x0 = 1`` and differ
    little once ``sigma_max >> 1``, which is what a zero-terminal-SNR schedule buys.)
    """
    if isinstance(sigma_max, Tensor):
        return torch.sqrt(1 + sigma_max * sigma_max)
    return math.sqrt(1 + float(sigma_max) ** 2)


class Denoiser(nn.Module):
    """``D(x, sigma, cond) -> x0_hat``: a trained network seen from the VE samplers.

    Args:
        net: the DiffWave network (``net(x, c_noise, cond, label)``, ``net.prepare``,
            ``net.denoise_step``).
        schedule: the table the network was trained on.
        target: what the network predicts, ``"eps"`` or ``"v"``.
        t_mapping: sigma -> fractional step interpolation, ``"diffwave"`` (lmnt's alignment, the
            default so DiffWave's fast sampler is reproduced) or ``"log-sigma"``.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        *,
        target: Target = "eps",
        t_mapping: TMapping = "diffwave",
    ) -> None:
        super().__init__()
        if target not in ("eps", "v", "residual"):
            raise ValueError(f"unknown target {target!r}; expected 'eps', 'v' or 'residual'")
        if t_mapping not in ("diffwave", "log-sigma"):
            raise ValueError(f"unknown t_mapping {t_mapping!r}; expected 'diffwave' or 'log-sigma'")
        self.net = net
        self.schedule = schedule
        self.target = target
        self.t_mapping = t_mapping

    def prepare(self, cond: Tensor | None = None, label: Tensor | None = None) -> Any:
        """Step-invariant work, once per utterance: ``net.prepare(cond, label)``."""
        return self.net.prepare(cond, label)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Any = None) -> Tensor:
        """Estimate the clean signal.

        Args:
            x: ``[B, C, L]`` VE noisy signal ``x0 + sigma * eps``.
            sigma: scalar or ``[B]`` noise level(s), positive.
            cond: the result of ``prepare`` (fast path), a raw ``[B, n_mels, frames]`` mel (the
                network redoes the step-invariant work every call), or ``None`` (unconditional).

        Returns:
            ``[B, C, L]`` ``x0_hat``, dtype of ``x``.
        """
        sigma64 = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma64.ndim == 0:
            sigma64 = sigma64.expand(x.shape[0])
        if sigma64.shape != (x.shape[0],):
            raise ValueError(
                f"sigma must be a scalar or [B] = [{x.shape[0]}], got shape {tuple(sigma64.shape)}"
            )
        c_noise = self.schedule.sigma_to_t(sigma64, self.t_mapping).to(x.dtype)
        # Scale factors in float64, then cast: 1 + sigma^2 reaches 1e4 for near-zero-SNR tables.
        c_in = torch.rsqrt(1 + sigma64 * sigma64)
        x_vp = x * _per_example(c_in.to(x.dtype), x)
        if cond is None:
            out = self.net(x_vp, c_noise)
        elif isinstance(cond, Tensor):
            out = self.net(x_vp, c_noise, cond=cond)
        else:
            out = self.net.denoise_step(x_vp, c_noise, cond)
        if self.target == "eps":
            # x = x0 + sigma * eps
            return x - _per_example(sigma64.to(x.dtype), x) * out
        if self.target == "residual":
            # The correction to the (noised) estimate the sampling started from.
            return x + out
        # x0 = sqrt(ab) x_vp - sqrt(1 - ab) v, with sqrt(ab) = c_in, sqrt(1 - ab) = sigma c_in
        c_skip = (c_in * c_in).to(x.dtype)
        c_out = (sigma64 * c_in).to(x.dtype)
        return _per_example(c_skip, x) * x - _per_example(c_out, x) * out


class GuidedDenoiser(Denoiser):
    """Classifier-free guidance (Ho & Salimans 2022) with one batched network call per step.

    Convention: ``x0 = x0_c + w * (x0_c - x0_u)`` (``= (1 + w) x0_c - w x0_u``), the paper's, so
    ``w = 0`` is the plain conditional model and matches ``sample.guidance = 0`` meaning "off".
    Because ``x0`` is affine in the network output with coefficients shared by both halves,
    guiding ``x0`` equals guiding ``eps`` (or ``v``).

    Args:
        net, schedule, target, t_mapping: as ``Denoiser``.
        guidance: ``w >= 0``.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        *,
        guidance: float,
        target: Target = "eps",
        t_mapping: TMapping = "diffwave",
    ) -> None:
        super().__init__(net, schedule, target=target, t_mapping=t_mapping)
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        self.guidance = float(guidance)

    def prepare(self, cond: Tensor | None = None, label: Tensor | None = None) -> Any:
        """Prepare the doubled batch ``[conditional; unconditional]``.

        Args:
            cond: ``[B, n_mels, frames]`` or ``None``; used by both halves.
            label: ``[B]`` int64 labels; the second half gets ``net.null_label``.
        """
        if label is None:
            raise ValueError("classifier-free guidance needs labels, got label=None")
        null = torch.full_like(label, int(self.net.null_label))
        both_cond = None if cond is None else torch.cat([cond, cond])
        return self.net.prepare(both_cond, torch.cat([label, null]))

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Any = None) -> Tensor:
        """Guided ``x0_hat``; ``cond`` must come from ``GuidedDenoiser.prepare``. Shapes as
        ``Denoiser.forward``."""
        if cond is None or isinstance(cond, Tensor):
            raise ValueError("GuidedDenoiser needs the result of its own prepare(cond, label)")
        sigma64 = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma64.ndim == 0:
            sigma64 = sigma64.expand(x.shape[0])
        x0_c, x0_u = (
            super().forward(torch.cat([x, x]), torch.cat([sigma64, sigma64]), cond).chunk(2)
        )
        return x0_c + self.guidance * (x0_c - x0_u)
