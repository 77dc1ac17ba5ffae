"""The input checks of a mel given to a vocoder: its layout, its profile and its value range
against the model's mel convention, each refusal naming what was measured and what was expected.
Moved here from :mod:`audiodiff.vocoder` (which re-exports them) unchanged."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from audiodiff.config import MelConfig, mel_profile
from audiodiff.config_rules import canonical_mel
from audiodiff.mel import mel_value_range


def _as_mel_tensor(mel: Any) -> torch.Tensor:
    """``mel`` as a ``[B, n_mels, frames]`` float tensor in its own dtype (not yet cast)."""
    if isinstance(mel, np.ndarray):
        # ascontiguousarray: torch.from_numpy refuses negative strides (a reversed view).
        mel = torch.from_numpy(np.ascontiguousarray(mel))
    if not isinstance(mel, torch.Tensor):
        raise ValueError(f"mel must be a NumPy array or torch tensor, got {type(mel).__name__}")
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.dim() != 3:
        raise ValueError(
            f"mel must be [n_mels, frames] or [batch, n_mels, frames], got shape {tuple(mel.shape)}"
        )
    if not mel.is_floating_point():
        raise ValueError(f"mel must hold floats, got dtype {mel.dtype}")
    return mel


def describe_convention(cfg: MelConfig) -> str:
    """One phrase naming a profile's mel convention, for error messages."""
    lo, hi = mel_value_range(cfg)
    kind = "ln(mel)" if cfg.compression == "ln" else "dB normalised to 0..1"
    return (
        f"profile {cfg.name!r}: {cfg.n_mels} bins, {cfg.sample_rate} Hz, hop {cfg.hop_length}, "
        f"{kind}, values in [{lo:.2f}, {hi:.2f}]"
    )


# Slack on the profile's value range for float32 mels (rounding of the log and the filterbank).
MEL_RANGE_TOLERANCE = 1e-3


def mel_range_tolerance(dtype: torch.dtype, cfg: MelConfig) -> float:
    """Slack on :func:`mel_value_range` for a mel stored in ``dtype``: the larger of
    :data:`MEL_RANGE_TOLERANCE` and one unit in the last place at the range's largest magnitude
    (``eps * |value|``), so a float16 ``ln(1e-5)`` (stored as -11.516) is not refused."""
    lo, hi = mel_value_range(cfg)
    return max(MEL_RANGE_TOLERANCE, torch.finfo(dtype).eps * max(abs(lo), abs(hi)))


def profile_difference(a: MelConfig, b: MelConfig) -> str | None:
    """The first parameter in which two mel profiles differ, as ``"field: A vs B"``, or None.

    Names are not compared: a renamed copy of a profile computes the same mels, and a profile
    that keeps a name but changes a parameter does not. ``f_max: null`` equals ``sample_rate / 2``
    (:func:`audiodiff.config_rules.canonical_mel`).
    """
    a, b = canonical_mel(a), canonical_mel(b)
    if dataclasses.replace(a, name=b.name) == b:
        return None
    field = next(
        f.name
        for f in dataclasses.fields(a)
        if f.name != "name" and getattr(a, f.name) != getattr(b, f.name)
    )
    return f"{field}: {getattr(a, field)!r} vs {getattr(b, field)!r}"


def check_profile(profile: MelConfig | str, cfg: MelConfig, *, what: str = "the mel") -> None:
    """Refuse ``what`` (computed with ``profile``) for a model of profile ``cfg``.

    Raises:
        ValueError: an unknown profile name, or parameters that differ, naming both profiles
            and the first differing parameter.
    """
    if isinstance(profile, str):
        profile = mel_profile(profile)
    diff = profile_difference(profile, cfg)
    if diff is not None:
        # Suggest --profile NAME only when that named profile is this model's: a model trained
        # with a changed parameter keeps the name, and NAME would be refused again.
        try:
            named = profile_difference(mel_profile(cfg.name), cfg) is None
        except ValueError:  # a custom name
            named = False
        how = f"--profile {cfg.name} or --from MODEL" if named else "--from MODEL"
        raise ValueError(
            f"{what} was computed with mel profile {profile.name!r} but this vocoder uses "
            f"{cfg.name!r} ({diff}); recompute it with {how}"
        )


