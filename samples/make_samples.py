"""Regenerate everything in samples/ (nothing there is hand-edited) and samples/SAMPLES.md.

For each held-out speech clip (never in the shipped model's training data): the original at the
model's rate, copy synthesis with the shipped `small-speech` vocoder (stft domain) and with the
earlier waveform vocoder `small-speech-waveform`, and Griffin-Lim from the same mel, each made by
the exact `audiodiff` command recorded in SAMPLES.md, then scored with `audiodiff evaluate`
(with ``--perceptual`` when the ``eval`` extra is installed). Run from the repository root:

    python samples/make_samples.py

Needs Debian's klettres-data and alsa-utils (the held-out clips), see DATA-SOURCES in the note.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from audiodiff.audio import load_audio, save_audio
from audiodiff.perceptual import perceptual_available
from audiodiff.pretrained import resolve_source

ROOT = Path(__file__).resolve().parent
MODEL = "small-speech"
WAVEFORM_MODEL = "small-speech-waveform"
# Held out from training: the alsa-utils voice (not in klettres at all) and klettres' test
# languages (cs, nl), which `audiodiff prepare klettres` never puts in train or val.
CLIPS = {
    "alsa_front_center": "/usr/share/sounds/alsa/Front_Center.wav",
    "alsa_rear_right": "/usr/share/sounds/alsa/Rear_Right.wav",
    "klettres_nl_aap": "/usr/share/klettres/nl/syllab/ad-2.ogg",
    "klettres_cs_letter": "/usr/share/klettres/cs/alpha/a-0.ogg",
}
LICENCES = {"alsa": "GPL-2 (Debian alsa-utils)", "klettres": "GPL-2+ (Debian klettres-data)"}


def run(cmd: list[str]) -> str:
    print("$", shlex.join(cmd), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main() -> None:
    if Path.cwd() != ROOT.parent:
        sys.exit("run from the repository root: python samples/make_samples.py")
    model_path = resolve_source(MODEL)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
    originals, rows = ROOT / "original", []
    for name, src in CLIPS.items():
        if not Path(src).is_file():
            sys.exit(f"missing {src}: apt-get install klettres-data alsa-utils")
        audio, rate = load_audio(src, 22050)
        save_audio(originals / f"{name}.wav", audio, rate, overwrite=True)
    # Paths relative to the repository root, so the recorded commands run anywhere.
    inputs = [f"samples/original/{n}.wav" for n in CLIPS]
    commands = {
        "small-speech": ["audiodiff", "vocode", MODEL, *inputs, "-o", "samples/small-speech",
                         "--seed", "0", "--overwrite"],
        "small-speech-waveform": ["audiodiff", "vocode", WAVEFORM_MODEL, *inputs, "-o",
                                  "samples/small-speech-waveform", "--seed", "0", "--overwrite"],
        "griffin-lim": ["audiodiff", "vocode", MODEL, *inputs, "-o", "samples/griffin-lim",
                        "--method", "griffin-lim", "--overwrite"],
    }  # fmt: skip
    scores = {}
    perceptual = ["--perceptual"] if perceptual_available() else []
    for method, cmd in commands.items():
        rows.append((method, shlex.join(cmd), run(cmd).strip().splitlines()[-1]))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "scores.json"
            run(
                [
                    "audiodiff",
                    "evaluate",
                    "samples/original",
                    f"samples/{method}",
                    "--json",
                    str(out),
                    *perceptual,
                ]
            )
            scores[method] = json.loads(out.read_text())
    lines = [
        "# Samples",
        "",
        "Made by `python samples/make_samples.py` (do not edit by hand). Every clip is speech the",
        f"shipped model never trained on. Model `{MODEL}` = `{model_path.name}`, sha256 "
        f"`{digest}...`.",
        "",
        "| folder | what |",
        "|---|---|",
        "| `original/` | the held-out clip, resampled to 22.05 kHz mono |",
        "| `small-speech/` | copy synthesis: its hifigan mel vocoded by the shipped model |",
        "| `small-speech-waveform/` | the same with the earlier waveform vocoder |",
        "| `griffin-lim/` | the quality floor: Griffin-Lim (64 fast iterations) of the same mel |",
        "",
        "Sources: "
        + "; ".join(f"`{n}` from `{s}`" for n, s in CLIPS.items())
        + f". Licences: {', '.join(LICENCES.values())}.",
        "",
        "## Commands",
        "",
    ]
    for method, cmd, summary in rows:
        lines += [f"- {method}: `{cmd}`", f"  - printed: `{summary}`"]
    lines += ["", "## Scores against the original (`audiodiff evaluate`)", ""]
    metrics = scores["small-speech"]["metrics"]
    lines += ["| clip | method | " + " | ".join(metrics) + " |",
              "|---|---|" + "---|" * len(metrics)]  # fmt: skip
    for name in CLIPS:
        for method in commands:
            row = next(r for r in scores[method]["files"] if r["name"] == name)
            cells = " | ".join(f"{row[m]:.3f}" for m in metrics)
            lines.append(f"| {name} | {method} | {cells} |")
    for method in commands:
        total = scores[method]["total"]
        cells = " | ".join(f"{total[m]:.3f}" for m in metrics)
        lines.append(f"| **mean** | {method} | {cells} |")
    (ROOT / "SAMPLES.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {ROOT / 'SAMPLES.md'}")


if __name__ == "__main__":
    main()
