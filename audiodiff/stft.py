"""The mel profiles' own STFT, its exact inverse, and the mel -> linear-frequency envelope.

One STFT serves the mel spectrogram (:class:`audiodiff.mel.MelSpectrogram`) and the STFT
domain (:mod:`audiodiff.domains`), so STFT frame ``i`` and mel frame ``i`` always cover the same
samples (DESIGN §5, §12). Two paddings exist:

* ``"hifigan"``: reflect-pad ``(n_fft - hop) / 2`` samples on both sides, then ``center=False``:
  ``T / hop`` frames for ``T`` divisible by ``hop`` (HiFi-GAN's ``meldataset.py``).
* ``"center"``: ``torch.stft(center=True)`` reflect padding, ``T // hop + 1`` frames.

The inverse is a weighted overlap-add (Griffin & Lim 1984, eq. 6: each frame's inverse FFT times
the analysis window, divided by the summed squared window). It is written here rather than taken
from ``torch.istft`` because ``torch.istft(center=False)`` refuses windows whose overlap-add
envelope touches zero anywhere in the padded signal, and the periodic Hann window is zero at the
first padded sample; inside the unpadded signal the envelope is positive, so the inverse is exact
to float precision there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from audiodiff.power_spectrum import stft_power

# Smallest summed squared window the inverse divides by (float64; the real envelope inside the
# signal is >= 0.1 for every profile we ship, so this only guards degenerate custom windows).
_MIN_ENVELOPE = 1e-10


def profile_window(win_length: int, n_fft: int, *, dtype: torch.dtype, device) -> torch.Tensor:
    """Periodic Hann window of ``win_length``, zero-padded to ``n_fft`` (torch.stft's centring)."""
    # Built in float64 and rounded once: a float32 cos loses ~1e-7 per tap, which the mel
    # reference tests see at 44.1 kHz.
    window = torch.hann_window(win_length, periodic=True, dtype=torch.float64, device=device)
    window = window.to(dtype)
    left = (n_fft - win_length) // 2
    return F.pad(window, (left, n_fft - win_length - left))


def normalized_scale(win_length: int, n_fft: int, normalized: bool) -> float:
    """What a ``normalized`` profile divides its STFT by, ``sqrt(sum(window^2))`` (1.0 for the
    others): multiplying a magnitude by it gives the raw STFT scale the mel filterbank sees."""
    if not normalized:
        return 1.0
    window = profile_window(win_length, n_fft, dtype=torch.float64, device="cpu")
    return float(window.pow(2).sum().sqrt())


def signal_length(frames: int, hop_length: int, padding: str) -> int:
    """Samples of the signal that ``frames`` STFT frames describe: ``frames * hop`` for
    ``hifigan`` padding, ``(frames - 1) * hop`` for ``center`` (the inverse of the frame counts in
    the module docstring)."""
    return frames * hop_length if padding == "hifigan" else (frames - 1) * hop_length


def pad_left(n_fft: int, hop_length: int, padding: str) -> int:
    """Samples of reflect padding before the signal's first sample."""
    return (n_fft - hop_length) // 2 if padding == "hifigan" else n_fft // 2


def _check_padding(padding: str) -> None:
    if padding not in ("hifigan", "center"):
        raise ValueError(f"unknown padding {padding!r}; expected 'hifigan' or 'center'")


def profile_stft(
    audio: torch.Tensor,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int,
    padding: str,
    normalized: bool = False,
) -> torch.Tensor:
    """Complex STFT as the mel profiles define it.

    Args:
        audio: ``[B, T]`` float32/float64 waveform.
        n_fft, hop_length, win_length: in samples.
        padding: ``"hifigan"`` or ``"center"`` (module docstring).
        normalized: divide by ``sqrt(sum(window^2))`` (the legacy ``diffwave`` profile).

    Returns:
        ``[B, n_fft // 2 + 1, frames]`` complex, in the dtype's complex counterpart.

    Raises:
        ValueError: unknown padding.
    """
    x = _hifigan_padded(audio, n_fft, hop_length, padding)
    return _frames_stft(
        x, n_fft, hop_length, win_length, normalized=normalized, center=padding == "center"
    )


def profile_stft_power(
    audio: torch.Tensor,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int,
    padding: str,
    normalized: bool = False,
) -> torch.Tensor:
    """``|profile_stft(audio, ...)|^2`` (same arguments), through
    :func:`audiodiff.power_spectrum.stft_power`: same values, a gradient of one inverse FFT per
    frame instead of autograd through the complex STFT.

    Returns:
        ``[B, n_fft // 2 + 1, frames]`` real, ``audio``'s dtype.

    Raises:
        ValueError: unknown padding, or too short a signal.
    """
    x = _hifigan_padded(audio, n_fft, hop_length, padding)
    window = profile_window(win_length, n_fft, dtype=x.dtype, device=x.device)
    power = stft_power(
        x, n_fft=n_fft, hop_length=hop_length, window=window, center=padding == "center"
    )
    return power / window.square().sum() if normalized else power


def _hifigan_padded(audio: torch.Tensor, n_fft: int, hop_length: int, padding: str) -> torch.Tensor:
    """``audio`` reflect-padded for the ``hifigan`` profile (``center`` pads inside the STFT)."""
    _check_padding(padding)
    if padding != "hifigan":
        return audio
    pad = pad_left(n_fft, hop_length, padding)
    return F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)


