"""ONNX export of an stft-domain vocoder (the shipped ``small-speech``): the network as graphs,
everything around it as arrays and numbers that a few lines of numpy use (README "Without torch").

Files, beside the waveform export's layout (:mod:`audiodiff.onnx_export`):

* ``NAME.prepare.onnx``: the mel preparation, once per utterance: ``mel [B, n_mels, frames]`` ->
  ``conditioner`` (the network's per-utterance projection of the mel; its shape is the
  network's business, the runtime only passes it on).
* ``NAME.onnx``: one denoiser evaluation ``D(x, sigma, mel) -> x0_hat``: ``(x [B, 2 n_freq,
  frames], sigma [B], c_noise [B], conditioner) -> x0 [B, 2 n_freq, frames]``, in the whitened
  variable of :class:`~audiodiff.domains.StftDomain` (real and imaginary parts of the compressed
  STFT divided by the prior's scale), variance-exploding form, preconditioning inside.
* ``NAME.npz``: ``envelope`` ``[n_freq, n_mels]`` (the mel-shaped prior's envelope is this
  matrix times the linear mel: :func:`audiodiff.stft.mel_to_linear_envelope` is linear for
  ``power`` 1), ``basis`` (the mel filterbank), ``pinv`` (its pseudo-inverse, float32, as torch
  computes it) and ``window`` (the STFT window).
* ``NAME.json``: the schedule as for waveform models (``start_std``, per-step ``sigma``,
  ``c_noise``, ``sigma_down``, ``sigma_up``), ``"domain": "stft"``, the STFT settings
  (``n_fft``, ``hop_length``, compression ``exponent``, envelope ``floor``) and the refinement
  the model samples with (:mod:`audiodiff.consistency`; iterations 0 turn it off).

The numpy around the graphs stays in small separate pieces (whiten, step loop, decode, refine),
so another start than noise (e.g. a DSP estimate) slots in without touching the graphs. Covered:
the ``hifigan`` padding, ``ln`` mels of ``power`` 1 that are not ``normalized``, the mel prior;
other profiles are refused with the reason.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from audiodiff.atomic import atomic_write
from audiodiff.domains import ENVELOPE_FLOOR
from audiodiff.model_blocks import Conditioning
from audiodiff.stft import mel_to_linear_envelope, profile_window
from audiodiff.vocoder import Vocoder

OPSET = 17


class StftStep(nn.Module):
    """One :class:`~audiodiff.diffusion.Denoiser` evaluation with the prepared conditioner."""

    def __init__(self, vocoder: Vocoder) -> None:
        super().__init__()
        self.net = vocoder.net
        self.target = vocoder.config.diffusion.target

    def forward(self, x: Tensor, sigma: Tensor, c_noise: Tensor, conditioner: Tensor) -> Tensor:
        sigma = sigma[:, None, None]
        c_in = torch.rsqrt(1 + sigma * sigma)
        prepared = Conditioning(conditioner=conditioner)
        out = self.net.denoise_step(x * c_in, c_noise, prepared, backend="eager")
        if self.target == "eps":
            return x - sigma * out
        return (c_in * c_in) * x - (sigma * c_in) * out


class StftPrepare(nn.Module):
    """The network's per-utterance work on the mel: ``prepare(mel).conditioner``."""

    def __init__(self, vocoder: Vocoder) -> None:
        super().__init__()
        self.net = vocoder.net

    def forward(self, mel: Tensor) -> Tensor:
        return self.net.prepare(mel, None).conditioner


