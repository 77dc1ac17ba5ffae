"""The ``prepare`` and ``train`` commands: a published dataset layout to manifests, and a recipe
with its manifests to a trained run."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from audiodiff.cli import main, threads_option, user_errors

# --- train ----

# Files a run writes at the top of its --run-dir (besides step_*.pt and tensorboard/).
RUN_DIR_FILES = (
    "config.yaml",
    "latest",
    "metrics.jsonl",
    "data_report.json",
    ".scan_train.json",
    ".scan_val.json",
    ".lock",
)


@main.command("train")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Where config.yaml, checkpoints and logs go; an existing run resumes from its latest.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a recipe value, e.g. --set train.max_steps=1000 (repeatable).",
)
@threads_option
@user_errors
def train_command(recipe: str, run_dir: str, overrides: tuple[str, ...]) -> None:
    """Train (or resume) the experiment RECIPE.yaml in --run-dir.

    Relative manifest paths are taken from the current directory. For several GPUs or machines
    launch it with torchrun: torchrun --nproc_per_node=N -m audiodiff train RECIPE --run-dir DIR
    """
    from pathlib import Path

    from audiodiff.config_io import load_config
    from audiodiff.config_rules import validate
    from audiodiff.files import check_not_inputs, check_writable_dir
    from audiodiff.interrupt import TrainingInterrupted
    from audiodiff.train import TrainingStopped, run

    cfg = validate(load_config(recipe, overrides))
    check_writable_dir(run_dir)
    # A manifest kept in --run-dir under a name the run writes would be replaced by it. (RECIPE
    # may be the run's own config.yaml: resuming from it rewrites it on purpose.)
    written = [Path(run_dir) / name for name in RUN_DIR_FILES]
    check_not_inputs(written, [m for m in (cfg.data.train_manifest, cfg.data.val_manifest) if m])
    try:
        result = run(cfg, run_dir)
    except TrainingStopped as err:
        click.echo(f"audiodiff: training stopped: {err}", err=True)
        sys.exit(1)
    except TrainingInterrupted as err:
        # Every rank stops with the code; rank 0 (the one that wrote the checkpoint) says so.
        if err.is_main:
            again = ["audiodiff", "train", recipe, "--run-dir", run_dir]
            again += [a for o in overrides for a in ("--set", o)]
            click.echo(f"audiodiff: {err}; resume with: {shlex.join(again)}", err=True)
        sys.exit(err.exit_code)
    if result.is_main:
        click.echo(
            f"trained to step {result.step} ({result.skipped_steps} skipped); "
            f"checkpoint {result.checkpoint}"
        )


# --- prepare ----

PREPARE_LAYOUTS = ("ljspeech", "vctk", "libritts", "sc09", "maestro", "gtzan", "folder", "klettres")


@main.command()
@click.argument("layout", type=click.Choice(PREPARE_LAYOUTS))
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for train/val/test.jsonl and prepare_report.json (default: data/LAYOUT, where "
    "the recipes read their manifests).",
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
    layout: str,
    data_dir: str,
    out_dir: str | None,
    holdout: str | None,
    overwrite: bool,
    **options: Any,
) -> None:
    """Read DATA_DIR in a dataset's published layout (the first argument) and write deterministic
    manifests to --out.

    The dataset folder is only read. Missing, unlisted, unreadable, empty, silent and too-short
    files are listed in prepare_report.json; a short summary is printed here.
    """
    from audiodiff.datasets import format_summary, prepare_options
    from audiodiff.datasets import prepare as run_prepare
    from audiodiff.files import check_writable_dir

    out_dir = out_dir or f"data/{layout}"  # every recipe's manifests: data/<layout>/*.jsonl
    check_writable_dir(out_dir)  # before decoding the whole dataset
    if holdout is not None:
        options["holdout"] = tuple(s.strip() for s in holdout.split(",") if s.strip())
    report = run_prepare(layout, data_dir, out_dir, prepare_options(**options), overwrite)
    click.echo(format_summary(report))
    click.echo(f"wrote train.jsonl, val.jsonl, test.jsonl and prepare_report.json to {out_dir}")
