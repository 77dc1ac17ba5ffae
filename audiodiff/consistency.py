"""Mel-consistency refinement: make a frame-rate vocoder's STFT agree with the mel it was given.

A one-step stft-domain vocoder (DESIGN §12) produces plausible phase and fine structure, but its
band energies drift from the conditioning mel, and its frames are not exactly the STFT of any
signal (their overlap-add smears what does not agree between neighbouring frames). Two classical
projections fix both, started from the network's output instead of from scratch:

1. **Mel matching** (:func:`match_mel`): multiplicative non-negative least-squares updates (Lee &
   Seung 2001) of ``|X| ** power`` towards ``basis @ |X| ** power = mel``, started from the
   network's magnitude. The first update rescales each bin by its bands' ratio of wanted to
   present energy, so the network's harmonics survive while the envelope moves to the mel's.
   Bins no mel band covers (above ``f_max``) keep the network's magnitude: Griffin-Lim's own
   inversion (:func:`audiodiff.griffin_lim.mel_to_linear`) has to leave them silent.
2. **Griffin-Lim iterations from the network's phase** (:func:`griffin_lim_phase`): the fast
   Griffin-Lim algorithm (Perraudin, Balazs & Sondergaard 2013) with the magnitude held fixed,
   whose first iterate is the network's phase rather than a random one. Learned phase
   initialisation of Griffin-Lim is an old idea (e.g. Masuyama et al. 2019, "Deep Griffin-Lim
   iteration", alternate the same projections with a network); here the diffusion model is the
   initialiser.

Both start from the STFT of the network's inverse STFT, not from its raw frames: those are not
the STFT of any signal (neighbouring frames partly cancel in the overlap-add), and matching
their magnitude was measured to make the result worse, not better.

The iterations run on windows of frames, so chunked synthesis stays exact: each projection
widens the reach of an inner window edge by ``ceil(n_fft / hop_length)`` frames
(:meth:`Refinement.halo_frames`), and frames that far from an edge equal the whole-utterance
result (:func:`audiodiff.stft.profile_stft_window`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from audiodiff.config_rules import check_refinement
from audiodiff.stft import normalized_scale, profile_istft_window, profile_stft_window

# Keeps the multiplicative update and the phase normalisation finite where a bin is exactly 0.
_TINY = 1e-12
# Fast Griffin-Lim's alpha; 0.99 as librosa and torchaudio.
GRIFFIN_LIM_MOMENTUM = 0.99


def _covered(basis: Tensor) -> Tensor:
    """``[n_freq, 1]`` True where some mel band has weight (inside ``[f_min, f_max]``)."""
    return (basis.sum(dim=0) > 0)[:, None]


@dataclass(frozen=True)
class Refinement:
    """What the refinement does (all defaults: the network's STFT unchanged).

    Attributes:
        mel_match_iters: multiplicative least-squares updates of each magnitude estimate.
        griffin_lim_iters: phase iterations from the network's phase.
        magnitude_blend: where mel bands reach, the magnitude is the geometric interpolation
            ``mel_estimate ** (1 - w) * network_estimate ** w``: ``w = 1`` keeps the network's
            fine structure (its magnitude matched to the mel, :func:`match_mel`), ``w = 0`` is
            Griffin-Lim's own estimate (:func:`filterbank_inverse`). Above ``f_max`` the
            network's magnitude is kept either way.
        momentum: fast Griffin-Lim's alpha in [0, 1].
    """

    mel_match_iters: int = 0
    griffin_lim_iters: int = 0
    magnitude_blend: float = 1.0
    momentum: float = GRIFFIN_LIM_MOMENTUM

    def __post_init__(self) -> None:
        self._check()  # the range check the config's sample.* settings pass too

    def _check(self) -> bool:
        return check_refinement(
            self.mel_match_iters, self.griffin_lim_iters, self.magnitude_blend, self.momentum
        )

    @property
    def active(self) -> bool:
        """Whether the refinement changes the network's STFT at all."""
        return self._check()

    def halo_frames(self, n_fft: int, hop_length: int) -> int:
        """Frames of context either side that make a window's centre exact: one frame overlap
        (``ceil(n_fft / hop)``) for the projection onto a consistent STFT and one per Griffin-Lim
        iteration (mel matching is frame-local)."""
        if not self.active:
            return 0
        return (1 + self.griffin_lim_iters) * -(-n_fft // hop_length)


def match_mel(
    magnitude: Tensor, mel_linear: Tensor, mel_basis: Tensor, *, power: float, iters: int
) -> Tensor:
    """Move a magnitude spectrogram towards the one whose mel is ``mel_linear`` (module docstring).

    Args:
        magnitude: ``[B, n_freq, frames]`` STFT magnitude, non-negative, the starting point.
        mel_linear: ``[B, n_mels, frames]`` decompressed mel, ``basis @ |X| ** power``.
        mel_basis: ``[n_mels, n_freq]`` the profile's filterbank.
        power: the profile's ``power`` (1: magnitude mel, 2: power mel).
        iters: multiplicative updates (0 returns ``magnitude``).

    Returns:
        ``[B, n_freq, frames]``, non-negative; bins outside every band unchanged.
    """
    basis = mel_basis.to(device=magnitude.device, dtype=magnitude.dtype)
    covered = _covered(basis)
    spec = magnitude.clamp_min(0).pow(power)
    target = basis.T @ mel_linear.to(basis.dtype).clamp_min(0)
    for _ in range(iters):
        # basis.T @ (basis @ spec), not (basis.T @ basis) @ spec: n_mels x n_freq products are
        # n_freq / (2 n_mels) times cheaper than one n_freq x n_freq one (3x at 513 / 80).
        updated = spec * target / (basis.T @ (basis @ spec)).clamp_min(_TINY)
        spec = torch.where(covered, updated, spec)
    return spec.pow(1.0 / power)


def filterbank_inverse(
    mel_linear: Tensor, mel_basis: Tensor, *, power: float, iters: int
) -> Tensor:
    """Non-negative least-squares inverse of the mel filterbank: Griffin-Lim's magnitude.

    The pseudo-inverse solution clipped to a small positive value, then ``iters`` updates of
    :func:`match_mel` (a multiplicative update can never move a zero, hence the floor). Bins no
    band covers come back 0 after any update: nothing constrains them, and the least-squares
    answer there is 0.

    Args:
        mel_linear: ``[..., n_mels, frames]`` decompressed mel, ``basis @ |X| ** power``.
        mel_basis: ``[n_mels, n_freq]``; ``power``: the profile's.
        iters: multiplicative updates (0: the clipped pseudo-inverse only).

    Returns:
        ``[..., n_freq, frames]`` STFT magnitude, on the filterbank's (raw STFT) scale.
    """
    basis = mel_basis.to(device=mel_linear.device, dtype=mel_linear.dtype)
    energy = mel_linear.clamp_min(0.0)
    start = torch.linalg.pinv(basis) @ energy
    floor = 1e-3 * start.clamp_min(0).amax(dim=-2, keepdim=True).clamp_min(_TINY)
    spec = torch.maximum(start, floor)
    magnitude = match_mel(spec.pow(1.0 / power), energy, basis, power=power, iters=iters)
    if iters > 0:
        magnitude = magnitude * _covered(basis)
    return magnitude


def griffin_lim_phase(
    magnitude: Tensor,
    phase: Tensor,
    *,
    n_iter: int,
    first_frame: int,
    total_frames: int,
    stft_args: dict,
    momentum: float = GRIFFIN_LIM_MOMENTUM,
) -> Tensor:
    """Fast Griffin-Lim over a window of frames, the magnitude fixed, from a given phase.

    Args:
        magnitude: ``[B, n_freq, n]`` frames ``[first_frame, first_frame + n)`` of a
            ``total_frames``-frame utterance.
        phase: ``[B, n_freq, n]`` complex unit phasors to start from.
        n_iter: iterations (0 returns ``phase``).
        stft_args: the profile's ``n_fft``, ``hop_length``, ``win_length``, ``padding``,
            ``normalized`` (:func:`audiodiff.stft.profile_stft`).
        momentum: fast Griffin-Lim's alpha in [0, 1] (0: Griffin & Lim 1984).

    Returns:
        ``[B, n_freq, n]`` unit phasors; the frames :meth:`Refinement.halo_frames` away from an
        inner window edge equal the whole utterance's.
    """
    n = magnitude.shape[-1]
    window = {"first_frame": first_frame, "total_frames": total_frames}
    previous = torch.zeros_like(phase)
    for _ in range(n_iter):
        audio = profile_istft_window(
            magnitude * phase, start_frame=first_frame, stop_frame=first_frame + n,
            **window, **stft_args,
        )  # fmt: skip
        rebuilt = profile_stft_window(audio, n_frames=n, **window, **stft_args)
        # The momentum term extrapolates along the last step, which is what makes it "fast".
        phase = rebuilt - (momentum / (1.0 + momentum)) * previous
        phase = phase / (phase.abs() + _TINY)
        previous = rebuilt
    return phase


def refine_spectrum(
    spec: Tensor,
    mel_linear: Tensor,
    mel_basis: Tensor,
    refinement: Refinement,
    *,
    power: float,
    first_frame: int,
    total_frames: int,
    stft_args: dict,
) -> Tensor:
    """The STFT of the spectrum's inverse, mel matching, then Griffin-Lim from its own phase
    (module docstring).

    Args:
        spec: ``[B, n_freq, n]`` complex frames ``[first_frame, first_frame + n)`` of a
            ``total_frames``-frame utterance, in the STFT's own scale (``normalized`` profiles:
            divided by the window norm, as ``stft_args`` say).
        mel_linear: ``[B, n_mels, n]`` the decompressed conditioning mel of the same frames.
        mel_basis: ``[n_mels, n_freq]``; ``power``: the profile's.

    Returns:
        ``[B, n_freq, n]`` complex: ``spec`` itself when the refinement is inactive.
    """
    if not refinement.active:
        return spec
    window = {"first_frame": first_frame, "total_frames": total_frames}
    n = spec.shape[-1]
    # The network's frames are not the STFT of any signal: overlapping frames partly cancel in
    # the inverse. Refine what is actually heard, the STFT of their inverse (matching the raw
    # frames' magnitude instead was measured worse than no refinement).
    audio = profile_istft_window(
        spec, start_frame=first_frame, stop_frame=first_frame + n, **window, **stft_args
    )
    spec = profile_stft_window(audio, n_frames=n, **window, **stft_args)
    # The mel is made from the raw STFT; compare magnitudes on that scale.
    scale = normalized_scale(
        stft_args["win_length"], stft_args["n_fft"], stft_args.get("normalized", False)
    )
    network = spec.abs() * scale
    basis = mel_basis.to(device=network.device, dtype=network.dtype)
    iters, w = refinement.mel_match_iters, refinement.magnitude_blend
    magnitude = network
    if w > 0:
        magnitude = match_mel(network, mel_linear, basis, power=power, iters=iters)
    if w < 1:
        from_mel = filterbank_inverse(mel_linear, basis, power=power, iters=iters)
        blended = from_mel.clamp_min(_TINY) ** (1 - w) * magnitude.clamp_min(_TINY) ** w
        # Above f_max no band says anything: the network's magnitude stays there.
        magnitude = torch.where(_covered(basis), blended, network)
    magnitude = magnitude / scale
    phase = spec / (spec.abs() + _TINY)
    phase = griffin_lim_phase(
        magnitude, phase, n_iter=refinement.griffin_lim_iters, stft_args=stft_args,
        momentum=refinement.momentum, **window,
    )  # fmt: skip
    return magnitude * phase


def dsp_estimate(
    mel_linear: Tensor,
    mel_basis: Tensor,
    *,
    power: float,
    nnls_iters: int,
    griffin_lim_iters: int,
    first_frame: int,
    total_frames: int,
    stft_args: dict,
) -> Tensor:
    """The STFT a mel implies, by DSP alone: the non-negative least-squares inverse of the
    filterbank (:func:`filterbank_inverse`, ``nnls_iters`` updates) with the phase of
    ``griffin_lim_iters`` fast Griffin-Lim iterations (:func:`griffin_lim_phase`) started from
    zero phase. FreeV (Lv et al. 2024) gives its network the same pseudo-inverse magnitude;
    MelFlow starts its flow from it; ``model.start: estimate`` vocoders start sampling from it.

    Zero phase rather than a random one: the estimate is then a function of the mel alone, so
    training and every chunk of synthesis see the same start.

    Args:
        mel_linear: ``[B, n_mels, n]`` decompressed mel, frames ``[first_frame, first_frame +
            n)`` of a ``total_frames``-frame utterance.
        mel_basis: ``[n_mels, n_freq]``; ``power``: the profile's.
        stft_args: the profile's STFT (:func:`audiodiff.stft.profile_stft`).

    Returns:
        ``[B, n_freq, n]`` complex, in the STFT's own scale; frames ``griffin_lim_iters *
        ceil(n_fft / hop)`` away from an inner window edge equal the whole utterance's.
    """
    basis = mel_basis.to(device=mel_linear.device, dtype=mel_linear.dtype)
    scale = normalized_scale(
        stft_args["win_length"], stft_args["n_fft"], stft_args.get("normalized", False)
    )
    magnitude = filterbank_inverse(mel_linear, basis, power=power, iters=nnls_iters) / scale
    complex_dtype = torch.complex128 if magnitude.dtype == torch.float64 else torch.complex64
    phase = griffin_lim_phase(
        magnitude, torch.ones_like(magnitude, dtype=complex_dtype), n_iter=griffin_lim_iters,
        first_frame=first_frame, total_frames=total_frames, stft_args=stft_args,
    )  # fmt: skip
    return magnitude * phase
