"""ONNX export of a waveform vocoder, for TTS servers that run onnxruntime instead of torch.

Diffusion is a loop around one network, so the export is the network and the loop's numbers, not
the loop (the layout ONNX exports of DiffWave-family and Stable Diffusion models share):

* ``NAME.prepare.onnx``: the step-invariant part, once per utterance: ``mel [B, n_mels, frames]``
  -> ``mel_up [B, n_mels, frames * hop_length]`` (the transposed-convolution upsampler).
* ``NAME.onnx``: one denoiser evaluation, ``(x [B, 1, T], sigma [B], c_noise [B], mel_up
  [B, n_mels, T]) -> x0 [B, 1, T]``, in the samplers' variance-exploding form ``x = x0 + sigma
  eps`` (the :class:`~audiodiff.diffusion.Denoiser`'s preconditioning is inside the graph).
* ``NAME.json``: the mel profile the model expects, the start noise's standard deviation and,
  per step, ``sigma``, ``c_noise`` (the network's fractional step index) and the DDIM update's
  ``sigma_down`` / ``sigma_up`` (:func:`audiodiff.samplers.ddim_step_scales`). With them a runtime
  needs no schedule code: ``x = start_std * z``; per step ``x0 = step(x, sigma, c_noise,
  mel_up)``, ``x = x0 + sigma_down / sigma * (x - x0) + sigma_up * z``. That covers the
  ``ddim``, ``ddpm`` and ``diffwave-fast`` samplers (all DDIM steps, Song et al. 2021);
  DPM-Solver++ 2M is a multistep method and is refused, but for one step (the shipped
  ``small-speech``'s), which is the same step. The README shows the loop.

Frame-rate (``stft``) models, the shipped ``small-speech`` among them, export through
:mod:`audiodiff.onnx_stft` (a prepare graph for the network's mel projection, the step graph, and
``NAME.npz`` with the arrays the numpy around them uses: whitening, inverse STFT, refinement).
Label-conditional generators need a label input, which no runtime asked for yet. The graphs
use torch's TorchScript-based exporter (``dynamo=False``): in torch 2.13 the
``torch.export`` one needs onnxscript as well and took ~30x longer on the upsampler alone.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from audiodiff.atomic import atomic_write
from audiodiff.diffusion import prior_std
from audiodiff.model_blocks import Conditioning
from audiodiff.samplers import SAMPLERS, ddim_step_scales, sample_ddim, sample_ddpm
from audiodiff.synthesis import make_sampling_spec
from audiodiff.vocoder import Vocoder

ONNX_FORMAT = "audiodiff-onnx-vocoder"
ONNX_FORMAT_VERSION = 1
OPSET = 17
ONNX_EXTRA_HINT = "pip install 'audiodiff[onnx]'"


def onnx_arrays_path(out_path: str | Path) -> Path:
    """``NAME.npz`` beside ``NAME.onnx``: an stft export's arrays (:mod:`audiodiff.onnx_stft`)."""
    return onnx_paths(out_path)[0].with_suffix(".npz")


def onnx_paths(out_path: str | Path) -> tuple[Path, Path, Path]:
    """``(step .onnx, prepare .onnx, schedule .json)`` written for ``out_path`` (``NAME.onnx``).

    Raises:
        ValueError: ``out_path`` does not end in ``.onnx``.
    """
    out = Path(out_path)
    if out.suffix != ".onnx":
        raise ValueError(f"ONNX export path must end in .onnx, got {out}")
    stem = out.with_suffix("")
    return out, stem.with_name(stem.name + ".prepare.onnx"), stem.with_suffix(".json")


class _DenoiserStep(nn.Module):
    """One :class:`~audiodiff.diffusion.Denoiser` evaluation with the upsampled mel as input."""

    def __init__(self, vocoder: Vocoder) -> None:
        super().__init__()
        self.net = vocoder.net
        self.target = vocoder.config.diffusion.target

    def forward(self, x: Tensor, sigma: Tensor, c_noise: Tensor, mel_up: Tensor) -> Tensor:
        sigma = sigma[:, None, None]
        c_in = torch.rsqrt(1 + sigma * sigma)
        out = self.net.denoise_step(x * c_in, c_noise, Conditioning(mel=mel_up), backend="eager")
        if self.target == "eps":
            return x - sigma * out
        return (c_in * c_in) * x - (sigma * c_in) * out


def onnx_schedule(
    vocoder: Vocoder, *, steps: int | None = None, sampler: str | None = None
) -> dict[str, Any]:
    """The JSON that drives the exported step graph: profile, start noise, per-step numbers.

    Raises:
        ValueError: a sampler outside the DDIM family, or an impossible step count.
    """
    spec = make_sampling_spec(vocoder.config, vocoder.schedule, sampler=sampler, steps=steps)
    ddim_steps = [n for n, entry in SAMPLERS.items() if entry.fn in (sample_ddim, sample_ddpm)]
    # One step of DPM-Solver++(2M) is its first-order step to sigma 0: x0_hat, as DDIM's is.
    if spec.sampler not in ddim_steps and not (spec.sampler == "dpmpp-2m" and spec.steps == 1):
        raise ValueError(
            f"the ONNX schedule covers the DDIM-step samplers ({', '.join(ddim_steps)}); "
            f"{spec.sampler} is multistep: pass --sampler ddim"
        )
    sigmas = [float(s) for s in spec.sigmas]
    c_noise = vocoder.schedule.sigma_to_t(
        torch.tensor(sigmas[:-1], dtype=torch.float64), spec.t_mapping
    )
    rows = []
    for i, (sigma, sigma_next) in enumerate(zip(sigmas, sigmas[1:], strict=False)):
        down, up = ddim_step_scales(sigma, sigma_next, spec.eta)
        rows.append(
            {
                "sigma": sigma,
                "c_noise": float(c_noise[i]),
                "sigma_down": down,
                "sigma_up": up,
            }
        )
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "sampler": spec.sampler,
        "eta": spec.eta,
        "start_std": float(prior_std(sigmas[0])),
        "steps": rows,
        "mel": dataclasses.asdict(vocoder.mel_config),
    }


