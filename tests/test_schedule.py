"""NoiseSchedule: DiffWave presets, t <-> sigma maps, lmnt's twiddle alignment, discretisations."""

from __future__ import annotations

import math

import pytest
import torch

from audiodiff.config import DiffusionConfig
from audiodiff.schedule import (
    DIFFWAVE_FAST_BETAS,
    ZSNR_TERMINAL_ALPHA_BAR,
    NoiseSchedule,
    diffwave_fast_preset,
    karras_sigmas,
    sigmas_from_betas,
)
from audiodiff.synthesis import sampling_sigmas


def _product(values) -> float:
    out = 1.0
    for v in values:
        out *= v
    return out


def test_diffwave_vocoder_preset_numbers():
    sch = NoiseSchedule.diffwave_vocoder()
    assert sch.n_steps == 50
    betas = [1e-4 + i * (0.05 - 1e-4) / 49 for i in range(50)]
    assert torch.allclose(sch.betas, torch.tensor(betas, dtype=torch.float64), rtol=0, atol=1e-15)
    # alpha_bar_T = prod (1 - beta_i) over the 50 linear betas: the "0.28" of DESIGN §6.
    expected = _product(1 - b for b in betas)
    assert sch.alpha_bar[-1].item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.27967, abs=1e-5)
    assert sch.sigmas[0].item() == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-12)
    assert sch.sigmas[-1].item() == pytest.approx(math.sqrt((1 - expected) / expected), rel=1e-12)


def test_unconditional_preset_and_from_config():
    sch = NoiseSchedule.diffwave_unconditional()
    betas = [1e-4 + i * (0.02 - 1e-4) / 199 for i in range(200)]
    assert sch.n_steps == 200
    assert sch.alpha_bar[-1].item() == pytest.approx(_product(1 - b for b in betas), rel=1e-12)
    cfg = DiffusionConfig(n_steps=200, beta_start=1e-4, beta_end=0.02)
    assert torch.equal(NoiseSchedule.from_config(cfg).betas, sch.betas)
    assert torch.equal(
        NoiseSchedule.from_config(DiffusionConfig()).betas, NoiseSchedule.diffwave_vocoder().betas
    )


def test_tables_are_consistent_and_copies():
    sch = NoiseSchedule.diffwave_vocoder()
    ab = sch.alpha_bar
    assert torch.allclose(ab, torch.cumprod(1 - sch.betas, 0), rtol=0, atol=0)
    assert torch.allclose(sch.sigmas, ((1 - ab) / ab).sqrt(), rtol=1e-15, atol=0)
    assert bool(torch.all(sch.sigmas[1:] > sch.sigmas[:-1]))
    sch.betas.zero_()  # a copy: the schedule is unchanged
    assert sch.betas[0].item() == pytest.approx(1e-4)


