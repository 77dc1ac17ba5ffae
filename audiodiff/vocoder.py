"""The stable inference API: ``Vocoder`` (mel -> waveform) over the sampling engine of
:mod:`audiodiff.synthesis` (chunked long-form synthesis with positional noise; see there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from audiodiff.audio import as_audio_batch, check_level, load_model_audio, resample
from audiodiff.config import ExperimentConfig, MelConfig, mel_profile
from audiodiff.config_rules import canonical_mel
from audiodiff.diffusion import Denoiser
from audiodiff.dist import resolve_device
from audiodiff.domains import build_domain
from audiodiff.input_notes import InputNotes
from audiodiff.mel import MelSpectrogram, mel_value_range
from audiodiff.model import DiffWave
from audiodiff.pretrained import load_network
from audiodiff.schedule import NoiseSchedule
from audiodiff.seeds import item_key, resolve_seed
from audiodiff.synthesis import halo_units, make_sampling_spec, mel_chunk_count, vocode_mel


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


class Vocoder:
    """Mel spectrogram -> waveform with a trained (or imported) DiffWave model.

    Build it with :meth:`from_pretrained`; the network is rebuilt from the config stored with the
    weights, never from defaults.
    """

    def __init__(self, net: DiffWave, cfg: ExperimentConfig, *, device: Any = None) -> None:
        if cfg.model.domain not in ("waveform", "stft") or cfg.model.conditioning != "mel":
            raise ValueError(
                f"a Vocoder needs a mel-conditioned waveform or stft model, but this one has "
                f"domain={cfg.model.domain!r}, conditioning={cfg.model.conditioning!r}"
            )
        self.device = resolve_device(None if device is None else str(device), option="device")
        self.config = cfg
        self.net = net.to(self.device).eval()
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        self._mel = MelSpectrogram(cfg.mel).to(self.device)
        self.domain = build_domain(cfg, self.net)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: Any = None) -> Vocoder:
        """Load a training checkpoint, a run directory, an exported ``.safetensors`` or a name.

        Raises:
            ValueError: a device this machine lacks (checked before loading), unreadable file,
                not an audiodiff model, or not a vocoder.
        """
        device = resolve_device(None if device is None else str(device), option="device")
        net, cfg, _ = load_network(path)
        return cls(net, cfg, device=device)

    @property
    def mel_config(self) -> MelConfig:
        return self.config.mel

    @property
    def sample_rate(self) -> int:
        return self.config.mel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.mel.hop_length

    @property
    def n_mels(self) -> int:
        return self.config.mel.n_mels

    @torch.inference_mode()
    def mel(self, audio: Any, sample_rate: int, *, check: bool = True) -> torch.Tensor:
        """Mel features of ``audio`` exactly as in training (resampled to the model's rate).

        Args:
            audio: ``[T]``, ``[B, T]`` or ``[B, 1, T]``, NumPy or torch, in [-1, 1]
                (:func:`audiodiff.audio.as_audio_batch`: a stereo array is refused, with how
                to pass it).
            sample_rate: rate of ``audio`` in Hz.
            check: refuse silent, over-range or non-finite audio (:func:`check_level`, on the
                resampled signal the model gets); off for plotting generated audio.

        Returns:
            ``[B, n_mels, frames]`` float32 on CPU.

        Raises:
            ValueError: a layout other than the three above (a stereo array names how to pass
                it), or a level check failed (the message names the peak and the limit).
        """
        x = as_audio_batch(audio)
        stage = ""
        if sample_rate != self.sample_rate:
            x = resample(x, sample_rate, self.sample_rate)
            stage = f"after resampling from {sample_rate} to {self.sample_rate} Hz"
        if check:
            check_level(x, "audio", stage=stage)
        return self._mel(x.to(self.device)).float().cpu()

    def mel_from_file(self, path: str | Path, notes: InputNotes | None = None) -> torch.Tensor:
        """``[1, n_mels, frames]`` mel of an audio file (any rate; resampled), level-checked on
        the mixed-down, resampled signal (:func:`audiodiff.audio.load_model_audio`, which also
        records the conversions in ``notes``)."""
        audio, rate = load_model_audio(path, self.sample_rate, notes)
        try:
            return self.mel(audio, rate, check=False)
        except ValueError as err:  # e.g. shorter than one analysis window: name the file
            raise ValueError(f"{path}: {err}") from None

    def halo_samples(self, steps: int) -> int:
        """Exactness halo of chunked synthesis, in the domain's time steps (samples for waveform
        models, frames for stft ones): ``steps`` network evaluations x the receptive radius."""
        return halo_units(self.net, steps)

    @torch.inference_mode()
    def __call__(
        self,
        mel: Any,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        eta: float | None = None,
        t_mapping: str = "diffwave",
        chunk_seconds: float | Literal["auto"] | None = "auto",
        progress: Callable[[int], None] | None = None,
        keys: Sequence[int] | None = None,
        profile: MelConfig | str | None = None,
        chunk_progress: Callable[[int], None] | None = None,
        mel_match_iters: int | None = None,
        griffin_lim_iters: int | None = None,
        magnitude_blend: float | None = None,
    ) -> torch.Tensor:
        """Synthesize audio from mel spectrograms.

        Args:
            mel: ``[n_mels, frames]`` or ``[B, n_mels, frames]``, NumPy or torch, in this model's
                mel convention (:attr:`mel_config`).
            steps: network evaluations; default the model's ``sample.steps`` (the shipped
                ``small-speech``: 1; ``small-speech-waveform``: 6).
            sampler: ``"diffwave-fast"``, ``"ddpm"``, ``"ddim"`` or ``"dpmpp-2m"``; default the
                model's ``sample.sampler``.
            generator: source of the seed of all noise (a fixed generator reproduces the output).
            seed: alternative to ``generator``.
            eta: DDIM stochasticity (0 = deterministic).
            t_mapping: how a noise level maps to the network's step index: ``"diffwave"``
                (the paper's alignment) or ``"log-sigma"``.
            chunk_seconds: long-form chunk length; ``"auto"`` is the domain's default (6 s for
                waveform models, 30 s for frame-rate ones); ``None`` evaluates the whole
                utterance at once.
            progress: called with 1 after each sampler step of each chunk.
            keys: one noise key per row; default a hash of the row's mel values, so a mel gives
                the same audio for one seed whatever it is batched with and wherever it sits
                (on a CPU bit for bit; a GPU may round batched kernels differently).
            profile: the mel profile the input was computed with (name or
                :class:`~audiodiff.config.MelConfig`), checked against :attr:`mel_config`.
            chunk_progress: called with 1 after each chunk (:meth:`chunk_count` of them).
            mel_match_iters, griffin_lim_iters, magnitude_blend: stft-domain models: refine the
                sampled STFT towards the mel (its magnitude blended with Griffin-Lim's estimate,
                1 = the network's only), then by Griffin-Lim iterations from the network's phase
                (:mod:`audiodiff.consistency`); default the model's ``sample`` settings. All of
                ``0, 0, 1`` give the network's raw output.

        Returns:
            ``[B, 1, frames * hop_length]`` float32 on CPU, in [-1, 1] up to model error.

        Raises:
            ValueError: a mel that does not fit the model (:func:`check_mel`), a ``profile``
                with other parameters, or a bad sampler setting.
        """
        mel = check_mel(mel, self.config.mel, profile)
        if keys is None:
            keys = [item_key(row) for row in mel]
        mel = mel.to(self.device)
        spec = make_sampling_spec(
            self.config, self.schedule, sampler=sampler, steps=steps, eta=eta, t_mapping=t_mapping,
            mel_match_iters=mel_match_iters, griffin_lim_iters=griffin_lim_iters,
            magnitude_blend=magnitude_blend,
        )  # fmt: skip
        denoiser = Denoiser(
            self.net, self.schedule, target=self.config.diffusion.target, t_mapping=spec.t_mapping
        )
        return vocode_mel(
            denoiser,
            spec,
            self.domain,
            mel,
            seed=resolve_seed(generator, seed),
            chunk_samples=self._chunk_samples(chunk_seconds),
            device=self.device,
            keys=keys,
            progress=progress,
            chunk_progress=chunk_progress,
        )

    def _chunk_samples(self, chunk_seconds: float | Literal["auto"] | None) -> int | None:
        if chunk_seconds == "auto":
            chunk_seconds = self.domain.default_chunk_s
        return None if chunk_seconds is None else int(chunk_seconds * self.sample_rate)

    def chunk_count(
        self, frames: int, chunk_seconds: float | Literal["auto"] | None = "auto"
    ) -> int:
        """How many chunks a call on a mel of ``frames`` frames runs (a progress bar's total)."""
        return mel_chunk_count(self.domain, frames, self._chunk_samples(chunk_seconds))