def export_onnx(
    source: str | Path,
    out_path: str | Path,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path, Path]:
    """Write ``NAME.onnx``, ``NAME.prepare.onnx`` and ``NAME.json`` for a waveform vocoder.

    Args:
        source: checkpoint, run directory, ``.safetensors`` export or shipped model name.
        out_path: ``NAME.onnx``; the other two files go beside it.
        steps, sampler: the schedule written to the JSON (default: the model's own, including a
            searched schedule stored with it).
        overwrite: replace existing files; otherwise any existing one is refused before work.

    Returns:
        The three paths written.

    Raises:
        ValueError: not a mel-conditioned waveform model, a multistep sampler, or a bad path.
        FileExistsError: an output exists and ``overwrite`` is false.
        ModuleNotFoundError: the ``onnx`` package (the ``onnx`` extra) is missing.
    """
    paths = onnx_paths(out_path)
    if not overwrite:
        for path in paths:
            if path.exists():
                raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    try:
        import onnx  # noqa: F401 - torch's exporter serialises through it
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"ONNX export needs the onnx package: {ONNX_EXTRA_HINT}"
        ) from None
    vocoder = Vocoder.from_pretrained(source, device="cpu")
    net = vocoder.net
    if vocoder.domain.name == "stft":
        return _export_stft(vocoder, paths, steps=steps, sampler=sampler, overwrite=overwrite)
    if vocoder.domain.frame_rate or getattr(net, "spectrogram_upsampler", None) is None:
        raise ValueError(
            f"ONNX export covers mel-conditioned waveform vocoders; this model's domain is "
            f"{vocoder.config.model.domain}"
        )
    if vocoder.config.model.prior != "standard":
        # The runtime's loop would return the whitened waveform: the per-sample prior scale
        # (PriorGrad) is not part of the exported graphs.
        raise ValueError(
            f"ONNX export covers vocoders with the standard prior; this model's prior is "
            f"{vocoder.config.model.prior!r} (PriorGrad)"
        )
    schedule = onnx_schedule(vocoder, steps=steps, sampler=sampler)
    net.eval()
    n_mels, hop = vocoder.n_mels, vocoder.hop_length
    # Example batch 2: at batch 1 the network's broadcasting shortcuts would be traced in.
    mel = torch.zeros(2, n_mels, 4)
    x = torch.zeros(2, 1, 4 * hop)
    sigma = torch.ones(2)
    step_inputs = (x, sigma, sigma.clone(), torch.zeros(2, n_mels, 4 * hop))
    step_axes = {
        "x": {0: "batch", 2: "samples"},
        "sigma": {0: "batch"},
        "c_noise": {0: "batch"},
        "mel_up": {0: "batch", 2: "samples"},
        "x0": {0: "batch", 2: "samples"},
    }
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter announces its deprecation on every call (module docstring), and
        # the tracer flags the network's shape checks, which hold for every input shape.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            _DenoiserStep(vocoder),
            step_inputs,
            str(paths[0]),
            dynamo=False,
            input_names=["x", "sigma", "c_noise", "mel_up"],
            output_names=["x0"],
            dynamic_axes=step_axes,
            opset_version=OPSET,
        )
        torch.onnx.export(
            net.spectrogram_upsampler,
            (mel,),
            str(paths[1]),
            dynamo=False,
            input_names=["mel"],
            output_names=["mel_up"],
            dynamic_axes={"mel": {0: "batch", 2: "frames"}, "mel_up": {0: "batch", 2: "samples"}},
            opset_version=OPSET,
        )
    text = json.dumps(schedule, indent=2) + "\n"
    atomic_write(paths[2], lambda f: f.write(text.encode("utf-8")))
    return paths


def _export_stft(
    vocoder: Vocoder,
    paths: tuple[Path, Path, Path],
    *,
    steps: int | None,
    sampler: str | None,
    overwrite: bool,
) -> tuple[Path, Path, Path, Path]:
    """The stft export (:mod:`audiodiff.onnx_stft`): the three files and ``NAME.npz``."""
    from audiodiff.onnx_stft import (
        check_exportable,
        export_stft_graphs,
        stft_settings,
        write_arrays,
        write_json,
    )

    arrays = onnx_arrays_path(paths[0])
    if arrays.exists() and not overwrite:
        raise FileExistsError(f"{arrays} exists; pass --overwrite to replace it")
    check_exportable(vocoder)
    schedule = onnx_schedule(vocoder, steps=steps, sampler=sampler)
    spec = make_sampling_spec(vocoder.config, vocoder.schedule, sampler=sampler, steps=steps)
    schedule.update(stft_settings(vocoder, spec))
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    export_stft_graphs(vocoder, paths[0], paths[1])
    write_arrays(vocoder, arrays)
    write_json(schedule, paths[2])
    return (*paths, arrays)
