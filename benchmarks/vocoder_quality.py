"""Copy-synthesis quality of a vocoder against Griffin-Lim, at measured compute (DESIGN.md §9).

For every clip of a folder of speech: compute its mel in the model's profile, resynthesise it with
Griffin-Lim (always) and with the given checkpoint (``--checkpoint``, optional), write the three
versions under ``--out`` (``reference/``, ``griffin-lim/``, ``<checkpoint name>/``), score each
method with :func:`audiodiff.evaluation.evaluate_dirs`, and print one table: mean metrics per method
plus its real-time factor (compute seconds per second of audio, synthesis only: mel analysis and
file I/O are excluded, on ``--threads`` CPU threads or the vocoder's device).

Usage::

    python benchmarks/vocoder_quality.py SPEECH_DIR --out bench/ [--checkpoint CKPT ...]
        [--perceptual] [--limit 20]

``--checkpoint`` may be repeated (e.g. the waveform and the stft model, scored in the same run
against the same Griffin-Lim); every model must use the same mel profile. ``--perceptual`` adds
DistillMOS and DNSMOS P.808 (:mod:`audiodiff.perceptual`) of each method and of the references.

The clips should be ones the model never trained on; the script cannot check that.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from audiodiff.audio import load_audio, save_audio
from audiodiff.config import MelConfig, mel_profile
from audiodiff.evaluation import METRIC_ORDER, audio_files, evaluate_dirs
from audiodiff.griffin_lim import griffin_lim
from audiodiff.mel import MelSpectrogram
from audiodiff.metrics import eval_extra_available, real_time_factor
from audiodiff.perceptual import PERCEPTUAL_KEYS


def _synthesize_all(
    mels: dict[str, torch.Tensor],
    out_dir: Path,
    sample_rate: int,
    synth: Any,
    device: torch.device,
    overwrite: bool,
) -> float:
    """Run ``synth(mel [1, n_mels, frames]) -> audio [T]`` on every mel and save the results.

    Returns:
        Synthesis seconds (mel analysis and file writes excluded).
    """
    compute_s = 0.0
    for name, mel in mels.items():
        mel = mel.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = synth(mel)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        compute_s += time.perf_counter() - start
        path = out_dir / f"{name}.wav"
        save_audio(path, out.cpu(), sample_rate, subtype="FLOAT", overwrite=overwrite)
    return compute_s


def run(
    data_dir: Path,
    out_dir: Path,
    *,
    checkpoints: list[str] | None = None,
    profile: str = "hifigan",
    steps: int | None = None,
    gl_iters: int = 64,
    limit: int = 0,
    seed: int = 0,
    pesq: bool | None = None,
    perceptual: bool = False,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Copy-synthesise ``data_dir`` with each method and evaluate; return one row per method.

    Raises:
        ValueError: no audio under ``data_dir`` or an unusable checkpoint.
        FileExistsError: outputs exist under ``out_dir`` and ``overwrite`` is false.
    """
    dev = torch.device(device)
    cfg: MelConfig = mel_profile(profile)
    methods: dict[str, Any] = {}
    model_steps: dict[str, int] = {}  # each model's steps: ``steps``, else its own sample.steps
    for checkpoint in checkpoints or []:
        from audiodiff.vocoder import Vocoder  # only needed with a model

        voc = Vocoder.from_pretrained(checkpoint, device=dev)
        if methods and voc.mel_config != cfg:
            raise ValueError(
                f"{checkpoint} uses mel profile {voc.mel_config.name!r} but the first model "
                f"uses {cfg.name!r}: compare models of one profile per run"
            )
        cfg = voc.mel_config  # the model's own profile decides the mels of every method
        # Clamped to full scale as the trainer's evaluation does: PESQ refuses samples beyond it.
        model_steps[Path(checkpoint).stem] = steps or voc.config.sample.steps
        methods[Path(checkpoint).stem] = lambda mel, voc=voc: voc(mel, steps=steps, seed=seed)[
            0, 0
        ].clamp(-1, 1)
    generator = torch.Generator().manual_seed(seed)
    methods["griffin-lim"] = lambda mel: griffin_lim(
        mel, cfg, n_iter=gl_iters, generator=generator
    )[0]

    files = audio_files(data_dir, "data")
    names = sorted(files)[: limit or None]
    if not names:
        raise ValueError(f"no audio files under {data_dir}")
    sr = cfg.sample_rate
    mel_fn = MelSpectrogram(cfg)
    mels, audio_s = {}, 0.0
    for name in names:
        audio = load_audio(files[name], sr)[0]
        audio_s += audio.shape[-1] / sr
        # References are written at the profile's rate, so the folder is a listening set too.
        path = out_dir / "reference" / f"{name}.wav"
        save_audio(path, audio, sr, subtype="FLOAT", overwrite=overwrite)
        mels[name] = mel_fn(audio)

    rows = []
    ref_mos: dict[str, dict[str, float]] = {}  # each reference's MOS, scored once for all methods
    for method, synth in methods.items():
        with torch.inference_mode():
            compute_s = _synthesize_all(mels, out_dir / method, sr, synth, dev, overwrite)
        # Only this run's names: files left in --out by an earlier run must not be scored.
        scores = evaluate_dirs(
            out_dir / "reference",
            out_dir / method,
            mel_cfg=cfg,
            pesq=pesq,
            perceptual=perceptual,
            names=names,
            ref_mos=ref_mos,
        )
        row = {"method": method, "files": scores["total"]["files"]}
        row["rtf"] = real_time_factor(compute_s, audio_s)
        row.update({k: scores["total"][k] for k in scores["metrics"]})
        row["errors"] = scores["errors"]
        rows.append(row)
    return {
        "profile": cfg.name,
        "audio_s": audio_s,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "steps": model_steps,
        "gl_iters": gl_iters,
        "rows": rows,
    }


