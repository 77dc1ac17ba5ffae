"""Experiment configuration: dataclasses, strict dict/YAML round trips, overrides and validation.

Everything that decides what a model *is* (mel profile, network shape, diffusion schedule)
lives here and is stored inside every checkpoint, so a model is always rebuilt from its own config,
never from module defaults. This module imports no torch: the CLI can parse and validate a
recipe before paying for the torch import.

Strictness: ``from_dict`` refuses unknown keys (listing the valid ones) and values of the wrong
type (naming the field, the value and the expected type). Integers are accepted where a float is
expected; nothing else is coerced, except command-line strings (``apply_overrides``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

CONFIG_VERSION = 1

# Largest stride of one transposed-convolution stage of the conditioner upsampler. Its kernel is
# 2 x stride wide along time, so a larger stride means a very wide, poorly conditioned kernel.
MAX_UPSAMPLE_STRIDE = 32


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

    STFT domain only: ``stft_compression`` is the exponent ``a`` of ``|X|^a e^{i angle X}``
    (SGMSE+, Richter et al. 2023, use 0.5); ``prior`` ``"mel"`` whitens the variable by the
    envelope the conditioning mel implies (the mel-shaped prior), ``"standard"`` by a constant;
    ``bands > 1`` splits the spectrum into that many bands of bins run through one shared network
    (:mod:`audiodiff.subband`, as RFWave does).
    """

    domain: Literal["waveform", "mel", "stft"] = "waveform"
    conditioning: Literal["mel", "none"] = "mel"
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
    target: Literal["eps", "v"] = "eps"
    loss: Literal["l1", "l2"] = "l1"
    label_dropout: float = 0.0


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
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    lr_decay: Literal["constant", "cosine", "step"] = "constant"
    min_lr_ratio: float = 0.1
    # lr_decay "step": the rate is multiplied by lr_gamma at each milestone step (MultiStepLR).
    # Unlike cosine it does not depend on max_steps, so it can be added to a running run.
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
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
    keep_last: int = 3
    max_bad_steps: int = 10


@dataclass
class SampleConfig:
    """Defaults for sampling; ``schedule`` holds a searched noise schedule (sigmas) when present."""

    sampler: Literal["ddpm", "diffwave-fast", "ddim", "dpmpp-2m"] = "diffwave-fast"
    steps: int = 6
    eta: float = 0.0
    guidance: float = 0.0
    schedule: list[float] = field(default_factory=list)
    chunk_frames: int = 0


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


# --------------------------------------------------------------------------------------------------
# Strict conversion
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"list[{_type_name(item)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        if value is None and None in typing.get_args(tp):
            return None
    elif origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, where)
            except ValueError:
                continue
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and tp is MelConfig:
            return mel_profile(value)
        if isinstance(value, dict):
            return from_dict(tp, value, where)
    raise ValueError(f"{where} = {value!r} is not a valid {_type_name(tp)}")


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, strictly.

    A ``MelConfig`` dict whose ``name`` is a known profile starts from that profile, so
    ``{"name": "bigvgan-24k"}`` alone is the full 24 kHz profile.

    Raises:
        ValueError: unknown key (valid keys listed) or wrong type (field, value and type named).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown key {prefix}{unknown[0]}; valid keys of {where or cls.__name__}: "
            + ", ".join(names)
        )
    base = cls()
    if (
        cls is MelConfig
        and isinstance(data.get("name"), str)
        and data["name"] in mel_profile_names()
    ):
        base = mel_profile(data["name"])
    values = {}
    for name in names:
        key = f"{where}.{name}" if where else name
        if name in data:
            values[name] = _convert(data[name], hints[name], key)
        else:
            values[name] = getattr(base, name)
    return cls(**values)


