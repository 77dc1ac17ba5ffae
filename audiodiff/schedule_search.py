"""Noise-schedule search: the N-step sampling schedule that copy-synthesises validation clips best.

In the spirit of WaveGrad's grid search over short inference schedules (Chen et al. 2021, §3.3)
and BDDM's schedules fitted to the data (Lam et al. 2022): pick the N noise levels that minimise a
spectral distance between real clips and their resynthesis from their own mels.

Method:

1. **Baseline**: the schedule the vocoder uses today for this sampler and step count (a stored
   schedule of that length, else the sampler's own discretisation; for ``diffwave-fast`` at a step
   count other than its fixed 6, evenly spaced training rows).
2. **Coarse grid** over a 3-parameter family: N sigmas from ``sigma_max`` down to ``sigma_min``,
   evenly spaced in ``sigma ** p`` (Karras et al. 2022, eq. 5, with ``p = 1 / rho``; ``p = 0`` means
   evenly spaced in ``log sigma``, i.e. geometric). ``sigma_max`` takes ``coarse`` values from the
   table's top down to 10 % of its log range lower, ``p`` takes ``coarse`` values in [0, 0.5]
   (``rho`` from 2 to infinity) and ``sigma_min`` two values (the table's bottom and 10 % of the log
   range above it): ``2 * coarse**2`` candidates. The grid stays inside the training table's sigma
   range because the network has never seen a noise level outside it (its step is clamped there).
3. **Refinement**: coordinate descent in ``log sigma``. Each round tries moving every sigma up,
   then down, by ``delta`` (a quarter of the mean log gap, halved every round), keeping the order
   strictly descending, and keeps a move as soon as it lowers the score.

Every candidate is scored on the same clips with the same seed (the vocoder's noise is keyed by
position and by each clip's mel), so score differences come from the schedule alone. Score of a
clip: log-mel L1 (in the model's own mel profile) + multi-resolution STFT distance, averaged over
the clips; lower is better. The baseline is candidate 0, so the winner never scores worse than it.

Storing the winner in a copy of the model is :mod:`audiodiff.schedule_store`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audiodiff.audio import load_model_audio
from audiodiff.input_notes import InputNotes
from audiodiff.manifest import read_manifest
from audiodiff.mel import MelSpectrogram
from audiodiff.metrics import align_pair, log_mel_l1, mr_stft_distance
from audiodiff.samplers import SAMPLERS
from audiodiff.synthesis import make_sampling_spec
from audiodiff.vocoder import Vocoder

# Shortest clip scored: the longest MR-STFT window (2048) needs more than half of it.
MIN_CLIP_SAMPLES = 2048
# Fraction of the table's log-sigma range that the grid moves sigma_max down / sigma_min up.
_GRID_SPAN = 0.1
# Largest p = 1/rho of the grid (rho = 2); p = 0 is geometric spacing.
_GRID_MAX_P = 0.5
# First refinement step as a fraction of the mean log-sigma gap between neighbouring sigmas.
_REFINE_FRACTION = 0.25


@dataclass(frozen=True)
class Candidate:
    """One scored schedule. ``sigmas`` descending, ``stage`` "default", "grid" or "refine"."""

    index: int
    stage: str
    sigmas: tuple[float, ...]
    score: float
    log_mel_l1: float
    mr_stft: float


@dataclass(frozen=True)
class SearchResult:
    """The winning schedule, the baseline and every candidate tried, in order."""

    sampler: str
    steps: int
    seed: int
    sigmas: tuple[float, ...]
    score: float
    default_sigmas: tuple[float, ...]
    default_score: float
    table: tuple[Candidate, ...]


def family_sigmas(steps: int, sigma_min: float, sigma_max: float, p: float) -> tuple[float, ...]:
    """``steps`` sigmas from ``sigma_max`` to ``sigma_min`` evenly spaced in ``sigma ** p``.

    Karras et al. 2022, eq. 5 with ``p = 1 / rho``; ``p = 0`` spaces them evenly in ``log sigma``.

    Returns:
        ``steps`` floats, descending (just ``(sigma_max,)`` for one step).

    Raises:
        ValueError: ``steps < 1``, ``p < 0`` or not ``0 < sigma_min < sigma_max``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    if p < 0:
        raise ValueError(f"p = 1/rho must be >= 0, got {p}")
    if steps == 1:
        return (float(sigma_max),)
    ramp = np.linspace(0.0, 1.0, steps)
    if p == 0:
        s = np.exp(math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max)))
    else:
        s = (sigma_max**p + ramp * (sigma_min**p - sigma_max**p)) ** (1.0 / p)
    return tuple(float(v) for v in s)


