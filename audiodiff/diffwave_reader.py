"""Read a checkpoint of the reference implementation lmnt-com/diffwave safely: weights and params.

A reference checkpoint is one ``torch.save`` file holding a dict: ``model`` (the network's state
dict), ``params`` (its hyper-parameters), usually ``step``, ``optimizer`` and ``scaler``. Its
learner stores ``dict(params)``, a plain dict; other writers (forks, notebooks, older scripts)
store the ``AttrDict`` object itself, which pickles as the global ``diffwave.params.AttrDict`` (or
``params.AttrDict`` when run from inside ``src/diffwave``).

Safe loading. The file is first read with ``torch.load(weights_only=True)``. Only when that refuses
an ``AttrDict`` global is it read again with a restricted unpickler whose ``find_class`` knows an
exact allow-list: the two ``AttrDict`` paths (mapped to a plain ``dict`` subclass that runs no code;
``AttrDict`` sets ``self.__dict__ = self``, so its pickled state is the object itself), the tensor
rebuild functions, ``collections.OrderedDict`` and torch dtypes; storages are resolved by torch
itself. Anything else (a ``__reduce__`` naming ``os.system``, say) is refused with a one-line
``ValueError`` before it can run. ``AttrDict`` is a dict subclass, which is why torch's own
weights-only unpickler cannot be extended to it: it only fills exact ``dict`` objects.
"""

from __future__ import annotations

import importlib
import pickle
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from audiodiff.encoding import one_line

# Where lmnt's AttrDict lives when pickled: installed package, or run from inside src/diffwave.
ATTRDICT_GLOBALS = frozenset({("diffwave.params", "AttrDict"), ("params", "AttrDict")})
# Functions torch's pickles call to rebuild tensors, and the containers their arguments use.
_TENSOR_GLOBALS = frozenset(
    {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"),
    }
)
# dtypes that tensor rebuild arguments may name (looked up by exact name, nothing imported).
_DTYPE_NAMES = frozenset(
    {
        "float16", "float32", "float64", "bfloat16", "half", "float", "double",
        "int8", "int16", "int32", "int64", "uint8", "short", "int", "long", "bool",
        "complex64", "complex128",
    }
)  # fmt: skip
_REFUSED = re.compile(r"Unsupported global: GLOBAL (\S+)")


class _ParamsDict(dict):
    """Stand-in for lmnt's ``AttrDict``: a plain dict that runs no code when unpickled."""

    def __setstate__(self, state: Any) -> None:
        # AttrDict's state is its own __dict__, i.e. itself (already filled by SETITEMS); any
        # other dict state holds attributes, which for an AttrDict are the same as its items.
        if state is self:
            return
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"AttrDict state must be a dict, got {type(state).__name__}"
            )
        self.update(state)


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ATTRDICT_GLOBALS:
            return _ParamsDict
        if (module, name) in _TENSOR_GLOBALS:
            return getattr(importlib.import_module(module), name)
        if module == "torch" and name in _DTYPE_NAMES:
            return getattr(torch, name)
        # Same wording as torch's weights-only unpickler, so one parser reports both.
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")


def _restricted_pickle_module() -> types.SimpleNamespace:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler``, ``load`` and a name."""

    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()

    return types.SimpleNamespace(
        __name__="audiodiff.diffwave_reader.restricted", Unpickler=_RestrictedUnpickler, load=load
    )


def _refused(path: Path, err: Exception) -> ValueError:
    match = _REFUSED.search(str(err))
    if match is None:
        return ValueError(
            f"{path} is not a loadable torch checkpoint: {type(err).__name__}: {one_line(err)}"
        )
    return ValueError(
        f"{path} is not a safe lmnt-com/diffwave checkpoint: it references {match.group(1)}, not "
        "only tensors, primitive containers and params.AttrDict; refused without running it"
    )


def _plain(obj: Any) -> Any:
    """Stand-ins and OrderedDicts -> plain dicts, tuples -> lists, recursively."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def read_diffwave_checkpoint(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """Safely read a lmnt-com/diffwave checkpoint.

    Args:
        path: a ``weights.pt`` / ``weights-STEP.pt`` file written by lmnt's learner (or any dict
            with ``model`` and ``params`` saved the same way).

    Returns:
        ``(state_dict, params, step)``: the state dict with ``module.`` prefixes stripped, the
        hyper-parameters as a plain dict, and the training step (0 when absent).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a torch file, a pickle referencing other globals (never executed), or a
            dict without ``model`` / ``params``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # torch's reader fails on foreign bytes in many ways (a text file: IndexError "pop from empty
    # list", KeyError 101 ...): every one is this file not being a checkpoint.
    load_errors = (Exception,)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        match = _REFUSED.search(str(err))
        if match is None or tuple(match.group(1).rsplit(".", 1)) not in ATTRDICT_GLOBALS:
            raise _refused(path, err) from None
        try:
            state = torch.load(
                path,
                map_location="cpu",
                weights_only=False,
                pickle_module=_restricted_pickle_module(),
            )
        except (pickle.UnpicklingError, TypeError, ValueError, *load_errors) as err2:
            raise _refused(path, err2) from None
    except (ValueError, *load_errors) as err:
        raise _refused(path, err) from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(
            f"{path} is a torch file but not a lmnt-com/diffwave checkpoint (no 'model')"
        )
    if not isinstance(state.get("params"), dict):
        raise ValueError(
            f"{path} has no 'params' dict; lmnt-com/diffwave's learner stores its hyper-parameters "
            "there, and the network cannot be rebuilt without them"
        )
    model = state["model"]
    if not isinstance(model, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        raise ValueError(f"{path}: 'model' must map parameter names to tensors")
    prefixed = all(k.startswith("module.") for k in model)
    weights = {(k[len("module.") :] if prefixed else k): v for k, v in model.items()}
    step = state.get("step", 0)
    return weights, _plain(state["params"]), int(step) if step is not None else 0
