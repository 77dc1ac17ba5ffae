"""import-diffwave: a state dict laid out like lmnt-com/diffwave's, saved the way its learner saves
it, must give our network the output of an independent transcription of lmnt's forward pass; the
loader refuses pickles that reference anything but tensors, containers and params.AttrDict."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audiodiff.checkpoint import load_export
from audiodiff.config import mel_profile
from audiodiff.diffwave_import import import_diffwave
from audiodiff.diffwave_reader import read_diffwave_checkpoint
from audiodiff.model import DiffWave
from audiodiff.pretrained import load_model_source
from audiodiff.vocoder import Vocoder

CHANNELS, LAYERS, CYCLE, N_MELS = 8, 4, 2, 80
BETAS = np.linspace(1e-4, 0.05, 50).tolist()


class AttrDict(dict):
    """lmnt's params class: a dict whose attributes are its items."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self


def _params(**changes):
    values = dict(
        batch_size=16,
        learning_rate=2e-4,
        max_grad_norm=None,
        sample_rate=22050,
        n_mels=N_MELS,
        n_fft=1024,
        hop_samples=256,
        crop_mel_frames=62,
        residual_layers=LAYERS,
        residual_channels=CHANNELS,
        dilation_cycle_length=CYCLE,
        unconditional=False,
        noise_schedule=BETAS,
        inference_noise_schedule=[0.0001, 0.001, 0.01, 0.05, 0.2, 0.5],
        audio_len=22050 * 5,
    )
    values.update(changes)
    return values


def lmnt_state_dict(unconditional=False, seed=0):
    """Random weights under lmnt's names and shapes (model.py of lmnt-com/diffwave)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "input_projection.weight": (CHANNELS, 1, 1),
        "input_projection.bias": (CHANNELS,),
        "diffusion_embedding.projection1.weight": (512, 128),
        "diffusion_embedding.projection1.bias": (512,),
        "diffusion_embedding.projection2.weight": (512, 512),
        "diffusion_embedding.projection2.bias": (512,),
        "skip_projection.weight": (CHANNELS, CHANNELS, 1),
        "skip_projection.bias": (CHANNELS,),
        "output_projection.weight": (1, CHANNELS, 1),
        "output_projection.bias": (1,),
    }
    if not unconditional:
        for i in (1, 2):
            shapes[f"spectrogram_upsampler.conv{i}.weight"] = (1, 1, 3, 32)
            shapes[f"spectrogram_upsampler.conv{i}.bias"] = (1,)
    for i in range(LAYERS):
        p = f"residual_layers.{i}."
        shapes[p + "dilated_conv.weight"] = (2 * CHANNELS, CHANNELS, 3)
        shapes[p + "dilated_conv.bias"] = (2 * CHANNELS,)
        shapes[p + "diffusion_projection.weight"] = (CHANNELS, 512)
        shapes[p + "diffusion_projection.bias"] = (CHANNELS,)
        if not unconditional:
            shapes[p + "conditioner_projection.weight"] = (2 * CHANNELS, N_MELS, 1)
            shapes[p + "conditioner_projection.bias"] = (2 * CHANNELS,)
        shapes[p + "output_projection.weight"] = (2 * CHANNELS, CHANNELS, 1)
        shapes[p + "output_projection.bias"] = (2 * CHANNELS,)
    out = {}
    for name, shape in shapes.items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 64
        out[name] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    return out


def lmnt_forward(p, audio, step, mel=None):
    """lmnt's DiffWave.forward written from its math: audio [B, T], step [B] -> [B, 1, T]."""
    x = F.relu(
        F.conv1d(audio.unsqueeze(1), p["input_projection.weight"], p["input_projection.bias"])
    )
    table = torch.arange(50).unsqueeze(1) * 10.0 ** (torch.arange(64).unsqueeze(0) * 4.0 / 63.0)
    table = torch.cat([torch.sin(table), torch.cos(table)], dim=1)
    if step.is_floating_point():  # lerp between neighbouring rows
        low, high = torch.floor(step).long(), torch.ceil(step).long()
        emb = table[low] + (table[high] - table[low]) * (step - low).unsqueeze(1)
    else:
        emb = table[step]
    e = "diffusion_embedding."
    emb = F.silu(F.linear(emb, p[e + "projection1.weight"], p[e + "projection1.bias"]))
    emb = F.silu(F.linear(emb, p[e + "projection2.weight"], p[e + "projection2.bias"]))
    if mel is not None:
        m = mel.unsqueeze(1)
        for i in (1, 2):
            w, b = (
                p[f"spectrogram_upsampler.conv{i}.weight"],
                p[f"spectrogram_upsampler.conv{i}.bias"],
            )
            m = F.leaky_relu(F.conv_transpose2d(m, w, b, stride=(1, 16), padding=(1, 8)), 0.4)
        mel = m.squeeze(1)
    skips = []
    for i in range(LAYERS):
        r = f"residual_layers.{i}."
        d = 2 ** (i % CYCLE)
        proj = F.linear(
            emb, p[r + "diffusion_projection.weight"], p[r + "diffusion_projection.bias"]
        )
        y = F.conv1d(
            x + proj.unsqueeze(-1), p[r + "dilated_conv.weight"], p[r + "dilated_conv.bias"],
            padding=d, dilation=d,
        )  # fmt: skip
        if mel is not None:
            y = y + F.conv1d(
                mel, p[r + "conditioner_projection.weight"], p[r + "conditioner_projection.bias"]
            )
        gate, filt = y.chunk(2, dim=1)
        y = torch.sigmoid(gate) * torch.tanh(filt)
        y = F.conv1d(y, p[r + "output_projection.weight"], p[r + "output_projection.bias"])
        residual, skip = y.chunk(2, dim=1)
        x = (x + residual) / math.sqrt(2.0)
        skips.append(skip)
    x = torch.stack(skips).sum(0) / math.sqrt(LAYERS)
    x = F.relu(F.conv1d(x, p["skip_projection.weight"], p["skip_projection.bias"]))
    return F.conv1d(x, p["output_projection.weight"], p["output_projection.bias"])


