"""Audio I/O and resampling, and the level checks on the signal the model will consume.

Files are read and written with soundfile (libsndfile): wav at any bit depth, flac, ogg/vorbis and
mp3 where the installed libsndfile has it. Resampling uses soxr through librosa. No torchaudio
(DESIGN.md §2). The mel spectrogram of a :class:`MelConfig` is :mod:`audiodiff.mel`.
"""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from audiodiff.atomic import atomic_write
from audiodiff.encoding import native_path, unreadable_reason
from audiodiff.input_notes import InputNotes
from audiodiff.levels import OVER_RANGE_PEAK, SILENCE_PEAK, level_problem

# PCM_16 full scale used when writing: +1.0 -> +32767 and -1.0 -> -32767 (no wrap-around at +1).
PCM16_SCALE = 32767


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the reason."""


def check_level(
    audio: torch.Tensor,
    name: str,
    *,
    stage: str = "",
    silence_threshold: float = SILENCE_PEAK,
    max_peak: float = OVER_RANGE_PEAK,
) -> None:
    """Refuse audio whose level breaks :func:`level_problem`, naming ``name`` and ``stage``.

    Args:
        audio: the signal the model consumes, ``[..., T]`` (each row is one mono signal).
        name: what the signal is, e.g. the file name, for the message.
        stage: what was done to the signal before, e.g. ``"after resampling to 22050 Hz"``.

    Raises:
        AudioError: e.g. ``"x.wav: after resampling to 22050 Hz, peak 4.00 (+12.0 dBFS) is above
            2.00 (+6.0 dBFS), the most accepted for audio in [-1, 1] (full scale 1.0): scale it
            down"``.
    """
    flat = audio.detach().reshape(-1, audio.shape[-1]) if audio.dim() else audio.reshape(1, 1)
    if not bool(torch.isfinite(flat).all()):
        peaks = [math.nan]
    else:
        peaks = flat.abs().amax(dim=-1).double().tolist() if flat.numel() else [0.0]
    for row, peak in enumerate(peaks):
        problem = level_problem(peak, silence_threshold=silence_threshold, max_peak=max_peak)
        if problem is not None:
            which = f" (item {row})" if len(peaks) > 1 else ""
            where = f"{stage}, " if stage else ""
            raise AudioError(f"{name}{which}: {where}{problem[1]}")


# --------------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------------


def _open_error(path: Path, err: Exception) -> AudioError:
    if not path.exists():
        return AudioError(f"{path}: no such file")
    if path.is_dir():
        return AudioError(f"{path}: is a directory, not an audio file")
    reason = unreadable_reason(path, err)
    if reason.startswith("empty file"):
        return AudioError(f"{path}: {reason}, not audio")
    return AudioError(f"{path}: not a readable audio file ({reason})")


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """Read only the header of an audio file.

    Returns:
        ``(sample_rate, n_frames, channels)``. For compressed formats (ogg, mp3) ``n_frames`` is
        what libsndfile reports, which can differ slightly from the decoded length.

    Raises:
        AudioError: the file is missing or not readable audio.
    """
    path = Path(path)
    try:
        info = sf.info(native_path(path))
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError or OSError
        raise _open_error(path, err) from None
    return int(info.samplerate), int(info.frames), int(info.channels)


def _read_mono(path: Path, sample_rate: int | None) -> tuple[torch.Tensor, int, int, int]:
    """``(audio [1, T], rate, file_rate, channels)``: the file mixed to mono, resampled."""
    try:
        data, file_rate = sf.read(native_path(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise _open_error(path, err) from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty (0 frames)")
    mono = data.mean(axis=1, dtype=np.float32)
    audio = torch.from_numpy(np.ascontiguousarray(mono)).unsqueeze(0)
    if sample_rate is not None and sample_rate != file_rate:
        audio = resample(audio, int(file_rate), int(sample_rate))
        return audio, int(sample_rate), int(file_rate), data.shape[1]
    return audio, int(file_rate), int(file_rate), data.shape[1]


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Load a file as mono float32, optionally resampled.

    Integer PCM is scaled by libsndfile's convention (``int16 / 32768``), the one HiFi-GAN,
    librosa and torchaudio use, so mels match those computed by other toolkits.

    Args:
        path: any format libsndfile reads (wav 16/24/32-bit int or float, flac, ogg, mp3, ...).
        sample_rate: target rate in Hz; resampled with soxr (``soxr_hq``) when it differs.

    Returns:
        ``(audio [1, T] float32, sample_rate_hz)``, channels averaged to mono.

    Raises:
        AudioError: missing, unreadable or empty (0 frames) file.
    """
    audio, rate, _, _ = _read_mono(Path(path), sample_rate)
    return audio, rate


def load_model_audio(
    path: str | Path, sample_rate: int, notes: InputNotes | None = None
) -> tuple[torch.Tensor, int]:
    """:func:`load_audio` for a model's input: the level is checked (:func:`check_level`) on
    what the model gets, after the mix-down to mono and the resampling to ``sample_rate``.
    ``notes``, when given, records the file's rate and channels for the run's one note
    (:class:`audiodiff.input_notes.InputNotes`).

    Returns:
        ``(audio [1, T] float32, sample_rate)``.

    Raises:
        AudioError: missing, unreadable or empty file; silent, over-range or non-finite audio
            (the message names the file, what was done to it, the measured peak and the limit).
    """
    audio, rate, file_rate, channels = _read_mono(Path(path), sample_rate)
    if notes is not None:
        notes.add(file_rate, channels)
    steps = [f"mix-down of {channels} channels"] if channels > 1 else []
    if file_rate != rate:
        steps.append(f"resampling from {file_rate} to {rate} Hz")
    check_level(audio, str(path), stage="after " + " and ".join(steps) if steps else "")
    return audio, rate