def inference_from_dict(data: dict[str, Any]) -> tuple[ExperimentConfig, list[str]]:
    """:func:`from_dict` for a stored model's config, strict only where inference reads it.

    The sections inference uses (mel, model, diffusion, sample, labels) and the top level are
    strict: an unknown key there could change what the model computes. In the training-only
    sections (:data:`TRAINING_SECTIONS`) a key this version does not know, or a value it cannot
    read (say a newer export's ``train.optimizer: lion``), is left out (its default taken) and
    named in the returned list, so a newer run's export still vocodes and generates here.

    Returns:
        ``(config, ignored)``: ``ignored`` as ``section.key`` (or ``section``) strings.

    Raises:
        ValueError: an unknown key or bad value outside the training-only sections.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a stored config must be a mapping, got {type(data).__name__}")
    data, ignored = dict(data), []
    hints = typing.get_type_hints(ExperimentConfig)
    for section in TRAINING_SECTIONS:
        if section not in data:
            continue
        value = data.pop(section)
        if not isinstance(value, dict):
            ignored.append(section)
            continue
        kept = {}
        for key, item in value.items():
            try:
                from_dict(hints[section], {key: item}, section)
            except ValueError:
                ignored.append(f"{section}.{key}")
            else:
                kept[key] = item
        data[section] = kept
    return from_dict(ExperimentConfig, data), ignored


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of primitives (str, int, float, bool, None, list, dict)."""
    return dataclasses.asdict(obj)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML recipe (UTF-8; partial: missing keys take defaults), apply ``key=value``
    overrides.

    Raises:
        ValueError: unreadable file, invalid YAML, unknown key or wrong type; the message names it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        # One line, but with YAML's line and column, which come after its first line.
        detail = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ValueError(f"{path} is not valid YAML: {detail}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    try:
        cfg = from_dict(ExperimentConfig, data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return apply_overrides(cfg, overrides)


def dump_config(cfg: ExperimentConfig, path: str | Path | None = None) -> str:
    """YAML text of the full resolved config; also written to ``path`` (UTF-8) when given."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def _parse_override_value(raw: str, tp: Any) -> Any:
    # YAML 1.1 reads "1e-4" as a string; numbers are parsed by Python first for float fields.
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and tp in (float, float | None):
        try:
            return float(value)
        except ValueError:
            pass
    if value is None and raw.lower() not in ("null", "none", "~"):
        value = raw
    if isinstance(value, str) and value.lower() == "none":
        # "none" is a legal string for some fields (model.conditioning=none): keep it there.
        try:
            return _convert(value, tp, "override")
        except ValueError:
            return None
    return value


def apply_overrides(
    cfg: ExperimentConfig, overrides: list[str] | tuple[str, ...]
) -> ExperimentConfig:
    """Return a copy of ``cfg`` with ``section.field=value`` overrides applied, in order.

    Setting ``mel.name`` to a known profile replaces the whole mel section by that profile.

    Raises:
        ValueError: malformed override, unknown section or field, or a value of the wrong type.
    """
    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ValueError(
                f"override {item!r} must look like section.field=value, e.g. train.lr=1e-4"
            )
        section, name = parts
        hints = typing.get_type_hints(ExperimentConfig)
        sections = [k for k, v in data.items() if isinstance(v, dict)]
        if section not in sections:
            raise ValueError(
                f"unknown section {section!r} in override {item!r}; sections: "
                + ", ".join(sections)
            )
        field_hints = typing.get_type_hints(hints[section])
        if name not in field_hints:
            raise ValueError(
                f"unknown key {section}.{name}; valid keys of {section}: " + ", ".join(field_hints)
            )
        value = _parse_override_value(raw.strip(), field_hints[name])
        if section == "mel" and name == "name" and value in mel_profile_names():
            data["mel"] = to_dict(mel_profile(value))
        else:
            data[section][name] = value
    return from_dict(ExperimentConfig, data)


# --------------------------------------------------------------------------------------------------
# Cross-field rules
# --------------------------------------------------------------------------------------------------


def upsample_factors(hop_length: int) -> list[int]:
    """Strides of the conditioner upsampler whose product is ``hop_length``.

    Uses the fewest stages (2, else 3) whose largest stride is as small as possible, each at most
    ``MAX_UPSAMPLE_STRIDE``: 256 -> [16, 16], 300 -> [15, 20], 200 -> [10, 20], 512 -> [16, 32],
    240 -> [15, 16], 441 -> [21, 21].

    Raises:
        ValueError: when no such factorisation exists (for example a prime hop above 32).
    """
    if hop_length < 1:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    if hop_length <= MAX_UPSAMPLE_STRIDE:
        return [hop_length]
    for n_stages in (2, 3):
        best: list[int] | None = None
        for a in range(2, MAX_UPSAMPLE_STRIDE + 1):
            if hop_length % a:
                continue
            rest = hop_length // a
            if n_stages == 2:
                cand = sorted([a, rest])
            else:
                cand = None
                for b in range(a, MAX_UPSAMPLE_STRIDE + 1):
                    if rest % b == 0 and rest // b >= b:
                        trial = sorted([a, b, rest // b])
                        if trial[-1] <= MAX_UPSAMPLE_STRIDE and (
                            cand is None or trial[-1] < cand[-1]
                        ):
                            cand = trial
                if cand is None:
                    continue
            if cand[-1] <= MAX_UPSAMPLE_STRIDE and (best is None or cand[-1] < best[-1]):
                best = cand
        if best is not None:
            return best
    largest = max(p for p in _prime_factors(hop_length))
    raise ValueError(
        f"hop_length {hop_length} cannot be split into at most 3 upsampler strides of at most "
        f"{MAX_UPSAMPLE_STRIDE} (its largest prime factor is {largest}); choose a hop such as 200, "
        "240, 256, 300, 441 or 512"
    )


def _prime_factors(n: int) -> list[int]:
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    if n > 1:
        out.append(n)
    return out


def resolved_upsample_factors(cfg: ExperimentConfig) -> list[int]:
    """The model's upsampler strides: the explicit ones, else derived from the mel hop."""
    return list(cfg.model.upsample_factors) or upsample_factors(cfg.mel.hop_length)


def model_channels(cfg: ExperimentConfig) -> int:
    """Channels of the variable the network diffuses: 1 (waveform), ``n_mels`` (mel) or
    ``2 * (n_fft // 2 + 1)`` (stft: real and imaginary parts)."""
    if cfg.model.domain == "mel":
        return cfg.mel.n_mels
    if cfg.model.domain == "stft":
        return 2 * (cfg.mel.n_fft // 2 + 1)
    return 1


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check cross-field rules; return ``cfg`` unchanged.

    Raises:
        ValueError: the first broken rule, naming the fields and values involved.
    """
    m, mo, d, da, tr, sa = cfg.mel, cfg.model, cfg.diffusion, cfg.data, cfg.train, cfg.sample
    if cfg.config_version != CONFIG_VERSION:
        raise ValueError(
            f"config_version {cfg.config_version} is not supported (this audiodiff reads "
            f"{CONFIG_VERSION})"
        )
    positive = {
        "mel.sample_rate": m.sample_rate,
        "mel.n_fft": m.n_fft,
        "mel.win_length": m.win_length,
        "mel.hop_length": m.hop_length,
        "mel.n_mels": m.n_mels,
        "model.residual_channels": mo.residual_channels,
        "model.residual_layers": mo.residual_layers,
        "model.dilation_cycle": mo.dilation_cycle,
        "model.kernel_size": mo.kernel_size,
        "diffusion.n_steps": d.n_steps,
        "data.segment_frames": da.segment_frames,
        "data.batch_size": da.batch_size,
        "train.grad_accum": tr.grad_accum,
        "train.log_every": tr.log_every,
        "train.eval_every": tr.eval_every,
        "train.save_every": tr.save_every,
        "train.keep_last": tr.keep_last,
        "train.max_bad_steps": tr.max_bad_steps,
        "sample.steps": sa.steps,
        "model.step_embedding_dim": mo.step_embedding_dim,
        "model.step_mlp_dim": mo.step_mlp_dim,
    }
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"{key} must be at least 1, got {value}")
    if m.win_length > m.n_fft:
        raise ValueError(f"mel.win_length {m.win_length} exceeds mel.n_fft {m.n_fft}")
    if m.hop_length > m.win_length:
        raise ValueError(f"mel.hop_length {m.hop_length} exceeds mel.win_length {m.win_length}")
    if m.padding == "hifigan" and (m.n_fft - m.hop_length) % 2:
        raise ValueError(
            f"hifigan padding needs n_fft - hop_length even, got {m.n_fft} - {m.hop_length}"
        )
    nyquist = m.sample_rate / 2
    f_max = nyquist if m.f_max is None else m.f_max
    if not 0 <= m.f_min < f_max <= nyquist:
        raise ValueError(
            f"mel band must satisfy 0 <= f_min < f_max <= sample_rate/2, got f_min {m.f_min}, "
            f"f_max {m.f_max}, sample_rate/2 {nyquist}"
        )
    if m.power <= 0:
        raise ValueError(f"mel.power must be positive, got {m.power}")
    if mo.kernel_size % 2 == 0:
        raise ValueError(
            f"model.kernel_size must be odd (same-length dilated conv), got {mo.kernel_size}"
        )
    if mo.n_labels < 0:
        raise ValueError(f"model.n_labels must be >= 0, got {mo.n_labels}")
    if mo.domain == "mel" and mo.conditioning == "mel":
        raise ValueError(
            "model.domain 'mel' generates mels, so model.conditioning must be 'none', not 'mel'"
        )
    if mo.domain == "stft":
        if mo.conditioning != "mel":
            raise ValueError(
                "model.domain 'stft' is a vocoder domain, so model.conditioning must be 'mel', "
                f"not {mo.conditioning!r}"
            )
        if m.compression != "ln":
            raise ValueError(
                f"model.domain 'stft' needs an ln-compressed mel (mel.compression 'ln'), got "
                f"{m.compression!r}"
            )
        if not 1 <= mo.bands <= m.n_fft // 2 + 1:
            raise ValueError(
                f"model.bands must be in [1, n_fft / 2 + 1 = {m.n_fft // 2 + 1}], got {mo.bands}"
            )
        if mo.bands > 1 and mo.n_labels > 0:
            raise ValueError("a sub-band stft model (model.bands > 1) takes no class labels")
        if not 0 < mo.stft_compression <= 1:
            raise ValueError(f"model.stft_compression must be in (0, 1], got {mo.stft_compression}")
    elif mo.bands != 1:
        raise ValueError(f"model.bands {mo.bands} is only for model.domain 'stft'")
    elif mo.prior != "standard":
        raise ValueError(
            f"model.prior {mo.prior!r} is only implemented for model.domain 'stft', not "
            f"{mo.domain!r}"
        )
    if mo.domain == "waveform" and mo.conditioning == "mel":
        factors = resolved_upsample_factors(cfg)
        if math.prod(factors) != m.hop_length:
            raise ValueError(
                f"model.upsample_factors {factors} multiply to {math.prod(factors)} but "
                f"mel.hop_length is {m.hop_length}"
            )
        if any(f < 1 for f in factors):
            raise ValueError(f"model.upsample_factors must be positive, got {factors}")
    if d.schedule in ("linear", "linear-zsnr") and not 0 < d.beta_start < d.beta_end < 1:
        raise ValueError(
            f"linear schedule needs 0 < beta_start < beta_end < 1, got {d.beta_start}, {d.beta_end}"
        )
    if not 0 <= d.label_dropout < 1:
        raise ValueError(f"diffusion.label_dropout must be in [0, 1), got {d.label_dropout}")
    if cfg.labels and len(cfg.labels) != mo.n_labels:
        raise ValueError(
            f"labels names {len(cfg.labels)} classes ({', '.join(cfg.labels)}) but "
            f"model.n_labels is {mo.n_labels}"
        )
    if len(set(cfg.labels)) != len(cfg.labels):
        raise ValueError(f"labels must be distinct names, got {cfg.labels}")
    if d.label_dropout > 0 and mo.n_labels == 0:
        raise ValueError("diffusion.label_dropout > 0 needs model.n_labels > 0 (nothing to drop)")
    if sa.guidance != 0 and (mo.n_labels == 0 or d.label_dropout == 0):
        raise ValueError(
            f"sample.guidance {sa.guidance} needs a label-conditional model trained with "
            "diffusion.label_dropout > 0"
        )
    if da.num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {da.num_workers}")
    if tr.lr <= 0:
        raise ValueError(f"train.lr must be positive, got {tr.lr}")
    if not 0 <= tr.ema_decay < 1:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {tr.ema_decay}")
    if len(tr.betas) != 2 or not all(0 <= b < 1 for b in tr.betas):
        raise ValueError(f"train.betas must be two numbers in [0, 1), got {tr.betas}")
    if tr.max_steps < 0 or tr.warmup_steps < 0:
        raise ValueError("train.max_steps and train.warmup_steps must be >= 0")
    if tr.grad_clip < 0:
        raise ValueError(f"train.grad_clip must be >= 0 (0 disables), got {tr.grad_clip}")
    if tr.lr_decay == "step":
        ms = tr.lr_milestones
        if not ms or any(b <= a for a, b in zip(ms, ms[1:], strict=False)) or ms[0] < 1:
            raise ValueError(
                f"train.lr_decay 'step' needs train.lr_milestones: increasing steps >= 1, got {ms}"
            )
        if not 0 < tr.lr_gamma <= 1:
            raise ValueError(f"train.lr_gamma must be in (0, 1], got {tr.lr_gamma}")
    if sa.schedule and any(s <= 0 for s in sa.schedule):
        raise ValueError(f"sample.schedule sigmas must be positive, got {sa.schedule}")
    if not 0 <= sa.eta <= 1:
        raise ValueError(f"sample.eta must be in [0, 1], got {sa.eta}")
    return cfg


def architecture_changes(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """Fields of the architecture sections that differ, as ``section.field: old -> new`` lines."""
    changes = []
    a, b = to_dict(old), to_dict(new)
    for section in ARCHITECTURE_SECTIONS:
        for key in a[section]:
            if a[section][key] != b[section][key]:
                changes.append(f"{section}.{key}: {a[section][key]!r} -> {b[section][key]!r}")
    return changes
