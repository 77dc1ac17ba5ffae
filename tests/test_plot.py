"""Spectrogram pictures: the dB and Hz axes are the profile's, the PNG is screen-sized and titled,
outputs are never replaced silently, and a missing matplotlib is one clear error before any work."""

from __future__ import annotations

import builtins
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.config import mel_profile
from audiodiff.mel import MelSpectrogram, _filterbank
from audiodiff.plot import (
    DPI,
    FIG_WIDTH_IN,
    PANEL_HEIGHT_IN,
    check_plotting_available,
    mel_bin_hz,
    mel_to_db,
    spectrogram_figure,
    spectrogram_png,
)

pytest.importorskip("matplotlib")


def png_size(path: Path) -> tuple[int, int]:
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    return width, height


def test_levels_are_the_mel_magnitude_in_db_for_both_compressions() -> None:
    ln_cfg, db_cfg = mel_profile("hifigan"), mel_profile("diffwave")
    # ln(10) is a magnitude of 10: +20 dB; diffwave-db's 0 and 1 are its clamps, -80 and +20 dB.
    assert mel_to_db(np.array([math.log(10.0), math.log(1e-5)]), ln_cfg) == pytest.approx(
        [20.0, -100.0]
    )
    assert mel_to_db(np.array([0.0, 0.5, 1.0]), db_cfg) == pytest.approx([-80.0, -30.0, 20.0])
    bad = dataclasses.replace(ln_cfg, compression="log2")
    with pytest.raises(ValueError, match="unknown mel compression 'log2'"):
        mel_to_db(np.zeros(2), bad)


def test_a_tone_lands_on_the_bin_labelled_with_its_frequency() -> None:
    cfg = mel_profile("hifigan")
    t = torch.arange(cfg.sample_rate) / cfg.sample_rate
    mel = MelSpectrogram(cfg)(0.5 * torch.sin(2 * math.pi * 1000.0 * t)[None])[0].numpy()
    hz = mel_bin_hz(cfg)
    loudest = hz[mel[:, 40].argmax()]
    spacing = np.diff(hz)[mel[:, 40].argmax()]
    assert abs(loudest - 1000.0) <= spacing


def test_bin_frequencies_are_the_filterbank_peaks() -> None:
    for name in ("hifigan", "bigvgan-24k", "diffwave"):
        cfg = mel_profile(name)
        fb = _filterbank(cfg)
        peak_hz = fb.argmax(axis=1) * cfg.sample_rate / cfg.n_fft
        hz = mel_bin_hz(cfg)
        assert hz.shape == (cfg.n_mels,)
        assert np.all(np.diff(hz) > 0)
        # Each centre lies within one FFT bin of its triangle's peak.
        assert np.max(np.abs(hz - peak_hz)) <= cfg.sample_rate / cfg.n_fft


def test_panels_make_one_screen_sized_png(tmp_path: Path, make_audio) -> None:
    cfg = mel_profile("hifigan")
    mel = MelSpectrogram(cfg)(torch.from_numpy(make_audio(duration_s=0.5))[None])[0].numpy()
    quiet = mel - 3.0  # 26 dB lower: drawn on the loud panel's scale
    path = spectrogram_png(tmp_path / "figs" / "m.png", [("loud", mel), ("quiet", quiet)], cfg)
    assert png_size(path) == (round(FIG_WIDTH_IN * DPI), round(2 * PANEL_HEIGHT_IN * DPI))
    assert [p.name for p in path.parent.iterdir()] == ["m.png"]  # no temp file left behind


def test_panels_share_one_db_scale_low_bins_down_with_hz_labels(make_audio) -> None:
    cfg = mel_profile("hifigan")
    mel = MelSpectrogram(cfg)(torch.from_numpy(make_audio(duration_s=0.5))[None])[0].numpy()
    fig = spectrogram_figure([("loud", mel), ("quiet", mel - 3.0)], cfg)
    images = [ax for ax in fig.axes if ax.images]  # the panels (the colour bar has none)
    assert [ax.get_title() for ax in images] == ["loud", "quiet"]
    top = float(mel_to_db(mel, cfg).max())
    for ax in images:
        image = ax.images[0]
        assert image.origin == "lower"  # low frequencies at the bottom
        assert image.get_clim() == pytest.approx((top - 80.0, top))  # the loud panel's scale
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == ["250", "500", "1000", "2000", "4000"]  # inside 0..8 kHz's bin centres
    assert images[1].images[0].get_array().max() == pytest.approx(top - 3.0 * 20 / math.log(10))
    assert fig.axes[-1].get_ylabel() == "level (dB)" and images[-1].get_xlabel() == "time (s)"


def test_no_overwrite_and_bad_panels(tmp_path: Path) -> None:
    cfg = mel_profile("hifigan")
    flat = np.full((80, 5), -11.5)
    flat[3, 2] = np.nan
    path = spectrogram_png(tmp_path / "x.png", [("flat", flat)], cfg)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        spectrogram_png(path, [("a", flat)], cfg)
    spectrogram_png(path, [("a", flat), ("b", flat)], cfg, overwrite=True)
    assert png_size(path)[1] == round(2 * PANEL_HEIGHT_IN * DPI)
    with pytest.raises(ValueError, match=r"'bad' must be a non-empty \[80, frames\] mel"):
        spectrogram_png(tmp_path / "y.png", [("bad", np.ones((100, 4)))], cfg)
    with pytest.raises(ValueError, match="at least one panel"):
        spectrogram_png(tmp_path / "y.png", [], cfg)
    assert not (tmp_path / "y.png").exists()


def test_missing_matplotlib_is_named_with_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name.startswith("matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'audiodiff\[plot\]'"):
        check_plotting_available()
