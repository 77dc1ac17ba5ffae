"""Objective audio quality metrics of a generated waveform against its reference.

Pairing two folders and scoring every pair (the ``evaluate`` command) is
:mod:`audiodiff.evaluation`.

Every metric compares a reference waveform with a generated one of the same length (see
:func:`align_pair`). Distances (lower is better): multi-resolution STFT distance, log-mel L1,
mel-cepstral distortion, F0 RMSE, voiced/unvoiced error. Similarities (higher is better):
wide-band PESQ and STOI, only with the ``eval`` extra (``pip install 'audiodiff[eval]'``), which
also brings the reference-free MOS predictors of :mod:`audiodiff.perceptual` (``perceptual=True``
of :func:`audiodiff.evaluation.evaluate_dirs`).

Waveforms are ``[T]`` or ``[B, T]`` (``[B, 1, T]`` is accepted) float tensors or arrays; the
batched metrics return one value per item. Nothing here is differentiable by design: these are
measurements, computed in float64 where rounding would otherwise leave a non-zero distance
between identical inputs.
"""

from __future__ import annotations

import importlib.util
import math

import librosa
import numpy as np
import torch
from torch import Tensor

from audiodiff.audio import as_audio_batch, resample
from audiodiff.mel import MelSpectrogram
from audiodiff.spectral_loss import DEFAULT_RESOLUTIONS, mr_stft_terms, stft_magnitude

# Floor of the mel amplitude before the log of mel-cepstral distortion (HiFi-GAN's clip value).
MCD_MEL_FLOOR = 1e-5
# MCD = MCD_DB_PER_NEPER * sqrt(2 * sum of squared cepstral differences).
MCD_DB_PER_NEPER = 10.0 / math.log(10.0)
EVAL_EXTRA_HINT = "install the eval extra: pip install 'audiodiff[eval]'"


def _as_batch(x: Tensor | np.ndarray, name: str) -> Tensor:
    """``[T]``, ``[B, T]`` or ``[B, 1, T]`` -> float64 ``[B, T]`` on the CPU
    (:func:`audiodiff.audio.as_audio_batch`, which refuses other layouts)."""
    return as_audio_batch(x, name, torch.float64).cpu()


