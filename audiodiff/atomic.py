"""The one atomic file writer: every file the package writes goes through :func:`atomic_write`.

A temp file beside the target, flushed and fsynced, then ``os.replace``d over the target, then the
folder fsynced: a kill at any moment leaves the old file or the new one, never a mix, and a reader
never sees half a file (checkpoints, exports, manifests, audio, pictures, searched schedules).
The temp file is created with ``open`` (the umask's mode), not ``mkstemp``, whose 0600 mode would
survive the rename and make outputs owner-only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# Temp files start with this, so a run directory can sweep the leftovers of a killed writer.
TMP_PREFIX = ".tmp-"


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class WriteFailed(OSError):
    """Writing a file failed in the file system (disk full, quota, I/O error). Its message is
    one line naming the file and the cause, and what was kept (by default: any earlier version of
    the file, which is only replaced once the new one is complete)."""

    def __init__(self, path: Path, err: OSError, kept: str | None = None) -> None:
        cause = err.cause if isinstance(err, WriteFailed) else err.strerror
        self.path, self.cause = Path(path), cause or str(err) or type(err).__name__
        self.kept = kept if kept is not None else f"any earlier {self.path.name} is unchanged"
        super().__init__(err.errno, f"could not write {self.path}: {self.cause}; {self.kept}")

    def __str__(self) -> str:
        return str(self.strerror)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(binary file object)`` atomically (module docstring).

    Text is written as ``text.encode("utf-8")``; libraries that take a file object (soundfile
    with its ``format``, matplotlib's ``savefig`` with ``format``, ``torch.save``, ``np.save``)
    write into it directly. Two writers of one path, even in one process, use distinct temp
    files; the last rename wins.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        WriteFailed: a plain ``OSError`` of the file system (disk full, quota, I/O), as one line
            naming ``path`` and the cause.
        Whatever else ``write`` or the file system raises; the temp file is removed first.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        # A full disk, a quota, a read-only or failing filesystem: plain OSErrors whose text
        # names the temp file (or nothing). Its subclasses (missing folder, permission) already
        # read as the user's to fix and keep their type.
        if type(err) is OSError:
            raise WriteFailed(path, err) from err
        raise
    _fsync_dir(path.parent)
    return path
