"""Reference-free perceptual quality predictors: offline MOS models for ``evaluate --perceptual``.

Two predictors of the mean opinion score (MOS, 1 = bad .. 5 = excellent) that listeners would give
a speech clip, needing no reference, both run at 16 kHz mono (other rates are resampled with
:func:`audiodiff.audio.resample`), both insensitive to the clip's level (each normalises it):

- **DistillMOS** (Stahl & Gamper, "Distillation and pruning for scalable self-supervised
  representation-based speech quality assessment", ICASSP 2025): a 4 M-parameter CNN+transformer
  distilled from an XLS-R-based quality model; torch, weights in the ``distillmos`` wheel (MIT).
- **DNSMOS P.808** (Reddy, Gopal & Cutler, "DNSMOS: a non-intrusive perceptual objective speech
  quality metric to evaluate noise suppressors", ICASSP 2021): a CNN on log-mel frames trained on
  ITU-T P.808 crowd ratings; ONNX weights from the ``speechmos`` wheel (MIT), run with
  onnxruntime. (The P.835 SIG/BAK/OVRL model of Reddy et al., ICASSP 2022, is not used.)

Both need the ``eval`` extra. :class:`PerceptualScorer` loads each model once, on first use, and is
meant to be reused across files; the two functions below build a throwaway one per call.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import types
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audiodiff.audio import resample

SAMPLE_RATE = 16000
# Result keys, in table order.
PERCEPTUAL_KEYS = ("distillmos", "dnsmos_p808")
PACKAGES = ("distillmos", "xls_r_sqa", "speechmos", "onnxruntime", "requests")
PERCEPTUAL_EXTRA_HINT = (
    "perceptual scores need the eval extra and DistillMOS: pip install -e '.[eval]' && "
    "pip install --no-deps distillmos xls-r-sqa"
)


def missing_packages() -> list[str]:
    """Which packages of the perceptual part of the ``eval`` extra are not importable."""
    return [m for m in PACKAGES if importlib.util.find_spec(m) is None]


def perceptual_available() -> bool:
    """Whether DistillMOS and DNSMOS P.808 can run (``distillmos``, ``speechmos``, onnxruntime)."""
    return not missing_packages()


def _require() -> None:
    missing = missing_packages()
    if missing:
        raise ModuleNotFoundError(f"{PERCEPTUAL_EXTRA_HINT} (missing: {', '.join(missing)})")


class _NoTorchaudio(types.ModuleType):
    """Stands in for torchaudio while ``distillmos.sqa`` is imported; any use of it says why."""

    def __getattr__(self, name: str) -> Any:
        raise ImportError(
            f"torchaudio.{name}: audiodiff imported distillmos without torchaudio; use "
            "audiodiff.perceptual for scoring, or import torchaudio before audiodiff does"
        )


def _import_distillmos() -> types.ModuleType:
    """``distillmos.sqa``, imported without importing torchaudio.

    ``distillmos/sqa.py`` does ``import torchaudio`` at the top but uses it only in its own
    command line's file loading and resampling (``torchaudio.load``, ``transforms.Resample``);
    the model is plain torch. audiodiff never depends on torchaudio (it loads with soundfile and
    resamples with soxr), and a torchaudio that pip resolved for distillmos is often built for
    another torch, so importing it fails (OSError on its C extension) or is merely slow. So unless
    the process has already imported torchaudio, a stub module sits in ``sys.modules`` for the
    duration of the import only and the previous state is restored right after: torchaudio is
    never loaded, and a later ``import torchaudio`` by the caller gets the real one.
    """
    if "distillmos.sqa" in sys.modules or sys.modules.get("torchaudio") is not None:
        import distillmos.sqa as sqa

        return sqa
    absent = object()
    previous = sys.modules.get("torchaudio", absent)
    stub = _NoTorchaudio("torchaudio")
    sys.modules["torchaudio"] = stub
    try:
        import distillmos.sqa as sqa
    finally:
        if sys.modules.get("torchaudio") is stub:
            if previous is absent:
                del sys.modules["torchaudio"]
            else:
                sys.modules["torchaudio"] = previous  # type: ignore[assignment]
    return sqa


def _mono_16k(audio: Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """``[T]``, ``[1, T]`` or ``[1, 1, T]`` at ``sample_rate`` -> float32 ``[T']`` at 16 kHz."""
    # ascontiguousarray: torch refuses NumPy views with negative strides (x[::-1]).
    t = torch.as_tensor(audio if isinstance(audio, Tensor) else np.ascontiguousarray(audio))
    t = t.detach().to("cpu", torch.float32)
    if t.dim() == 0 or t.dim() > 3 or any(n != 1 for n in t.shape[:-1]):
        raise ValueError(
            f"perceptual scores take one mono clip [T] or [1, T], got {tuple(t.shape)}"
        )
    t = t.reshape(-1)
    if t.numel() == 0:
        raise ValueError("perceptual scores need a non-empty clip, got 0 samples")
    return resample(t, sample_rate, SAMPLE_RATE).numpy()


class PerceptualScorer:
    """DistillMOS and DNSMOS P.808, each model loaded on its first use and kept for the next files.

    Args:
        device: where DistillMOS runs (``"cpu"``, ``"cuda"``, ...); DNSMOS runs on the CPU.

    Raises:
        ModuleNotFoundError: the ``eval`` extra is not installed (checked here, before any work).
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        _require()
        self.device = torch.device(device)
        self._distillmos: torch.nn.Module | None = None

    def distillmos(self, audio: Tensor | np.ndarray, sample_rate: int) -> float:
        """DistillMOS of one mono clip ``[T]`` (or ``[1, T]``) at ``sample_rate`` Hz: MOS in 1..5.

        The model scores 7.68 s windows of the peak-normalised 16 kHz clip (a shorter clip is
        zero-padded to one window, a longer one covered by windows at most 1 s apart) and
        averages them: about 0.6 s per window on one CPU thread.
        """
        x = torch.from_numpy(_mono_16k(audio, sample_rate)).to(self.device)
        if self._distillmos is None:
            sqa = _import_distillmos()
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the weights' path
                model = sqa.ConvTransformerSQAModel(load_weights=True)
            self._distillmos = model.eval().to(self.device)
        with torch.inference_mode():
            return float(self._distillmos(x[None])[0])

    def dnsmos_p808(self, audio: Tensor | np.ndarray, sample_rate: int) -> float:
        """DNSMOS P.808 of one mono clip ``[T]`` (or ``[1, T]``) at ``sample_rate`` Hz: MOS, ~1..5.

        The ``p808_mos`` of ``speechmos.dnsmos.run`` (9.01 s windows every second, a shorter clip
        tiled to one window, scores averaged). We call the package rather than re-implement its
        feature loop, so the score is its authors' definition; the price is that it also runs
        the P.835 SIG/BAK/OVRL model, whose scores we do not report.
        """
        y = _mono_16k(audio, sample_rate)
        # speechmos refuses samples beyond full scale, which resampling a clip that touches it
        # (or a vocoder's overshoot) produces. P.808's features are in dB relative to each
        # window's maximum, so scaling the clip down to full scale leaves its score unchanged.
        peak = float(np.abs(y).max()) if y.size else 0.0
        if peak > 1.0:
            y = y / peak
        from speechmos import dnsmos

        return float(dnsmos.run(y, sr=SAMPLE_RATE)["p808_mos"])

    def score(self, audio: Tensor | np.ndarray, sample_rate: int) -> dict[str, float]:
        """``{"distillmos": ..., "dnsmos_p808": ...}`` (``PERCEPTUAL_KEYS``) of one mono clip."""
        return {
            "distillmos": self.distillmos(audio, sample_rate),
            "dnsmos_p808": self.dnsmos_p808(audio, sample_rate),
        }


def distillmos_score(audio: Tensor | np.ndarray, sample_rate: int) -> float:
    """DistillMOS of one mono clip ``[T]`` at ``sample_rate`` Hz (see :class:`PerceptualScorer`).

    Loads the model on each call (~0.2 s); reuse a :class:`PerceptualScorer` for many files.
    """
    return PerceptualScorer().distillmos(audio, sample_rate)


def dnsmos_p808_score(audio: Tensor | np.ndarray, sample_rate: int) -> float:
    """DNSMOS P.808 of one mono clip ``[T]`` at ``sample_rate`` Hz (see :class:`PerceptualScorer`).

    Loads the model on each call; reuse a :class:`PerceptualScorer` for many files.
    """
    return PerceptualScorer().dnsmos_p808(audio, sample_rate)
