"""Convert a v-target estimate-start model into the init of a residual-target one.

At the sampling sigma ``s`` the v model returns ``x0_hat = c_skip x - c_out F_v``; the residual
form ``x + F_r`` reproduces it (up to the tiny ``(c_skip - 1) x`` term) with ``F_r = -c_out
F_v``, so the output projection is scaled by ``-c_out(s)`` and the config gets
``diffusion.target: residual`` and ``sample.start_sigma: s``.

    python benchmarks/records/issue20/residual_head.py SRC DST SIGMA
"""

from __future__ import annotations

import math
import sys

from audiodiff.checkpoint import export_safetensors
from audiodiff.config_io import apply_overrides, to_dict
from audiodiff.config_rules import validate
from audiodiff.pretrained import load_model_source


def main() -> None:
    source, target, sigma = sys.argv[1], sys.argv[2], float(sys.argv[3])
    state, cfg, info = load_model_source(source)
    c_out = sigma / math.sqrt(1 + sigma * sigma)
    state = {k: v.float() for k, v in state.items()}
    state["output_projection.weight"] *= -c_out
    state["output_projection.bias"] *= -c_out
    cfg = validate(
        apply_overrides(cfg, ["diffusion.target=residual", f"sample.start_sigma={sigma}"])
    )
    checkpoint = {"config": to_dict(cfg), "model": state, "ema": state, "step": info["step"]}
    export_safetensors(checkpoint, target)


if __name__ == "__main__":
    main()
