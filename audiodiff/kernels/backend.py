"""Which backend runs DiffWave's residual stack: the names, and the rule ``"auto"`` follows.

- ``"eager"``: layer by layer with torch ops (:func:`audiodiff.model_compute.eager_stack`); the
  reference, and the path for GPUs, autocast, ``torch.compile`` and FLOP counting.
- ``"cpu-fast"``: the in-place blocked inference kernel (:mod:`audiodiff.kernels.fast`); CPU,
  gradients off.
- ``"cpu-fused"``: the im2col training kernel with its own backward
  (:mod:`audiodiff.kernels.fused`); CPU, float32/float64, through
  :meth:`audiodiff.model.DiffWave.forward` only (it projects the mel inside its GEMMs, so it starts
  from the raw conditioning, not from ``prepare``'s).
- ``"auto"``: :func:`resolve_backend` picks one of the three per call.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
from torch import Tensor

Backend = Literal["auto", "eager", "cpu-fast", "cpu-fused"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)


def resolve_backend(
    backend: str, x: Tensor, *, fused_training: bool
) -> Literal["eager", "cpu-fast", "cpu-fused"]:
    """The backend a call runs: ``backend`` itself unless it is ``"auto"``.

    ``"auto"`` picks, for an input ``x``:

    - ``"eager"`` when ``x`` is not on a CPU or a graph is being compiled;
    - ``"cpu-fast"`` when gradients are off (``torch.no_grad``/``inference_mode``);
    - ``"cpu-fused"`` when gradients are on, ``fused_training`` is True (the model allows the
      training kernel; :meth:`audiodiff.model.DiffWave.denoise_step` passes False), ``x`` is
      float32/float64 and CPU autocast is off;
    - ``"eager"`` otherwise.

    Raises:
        ValueError: an unknown backend name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend != "auto":
        return backend  # type: ignore[return-value]
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return "eager"
    if not torch.is_grad_enabled():
        return "cpu-fast"
    if (
        fused_training
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
    ):
        return "cpu-fused"
    return "eager"
