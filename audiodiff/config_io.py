"""Strict conversions of the experiment config: dicts, YAML files and ``--set`` overrides.

Strictness: ``from_dict`` refuses unknown keys (listing the valid ones) and values of the wrong
type (naming the field, the value and the expected type). Integers are accepted where a float is
expected; nothing else is coerced, except command-line strings (``apply_overrides``).
Like :mod:`audiodiff.config`, it imports no torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from audiodiff.config import (
    CONFIG_VERSION,
    TRAINING_SECTIONS,
    ExperimentConfig,
    MelConfig,
    mel_profile,
    mel_profile_names,
)
from audiodiff.config_migrate import migrate, renamed_key

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

    Files of an older ``config_version`` are migrated, and a newer version's is read as this one
    (:func:`audiodiff.config_migrate.migrate`), which the returned list notes.

    Returns:
        ``(config, ignored)``: ``ignored`` as ``section.key`` (or ``section``) strings, and
        ``config_version N (read as M)`` for a newer file.

    Raises:
        ValueError: an unknown key or bad value outside the training-only sections.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a stored config must be a mapping, got {type(data).__name__}")
    version = data.get("config_version")
    data, _ = migrate(data, allow_newer=True)  # renames of older versions need no note
    ignored = []
    if isinstance(version, int) and version > CONFIG_VERSION:
        ignored.append(f"config_version {version} (read as {CONFIG_VERSION})")
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
    """Read a YAML recipe or a run's ``config.yaml`` (UTF-8; partial: missing keys take defaults;
    older ``config_version`` spellings migrated), apply ``key=value`` overrides.

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
        cfg = from_dict(ExperimentConfig, migrate(data)[0])
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
        section, name = parts[0], renamed_key(*parts)
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
