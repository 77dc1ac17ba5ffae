# A v-target estimate-start model as the init of a residual-target one: at the sampling sigma s,
# x0_hat = c_skip x - c_out F_v, and the residual form x + F_r reproduces it (up to the tiny
# (c_skip - 1) x term) with F_r = -c_out F_v: the output projection scaled by -c_out(s).
import sys, math
from audiodiff.pretrained import load_model_source
from audiodiff.checkpoint import export_safetensors
from audiodiff.config_io import to_dict, apply_overrides
from audiodiff.config_rules import validate
state, cfg, info = load_model_source(sys.argv[1])
s = float(sys.argv[3])
c_out = s / math.sqrt(1 + s * s)
state = {k: v.float() for k, v in state.items()}
state["output_projection.weight"] *= -c_out
state["output_projection.bias"] *= -c_out
cfg = validate(apply_overrides(cfg, ["diffusion.target=residual", f"sample.start_sigma={s}"]))
export_safetensors({"config": to_dict(cfg), "model": state, "ema": state, "step": info["step"]}, sys.argv[2])
