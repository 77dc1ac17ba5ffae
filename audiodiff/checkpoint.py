"""Checkpoints and exports: atomic writes, a ``latest`` pointer, keep-last-K, safe loading.

A training checkpoint is one ``torch.save`` file holding only tensors and primitive containers,
so it always loads with ``torch.load(weights_only=True)``: a file carrying any other pickled object
(a malicious ``__reduce__`` included) is refused before anything in it runs. It holds the full
resolved config, from which the model is always rebuilt (DESIGN §4).

Layout of a run directory::

    RUN_DIR/step_00001000.pt   ...   (keep-last-K)
    RUN_DIR/latest                   text file naming the newest complete checkpoint

Crash safety: a checkpoint is written to a temporary file in the same directory, flushed, fsynced
and ``os.replace``d into place; only then is ``latest`` rewritten the same way and old checkpoints
pruned. A kill at any moment therefore leaves every named checkpoint whole and ``latest`` pointing
at one of them. Leftover temporary files are ignored and removed by the next save.

An export is one ``.safetensors`` file with the EMA weights and the config as JSON in its metadata;
loading it executes no code.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from audiodiff.atomic import TMP_PREFIX, WriteFailed, atomic_write
from audiodiff.config_migrate import migrate, model_config
from audiodiff.encoding import one_line
from audiodiff.files import check_not_inputs

CHECKPOINT_FORMAT = "audiodiff-checkpoint"
EXPORT_FORMAT = "audiodiff-export"
FORMAT_VERSION = 1
LATEST = "latest"
_STEP_FILE = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint taken after ``step`` optimiser steps."""
    return f"step_{step:08d}.pt"


def _check_primitive(obj: Any, where: str) -> None:
    """Assert the weights_only contract at save time, so a bad checkpoint is never written."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key {where}.{key!r} is a {type(key).__name__}")
            _check_primitive(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_primitive(value, f"{where}[{i}]")
    elif not isinstance(obj, (torch.Tensor, str, int, float, bool, bytes, type(None))):
        raise TypeError(
            f"checkpoint entry {where} is a {type(obj).__name__}; only tensors and primitive "
            "containers may be saved (weights_only loading)"
        )


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int, keep_last: int) -> Path:
    """Write ``state`` as ``RUN_DIR/step_XXXXXXXX.pt`` atomically, update ``latest``, prune.

    Args:
        state: tensors and primitive containers only (checked before writing). The format tag and
            version are added here.
        run_dir: the run directory (created if missing).
        step: optimiser steps taken; names the file.
        keep_last: how many step checkpoints to keep (the newest ones).

    Returns:
        Path of the written checkpoint.

    Raises:
        audiodiff.atomic.WriteFailed: the disk is full (or another file-system failure), in one
            line naming the file, the cause and the checkpoint ``latest`` still names (intact).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **state}
    _check_primitive(state, "checkpoint")
    path = run_dir / checkpoint_name(step)
    try:
        atomic_write(path, lambda f: torch.save(state, f))
        atomic_write(run_dir / LATEST, lambda f: f.write(path.name.encode("utf-8") + b"\n"))
    except WriteFailed as err:
        # Name what a resume would use: the checkpoint `latest` still points at.
        before = latest_checkpoint(run_dir)
        kept = f"the latest checkpoint, {before}, is intact" if before else "no checkpoint yet"
        raise WriteFailed(err.path, err, kept) from err
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    for tmp in run_dir.glob(f"{TMP_PREFIX}*"):
        # Left by a killed writer. Ours has been renamed already, so any other is stale; another
        # live writer cannot exist because only rank 0 of one job writes here.
        tmp.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints in ``run_dir``, oldest first."""
    found = []
    for p in Path(run_dir).iterdir() if Path(run_dir).is_dir() else []:
        m = _STEP_FILE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def model_files(source: str | Path) -> list[Path]:
    """The files a model source may be read from, without reading them: every step checkpoint
    of a run directory (any of them may be the one it resumes from), else ``source`` itself. For
    "an output never replaces an input" checks, which need no checkpoint loaded."""
    source = Path(source)
    return list_checkpoints(source) if source.is_dir() else [source]


def load_latest(
    run_dir: str | Path, map_location: Any = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from and its contents, each file read once: ``latest``'s target,
    else the newest step file that loads; None when none loads.

    ``latest`` is written after its checkpoint, so it normally names a whole file; the fallback
    covers a pointer removed or edited by hand.
    """
    run_dir = Path(run_dir)
    pointer = run_dir / LATEST
    candidates = []
    if pointer.is_file():
        # A pointer edited or damaged by hand may hold any bytes: it then names no step file.
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        if _STEP_FILE.match(name):
            candidates.append(run_dir / name)
    candidates += list(reversed(list_checkpoints(run_dir)))
    for path in candidates:
        if path.is_file():
            try:
                return path, load_checkpoint(path, map_location=map_location)
            except ValueError:
                continue
    return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The path of :func:`load_latest`'s checkpoint (None when no checkpoint loads)."""
    found = load_latest(run_dir)
    return None if found is None else found[0]


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a training checkpoint (or the latest one of a run directory) with weights_only=True.

    Args:
        path: a ``.pt`` checkpoint file, or a run directory (its latest checkpoint).
        map_location: passed to ``torch.load``.

    Returns:
        The checkpoint dict: ``config`` (resolved config dict), ``model``, ``ema``, ``optimizer``,
        ``scaler``, ``step``, ``epoch``, ``data_position``, ``rng``, ``stats``...

    Raises:
        FileNotFoundError: no such file, or a run directory without a checkpoint.
        ValueError: the file is not an audiodiff checkpoint: corrupt, truncated, a foreign format,
            or a pickle with objects other than tensors and primitive containers (never executed).
    """
    path = Path(path)
    if path.is_dir():
        found = load_latest(path, map_location=map_location)
        if found is None:
            raise FileNotFoundError(f"run directory {path} holds no loadable checkpoint")
        return found[1]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's weights-only unpickler names the first forbidden global ("Unsupported global:
        # GLOBAL io.open ..."); anything else it rejects is bytes that are not a pickle at all.
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if match is None:
            detail = re.search(r"WeightsUnpickler error: ([^\n]+)", str(err))
            raise ValueError(
                f"{path} is not a loadable checkpoint (corrupt or not a torch file): "
                f"{detail.group(1) if detail else 'its bytes do not unpickle'}"
            ) from None
        raise ValueError(
            f"{path} is not a safe audiodiff checkpoint: it references {match.group(1)}, not only "
            "tensors and primitive containers; refused without running it"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch's reader fails on foreign bytes in many ways
        # (a text file: IndexError "pop from empty list" or KeyError 101), all one user error.
        raise ValueError(
            f"{path} is not a loadable checkpoint (corrupt, truncated or not a torch file): "
            f"{type(err).__name__}: {one_line(err)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is a torch file but not an audiodiff checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {state.get('format_version')} but this "
            f"audiodiff reads version {FORMAT_VERSION}"
        )
    return state


def label_names(labels: dict[str, int]) -> list[str]:
    """Class names ordered by index, from a checkpoint's ``{name: index}`` map."""
    return [name for name, _ in sorted(labels.items(), key=lambda item: item[1])]


