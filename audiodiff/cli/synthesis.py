"""The commands that make audio or mels: ``mel``, ``vocode``, ``generate`` and ``demo``, and the
device and sampling options they share."""

from __future__ import annotations

from typing import Any

import click

from audiodiff.cli import F, main, refuse_missing, require_plotting, threads_option, user_errors
from audiodiff.config import mel_profile_names


def _device_option(fn: F) -> F:
    return click.option(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."
    )(fn)


def _resolve_device(device: str | None) -> Any:
    """--device as a torch device this machine has; called before anything is loaded."""
    from audiodiff.dist import resolve_device

    return resolve_device(device, option="--device")


# Help texts name no model's own settings: one command serves models with different defaults
# (`generate --help` once quoted the shipped vocoder's, a model it cannot run). Each model's
# defaults are in its card (audiodiff/pretrained_models/MODEL.md) and its config.
STEPS_HELP = (
    "Network evaluations (default: the model's own; diffwave-fast takes 6 only, ddim and "
    "dpmpp-2m any count)."
)


def _sampling_options(fn: F) -> F:
    fn = click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")(fn)
    fn = click.option(
        "--sampler",
        type=click.Choice(["diffwave-fast", "ddpm", "ddim", "dpmpp-2m"]),
        default=None,
        help="Sampler (default: the model's own).",
    )(fn)
    return click.option("--steps", type=click.IntRange(min=1), default=None, help=STEPS_HELP)(fn)