def format_rows(result: dict[str, Any]) -> str:
    """One table: a row per method, mean metrics and real-time factor."""
    order = (*METRIC_ORDER, *(f"ref_{k}" for k in PERCEPTUAL_KEYS))
    keys = ["files", "rtf", *(k for k in order if k in result["rows"][0])]
    table = [["method", *keys]]
    for row in result["rows"]:
        cells = [row["method"]]
        for key in keys:
            value = row.get(key)
            cells.append("-" if value is None else str(value) if key == "files" else f"{value:.4f}")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(keys) + 1)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        f"profile {result['profile']}, {result['audio_s']:.1f} s of audio, "
        f"device {result['device']}, {result['threads']} CPU threads, "
        f"model steps {', '.join(f'{k} {v}' for k, v in result['steps'].items()) or '-'}, "
        f"Griffin-Lim iterations {result['gl_iters']}; rtf = synthesis seconds per audio second"
    )
    for row in result["rows"]:
        lines += [f"{row['method']}: not scored: {e['name']}: {e['error']}" for e in row["errors"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="folder of held-out speech")
    parser.add_argument("--out", type=Path, default=Path("bench-vocoder-quality"))
    parser.add_argument(
        "--checkpoint",
        action="append",
        help="checkpoint, run dir, export or shipped model name (repeatable)",
    )
    parser.add_argument("--profile", default="hifigan", help="mel profile without --checkpoint")
    parser.add_argument(
        "--steps", type=int, default=None, help="model sampling steps (default: each model's own)"
    )
    parser.add_argument("--gl-iters", type=int, default=64, help="Griffin-Lim iterations")
    parser.add_argument("--limit", type=int, default=0, help="first N clips only (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (DESIGN §9: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both methods run there)")
    parser.add_argument("--pesq", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--perceptual", action="store_true", help="DistillMOS and DNSMOS P.808 (eval extra)"
    )
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace files under --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.pesq is None and not eval_extra_available():
        print("note: PESQ/STOI skipped (pip install 'audiodiff[eval]')", file=sys.stderr)
    try:
        result = run(
            args.data_dir,
            args.out,
            checkpoints=args.checkpoint,
            profile=args.profile,
            steps=args.steps,
            gl_iters=args.gl_iters,
            limit=args.limit,
            seed=args.seed,
            pesq=args.pesq,
            perceptual=args.perceptual,
            device=args.device,
            overwrite=args.overwrite,
        )
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError) as err:
        print(f"vocoder_quality: error: {err}", file=sys.stderr)
        return 2
    print(format_rows(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
