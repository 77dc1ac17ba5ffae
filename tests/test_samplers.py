"""Samplers against a denoiser with a closed-form answer, and DiffWave's fast loop transcribed.

The Gaussian check (DESIGN §10): x0 ~ N(0, s^2) gives D(x, sigma) = x s^2 / (s^2 + sigma^2). Every
sampler here is then a linear map of Gaussian inputs, so the variance it returns can be computed
exactly by a recursion. The recursions below are written in the VP form of the papers (not the VE
form of samplers.py), so agreeing with them also checks the VE rewriting. Each test then asserts
(1) the implementation equals the recursion, (2) a Monte-Carlo run with real noise agrees within
4 standard errors, (3) the returned variance is within a per-sampler, per-step-count bound of
s^2 -- bounds taken from the measured (exact) bias, which is intrinsic to each discretisation:
    * ancestral steps (ddpm, diffwave-fast) add only the posterior variance beta_tilde and ignore
      the uncertainty of x0 given x_t, so few coarse steps lose variance (Bao et al. 2022,
      Analytic-DPM): 6 steps keep ~50 %, DiffWave's 50 training steps ~91 %;
    * DDIM (eta = 0) is the Euler step of the probability-flow ODE: first order, error ~ 1/N;
    * DPM-Solver++(2M) is second order: error ~ 1/N^2 (overshoots slightly at 6 steps);
and (4) the bias shrinks at the rate the method's order predicts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from audiodiff.diffusion import Denoiser, prior_std
from audiodiff.samplers import (
    SAMPLERS,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from audiodiff.schedule import DIFFWAVE_FAST_BETAS, NoiseSchedule, sigmas_from_betas

from .conftest import tiny_diffwave

S2 = 0.25  # data variance s^2 (s = 0.5, a loud-ish waveform)
N_MC = 100_000
# Standard error of a sample variance of N Gaussians is var * sqrt(2 / (N - 1)): 0.45 % here.
SE_REL = math.sqrt(2 / (N_MC - 1))


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * (S2 / (S2 + float(sigma) ** 2))


def _vp(sigma: float) -> tuple[float, float]:
    """alpha_bar and E[x0 | x_vp] = k * x_vp at this noise level."""
    ab = 1 / (1 + sigma * sigma)
    return ab, math.sqrt(ab) * S2 / (ab * S2 + 1 - ab)


def recursion_ddpm(sigmas: list[float]) -> float:
    """Ho et al. 2020 eq. 6-7: x' = mean(x0_hat, x_t) + sqrt(beta_tilde) z, in VP form."""
    ab, _ = _vp(sigmas[0])
    var = ab * S2 + 1 - ab  # x_vp at the start: VE variance s^2 + sigma^2 times alpha_bar
    for sigma, sigma_next in zip(sigmas, sigmas[1:], strict=False):
        ab, k = _vp(sigma)
        ab_next = 1.0 if sigma_next == 0 else _vp(sigma_next)[0]
        alpha, beta = ab / ab_next, 1 - ab / ab_next
        c_x0 = math.sqrt(ab_next) * beta / (1 - ab)
        c_xt = math.sqrt(alpha) * (1 - ab_next) / (1 - ab)
        beta_tilde = (1 - ab_next) / (1 - ab) * beta
        var = (c_x0 * k + c_xt) ** 2 * var + beta_tilde
    return var


