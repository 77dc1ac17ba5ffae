"""Build the held-out speech folder the shipped vocoder is scored on (MODEL.md).

24 clips no training run of this repository has seen: the 8 alsa-utils voice prompts
(``/usr/share/sounds/alsa/*_*.wav``; ``Noise.wav`` is not speech) and 8 clips of each held-out
klettres language (cs, nl: the ``test`` split of ``audiodiff prepare klettres``), evenly spaced
through that language's clips sorted by path. Files are copied, not converted.

    python benchmarks/make_heldout.py data/klettres/test.jsonl --out heldout/
    python benchmarks/vocoder_quality.py heldout/ --out bench/ --checkpoint small-speech
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ALSA_DIR = Path("/usr/share/sounds/alsa")
PER_LANGUAGE = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test_manifest", type=Path, help="klettres test.jsonl")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")
    rows = [json.loads(line) for line in args.test_manifest.read_text().splitlines() if line]
    picked = sorted(p for p in ALSA_DIR.glob("*_*.wav"))
    for language in sorted({r["speaker"] for r in rows}):
        paths = sorted(r["path"] for r in rows if r["speaker"] == language)
        stride = max(1, len(paths) // PER_LANGUAGE)
        picked += [Path(p) for p in paths[::stride][:PER_LANGUAGE]]
    args.out.mkdir(parents=True)
    for path in picked:
        language = "alsa" if path.parent == ALSA_DIR else path.parts[-3]
        shutil.copy(path, args.out / f"{language}_{path.stem}{path.suffix}")
    print(f"wrote {len(picked)} clips to {args.out}")


if __name__ == "__main__":
    main()
