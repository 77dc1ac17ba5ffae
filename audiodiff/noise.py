"""Positional noise: the sampling noise drawn *by position* (see :mod:`audiodiff.synthesis`), so
any window of an utterance (a chunk, a piece of a stream) redraws exactly the noise the whole
utterance sees. Moved here from :mod:`audiodiff.synthesis` unchanged (same draws)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from audiodiff.seeds import noise_block_seed, noise_row_key

# Noise is drawn in blocks of this many samples (frames for mel-domain models) per stream.
NOISE_BLOCK = 4096


def positional_noise(
    seed: int,
    stream: int,
    start: int,
    stop: int,
    shape: tuple[int, int],
    *,
    keys: Sequence[int] | None = None,
    device: Any = "cpu",
) -> torch.Tensor:
    """Standard normal noise for positions ``[start, stop)`` of one stream, whatever the window.

    Args:
        seed: the draw's base seed.
        stream: which noise stream (0 = initial noise, k = noise added after step k).
        start, stop: time range in samples (frames for mel-domain models).
        shape: ``(batch, channels)``.
        keys: one non-negative integer per row naming the item it belongs to (at most 64
            bits); None: the row indices ``0..batch-1``.

    Returns:
        float32 tensor ``[batch, channels, stop - start]`` on ``device``; row ``b`` depends only
        on ``(seed, stream, keys[b])`` and the window, never on the other rows.

    Raises:
        ValueError: ``keys`` of another length than the batch, or a negative key.
    """
    batch, channels = shape
    keys = list(range(batch)) if keys is None else [int(k) for k in keys]
    if len(keys) != batch or any(k < 0 for k in keys):
        raise ValueError(f"need {batch} non-negative noise keys, one per row, got {keys}")
    first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
    rows = []
    # Keyed by the item, not its batch row, so a clip's noise does not depend on its batch.
    for key in keys:
        row_key = noise_row_key(seed, stream, key)
        pieces = []
        for block in range(first, last + 1):
            gen = torch.Generator().manual_seed(noise_block_seed(row_key, block))
            pieces.append(torch.randn(channels, NOISE_BLOCK, generator=gen))
        rows.append(torch.cat(pieces, dim=-1))
    noise = torch.stack(rows)
    offset = start - first * NOISE_BLOCK
    return noise[..., offset : offset + stop - start].to(device)
