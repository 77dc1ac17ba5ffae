"""``audiodiff demo``: the out-of-the-box job. Copy-synthesises a shipped example clip (speech the
shipped model never trained on) with the shipped vocoder and with Griffin-Lim from the same mel,
writes the three WAVs and a spectrogram PNG (original / diffusion / Griffin-Lim, top to bottom;
with the ``plot`` extra),
and prints the evaluation table of both against the original.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from audiodiff.audio import load_model_audio, save_audio
from audiodiff.evaluation import evaluate_dirs, format_comparison
from audiodiff.files import plan_outputs
from audiodiff.griffin_lim import griffin_lim
from audiodiff.input_notes import InputNotes
from audiodiff.output_level import PeakPolicy
from audiodiff.plot import PLOT_EXTRA_HINT, check_plotting_available, spectrogram_png
from audiodiff.pretrained import SHIPPED_DIR, shipped_models
from audiodiff.synthesis import make_sampling_spec
from audiodiff.vocoder import Vocoder

DEFAULT_MODEL = "small-speech"
DEFAULT_CLIP = SHIPPED_DIR / "example.wav"
OUTPUT_NAMES = (
    "original/example.wav",
    "diffusion/example.wav",
    "griffin-lim/example.wav",
    "spectrograms.png",
)


def run_demo(
    out_dir: str | Path,
    *,
    model: str | Path = DEFAULT_MODEL,
    clip: str | Path | None = None,
    steps: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the demo; returns ``{"paths", "real_time_factor", "griffin_lim_real_time_factor",
    "diffusion", "griffin_lim"}``: the real-time factors (compute seconds per audio second) and
    the two evaluation results.

    Raises:
        FileNotFoundError: no such model or clip (the shipped ones are listed).
        FileExistsError: an output exists and ``overwrite`` is false (checked before any work).
        ValueError: an output would replace the clip or the model, an unusable output folder, or
            an impossible ``steps`` for the model's sampler (all before any synthesis).
    """
    if str(model) == DEFAULT_MODEL and DEFAULT_MODEL not in shipped_models():
        raise FileNotFoundError(
            f"the shipped model {DEFAULT_MODEL!r} is missing from {SHIPPED_DIR}; pass --model"
        )
    clip_path = Path(clip) if clip is not None else DEFAULT_CLIP
    if not clip_path.is_file():
        raise FileNotFoundError(f"clip {clip_path} does not exist")
    vocoder = Vocoder.from_pretrained(model)
    # Bad --steps is refused now, before any output exists.
    spec = make_sampling_spec(vocoder.config, vocoder.schedule, steps=steps)
    try:
        check_plotting_available()
        names = list(OUTPUT_NAMES)
    except ModuleNotFoundError:
        # The WAVs and the scores are the demo; the picture is an extra it can do without.
        log(f"matplotlib is missing, so no spectrograms.png ({PLOT_EXTRA_HINT} adds it)")
        names = list(OUTPUT_NAMES[:-1])
    # plan_outputs creates original/, diffusion/ and griffin-lim/; --clip may not be an output.
    paths = plan_outputs(out_dir, names, overwrite=overwrite, inputs=[clip_path, model])
    notes = InputNotes(vocoder.sample_rate, vocoder.mel_config.f_max)
    audio, rate = load_model_audio(clip_path, vocoder.sample_rate, notes)
    if notes.note():
        log(notes.note())
    mel = vocoder.mel(audio, rate, check=False)
    n = mel.shape[-1] * vocoder.hop_length
    original = audio[..., :n]

    seconds = n / vocoder.sample_rate
    # One untimed call of each on a few frames first: the first call of a process pays one-time
    # costs (thread pool start, allocator growth) that the timed one should not.
    warm = mel[..., : min(mel.shape[-1], 32)]
    vocoder(warm, steps=steps, seed=seed)
    griffin_lim(warm, vocoder.mel_config, n_iter=2)
    start = time.perf_counter()
    generated = vocoder(mel, steps=steps, seed=seed)[0]
    rtf = {"diffusion": (time.perf_counter() - start) / seconds}
    start = time.perf_counter()
    baseline = griffin_lim(mel, vocoder.mel_config, generator=torch.Generator().manual_seed(seed))
    rtf["griffin-lim"] = (time.perf_counter() - start) / seconds

    # Written (and so scored and plotted) as the WAVs hold them: scaled to full scale where a
    # clip would have clipped (audiodiff.output_level), which the note says.
    peaks = PeakPolicy()
    original, generated = peaks("original", original), peaks("diffusion", generated)
    baseline = peaks("griffin-lim", baseline)
    save_audio(paths[0], original, vocoder.sample_rate, overwrite=overwrite)
    save_audio(paths[1], generated, vocoder.sample_rate, overwrite=overwrite)
    save_audio(paths[2], baseline[0], vocoder.sample_rate, overwrite=overwrite)
    if peaks.note():
        log(peaks.note())
    panels = [
        ("original: the mel both vocoders are given", mel[0].numpy()),
        # Outputs are plotted whatever their level: the checks are for inputs.
        (
            f"diffusion: {model}",
            vocoder.mel(generated, vocoder.sample_rate, check=False)[0].numpy(),
        ),
        (
            "Griffin-Lim (the quality floor)",
            vocoder.mel(baseline, vocoder.sample_rate, check=False)[0].numpy(),
        ),
    ]
    if len(paths) == len(OUTPUT_NAMES):
        spectrogram_png(paths[3], panels, vocoder.mel_config, overwrite=overwrite)

    out = Path(out_dir)
    results = {
        method: evaluate_dirs(out / "original", out / method, mel_cfg=vocoder.mel_config)
        for method in ("diffusion", "griffin-lim")
    }
    gl_iters = spec.refinement.griffin_lim_iters
    extra = f" + {gl_iters} Griffin-Lim iterations" if gl_iters else ""
    log(
        f"diffusion: {model}, {spec.sampler} {spec.steps} network step"
        f"{'' if spec.steps == 1 else 's'}{extra}; griffin-lim: 64 iterations; on {vocoder.device}"
    )
    log(format_comparison(results, rtf))
    log(f"wrote {', '.join(str(p) for p in paths)}")
    return {
        "paths": [str(p) for p in paths],
        "real_time_factor": rtf["diffusion"],
        "griffin_lim_real_time_factor": rtf["griffin-lim"],
        "diffusion": results["diffusion"],
        "griffin_lim": results["griffin-lim"],
    }
