"""Streaming synthesis: mel pieces in as a TTS front end makes them, audio out as soon as it is
final, through the one sampling loop (:func:`audiodiff.synthesis.sample_chunks`).

Chunked synthesis is exact (:mod:`audiodiff.synthesis`): the centre ``[s0, s1)`` of a chunk
extended by a halo ``H`` (sampler steps x receptive radius, plus what decoding reads around the
centre: the inverse STFT's overlap and the refinement's reach) equals whole-utterance synthesis,
because the noise is drawn by position and the conditioning of a window is prepared from the mel
around it. So a stream needs no new mathematics, only the chunks' *order of arrival*: a chunk can
run once the mel reaches ``s1 + H`` plus the conditioner's own halo (:func:`lookahead_frames`), and
its result never changes afterwards. :func:`stream_spans` produces those chunks lazily as pieces
of mel arrive, and the loop consumes them one at a time, so the first audio comes out before the
mel ends and memory holds one chunk plus its halo, whatever the stream's length.

Differences from offline synthesis, all of which leave the output equal to it (within float
rounding, 1e-5):

* **Noise key.** Offline synthesis keys a clip's noise by a hash of its whole mel
  (:func:`audiodiff.seeds.item_key`), which a stream cannot compute before its end. A stream has an
  explicit key instead (default 0): ``stream(pieces, seed=s, key=k)`` equals
  ``vocoder(mel, seed=s, keys=[k])``.
* **The utterance's end.** Until the stream ends, a chunk is decoded as if the utterance went on
  past its window (inner-edge padding); the halo makes its centre independent of that. The last
  chunks run when the input is exhausted, with the true length.
* **Chunk boundaries.** A chunk runs when at least ``chunk_frames`` new frames are final (fewer
  would pay the halo's cost on little output), at most the offline chunk (the memory bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from audiodiff.domains import Domain
from audiodiff.synthesis import (
    SamplingSpec,
    Span,
    mel_start,
    mel_windows,
    sample_chunks,
    sampling_halo,
)


def lookahead_frames(net: Any, spec: SamplingSpec, domain: Domain) -> int:
    """Mel frames past a frame that its audio depends on: the synthesis halo (in frames), the
    decoding halo (stft: inverse STFT overlap and refinement) and the conditioner's halo."""
    hop = 1 if domain.frame_rate else domain.hop_length
    return math.ceil(_halo(net, spec, domain) / hop) + net.conditioner_halo_frames()


def _halo(net: Any, spec: SamplingSpec, domain: Domain) -> int:
    """A chunk's exactness halo in the domain's units, as :func:`~audiodiff.synthesis.vocode_mel`
    uses it."""
    decode = domain.window_halo(spec.refinement) if domain.frame_rate else 0
    return sampling_halo(net, spec, domain) + decode


class MelBuffer:
    """The mel frames a stream still needs: frames ``[first, frames)`` of the utterance, older ones
    dropped; read by :func:`~audiodiff.synthesis.mel_windows` like a whole mel."""

    def __init__(self, n_mels: int) -> None:
        self.first = 0
        self.data = torch.zeros(1, n_mels, 0)
        self.end: int | None = None  # the utterance's frame count, once the input is exhausted

    @property
    def frames(self) -> int:
        """Frames received so far."""
        return self.first + self.data.shape[-1]

    def append(self, piece: torch.Tensor) -> None:
        self.data = torch.cat([self.data, piece.to(self.data)], dim=-1)

    def drop_before(self, frame: int) -> None:
        """Forget frames before ``frame`` (no later window reads them)."""
        cut = min(max(0, frame - self.first), self.data.shape[-1])
        if cut:
            self.data = self.data[..., cut:].clone()
            self.first += cut

    def window(self, f0: int, f1: int) -> torch.Tensor:
        if f0 < self.first or f1 > self.frames:
            raise RuntimeError(
                f"frames [{f0}, {f1}) are not in the stream's buffer [{self.first}, {self.frames})"
            )
        return self.data[..., f0 - self.first : f1 - self.first]

    def total(self, stop: int) -> int:
        # Before the end is known, any length past the window: the window is decoded as inner.
        return self.end if self.end is not None else stop + 1


def stream_spans(
    pieces: Iterable[torch.Tensor],
    buffer: MelBuffer,
    *,
    hop: int,
    halo: int,
    lookahead: int,
    chunk_frames: int,
    max_frames: int,
) -> Iterator[Span]:
    """Chunks ``(e0, e1, s0, s1)`` (in the domain's units, ``hop`` per frame) as the pieces
    arrive: each one as soon as ``chunk_frames`` frames past the last are final (``lookahead``
    frames of mel beyond them received), at most ``max_frames``; the rest when ``pieces`` ends.
    Appends the pieces to ``buffer`` and drops the frames no later chunk reads."""
    done = 0  # frames whose audio has been scheduled

    def span(stop: int, total: int) -> Span:
        s0, s1 = done * hop, stop * hop
        return max(0, s0 - halo), min(total * hop, s1 + halo), s0, s1

    for piece in pieces:
        buffer.append(piece)
        while buffer.frames - lookahead - done >= chunk_frames:
            stop = min(buffer.frames - lookahead, done + max_frames)
            yield span(stop, buffer.frames)
            done = stop
            buffer.drop_before(done - lookahead - 1)
    buffer.end = buffer.frames
    while done < buffer.end:
        stop = min(buffer.end, done + max_frames)
        yield span(stop, buffer.end)
        done = stop


@torch.inference_mode()
def stream_mel(
    denoiser: Any,
    spec: SamplingSpec,
    domain: Domain,
    pieces: Iterable[torch.Tensor],
    *,
    seed: int,
    key: int,
    device: Any,
    chunk_frames: int,
    max_frames: int,
    n_mels: int,
    progress: Callable[[int], None] | None = None,
) -> Iterator[torch.Tensor]:
    """Audio ``[1, 1, L]`` float32 pieces of a stream of ``[1, n_mels, frames]`` mel pieces
    (checked by the caller; on ``device``); their concatenation equals :func:`vocode_mel` of the
    whole mel with ``keys=[key]`` (module docstring). Arguments as :func:`vocode_mel`."""
    buffer = MelBuffer(n_mels)
    buffer.data = buffer.data.to(device)
    hop = 1 if domain.frame_rate else domain.hop_length
    spans = stream_spans(
        pieces, buffer, hop=hop, halo=_halo(denoiser.net, spec, domain),
        lookahead=lookahead_frames(denoiser.net, spec, domain), chunk_frames=max(1, chunk_frames),
        max_frames=max(1, max_frames, chunk_frames),
    )  # fmt: skip
    prepare_window, decode = mel_windows(denoiser, spec, domain, buffer)
    if decode is None:
        # Waveform models sample the whitened waveform: undo a PriorGrad prior's per-sample scale
        # piece by piece (it is frame-local) with the frames of the piece.
        def decode(x: torch.Tensor, e0: int, e1: int, s0: int, s1: int) -> torch.Tensor:
            mel = buffer.window(s0 // hop, math.ceil(s1 / hop)).cpu()
            return domain.from_model(x[..., s0 - e0 : s1 - e0].float().cpu(), mel)

    yield from sample_chunks(
        denoiser, spec, spans, shape=(1, domain.channels), prepare_window=prepare_window,
        seed=seed, device=device, keys=[key], progress=progress, decode=decode,
        start=mel_start(spec, domain, buffer),
    )  # fmt: skip