def resample(audio: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample along the last axis with soxr (``librosa.resample(res_type="soxr_hq")``).

    Args:
        audio: ``[..., T]`` float tensor on any device.
        orig_sr: sample rate of ``audio`` in Hz.
        target_sr: wanted sample rate in Hz.

    Returns:
        ``[..., ceil(T * target_sr / orig_sr)]``, same dtype and device as ``audio``.

    Raises:
        ValueError: a non-positive sample rate.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(
            f"sample rates must be positive, got orig_sr {orig_sr}, target {target_sr}"
        )
    if orig_sr == target_sr:
        return audio
    dtype = audio.dtype if audio.dtype in (torch.float32, torch.float64) else torch.float32
    y = audio.detach().to("cpu", dtype).numpy()
    out = librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq", axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out)).to(audio.device, audio.dtype)


# A 2-D array whose last axis is at most this long, and shorter than its first, is soundfile's
# [frames, channels] layout rather than a batch of clips: no clip of 8 samples can be analysed.
_MAX_CHANNELS = 8


def as_audio_batch(
    audio: torch.Tensor | np.ndarray, name: str = "audio", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[T]``, ``[B, T]`` or ``[B, 1, T]`` audio (NumPy or torch) -> ``[B, T]`` in ``dtype``,
    on ``audio``'s device (NumPy: the CPU).

    Raises:
        ValueError: another rank; ``[B, C, T]`` with ``C != 1`` (channels are never dropped
            silently); or a 2-D array in soundfile's ``[frames, channels]`` layout (last axis at
            most 8 long and shorter than the first), naming how to pass it instead.
    """
    # ascontiguousarray: torch refuses NumPy views with negative strides (x[::-1]).
    t = audio if isinstance(audio, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(audio))
    shape = tuple(t.shape)
    if t.dim() == 2 and shape[1] <= _MAX_CHANNELS < shape[0]:
        raise ValueError(
            f"{name} has shape {shape}, soundfile's [frames, channels] layout; pass mono audio "
            f"[T] (mix down: x.mean(axis=1)) or one channel per batch item [B, T] (x.T)"
        )
    if t.dim() == 3 and shape[1] != 1:
        raise ValueError(
            f"{name} has shape {shape}: {shape[1]} channels; pass mono audio [B, 1, T] (mix down "
            f"or pick a channel first)"
        )
    if t.dim() not in (1, 2, 3):
        raise ValueError(f"{name} must be [T], [B, T] or [B, 1, T], got shape {shape}")
    t = t.reshape(1, -1) if t.dim() == 1 else t.reshape(shape[0], shape[-1])
    return t.detach().to(dtype)


def _as_mono_numpy(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    shape = tuple(arr.shape)
    if arr.ndim == 0 or arr.ndim > 3 or any(n != 1 for n in shape[:-1]):
        raise ValueError(f"save_audio expects mono audio [T], [1, T] or [1, 1, T], got {shape}")
    return arr.reshape(-1).astype(np.float64)


def save_audio(
    path: str | Path,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    subtype: str = "PCM_16",
    overwrite: bool = False,
) -> Path:
    """Write mono audio atomically (:func:`~audiodiff.atomic.atomic_write`).

    Values are clipped to [-1, 1]. For ``PCM_16`` the integers are ``round(x * 32767)``, computed
    here so the mapping is exact (libsndfile would otherwise choose its own scaling). Reading such
    a file back with :func:`load_audio` (``/ 32768``) gives an error of at most
    ``(|x| + 0.5) / 32768`` per sample.

    Args:
        path: output file; its extension picks the container (``.wav``, ``.flac``, ``.ogg``).
        audio: torch or numpy ``[T]``, ``[1, T]`` or ``[1, 1, T]`` in [-1, 1].
        sample_rate: in Hz.
        subtype: libsndfile subtype, e.g. ``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ``"VORBIS"``.
        overwrite: replace an existing file; otherwise an existing file is an error.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: audio of another shape, or an extension / subtype libsndfile cannot write.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (--overwrite on the CLI) to replace it"
        )
    container = path.suffix[1:].upper()
    if container not in sf.available_formats():
        raise ValueError(f"{path}: unknown audio extension {path.suffix!r}; use .wav or .flac")
    if not sf.check_format(container, subtype):
        raise ValueError(
            f"{path}: subtype {subtype!r} cannot be written to {container}; valid subtypes: "
            + ", ".join(sf.available_subtypes(container))
        )
    x = np.clip(_as_mono_numpy(audio), -1.0, 1.0)
    data = (
        np.round(x * PCM16_SCALE).astype(np.int16) if subtype == "PCM_16" else x.astype(np.float32)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(
        path, lambda f: sf.write(f, data, int(sample_rate), subtype=subtype, format=container)
    )
