"""What one sampling run does (:class:`SamplingSpec`): the sampler, its sigmas (its own
discretisation, a searched schedule, or from a DSP estimate's start), eta, t mapping and the stft
refinement, resolved once against a model's stored defaults by :func:`make_sampling_spec`; the
one sampling engine (:mod:`audiodiff.synthesis`) runs it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from audiodiff.config import ExperimentConfig
from audiodiff.consistency import Refinement
from audiodiff.samplers import SAMPLERS
from audiodiff.schedule import NoiseSchedule, stored_sigmas


@dataclass(frozen=True)
class SamplingSpec:
    """What one sampling run does: sampler name, its sigmas, its eta and its t_mapping;
    ``stored`` says whether the sigmas are the model's searched schedule; ``refinement`` what a
    frame-rate vocoder does to its STFT before the inverse (:mod:`audiodiff.consistency`)."""

    sampler: str
    sigmas: torch.Tensor
    eta: float
    t_mapping: str
    stored: bool = False
    refinement: Refinement = Refinement()
    start: str = "noise"

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1


def sampling_sigmas(
    schedule: NoiseSchedule,
    sampler: str,
    steps: int,
    *,
    stored: Sequence[float] | None = None,
) -> torch.Tensor:
    """The sigmas ``sampler`` runs on: a ``stored`` (searched) schedule when given and non-empty,
    else the sampler's own discretisation from :data:`~audiodiff.samplers.SAMPLERS` (uniform rows
    for ``ddpm``/``ddim``, DiffWave's fixed 6-step schedule for ``diffwave-fast``, Karras et al.'s
    for ``dpmpp-2m``).

    Returns:
        ``[n + 1]`` float64, descending, ending in 0.

    Raises:
        ValueError: unknown sampler, a step count the sampler cannot take, or a stored schedule
            with non-positive or repeated sigmas.
    """
    if stored is not None and len(stored) > 0:
        return stored_sigmas(stored)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler].discretisation(schedule, steps)


def make_sampling_spec(
    cfg: ExperimentConfig,
    schedule: NoiseSchedule,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    t_mapping: str = "diffwave",
    mel_match_iters: int | None = None,
    griffin_lim_iters: int | None = None,
    magnitude_blend: float | None = None,
) -> SamplingSpec:
    """Resolve sampler/steps/eta and the refinement against the model's stored defaults
    (``cfg.sample``) and searched schedule.

    Raises:
        ValueError: unknown sampler (known ones listed), an impossible step count, an ``eta``
            for a sampler whose eta is fixed (it would do nothing), or a refinement of a model
            that is not in the stft domain or with negative iterations.
    """
    name = sampler or cfg.sample.sampler
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)}")
    n_steps = steps if steps is not None else cfg.sample.steps
    stored = list(cfg.sample.sigmas) or None
    if stored is not None and (len(stored) != n_steps or name != cfg.sample.sampler):
        # A searched schedule describes the sampler and step count it was searched for (stored
        # as sample.sampler and sample.steps); another sampler gets its own discretisation.
        stored = None
    if cfg.model.start == "estimate":
        # From the DSP estimate plus noise at sample.start_sigma (SDEdit): geometric steps down
        # to the table's smallest sigma, then 0; one step is [start_sigma, 0].
        top = cfg.sample.start_sigma
        low = min(top, float(schedule.sigmas[0]))
        sigmas = torch.cat(
            [
                torch.logspace(math.log10(top), math.log10(low), n_steps, dtype=torch.float64),
                torch.zeros(1, dtype=torch.float64),
            ]
        )
        stored = None
    else:
        sigmas = sampling_sigmas(schedule, name, n_steps, stored=stored)
    if t_mapping not in ("diffwave", "log-sigma"):
        raise ValueError(f"t_mapping must be 'diffwave' or 'log-sigma', got {t_mapping!r}")
    resolved_eta = SAMPLERS[name].eta  # fixed by the sampler, or the caller's (ddim)
    if eta is not None and resolved_eta is not None and eta != resolved_eta:
        # A setting that would do nothing is refused, not ignored.
        raise ValueError(
            f"eta {eta} does nothing with sampler {name!r}, whose eta is fixed at "
            f"{resolved_eta:g}; eta applies to 'ddim' only"
        )
    if resolved_eta is None:
        resolved_eta = cfg.sample.eta if eta is None else eta
    refinement = Refinement(
        cfg.sample.mel_match_iters if mel_match_iters is None else mel_match_iters,
        cfg.sample.griffin_lim_iters if griffin_lim_iters is None else griffin_lim_iters,
        magnitude_blend=cfg.sample.magnitude_blend if magnitude_blend is None else magnitude_blend,
        momentum=cfg.sample.griffin_lim_momentum,
    )
    if refinement.active and cfg.model.domain != "stft":
        raise ValueError(
            f"mel matching and Griffin-Lim refinement need an stft-domain model; this one is in "
            f"the {cfg.model.domain} domain"
        )
    return SamplingSpec(
        name, sigmas, float(resolved_eta), t_mapping, stored=stored is not None,
        refinement=refinement, start=cfg.model.start,
    )  # fmt: skip
