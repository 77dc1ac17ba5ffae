"""The one sampling engine (DESIGN §3): positional noise, chunks with halos, conditioning prepared
once per chunk. The vocoder, generation, schedule search and in-training evaluation call it;
nothing else runs a sampling loop.

Long-form synthesis (DESIGN §9, open choice §11). The sampler runs over time chunks, each extended
by a halo of ``steps x receptive_radius`` samples on both sides, and all steps of one chunk run
before the next chunk starts. After S network evaluations an output sample depends on the initial
noise and the conditioning within S receptive radii, so the centre of an extended chunk is exactly
what whole-utterance sampling gives, provided the noise is the same. Noise is therefore drawn
*by position* (:mod:`audiodiff.noise`): sample n of noise stream k comes from a generator seeded
by (seed, k, n // block), so any window of the utterance can redraw exactly the noise the whole
utterance would see. It is keyed by *item* too: each row of a batch has a key (by default its
row index; the vocoder uses a hash of the row's mel), so a clip's noise does not depend on what
it is batched with. Each chunk prepares its conditioning (mel upsampling, every layer's
conditioner projection) once for all its steps; peak memory is bounded by the chunk size, not by
the input length. Frame-rate domains (stft) work in frames and hand each chunk's centre, with a
few frames of its halo, to a ``decode`` function (the inverse STFT), so their output is
assembled as audio chunk by chunk. The loop itself (:func:`sample_chunks`) takes its chunks from
an iterator, so a stream (:mod:`audiodiff.streaming`) runs the same loop as its input arrives.

This chunking is deliberately a separate mechanism from cache-sized time blocks inside one network
evaluation: exactness across S sampler steps needs a halo of S receptive fields (~0.8 s for the
base model at 6 steps), far too large for a cache block, while a single evaluation can be blocked
layer by layer with much smaller halos.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from audiodiff.diffusion import prior_std
from audiodiff.domains import Domain
from audiodiff.model_blocks import Conditioning
from audiodiff.noise import positional_noise
from audiodiff.samplers import sample
from audiodiff.sampling_spec import (  # noqa: F401  (re-exported: their old home)
    SamplingSpec,
    make_sampling_spec,
    sampling_sigmas,
)

# A chunk: extended window [e0, e1) and the centre [s0, s1) it makes exact.
Span = tuple[int, int, int, int]
# Default long-form chunk, in seconds of output audio: bounds peak memory (the prepared
# conditioning holds 2C floats per layer per sample) while keeping the halo overhead small.
DEFAULT_CHUNK_S = 6.0


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of items grouped into batches of equal length, at most ``batch_size`` each.

    Items are never padded to share a batch: padding reaches the real samples through the
    receptive field, so a clip would sound different next to a longer one. Groups come in the
    order of their first item; items keep their order within a group.

    Raises:
        ValueError: ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(int(n), []).append(i)
    return [
        group[j : j + batch_size]
        for group in groups.values()
        for j in range(0, len(group), batch_size)
    ]


def synthesize(
    denoiser: Callable[..., torch.Tensor],
    spec: SamplingSpec,
    *,
    n_samples: int,
    shape: tuple[int, int],
    prepare_window: Callable[[int, int], Any],
    halo_samples: int,
    chunk_samples: int,
    seed: int,
    device: Any,
    keys: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_progress: Callable[[int], None] | None = None,
    decode: Callable[[torch.Tensor, int, int, int, int], torch.Tensor] | None = None,
    decode_halo: int = 0,
    decoded_shape: tuple[int, int, int] | None = None,
    start: Callable[[int, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``spec``'s sampler over ``n_samples`` in halo-extended chunks; see the module docstring.

    Args:
        denoiser: ``D(x, sigma, cond=prepared) -> x0_hat``.
        n_samples: output length (samples, or frames for frame-rate domains).
        shape: ``(batch, channels)`` of the signal.
        prepare_window: ``(start, stop) -> prepared conditioning`` covering exactly that range.
        halo_samples: exactness halo on each side (steps x receptive radius).
        chunk_samples: centre length of one chunk; ``n_samples`` or more means one pass.
        seed: base seed of the positional noise.
        keys: each row's noise key (:func:`positional_noise`); None: the row indices.
        progress: called with the number of steps just done.
        chunk_progress: called with 1 after each chunk is done (:func:`chunk_count` of them).
        decode: ``(x, e0, e1, s0, s1) -> piece``: turns a finished chunk ``x`` covering
            ``[e0, e1)`` into the output of its centre ``[s0, s1)`` (``[batch, C_out, L]``); the
            pieces are written one after another into a ``decoded_shape`` buffer allocated
            once (so a long input holds one output, never output plus pieces). None returns the
            signal itself.
        decode_halo: steps of context either side that ``decode`` needs around a chunk's
            centre; those steps must themselves be exact, so the halo grows by this much.
        decoded_shape: ``(batch, C_out, total length)`` of the decoded output; needed with
            ``decode``.
        start: ``(e0, e1) -> [batch, channels, e1 - e0]`` the estimate sampling starts from,
            noised at ``spec.sigmas[0]`` (SDEdit); its exactness halo must be in
            ``halo_samples``. None: pure noise at the prior's scale.

    Returns:
        ``[batch, channels, n_samples]`` float32 on CPU, or the decoded ``decoded_shape``.

    Raises:
        ValueError: ``decode`` without ``decoded_shape``, or pieces that do not fill it.
    """
    if decode is not None and decoded_shape is None:
        raise ValueError("decode needs decoded_shape")
    out = torch.empty(*decoded_shape) if decode is not None else torch.empty(*shape, n_samples)
    filled = 0
    # decode reads decode_halo steps past the centre, each exact only with its own sampler halo.
    spans = chunk_spans(n_samples, chunk_samples, halo_samples + decode_halo)
    for piece in sample_chunks(
        denoiser, spec, spans, shape=shape, prepare_window=prepare_window, seed=seed,
        device=device, keys=keys, progress=progress, chunk_progress=chunk_progress, decode=decode,
        start=start,
    ):  # fmt: skip
        out[..., filled : filled + piece.shape[-1]] = piece
        filled += piece.shape[-1]
    if filled != out.shape[-1]:
        raise ValueError(f"decoded pieces cover {filled} of {out.shape[-1]} output samples")
    return out


