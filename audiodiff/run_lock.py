"""One trainer per run directory: an OS-level lock on ``RUN_DIR/.lock``.

Two trainers in one directory (a resubmitted SLURM job, a re-run tmux line) would overwrite and
prune each other's checkpoints and log every metric twice. :func:`lock_run_dir` takes an
exclusive lock on ``RUN_DIR/.lock`` and writes the holder (PID, host, start time) into it; a
second process is refused in one line naming that holder.

Why ``fcntl.lockf`` (a POSIX record lock) and not ``flock`` or a PID file: the kernel releases it
when the holding process dies, however it dies (SIGKILL, OOM), so a killed run never blocks its
own resume and there is no stale file to judge; and unlike ``flock`` it is not inherited by the
DataLoader workers forked from the trainer, which outlive a SIGKILLed parent by seconds and would
hold the directory for that long. It also works on NFS with a lock daemon, as checkpoint writes do.
Its one trap, that closing *any* descriptor of the file in the holding process drops the lock, is
why the holder never opens the file again (only a refused process reads it). A POSIX lock never
conflicts with its own process, so a program that builds a second :class:`audiodiff.train.Trainer`
on a directory (a notebook re-running a cell) is not refused by itself. ``filelock`` was
considered: it uses ``flock`` (inherited by forked workers) and reports no holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunDirBusy(ValueError):
    """Another live process holds the run directory; the message names it."""


class RunLock:
    """A held lock on a run directory; :meth:`release` (or the process's end) lets it go."""

    def __init__(self, path: Path, fd: int | None, created: bool = False) -> None:
        self.path, self.fd = path, fd
        self.created = created  # the lock file did not exist before this lock

    def __del__(self) -> None:
        self.release()

    def release(self, *, undo: bool = False) -> None:
        """Drop the lock (idempotent). The lock file stays, unless ``undo`` and this lock created
        it (a refused directory keeps nothing of ours): removing a lock file in use would let a
        process that opened it before the removal lock a file nobody else sees."""
        if undo and self.created and self.fd is not None:
            self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_run_dir(run_dir: str | Path) -> RunLock:
    """Hold ``run_dir`` for this process (creating the directory), or refuse.

    Returns:
        The held :class:`RunLock`; keep it for as long as the run writes to ``run_dir``.

    Raises:
        RunDirBusy: another live process holds it: ``"run dir DIR is in use by PID 123 on host
            since 2026-12-06 03:14:15 UTC; ..."``.
        ValueError: ``run_dir`` exists and is not a directory.
    """
    import fcntl

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run dir {run_dir} exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)  # this process holds no lock on the file, so closing costs nothing
        raise RunDirBusy(
            f"run dir {run_dir} is in use by {holder(path)}; wait for that run to end or stop "
            "it, or choose another --run-dir"
        ) from None
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
    os.ftruncate(fd, 0)
    os.pwrite(fd, (info + "\n").encode("utf-8"), 0)
    return RunLock(path, fd, created)


def holder(path: Path) -> str:
    """``"PID 123 on HOST since TIME"`` from a lock file, or a phrase saying it is unknown (the
    holder may not have written it yet)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"PID {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its PID is not recorded yet)"