def _frames_stft(
    x: torch.Tensor, n_fft: int, hop_length: int, win_length: int, *, normalized: bool, center: bool
) -> torch.Tensor:
    """``torch.stft`` with the profile's window of an already padded signal (``center``: torch's
    own reflect padding of ``n_fft // 2``), divided by the window norm when ``normalized``."""
    window = profile_window(win_length, n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,  # the window is already zero-padded to n_fft, as torch.stft would
        window=window,
        center=center,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    if normalized:
        spec = spec / torch.sqrt(torch.sum(window**2))
    return spec


def profile_stft_window(
    audio: torch.Tensor,
    *,
    first_frame: int,
    n_frames: int,
    total_frames: int,
    n_fft: int,
    hop_length: int,
    win_length: int,
    padding: str,
    normalized: bool = False,
) -> torch.Tensor:
    """Frames ``[first_frame, first_frame + n_frames)`` of the STFT of a ``total_frames``-frame
    utterance, from the piece of its waveform that :func:`profile_istft_window` returns for the
    same frames: the forward half of a Griffin-Lim iteration over one chunk.

    The profile's reflect padding is applied where the window touches the utterance's edge;
    elsewhere the samples beyond the piece are unknown and taken as zero, so the
    ``ceil(n_fft / hop_length)`` frames next to an inner edge are wrong (a chunk's halo absorbs
    them) and every other frame equals :func:`profile_stft` of the whole waveform.

    Args:
        audio: ``[B, L]`` samples ``[first_frame * hop, first_frame * hop + L)`` of the
            utterance (``L`` as :func:`profile_istft_window` gives them).
        first_frame, n_frames, total_frames: the window and the utterance, in frames.

    Returns:
        ``[B, n_fft // 2 + 1, n_frames]`` complex.

    Raises:
        ValueError: unknown padding, or a window outside the utterance.
    """
    _check_padding(padding)
    if not (0 <= first_frame and n_frames >= 1 and first_frame + n_frames <= total_frames):
        raise ValueError(
            f"window of {n_frames} frames from {first_frame} is not inside {total_frames} frames"
        )
    left = pad_left(n_fft, hop_length, padding)
    piece_end = first_frame * hop_length + audio.shape[-1]
    # Frame f covers samples [f * hop - left, f * hop - left + n_fft) of the utterance.
    right = (first_frame + n_frames - 1) * hop_length - left + n_fft - piece_end
    x = audio.unsqueeze(1)
    x = F.pad(x, (left, 0), mode="reflect" if first_frame == 0 else "constant")
    if right >= 0:
        last = first_frame + n_frames == total_frames
        x = F.pad(x, (0, right), mode="reflect" if last else "constant")
    else:
        x = x[..., :right]
    return _frames_stft(x.squeeze(1), n_fft, hop_length, win_length, normalized=normalized,
                        center=False)  # fmt: skip


def profile_istft(
    spec: torch.Tensor,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int,
    padding: str,
    normalized: bool = False,
) -> torch.Tensor:
    """Inverse of :func:`profile_stft` by weighted overlap-add (module docstring).

    Args:
        spec: ``[B, n_fft // 2 + 1, frames]`` complex.

    Returns:
        ``[B, signal_length(frames)]`` real, dtype of ``spec``'s real part:
        ``profile_istft(profile_stft(x))`` equals ``x`` to float rounding.

    Raises:
        ValueError: wrong bin count or unknown padding.
    """
    frames = spec.shape[-1]
    return profile_istft_window(
        spec, first_frame=0, total_frames=frames, start_frame=0, stop_frame=frames,
        n_fft=n_fft, hop_length=hop_length, win_length=win_length, padding=padding,
        normalized=normalized,
    )  # fmt: skip


def profile_istft_window(
    spec: torch.Tensor,
    *,
    first_frame: int,
    total_frames: int,
    start_frame: int,
    stop_frame: int,
    n_fft: int,
    hop_length: int,
    win_length: int,
    padding: str,
    normalized: bool = False,
) -> torch.Tensor:
    """The samples of frames ``[start_frame, stop_frame)`` of an utterance's inverse STFT, from a
    window of its frames: the piece of :func:`profile_istft` that chunked synthesis assembles.

    Args:
        spec: ``[B, n_freq, n]`` frames ``[first_frame, first_frame + n)`` of an utterance of
            ``total_frames`` frames. Exact when it holds every frame that overlaps the wanted
            samples: ``ceil(n_fft / hop_length)`` frames either side (or the utterance's edge).
        start_frame, stop_frame: which frames' samples to return.

    Returns:
        ``[B, L]``: samples ``[start_frame * hop, stop_frame * hop)`` of the whole inverse,
        clipped to its length (:func:`signal_length` of ``total_frames``).

    Raises:
        ValueError: wrong bin count, unknown padding, or a window that does not cover the
            wanted frames.
    """
    n = spec.shape[-1]
    if not first_frame <= start_frame <= stop_frame <= first_frame + n <= total_frames:
        raise ValueError(
            f"frames [{start_frame}, {stop_frame}) are not inside the window [{first_frame}, "
            f"{first_frame + n}) of {total_frames} frames"
        )
    signal, envelope = _overlap_add(spec, n_fft, hop_length, win_length, padding, normalized)
    total = signal_length(total_frames, hop_length, padding)
    offset = pad_left(n_fft, hop_length, padding) - first_frame * hop_length
    i0 = start_frame * hop_length + offset
    i1 = min(stop_frame * hop_length, total) + offset
    return signal[:, i0:i1] / envelope[i0:i1].clamp_min(_MIN_ENVELOPE)


def _overlap_add(
    spec: torch.Tensor, n_fft: int, hop_length: int, win_length: int, padding: str, normalized: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed inverse FFTs overlap-added ``[B, n_fft + hop (frames - 1)]`` and the summed
    squared window ``[n_fft + hop (frames - 1)]``, in padded coordinates from the first frame."""
    if spec.dim() != 3 or spec.shape[1] != n_fft // 2 + 1:
        raise ValueError(
            f"spectrum has shape {tuple(spec.shape)} but n_fft {n_fft} needs "
            f"[batch, {n_fft // 2 + 1}, frames]"
        )
    _check_padding(padding)
    batch, _, frames = spec.shape
    window = profile_window(win_length, n_fft, dtype=spec.real.dtype, device=spec.device)
    if normalized:
        spec = spec * torch.sqrt(torch.sum(window**2))
    frames_t = torch.fft.irfft(spec, n=n_fft, dim=1) * window[:, None]  # [B, n_fft, frames]
    total = n_fft + hop_length * (frames - 1)
    if n_fft % hop_length == 0:
        # Every profile's hop divides n_fft: the overlap-add is n_fft / hop shifted adds of
        # hop-long slices, 3-4x faster than F.fold's col2im (which Griffin-Lim calls twice an
        # iteration), and the envelope is the same adds over one frame's squared window.
        return _shifted_adds(frames_t, hop_length), _window_envelope(window, hop_length, frames)
    fold = {"output_size": (1, total), "kernel_size": (1, n_fft), "stride": (1, hop_length)}
    signal = F.fold(frames_t, **fold).reshape(batch, -1)
    envelope = F.fold((window**2)[None, :, None].expand(1, n_fft, frames), **fold).reshape(-1)
    return signal, envelope


def _window_envelope(window: torch.Tensor, hop_length: int, frames: int) -> torch.Tensor:
    """The overlap-added squared window of ``frames`` frames, ``[n_fft + hop (frames - 1)]``:
    :func:`_shifted_adds` of the same window in every frame, one broadcast add per slice instead
    of materialising ``[n_fft, frames]`` copies of it."""
    parts = window.shape[0] // hop_length
    pieces = (window**2).reshape(parts, hop_length)
    out = window.new_zeros(frames + parts - 1, hop_length)
    for j in range(parts):
        out[j : j + frames] += pieces[j]
    return out.reshape(-1)


def _shifted_adds(frames_t: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Overlap-add of ``[B, n_fft, frames]`` at ``hop_length`` (which divides ``n_fft``):
    ``[B, n_fft + hop (frames - 1)]``, the sum F.fold makes."""
    batch, n_fft, frames = frames_t.shape
    parts = n_fft // hop_length
    # [B, parts, hop, frames] -> [B, parts, frames, hop]: slice j of frame f lands at block f + j.
    pieces = frames_t.reshape(batch, parts, hop_length, frames).transpose(2, 3)
    out = frames_t.new_zeros(batch, frames + parts - 1, hop_length)
    for j in range(parts):
        out[:, j : j + frames] += pieces[:, j]
    return out.reshape(batch, -1)


def mel_to_linear_envelope(
    mel_magnitude: torch.Tensor, mel_basis: torch.Tensor, *, power: float = 1.0
) -> torch.Tensor:
    """Smooth linear-frequency magnitude envelope implied by a (decompressed) mel.

    Each band's mean STFT magnitude is ``(mel / sum_f basis[m, f]) ** (1 / power)`` (the band's
    weighted mean of ``|X| ** power``, brought back to magnitude). Between band centres the
    envelope interpolates linearly with the triangles' own shapes (each filter scaled to peak 1;
    neighbouring triangles sum to 1); outside the filterbank's span (below ``f_min``, above
    ``f_max``) it holds the nearest band's value. It is an estimate, not an inversion: the STFT
    domain uses it as the scale of its prior (DESIGN §12), and the network models what it
    misses.

    Args:
        mel_magnitude: ``[B, n_mels, frames]`` decompressed mel, ``basis @ |X| ** power``
            (:func:`audiodiff.mel.decompress_mel`).
        mel_basis: ``[n_mels, n_freq]`` filterbank (librosa, any norm).
        power: the profile's ``power`` (1: a magnitude mel, 2: a power mel).

    Returns:
        ``[B, n_freq, frames]``, positive where the mel is.
    """
    basis = mel_basis.to(device=mel_magnitude.device, dtype=mel_magnitude.dtype)
    band_mean = mel_magnitude / basis.sum(dim=1).clamp_min(1e-12)[:, None]
    if power != 1.0:
        band_mean = band_mean.clamp_min(0).pow(1.0 / power)
    triangles = basis / basis.amax(dim=1, keepdim=True).clamp_min(1e-12)  # [n_mels, n_freq]
    coverage = triangles.sum(dim=0)  # [n_freq]
    covered = coverage > 1e-6
    # Nearest covered bin for the uncovered ones: the first covered bin below f_min, the last
    # one above f_max.
    idx = torch.arange(coverage.shape[0], device=coverage.device)
    first = int(idx[covered].min())
    last = int(idx[covered].max())
    source = idx.clamp(first, last)
    weights = triangles[:, source] / coverage[source].clamp_min(1e-12)  # [n_mels, n_freq]
    return torch.einsum("mf,bmt->bft", weights, band_mean)


def mel_frame_rms(
    mel_magnitude: torch.Tensor,
    mel_basis: torch.Tensor,
    *,
    n_fft: int,
    win_length: int,
    normalized: bool = False,
    power: float = 1.0,
) -> torch.Tensor:
    """Root-mean-square of the waveform in each mel frame, estimated from the mel alone.

    Parseval over the frame's windowed samples, ``sum_k |X_k|^2 = n_fft * sum_n (w_n x_n)^2``
    (the one-sided bins counted twice but DC and Nyquist), with ``|X_k|`` taken as the smooth
    envelope of :func:`mel_to_linear_envelope` and ``E (w_n x_n)^2 = rms^2 w_n^2``; a
    ``normalized`` profile's STFT is already divided by ``sqrt(sum w^2)``. Squaring band *means*
    of magnitude loses the spread inside a band, so it under-reads: measured (``hifigan``
    profile) 0.91 of the true frame RMS for white noise, 0.81 for a 220 Hz sine, a median of
    0.80-0.86 per clip on klettres speech. A scale for a prior, not a measurement. PriorGrad
    (Lee et al. 2022) builds its waveform prior from the same frame energy.

    Args:
        mel_magnitude: ``[B, n_mels, frames]`` decompressed mel (``basis @ |X| ** power``).
        mel_basis: ``[n_mels, n_fft // 2 + 1]`` filterbank.
        n_fft, win_length: the profile's STFT size and window length, in samples.
        normalized, power: the profile's ``normalized`` and ``power``.

    Returns:
        ``[B, frames]`` in the waveform's units (full scale 1).
    """
    envelope = mel_to_linear_envelope(mel_magnitude, mel_basis, power=power)
    bins = envelope.square()
    total = 2 * bins.sum(dim=1) - bins[:, 0] - bins[:, -1]
    window = profile_window(win_length, n_fft, dtype=bins.dtype, device=bins.device)
    window_energy = 1.0 if normalized else float(window.square().sum())
    return (total / (n_fft * window_energy)).sqrt()
