"""The ``evaluate`` command: objective (and optionally perceptual) scores of generated audio
against its references."""

from __future__ import annotations

from typing import Any

import click

from audiodiff.cli import fail, main, threads_option, user_errors


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
@click.option(
    "--perceptual/--no-perceptual",
    default=False,
    show_default=True,
    help="Also the predicted MOS of both sides: DistillMOS and DNSMOS P.808 (the eval extra; "
    "on one CPU thread ~1 s per pair of clips under 8 s, ~1 s per second of longer audio).",
)
@threads_option
@user_errors
def evaluate(
    ref_dir: str,
    gen_dir: str,
    json_path: str | None,
    overwrite: bool,
    profile: str,
    pesq: bool | None,
    f0: bool,
    perceptual: bool,
) -> None:
    """Score GEN_DIR's audio against REF_DIR's, pairing files by name.

    Prints one row per file and the mean: multi-resolution STFT distance, log-mel L1, mel-cepstral
    distortion, and with the eval extra PESQ (wide-band) and STOI, and with --perceptual the
    reference-free MOS predictions of each generated file and of its reference (ref_*). Length
    differences within one hop are trimmed; larger ones, unreadable files and unmatched names are
    listed, not scored.
    """
    # Before the scorers are imported.
    from audiodiff.problems import joined, missing

    bad = missing([ref_dir], kind="directory", role="reference")
    bad += missing([gen_dir], kind="directory", role="generated")
    if bad:  # both named at once
        raise FileNotFoundError(joined(bad))
    import json
    from pathlib import Path

    from audiodiff.config import mel_profile
    from audiodiff.evaluation import evaluate_dirs, format_table
    from audiodiff.files import plan_output

    cfg = mel_profile(profile)
    out = None
    if json_path:
        # Checked before scoring, so a long evaluation is not lost to a refusal at the end. A file
        # in either folder is one the pairing reads: never replaced by the report.
        inside = [p for d in (ref_dir, gen_dir) for p in _files_under(d, Path(json_path))]
        out = plan_output(json_path, overwrite=overwrite, inputs=inside)
    try:
        result = evaluate_dirs(
            ref_dir, gen_dir, mel_cfg=cfg, pesq=pesq, f0=f0, perceptual=perceptual
        )
    except ModuleNotFoundError as err:
        fail(str(err))
    click.echo(format_table(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w" if overwrite else "x", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
        click.echo(f"wrote {out}")


def _files_under(directory: str, path: Any) -> list[Any]:
    """``[path]`` when it is an audio file the pairing reads inside ``directory`` (after realpath),
    else [] (an earlier report in a scored folder is no input: it may be replaced)."""
    import os

    from audiodiff.evaluation import AUDIO_SUFFIXES

    root, target = os.path.realpath(directory), os.path.realpath(path)
    inside = os.path.isdir(root) and os.path.commonpath([root, target]) == root
    audio = os.path.splitext(path)[1].lower() in AUDIO_SUFFIXES
    return [path] if inside and audio and os.path.isfile(target) else []