def recursion_ddim(sigmas: list[float], eta: float) -> float:
    """Song et al. 2021 eq. 12 in VP form."""
    ab, _ = _vp(sigmas[0])
    var = ab * S2 + 1 - ab
    for sigma, sigma_next in zip(sigmas, sigmas[1:], strict=False):
        ab, k = _vp(sigma)
        ab_next = 1.0 if sigma_next == 0 else _vp(sigma_next)[0]
        noise2 = eta**2 * (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
        eps_coef = (1 - math.sqrt(ab) * k) / math.sqrt(1 - ab)
        a = math.sqrt(ab_next) * k + math.sqrt(max(1 - ab_next - noise2, 0.0)) * eps_coef
        var = a * a * var + noise2
    return var


def recursion_dpmpp_2m(sigmas: list[float]) -> float:
    """Lu et al. 2022 Alg. 2 in VP form (lambda = log alpha/sigma_vp); x_vp = g z, deterministic."""
    ab, _ = _vp(sigmas[0])
    g = math.sqrt(ab * S2 + 1 - ab)
    previous, h_previous = None, 0.0
    for sigma, sigma_next in zip(sigmas, sigmas[1:], strict=False):
        ab, k = _vp(sigma)
        x0 = k * g
        if sigma_next == 0:
            return x0 * x0
        ab_next = _vp(sigma_next)[0]
        lam = 0.5 * math.log(ab / (1 - ab))
        lam_next = 0.5 * math.log(ab_next / (1 - ab_next))
        h = lam_next - lam
        if previous is None:
            d = x0  # first step: first order
        else:
            r = h_previous / h
            d = (1 + 1 / (2 * r)) * x0 - previous / (2 * r)
        g = math.sqrt((1 - ab_next) / (1 - ab)) * g - math.sqrt(ab_next) * (math.exp(-h) - 1) * d
        previous, h_previous = x0, h
    raise AssertionError("sigmas must end in 0")


def exact_variance(fn, sigmas: torch.Tensor, **kwargs) -> float:
    """Variance of the sampler's output, exactly: feed unit basis vectors as start and noise."""
    n = len(sigmas) - 1
    x = torch.zeros(n + 1, dtype=torch.float64)
    x[0] = math.sqrt(S2 + float(sigmas[0]) ** 2)  # element 0 carries the start

    def basis(i: int, like: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(like)
        z[i + 1] = 1.0  # element i + 1 carries step i's noise
        return z

    out = fn(gaussian_denoiser, x, sigmas, noise_sampler=basis, **kwargs)
    return float((out * out).sum())


VOC = NoiseSchedule.diffwave_vocoder()
FAST = sigmas_from_betas(DIFFWAVE_FAST_BETAS["base"])

# (name, function, sigmas, kwargs, recursion, bound on |Var/s^2 - 1|). Measured Var/s^2 in the
# comment; each bound is that bias rounded up by at most 0.01.
CASES = [
    ("ddpm-T50", sample_ddpm, VOC.training_sigmas(), {}, recursion_ddpm, 0.10),  # 0.9076
    ("ddpm-6", sample_ddpm, VOC.uniform_sigmas(6), {}, recursion_ddpm, 0.47),  # 0.5361
    ("diffwave-fast", sample_ddpm, FAST, {}, recursion_ddpm, 0.51),  # 0.4966
    ("ddim-6", sample_ddim, VOC.uniform_sigmas(6), {}, lambda s: recursion_ddim(s, 0.0), 0.33),
    ("ddim-12", sample_ddim, VOC.uniform_sigmas(12), {}, lambda s: recursion_ddim(s, 0.0), 0.17),
    ("ddim-50", sample_ddim, VOC.uniform_sigmas(50), {}, lambda s: recursion_ddim(s, 0.0), 0.04),
    (
        "ddim-eta0.5-12",
        sample_ddim,
        VOC.uniform_sigmas(12),
        {"eta": 0.5},
        lambda s: recursion_ddim(s, 0.5),
        0.19,
    ),  # 0.8123
    ("dpmpp-2m-6", sample_dpmpp_2m, VOC.karras_sigmas(6), {}, recursion_dpmpp_2m, 0.13),  # 1.128
    ("dpmpp-2m-12", sample_dpmpp_2m, VOC.karras_sigmas(12), {}, recursion_dpmpp_2m, 0.035),
    ("dpmpp-2m-24", sample_dpmpp_2m, VOC.karras_sigmas(24), {}, recursion_dpmpp_2m, 0.0075),
]
# ddim: 0.6797 / 0.8408 / 0.9619; dpmpp-2m: 1.1281 / 1.0318 / 1.0065.


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gaussian_variance(case):
    _, fn, sigmas, kwargs, recursion, bound = case
    values = sigmas.tolist()
    expected = recursion(values)
    # (1) the implementation is the published update, exactly (float64).
    assert exact_variance(fn, sigmas, **kwargs) == pytest.approx(expected, rel=1e-9)
    # (2) with real noise: 4 standard errors of a variance estimate from N_MC samples.
    gen = torch.Generator().manual_seed(0)
    x = math.sqrt(S2 + values[0] ** 2) * torch.randn(N_MC, generator=gen)
    out = fn(gaussian_denoiser, x, sigmas, generator=gen, **kwargs)
    assert out.var().item() == pytest.approx(expected, rel=4 * SE_REL)
    # (3) what this sampler achieves at this step count.
    assert abs(expected / S2 - 1) <= bound


def test_bias_shrinks_at_the_methods_order():
    def bias(fn, steps, **kw):
        return abs(exact_variance(fn, VOC.karras_sigmas(steps), **kw) / S2 - 1)

    # First order: doubling the steps halves the error (measured 1.99, 1.96).
    assert 1.8 < bias(sample_ddim, 12) / bias(sample_ddim, 24) < 2.2
    assert 1.8 < bias(sample_ddim, 100) / bias(sample_ddim, 200) < 2.2
    # Second order: doubling the steps quarters it (measured 4.9, 5.4).
    assert bias(sample_dpmpp_2m, 12) / bias(sample_dpmpp_2m, 24) > 3.5
    assert bias(sample_dpmpp_2m, 24) / bias(sample_dpmpp_2m, 48) > 3.5
    # Ancestral sampling converges too, slowly (measured 0.50 % at 1000 steps).
    assert bias(sample_ddpm, 1000) < 0.006
    assert bias(sample_dpmpp_2m, 48) < 0.002


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_reproducible_and_one_call_per_step(name):
    calls = []

    def counting(x, sigma, **extra):
        calls.append(float(sigma))
        assert extra == {"tag": 1}
        return gaussian_denoiser(x, sigma)

    sigmas = FAST if name == "diffwave-fast" else VOC.uniform_sigmas(7)
    runs = []
    for seed in (3, 3, 4):
        gen = torch.Generator().manual_seed(seed)
        x = prior_std(float(sigmas[0])) * torch.randn(2, 1, 64, generator=gen)
        runs.append(sample(name, counting, x, sigmas, extra={"tag": 1}, generator=gen, eta=0.3))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert calls == sigmas[:-1].tolist() * 3


def test_noise_sampler_replaces_the_generator():
    sigmas = VOC.uniform_sigmas(5)
    seen = []
    source = torch.Generator().manual_seed(11)

    def noise_sampler(i: int, x: torch.Tensor) -> torch.Tensor:
        seen.append(i)
        return torch.randn(x.shape, generator=source)

    x = torch.ones(3, 1, 16)
    via_sampler = sample_ddpm(gaussian_denoiser, x, sigmas, noise_sampler=noise_sampler)
    assert seen == [0, 1, 2, 3]  # no noise after the step that lands on sigma = 0
    via_generator = sample_ddpm(
        gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(11)
    )
    assert torch.equal(via_sampler, via_generator)


def test_callback_and_deterministic_samplers_need_no_generator():
    seen = []
    sigmas = VOC.karras_sigmas(4)
    x = torch.ones(1, 1, 8)
    sample_dpmpp_2m(gaussian_denoiser, x, sigmas, callback=lambda d: seen.append(d))
    assert [d["i"] for d in seen] == [0, 1, 2, 3]
    assert set(seen[0]) == {"i", "x", "sigma", "sigma_next", "denoised"}
    sample_ddim(gaussian_denoiser, x, sigmas, eta=0.0)


def test_invalid_calls_are_refused():
    x = torch.ones(1, 1, 8)
    with pytest.raises(ValueError, match="Generator"):
        sample_ddpm(gaussian_denoiser, x, VOC.uniform_sigmas(3))
    with pytest.raises(ValueError, match="end in 0"):
        sample_ddim(gaussian_denoiser, x, torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="descend"):
        sample_ddim(gaussian_denoiser, x, torch.tensor([0.5, 1.0, 0.0]))
    with pytest.raises(ValueError, match="1.5"):
        sample_ddim(gaussian_denoiser, x, VOC.uniform_sigmas(3), eta=1.5)
    with pytest.raises(ValueError, match="heun"):
        sample("heun", gaussian_denoiser, x, VOC.uniform_sigmas(3))
    with pytest.raises(TypeError):
        SAMPLERS["ddpm"] = sample_ddim  # type: ignore[index]


# ------------------------------------------------------------------------------------------------
# DiffWave fast sampling == the paper's Algorithm 2 with lmnt's alignment, transcribed literally
# ------------------------------------------------------------------------------------------------


class StepFunction(nn.Module):
    """A deterministic stand-in for the network: smooth in x and strongly dependent on t, so a
    misaligned t shows up far above the 1e-5 tolerance."""

    def forward(self, x, c_noise, cond=None, label=None):
        t = c_noise.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.sin(1.3 * x + 0.17 * t) * (0.5 + 0.01 * t)


def algorithm_2(net, z: torch.Tensor, noises: list[torch.Tensor]) -> torch.Tensor:
    """Kong et al. 2021, Algorithm 2 over the fast schedule, with lmnt-com/diffwave's alignment of
    inference steps to fractional training steps; VP space throughout, no clamping."""
    train_beta = np.linspace(1e-4, 0.05, 50)
    train_alpha_cum = np.cumprod(1 - train_beta)
    beta = np.array([1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5])
    alpha = 1 - beta
    alpha_cum = np.cumprod(alpha)
    steps = []
    for s in range(len(beta)):
        for t in range(len(train_beta) - 1):
            if train_alpha_cum[t + 1] <= alpha_cum[s] <= train_alpha_cum[t]:
                twiddle = (train_alpha_cum[t] ** 0.5 - alpha_cum[s] ** 0.5) / (
                    train_alpha_cum[t] ** 0.5 - train_alpha_cum[t + 1] ** 0.5
                )
                steps.append(t + twiddle)
                break
    steps = np.array(steps, dtype=np.float32)
    x = z
    noises = list(noises)
    for n in range(len(alpha) - 1, -1, -1):
        c1 = 1 / alpha[n] ** 0.5
        c2 = beta[n] / (1 - alpha_cum[n]) ** 0.5
        t_n = torch.full((x.shape[0],), float(steps[n]))
        x = c1 * (x - c2 * net(x, t_n))
        if n > 0:
            sigma = ((1.0 - alpha_cum[n - 1]) / (1.0 - alpha_cum[n]) * beta[n]) ** 0.5
            x = x + sigma * noises.pop(0)
    return x


def _fast_vs_algorithm_2(net: nn.Module, t_mapping: str, shape=(2, 1, 512)) -> float:
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(shape, generator=gen)
    noises = [torch.randn(shape, generator=gen) for _ in range(5)]
    reference = algorithm_2(net, z, noises)
    denoiser = Denoiser(net, VOC, target="eps", t_mapping=t_mapping)
    sigmas = sigmas_from_betas(DIFFWAVE_FAST_BETAS["base"])
    gen = torch.Generator().manual_seed(5)
    x = prior_std(float(sigmas[0])) * torch.randn(shape, generator=gen)
    ours = SAMPLERS["diffwave-fast"](denoiser, x, sigmas, generator=gen)
    return (ours - reference).abs().max().item()


def test_diffwave_fast_equals_algorithm_2():
    with torch.no_grad():
        assert _fast_vs_algorithm_2(StepFunction(), "diffwave") <= 1e-5
        # The test can tell alignments apart: the log-sigma mapping moves t by ~0.02-0.06.
        assert _fast_vs_algorithm_2(StepFunction(), "log-sigma") > 1e-4


def test_diffwave_fast_equals_algorithm_2_with_a_tiny_diffwave():
    gen = torch.Generator().manual_seed(0)
    net = tiny_diffwave(gen, output_std=0.3)
    mel = torch.randn(2, 80, 2, generator=gen)

    class Plain(nn.Module):
        """The reference loop's view: the full forward (mel work redone) at every step."""

        def forward(self, x, c_noise, cond=None, label=None):
            return net(x, c_noise, cond=mel)

    with torch.no_grad():
        gen = torch.Generator().manual_seed(5)
        z = torch.randn(2, 1, 512, generator=gen)
        noises = [torch.randn(2, 1, 512, generator=gen) for _ in range(5)]
        reference = algorithm_2(Plain(), z, noises)
        sigmas = sigmas_from_betas(DIFFWAVE_FAST_BETAS["base"])
        # Ours: the mel work done once (prepare), then only the per-step path.
        denoiser = Denoiser(net, VOC)
        extra = {"cond": denoiser.prepare(mel)}
        gen = torch.Generator().manual_seed(5)
        x = prior_std(float(sigmas[0])) * torch.randn(2, 1, 512, generator=gen)
        ours = SAMPLERS["diffwave-fast"](denoiser, x, sigmas, extra=extra, generator=gen)
    assert (ours - reference).abs().max().item() <= 1e-5
