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

PREPARE_LAYOUTS = ("ljspeech", "vctk", "libritts", "sc09", "maestro", "gtzan", "folder", "klettres")


@main.command()
@click.argument("layout", metavar="RECIPE", type=click.Choice(PREPARE_LAYOUTS))
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for train/val/test.jsonl and prepare_report.json.",
)
@click.option("--mic", type=click.Choice(["mic1", "mic2"]), default=None, help="VCTK microphone.")
@click.option(
    "--val-fraction",
    type=float,
    default=None,
    help="Share of clips for val (layouts without an official split).",
)
@click.option(
    "--test-fraction", type=float, default=None, help="Share of clips for test (ljspeech, folder)."
)
@click.option("--seed", type=int, default=None, help="Seed of the ranked-hash split (default 0).")
@click.option(
    "--holdout", default=None, help="Comma-separated test speakers (vctk) or languages (klettres)."
)
@click.option(
    "--label-from-folder",
    is_flag=True,
    default=None,
    help="folder: label each file by its parent folder's name.",
)
@click.option(
    "--min-duration-s", type=float, default=None, help="Skip shorter files (default 0.1)."
)
@click.option(
    "--silence-threshold",
    type=float,
    default=None,
    help="Skip files whose peak is below this (default 1e-4).",
)
@click.option(
    "--check-audio",
    type=click.Choice(["full", "header"]),
    default=None,
    help="full: decode every file (default); header: trust headers, no silence check.",
)
@click.option("--workers", type=int, default=None, help="Decoding processes (default 0: inline).")
@click.option("--overwrite", is_flag=True, help="Replace manifests already in --out.")
@user_errors
def prepare(
    layout: str, data_dir: str, out_dir: str, holdout: str | None, overwrite: bool, **options: Any
) -> None:
    """Read DATA_DIR in RECIPE's published layout and write deterministic manifests to --out.

    The dataset folder is only read. Missing, unlisted, unreadable, empty, silent and too-short
    files are listed in prepare_report.json; a short summary is printed here.
    """
    from audiodiff.datasets import format_summary, prepare_options
    from audiodiff.datasets import prepare as run_prepare

    if holdout is not None:
        options["holdout"] = tuple(s.strip() for s in holdout.split(",") if s.strip())
    report = run_prepare(layout, data_dir, out_dir, prepare_options(**options), overwrite)
    click.echo(format_summary(report))
    click.echo(f"wrote train.jsonl, val.jsonl, test.jsonl and prepare_report.json to {out_dir}")


# --- evaluate ----


@main.command()
@click.argument("ref_dir")
@click.argument("gen_dir")
@click.option("--json", "json_path", metavar="OUT", help="Also write the full result as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file.")
@click.option(
    "--profile",
    default="hifigan",
    show_default=True,
    help="Mel profile of the log-mel L1; its sample rate is the one both sides are scored at.",
)
@click.option(
    "--pesq/--no-pesq",
    default=None,
    help="Wide-band PESQ and STOI (the eval extra). Default: when installed.",
)
@click.option("--f0", is_flag=True, help="Also F0 RMSE and voiced/unvoiced error (pYIN; slow).")
@user_errors
def evaluate(
    ref_dir: str,
    gen_dir: str,
    json_path: str | None,
    overwrite: bool,
    profile: str,
    pesq: bool | None,
    f0: bool,
) -> None:
    """Score GEN_DIR's audio against REF_DIR's, pairing files by name.

    Prints one row per file and the mean: multi-resolution STFT distance, log-mel L1, mel-cepstral
    distortion, and with the eval extra PESQ (wide-band) and STOI. Length differences within one
    hop are trimmed; larger ones, unreadable files and unmatched names are listed, not scored.
    """
    import json
    from pathlib import Path

    from audiodiff.config import mel_profile
    from audiodiff.metrics import evaluate_dirs, format_table

    cfg = mel_profile(profile)
    out = Path(json_path) if json_path else None
    # Checked before scoring too, so a long evaluation is not lost to a refusal at the end.
    if out is not None and out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    try:
        result = evaluate_dirs(ref_dir, gen_dir, mel_cfg=cfg, pesq=pesq, f0=f0)
    except ModuleNotFoundError as err:
        fail(str(err))
    click.echo(format_table(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w" if overwrite else "x") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
        click.echo(f"wrote {out}")


# --- mel / vocode / generate / export / import-diffwave / search-schedule ----


if __name__ == "__main__":
    main()
