"""Every seed the package derives, in one place.

Two derivations, each where its properties matter:

* :func:`derived_seed` (NumPy's ``SeedSequence``): the training streams (initialisation, crops,
  epoch order, diffusion noise per step and shard, validation draws). ``SeedSequence`` hashes its
  whole entropy, so nearby keys give unrelated streams; it runs once per stream.
* SplitMix64 (Steele et al. 2014; :func:`noise_row_key`, :func:`noise_block_seed`,
  :func:`item_seed`): the sampling noise, drawn *by position* in blocks for every chunk of every
  call, so it must be cheap; it decorrelates nearby integers in a few multiplications.

Changing either would change every run's or every sample's random draws, so both stay as they
were when they were written (outputs of this version equal the previous one's).
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import torch

MASK64 = (1 << 64) - 1


def splitmix64(value: int) -> int:
    """One round of SplitMix64 (Steele et al. 2014): decorrelates nearby integer seeds."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 31)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def rotate32(value: int) -> int:
    """Swap the 32-bit halves of a 64-bit key (``key << 32`` for keys below 2**32)."""
    return ((value << 32) | (value >> 32)) & MASK64


def item_key(item: torch.Tensor) -> int:
    """A 63-bit noise key of one item, from its values rounded to float16, and its shape.

    The same mel gives the same key (hence the same noise and the same audio) in any batch and at
    any position, and so does its float16 twin: a TTS model running in half precision hands over
    the float32 mel rounded to float16, and must get the same audio within that rounding, not
    another noise draw. Mels that differ by more than float16's rounding get another key.
    """
    # float32 -> float16 rounds to nearest, so a float32 mel and its float16 copy hash equal.
    data = item.detach().to("cpu", torch.float32).to(torch.float16).contiguous()
    digest = hashlib.sha256(str(tuple(data.shape)).encode("utf-8"))
    digest.update(data.numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def item_seed(seed: int, key: int) -> int:
    """A 63-bit generator seed for one item (``key``, e.g. :func:`item_key`) under ``seed``: for
    draws that are not positional (Griffin-Lim's initial phase), so they are per item too."""
    return splitmix64(splitmix64(seed & MASK64) ^ rotate32(key)) >> 1


def noise_row_key(seed: int, stream: int, key: int) -> int:
    """The 64-bit key of one item's noise stream: base ``seed``, ``stream`` (0 = the initial
    noise, k = noise added after step k) and the item's ``key``."""
    return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ rotate32(key))


def noise_block_seed(row_key: int, block: int) -> int:
    """A 63-bit generator seed of one time block of a noise stream (:func:`noise_row_key`)."""
    return splitmix64(row_key ^ block) >> 1


def resolve_seed(generator: torch.Generator | None, seed: int | None) -> int:
    """The base seed of one sampling call: ``seed`` when given, else a draw from ``generator``
    (a fresh, OS-seeded one when both are None)."""
    if seed is not None:
        return int(seed)
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def derived_seed(purpose: str, *keys: int) -> int:
    """A 63-bit generator seed that depends only on ``purpose`` and the non-negative ``keys``.

    ``SeedSequence`` hashes its entropy, so nearby keys give unrelated streams. The purpose
    ("crop", "order", "noise", ...) keeps the streams of different uses apart, and the key count
    is mixed in because ``SeedSequence`` zero-pads short entropy ((a, b) would equal (a, b, 0)).
    """
    entropy = [zlib.crc32(purpose.encode()), len(keys), *keys]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