def check_mel(mel: Any, cfg: MelConfig, profile: MelConfig | str | None = None) -> torch.Tensor:
    """Validate a mel against a profile; return it as float32 ``[B, n_mels, frames]``.

    ``profile``, when known (e.g. recorded in the mel file), is the profile the mel was computed
    with; it must have ``cfg``'s parameters (:func:`check_profile`).

    The range check allows :func:`mel_range_tolerance` for the mel's own dtype (checked before
    the cast to float32), or float16's when the values beyond float32's slack are all float16
    numbers (a half-precision mel cast up, or batched with float32 ones). A refusal names the
    measured values and the profile's limits:

    - an ln-mel model given values all in 0..1: the 'diffwave' dB convention, not ln(mel);
    - a 0..1 dB model given negative values: an ln-compressed mel, not dB;
    - values below the floor: made with another floor or compression;
    - values above the highest value audio in [-1, 1] can give: the audio was above full scale
      (or scaled differently).

    Raises:
        ValueError: a ``profile`` with other parameters, wrong rank, wrong number of bins,
            non-finite values, or values outside the profile's range.
    """
    if profile is not None:
        check_profile(profile, cfg)
    mel = _as_mel_tensor(mel)
    tol = mel_range_tolerance(mel.dtype, cfg)
    mel = mel.float()
    lo, hi = mel_value_range(cfg)
    outside = (mel < lo - tol) | (mel > hi + tol)
    if outside.any() and torch.equal(mel[outside].half().float(), mel[outside]):
        # Every value past the float32 slack is a float16 number: a half-precision mel cast up
        # (by the caller, or by batching it with float32 ones) carries float16's rounding.
        tol = mel_range_tolerance(torch.float16, cfg)
    if mel.shape[1] != cfg.n_mels:
        # librosa and most TTS code keep [frames, n_mels] rows; the bins are then the last axis.
        transposed = (
            f"; its last axis has {cfg.n_mels}, so it is likely transposed ([frames, n_mels], "
            "as librosa users often hold it): pass mel.T"
            if mel.shape[2] == cfg.n_mels
            else ""
        )
        raise ValueError(
            f"mel has {mel.shape[1]} bins but this vocoder expects {cfg.n_mels} "
            f"({describe_convention(cfg)}){transposed}"
        )
    if mel.shape[2] < 1:
        raise ValueError("mel has no frames")
    if not torch.isfinite(mel).all():
        raise ValueError("mel holds NaN or infinite values")
    v_min, v_max = float(mel.min()), float(mel.max())
    span = f"mel values span [{v_min:.2f}, {v_max:.2f}]"
    expects = f"this vocoder expects {describe_convention(cfg)}"
    if cfg.compression == "ln" and v_min >= 0.0 and v_max <= 1.0:
        raise ValueError(
            f"{span}, all within 0..1 as a dB mel normalised to 0..1 (the 'diffwave' "
            f"convention) is, but {expects}"
        )
    if cfg.compression == "diffwave-db" and v_min < lo - tol:
        raise ValueError(
            f"{span}, below 0 as an ln-compressed mel (hifigan/bigvgan convention) is, but "
            f"{expects}"
        )
    if v_min < lo - tol:
        raise ValueError(
            f"{span}: the minimum {v_min:.4f} is below the profile's floor {lo:.4f} (tolerance "
            f"{tol:.1e}), so it was made with another floor or compression; {expects}"
        )
    if cfg.compression == "diffwave-db" and v_max > hi + tol:
        raise ValueError(f"{span}: the maximum is above 1, the top of the 0..1 scale; {expects}")
    if v_max > hi + tol:
        raise ValueError(
            f"{span}: the maximum {v_max:.2f} is above {hi:.2f}, the highest value audio in "
            f"[-1, 1] can give with profile {cfg.name!r}, so the audio was above full scale or "
            f"the mel was scaled differently; {expects}"
        )
    return mel
