"""The commands that write model files: ``export`` (safetensors or ONNX), ``import-diffwave`` and
``search-schedule`` (a schedule stored with the model)."""

from __future__ import annotations

import click

from audiodiff.cli import fail, main, threads_option, user_errors


@main.command("export")
@click.argument("checkpoint")
@click.argument("out_path")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["safetensors", "onnx"]),
    default=None,
    help="Default: from OUT_PATH's suffix (.safetensors or .onnx).",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="onnx: steps of the schedule, at least 1 (default: the model's own).",
)
@click.option(
    "--sampler",
    type=click.Choice(["diffwave-fast", "ddpm", "ddim"]),
    default=None,
    help="onnx: sampler of the schedule (default: the model's own; a one-step dpmpp-2m model "
    "exports as one ddim step, more steps need --sampler ddim).",
)
@click.option(
    "--half", is_flag=True, help="safetensors: store the weights as float16 (half the size)."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT_PATH.")
@user_errors
def export_command(
    checkpoint: str,
    out_path: str,
    fmt: str | None,
    steps: int | None,
    sampler: str | None,
    half: bool,
    overwrite: bool,
) -> None:
    """Write CHECKPOINT's EMA weights and config (with any searched schedule) as one
    .safetensors file, whose loading executes no code (CHECKPOINT: a checkpoint, run directory,
    export or shipped model name); or, with .onnx, a vocoder for onnxruntime: NAME.onnx (one
    denoiser step), NAME.prepare.onnx (the per-utterance mel work) and NAME.json (schedule and
    settings), plus for stft-domain models NAME.npz (prior map, filterbank, STFT
    window); the README's numpy loops run them."""
    from pathlib import Path

    from audiodiff.checkpoint import model_files
    from audiodiff.files import plan_output
    from audiodiff.pretrained import resolve_source

    fmt = fmt or {".safetensors": "safetensors", ".onnx": "onnx"}.get(Path(out_path).suffix)
    if fmt is None:
        raise ValueError(f"export path must end in .safetensors or .onnx, got {out_path}")
    source = resolve_source(checkpoint)  # a shipped model's name, as every other command takes
    sources = [source, *model_files(source)]  # no checkpoint loaded just to compare paths
    if fmt == "onnx":
        from audiodiff.onnx_export import export_onnx, onnx_arrays_path, onnx_paths

        if steps is not None and steps < 1:
            raise ValueError(f"--steps must be at least 1, got {steps}")
        if half:
            raise ValueError("--half is for --format safetensors")
        for path in (*onnx_paths(out_path), onnx_arrays_path(out_path)):
            plan_output(path, overwrite=overwrite, inputs=sources)
        try:
            paths = export_onnx(
                checkpoint, out_path, steps=steps, sampler=sampler, overwrite=overwrite
            )
        except ModuleNotFoundError as err:
            fail(str(err))
        click.echo(f"exported {checkpoint} -> {', '.join(str(p) for p in paths)}")
        return
    from audiodiff.checkpoint import export_as_checkpoint, export_safetensors, load_checkpoint

    if steps is not None or sampler is not None:
        raise ValueError("--steps and --sampler are for --format onnx")
    plan_output(out_path, overwrite=overwrite, inputs=sources, suffix=".safetensors")
    extra = None
    if source.is_file() and source.suffix == ".safetensors":  # an export: e.g. --half of one
        ckpt, extra = export_as_checkpoint(source)
    else:
        ckpt = load_checkpoint(source)
    path = export_safetensors(ckpt, out_path, overwrite=overwrite, half=half, extra_metadata=extra)
    click.echo(
        f"exported step {ckpt.get('step', 0)} ({'EMA' if ckpt.get('ema') else 'raw'}"
        f"{', float16' if half else ''}) weights to {path}"
    )


@main.command("import-diffwave")
@click.argument("weights")
@click.argument("out_path")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT_PATH.")
@user_errors
def import_diffwave_command(weights: str, out_path: str, overwrite: bool) -> None:
    """Convert a checkpoint of the reference implementation (lmnt-com/diffwave: its `model` state
    dict and `params`) to an audiodiff .safetensors export with the `diffwave` mel profile."""
    from audiodiff.diffwave_import import import_diffwave

    path = import_diffwave(weights, out_path, overwrite=overwrite)
    click.echo(f"imported {weights} -> {path}")


@main.command("search-schedule")
@click.argument("checkpoint")
@click.option("--steps", type=int, required=True, help="Number of sampling steps to search for.")
@click.option("--manifest", required=True, help="Validation manifest (JSONL) of real clips.")
@click.option("-o", "--out", "out_path", default=None, help="Write the model with its schedule.")
@click.option("--in-place", is_flag=True, help="Store the schedule in CHECKPOINT itself.")
@click.option("--sampler", default=None, help="Sampler to tune for (default: the model's).")
@click.option("--max-clips", type=int, default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@threads_option
@user_errors
def search_schedule_command(
    checkpoint: str,
    steps: int,
    manifest: str,
    out_path: str | None,
    in_place: bool,
    sampler: str | None,
    max_clips: int,
    seed: int,
    overwrite: bool,
) -> None:
    """Find the STEPS-step noise schedule minimising log-mel L1 + MR-STFT of copy synthesis on a
    few validation clips (coarse grid, then local refinement); print every candidate's score
    against the default schedule's, and store the winner with the model."""

    from pathlib import Path

    from audiodiff.checkpoint import latest_checkpoint, model_files
    from audiodiff.files import plan_output
    from audiodiff.input_notes import InputNotes
    from audiodiff.pretrained import resolve_source
    from audiodiff.schedule_search import load_clips_from_manifest, search_schedule
    from audiodiff.schedule_store import check_store_target, store_schedule
    from audiodiff.vocoder import Vocoder

    if (out_path is None) == (not in_place):
        raise ValueError("give exactly one of -o OUT or --in-place")
    if steps < 1 or max_clips < 1:
        raise ValueError(f"--steps and --max-clips must be at least 1, got {steps} and {max_clips}")
    target = checkpoint if in_place else out_path
    if in_place:
        # A run directory is no file to rewrite, and a shipped model belongs to the package:
        # both used to fail only after the whole search.
        source = resolve_source(checkpoint)
        if source.is_dir():
            found = latest_checkpoint(source)
            name = found.name if found is not None else "step_N.pt"
            raise ValueError(
                f"--in-place needs a checkpoint or export file, not the run directory {source}; "
                f"give {source / name} or use -o OUT"
            )
        if not Path(checkpoint).exists():
            raise ValueError(f"--in-place would rewrite the shipped model {source}; use -o OUT")
    else:
        # Everything about the output is refused before the search, not after it.
        source = resolve_source(checkpoint)
        plan_output(
            target, overwrite=overwrite, inputs=[checkpoint, *model_files(source), manifest]
        )
        check_store_target(source, target)
    vocoder = Vocoder.from_pretrained(checkpoint)
    notes = InputNotes(vocoder.sample_rate, vocoder.mel_config.f_max)
    clips = load_clips_from_manifest(
        manifest, vocoder.sample_rate, max_clips=max_clips, log=click.echo, notes=notes
    )
    if notes.note():
        click.echo(notes.note())
    result = search_schedule(
        vocoder, clips, steps=steps, seed=seed, sampler=sampler, log=click.echo
    )
    path = store_schedule(
        checkpoint, result.sigmas, target, sampler=result.sampler, overwrite=in_place or overwrite
    )
    click.echo(
        f"best {steps}-step schedule scores {result.score:.4f} vs default "
        f"{result.default_score:.4f}; stored in {path}"
    )
