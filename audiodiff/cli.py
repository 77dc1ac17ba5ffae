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

USER_ERRORS = (
    ValueError,
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


def _threads_option(fn: F) -> F:
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


# --- train ----

# Files a run writes at the top of its --run-dir (besides step_*.pt and tensorboard/).
RUN_DIR_FILES = (
    "config.yaml",
    "latest",
    "metrics.jsonl",
    "data_report.json",
    ".scan_train.json",
    ".scan_val.json",
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
@_threads_option
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
    if result.is_main:
        click.echo(
            f"trained to step {result.step} ({result.skipped_steps} skipped); "
            f"checkpoint {result.checkpoint}"
        )


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
    from audiodiff.files import check_writable_dir

    check_writable_dir(out_dir)  # before decoding the whole dataset
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
@click.option(
    "--perceptual/--no-perceptual",
    default=False,
    show_default=True,
    help="Also the predicted MOS of both sides: DistillMOS and DNSMOS P.808 (the eval extra; "
    "on one CPU thread ~1 s per pair of clips under 8 s, ~1 s per second of longer audio).",
)
@_threads_option
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
    import json
    from pathlib import Path

    from audiodiff.config import mel_profile
    from audiodiff.files import plan_output
    from audiodiff.metrics import evaluate_dirs, format_table

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
    """``[path]`` when it is an existing file inside ``directory`` (after realpath), else []."""
    import os

    root, target = os.path.realpath(directory), os.path.realpath(path)
    inside = os.path.isdir(root) and os.path.commonpath([root, target]) == root
    return [path] if inside and os.path.isfile(target) else []


# --- mel / vocode / generate / export / import-diffwave / search-schedule ----


def _device_option(fn: F) -> F:
    return click.option(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."
    )(fn)


def _resolve_device(device: str | None) -> Any:
    """--device as a torch device this machine has; called before anything is loaded."""
    from audiodiff.dist import resolve_device

    return resolve_device(device, option="--device")


def _sampling_options(fn: F) -> F:
    fn = click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")(fn)
    fn = click.option(
        "--sampler",
        type=click.Choice(["diffwave-fast", "ddpm", "ddim", "dpmpp-2m"]),
        default=None,
        help="Sampler (default: the model's, diffwave-fast).",
    )(fn)
    return click.option(
        "--steps", type=int, default=None, help="Network evaluations (default: the model's, 6)."
    )(fn)


@main.command("mel")
@click.argument("audio", nargs=-1, required=True)
@click.option("-o", "--out-dir", required=True, help="Folder for <stem>.npz (and <stem>.png).")
@click.option("--profile", default=None, help="Mel profile name (hifigan, bigvgan-24k, ...).")
@click.option("--from", "from_model", default=None, help="Use this checkpoint's mel profile.")
@click.option("--plot", is_flag=True, help="Also write a spectrogram PNG per file.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@user_errors
def mel_command(
    audio: tuple[str, ...],
    out_dir: str,
    profile: str | None,
    from_model: str | None,
    plot: bool,
    overwrite: bool,
) -> None:
    """Write the mel spectrogram of each AUDIO file as <stem>.npz, exactly as a model with that
    profile computes it, so a TTS front end can compare its own mels: its "mel" is float32
    [n_mels, frames] (np.load(path)["mel"]), its "profile" the profile's parameters (JSON), which
    vocode checks against the model's."""
    from pathlib import Path

    from audiodiff.audio import MelSpectrogram, load_model_audio
    from audiodiff.config import mel_profile
    from audiodiff.files import plan_outputs, save_mel
    from audiodiff.plot import spectrogram_png

    if plot:
        require_plotting()
    if (profile is None) == (from_model is None):
        raise ValueError("give exactly one of --profile NAME or --from CHECKPOINT")
    if from_model is not None:
        from audiodiff.pretrained import load_model_source

        cfg = load_model_source(from_model)[1].mel
    else:
        cfg = mel_profile(profile)
    missing = [p for p in audio if not Path(p).is_file()]
    if missing:  # before the first mel is written, not after it
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{missing[0]} does not exist{more}")
    stems = [Path(p).stem for p in audio]
    names = [f"{s}.npz" for s in stems] + ([f"{s}.png" for s in stems] if plot else [])
    paths = plan_outputs(out_dir, names, overwrite=overwrite, inputs=[*audio, from_model])
    mel_fn = MelSpectrogram(cfg)
    for i, path in enumerate(audio):
        wave, _ = load_model_audio(path, cfg.sample_rate)  # level-checked at the model's rate
        mel = mel_fn(wave)[0]
        save_mel(paths[i], mel, overwrite=overwrite, profile=cfg)
        if plot:
            spectrogram_png(
                paths[len(audio) + i], [(stems[i], mel.numpy())], cfg, overwrite=overwrite
            )
        click.echo(f"{path} -> {paths[i]} ({mel.shape[0]} x {mel.shape[1]}, profile {cfg.name})")


@main.command("vocode")
@click.argument("checkpoint")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out-dir", required=True, help="Folder for <stem>.wav.")
@_sampling_options
@click.option("--batch-size", type=int, default=1, show_default=True, help="Inputs per batch.")
@click.option(
    "--method",
    type=click.Choice(["diffusion", "griffin-lim"]),
    default="diffusion",
    show_default=True,
    help="griffin-lim: the quality floor, from the same mel profile.",
)
@_device_option
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@_threads_option
@user_errors
def vocode_command(
    checkpoint: str,
    inputs: tuple[str, ...],
    out_dir: str,
    steps: int | None,
    sampler: str | None,
    seed: int,
    batch_size: int,
    method: str,
    device: str | None,
    overwrite: bool,
) -> None:
    """Turn each INPUT into <stem>.wav with the model CHECKPOINT (a checkpoint, run directory,
    export or shipped model name). INPUT is audio (copy synthesis with the model's own mel
    profile), a .npz mel from `audiodiff mel` (its recorded profile must match the model's) or a
    .npy/.pt mel [n_mels, frames] in that profile. With one --seed a file gives the same audio
    alone or in any batch; inputs of different lengths are never padded into one batch."""
    import time
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from audiodiff.audio import save_audio
    from audiodiff.files import is_mel_file, plan_outputs, read_mel_file
    from audiodiff.griffin_lim import griffin_lim
    from audiodiff.synthesis import batches_by_length, item_key, item_seed, make_sampling_spec
    from audiodiff.vocoder import Vocoder, check_mel

    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    vocoder = Vocoder.from_pretrained(checkpoint, device=_resolve_device(device))
    if method == "diffusion":  # --sampler/--steps refused before any input is read
        make_sampling_spec(vocoder.config, vocoder.schedule, sampler=sampler, steps=steps)
    paths = plan_outputs(
        out_dir,
        [f"{Path(p).stem}.wav" for p in inputs],
        overwrite=overwrite,
        inputs=[*inputs, checkpoint],
    )
    # Read and check every input first: a bad file stops the run before any work is done.
    mels = []
    for p in inputs:
        mel, recorded = read_mel_file(p) if is_mel_file(p) else (vocoder.mel_from_file(p), None)
        try:
            mels.append(check_mel(mel, vocoder.mel_config, recorded))
        except ValueError as err:
            raise ValueError(f"{p}: {err}") from None
    # Each item's noise (and Griffin-Lim phase) is keyed by its own mel, and batches hold only
    # mels of one length: a file's output does not depend on the files run with it.
    keys = [item_key(mel) for mel in mels]
    batches = batches_by_length([mel.shape[-1] for mel in mels], batch_size)
    compute_s = audio_s = 0.0
    if method == "griffin-lim":
        bar = tqdm(total=len(mels), unit="file", disable=None)
    else:  # per chunk: one long file is many chunks (6 s each for waveform models)
        total = sum(vocoder.chunk_count(mels[group[0]].shape[-1]) for group in batches)
        bar = tqdm(total=total, unit="chunk", disable=None)
    done = 0
    for group in batches:
        start = time.perf_counter()
        if method == "griffin-lim":
            audio = torch.stack(
                [
                    griffin_lim(
                        mels[i][0],
                        vocoder.mel_config,
                        generator=torch.Generator().manual_seed(item_seed(seed, keys[i])),
                    ).unsqueeze(0)
                    for i in group
                ]
            )
            bar.update(len(group))
        else:
            audio = vocoder(
                torch.cat([mels[i] for i in group]),
                steps=steps,
                sampler=sampler,
                seed=seed,
                keys=[keys[i] for i in group],
                chunk_progress=bar.update,
            )
        compute_s += time.perf_counter() - start
        for row, i in enumerate(group):
            save_audio(paths[i], audio[row], vocoder.sample_rate, overwrite=overwrite)
            audio_s += audio.shape[-1] / vocoder.sample_rate
        done += len(group)
        bar.set_postfix_str(f"{done}/{len(mels)} files")
    bar.close()
    click.echo(
        f"wrote {len(paths)} file(s) to {out_dir}: {audio_s:.2f} s of audio in {compute_s:.2f} s, "
        f"real-time factor {compute_s / max(audio_s, 1e-9):.3f} ({method}, {vocoder.device})"
    )


@main.command("generate")
@click.argument("checkpoint")
@click.option("-n", "count", type=int, default=4, show_default=True, help="Number of clips.")
@click.option("--seconds", type=float, default=1.0, show_default=True, help="Length of each.")
@click.option("-o", "--out-dir", required=True, help="Folder for the WAV files.")
@click.option("--label", default=None, help="Class index or name (label-conditional models).")
@click.option("--guidance", type=float, default=0.0, show_default=True, help="CFG weight w.")
@_sampling_options
@click.option("--vocoder", "vocoder_path", default=None, help="Vocoder for a mel-domain model.")
@click.option(
    "--save-mels", is_flag=True, help="Also write the sampled mels (.npz with their profile)."
)
@click.option("--plot", is_flag=True, help="With --save-mels: also spectrogram PNGs.")
@_device_option
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@_threads_option
@user_errors
def generate_command(
    checkpoint: str,
    count: int,
    seconds: float,
    out_dir: str,
    label: str | None,
    guidance: float,
    steps: int | None,
    sampler: str | None,
    seed: int,
    vocoder_path: str | None,
    save_mels: bool,
    plot: bool,
    device: str | None,
    overwrite: bool,
) -> None:
    """Sample COUNT clips from an unconditional or label-conditional model. A mel-domain model
    samples mels and vocodes them with --vocoder (both must share one mel profile)."""
    import time

    from tqdm import tqdm

    from audiodiff.audio import save_audio
    from audiodiff.files import plan_outputs, save_mel
    from audiodiff.generate import GenerativeModel, check_same_profile
    from audiodiff.plot import spectrogram_png
    from audiodiff.vocoder import Vocoder

    if count < 1:
        raise ValueError(f"-n must be at least 1, got {count}")
    device = _resolve_device(device)
    model = GenerativeModel.from_pretrained(checkpoint, device=device)
    vocoder = None
    if model.domain == "mel":
        if vocoder_path is None:
            raise ValueError("this model generates mels: pass --vocoder VOCODER_CHECKPOINT")
        vocoder = Vocoder.from_pretrained(vocoder_path, device=device)
        check_same_profile(model, vocoder)
    elif vocoder_path is not None:
        raise ValueError("--vocoder is only for mel-domain models; this one makes waveforms")
    if save_mels and vocoder is None:
        raise ValueError("--save-mels needs a mel-domain model")
    if plot and not save_mels:
        raise ValueError("--plot goes with --save-mels")
    if plot:
        require_plotting()
    # Every setting is refused here, before any output folder is made or any sampling starts.
    model.check_request(
        count, seconds=seconds, label=label, guidance=guidance, steps=steps, sampler=sampler
    )
    stem = "sample" if label is None else f"label-{label}"
    names = [f"{stem}_{i:03d}.wav" for i in range(count)]
    if save_mels:
        names += [f"{stem}_{i:03d}.npz" for i in range(count)]
        names += [f"{stem}_{i:03d}.png" for i in range(count)] if plot else []
    paths = plan_outputs(out_dir, names, overwrite=overwrite, inputs=[checkpoint, vocoder_path])
    start = time.perf_counter()
    total = model.chunk_count(seconds)
    total += 0 if vocoder is None else vocoder.chunk_count(model.length_for(seconds))
    bar = tqdm(total=total, unit="chunk", disable=None)  # long clips are many chunks
    out = model.sample(
        count,
        seconds=seconds,
        label=label,
        guidance=guidance,
        steps=steps,
        sampler=sampler,
        seed=seed,
        chunk_progress=bar.update,
    )
    if vocoder is not None:
        mels = out
        audio = vocoder(mels, seed=seed, chunk_progress=bar.update)
    else:
        mels, audio = None, out
    bar.close()
    elapsed = time.perf_counter() - start
    for i in range(count):
        save_audio(paths[i], audio[i], model.sample_rate, overwrite=overwrite)
        if save_mels and mels is not None:  # only with --save-mels: their paths are planned
            save_mel(paths[count + i], mels[i], overwrite=overwrite, profile=model.config.mel)
            if plot:
                spectrogram_png(
                    paths[2 * count + i],
                    [(names[i], mels[i].numpy())],
                    model.config.mel,
                    overwrite=overwrite,
                )
    audio_s = count * audio.shape[-1] / model.sample_rate
    click.echo(
        f"wrote {count} clip(s) of {audio.shape[-1] / model.sample_rate:.2f} s to {out_dir} in "
        f"{elapsed:.2f} s (real-time factor {elapsed / audio_s:.3f})"
    )


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
@click.option("--steps", type=int, default=None, help="onnx: steps of the schedule (the model's).")
@click.option(
    "--sampler",
    type=click.Choice(["diffwave-fast", "ddpm", "ddim"]),
    default=None,
    help="onnx: sampler of the schedule (default: the model's).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT_PATH.")
@user_errors
def export_command(
    checkpoint: str,
    out_path: str,
    fmt: str | None,
    steps: int | None,
    sampler: str | None,
    overwrite: bool,
) -> None:
    """Write CHECKPOINT's EMA weights and config (with any searched schedule) as one
    .safetensors file, whose loading executes no code; or, with .onnx, a waveform vocoder as
    NAME.onnx (one denoiser step), NAME.prepare.onnx (the mel upsampler) and NAME.json (the
    sampling schedule) for onnxruntime."""
    from pathlib import Path

    from audiodiff.checkpoint import latest_checkpoint
    from audiodiff.files import plan_output

    fmt = fmt or {".safetensors": "safetensors", ".onnx": "onnx"}.get(Path(out_path).suffix)
    if fmt is None:
        raise ValueError(f"export path must end in .safetensors or .onnx, got {out_path}")
    source = latest_checkpoint(checkpoint) if Path(checkpoint).is_dir() else checkpoint
    if fmt == "onnx":
        from audiodiff.onnx_export import export_onnx, onnx_paths

        if steps is not None and steps < 1:
            raise ValueError(f"--steps must be at least 1, got {steps}")
        for path in onnx_paths(out_path):
            plan_output(path, overwrite=overwrite, inputs=[checkpoint, source])
        try:
            paths = export_onnx(
                checkpoint, out_path, steps=steps, sampler=sampler, overwrite=overwrite
            )
        except ModuleNotFoundError as err:
            fail(str(err))
        click.echo(f"exported {checkpoint} -> {', '.join(str(p) for p in paths)}")
        return
    from audiodiff.checkpoint import export_safetensors, load_checkpoint

    if steps is not None or sampler is not None:
        raise ValueError("--steps and --sampler are for --format onnx")
    plan_output(out_path, overwrite=overwrite, inputs=[checkpoint, source], suffix=".safetensors")
    ckpt = load_checkpoint(checkpoint)
    path = export_safetensors(ckpt, out_path, overwrite=overwrite)
    click.echo(
        f"exported step {ckpt.get('step', 0)} ({'EMA' if ckpt.get('ema') else 'raw'}) "
        f"weights to {path}"
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
    from audiodiff.files import plan_output

    plan_output(out_path, overwrite=overwrite, inputs=[weights], suffix=".safetensors")
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
@_threads_option
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

    from audiodiff.checkpoint import latest_checkpoint
    from audiodiff.files import plan_output
    from audiodiff.pretrained import resolve_source
    from audiodiff.schedule_search import (
        check_store_target,
        load_clips_from_manifest,
        search_schedule,
        store_schedule,
    )
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
        read = latest_checkpoint(source) if source.is_dir() else source
        plan_output(target, overwrite=overwrite, inputs=[checkpoint, source, read, manifest])
        check_store_target(source, target)
    vocoder = Vocoder.from_pretrained(checkpoint)
    clips = load_clips_from_manifest(
        manifest, vocoder.sample_rate, max_clips=max_clips, log=click.echo
    )
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


@main.command("demo")
@click.option("-o", "--out-dir", default="out", show_default=True, help="Output folder.")
@click.option("--model", default="small-speech", show_default=True, help="Vocoder to use.")
@click.option("--clip", default=None, help="Speech clip (default: the shipped example).")
@click.option("--steps", type=int, default=None, help="Network evaluations (default 6).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@_threads_option
@user_errors
def demo_command(
    out_dir: str, model: str, clip: str | None, steps: int | None, seed: int, overwrite: bool
) -> None:
    """Copy-synthesise a shipped speech clip with the shipped vocoder and with Griffin-Lim; write
    the WAVs and their spectrograms, and print the evaluation table. No download, no flags."""
    from audiodiff.demo import run_demo

    run_demo(
        out_dir, model=model, clip=clip, steps=steps, seed=seed, overwrite=overwrite, log=click.echo
    )


if __name__ == "__main__":
    main()
