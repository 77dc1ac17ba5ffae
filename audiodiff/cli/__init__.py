"""The ``audiodiff`` command line: thin click commands over the library.

This package is the only place that imports click. Every expected failure (bad input, missing
file, an output that exists) is a ``ValueError``/``FileExistsError``/``FileNotFoundError`` in the
library; here it becomes one line on stderr and exit code 2, never a traceback.

This module holds the group :func:`main`, that error handling and the options several commands
share. The commands live in its modules by group: :mod:`~audiodiff.cli.training` (prepare, train),
:mod:`~audiodiff.cli.evaluate`, :mod:`~audiodiff.cli.synthesis` (mel, vocode, generate, demo) and
:mod:`~audiodiff.cli.models` (export, import-diffwave, search-schedule). Library imports happen
inside the commands so that ``audiodiff --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click

from audiodiff.atomic import WriteFailed  # os and uuid only: --help stays fast

F = TypeVar("F", bound=Callable[..., Any])

USER_ERRORS = (
    ValueError,
    WriteFailed,  # disk full: one line naming the file, not a traceback
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def fail(message: str) -> None:
    """Print the message on one line to stderr (its lines joined, none dropped) and exit with 2."""
    from audiodiff.encoding import one_line

    click.echo(f"audiodiff: error: {one_line(message)}", err=True)
    sys.exit(2)


def user_errors(fn: F) -> F:
    """Turn the library's expected failures into one-line errors with exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            fail(str(err))
        except KeyboardInterrupt:
            click.echo("audiodiff: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def refuse_missing(
    paths: Iterable[str],
    *,
    kind: str = "file",
    role: str = "input",
    outputs: Iterable[str] | None = None,
    also: Sequence[str] = (),
) -> None:
    """Refuse, in one line naming every one of them, input paths that are not an existing
    ``kind`` (``"file"`` or ``"directory"``) and ``outputs`` (planned from the inputs, in their
    order) that two inputs would both write: checked first, before the library (torch, librosa)
    is even imported, so a mistyped name costs a fraction of a second instead of the seconds a
    model load takes, and one run shows every such problem of the command line, with ``also``
    (the command's own option problems, found as early).

    Raises:
        FileNotFoundError: some input is missing (with every problem named).
        ValueError: only outputs collide or options are wrong.
    """
    from audiodiff import problems

    bad = problems.missing(paths, kind=kind, role=role)
    if len(bad) > problems.LIST_LIMIT:
        bad = [*bad[: problems.LIST_LIMIT], f"and {len(bad) - problems.LIST_LIMIT} more"]
    clashes = problems.collisions(outputs) if outputs is not None else []
    if bad:
        raise FileNotFoundError(problems.joined([*bad, *clashes, *also]))
    if clashes or also:
        raise ValueError(problems.joined([*clashes, *also]))


def require_plotting() -> None:
    """Refuse a picture request in one line, before any work, when matplotlib is missing."""
    from audiodiff.plot import check_plotting_available

    try:
        check_plotting_available()
    except ModuleNotFoundError as err:
        fail(str(err))


class OneLineErrors(click.Group):
    """A click group whose usage errors (missing argument, bad option value) are one line too."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("audiodiff: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as err:
            hint = f" (see '{err.ctx.command_path} --help')" if getattr(err, "ctx", None) else ""
            from audiodiff.encoding import one_line

            click.echo(f"audiodiff: error: {one_line(err.format_message())}{hint}", err=True)
            sys.exit(2 if isinstance(err, click.UsageError) else err.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="audiodiff")
def main() -> None:
    """Diffusion-based audio generation: train, sample, vocode and evaluate DiffWave models."""
    own_process_defaults()


def own_process_defaults() -> None:
    """What a process of ours sets before torch loads (the commands import it lazily).

    ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: torch's OpenMP threads otherwise spin
    for a while after each parallel region, and on cores another job uses they spin against it
    (default threads took 2x as long as ``--threads 1`` beside one other torch job; with PASSIVE
    they sleep instead: ``benchmarks/busy_machine.py``). Nothing changes once torch is loaded
    (a caller running the CLI in its own process, as the tests do): OpenMP reads it only at
    start-up, and that process's settings are its own.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def threads_option(fn: F) -> F:
    """``--threads N``: torch's CPU threads while the command runs (default: torch's choice).

    On a busy machine fewer threads than cores can be much faster (2 threads ran 10x slower than
    1 on a shared 2-core machine). N is checked (>= 1) before any work; the previous setting is
    restored afterwards, so an in-process caller keeps its own.
    """

    @wraps(fn)
    def wrapper(*args: Any, threads: int | None = None, **kwargs: Any) -> Any:
        if threads is None:
            return fn(*args, **kwargs)
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for torch (default: torch's, usually one per core).",
    )(wrapper)  # type: ignore[return-value]


# The commands register themselves on ``main`` when their modules are imported; they import the
# names above, so they come last.
from audiodiff.cli import evaluate, models, synthesis, training  # noqa: E402, F401
