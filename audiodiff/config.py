"""Experiment configuration: the dataclasses of every section, and the named mel profiles.

Everything that decides what a model *is* (mel profile, network shape, diffusion schedule)
lives here and is stored inside every checkpoint, so a model is always rebuilt from its own config,
never from module defaults. This module imports no torch: the CLI can parse and validate a
recipe before paying for the torch import. Beside it: strict dict/YAML round trips and ``--set``
overrides (:mod:`audiodiff.config_io`), cross-field rules and validation
(:mod:`audiodiff.config_rules`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

CONFIG_VERSION = 2  # history and migrations: audiodiff/config_migrate.py
# (n_fft, hop_length, win_length) of Parallel WaveGAN's / HiFi-GAN's multi-resolution STFT loss:
# the metric's resolutions and train.spectral_loss's (audiodiff.spectral_loss).
MR_STFT_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass
class MelConfig:
    """Every choice that defines a mel spectrogram (DESIGN.md §5); defaults are ``hifigan``.

    ``compression``: ``"ln"`` is ``ln(max(mel, 1e-5))`` (HiFi-GAN, Tacotron 2, FastSpeech 2,
    BigVGAN); ``"diffwave-db"`` is lmnt-com/diffwave's
    ``clamp((20 log10(max(M, 1e-5)) - 20 + 100) / 100, 0, 1)``.
    ``padding``: ``"hifigan"`` reflect-pads ``(n_fft - hop) / 2`` on both sides and runs the STFT
    with ``center=False`` (frames = T / hop); ``"center"`` is ``torch.stft(center=True)`` reflect
    padding (frames = T // hop + 1).
    """

    name: str = "hifigan"
    sample_rate: int = 22050
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = 8000.0
    mel_scale: Literal["slaney", "htk"] = "slaney"
    norm: Literal["slaney"] | None = "slaney"
    power: float = 1.0
    padding: Literal["hifigan", "center"] = "hifigan"
    normalized: bool = False
    compression: Literal["ln", "diffwave-db"] = "ln"


def _hifigan_like(name: str, **changes: Any) -> MelConfig:
    return dataclasses.replace(MelConfig(), name=name, **changes)


def mel_profile(name: str) -> MelConfig:
    """Return a fresh copy of a named mel profile (DESIGN.md §5).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    profiles = {
        "hifigan": lambda: _hifigan_like("hifigan"),
        "bigvgan-24k": lambda: _hifigan_like(
            "bigvgan-24k", sample_rate=24000, n_mels=100, f_max=12000.0
        ),
        "bigvgan-44k": lambda: _hifigan_like(
            "bigvgan-44k", sample_rate=44100, n_mels=128, f_max=22050.0
        ),
        "bigvgan-44k-512": lambda: _hifigan_like(
            "bigvgan-44k-512",
            sample_rate=44100,
            n_mels=128,
            f_max=22050.0,
            n_fft=2048,
            win_length=2048,
            hop_length=512,
        ),
        "diffwave": lambda: MelConfig(
            name="diffwave",
            sample_rate=22050,
            n_fft=1024,
            win_length=1024,
            hop_length=256,
            n_mels=80,
            f_min=20.0,
            f_max=11025.0,
            mel_scale="htk",
            norm=None,
            power=1.0,
            padding="center",
            normalized=True,
            compression="diffwave-db",
        ),
        # 16 kHz speech (SC09, 16 kHz corpora): hifigan conventions at 16 kHz, hop 256 or 200.
        "16k": lambda: _hifigan_like("16k", sample_rate=16000, f_max=8000.0),
        "16k-200": lambda: _hifigan_like(
            "16k-200", sample_rate=16000, f_max=8000.0, n_fft=800, win_length=800, hop_length=200
        ),
    }
    if name not in profiles:
        raise ValueError(f"unknown mel profile {name!r}; known profiles: {', '.join(profiles)}")
    return profiles[name]()


def mel_profile_names() -> list[str]:
    """Names accepted by :func:`mel_profile`."""
    return [
        "hifigan",
        "bigvgan-24k",
        "bigvgan-44k",
        "bigvgan-44k-512",
        "diffwave",
        "16k",
        "16k-200",
    ]


@dataclass
class ModelConfig:
    """Shape of the DiffWave network and the domain it diffuses in (DESIGN §12).

    ``domain``: ``"waveform"`` (samples, 1 channel), ``"mel"`` (frame rate, ``n_mels`` channels)
    or ``"stft"`` (frame rate, ``2 * (n_fft // 2 + 1)`` channels: the magnitude-compressed
    complex STFT, real and imaginary parts stacked). ``conditioning="mel"`` makes a vocoder
    (waveform or stft domain); ``"none"`` makes an unconditional (optionally label-conditional,
    ``n_labels > 0``) generator. ``upsample_factors`` is derived from the mel hop when left empty
    (see :func:`upsample_factors`); frame-rate domains have no upsampler.

    ``prior`` (vocoders): ``"mel"`` whitens the diffused variable by a scale the conditioning
    mel implies: in the stft domain its linear-frequency envelope (the mel-shaped prior), in the
    waveform domain each frame's RMS (PriorGrad, Lee et al. 2022); ``"standard"`` by a constant.

    ``architecture``: ``"diffwave"`` (the dilated residual stack) or, stft domain only,
    ``"convnext"`` (:mod:`audiodiff.convnext`, Vocos's block stack: ``residual_channels`` is its
    width, ``residual_layers`` its blocks, ``kernel_size`` its depthwise kernel).

    ``start`` (stft vocoders): ``"noise"`` samples from the prior at the table's largest sigma;
    ``"estimate"`` starts from the DSP estimate of the STFT the mel implies (its non-negative
    least-squares magnitude, ``estimate_nnls_iters`` updates, with the phase of
    ``estimate_griffin_lim_iters`` fast Griffin-Lim iterations from zero phase) plus noise at a
    small sigma, and trains for exactly that start, so the network learns the residual over the
    estimate (FreeV, Lv et al. 2024; MelFlow; SDEdit, Meng et al. 2022).

    STFT domain only: ``stft_compression`` is the exponent ``a`` of ``|X|^a e^{i angle X}``
    (SGMSE+, Richter et al. 2023, use 0.5); ``bands > 1`` splits the spectrum into that many
    bands of bins run through one shared network (:mod:`audiodiff.subband`, as RFWave does).
    """

    domain: Literal["waveform", "mel", "stft"] = "waveform"
    conditioning: Literal["mel", "none"] = "mel"
    architecture: Literal["diffwave", "convnext"] = "diffwave"
    residual_channels: int = 64
    residual_layers: int = 30
    dilation_cycle: int = 10
    kernel_size: int = 3
    step_embedding_dim: int = 128
    step_mlp_dim: int = 512
    n_labels: int = 0
    upsample_factors: list[int] = field(default_factory=list)
    stft_compression: float = 0.5
    prior: Literal["standard", "mel"] = "standard"
    bands: int = 1
    start: Literal["noise", "estimate"] = "noise"
    estimate_nnls_iters: int = 8
    estimate_griffin_lim_iters: int = 16


@dataclass
class DiffusionConfig:
    """Training noise schedule and objective (DESIGN.md §6). Defaults: DiffWave vocoder, T = 50.

    ``schedule``: ``"linear"`` betas from ``beta_start`` to ``beta_end`` (DiffWave), ``"cosine"``
    (Nichol & Dhariwal 2021), ``"linear-zsnr"`` the linear schedule rescaled to zero terminal SNR
    (Lin et al. 2024).
    """

    n_steps: int = 50
    schedule: Literal["linear", "cosine", "linear-zsnr"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.05
    # "residual" (model.start "estimate" only): x0_hat = x + F, the network's output is the
    # correction to its (noised) start whatever sigma is, as FreeV's residual over the prior.
    target: Literal["eps", "v", "residual"] = "eps"
    loss: Literal["l1", "l2"] = "l1"
    label_dropout: float = 0.0
    # model.start "estimate": training noises the DSP estimate at a sigma drawn log-uniformly from
    # [start_sigma_min, start_sigma_max] (the whitened variable's units) instead of the table's.
    start_sigma_min: float = 0.02
    start_sigma_max: float = 0.5


@dataclass
class DataConfig:
    """Where clips come from and how they are cut."""

    train_manifest: str = ""
    val_manifest: str = ""
    segment_frames: int = 62
    batch_size: int = 16
    num_workers: int = 2
    min_duration_s: float = 0.1
    silence_threshold: float = 1e-4


@dataclass
class TrainConfig:
    """Optimisation, precision, logging and checkpointing."""

    max_steps: int = 1_000_000
    lr: float = 2e-4
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    lr_decay: Literal["constant", "cosine", "step"] = "constant"
    min_lr_ratio: float = 0.1
    # lr_decay "step": the rate is multiplied by lr_gamma at each milestone step (MultiStepLR).
    # Unlike cosine it does not depend on max_steps, so it can be added to a running run.
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    # Weight of the auxiliary multi-resolution STFT loss (audiodiff.spectral_loss) between the
    # audio decoded from the network's clean estimate and the clean audio; 0 = off. Waveform and
    # stft domains. It is phase-blind where the diffusion loss's conditional mean is not. The
    # logged loss includes it; the validation loss (val_loss) does not, so runs stay comparable.
    spectral_loss: float = 0.0
    # Weight of HiFi-GAN's mel loss on the same decoded audio: mean |mel(audio) - mel(clean)| in
    # the profile's compressed mel (the metric log_mel_l1); 0 = off. Domains as spectral_loss.
    mel_loss: float = 0.0
    # Weight of the anti-wrapping phase losses on the network's clean STFT (stft domain;
    # audiodiff.phase_loss: instantaneous phase, group delay, instantaneous angular frequency,
    # APNet2, Du et al. 2023) and of the STFT-consistency loss (its distance from the STFT of
    # its own inverse); 0 = off.
    phase_loss: float = 0.0
    consistency_loss: float = 0.0
    # Weights to start from when the run has no checkpoint yet (fine-tuning): a checkpoint, run
    # directory, .safetensors export or shipped model name; the architecture must match.
    init_from: str = ""
    # The adversarial stage (audiodiff.discriminator: UnivNet's multi-resolution spectrogram
    # discriminator, hinge loss, feature matching), waveform and stft vocoders. `adversarial` and
    # `feature_matching` weigh the generator's two terms (0 = off); from
    # `adversarial_start_step` on (before it: the other losses only, Vocos's mel-only warm-up)
    # the discriminator sees `adversarial_batch` examples of each micro-batch (0: all) and
    # steps once per optimiser step with AdamW at `discriminator_lr`.
    adversarial: float = 0.0
    feature_matching: float = 0.0
    adversarial_start_step: int = 0
    adversarial_batch: int = 0
    discriminator_lr: float = 2.0e-4
    discriminator_channels: int = 16
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.999
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    log_every: int = 100
    eval_every: int = 5000
    # Validation also scores the copy-synthesised clips with DistillMOS and DNSMOS P.808
    # (audiodiff.perceptual; needs the eval extra, checked when the trainer starts).
    eval_perceptual: bool = False
    save_every: int = 5000
    # Also save when this many minutes passed since the last save (0 = off), so a kill loses at
    # most that much work whatever save_every is (audiodiff.interrupt).
    save_every_minutes: float = 5.0
    keep_last: int = 3
    max_bad_steps: int = 10


@dataclass
class SampleConfig:
    """Defaults for sampling; ``sigmas`` holds a searched discretisation (noise levels, most noise
    first, without the final 0) for ``sampler`` at ``steps`` when present.

    ``mel_match_iters``, ``griffin_lim_iters``, ``magnitude_blend`` and
    ``griffin_lim_momentum`` (stft-domain vocoders only) refine the sampled STFT before the
    inverse: the magnitude moved towards the conditioning mel (blended geometrically between the
    network's own, weight ``magnitude_blend``, and Griffin-Lim's estimate from the mel), then
    Griffin-Lim iterations started from the network's phase
    (:class:`audiodiff.consistency.Refinement`); the defaults leave the network's output as it
    is."""

    sampler: Literal["ddpm", "diffwave-fast", "ddim", "dpmpp-2m"] = "diffwave-fast"
    steps: int = 6
    eta: float = 0.0
    guidance: float = 0.0
    sigmas: list[float] = field(default_factory=list)
    mel_match_iters: int = 0
    griffin_lim_iters: int = 0
    magnitude_blend: float = 1.0
    griffin_lim_momentum: float = 0.99
    # model.start "estimate": the sigma the sampler starts from (the estimate plus this much noise).
    start_sigma: float = 0.1


@dataclass
class ExperimentConfig:
    """The whole experiment; stored, resolved, in every checkpoint and export.

    ``labels``: the class names of a label-conditional model, by index (``labels[i]`` names
    label ``i``); empty when the classes have no names. The trainer fills it from the training
    manifest (string labels, or ``label_name`` next to integer ones, as ``prepare`` writes), so
    ``generate --label NAME`` resolves the names the data used.
    """

    config_version: int = CONFIG_VERSION
    name: str = "audiodiff"
    mel: MelConfig = field(default_factory=MelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    labels: list[str] = field(default_factory=list)


# Sections whose fields define the trained function: they may not change when a run resumes.
ARCHITECTURE_SECTIONS = ("mel", "model", "diffusion")
# Sections only training reads. Inference needs mel, model, diffusion, sample and labels.
TRAINING_SECTIONS = ("data", "train")
