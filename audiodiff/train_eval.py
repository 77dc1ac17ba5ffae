"""In-training evaluation: validation loss, copy synthesis of held-out clips and its scores.

:func:`evaluate` runs on rank 0 every ``train.eval_every`` steps with the EMA weights: the
diffusion loss of up to :data:`EVAL_LOSS_CLIPS` validation clips (each clip's noise drawn from its
own index), and for vocoders a copy synthesis of :data:`EVAL_CLIPS` clips through the synthesis
engine, scored by log-mel L1 and MR-STFT distance, optionally by the perceptual MOS predictors
(:func:`perceptual_scorer`).
"""

from __future__ import annotations

from typing import Any

import torch

from audiodiff.config import ExperimentConfig
from audiodiff.diffusion import Denoiser
from audiodiff.mel import MelSpectrogram
from audiodiff.perceptual import PerceptualScorer
from audiodiff.schedule import NoiseSchedule
from audiodiff.seeds import derived_seed
from audiodiff.synthesis import make_sampling_spec, vocode_mel
from audiodiff.train_losses import diffusion_loss

# Copy synthesis during validation: clips and length (seconds) per clip.
EVAL_CLIPS, EVAL_SECONDS = 2, 2.0
# Validation loss uses at most this many clips, so an eval costs the same on any dataset.
EVAL_LOSS_CLIPS = 64


def check_sampling(cfg: ExperimentConfig) -> None:
    """Check the sampling settings the evaluation (and generate) will use, before training.

    The sampling settings are checked now by the samplers' own resolver (generate and the
    in-training evaluation call it too), not found broken after training.

    Raises:
        ValueError: ``sample: ...``, the resolver's reason.
    """
    try:
        make_sampling_spec(cfg, NoiseSchedule.from_config(cfg.diffusion))
    except ValueError as err:
        raise ValueError(f"sample: {err}") from None


def perceptual_scorer(cfg: ExperimentConfig) -> PerceptualScorer | None:
    """The MOS predictors of ``train.eval_perceptual`` (None when off).

    Perceptual validation needs optional packages: the scorer checks them now (its models load at
    the first evaluation), so a missing extra is refused before any data work.

    Raises:
        ValueError: ``train.eval_perceptual`` is on but its packages are missing.
    """
    if not cfg.train.eval_perceptual:
        return None
    try:
        return PerceptualScorer()
    except ModuleNotFoundError as err:
        raise ValueError(f"train.eval_perceptual: {err}") from None


@torch.no_grad()
def evaluate(trainer: Any) -> dict[str, float]:
    """Validation with the EMA weights: loss on fixed crops with fixed noise, and (vocoders) a
    copy synthesis of two clips with the model's own sampler and steps (``sample``), through the
    synthesis engine, scored by log-mel L1 and MR-STFT distance (and, with
    ``train.eval_perceptual``, DistillMOS and DNSMOS P.808).

    ``trainer`` is the :class:`audiodiff.train.Trainer` being trained (its EMA network, val set,
    schedule, domain and :meth:`~audiodiff.train.Trainer.model_inputs`)."""
    from audiodiff.metrics import log_mel_l1, mr_stft_distance

    cfg, val, ema, device = trainer.cfg, trainer.val_set, trainer.ema, trainer.device
    assert val is not None
    gen = torch.Generator(device)
    losses = []
    # One clip at a time, its noise seeded by its index: a clip's loss does not depend on
    # data.batch_size (which may change between resumes) or on the clips batched with it.
    for i in range(min(len(val), EVAL_LOSS_CLIPS)):
        batch = {k: v.unsqueeze(0) for k, v in val[i].items()}
        x0, cond, label = trainer.model_inputs(batch)
        gen.manual_seed(derived_seed("eval-loss", cfg.train.seed, i))
        loss = diffusion_loss(
            cfg, ema, x0, cond, label, schedule=trainer.schedule, domain=trainer.domain,
            generator=gen,
        )  # fmt: skip
        losses.append(loss)
    stats = {"val_loss": float(torch.cat(losses).mean())}
    if cfg.model.conditioning != "mel":
        return stats
    # The model's own sampler and step count, through the one engine the vocoder uses.
    spec = make_sampling_spec(cfg, trainer.schedule)
    denoiser = Denoiser(
        ema, trainer.schedule, target=cfg.diffusion.target, t_mapping=spec.t_mapping
    )
    mel_cpu = MelSpectrogram(cfg.mel)
    hop, scores = cfg.mel.hop_length, {"log_mel_l1": [], "mr_stft": []}
    for i in range(min(EVAL_CLIPS, len(val))):
        n = min(val.n_samples(i), int(EVAL_SECONDS * cfg.mel.sample_rate)) // hop * hop
        ref = val.read(i, 0, n).to(device).unsqueeze(0)  # [1, 1, T]
        _, cond, _ = trainer.model_inputs({"audio": ref, "label": torch.tensor([val.label_of(i)])})
        seed = derived_seed("eval-synthesis", cfg.train.seed, i)
        out = vocode_mel(
            denoiser, spec, trainer.domain, cond, seed=seed, chunk_samples=None, device=device
        ).clamp(-1, 1)
        r, g = ref[0, 0].double().cpu(), out[0, 0].double().cpu()
        scores["log_mel_l1"].append(float(log_mel_l1(r, g, mel_cpu.double())))
        scores["mr_stft"].append(float(mr_stft_distance(r, g)))
        if trainer.perceptual is not None:
            for key, value in trainer.perceptual.score(g.float(), cfg.mel.sample_rate).items():
                scores.setdefault(key, []).append(value)
        trainer.run_log.add_audio(
            f"copy_synthesis/{i}", out[0, 0].float().cpu(), mel_cpu, trainer.step
        )
    stats.update({k: sum(v) / len(v) for k, v in scores.items() if v})
    return stats