def _pair(ref: Tensor | np.ndarray, gen: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    r, g = _as_batch(ref, "ref"), _as_batch(gen, "gen")
    if r.shape != g.shape:
        raise ValueError(
            f"ref has shape {tuple(r.shape)} but gen has {tuple(g.shape)}; align them first "
            "(align_pair)"
        )
    return r, g


def align_pair(ref: Tensor, gen: Tensor, hop_length: int) -> tuple[Tensor, Tensor, int]:
    """Trim the longer of two waveforms to the shorter one when they differ by at most a hop.

    A vocoder's output may differ from its reference by a partial frame (``T // hop`` frames);
    anything larger means the pair is misaligned, and cropping it would hide that.

    Args:
        ref: reference ``[..., T_ref]``.
        gen: generated ``[..., T_gen]``.
        hop_length: the mel hop in samples: the largest difference that is trimmed.

    Returns:
        ``(ref, gen, trimmed_samples)`` with equal last dimensions; the trim is at the end.

    Raises:
        ValueError: the lengths differ by more than ``hop_length`` (both lengths named).
    """
    n_ref, n_gen = ref.shape[-1], gen.shape[-1]
    if abs(n_ref - n_gen) > hop_length:
        raise ValueError(
            f"lengths differ by more than one hop ({hop_length} samples): reference has {n_ref} "
            f"samples but generated has {n_gen}"
        )
    n = min(n_ref, n_gen)
    return ref[..., :n], gen[..., :n], abs(n_ref - n_gen)


def mr_stft_distance(
    ref: Tensor | np.ndarray,
    gen: Tensor | np.ndarray,
    *,
    resolutions: tuple[tuple[int, int, int], ...] = DEFAULT_RESOLUTIONS,
) -> Tensor:
    """Multi-resolution STFT distance (Yamamoto et al. 2020, Parallel WaveGAN, eq. 4-6), measured
    in float64 without gradients: :func:`audiodiff.spectral_loss.mr_stft_terms` defines it (the
    trainer's auxiliary loss is the same computation). 0 for identical inputs; unitless.

    Args:
        ref: reference ``[T]`` or ``[B, T]``.
        gen: generated, same shape.
        resolutions: ``(n_fft, hop_length, win_length)`` triples.

    Returns:
        ``[]`` for ``[T]`` inputs, ``[B]`` otherwise (float64).
    """
    r, g = _pair(ref, gen)
    out = mr_stft_terms(r, g, resolutions=resolutions)
    return out[0] if np.ndim(ref) == 1 else out


def log_mel_l1(ref: Tensor | np.ndarray, gen: Tensor | np.ndarray, mel: MelSpectrogram) -> Tensor:
    """Mean absolute difference of compressed mels in ``mel``'s profile (HiFi-GAN's "mel error").

    For ``ln`` profiles the unit is nepers of mel amplitude; for ``diffwave-db`` it is the
    profile's [0, 1] scale (1 = 100 dB). Computed in float64, so identical inputs give 0.

    Returns:
        ``[]`` for ``[T]`` inputs, ``[B]`` otherwise.
    """
    r, g = _pair(ref, gen)
    out = (mel(r) - mel(g)).abs().flatten(1).mean(dim=1)
    return out[0] if np.ndim(ref) == 1 else out


def mel_cepstrum(x: Tensor, sample_rate: int, *, n_cepstra: int = 13, n_mels: int = 40) -> Tensor:
    """Mel-cepstra ``c_1..c_n_cepstra`` of ``x`` ``[B, T]``: ``[B, frames, n_cepstra]``.

    Amplitude STFT (periodic Hann, ``n_fft`` = the power of two nearest 46 ms, hop ``n_fft/4``,
    centred), a Slaney mel filterbank of ``n_mels`` bands over 0 Hz..Nyquist, ``L = ln(max(mel,
    1e-5))``, then ``c_k = (1/N) sum_n L_n cos(pi k (n + 1/2) / N)``: the scaling under which
    ``L_n = c_0 + 2 sum_k c_k cos(...)``, the real-cepstrum convention the MCD constant assumes.
    """
    n_fft = 2 ** round(math.log2(0.046 * sample_rate))
    mag = stft_magnitude(x, n_fft, n_fft // 4, n_fft)
    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, dtype=np.float64)
    log_mel = (torch.from_numpy(fb) @ mag).clamp_min(MCD_MEL_FLOOR).log()  # [B, n_mels, frames]
    k = torch.arange(1, n_cepstra + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_mels, dtype=torch.float64)[None, :]
    dct = torch.cos(math.pi * k * (n + 0.5) / n_mels) / n_mels  # [n_cepstra, n_mels]
    return (dct @ log_mel).transpose(1, 2)


def mel_cepstral_distortion(
    ref: Tensor | np.ndarray,
    gen: Tensor | np.ndarray,
    sample_rate: int,
    *,
    n_cepstra: int = 13,
) -> Tensor:
    """Mel-cepstral distortion in dB (Kubichek 1993), on :func:`mel_cepstrum` features.

    ``MCD = (10 / ln 10) * sqrt(2 * sum_{k=1..K} (c_k - c'_k)^2)`` per frame (c_0, the loudness,
    excluded), averaged over all frames of the time-aligned pair (no DTW: copy synthesis is
    aligned by construction). No pysptk: the cepstra are MFCC-like, so values are comparable
    between systems scored here, not with numbers from SPTK mel-generalised cepstra.

    Returns:
        ``[]`` for ``[T]`` inputs, ``[B]`` otherwise, in dB.
    """
    r, g = _pair(ref, gen)
    diff = mel_cepstrum(r, sample_rate, n_cepstra=n_cepstra) - mel_cepstrum(
        g, sample_rate, n_cepstra=n_cepstra
    )
    out = MCD_DB_PER_NEPER * (2.0 * diff.pow(2).sum(dim=-1)).sqrt().mean(dim=-1)
    return out[0] if np.ndim(ref) == 1 else out


def eval_extra_available() -> bool:
    """Whether ``pesq`` and ``pystoi`` (the ``eval`` extra) are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("pesq", "pystoi"))


def _mono(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    t = _as_batch(x, name)
    if t.shape[0] != 1:
        raise ValueError(f"{name} must be a single waveform, got a batch of {t.shape[0]}")
    return t[0].numpy()


def pesq_wb(ref: Tensor | np.ndarray, gen: Tensor | np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2), MOS-LQO in [1.04, 4.64], both resampled to 16 kHz.

    Raises:
        ModuleNotFoundError: without the ``eval`` extra (the message says how to install it).
        ValueError: PESQ found no speech, or another PESQ error (its message kept).
    """
    if importlib.util.find_spec("pesq") is None:
        raise ModuleNotFoundError(f"PESQ needs the 'pesq' package; {EVAL_EXTRA_HINT}")
    import pesq

    r = resample(torch.from_numpy(_mono(ref, "ref")), sample_rate, 16000).numpy()
    g = resample(torch.from_numpy(_mono(gen, "gen")), sample_rate, 16000).numpy()
    try:
        return float(pesq.pesq(16000, r, g, "wb"))
    except pesq.PesqError as err:
        raise ValueError(f"PESQ failed: {type(err).__name__} {err}") from None


def stoi(ref: Tensor | np.ndarray, gen: Tensor | np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (Taal et al. 2011) in [0, 1], via pystoi.

    Raises:
        ModuleNotFoundError: without the ``eval`` extra (the message says how to install it).
    """
    if importlib.util.find_spec("pystoi") is None:
        raise ModuleNotFoundError(f"STOI needs the 'pystoi' package; {EVAL_EXTRA_HINT}")
    from pystoi import stoi as _stoi

    return float(_stoi(_mono(ref, "ref"), _mono(gen, "gen"), sample_rate, extended=False))


def f0_errors(
    ref: Tensor | np.ndarray,
    gen: Tensor | np.ndarray,
    sample_rate: int,
    *,
    f_min_hz: float = 65.0,
    f_max_hz: float = 1000.0,
) -> tuple[float, float]:
    """F0 RMSE and voicing error from pYIN (Mauch & Dixon 2014, librosa.pyin).

    Returns:
        ``(f0_rmse_hz, vuv_error)``: RMSE in Hz over frames voiced in both (NaN if none), and the
        fraction of frames whose voiced/unvoiced decisions differ.
    """
    frame_length = 2 ** round(math.log2(0.093 * sample_rate))  # ~93 ms: two periods of 20 Hz
    kwargs = {"fmin": f_min_hz, "fmax": f_max_hz, "sr": sample_rate}
    kwargs["frame_length"] = frame_length
    f0_r, voiced_r, _ = librosa.pyin(_mono(ref, "ref"), **kwargs)
    f0_g, voiced_g, _ = librosa.pyin(_mono(gen, "gen"), **kwargs)
    both = voiced_r & voiced_g
    rmse = float(np.sqrt(np.mean((f0_r[both] - f0_g[both]) ** 2))) if both.any() else math.nan
    return rmse, float(np.mean(voiced_r != voiced_g))


def real_time_factor(compute_s: float, audio_s: float) -> float:
    """Seconds of compute per second of audio produced (< 1 is faster than real time)."""
    if audio_s <= 0:
        raise ValueError(f"audio_s must be positive, got {audio_s} (compute_s {compute_s})")
    return compute_s / audio_s