def chunk_spans(n_samples: int, chunk_samples: int, halo: int) -> Iterator[Span]:
    """:func:`synthesize`'s chunks ``(e0, e1, s0, s1)``: centres ``[s0, s1)`` of ``chunk_samples``
    (the last one shorter), extended by ``halo`` either side within ``[0, n_samples)``."""
    chunk_samples = max(1, chunk_samples)
    for s0 in range(0, n_samples, chunk_samples):  # chunk_count(n_samples, chunk_samples)
        s1 = min(n_samples, s0 + chunk_samples)
        yield max(0, s0 - halo), min(n_samples, s1 + halo), s0, s1


def sample_chunks(
    denoiser: Callable[..., torch.Tensor],
    spec: SamplingSpec,
    spans: Iterable[Span],
    *,
    shape: tuple[int, int],
    prepare_window: Callable[[int, int], Any],
    seed: int,
    device: Any,
    keys: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_progress: Callable[[int], None] | None = None,
    decode: Callable[[torch.Tensor, int, int, int, int], torch.Tensor] | None = None,
    start: Callable[[int, int], torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """The sampling loop itself: for each span ``(e0, e1, s0, s1)`` (taken from ``spans`` only
    when the previous piece is consumed, so a stream can produce them as its input arrives), all
    of ``spec``'s steps over ``[e0, e1)``, yielding the centre ``[s0, s1)`` (``[batch, channels,
    s1 - s0]`` float32 on CPU) or ``decode``'s piece of it. Arguments as :func:`synthesize`."""
    start_std = prior_std(float(spec.sigmas[0]))
    for e0, e1, s0, s1 in spans:
        prepared = prepare_window(e0, e1)
        x = positional_noise(seed, 0, e0, e1, shape, keys=keys, device=device)
        if start is None:
            x = x * start_std
        else:
            x = start(e0, e1).to(device=device, dtype=x.dtype) + x * float(spec.sigmas[0])

        def noise_sampler(
            step: int, like: torch.Tensor, e0: int = e0, e1: int = e1
        ) -> torch.Tensor:
            noise = positional_noise(seed, step + 1, e0, e1, shape, keys=keys, device=like.device)
            return noise.to(like.dtype)

        def callback(info: Any) -> None:
            if progress is not None:
                progress(1)

        x = sample(
            spec.sampler, denoiser, x, spec.sigmas, eta=spec.eta, extra={"cond": prepared},
            noise_sampler=noise_sampler, callback=callback,
        )  # fmt: skip
        if decode is None:
            yield x[..., s0 - e0 : s1 - e0].float().cpu()
        else:
            yield decode(x, e0, e1, s0, s1)
        if chunk_progress is not None:
            chunk_progress(1)


def chunk_count(n_samples: int, chunk_samples: int) -> int:
    """How many chunks :func:`synthesize` runs for ``n_samples`` (both in the same unit)."""
    return max(1, math.ceil(n_samples / max(1, chunk_samples)))


def vocode_mel(
    denoiser: Any,
    spec: SamplingSpec,
    domain: Domain,
    mel: torch.Tensor,
    *,
    seed: int,
    chunk_samples: int | None,
    device: Any,
    keys: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Mel -> audio with a mel-conditioned model in any vocoder domain, through :func:`synthesize`.

    Args:
        denoiser: a :class:`~audiodiff.diffusion.Denoiser` over the network.
        spec: sampler, sigmas, eta and t_mapping.
        domain: the model's domain (:mod:`audiodiff.domains`): waveform models sample audio
            directly; frame-rate (stft) models sample frames, decoded chunk by chunk.
        mel: ``[B, n_mels, frames]`` on ``device``, already checked against the profile.
        seed: base seed of the positional noise.
        chunk_samples: long-form chunk length in output samples; None: one pass.
        keys: each row's noise key; None: the row indices.
        progress, chunk_progress: as :func:`synthesize` (:func:`mel_chunk_count` chunks).

    Returns:
        ``[B, 1, frames * hop_length]`` float32 on CPU.
    """
    net = denoiser.net
    frames = mel.shape[2]
    n_units, chunk = _mel_units(domain, frames, chunk_samples)
    prepare_window, decode = mel_windows(denoiser, spec, domain, WholeMel(mel))
    start = mel_start(spec, domain, WholeMel(mel))
    out = synthesize(
        denoiser, spec, n_samples=n_units, shape=(mel.shape[0], domain.channels),
        prepare_window=prepare_window, halo_samples=sampling_halo(net, spec, domain),
        chunk_samples=chunk, seed=seed, device=device, keys=keys, progress=progress,
        chunk_progress=chunk_progress, decode=decode, start=start,
        decode_halo=domain.window_halo(spec.refinement) if decode else 0,
        decoded_shape=(mel.shape[0], 1, domain.audio_length(frames)) if decode else None,
    )  # fmt: skip
    # Waveform models sample the whitened waveform; undo a PriorGrad prior's per-sample scale.
    return out if decode else domain.from_model(out, mel.cpu())


@dataclass(frozen=True)
class WholeMel:
    """A whole ``[B, n_mels, frames]`` mel as :func:`mel_windows` reads one (a stream's buffer
    is the other kind: :mod:`audiodiff.streaming`)."""

    mel: torch.Tensor

    @property
    def frames(self) -> int:  # frames known: all of them
        return self.mel.shape[-1]

    def window(self, f0: int, f1: int) -> torch.Tensor:
        return self.mel[..., f0:f1]

    def total(self, stop: int) -> int:  # the utterance's frame count
        return self.frames


def mel_windows(denoiser: Any, spec: SamplingSpec, domain: Domain, mel: Any) -> tuple[Any, Any]:
    """``(prepare_window, decode)`` of :func:`sample_chunks` for a mel-conditioned model.

    ``mel`` has ``frames`` (the frames known), ``window(f0, f1)`` (those frames, ``[B, n_mels,
    f1 - f0]``) and ``total(e1)``: the utterance's frame count, or while a stream's end is not
    known yet any count past ``e1``, the end of the window being decoded. ``decode`` is None for
    waveform models (their chunks are the whitened waveform itself).
    """
    # The diffused variable's time unit: a sample (waveform) or a frame (stft).
    hop = 1 if domain.frame_rate else domain.hop_length
    frame_halo = denoiser.net.conditioner_halo_frames()

    def prepare_window(start: int, stop: int) -> Any:
        f0 = max(0, start // hop - frame_halo)
        f1 = min(mel.frames, math.ceil(stop / hop) + frame_halo)
        window = mel.window(f0, f1)
        # Row by row: a batched convolution may round differently from a single one, and a
        # clip's output must not depend on what it is batched with.
        rows = [denoiser.prepare(window[b : b + 1], None) for b in range(window.shape[0])]
        prepared = rows[0] if len(rows) == 1 else Conditioning.cat(rows)
        return prepared.slice_time(start - f0 * hop, stop - f0 * hop)

    # Each chunk becomes audio as soon as it is sampled (inverse STFT of its centre and a few
    # halo frames), so long inputs never hold the whole 1026-channel signal.
    def decode(x: torch.Tensor, e0: int, e1: int, s0: int, s1: int) -> torch.Tensor:
        return domain.from_model_window(
            x.cpu(), mel.window(e0, e1).cpu(), first=e0, total=mel.total(e1), start=s0, stop=s1,
            refinement=spec.refinement,
        )  # fmt: skip

    return prepare_window, decode if domain.frame_rate else None


def mel_start(spec: SamplingSpec, domain: Domain, mel: Any) -> Any:
    """``(e0, e1) -> the domain's DSP estimate of frames [e0, e1)`` for a ``model.start:
    estimate`` model (read from ``mel`` as :func:`mel_windows` reads it), or None."""
    if spec.start != "estimate":
        return None

    def start(e0: int, e1: int) -> torch.Tensor:
        return domain.estimate(mel.window(e0, e1), first=e0, total=mel.total(e1))

    return start


def sampling_halo(net: Any, spec: SamplingSpec, domain: Domain) -> int:
    """The sampler's exactness halo (:func:`halo_units`) plus the reach of the estimate it
    starts from, if any."""
    return halo_units(net, spec.steps) + domain.estimate_halo()


def _mel_units(domain: Domain, frames: int, chunk_samples: int | None) -> tuple[int, int]:
    """``(length, chunk)`` of :func:`vocode_mel`'s sampling, in the domain's time unit."""
    n_units = frames * (1 if domain.frame_rate else domain.hop_length)
    return n_units, n_units if chunk_samples is None else domain.length(chunk_samples)


def mel_chunk_count(domain: Domain, frames: int, chunk_samples: int | None) -> int:
    """How many chunks :func:`vocode_mel` runs for a mel of ``frames`` frames."""
    return chunk_count(*_mel_units(domain, frames, chunk_samples))


def halo_units(net: Any, steps: int) -> int:
    """Exactness halo of chunked synthesis in the network's time steps (samples for waveform
    models, frames for frame-rate ones): ``steps`` evaluations x the receptive radius."""
    return steps * (net.receptive_field() - 1) // 2
