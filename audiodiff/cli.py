"""The ``audiodiff`` command line: thin click commands over the library.

This is the only module that imports click. Every expected failure (bad input, missing file, an
output that exists) is a ``ValueError``/``FileExistsError``/``FileNotFoundError`` in the library;
here it becomes one line on stderr and exit code 2, never a traceback.

Each command lives in its own section below; library imports happen inside the command so that
``audiodiff --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError, PermissionError)


def fail(message: str) -> None:
    """Print one line to stderr and exit with code 2."""
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "error"
    click.echo(f"audiodiff: error: {first_line}", err=True)
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="audiodiff")
def main() -> None:
    """Diffusion-based audio generation: train, sample, vocode and evaluate DiffWave models."""


# --- train ----

# --- prepare ----

# --- evaluate ----

# --- mel / vocode / generate / export / import-diffwave / search-schedule ----


if __name__ == "__main__":
    main()