def _baseline(vocoder: Vocoder, sampler: str, steps: int) -> tuple[tuple[float, ...], str]:
    try:
        spec = make_sampling_spec(vocoder.config, vocoder.schedule, sampler=sampler, steps=steps)
        return tuple(float(s) for s in spec.sigmas[:-1]), "stored" if spec.stored else "default"
    except ValueError:
        # diffwave-fast has a fixed 6-step schedule: compare against evenly spaced training rows.
        table = vocoder.schedule
        sigmas = (
            table.uniform_sigmas(steps) if steps <= table.n_steps else table.karras_sigmas(steps)
        )
        return tuple(float(s) for s in sigmas[:-1]), "uniform"


class _Scorer:
    """Copy synthesis of fixed clips with a fixed seed; score = log-mel L1 + MR-STFT."""

    def __init__(self, vocoder: Vocoder, clips: Sequence[torch.Tensor], sampler: str, seed: int):
        self.vocoder, self.sampler, self.seed = vocoder, sampler, seed
        self.mel_fn = MelSpectrogram(vocoder.mel_config)
        hop = vocoder.hop_length
        self.refs, self.mels = [], []
        for i, clip in enumerate(clips):
            if not isinstance(clip, torch.Tensor):  # torch refuses negative strides (x[::-1])
                clip = torch.from_numpy(np.ascontiguousarray(clip))
            audio = torch.as_tensor(clip, dtype=torch.float32).reshape(1, -1)
            audio = audio[:, : audio.shape[-1] // hop * hop]  # whole frames only
            if audio.shape[-1] < MIN_CLIP_SAMPLES:
                raise ValueError(
                    f"clip {i} has {audio.shape[-1]} whole-frame samples but the score needs at "
                    f"least {MIN_CLIP_SAMPLES}"
                )
            self.refs.append(audio)
            try:
                self.mels.append(vocoder.mel(audio, vocoder.sample_rate))
            except ValueError as err:
                raise ValueError(f"clip {i}: {err}") from None

    def __call__(self, sigmas: tuple[float, ...]) -> tuple[float, float, float]:
        voc = self.vocoder
        sample_cfg = dataclasses.replace(
            voc.config.sample, sampler=self.sampler, steps=len(sigmas), sigmas=list(sigmas)
        )
        # A vocoder sharing the network, whose stored schedule is the candidate: exactly the
        # path a user of the stored model takes.
        trial = Vocoder(
            voc.net, dataclasses.replace(voc.config, sample=sample_cfg), device=voc.device
        )
        log_mel = mr = 0.0
        for ref, mel in zip(self.refs, self.mels, strict=True):
            gen = trial(
                mel, steps=len(sigmas), sampler=self.sampler, seed=self.seed, chunk_seconds=None
            )
            r, g, _ = align_pair(ref, gen[:, 0], voc.hop_length)
            log_mel += float(log_mel_l1(r, g, self.mel_fn).mean())
            mr += float(mr_stft_distance(r, g).mean())
        n = len(self.refs)
        return (log_mel + mr) / n, log_mel / n, mr / n


def _format_row(c: Candidate, default_score: float) -> str:
    sigmas = " ".join(f"{s:.4g}" for s in c.sigmas)
    return (
        f"{c.index:>4}  {c.stage:<8} {c.score:9.5f} {c.score - default_score:+10.5f} "
        f"{c.log_mel_l1:9.5f} {c.mr_stft:9.5f}  [{sigmas}]"
    )


def search_schedule(
    vocoder: Vocoder,
    clips: Sequence[torch.Tensor],
    *,
    steps: int,
    seed: int = 0,
    sampler: str | None = None,
    coarse: int = 3,
    refine_rounds: int = 2,
    log: Callable[[str], None] = print,
) -> SearchResult:
    """Find the ``steps``-sigma schedule minimising the copy-synthesis distance on ``clips``.

    Args:
        vocoder: the model to tune.
        clips: audio ``[1, T]`` (or ``[T]``) at ``vocoder.sample_rate``, at least
            ``MIN_CLIP_SAMPLES`` whole-frame samples each; a few clips of 1-2 s keep it cheap.
        steps: number of sampling steps N (network calls per utterance).
        seed: seed of every candidate's noise (the same noise for all candidates).
        sampler: sampler the schedule is tuned for; default the model's ``sample.sampler``.
        coarse: values per grid axis; the grid has ``2 * coarse**2`` candidates.
        refine_rounds: coordinate-descent rounds (each at most ``2 * steps`` candidates).
        log: receives the header and one line per candidate (its score against the baseline's).

    Returns:
        The winner (never worse than the baseline, which is candidate 0) and the full table.

    Raises:
        ValueError: no clips, a clip too short, ``steps``/``coarse`` below 1, negative rounds or an
            unknown sampler.
    """
    sampler = sampler or vocoder.config.sample.sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known samplers: {', '.join(SAMPLERS)}")
    if steps < 1 or coarse < 1 or refine_rounds < 0:
        raise ValueError(
            f"need steps >= 1, coarse >= 1 and refine_rounds >= 0, got steps {steps}, coarse "
            f"{coarse} and refine_rounds {refine_rounds}"
        )
    if not clips:
        raise ValueError("the schedule search needs at least one validation clip, got none")
    default_sigmas, default_kind = _baseline(vocoder, sampler, steps)
    score = _Scorer(vocoder, clips, sampler, seed)
    log(
        f"schedule search: {steps} steps, sampler {sampler}, {len(clips)} clip(s), seed {seed}; "
        "score = log-mel L1 + MR-STFT (lower is better); baseline = the "
        f"{default_kind} schedule"
    )
    log("   #  stage        score  vs default    logmel    mrstft  sigmas")
    table: list[Candidate] = []
    seen: set[tuple[float, ...]] = set()

    def trial(stage: str, sigmas: tuple[float, ...]) -> Candidate | None:
        key = tuple(round(s, 12) for s in sigmas)
        if key in seen:
            return None
        seen.add(key)
        total, log_mel, mr = score(sigmas)
        c = Candidate(len(table), stage, sigmas, total, log_mel, mr)
        table.append(c)
        log(_format_row(c, table[0].score))
        return c

    trial("default", default_sigmas)
    lo, hi = math.log(vocoder.schedule.sigma_min), math.log(vocoder.schedule.sigma_max)
    span = hi - lo
    for f_max in np.linspace(0.0, _GRID_SPAN, coarse):
        for p in np.linspace(_GRID_MAX_P, 0.0, coarse):
            for f_min in (0.0, _GRID_SPAN):
                s_max, s_min = math.exp(hi - f_max * span), math.exp(lo + f_min * span)
                trial("grid", family_sigmas(steps, s_min, s_max, float(p)))

    best = min(table, key=lambda c: c.score)
    log_s = [math.log(s) for s in best.sigmas]
    floor, ceiling = min(lo, log_s[-1]), max(hi, log_s[0])
    delta = _REFINE_FRACTION * (span / max(steps - 1, 1))
    for _ in range(refine_rounds):
        for i in range(steps):
            for direction in (1.0, -1.0):
                moved = log_s[i] + direction * delta
                # The ends may reach the table's limits; inner sigmas stay strictly between
                # their neighbours, so the schedule remains strictly descending.
                upper_ok = moved <= ceiling if i == 0 else moved < log_s[i - 1]
                lower_ok = moved >= floor if i == steps - 1 else moved > log_s[i + 1]
                if not (upper_ok and lower_ok):
                    continue
                cand = list(log_s)
                cand[i] = moved
                c = trial("refine", tuple(math.exp(v) for v in cand))
                if c is not None and c.score < best.score:
                    best, log_s = c, cand
                    break
        delta /= 2
    log(
        f"best: #{best.index} ({best.stage}) score {best.score:.5f} vs baseline "
        f"{table[0].score:.5f} ({100 * (best.score - table[0].score) / table[0].score:+.1f} %) "
        f"after {len(table)} candidates"
    )
    return SearchResult(
        sampler=sampler,
        steps=steps,
        seed=seed,
        sigmas=best.sigmas,
        score=best.score,
        default_sigmas=default_sigmas,
        default_score=table[0].score,
        table=tuple(table),
    )


def load_clips_from_manifest(
    path: str | Path,
    sample_rate: int,
    *,
    max_clips: int = 4,
    max_seconds: float = 1.5,
    log: Callable[[str], None] = print,
    notes: InputNotes | None = None,
) -> list[torch.Tensor]:
    """The first ``max_clips`` usable clips of a manifest, resampled, each cut to its middle
    ``max_seconds``.

    Unreadable or too short clips are skipped with a line to ``log``; what was done to the
    clips read (resampled, mixed down) is counted in ``notes`` when given, for the caller's one
    note line (:class:`audiodiff.input_notes.InputNotes`).

    Returns:
        Audio tensors ``[1, T]`` at ``sample_rate``, ``T <= max_seconds * sample_rate``.

    Raises:
        ValueError: unreadable manifest, bad limits, or no usable clip at all.
    """
    if max_clips < 1 or max_seconds <= 0:
        raise ValueError(
            f"need max_clips >= 1 and max_seconds > 0, got {max_clips} and {max_seconds}"
        )
    rows = read_manifest(path)
    limit = max(MIN_CLIP_SAMPLES, int(max_seconds * sample_rate))
    clips: list[torch.Tensor] = []
    for row in rows:
        if len(clips) == max_clips:
            break
        try:
            audio, _ = load_model_audio(row["path"], sample_rate, notes)  # silent ones skipped
        except ValueError as err:
            log(f"skipping {row['path']}: {err}")
            continue
        if audio.shape[-1] < MIN_CLIP_SAMPLES:
            log(
                f"skipping {row['path']}: {audio.shape[-1]} samples, the score needs at least "
                f"{MIN_CLIP_SAMPLES}"
            )
            continue
        start = max(0, (audio.shape[-1] - limit) // 2)
        clips.append(audio[:, start : start + limit])
    if not clips:
        raise ValueError(f"{path}: none of its {len(rows)} clips is usable for the schedule search")
    return clips