def test_cosine_matches_nichol_dhariwal():
    sch = NoiseSchedule.cosine(50)
    f = [math.cos(((t / 50) + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(51)]
    # Rows whose beta is not clipped reproduce f(t+1)/f(0) exactly.
    expected = torch.tensor([f[t + 1] / f[0] for t in range(49)], dtype=torch.float64)
    assert torch.allclose(sch.alpha_bar[:49], expected, rtol=1e-12, atol=0)
    assert sch.betas[-1].item() == pytest.approx(0.999)  # the paper's clip keeps sigma_max finite
    assert math.isfinite(sch.sigma_max)


def test_linear_zsnr_reaches_near_zero_terminal_snr():
    base = NoiseSchedule.linear(50, 1e-4, 0.05)
    zsnr = NoiseSchedule.from_config(DiffusionConfig(schedule="linear-zsnr"))
    ab = zsnr.alpha_bar
    snr_terminal = (ab[-1] / (1 - ab[-1])).item()
    assert ab[-1].item() == pytest.approx(ZSNR_TERMINAL_ALPHA_BAR, rel=1e-9)
    assert snr_terminal < 1.001e-4  # DiffWave's table: 0.39
    assert (base.alpha_bar[-1] / (1 - base.alpha_bar[-1])).item() > 0.38
    assert ab[0].item() == pytest.approx(base.alpha_bar[0].item(), rel=1e-12)  # first row kept
    assert math.isfinite(zsnr.sigma_max) and zsnr.sigma_max == pytest.approx(99.995, rel=1e-4)
    # sqrt(alpha_bar) is an affine image of the linear schedule's.
    r, rb = ab.sqrt(), base.alpha_bar.sqrt()
    slope = (r[0] - r[-1]) / (rb[0] - rb[-1])
    assert torch.allclose(r, r[-1] + (rb - rb[-1]) * slope, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mapping", ["diffwave", "log-sigma"])
def test_t_sigma_round_trip(mapping):
    sch = NoiseSchedule.diffwave_vocoder()
    t = torch.linspace(0, 49, 997, dtype=torch.float64)
    back = sch.sigma_to_t(sch.t_to_sigma(t, mapping), mapping)
    assert torch.allclose(back, t, rtol=0, atol=1e-9)
    rows = torch.arange(50, dtype=torch.float64)
    assert torch.allclose(sch.t_to_sigma(rows, mapping), sch.sigmas, rtol=1e-12, atol=0)
    assert torch.allclose(sch.sigma_to_t(sch.sigmas, mapping), rows, rtol=0, atol=1e-9)


def test_out_of_table_sigmas_clamp_to_the_ends():
    sch = NoiseSchedule.diffwave_vocoder()
    for mapping in ("diffwave", "log-sigma"):
        t = sch.sigma_to_t(torch.tensor([0.0, 1e-3, 50.0, math.inf]), mapping)
        assert t.tolist() == [0.0, 0.0, 49.0, 49.0]


def test_diffwave_mapping_reproduces_lmnt_twiddle():
    # lmnt-com/diffwave inference.py, written out: for inference step s with cumulative alpha
    # gamma_s, find the training row t with abar[t+1] <= gamma_s <= abar[t] and use
    #   t + (sqrt(abar[t]) - sqrt(gamma_s)) / (sqrt(abar[t]) - sqrt(abar[t+1])).
    train_betas = [1e-4 + i * (0.05 - 1e-4) / 49 for i in range(50)]
    abar = [_product(1 - b for b in train_betas[: i + 1]) for i in range(50)]
    fast = DIFFWAVE_FAST_BETAS["base"]
    gammas = [_product(1 - b for b in fast[: s + 1]) for s in range(len(fast))]
    expected = []
    for gamma in gammas:
        for t in range(49):
            if abar[t + 1] <= gamma <= abar[t]:
                twiddle = (abar[t] ** 0.5 - gamma**0.5) / (abar[t] ** 0.5 - abar[t + 1] ** 0.5)
                expected.append(t + twiddle)
                break
    assert len(expected) == 6
    sch = NoiseSchedule.diffwave_vocoder()
    sigmas = sigmas_from_betas(fast)[:-1].flip(0)  # least noise first, like lmnt's s
    got = sch.sigma_to_t(sigmas, "diffwave")
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)
    # The log-sigma mapping is a genuinely different alignment (differs by >0.01 steps).
    assert (sch.sigma_to_t(sigmas, "log-sigma") - got).abs().max().item() > 0.01


def _check_descending_to_zero(sigmas: torch.Tensor, steps: int) -> None:
    assert sigmas.dtype == torch.float64 and sigmas.shape == (steps + 1,)
    assert sigmas[-1].item() == 0.0
    assert bool(torch.all(sigmas[:-1] > sigmas[1:]))


def test_discretisations_descend_and_end_in_zero():
    sch = NoiseSchedule.diffwave_vocoder()
    train = sch.training_sigmas()
    _check_descending_to_zero(train, 50)
    assert torch.equal(train[:-1], sch.sigmas.flip(0))
    for steps in (1, 2, 6, 12, 50):
        uni = sch.uniform_sigmas(steps)
        _check_descending_to_zero(uni, steps)
        assert uni[0].item() == sch.sigma_max
        kar = sch.karras_sigmas(steps)
        _check_descending_to_zero(kar, steps)
        assert kar[0].item() == pytest.approx(sch.sigma_max)
    assert torch.equal(sch.uniform_sigmas(50), train)
    assert sch.uniform_sigmas(6)[-2].item() == sch.sigma_min
    kar = karras_sigmas(6, 0.01, 2.0, rho=7.0)
    ramp = [i / 5 for i in range(6)]
    expected = [(2.0 ** (1 / 7) + r * (0.01 ** (1 / 7) - 2.0 ** (1 / 7))) ** 7 for r in ramp]
    assert torch.allclose(kar[:-1], torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
    fast = sigmas_from_betas(DIFFWAVE_FAST_BETAS["base"])
    _check_descending_to_zero(fast, 6)
    gamma = _product(1 - b for b in DIFFWAVE_FAST_BETAS["base"])
    assert fast[0].item() == pytest.approx(math.sqrt((1 - gamma) / gamma), rel=1e-12)
    with pytest.raises(ValueError, match="51"):
        sch.uniform_sigmas(51)


def test_sampling_sigmas_per_sampler():
    sch = NoiseSchedule.diffwave_vocoder()
    assert torch.equal(sampling_sigmas(sch, "ddpm", 50), sch.training_sigmas())
    assert torch.equal(sampling_sigmas(sch, "ddim", 8), sch.uniform_sigmas(8))
    assert torch.equal(sampling_sigmas(sch, "dpmpp-2m", 10), sch.karras_sigmas(10))
    fast = sampling_sigmas(sch, "diffwave-fast", 6)
    assert torch.equal(fast, sigmas_from_betas(DIFFWAVE_FAST_BETAS["base"]))
    # The paper pairs LARGE (ends in 0.7) with the T = 200 table; BASE overshoots neither.
    assert diffwave_fast_preset(NoiseSchedule.diffwave_unconditional()) == "large"
    stored = sampling_sigmas(sch, "dpmpp-2m", 3, stored=[0.05, 1.2, 0.3])
    assert stored.tolist() == [1.2, 0.3, 0.05, 0.0]
    assert torch.equal(sampling_sigmas(sch, "ddim", 4, stored=[]), sch.uniform_sigmas(4))
    with pytest.raises(ValueError, match="steps is 8"):
        sampling_sigmas(sch, "diffwave-fast", 8)
    with pytest.raises(ValueError, match="euler"):
        sampling_sigmas(sch, "euler", 8)
    with pytest.raises(ValueError, match="positive"):
        sampling_sigmas(sch, "ddim", 2, stored=[0.5, -1.0])


def test_invalid_inputs_name_the_values():
    with pytest.raises(ValueError, match="0.2"):
        NoiseSchedule.linear(10, 0.2, 0.1)
    with pytest.raises(ValueError, match="1.5"):
        NoiseSchedule([0.1, 1.5])
    with pytest.raises(ValueError, match="cubic"):
        NoiseSchedule.diffwave_vocoder().sigma_to_t(0.5, "cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_min 2.0"):
        karras_sigmas(4, 2.0, 1.0)
