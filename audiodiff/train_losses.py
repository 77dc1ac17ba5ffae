"""The auxiliary losses a vocoder adds to its diffusion loss, all on the network's clean estimate.

* ``train.spectral_loss``: the multi-resolution STFT distance (:mod:`audiodiff.spectral_loss`)
  between the audio decoded from the estimate and the clean audio;
* ``train.mel_loss``: HiFi-GAN's mel loss (Kong et al. 2020): mean ``|mel(audio) - mel(clean)|``
  in the profile's compressed mel (for a vocoder, ``cond`` is that mel already);
* ``train.phase_loss`` (stft domain): the sum of APNet2's anti-wrapping instantaneous-phase,
  group-delay and instantaneous-angular-frequency losses (:mod:`audiodiff.phase_loss`) between
  the estimate's compressed STFT and the clean one;
* ``train.consistency_loss`` (stft domain): the mean squared distance, in the whitened units
  the network predicts, between the estimate and the STFT of its own inverse (APNet2's STFT
  consistency loss): frames that no signal has partly cancel when they are heard;
* the adversarial stage's generator terms (:mod:`audiodiff.train_adversarial`), given as
  ``judge``: hinge loss and feature matching of the decoded audio against the clean audio.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from audiodiff.config import ExperimentConfig, TrainConfig
from audiodiff.diffusion import start_training_loss, training_loss
from audiodiff.domains import Domain
from audiodiff.mel import MelSpectrogram
from audiodiff.phase_loss import phase_losses
from audiodiff.schedule import NoiseSchedule
from audiodiff.spectral_loss import mr_stft_terms


def diffusion_loss(
    cfg: ExperimentConfig,
    net: torch.nn.Module,
    x0: Tensor,
    cond: Tensor | None,
    label: Tensor | None,
    *,
    schedule: NoiseSchedule,
    domain: Domain,
    generator: torch.Generator,
    label_dropout: float = 0.0,
    x0_loss: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The run's per-example diffusion loss ``[B]``, for training and validation alike: from the
    domain's DSP estimate (``model.start: estimate``,
    :func:`audiodiff.diffusion.start_training_loss`) or DiffWave's
    (:func:`audiodiff.diffusion.training_loss`), plus ``x0_loss`` (:func:`auxiliary_loss`)."""
    d = cfg.diffusion
    if cfg.model.start == "estimate":
        with torch.no_grad():
            x_start = domain.estimate(cond).to(x0.dtype)
        return start_training_loss(
            net, x0, x_start, schedule=schedule, cond=cond, target=d.target, loss=d.loss,
            generator=generator, x0_loss=x0_loss,
            sigma_range=(d.start_sigma_min, d.start_sigma_max),
        )  # fmt: skip
    return training_loss(
        net, x0, schedule=schedule, cond=cond, label=label, target=d.target, loss=d.loss,
        generator=generator, label_dropout=label_dropout, x0_loss=x0_loss,
    )  # fmt: skip


def auxiliary_loss(
    tr: TrainConfig,
    domain: Domain,
    mel: MelSpectrogram,
    x0: Tensor,
    cond: Tensor | None,
    judge: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Callable[[Tensor], Tensor] | None:
    """The weighted sum of the auxiliary losses (module docstring) as a function of the clean
    estimate, or None when every weight is 0.

    Args:
        tr: the weights (``spectral_loss``, ``mel_loss``, ``phase_loss``, ``consistency_loss``).
        domain: the model's domain (decodes estimates to audio).
        mel: the profile's mel transform, on the training device.
        x0: ``[B, C, L]`` the clean (whitened) signal; ``cond``: its ``[B, n_mels, frames]`` mel.
        judge: ``(real [B, T], generated [B, T]) -> [B]``, the adversarial stage's generator
            terms, or None.

    Returns:
        ``x0_hat [B, C, L] -> [B]``, in ``x0_hat``'s dtype.
    """
    decoded = tr.spectral_loss > 0 or tr.mel_loss > 0 or tr.consistency_loss > 0
    decoded = decoded or judge is not None
    if not decoded and tr.phase_loss == 0:
        return None
    with torch.no_grad():
        ref = domain.from_model(x0, cond)[:, 0].float() if decoded else None
        # A vocoder's conditioning is already the mel of this audio.
        ref_mel = (cond if cond is not None else mel(ref)) if tr.mel_loss else None
        ref_spec = domain.compressed(x0, cond) if tr.phase_loss else None

    def loss(x0_hat: Tensor) -> Tensor:
        total = torch.zeros(x0_hat.shape[0], device=x0_hat.device)
        if decoded:
            gen = domain.from_model(x0_hat, cond)[:, 0].float()
            if tr.spectral_loss:
                total = total + tr.spectral_loss * mr_stft_terms(ref, gen)
            if tr.mel_loss:
                mel_error = (mel(gen) - ref_mel).abs().flatten(1).mean(dim=1)
                total = total + tr.mel_loss * mel_error
            if judge is not None:
                total = total + judge(ref, gen)
            if tr.consistency_loss:
                heard = domain.to_model(gen, cond).to(x0_hat.dtype)
                error = (heard - x0_hat).square().flatten(1).mean(dim=1)
                total = total + tr.consistency_loss * error
        if tr.phase_loss:
            ip, gd, iaf = phase_losses(domain.compressed(x0_hat, cond), ref_spec)
            total = total + tr.phase_loss * (ip + gd + iaf)
        return total.to(x0_hat.dtype)

    return loss
