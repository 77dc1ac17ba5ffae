"""A multi-resolution spectrogram discriminator and the GAN losses of the adversarial stage.

The discriminator is UnivNet's MRD (Jang et al. 2021), the one Vocos trains with and the one
"GAN Vocoder: Multi-Resolution Discriminator Is All You Need" (You et al. 2021) found
sufficient: for each STFT resolution a small 2-D convolution stack over the linear magnitude
spectrogram ``[B, 1, n_freq, frames]``, strided along frequency, ending in a one-channel map of
real/fake logits. Weight normalisation on every convolution and leaky ReLU (slope 0.1), as
there. A frame-rate stft vocoder pays little for it: the spectrograms are small next to the
waveform the period discriminator of HiFi-GAN would read.

Losses (Lim & Ye 2017's hinge form, as Vocos): the discriminator minimises
``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``; the generator ``mean(relu(1 - D(fake)))``
plus feature matching (Larsen et al. 2016; HiFi-GAN's ``L_FM``), the mean absolute difference
of every intermediate feature map between the real and the generated audio, averaged over
layers and resolutions. All per example (``[B]``), as the trainer reduces.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

# (n_fft, hop_length, win_length): UnivNet's three resolutions at 22-24 kHz.
MRD_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((512, 128, 512), (1024, 256, 1024),
                                                     (2048, 512, 2048))  # fmt: skip
_LEAK = 0.1


class SpectrogramDiscriminator(nn.Module):
    """One resolution of the MRD: ``[B, T]`` audio -> (logits ``[B, 1, F', T']``, features).

    Args:
        n_fft, hop_length, win_length: its STFT (periodic Hann window, ``center=True``).
        channels: width of every hidden convolution.
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, channels: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        c = channels
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(1, c, (9, 3), padding=(4, 1))),
                weight_norm(nn.Conv2d(c, c, (9, 3), stride=(2, 1), padding=(4, 1))),
                weight_norm(nn.Conv2d(c, c, (9, 3), stride=(2, 1), padding=(4, 1))),
                weight_norm(nn.Conv2d(c, c, (9, 3), stride=(2, 1), padding=(4, 1))),
                weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
            ]
        )
        self.out = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(
            audio.float(), self.n_fft, self.hop_length, self.win_length,
            window=self.window.to(audio.device), center=True, return_complex=True,
        ).abs()  # fmt: skip
        x = spec.unsqueeze(1)  # [B, 1, n_freq, frames]
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), _LEAK)
            features.append(x)
        return self.out(x), features


class MultiResolutionDiscriminator(nn.Module):
    """UnivNet's MRD: one :class:`SpectrogramDiscriminator` per resolution (module docstring).

    Args:
        resolutions: ``(n_fft, hop_length, win_length)`` triples.
        channels: hidden width (UnivNet: 32; 16 is enough for a short CPU stage).
        generator: seeds the initial weights, so every rank starts alike.

    ``forward(audio [B, T]) -> (logits, features)``: a list of ``[B, 1, F', T']`` logits and a
    list (per resolution) of lists of feature maps.
    """

    def __init__(
        self,
        resolutions: Sequence[tuple[int, int, int]] = MRD_RESOLUTIONS,
        channels: int = 16,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if channels < 1 or not resolutions:
            raise ValueError(
                f"the discriminator needs channels >= 1 and a resolution, got {channels} and "
                f"{list(resolutions)}"
            )
        self.discriminators = nn.ModuleList(
            SpectrogramDiscriminator(n, h, w, channels) for n, h, w in resolutions
        )
        if generator is not None:
            self._init_weights(generator)

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator) -> None:
        """PyTorch's default convolution initialisation (uniform, bound ``1 / sqrt(fan_in)``)
        drawn from ``generator``; each weight norm's magnitude set to its direction's norm, so
        the initial weight equals the direction, as ``weight_norm`` makes it."""
        for module in self.modules():
            if not isinstance(module, nn.Conv2d):
                continue
            direction = module.parametrizations.weight.original1
            bound = 1.0 / direction[0].numel() ** 0.5
            direction.uniform_(-bound, bound, generator=generator)
            module.parametrizations.weight.original0.copy_(
                direction.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
            )
            module.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, audio: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        logits, features = [], []
        for d in self.discriminators:
            out, feats = d(audio)
            logits.append(out)
            features.append(feats)
        return logits, features


def _per_example_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


def discriminator_loss(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """Hinge loss of the discriminator, ``[B]``, summed over resolutions."""
    total = torch.zeros(real[0].shape[0], device=real[0].device)
    for r, f in zip(real, fake, strict=True):
        total = total + _per_example_mean(F.relu(1 - r)) + _per_example_mean(F.relu(1 + f))
    return total


def generator_loss(fake: list[Tensor]) -> Tensor:
    """Hinge loss of the generator, ``[B]``, summed over resolutions."""
    total = torch.zeros(fake[0].shape[0], device=fake[0].device)
    for f in fake:
        total = total + _per_example_mean(F.relu(1 - f))
    return total


def feature_matching_loss(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    """Mean absolute difference of the feature maps, ``[B]``: averaged over layers, summed over
    resolutions; the real features carry no gradient."""
    total = torch.zeros(real[0][0].shape[0], device=real[0][0].device)
    for rs, fs in zip(real, fake, strict=True):
        layer = [_per_example_mean((r.detach() - f).abs()) for r, f in zip(rs, fs, strict=True)]
        total = total + torch.stack(layer).mean(dim=0)
    return total