def _metadata_str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def export_safetensors(
    ckpt: dict[str, Any] | str | Path,
    out_path: str | Path,
    *,
    overwrite: bool = False,
    extra_metadata: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write the EMA weights of a checkpoint and its config as one ``.safetensors`` file.

    Args:
        ckpt: a loaded checkpoint dict, or a path to one (or to a run directory).
        out_path: destination file.
        overwrite: replace an existing file.
        extra_metadata: more metadata entries (non-strings are stored as JSON), e.g. a searched
            noise schedule.
        half: store floating-point weights as float16 (half the file; loading casts them back
            to the network's float32, so only the rounding of each weight to 11 significant
            bits remains).

    Returns:
        ``out_path``.

    Raises:
        FileExistsError: ``out_path`` exists and ``overwrite`` is false.
        ValueError: ``out_path`` is the checkpoint file ``ckpt`` names.
    """
    from safetensors.torch import save

    out_path = Path(out_path)
    if not isinstance(ckpt, dict):  # the source file is never the destination, even overwriting
        check_not_inputs([out_path], [ckpt, *model_files(ckpt)])
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True (--overwrite) to replace it")
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    weights = ckpt.get("ema") or ckpt["model"]
    # safetensors refuses tensors that share storage; contiguous copies are cheap at export.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = {
        "format": EXPORT_FORMAT,
        "format_version": str(FORMAT_VERSION),
        # Only what inference needs (no devices, worker counts or manifest paths).
        "config": json.dumps(model_config(migrate(ckpt["config"])[0])),
        "step": str(ckpt.get("step", 0)),
        "weights": "ema" if ckpt.get("ema") else "model",
    }
    if ckpt.get("labels"):  # class names of a label-conditional model, {name: index}
        metadata["labels"] = json.dumps(label_names(ckpt["labels"]))
    for key, value in (extra_metadata or {}).items():
        metadata[str(key)] = _metadata_str(value)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = save(tensors, metadata=metadata)
    atomic_write(out_path, lambda f: f.write(data))
    return out_path


def load_export(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """Read an export: ``(state_dict, config_dict, metadata)``; executes no code.

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a safetensors file, or one without audiodiff metadata.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"export {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    if metadata.get("format") != EXPORT_FORMAT or "config" not in metadata:
        raise ValueError(f"{path} is a safetensors file but not an audiodiff export")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(
            f"{path} has export format version {metadata.get('format_version')} but this audiodiff "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has unreadable config metadata: {err}") from None
    return tensors, config, metadata


def export_as_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """An export read back as the checkpoint :func:`export_safetensors` takes (its weights as
    ``ema``, or ``model`` when it held raw weights; config, step, labels), with the rest of its
    metadata (e.g. a searched schedule) to pass on as ``extra_metadata``: re-exporting a shipped
    model or an export (``--half``) keeps everything it held.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_export`.
    """
    tensors, config, metadata = load_export(path)
    raw = metadata.get("weights") == "model"
    ckpt: dict[str, Any] = {"config": config, "step": int(metadata.get("step", 0))}
    ckpt.update({"model": tensors, "ema": None} if raw else {"ema": tensors})
    if "labels" in metadata:
        ckpt["labels"] = {name: i for i, name in enumerate(json.loads(metadata["labels"]))}
    own = {"format", "format_version", "config", "step", "weights", "labels"}
    return ckpt, {k: v for k, v in metadata.items() if k not in own}


# --------------------------------------------------------------------------------------------------
# Training state helpers
# --------------------------------------------------------------------------------------------------


def rng_state(*generators: torch.Generator) -> dict[str, Any]:
    """Every RNG state as tensors and primitives: python, numpy, torch CPU and CUDA, and the
    given generators (in order)."""
    import random

    import numpy as np

    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": [g.get_state() for g in generators],
    }


def restore_rng(state: dict[str, Any], *generators: torch.Generator) -> None:
    """Inverse of :func:`rng_state` (CUDA states only when the device count matches)."""
    import random

    import numpy as np

    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for g, s in zip(generators, state["generators"], strict=False):
        g.set_state(s.cpu())


def params_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer's bytes, in state-dict order (equal iff identical)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
