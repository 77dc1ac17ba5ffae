"""Import checkpoints of the reference implementation lmnt-com/diffwave as audiodiff exports.

DiffWave: Kong et al. 2021, "DiffWave: A Versatile Diffusion Model for Audio Synthesis".

Reading the checkpoint (safely: no code in it runs) is :mod:`audiodiff.diffwave_reader`.

Key mapping (near identity; our ``model.py`` uses lmnt's parameter names). Every change:

* a ``module.`` prefix (a DDP-wrapped model saved without unwrapping) is stripped;
* ``diffusion_embedding.embedding`` (the sinusoidal table, a buffer that some writers persisted) is
  dropped after checking it equals the table we rebuild; ours is non-persistent, as lmnt's now is;
* every other key keeps its name and shape: ``input_projection``, ``diffusion_embedding.projection1
  /2``, ``spectrogram_upsampler.conv1/2`` (our strides [16, 16] are lmnt's upsampler exactly),
  ``residual_layers.N.{dilated_conv, diffusion_projection, conditioner_projection,
  output_projection}``, ``skip_projection``, ``output_projection``.

Config mapping: the ``diffwave`` mel profile (lmnt's ``preprocess.py``: HTK mels from 20 Hz to
Nyquist, ``win_length = 4 * hop``, normalised STFT, 0..1 dB scale) with ``sample_rate``,
``hop_samples``, ``n_mels`` and ``n_fft`` taken from ``params``; the training table
``params.noise_schedule`` as a linear schedule (refused unless it equals
``np.linspace(beta_start, beta_end, T)``); eps target, L1 loss; ``params.inference_noise_schedule``
stored as the model's sampling schedule when it differs from the DiffWave preset that the
``diffwave-fast`` sampler picks for this table anyway.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiodiff.checkpoint import export_safetensors
from audiodiff.config import (
    DiffusionConfig,
    ExperimentConfig,
    ModelConfig,
    SampleConfig,
    mel_profile,
)
from audiodiff.config_io import to_dict
from audiodiff.config_rules import validate
from audiodiff.diffwave_reader import read_diffwave_checkpoint
from audiodiff.encoding import one_line
from audiodiff.files import plan_output
from audiodiff.model import DiffWave
from audiodiff.model_blocks import DiffusionEmbedding
from audiodiff.schedule import NoiseSchedule, sigmas_from_betas

# Relative tolerance when checking that the stored betas are a linspace: a list written by
# np.linspace(...).tolist() matches to the last bit; a hand-typed or rounded one does not.
_LINEAR_BETAS_RTOL = 1e-9


def _linear_diffusion(betas: Any) -> DiffusionConfig:
    b = np.asarray(betas, dtype=np.float64)
    if b.ndim != 1 or b.size < 2:
        raise ValueError(f"params.noise_schedule must list at least 2 betas, got {betas!r}")
    expected = np.linspace(b[0], b[-1], b.size)
    if not np.allclose(b, expected, rtol=_LINEAR_BETAS_RTOL, atol=0.0):
        k = int(np.argmax(np.abs(b - expected)))
        raise ValueError(
            f"params.noise_schedule is not linear: beta[{k}] is {b[k]!r} but "
            f"np.linspace({b[0]!r}, {b[-1]!r}, {b.size}) gives {expected[k]!r}; audiodiff can "
            "import linear DiffWave training schedules only"
        )
    return DiffusionConfig(
        n_steps=int(b.size),
        schedule="linear",
        beta_start=float(b[0]),
        beta_end=float(b[-1]),
        target="eps",
        loss="l1",
    )


def _sample_config(params: dict[str, Any], diffusion: DiffusionConfig) -> SampleConfig:
    """``diffwave-fast`` with params' inference betas when they differ from the preset's."""
    inference = params.get("inference_noise_schedule")
    if not inference:
        return SampleConfig(sampler="diffwave-fast", steps=6)
    ours = sigmas_from_betas(inference)
    table = NoiseSchedule.from_config(diffusion)
    preset = table.diffwave_fast_sigmas(6)
    if len(ours) == len(preset) and torch.allclose(ours, preset, rtol=1e-12, atol=0.0):
        return SampleConfig(sampler="diffwave-fast", steps=6)
    return SampleConfig(
        sampler="diffwave-fast", steps=len(ours) - 1, sigmas=[float(s) for s in ours[:-1]]
    )


def _require(params: dict[str, Any], key: str, kind: type) -> Any:
    value = params.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"params.{key} must be a {kind.__name__}, got {value!r}")
    return value


def _check_agrees(params: dict[str, Any], key: str, from_weights: Any) -> None:
    if key in params and params[key] != from_weights:
        raise ValueError(
            f"params.{key} is {params[key]!r} but the weights have {from_weights!r}; the "
            "checkpoint is inconsistent"
        )


def diffwave_config(weights: dict[str, torch.Tensor], params: dict[str, Any]) -> ExperimentConfig:
    """The audiodiff config of a lmnt-com/diffwave model (module docstring: config mapping).

    Shapes come from the weights and are cross-checked with ``params``; the dilation cycle, audio
    and mel settings and the schedules come from ``params``.

    Raises:
        ValueError: missing or inconsistent hyper-parameters, a non-linear training schedule, or an
            upsampler whose strides do not multiply to ``params.hop_samples``.
    """
    if "input_projection.weight" not in weights:
        raise ValueError("the weights have no input_projection.weight: not a DiffWave state dict")
    channels = int(weights["input_projection.weight"].shape[0])
    layers = 0
    while f"residual_layers.{layers}.dilated_conv.weight" in weights:
        layers += 1
    if layers == 0:
        raise ValueError("the weights have no residual_layers: not a DiffWave state dict")
    kernel_size = int(weights["residual_layers.0.dilated_conv.weight"].shape[-1])
    mlp_dim, embedding_dim = weights["diffusion_embedding.projection1.weight"].shape
    unconditional = "spectrogram_upsampler.conv1.weight" not in weights
    _check_agrees(params, "residual_channels", channels)
    _check_agrees(params, "residual_layers", layers)
    _check_agrees(params, "unconditional", unconditional)
    sample_rate = _require(params, "sample_rate", int)
    hop = _require(params, "hop_samples", int)
    cycle = _require(params, "dilation_cycle_length", int)
    n_fft = params.get("n_fft", 1024)
    factors: list[int] = []
    if unconditional:
        n_mels = int(params.get("n_mels", 80))
    else:
        n_mels = int(weights["residual_layers.0.conditioner_projection.weight"].shape[1])
        _check_agrees(params, "n_mels", n_mels)
        i = 1
        while f"spectrogram_upsampler.conv{i}.weight" in weights:
            # lmnt's ConvTranspose2d stages have kernel width 2 x stride.
            factors.append(int(weights[f"spectrogram_upsampler.conv{i}.weight"].shape[-1]) // 2)
            i += 1
        if math.prod(factors) != hop:
            raise ValueError(
                f"the upsampler's strides {factors} multiply to {math.prod(factors)} but "
                f"params.hop_samples is {hop}; lmnt's network only works with hop 256"
            )
    mel = dataclasses.replace(
        mel_profile("diffwave"),
        sample_rate=sample_rate,
        hop_length=hop,
        n_mels=n_mels,
        n_fft=int(n_fft),
        win_length=4 * hop,
        f_max=sample_rate / 2.0,
    )
    if mel != mel_profile("diffwave"):
        mel = dataclasses.replace(mel, name=f"diffwave-{sample_rate}hz-hop{hop}-{n_mels}mels")
    diffusion = _linear_diffusion(_require(params, "noise_schedule", list))
    model = ModelConfig(
        domain="waveform",
        conditioning="none" if unconditional else "mel",
        residual_channels=channels,
        residual_layers=layers,
        dilation_cycle=cycle,
        kernel_size=kernel_size,
        step_embedding_dim=int(embedding_dim),
        step_mlp_dim=int(mlp_dim),
        upsample_factors=factors,
    )
    cfg = ExperimentConfig(
        name="diffwave-import",
        mel=mel,
        model=model,
        diffusion=diffusion,
        sample=_sample_config(params, diffusion),
    )
    return validate(cfg)


def _checked_table(weights: dict[str, torch.Tensor], cfg: ExperimentConfig) -> None:
    stored = weights.pop("diffusion_embedding.embedding", None)
    if stored is None:
        return
    ours = DiffusionEmbedding._build_table(cfg.diffusion.n_steps, cfg.model.step_embedding_dim)
    if stored.shape != ours.shape or not torch.allclose(stored.float(), ours, atol=1e-6):
        raise ValueError(
            f"the stored diffusion_embedding.embedding {tuple(stored.shape)} differs from the "
            f"sinusoidal table of {cfg.diffusion.n_steps} steps {tuple(ours.shape)}"
        )


def import_diffwave(
    weights_path: str | Path, out_path: str | Path, *, overwrite: bool = False
) -> Path:
    """Convert a lmnt-com/diffwave checkpoint into an audiodiff ``.safetensors`` export.

    The network is rebuilt from the derived config and loaded strictly, so a key the mapping does
    not know is an error, not a silently ignored weight.

    Args:
        weights_path: the reference checkpoint (``weights.pt``).
        out_path: destination ``.safetensors`` file.
        overwrite: replace an existing ``out_path``.

    Returns:
        ``out_path``.

    Raises:
        FileNotFoundError: no ``weights_path``.
        FileExistsError: ``out_path`` exists and ``overwrite`` is false.
        ValueError: ``out_path`` is ``weights_path``, unsafe or unreadable file, unsupported
            hyper-parameters, or weights that do not fit the network they describe.
    """
    # The suffix, never the weights file itself (even with overwrite), no existing file: first.
    out_path = plan_output(
        out_path, overwrite=overwrite, inputs=[weights_path], suffix=".safetensors"
    )
    weights, params, step = read_diffwave_checkpoint(weights_path)
    cfg = diffwave_config(weights, params)
    _checked_table(weights, cfg)
    net = DiffWave.from_config(cfg)
    try:
        result = net.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # a shape mismatch: named in full
        detail = one_line(err)
        raise ValueError(f"{weights_path}: the weights do not fit the network: {detail}") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: the weights do not fit the network params describe (missing "
            f"{missing[:3] or 'none'}, unexpected {unexpected[:3] or 'none'})"
        )
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    ckpt = {"config": to_dict(cfg), "model": state, "step": step}
    return export_safetensors(
        ckpt,
        out_path,
        overwrite=overwrite,
        extra_metadata={"source": "lmnt-com/diffwave", "source_file": Path(weights_path).name},
    )
