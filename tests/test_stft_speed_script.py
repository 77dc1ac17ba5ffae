"""benchmarks/stft_speed.py imports (with its sibling helpers) and makes its input signal; the
benchmark itself is run by hand (``python benchmarks/stft_speed.py --quick`` for a smoke run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "stft_speed.py"


@pytest.fixture(scope="module")
def stft_speed():
    spec = importlib.util.spec_from_file_location("stft_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["stft_speed"] = module
    spec.loader.exec_module(module)
    return module


def test_speech_like_signal(stft_speed):
    x = stft_speed.speech_like(0.5)
    assert x.dtype == np.float32 and x.shape == (11025,)
    assert 0.4 < np.abs(x).max() <= 0.55
    assert np.array_equal(x, stft_speed.speech_like(0.5))  # seeded
    # Voiced (harmonic) most of the time: a periodic signal in the speech f0 range.
    spectrum = np.abs(np.fft.rfft(x))
    assert 80 < np.argmax(spectrum) * 22050 / x.size < 2000


def test_ratio_wording(stft_speed):
    assert stft_speed.faster(25.0) == "25.00x faster"
    assert stft_speed.faster(0.5) == "2.00x slower"
    assert stft_speed.verdict(True) == "met" and stft_speed.verdict(False) == "NOT met"