@pytest.fixture
def fake_lmnt_module(monkeypatch):
    """Make AttrDict pickle as ``diffwave.params.AttrDict``, like lmnt's own class."""

    def install(module_name):
        module = types.ModuleType(module_name)
        cls = type("AttrDict", (AttrDict,), {"__module__": module_name})
        module.AttrDict = cls
        if "." in module_name:
            monkeypatch.setitem(sys.modules, module_name.split(".")[0], types.ModuleType("pkg"))
        monkeypatch.setitem(sys.modules, module_name, module)
        return cls

    return install


def _save_like_lmnt(path, weights, params, *, step=1234, legacy=False):
    """The dict lmnt's learner saves: step, model, optimizer, params, scaler."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=2e-4)
    state = {
        "step": step,
        "model": weights,
        "optimizer": opt.state_dict(),
        "params": params,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
    }
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def _inputs(frames=3, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(batch, frames * 256, generator=gen) * 0.5
    mel = torch.rand(batch, N_MELS, frames, generator=gen)
    return audio, mel


@pytest.mark.parametrize("module_name", ["diffwave.params", "params"])
@pytest.mark.parametrize("legacy", [False, True])
def test_attrdict_params_load_safely(tmp_path, fake_lmnt_module, module_name, legacy):
    cls = fake_lmnt_module(module_name)
    weights = lmnt_state_dict()
    src = _save_like_lmnt(tmp_path / "weights.pt", weights, cls(_params()), legacy=legacy)
    loaded, params, step = read_diffwave_checkpoint(src)
    assert type(params) is dict and params == _params() and step == 1234
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())


def test_imported_network_matches_lmnt_forward(tmp_path, fake_lmnt_module):
    cls = fake_lmnt_module("diffwave.params")
    weights = lmnt_state_dict()
    src = _save_like_lmnt(tmp_path / "weights.pt", weights, cls(_params()))
    out = import_diffwave(src, tmp_path / "dw.safetensors")
    state, cfg, info = load_model_source(out)
    assert info["step"] == 1234 and cfg.mel == mel_profile("diffwave")
    assert (cfg.diffusion.n_steps, cfg.diffusion.beta_start, cfg.diffusion.beta_end) == (
        50,
        1e-4,
        0.05,
    )
    assert cfg.sample.sigmas == []  # lmnt's inference betas are the diffwave-fast preset
    net = DiffWave.from_config(cfg)
    net.load_state_dict(state)
    audio, mel = _inputs()
    for step in (torch.tensor([7, 31]), torch.tensor([0.0, 12.37]), torch.tensor([48.5, 49.0])):
        with torch.no_grad():
            expected = lmnt_forward(weights, audio, step, mel)
            prepared = net.prepare(mel)
            eager = net.denoise_step(audio.unsqueeze(1), step, prepared, backend="eager")
            fast = net.denoise_step(audio.unsqueeze(1), step, prepared, backend="cpu-fast")
        assert float((eager - expected).abs().max()) <= 1e-5
        assert float((fast - expected).abs().max()) <= 1e-5
        assert float(expected.abs().max()) > 1e-2  # the comparison is not between zeros


def test_plain_dict_params_module_prefix_and_vocoder(tmp_path):
    weights = lmnt_state_dict(seed=3)
    ddp = {f"module.{k}": v for k, v in weights.items()}
    src = _save_like_lmnt(tmp_path / "w.pt", ddp, _params())  # what lmnt's learner writes
    loaded, params, step = read_diffwave_checkpoint(src)
    assert set(loaded) == set(weights) and params["hop_samples"] == 256 and step == 1234
    out = import_diffwave(src, tmp_path / "dw.safetensors")
    tensors, _, metadata = load_export(out)
    assert metadata["source"] == "lmnt-com/diffwave"
    assert all(torch.equal(tensors[k], v) for k, v in weights.items())
    voc = Vocoder.from_pretrained(out)
    _, mel = _inputs(frames=4, batch=1)
    wav = voc(mel, seed=0)  # the default diffwave-fast sampler on a 0..1 diffwave mel
    assert wav.shape == (1, 1, 4 * 256) and torch.isfinite(wav).all()


def test_unconditional_model(tmp_path):
    weights = lmnt_state_dict(unconditional=True, seed=5)
    src = _save_like_lmnt(tmp_path / "u.pt", weights, _params(unconditional=True))
    state, cfg, _ = load_model_source(import_diffwave(src, tmp_path / "u.safetensors"))
    assert cfg.model.conditioning == "none"
    net = DiffWave.from_config(cfg)
    net.load_state_dict(state)
    audio, _ = _inputs()
    step = torch.tensor([3.25, 40.0])
    with torch.no_grad():
        expected = lmnt_forward(weights, audio, step)
        ours = net(audio.unsqueeze(1), step)
    assert float((ours - expected).abs().max()) <= 1e-5 and float(expected.abs().max()) > 1e-2


def test_custom_inference_schedule_is_stored(tmp_path):
    betas = [1e-4, 1e-3, 1e-2, 0.05, 0.3]
    src = _save_like_lmnt(
        tmp_path / "w.pt", lmnt_state_dict(), _params(inference_noise_schedule=betas)
    )
    _, cfg, _ = load_model_source(import_diffwave(src, tmp_path / "o.safetensors"))
    gamma = np.cumprod(1 - np.array(betas))
    expected = np.sqrt((1 - gamma) / gamma)[::-1]
    assert cfg.sample.steps == 5 and np.allclose(cfg.sample.sigmas, expected, rtol=1e-12)


def test_refusals(tmp_path):
    weights = lmnt_state_dict()
    src = _save_like_lmnt(tmp_path / "w.pt", weights, _params())
    out = tmp_path / "o.safetensors"
    import_diffwave(src, out)
    with pytest.raises(FileExistsError, match="overwrite"):
        import_diffwave(src, out)
    import_diffwave(src, out, overwrite=True)
    quadratic = (np.linspace(1e-2, 0.2236, 50) ** 2).tolist()
    bad = _save_like_lmnt(tmp_path / "q.pt", weights, _params(noise_schedule=quadratic))
    with pytest.raises(ValueError, match=r"not linear: beta\[\d+\] is .* np\.linspace"):
        import_diffwave(bad, tmp_path / "q.safetensors")
    wrong = _save_like_lmnt(tmp_path / "c.pt", weights, _params(residual_channels=64))
    with pytest.raises(ValueError, match="residual_channels is 64 but the weights have 8"):
        import_diffwave(wrong, tmp_path / "c.safetensors")
    hop = _save_like_lmnt(tmp_path / "h.pt", weights, _params(hop_samples=300))
    with pytest.raises(ValueError, match="multiply to 256 but params.hop_samples is 300"):
        import_diffwave(hop, tmp_path / "h.safetensors")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a loadable torch checkpoint"):
        import_diffwave(junk, tmp_path / "j.safetensors")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        import_diffwave(src, tmp_path / "o.pt")


def _mark(path):
    """What a malicious pickle would run; a test fails if the file ever appears."""
    with open(path, "w") as f:
        f.write("ran")


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_mark, (self.path,))


@pytest.mark.parametrize("where", ["top", "inside-attrdict"])
def test_malicious_pickle_is_refused_without_running(tmp_path, fake_lmnt_module, where):
    cls = fake_lmnt_module("diffwave.params")
    marker = tmp_path / "pwned"
    params = cls(_params())
    if where == "inside-attrdict":  # forces the restricted-unpickler path
        params["evil"] = Evil(str(marker))
    state = {"model": lmnt_state_dict(), "params": params}
    if where == "top":
        state["evil"] = Evil(str(marker))
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"references .*_mark.*refused without running it") as err:
        import_diffwave(tmp_path / "evil.pt", tmp_path / "e.safetensors")
    assert "\n" not in str(err.value)
    assert not marker.exists() and not (tmp_path / "e.safetensors").exists()
