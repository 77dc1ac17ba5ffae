"""DiffWave network: shapes, upsampler lengths, init, receptive field, step embedding, the
prepare/step split, the fast per-step path and the base parameter count."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiodiff.config import ExperimentConfig, ModelConfig
from audiodiff.config_io import apply_overrides
from audiodiff.model import DiffWave
from audiodiff.model_blocks import Conditioning, DiffusionEmbedding

HOPS = (200, 240, 256, 300, 441, 512)


def tiny(
    *,
    n_mels: int = 6,
    hop_length: int = 8,
    n_steps: int = 10,
    seed: int = 0,
    randomise_output: bool = True,
    dtype: torch.dtype = torch.float32,
    **model: object,
) -> DiffWave:
    """A few-hundred-parameter network; the zero-initialised output layer is randomised so the
    output depends on everything."""
    shape = dict(residual_channels=8, residual_layers=4, dilation_cycle=3)
    shape.update(step_embedding_dim=16, step_mlp_dim=32)
    shape.update(model)
    gen = torch.Generator().manual_seed(seed)
    net = DiffWave(
        ModelConfig(**shape),
        n_mels=n_mels,
        hop_length=hop_length,
        n_steps=n_steps,
        generator=gen,
    ).to(dtype)
    if randomise_output:
        with torch.no_grad():
            torch.nn.init.normal_(net.output_projection.weight, generator=gen)
            torch.nn.init.normal_(net.output_projection.bias, generator=gen)
    return net


def randn(*shape: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("frames", [1, 7])
def test_upsampler_gives_exactly_frames_times_hop_samples(hop, frames):
    net = tiny(n_mels=3, hop_length=hop, residual_layers=1, residual_channels=2)
    assert math.prod(net.upsample_factors) == hop
    mel = randn(2, 3, frames)
    assert net.spectrogram_upsampler(mel).shape == (2, 3, frames * hop)
    prepared = net.prepare(mel)
    assert prepared.conditioner.shape == (2, 1, 4, frames * hop)
    assert prepared.length == frames * hop


def test_output_shapes_for_every_kind_of_model():
    vocoder = tiny()
    x = randn(2, 1, 5 * 8)
    out = vocoder(x, torch.tensor([0.0, 8.5]), randn(2, 6, 5))
    assert vocoder.in_channels == 1 and out.shape == x.shape

    uncond = tiny(conditioning="none")
    assert uncond.spectrogram_upsampler is None
    assert uncond.residual_layers[0].conditioner_projection is None
    assert uncond(randn(3, 1, 37), torch.tensor([1, 2, 3])).shape == (3, 1, 37)

    labelled = tiny(conditioning="none", n_labels=4)
    assert labelled.null_label == labelled.n_labels == 4
    assert labelled.label_embedding.num_embeddings == 5
    out = labelled(randn(2, 1, 21), torch.tensor([4.0, 0.25]), label=torch.tensor([0, 4]))
    assert out.shape == (2, 1, 21)

    mel_domain = tiny(domain="mel", conditioning="none", n_mels=5)
    assert mel_domain.in_channels == 5 and mel_domain.spectrogram_upsampler is None
    assert mel_domain(randn(2, 5, 13), torch.tensor([0.0, 9.0])).shape == (2, 5, 13)


def test_output_is_zero_at_init():
    net = tiny(randomise_output=False, n_labels=2)
    out = net(randn(2, 1, 24), torch.tensor([3.5, 7.0]), randn(2, 6, 3), torch.tensor([0, 2]))
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_receptive_field_equals_measured_dependence(kernel_size):
    net = tiny(conditioning="none", kernel_size=kernel_size, dtype=torch.float64)
    rf = net.receptive_field()
    assert rf == 1 + (kernel_size - 1) * (1 + 2 + 4 + 1)  # dilations 1, 2, 4, 1
    length, centre = 3 * rf, 3 * rf // 2
    x = randn(1, 1, length, dtype=torch.float64)
    bumped = x.clone()
    bumped[..., centre] += 1.0
    step = torch.tensor([4.0], dtype=torch.float64)
    changed = torch.nonzero((net(bumped, step) - net(x, step)).abs()[0, 0] > 0)
    assert changed.min() == centre - (rf - 1) // 2 and changed.max() == centre + (rf - 1) // 2
    assert int(changed.max() - changed.min()) + 1 == rf


def test_fractional_step_embedding_lerps_between_integer_rows():
    net = tiny(n_steps=50)
    emb = net.diffusion_embedding
    assert not any("embedding.embedding" in k for k in net.state_dict())  # non-persistent
    table = emb.embedding
    assert table.shape == (50, 16)
    # Row 0 is sin(0) | cos(0); row 1 is sin | cos of the frequencies 10 ** (4 d / 63) at
    # DiffWave's 128 dims. The frequencies are rounded to float32 first, as the network's are:
    # at 10 ** 4 rad that rounding alone moves sin by ~3e-4.
    lmnt = DiffusionEmbedding(50).embedding
    freqs = (10.0 ** (torch.arange(64) * 4.0 / 63.0)).double()
    assert torch.equal(lmnt[0], torch.cat([torch.zeros(64), torch.ones(64)]))
    assert torch.allclose(lmnt[1].double(), torch.cat([freqs.sin(), freqs.cos()]), atol=1e-6)

    steps = torch.tensor([0.0, 3.25, 17.5, 48.9, 49.0])
    rows = emb.lookup(steps)
    low, high = table[steps.floor().long()], table[steps.ceil().long()]
    assert torch.all(rows >= torch.minimum(low, high) - 1e-7)
    assert torch.all(rows <= torch.maximum(low, high) + 1e-7)
    frac = (steps - steps.floor()).unsqueeze(-1)
    assert torch.allclose(rows, low + frac * (high - low), atol=1e-7)
    # Integer steps: the float path and the index path agree exactly.
    assert torch.equal(emb(torch.tensor([3.0, 49.0])), emb(torch.tensor([3, 49])))


@pytest.mark.parametrize(
    "kind",
    [
        dict(),
        dict(n_labels=3),
        dict(conditioning="none", n_labels=3),
        dict(domain="mel", conditioning="none"),
    ],
)
def test_prepare_then_denoise_step_equals_forward(kind):
    net = tiny(**kind)
    conditional = kind.get("conditioning", "mel") == "mel"
    channels = net.in_channels
    cond = randn(2, 6, 4, seed=2) if conditional else None
    label = torch.tensor([1, 3]) if kind.get("n_labels") else None
    x = randn(2, channels, 32)
    step = torch.tensor([2.5, 9.0])
    prepared = net.prepare(cond, label)
    eager = net(x, step, cond, label, backend="eager")
    assert torch.equal(net.denoise_step(x, step, prepared), eager)
    # With gradients on, forward defaults to the fused CPU kernel: same result to rounding.
    torch.testing.assert_close(net(x, step, cond, label), eager, rtol=1e-5, atol=1e-6)
    # A batch-1 conditioning broadcasts over the batch of x.
    one = net.prepare(None if cond is None else cond[:1], None if label is None else label[:1])
    expected = net(
        x,
        step,
        None if cond is None else cond[:1].expand(2, -1, -1),
        None if label is None else label[:1].expand(2),
        backend="eager",
    )
    assert torch.allclose(net.denoise_step(x, step, one), expected, atol=1e-6)


def test_slice_time_equals_preparing_a_window_and_cropping():
    hop, frames = 8, 12
    net = tiny(hop_length=hop)
    halo = net.conditioner_halo_frames()
    assert halo == 1  # strides [8]: a frame's samples see the frames either side
    mel = randn(1, 6, frames, seed=3)
    full = net.prepare(mel)
    assert torch.equal(full.slice_time(0, frames * hop).conditioner, full.conditioner)
    for a, b in [(0, 4), (4, 9), (9, 12)]:
        lo, hi = max(0, a - halo), min(frames, b + halo)
        window = net.prepare(mel[..., lo:hi]).slice_time((a - lo) * hop, (b - lo) * hop)
        expected = full.conditioner[..., a * hop : b * hop]
        assert torch.allclose(window.conditioner, expected, atol=1e-6)
    # Without the halo the edge samples differ, so the halo is needed, not just sufficient.
    bare = net.prepare(mel[..., 4:9]).conditioner
    assert not torch.allclose(bare, full.conditioner[..., 4 * hop : 9 * hop], atol=1e-4)
    with pytest.raises(ValueError, match="not inside the 96"):
        full.slice_time(90, 97)
    assert Conditioning().slice_time(0, 5) == Conditioning()


def test_conditioning_batch_helpers():
    net = tiny(n_labels=2)
    a = net.prepare(randn(1, 6, 3), torch.tensor([0]))
    b = net.prepare(randn(1, 6, 3, seed=5), torch.tensor([2]))
    both = Conditioning.cat([a, b])
    assert both.batch_size == 2 and torch.equal(both.conditioner[1], b.conditioner[0])
    assert torch.equal(a.repeat(3).label_bias[2], a.label_bias[0])
    assert a.to(torch.float64).conditioner.dtype == torch.float64
    with pytest.raises(ValueError, match="cannot concatenate"):
        Conditioning.cat([a, Conditioning(label_bias=a.label_bias)])


@pytest.mark.parametrize(
    "kind, length, block",
    [
        (dict(), 8 * 9, 4),  # the smallest legal block: the largest dilation (4)
        (dict(n_labels=3, kernel_size=5), 8 * 5, 9),  # ragged last block
        (dict(conditioning="none"), 3, 4096),  # shorter than the dilations: both edges at once
        (dict(domain="mel", conditioning="none", n_labels=2), 11, 1),  # raised to 4, ragged
    ],
)
def test_fast_path_equals_eager(kind, length, block):
    net = tiny(**kind)
    conditional = kind.get("conditioning", "mel") == "mel"
    cond = randn(2, 6, length // 8, seed=2) if conditional else None
    label = torch.tensor([2, 0]) if kind.get("n_labels") else None
    prepared = net.prepare(cond, label)
    x = randn(2, net.in_channels, length)
    step = torch.tensor([1.75, 8.0])
    with torch.no_grad():
        eager = net.denoise_step(x, step, prepared, backend="eager")
        fast = net.denoise_step(x, step, prepared, backend="cpu-fast", block_samples=block)
    assert (fast - eager).abs().max() <= 1e-5
    net64 = net.double()
    prepared64 = prepared.to(torch.float64)
    with torch.no_grad():
        eager64 = net64.denoise_step(x.double(), step, prepared64, backend="eager")
        fast64 = net64.denoise_step(
            x.double(), step, prepared64, backend="cpu-fast", block_samples=block
        )
    assert (fast64 - eager64).abs().max() <= 1e-12


def test_fast_path_is_chosen_automatically_only_without_grad():
    net = tiny()
    x, step, mel = randn(1, 1, 40), torch.tensor([3.0]), randn(1, 6, 5)
    prepared = net.prepare(mel)
    with torch.inference_mode():
        auto = net.denoise_step(x, step, prepared)
        assert torch.equal(auto, net.denoise_step(x, step, prepared, backend="cpu-fast"))
    # With gradients on, the eager path (or forward's fused training kernel) runs and trains.
    out = net(x, step, mel)
    torch.testing.assert_close(out, net.denoise_step(x, step, prepared, backend="eager"))
    out.square().mean().backward()
    assert net.residual_layers[0].dilated_conv.weight.grad.abs().sum() > 0
    assert net.spectrogram_upsampler.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="'cpu-fast' needs gradients off"):
        net.denoise_step(x, step, prepared, backend="cpu-fast")


def test_backends_are_named_explicitly():
    net = tiny()
    x, step, mel = randn(1, 1, 40), torch.tensor([3.0]), randn(1, 6, 5)
    with pytest.raises(ValueError, match="backend must be one of auto, eager, cpu-fast, cpu-fused"):
        net(x, step, mel, backend="fast")
    with pytest.raises(ValueError, match="'cpu-fused' runs through forward"):
        net.denoise_step(x, step, net.prepare(mel), backend="cpu-fused")
    # Named backends run whatever the grad mode: the eager stack under no_grad, the fused one too.
    with torch.no_grad():
        eager = net(x, step, mel, backend="eager")
        fused = net(x, step, mel, backend="cpu-fused")
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6)


def test_bad_inputs_name_both_values():
    net = tiny()
    with pytest.raises(ValueError, match=r"mel has shape \(1, 5, 3\).*\[batch, 6, frames\]"):
        net.prepare(randn(1, 5, 3))
    with pytest.raises(ValueError, match=r"mel-conditioned \(6 bands\) but cond is None"):
        net.prepare(None)
    with pytest.raises(ValueError, match="x has 23 samples but the conditioning covers 24"):
        net(randn(1, 1, 23), torch.tensor([0.0]), randn(1, 6, 3))
    with pytest.raises(ValueError, match=r"in \[0, 9\], got values from 0.0 to 9.5"):
        net(randn(2, 1, 24), torch.tensor([0.0, 9.5]), randn(2, 6, 3))
    with pytest.raises(ValueError, match=r"x has shape \(1, 2, 24\).*\[batch, 1, time\]"):
        net(randn(1, 2, 24), torch.tensor([0.0]), randn(1, 6, 3))
    with pytest.raises(ValueError, match="no labels"):
        net.prepare(randn(1, 6, 3), torch.tensor([0]))
    labelled = tiny(conditioning="none", n_labels=3)
    with pytest.raises(ValueError, match=r"label values \[1, 4\] must lie in \[0, 3\]"):
        labelled.prepare(None, torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="unconditional"):
        labelled.prepare(randn(1, 6, 3))
    with pytest.raises(ValueError, match=r"multiply to 32 but hop_length is 16"):
        DiffWave(ModelConfig(), n_mels=80, hop_length=16, n_steps=5, upsample_factors=[4, 8])
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DiffWave(ModelConfig(kernel_size=4), n_mels=80, hop_length=256, n_steps=5)


def test_from_config_and_generator_seeded_init():
    cfg = apply_overrides(ExperimentConfig(), ["mel.hop_length=300", "model.residual_layers=2"])
    a = DiffWave.from_config(cfg, generator=torch.Generator().manual_seed(7))
    b = DiffWave.from_config(cfg, generator=torch.Generator().manual_seed(7))
    assert a.upsample_factors == (15, 20) and a.n_steps == cfg.diffusion.n_steps
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    # lmnt-com/diffwave's names, so its state dicts convert by identity.
    keys = set(a.state_dict())
    for key in [
        "input_projection.weight",
        "diffusion_embedding.projection1.weight",
        "diffusion_embedding.projection2.bias",
        "spectrogram_upsampler.conv1.weight",
        "spectrogram_upsampler.conv2.bias",
        "residual_layers.1.dilated_conv.weight",
        "residual_layers.1.diffusion_projection.weight",
        "residual_layers.1.conditioner_projection.weight",
        "residual_layers.1.output_projection.bias",
        "skip_projection.weight",
        "output_projection.weight",
    ]:
        assert key in keys


def lmnt_reference(sd: dict, audio, step, mel, n_layers: int, cycle: int, n_steps: int):
    """lmnt-com/diffwave's forward, written out functionally from its published definition
    (audio [B, T], hop 16 x 16, 128-d table lerped for a float step), on our state dict."""
    steps = torch.arange(n_steps).unsqueeze(1)
    table = steps * 10.0 ** (torch.arange(64).unsqueeze(0) * 4.0 / 63.0)
    table = torch.cat([torch.sin(table), torch.cos(table)], dim=1)
    lo, hi = torch.floor(step).long(), torch.ceil(step).long()
    emb = table[lo] + (table[hi] - table[lo]) * (step - lo)
    d = F.silu(
        F.linear(
            emb,
            sd["diffusion_embedding.projection1.weight"],
            sd["diffusion_embedding.projection1.bias"],
        )
    )
    d = F.silu(
        F.linear(
            d,
            sd["diffusion_embedding.projection2.weight"],
            sd["diffusion_embedding.projection2.bias"],
        )
    )
    spec = mel.unsqueeze(1)
    for name in ("conv1", "conv2"):
        w, b = sd[f"spectrogram_upsampler.{name}.weight"], sd[f"spectrogram_upsampler.{name}.bias"]
        spec = F.leaky_relu(F.conv_transpose2d(spec, w, b, stride=[1, 16], padding=[1, 8]), 0.4)
    spec = spec.squeeze(1)
    x = F.relu(
        F.conv1d(audio.unsqueeze(1), sd["input_projection.weight"], sd["input_projection.bias"])
    )
    skips = []
    for i in range(n_layers):
        p, dil = f"residual_layers.{i}.", 2 ** (i % cycle)
        y = x + F.linear(
            d, sd[p + "diffusion_projection.weight"], sd[p + "diffusion_projection.bias"]
        ).unsqueeze(-1)
        y = F.conv1d(
            y, sd[p + "dilated_conv.weight"], sd[p + "dilated_conv.bias"], padding=dil, dilation=dil
        )
        y = y + F.conv1d(
            spec, sd[p + "conditioner_projection.weight"], sd[p + "conditioner_projection.bias"]
        )
        gate, filt = torch.chunk(y, 2, dim=1)
        y = F.conv1d(
            torch.sigmoid(gate) * torch.tanh(filt),
            sd[p + "output_projection.weight"],
            sd[p + "output_projection.bias"],
        )
        residual, skip = torch.chunk(y, 2, dim=1)
        x = (x + residual) / math.sqrt(2.0)
        skips.append(skip)
    x = torch.sum(torch.stack(skips), dim=0) / math.sqrt(n_layers)
    x = F.relu(F.conv1d(x, sd["skip_projection.weight"], sd["skip_projection.bias"]))
    return F.conv1d(x, sd["output_projection.weight"], sd["output_projection.bias"])


def test_matches_lmnt_diffwave_on_the_same_state_dict():
    net = tiny(n_mels=10, hop_length=256, n_steps=50, step_embedding_dim=128, step_mlp_dim=512)
    assert net.upsample_factors == (16, 16)
    mel, audio, step = randn(1, 10, 3, seed=4), randn(1, 3 * 256, seed=5), torch.tensor([17.3])
    sd = net.state_dict()
    expected = lmnt_reference(sd, audio, step, mel, n_layers=4, cycle=3, n_steps=50)
    assert expected.abs().max() > 0.1  # the randomised output layer makes it non-trivial
    assert torch.allclose(net(audio.unsqueeze(1), step, mel), expected, atol=1e-5)
    with torch.no_grad():
        fast = net.denoise_step(audio.unsqueeze(1), step, net.prepare(mel), backend="cpu-fast")
    assert torch.allclose(fast, expected, atol=1e-5)


def test_base_model_parameter_count():
    cfg = ExperimentConfig()  # 64 channels, 30 layers, cycle 10, 80 mels, hop 256, T = 50
    net = DiffWave.from_config(cfg)
    c, n_layers, k, n_mels = 64, 30, 3, 80
    emb, mlp = 128, 512
    expected = (
        (1 * c + c)  # input_projection
        + (emb * mlp + mlp)
        + (mlp * mlp + mlp)  # step embedding MLP
        + sum(3 * 2 * s + 1 for s in (16, 16))  # upsampler (kernel [3, 2s], 1 channel)
        + n_layers
        * (
            (c * 2 * c * k + 2 * c)  # dilated_conv
            + (mlp * c + c)  # diffusion_projection
            + (n_mels * 2 * c + 2 * c)  # conditioner_projection
            + (c * 2 * c + 2 * c)  # output_projection
        )
        + (c * c + c)  # skip_projection
        + (c * 1 + 1)  # output_projection
    )
    count = sum(p.numel() for p in net.parameters())
    print(f"base DiffWave: {count} parameters, receptive field {net.receptive_field()} samples")
    assert count == expected == 2_619_971  # DiffWave BASE reports 2.64 M
    assert net.receptive_field() == 1 + 2 * 3 * (2**10 - 1)
