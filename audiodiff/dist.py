"""Distributed context from torchrun's environment: rank, world size, device; init and teardown.

The same training command runs on one CPU, one GPU or N GPUs on M machines. ``torchrun`` sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; this module only
reads them (no ``mp.spawn``, no free-port hunting). Without them the process is rank 0 of a world
of 1 and no process group is created, so single-process code pays nothing for distributed support.

Backend: NCCL when the device is CUDA, gloo otherwise (CPU tests run two gloo ranks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist

# Long enough for a rank that waits while another scans a large dataset or writes a checkpoint to a
# slow network disk; short enough that a dead peer is reported the same hour.
DEFAULT_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes in the job.
        local_rank: rank on this machine (selects the GPU).
        device: the torch device this process trains on.
        initialized: whether a process group was created by :func:`init` (and must be torn down).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        """True on global rank 0, the only rank that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1


def env_ranks(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """Read ``(rank, world_size, local_rank)`` from torchrun's environment (defaults 0, 1, 0).

    Raises:
        ValueError: malformed or inconsistent values, naming them.
    """
    env = os.environ if environ is None else environ
    try:
        rank = int(env.get("RANK", "0"))
        world_size = int(env.get("WORLD_SIZE", "1"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ValueError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
            f"{env.get('RANK')!r}, {env.get('WORLD_SIZE')!r}, {env.get('LOCAL_RANK')!r}"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            f"inconsistent torchrun environment: RANK {rank}, WORLD_SIZE {world_size}, "
            f"LOCAL_RANK {local_rank}"
        )
    return rank, world_size, local_rank


def resolve_device(
    requested: str | None, local_rank: int = 0, *, option: str = "train.device"
) -> torch.device:
    """Map a device name (``"auto"``/None, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``) to a
    device this machine has. The one device resolver: training, ``Vocoder``, ``GenerativeModel``
    and the CLI call it before loading anything, so a bad ``--device`` is refused first.

    ``"auto"`` and ``"cuda"`` pick ``cuda:LOCAL_RANK`` when CUDA is available.

    Args:
        option: how the setting is named to the user (``train.device``, ``--device``).

    Raises:
        ValueError: not a device name, or a device (or device index) this machine lacks.
    """
    if requested is None or requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{option} {requested!r} is not a device; use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "is a CPU-only build" if torch.version.cuda is None else "finds no GPU"
            raise ValueError(
                f"{option} is {requested!r} but CUDA is not available here (torch "
                f"{torch.__version__} {why})"
            )
        if dev.index is None:
            return torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{option} is {requested!r} but this machine has {torch.cuda.device_count()} "
                "CUDA device(s)"
            )
        return dev
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option} is {requested!r} but MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{option} is {requested!r}; audiodiff runs on cpu, cuda, cuda:N or mps")
    return dev


def init(device: str = "auto", timeout: timedelta = DEFAULT_TIMEOUT) -> DistContext:
    """Create the process group when launched by torchrun with WORLD_SIZE > 1.

    Args:
        device: ``train.device``; decides the backend (NCCL for CUDA, gloo for CPU).
        timeout: collective timeout.

    Returns:
        The context; call :func:`teardown` with it when done (also on error).
    """
    rank, world_size, local_rank = env_ranks()
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size == 1:
        return DistContext(rank, world_size, local_rank, dev, initialized=False)
    if tdist.is_initialized():
        return DistContext(rank, world_size, local_rank, dev, initialized=False)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "timeout": timeout}
    if dev.type == "cuda":
        kwargs["device_id"] = dev
    tdist.init_process_group(rank=rank, world_size=world_size, **kwargs)
    return DistContext(rank, world_size, local_rank, dev, initialized=True)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group that :func:`init` created (no-op otherwise)."""
    if ctx.initialized and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        if ctx.device.type == "cuda":
            tdist.barrier(device_ids=[ctx.device.index])
        else:
            tdist.barrier()


def broadcast_object(ctx: DistContext, obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank (pickled between our own processes only)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.rank == src else None]
    tdist.broadcast_object_list(box, src=src, device=_comm_device(ctx))
    return box[0]


def all_gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    tdist.all_gather_object(out, obj)
    return out


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it (no-op in a single process)."""
    if ctx.distributed:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


def _comm_device(ctx: DistContext) -> torch.device | None:
    # NCCL moves objects through the GPU; gloo through the CPU.
    return ctx.device if ctx.device.type == "cuda" else None