@main.command("mel")
@click.argument("audio", nargs=-1, required=True)
@click.option("-o", "--out-dir", required=True, help="Folder for <stem>.npz (and <stem>.png).")
@click.option(
    "--profile",
    default=None,
    help="Mel profile name: " + ", ".join(mel_profile_names()) + " (default: hifigan, the profile "
    "of every shipped model; or --from).",
)
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

    # Before the first mel is written, and before any import; every problem named at once.
    refuse_missing(audio, outputs=[str(Path(out_dir) / f"{Path(p).stem}.npz") for p in audio])

    from audiodiff.audio import load_model_audio
    from audiodiff.config import mel_profile
    from audiodiff.files import make_output_dirs, plan_outputs, save_mel
    from audiodiff.input_notes import InputNotes
    from audiodiff.mel import MelSpectrogram
    from audiodiff.plot import spectrogram_png

    if plot:
        require_plotting()
    if profile is not None and from_model is not None:
        raise ValueError("give one of --profile NAME or --from CHECKPOINT, not both")
    if from_model is not None:
        from audiodiff.pretrained import load_model_source

        cfg = load_model_source(from_model)[1].mel
    else:
        cfg = mel_profile(profile or "hifigan")
    stems = [Path(p).stem for p in audio]
    names = [f"{s}.npz" for s in stems] + ([f"{s}.png" for s in stems] if plot else [])
    paths = plan_outputs(
        out_dir, names, overwrite=overwrite, inputs=[*audio, from_model], create=False
    )
    mel_fn = MelSpectrogram(cfg)
    # Every input is read and checked before the first file is written (mels are small).
    mels, notes = [], InputNotes(cfg.sample_rate, cfg.f_max)
    for path in audio:
        wave, _ = load_model_audio(path, cfg.sample_rate, notes)  # level-checked at this rate
        try:
            mels.append(mel_fn(wave)[0])
        except ValueError as err:  # e.g. shorter than one analysis window
            raise ValueError(f"{path}: {err}") from None
    make_output_dirs(paths)
    if notes.note():
        click.echo(f"audiodiff: {notes.note()}", err=True)
    for i, (path, mel) in enumerate(zip(audio, mels, strict=True)):
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
@click.option(
    "--mel-match-iters",
    type=click.IntRange(min=0),
    default=None,
    help="stft models: magnitude updates towards the mel (default: the model's own).",
)
@click.option(
    "--griffin-lim-iters",
    type=click.IntRange(min=0),
    default=None,
    help="stft models: Griffin-Lim iterations from the network's phase (default: the model's own).",
)
@click.option(
    "--magnitude-blend",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="stft models: share of the network's magnitude vs Griffin-Lim's estimate, 0..1 "
    "(default: the model's own). 0, 0 and 1: the raw network output.",
)
@_device_option
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@threads_option
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
    mel_match_iters: int | None,
    griffin_lim_iters: int | None,
    magnitude_blend: float | None,
    device: str | None,
    overwrite: bool,
) -> None:
    """Turn each INPUT into <stem>.wav with the model CHECKPOINT (a checkpoint, run directory,
    export or shipped model name). INPUT is audio (copy synthesis with the model's own mel
    profile), a .npz mel from `audiodiff mel` (its recorded profile must match the model's) or a
    .npy/.pt mel [n_mels, frames] in that profile. With one --seed a file gives the same audio
    alone or in any batch; inputs of different lengths are never padded into one batch."""
    from pathlib import Path

    refine = {
        "mel_match_iters": mel_match_iters,
        "griffin_lim_iters": griffin_lim_iters,
        "magnitude_blend": magnitude_blend,
    }
    wrong = [f"--batch-size must be at least 1, got {batch_size}"] if batch_size < 1 else []
    if method == "griffin-lim" and any(v is not None for v in (steps, sampler, *refine.values())):
        wrong.append(
            "--steps, --sampler, --mel-match-iters, --griffin-lim-iters and --magnitude-blend "
            "are for --method diffusion, not griffin-lim"
        )
    # Mistyped names, colliding outputs and those options, all named at once, before any load.
    outputs = [str(Path(out_dir) / f"{Path(p).stem}.wav") for p in inputs]
    refuse_missing(inputs, outputs=outputs, also=wrong)
    import time

    import torch
    from tqdm import tqdm

    from audiodiff.audio import save_audio
    from audiodiff.files import is_mel_file, make_output_dirs, plan_outputs, read_mel_file
    from audiodiff.griffin_lim import griffin_lim
    from audiodiff.input_notes import InputNotes
    from audiodiff.output_level import PeakPolicy
    from audiodiff.seeds import item_key, item_seed
    from audiodiff.synthesis import batches_by_length, make_sampling_spec
    from audiodiff.vocoder import Vocoder, check_mel

    vocoder = Vocoder.from_pretrained(checkpoint, device=_resolve_device(device))
    if method == "diffusion":  # bad sampling options refused before any input is read
        make_sampling_spec(vocoder.config, vocoder.schedule, sampler=sampler, steps=steps, **refine)
    paths = plan_outputs(
        out_dir,
        [f"{Path(p).stem}.wav" for p in inputs],
        overwrite=overwrite,
        inputs=[*inputs, checkpoint],
        create=False,
    )
    # Read and check every input first: a bad file stops the run before any work is done.
    mels, notes = [], InputNotes(vocoder.sample_rate, vocoder.mel_config.f_max)
    for p in inputs:
        is_mel = is_mel_file(p)
        mel, recorded = read_mel_file(p) if is_mel else (vocoder.mel_from_file(p, notes), None)
        try:
            mels.append(check_mel(mel, vocoder.mel_config, recorded))
        except ValueError as err:
            raise ValueError(f"{p}: {err}") from None
    make_output_dirs(paths)  # every input passed: only now is anything created
    if notes.note():
        click.echo(f"audiodiff: {notes.note()}", err=True)
    # Each item's noise (and Griffin-Lim phase) is keyed by its own mel, and batches hold only
    # mels of one length: a file's output does not depend on the files run with it.
    keys = [item_key(mel[0]) for mel in mels]  # a row, as Vocoder.__call__ keys it
    batches = batches_by_length([mel.shape[-1] for mel in mels], batch_size)
    compute_s = audio_s = 0.0
    peaks = PeakPolicy()  # never a silent clip (audiodiff.output_level)
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
                **refine,
            )
        compute_s += time.perf_counter() - start
        for row, i in enumerate(group):
            out = peaks(paths[i].name, audio[row])
            save_audio(paths[i], out, vocoder.sample_rate, overwrite=overwrite)
            audio_s += audio.shape[-1] / vocoder.sample_rate
        done += len(group)
        bar.set_postfix_str(f"{done}/{len(mels)} files")
    bar.close()
    if peaks.note():
        click.echo(f"audiodiff: {peaks.note()}", err=True)
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
@threads_option
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
    from audiodiff.output_level import PeakPolicy
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
    peaks = PeakPolicy()  # never a silent clip (audiodiff.output_level)
    for i in range(count):
        save_audio(paths[i], peaks(paths[i].name, audio[i]), model.sample_rate, overwrite=overwrite)
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
    if peaks.note():
        click.echo(f"audiodiff: {peaks.note()}", err=True)
    click.echo(
        f"wrote {count} clip(s) of {audio.shape[-1] / model.sample_rate:.2f} s to {out_dir} in "
        f"{elapsed:.2f} s (real-time factor {elapsed / audio_s:.3f})"
    )


@main.command("demo")
@click.option("-o", "--out-dir", default="out", show_default=True, help="Output folder.")
@click.option("--model", default="small-speech", show_default=True, help="Vocoder to use.")
@click.option("--clip", default=None, help="Speech clip (default: the shipped example).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help=STEPS_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@threads_option
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
