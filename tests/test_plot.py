"""spectrogram_png writes a valid PNG: signature, IHDR, CRCs, and pixels decoded back with zlib."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from audiodiff.plot import BACKGROUND_RGB, GAP_PX, colormap, spectrogram_png


def read_png(path: Path) -> tuple[int, int, np.ndarray]:
    """Minimal decoder for the files written here: 8-bit RGB, filter type 0 on every line."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    assert np.all(rows[:, 0] == 0)
    return width, height, rows[:, 1:].reshape(height, width, 3)


def test_panels_are_stacked_with_shared_range_and_low_bins_at_the_bottom(tmp_path: Path) -> None:
    a = np.zeros((5, 7))
    a[0, 0] = 2.0  # lowest bin, first frame: the maximum of both panels
    b = np.full((3, 4), 1.0)  # narrower panel: padded with background on the right
    path = spectrogram_png(tmp_path / "figs" / "mel.png", [("real", a), ("fake", b)])
    width, height, image = read_png(path)
    assert (width, height) == (7, 5 + GAP_PX + 3)
    assert image[4, 0].tolist() == colormap(np.array(1.0)).tolist() == [253, 231, 37]
    assert image[0, 0].tolist() == colormap(np.array(0.0)).tolist() == [68, 1, 84]
    assert image[5, 0].tolist() == list(BACKGROUND_RGB)  # the gap
    # 1.0 is the middle of the shared range 0..2, in both panels' colour.
    assert image[5 + GAP_PX, 0].tolist() == colormap(np.array(0.5)).tolist()
    assert image[5 + GAP_PX, 6].tolist() == list(BACKGROUND_RGB)


def test_colormap_is_monotonic_in_lightness() -> None:
    rgb = colormap(np.linspace(0, 1, 64)).astype(float)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) > 0)


def test_constant_and_non_finite_panels_are_drawn(tmp_path: Path) -> None:
    values = np.full((4, 4), -11.5)
    values[1, 1] = np.nan
    _, _, image = read_png(spectrogram_png(tmp_path / "c.png", [("flat", values)]))
    assert np.all(image == colormap(np.array(0.0)))


def test_no_overwrite_and_bad_panels(tmp_path: Path) -> None:
    path = spectrogram_png(tmp_path / "x.png", [("a", np.ones((2, 2)))])
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        spectrogram_png(path, [("a", np.ones((2, 2)))])
    spectrogram_png(path, [("a", np.ones((3, 2)))], overwrite=True)
    assert read_png(path)[1] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    with pytest.raises(ValueError, match="'bad' must be a non-empty"):
        spectrogram_png(tmp_path / "y.png", [("bad", np.ones(5))])
    with pytest.raises(ValueError, match="at least one panel"):
        spectrogram_png(tmp_path / "y.png", [])
