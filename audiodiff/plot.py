"""Spectrogram images as PNG files, written with numpy, zlib and struct only (no matplotlib).

Used for training logs and reports: several mels (for example real, generated, difference)
stacked vertically with one shared colour scale, so panels can be compared by eye.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np

# viridis (perceptually uniform, colour-blind safe) sampled at nine evenly spaced points, 0 -> 1
# (the palette's published hex stops #440154 ... #fde725); linear interpolation between them is a
# close approximation of the full 256-entry table, and keeps lightness monotonic.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
GAP_PX = 4
BACKGROUND_RGB = (255, 255, 255)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map ``values`` in [0, 1] (any shape) to viridis RGB, uint8 ``[..., 3]``."""
    pos = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.minimum(np.floor(pos).astype(np.int64), len(_VIRIDIS) - 2)
    frac = (pos - low)[..., None]
    rgb = _VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac
    return np.round(rgb).astype(np.uint8)


def _png_bytes(image: np.ndarray) -> bytes:
    """Encode an RGB uint8 ``[H, W, 3]`` image as PNG (8-bit truecolour, no filtering)."""
    height, width, _ = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    # Every scanline starts with filter type 0 (None).
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def spectrogram_png(
    path: str | Path,
    panels: list[tuple[str, np.ndarray]],
    *,
    overwrite: bool = False,
) -> Path:
    """Write spectrogram panels stacked top to bottom into one PNG.

    One pixel per (frame, mel bin), low frequencies at the bottom of each panel, viridis colours
    over a colour range shared by all panels (min to max of their finite values; NaN/inf drawn
    at the low end), a white gap of ``GAP_PX`` pixels between panels; narrower panels are padded
    with white on the right. Titles are not rendered (there is no font code here); they only name
    the panel in error messages, so put what the panels are in the file name or the log.

    Args:
        path: output ``.png``; parent folders are created. Written to a temp file, then replaced.
        panels: ``(title, values [n_mels, frames])`` pairs, top panel first.
        overwrite: replace an existing file; otherwise an existing file is an error.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: no panels, or a panel that is not a non-empty 2-D array.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (--overwrite on the CLI) to replace it"
        )
    if not panels:
        raise ValueError("spectrogram_png needs at least one panel")
    arrays = []
    for title, values in panels:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(
                f"panel {title!r} must be a non-empty [n_mels, frames] array, got {arr.shape}"
            )
        arrays.append(arr)
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = high - low if high > low else 1.0

    width = max(a.shape[1] for a in arrays)
    height = sum(a.shape[0] for a in arrays) + GAP_PX * (len(arrays) - 1)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND_RGB
    top = 0
    for arr in arrays:
        scaled = np.where(np.isfinite(arr), (arr - low) / span, 0.0)
        image[top : top + arr.shape[0], : arr.shape[1]] = colormap(scaled[::-1])  # low bins down
        top += arr.shape[0] + GAP_PX

    path.parent.mkdir(parents=True, exist_ok=True)
    # Temp file beside the target, then an atomic rename (a reader never sees half a PNG).
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_bytes(_png_bytes(image))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
