"""Cross-field rules of the experiment config: ``validate``, derived values, resume changes.

:func:`validate` checks the rules no single field's type can say (a hop the upsampler can
realise, a mel band below Nyquist, labels that match ``model.n_labels``, ...); the derived values
(upsampler strides, the diffused variable's channels) are computed here too, and
:func:`architecture_changes` lists what a resume may not change. It imports no torch.
"""

from __future__ import annotations

import dataclasses
import math

from audiodiff.config import (
    ARCHITECTURE_SECTIONS,
    CONFIG_VERSION,
    MR_STFT_RESOLUTIONS,
    ExperimentConfig,
    MelConfig,
)
from audiodiff.config_io import to_dict

# Largest stride of one transposed-convolution stage of the conditioner upsampler. Its kernel is
# 2 x stride wide along time, so a larger stride means a very wide, poorly conditioned kernel.
MAX_UPSAMPLE_STRIDE = 32


# --------------------------------------------------------------------------------------------------
# Cross-field rules
# --------------------------------------------------------------------------------------------------


def upsample_factors(hop_length: int) -> list[int]:
    """Strides of the conditioner upsampler whose product is ``hop_length``.

    Uses the fewest stages (2, else 3) whose largest stride is as small as possible, each at most
    ``MAX_UPSAMPLE_STRIDE``: 256 -> [16, 16], 300 -> [15, 20], 200 -> [10, 20], 512 -> [16, 32],
    240 -> [15, 16], 441 -> [21, 21].

    Raises:
        ValueError: when no such factorisation exists (for example a prime hop above 32).
    """
    if hop_length < 1:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    if hop_length <= MAX_UPSAMPLE_STRIDE:
        return [hop_length]
    for n_stages in (2, 3):
        best: list[int] | None = None
        for a in range(2, MAX_UPSAMPLE_STRIDE + 1):
            if hop_length % a:
                continue
            rest = hop_length // a
            if n_stages == 2:
                cand = sorted([a, rest])
            else:
                cand = None
                for b in range(a, MAX_UPSAMPLE_STRIDE + 1):
                    if rest % b == 0 and rest // b >= b:
                        trial = sorted([a, b, rest // b])
                        if trial[-1] <= MAX_UPSAMPLE_STRIDE and (
                            cand is None or trial[-1] < cand[-1]
                        ):
                            cand = trial
                if cand is None:
                    continue
            if cand[-1] <= MAX_UPSAMPLE_STRIDE and (best is None or cand[-1] < best[-1]):
                best = cand
        if best is not None:
            return best
    largest = max(p for p in _prime_factors(hop_length))
    raise ValueError(
        f"hop_length {hop_length} cannot be split into at most 3 upsampler strides of at most "
        f"{MAX_UPSAMPLE_STRIDE} (its largest prime factor is {largest}); choose a hop such as 200, "
        "240, 256, 300, 441 or 512"
    )


def _prime_factors(n: int) -> list[int]:
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    if n > 1:
        out.append(n)
    return out


def resolved_upsample_factors(cfg: ExperimentConfig) -> list[int]:
    """The model's upsampler strides: the explicit ones, else derived from the mel hop."""
    return list(cfg.model.upsample_factors) or upsample_factors(cfg.mel.hop_length)


def model_channels(cfg: ExperimentConfig) -> int:
    """Channels of the variable the network diffuses: 1 (waveform), ``n_mels`` (mel) or
    ``2 * (n_fft // 2 + 1)`` (stft: real and imaginary parts)."""
    if cfg.model.domain == "mel":
        return cfg.mel.n_mels
    if cfg.model.domain == "stft":
        return 2 * (cfg.mel.n_fft // 2 + 1)
    return 1


def check_refinement(
    mel_match_iters: int,
    griffin_lim_iters: int,
    magnitude_blend: float,
    momentum: float,
    *,
    prefix: str = "",
) -> bool:
    """Refuse refinement settings out of range (the config's ``sample`` ones and
    :class:`audiodiff.consistency.Refinement`); return whether they change the network's STFT
    at all. ``prefix`` names the settings in the messages (``"sample."`` for a config).

    Raises:
        ValueError: negative iterations, or a blend or momentum outside [0, 1].
    """
    if mel_match_iters < 0 or griffin_lim_iters < 0:
        raise ValueError(
            f"{prefix}mel_match_iters and {prefix}griffin_lim_iters must be >= 0, got "
            f"{mel_match_iters} and {griffin_lim_iters}"
        )
    if not 0 <= magnitude_blend <= 1:
        raise ValueError(f"{prefix}magnitude_blend must be in [0, 1], got {magnitude_blend}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"{prefix}griffin_lim_momentum must be in [0, 1], got {momentum}")
    return mel_match_iters > 0 or griffin_lim_iters > 0 or magnitude_blend < 1


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check cross-field rules; return ``cfg`` unchanged.

    Raises:
        ValueError: the first broken rule, naming the fields and values involved.
    """
    m, mo, d, da, tr, sa = cfg.mel, cfg.model, cfg.diffusion, cfg.data, cfg.train, cfg.sample
    if cfg.config_version != CONFIG_VERSION:
        raise ValueError(
            f"config_version {cfg.config_version} is not supported (this audiodiff reads "
            f"{CONFIG_VERSION})"
        )
    positive = {
        "mel.sample_rate": m.sample_rate,
        "mel.n_fft": m.n_fft,
        "mel.win_length": m.win_length,
        "mel.hop_length": m.hop_length,
        "mel.n_mels": m.n_mels,
        "model.residual_channels": mo.residual_channels,
        "model.residual_layers": mo.residual_layers,
        "model.dilation_cycle": mo.dilation_cycle,
        "model.kernel_size": mo.kernel_size,
        "diffusion.n_steps": d.n_steps,
        "data.segment_frames": da.segment_frames,
        "data.batch_size": da.batch_size,
        "train.grad_accum": tr.grad_accum,
        "train.log_every": tr.log_every,
        "train.eval_every": tr.eval_every,
        "train.save_every": tr.save_every,
        "train.keep_last": tr.keep_last,
        "train.max_bad_steps": tr.max_bad_steps,
        "sample.steps": sa.steps,
        "model.step_embedding_dim": mo.step_embedding_dim,
        "model.step_mlp_dim": mo.step_mlp_dim,
    }
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"{key} must be at least 1, got {value}")
    if m.win_length > m.n_fft:
        raise ValueError(f"mel.win_length {m.win_length} exceeds mel.n_fft {m.n_fft}")
    if m.hop_length > m.win_length:
        raise ValueError(f"mel.hop_length {m.hop_length} exceeds mel.win_length {m.win_length}")
    if m.padding == "hifigan" and (m.n_fft - m.hop_length) % 2:
        raise ValueError(
            f"hifigan padding needs n_fft - hop_length even, got {m.n_fft} - {m.hop_length}"
        )
    nyquist = m.sample_rate / 2
    f_max = nyquist if m.f_max is None else m.f_max
    if not 0 <= m.f_min < f_max <= nyquist:
        raise ValueError(
            f"mel band must satisfy 0 <= f_min < f_max <= sample_rate/2, got f_min {m.f_min}, "
            f"f_max {m.f_max}, sample_rate/2 {nyquist}"
        )
    if m.power <= 0:
        raise ValueError(f"mel.power must be positive, got {m.power}")
    if mo.kernel_size % 2 == 0:
        raise ValueError(
            f"model.kernel_size must be odd (same-length dilated conv), got {mo.kernel_size}"
        )
    if mo.n_labels < 0:
        raise ValueError(f"model.n_labels must be >= 0, got {mo.n_labels}")
    if mo.domain == "mel" and mo.conditioning == "mel":
        raise ValueError(
            "model.domain 'mel' generates mels, so model.conditioning must be 'none', not 'mel'"
        )
    if mo.domain == "stft":
        if mo.conditioning != "mel":
            raise ValueError(
                "model.domain 'stft' is a vocoder domain, so model.conditioning must be 'mel', "
                f"not {mo.conditioning!r}"
            )
        if m.compression != "ln":
            raise ValueError(
                f"model.domain 'stft' needs an ln-compressed mel (mel.compression 'ln'), got "
                f"{m.compression!r}"
            )
        if not 1 <= mo.bands <= m.n_fft // 2 + 1:
            raise ValueError(
                f"model.bands must be in [1, n_fft / 2 + 1 = {m.n_fft // 2 + 1}], got {mo.bands}"
            )
        if mo.bands > 1 and mo.n_labels > 0:
            raise ValueError("a sub-band stft model (model.bands > 1) takes no class labels")
        if not 0 < mo.stft_compression <= 1:
            raise ValueError(f"model.stft_compression must be in (0, 1], got {mo.stft_compression}")
        if mo.architecture == "convnext" and (mo.bands != 1 or mo.n_labels != 0):
            raise ValueError(
                "model.architecture 'convnext' takes neither sub-bands nor labels (model.bands "
                f"{mo.bands}, model.n_labels {mo.n_labels})"
            )
    elif mo.architecture != "diffwave":
        raise ValueError(
            f"model.architecture {mo.architecture!r} is only for model.domain 'stft', not "
            f"{mo.domain!r}"
        )
    elif mo.bands != 1:
        raise ValueError(f"model.bands {mo.bands} is only for model.domain 'stft'")
    elif mo.prior != "standard" and (mo.domain != "waveform" or mo.conditioning != "mel"):
        raise ValueError(
            f"model.prior {mo.prior!r} needs the conditioning mel: it is for vocoders in the "
            f"stft or waveform domain, not a {mo.domain!r} model with conditioning "
            f"{mo.conditioning!r}"
        )
    if mo.domain == "waveform" and mo.conditioning == "mel":
        factors = resolved_upsample_factors(cfg)
        if math.prod(factors) != m.hop_length:
            raise ValueError(
                f"model.upsample_factors {factors} multiply to {math.prod(factors)} but "
                f"mel.hop_length is {m.hop_length}"
            )
        if any(f < 1 for f in factors):
            raise ValueError(f"model.upsample_factors must be positive, got {factors}")
    if d.schedule in ("linear", "linear-zsnr") and not 0 < d.beta_start < d.beta_end < 1:
        raise ValueError(
            f"linear schedule needs 0 < beta_start < beta_end < 1, got {d.beta_start}, {d.beta_end}"
        )
    if not 0 <= d.label_dropout < 1:
        raise ValueError(f"diffusion.label_dropout must be in [0, 1), got {d.label_dropout}")
    for name, weight in (("spectral_loss", tr.spectral_loss), ("mel_loss", tr.mel_loss)):
        if weight < 0:
            raise ValueError(f"train.{name} must be >= 0, got {weight}")
        if weight > 0 and mo.domain == "mel":
            raise ValueError(
                f"train.{name} compares decoded audio, but a mel-domain model produces mels"
            )
    longest_fft = max(n_fft for n_fft, _, _ in MR_STFT_RESOLUTIONS)
    if tr.spectral_loss > 0 and da.segment_frames * m.hop_length <= longest_fft // 2:
        raise ValueError(
            f"train.spectral_loss needs crops longer than {longest_fft // 2} samples (its "
            f"longest STFT), but data.segment_frames {da.segment_frames} x hop {m.hop_length} "
            f"is {da.segment_frames * m.hop_length}"
        )
    if cfg.labels and len(cfg.labels) != mo.n_labels:
        raise ValueError(
            f"labels names {len(cfg.labels)} classes ({', '.join(cfg.labels)}) but "
            f"model.n_labels is {mo.n_labels}"
        )
    if len(set(cfg.labels)) != len(cfg.labels):
        raise ValueError(f"labels must be distinct names, got {cfg.labels}")
    if d.label_dropout > 0 and mo.n_labels == 0:
        raise ValueError("diffusion.label_dropout > 0 needs model.n_labels > 0 (nothing to drop)")
    if sa.guidance != 0 and (mo.n_labels == 0 or d.label_dropout == 0):
        raise ValueError(
            f"sample.guidance {sa.guidance} needs a label-conditional model trained with "
            "diffusion.label_dropout > 0"
        )
    if da.num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {da.num_workers}")
    if tr.lr <= 0:
        raise ValueError(f"train.lr must be positive, got {tr.lr}")
    if not 0 <= tr.ema_decay < 1:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {tr.ema_decay}")
    if len(tr.adam_betas) != 2 or not all(0 <= b < 1 for b in tr.adam_betas):
        raise ValueError(f"train.adam_betas must be two numbers in [0, 1), got {tr.adam_betas}")
    if tr.max_steps < 0 or tr.warmup_steps < 0:
        raise ValueError("train.max_steps and train.warmup_steps must be >= 0")
    if not tr.save_every_minutes >= 0:  # NaN too
        raise ValueError(
            f"train.save_every_minutes must be >= 0 (0 disables), got {tr.save_every_minutes}"
        )
    if tr.grad_clip < 0:
        raise ValueError(f"train.grad_clip must be >= 0 (0 disables), got {tr.grad_clip}")
    if tr.lr_decay == "step":
        ms = tr.lr_milestones
        if not ms or any(b <= a for a, b in zip(ms, ms[1:], strict=False)) or ms[0] < 1:
            raise ValueError(
                f"train.lr_decay 'step' needs train.lr_milestones: increasing steps >= 1, got {ms}"
            )
        if not 0 < tr.lr_gamma <= 1:
            raise ValueError(f"train.lr_gamma must be in (0, 1], got {tr.lr_gamma}")
    if sa.sigmas and any(s <= 0 for s in sa.sigmas):
        raise ValueError(f"sample.sigmas must be positive, got {sa.sigmas}")
    if not 0 <= sa.eta <= 1:
        raise ValueError(f"sample.eta must be in [0, 1], got {sa.eta}")
    _check_estimate_start(cfg)
    refining = check_refinement(
        sa.mel_match_iters, sa.griffin_lim_iters, sa.magnitude_blend, sa.griffin_lim_momentum,
        prefix="sample.",
    )  # fmt: skip
    if refining and cfg.model.domain != "stft":
        raise ValueError(
            "sample.mel_match_iters, sample.griffin_lim_iters and sample.magnitude_blend refine "
            f"an STFT: they need model.domain 'stft', not {cfg.model.domain!r}"
        )
    return cfg


def _check_estimate_start(cfg: ExperimentConfig) -> None:
    """The ``model.start``, phase-loss and adversarial rules: an estimate start is an stft
    vocoder's, with a sigma range and a sampling sigma that are positive and ordered; the
    adversarial stage judges a vocoder's decoded audio."""
    mo, d, sa, tr = cfg.model, cfg.diffusion, cfg.sample, cfg.train
    for name, weight in (("phase_loss", tr.phase_loss), ("consistency_loss", tr.consistency_loss)):
        if weight < 0:
            raise ValueError(f"train.{name} must be >= 0, got {weight}")
        if weight > 0 and mo.domain != "stft":
            raise ValueError(f"train.{name} compares STFT frames: it needs model.domain 'stft'")
    adversarial = tr.adversarial > 0 or tr.feature_matching > 0
    if tr.adversarial < 0 or tr.feature_matching < 0:
        raise ValueError(
            "train.adversarial and train.feature_matching must be >= 0, got "
            f"{tr.adversarial} and {tr.feature_matching}"
        )
    if adversarial and (mo.domain == "mel" or mo.conditioning != "mel"):
        raise ValueError(
            "train.adversarial and train.feature_matching judge decoded audio against the clean "
            "audio: they need a vocoder (waveform or stft domain, conditioning 'mel')"
        )
    if tr.adversarial_start_step < 0 or tr.adversarial_batch < 0:
        raise ValueError("train.adversarial_start_step and train.adversarial_batch must be >= 0")
    if tr.discriminator_lr <= 0 or tr.discriminator_channels < 1:
        raise ValueError(
            "train.discriminator_lr must be positive and train.discriminator_channels >= 1, got "
            f"{tr.discriminator_lr} and {tr.discriminator_channels}"
        )
    if mo.start == "noise":
        if d.target == "residual":
            raise ValueError(
                "diffusion.target 'residual' is a correction to the estimate sampling starts "
                "from: it needs model.start 'estimate'"
            )
        return
    if mo.domain != "stft" or mo.conditioning != "mel":
        raise ValueError(
            "model.start 'estimate' starts from the STFT a mel implies: it needs an stft-domain "
            f"vocoder (model.domain 'stft', conditioning 'mel'), not domain {mo.domain!r} with "
            f"conditioning {mo.conditioning!r}"
        )
    if mo.estimate_nnls_iters < 0 or mo.estimate_griffin_lim_iters < 0:
        raise ValueError(
            "model.estimate_nnls_iters and model.estimate_griffin_lim_iters must be >= 0, got "
            f"{mo.estimate_nnls_iters} and {mo.estimate_griffin_lim_iters}"
        )
    if not 0 < d.start_sigma_min <= d.start_sigma_max:
        raise ValueError(
            "diffusion.start_sigma_min and start_sigma_max must satisfy 0 < min <= max, got "
            f"{d.start_sigma_min} and {d.start_sigma_max}"
        )
    if sa.start_sigma <= 0:
        raise ValueError(f"sample.start_sigma must be positive, got {sa.start_sigma}")


def canonical_mel(m: MelConfig) -> MelConfig:
    """``m`` with its band in one spelling: ``f_max: null`` means ``sample_rate / 2`` (librosa's
    reading), so a profile written either way compares equal to the other (an 11025 Hz model
    accepts a ``null`` mel at 22050 Hz), and numbers as floats (``f_min: 0`` is ``0.0``)."""
    f_max = m.sample_rate / 2 if m.f_max is None else m.f_max
    return dataclasses.replace(m, f_min=float(m.f_min), f_max=float(f_max))


def architecture_changes(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """Fields of the architecture sections that differ, as ``section.field: old -> new`` lines
    (the mel band compared in one spelling, :func:`canonical_mel`)."""
    changes = []
    old = dataclasses.replace(old, mel=canonical_mel(old.mel))
    new = dataclasses.replace(new, mel=canonical_mel(new.mel))
    a, b = to_dict(old), to_dict(new)
    for section in ARCHITECTURE_SECTIONS:
        for key in a[section]:
            if a[section][key] != b[section][key]:
                changes.append(f"{section}.{key}: {a[section][key]!r} -> {b[section][key]!r}")
    return changes
