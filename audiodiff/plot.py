"""Spectrogram pictures people can read: titled panels, time in seconds, frequency in Hz on the mel
axis, one colour bar in dB shared by all panels. Drawn with matplotlib (the ``plot`` extra), which
is imported only when a picture is drawn, so ``import audiodiff`` never pulls it in.

Used by ``audiodiff demo`` (original / diffusion / Griffin-Lim), ``audiodiff mel --plot`` and
``audiodiff generate --save-mels --plot``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch

from audiodiff.atomic import atomic_write
from audiodiff.config import MelConfig
from audiodiff.mel import decompress_mel

# Screen-sized: 10 inches at 120 dpi is 1200 px wide; each panel adds 2.6 inches (312 px).
FIG_WIDTH_IN = 10.0
PANEL_HEIGHT_IN = 2.6
DPI = 120
# Colour range below the loudest value: 80 dB shows speech's harmonics and its noise floor
# without spending the palette on the -100 dB clamp of silent frames (librosa's specshow default).
DYNAMIC_RANGE_DB = 80.0
# Frequencies labelled on the mel axis, Hz; those inside the profile's band are used.
HZ_TICKS = (0, 250, 500, 1000, 2000, 4000, 8000, 12000, 16000, 20000)
PLOT_EXTRA_HINT = "pip install 'audiodiff[plot]'"


def mel_to_db(mel: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Undo the profile's compression to the mel magnitude's level in dB (``20 log10``).

    ``ln``: ``ln(M) * 20 / ln 10``; ``diffwave-db``: ``100 v - 100 + 20`` (lmnt-com/diffwave's
    ``(20 log10 M - 20 + 100) / 100``, inverted; clipped values stay at the clip, -80 or +20 dB).

    Args:
        mel: ``[n_mels, frames]`` in the profile's compression.
        cfg: the profile the mel was computed with.

    Raises:
        ValueError: an unknown compression.
    """
    magnitude = decompress_mel(torch.from_numpy(np.asarray(mel, dtype=np.float64)), cfg)
    with np.errstate(divide="ignore"):  # a zero magnitude is -inf dB, drawn blank
        return 20.0 * np.log10(magnitude.numpy())


def mel_bin_hz(cfg: MelConfig) -> np.ndarray:
    """Centre frequency in Hz of each mel bin, ``[n_mels]`` (librosa's mel scale, as the
    filterbank of :class:`audiodiff.mel.MelSpectrogram`)."""
    f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
    edges = librosa.mel_frequencies(
        n_mels=cfg.n_mels + 2, fmin=cfg.f_min, fmax=f_max, htk=cfg.mel_scale == "htk"
    )
    return edges[1:-1]


def _import_matplotlib():  # noqa: ANN202 - returns the two classes used below
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"spectrogram pictures need matplotlib, which is not installed: {PLOT_EXTRA_HINT}"
        ) from None
    return Figure, FigureCanvasAgg


def check_plotting_available() -> None:
    """Raise before any work when pictures were asked for and matplotlib is missing.

    Raises:
        ModuleNotFoundError: matplotlib is not installed (the message names the extra).
    """
    _import_matplotlib()


def spectrogram_figure(panels: list[tuple[str, np.ndarray]], cfg: MelConfig) -> Any:
    """The matplotlib ``Figure`` that :func:`spectrogram_png` saves (layout in its docstring).

    Raises:
        ValueError: no panels, or a panel that is not a non-empty ``[cfg.n_mels, frames]`` array.
        ModuleNotFoundError: matplotlib is missing.
    """
    if not panels:
        raise ValueError("spectrogram_png needs at least one panel")
    arrays = []
    for title, values in panels:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 2 or arr.size == 0 or arr.shape[0] != cfg.n_mels:
            raise ValueError(
                f"panel {title!r} must be a non-empty [{cfg.n_mels}, frames] mel of profile "
                f"{cfg.name}, got shape {arr.shape}"
            )
        db = mel_to_db(arr, cfg)
        arrays.append(np.where(np.isfinite(db), db, np.nan))
    Figure, FigureCanvasAgg = _import_matplotlib()

    finite = np.concatenate([a[np.isfinite(a)] for a in arrays])
    top = float(finite.max()) if finite.size else 0.0
    vmin, vmax = top - DYNAMIC_RANGE_DB, top
    hz = mel_bin_hz(cfg)
    ticks = [f for f in HZ_TICKS if hz[0] <= f <= hz[-1]]
    # Tick positions in bin units: where each labelled frequency falls between bin centres.
    tick_pos = np.interp(ticks, hz, np.arange(cfg.n_mels))
    seconds_per_frame = cfg.hop_length / cfg.sample_rate

    fig = Figure(
        figsize=(FIG_WIDTH_IN, PANEL_HEIGHT_IN * len(arrays)), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(arrays), 1, squeeze=False, sharex=True)[:, 0]
    image = None
    for ax, (title, _), arr in zip(axes, panels, arrays, strict=True):
        image = ax.imshow(
            arr,
            origin="lower",
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            extent=(0.0, arr.shape[1] * seconds_per_frame, -0.5, cfg.n_mels - 0.5),
        )
        ax.set_title(title)
        ax.set_ylabel("frequency (Hz, mel scale)")
        ax.set_yticks(tick_pos, [f"{f:g}" for f in ticks])
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="level (dB)", pad=0.01)
    return fig


def spectrogram_png(
    path: str | Path,
    panels: list[tuple[str, np.ndarray]],
    cfg: MelConfig,
    *,
    overwrite: bool = False,
) -> Path:
    """Draw mel spectrograms as titled panels, top to bottom, into one PNG.

    Each panel shows time in seconds (frames x ``hop_length / sample_rate``) against the mel bins
    labelled with their frequencies in Hz (low frequencies at the bottom). All panels share one
    colour scale in dB, from the loudest value of any panel down ``DYNAMIC_RANGE_DB`` (NaN and
    inf are drawn blank), with one colour bar. The figure is ``FIG_WIDTH_IN`` x
    ``PANEL_HEIGHT_IN`` per panel at ``DPI``.

    Args:
        path: output ``.png``; parent folders are created. Written atomically
            (:func:`~audiodiff.atomic.atomic_write`): a reader never sees half a picture.
        panels: ``(title, log-mel [n_mels, frames])`` pairs in ``cfg``'s compression, top first.
        cfg: the mel profile of every panel (axes and the dB conversion come from it).
        overwrite: replace an existing file; otherwise an existing file is an error.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: no panels, or a panel that is not a non-empty ``[cfg.n_mels, frames]`` array.
        ModuleNotFoundError: matplotlib is missing.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (--overwrite on the CLI) to replace it"
        )
    fig = spectrogram_figure(panels, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))