def check_exportable(vocoder: Vocoder) -> None:
    """Refuse what the numpy pieces do not cover (module docstring), naming it.

    Raises:
        ValueError: another padding, compression, power, a normalized profile, the standard
            prior or a DSP-estimate start.
    """
    m, prior = vocoder.mel_config, vocoder.config.model.prior
    problems = [
        f"padding {m.padding!r}" if m.padding != "hifigan" else "",
        f"compression {m.compression!r}" if m.compression != "ln" else "",
        f"power {m.power}" if m.power != 1.0 else "",
        "a normalized STFT" if m.normalized else "",
        f"prior {prior!r}" if prior != "mel" else "",
        # The README's numpy loop starts from noise; the DSP estimate is not in it yet.
        "a DSP-estimate start (model.start 'estimate')"
        if vocoder.config.model.start == "estimate"
        else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(
            f"ONNX export of stft models covers the hifigan padding, ln mels of power 1, the "
            f"mel prior and a start from noise; this model has {', '.join(problems)}"
        )


def stft_arrays(vocoder: Vocoder) -> dict[str, np.ndarray]:
    """The ``NAME.npz`` arrays (module docstring), float32."""
    m = vocoder.mel_config
    basis = vocoder.domain._mel_basis.float()  # what the domain and the refinement use
    n_mels = basis.shape[0]
    envelope = mel_to_linear_envelope(torch.eye(n_mels)[None], basis, power=m.power)[0]
    window = profile_window(m.win_length, m.n_fft, dtype=torch.float32, device="cpu")
    return {
        "envelope": envelope.numpy(),
        "basis": basis.numpy(),
        "pinv": torch.linalg.pinv(basis).numpy(),
        "window": window.numpy(),
    }


def stft_settings(vocoder: Vocoder, spec: Any) -> dict[str, Any]:
    """The JSON's ``stft`` and ``refinement`` sections."""
    m, r = vocoder.mel_config, spec.refinement
    stft = {"n_fft": m.n_fft, "hop_length": m.hop_length, "win_length": m.win_length,
            "exponent": vocoder.config.model.stft_compression, "floor": ENVELOPE_FLOOR}  # fmt: skip
    refinement = {"mel_match_iters": r.mel_match_iters, "griffin_lim_iters": r.griffin_lim_iters,
                  "magnitude_blend": r.magnitude_blend, "momentum": r.momentum}  # fmt: skip
    return {"domain": "stft", "stft": stft, "refinement": refinement}


def export_stft_graphs(vocoder: Vocoder, step_path: Path, prepare_path: Path) -> None:
    """Trace :class:`StftStep` and :class:`StftPrepare` to ONNX, batch and frames dynamic."""
    net = vocoder.net.eval()
    frames = 16
    # Example batch 2: at batch 1 the network's broadcasting shortcuts would be traced in.
    mel = torch.full((2, vocoder.n_mels, frames), -4.0)
    with torch.no_grad():
        conditioner = StftPrepare(vocoder)(mel)
    x = torch.zeros(2, vocoder.domain.channels, frames)
    sigma = torch.ones(2)
    cond_axes = {0: "batch", conditioner.dim() - 1: "frames"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            StftStep(vocoder), (x, sigma, sigma.clone(), conditioner), str(step_path),
            dynamo=False, input_names=["x", "sigma", "c_noise", "conditioner"],
            output_names=["x0"], opset_version=OPSET,
            dynamic_axes={"x": {0: "batch", 2: "frames"}, "sigma": {0: "batch"},
                          "c_noise": {0: "batch"}, "conditioner": cond_axes,
                          "x0": {0: "batch", 2: "frames"}},
        )  # fmt: skip
        torch.onnx.export(
            StftPrepare(vocoder), (mel,), str(prepare_path), dynamo=False,
            input_names=["mel"], output_names=["conditioner"], opset_version=OPSET,
            dynamic_axes={"mel": {0: "batch", 2: "frames"}, "conditioner": cond_axes},
        )  # fmt: skip
    del net


def write_arrays(vocoder: Vocoder, path: Path) -> None:
    def write(f: Any) -> None:
        np.savez(f, **stft_arrays(vocoder))

    atomic_write(path, write)


def write_json(schedule: dict[str, Any], path: Path) -> None:
    text = json.dumps(schedule, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
