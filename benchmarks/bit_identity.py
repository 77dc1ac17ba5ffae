"""Digests that a refactor must leave unchanged: vocoding the shipped clip and a smoke training run.

Prints one line each: the SHA-256 (first 16 hex digits) of ``small-speech``'s copy synthesis of
the shipped example clip (seed 0), and the weights digest of a 6-step ``recipes/smoke`` run on
four synthetic tones (``TrainResult.weights_digest``). Run it on two checkouts and compare:

    cd OLD && PYTHONPATH=$PWD python benchmarks/bit_identity.py
    cd NEW && PYTHONPATH=$PWD python benchmarks/bit_identity.py

It runs on checkouts from before and after the config and manifest modules were split (issue
12), so it finds those functions where each version keeps them. One CPU thread: digests of
multi-threaded runs may differ with the thread count.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import audiodiff.config
from audiodiff.audio import load_audio
from audiodiff.demo import DEFAULT_CLIP
from audiodiff.train import run
from audiodiff.vocoder import Vocoder

if hasattr(audiodiff.config, "load_config"):  # before issue 12's split
    from audiodiff.config import load_config, validate
    from audiodiff.data import manifest_from_files
else:
    from audiodiff.config_io import load_config
    from audiodiff.config_rules import validate
    from audiodiff.manifest import manifest_from_files

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smoke" / "vocoder.yaml"


def vocode_digest() -> str:
    vocoder = Vocoder.from_pretrained("small-speech", device="cpu")
    audio, rate = load_audio(DEFAULT_CLIP, vocoder.sample_rate)
    out = vocoder(vocoder.mel(audio, rate), seed=0)
    return f"{hashlib.sha256(out.numpy().tobytes()).hexdigest()[:16]} shape {tuple(out.shape)}"


def training_digest() -> str:
    tmp = Path(tempfile.mkdtemp(prefix="bit-identity-"))
    rng = np.random.default_rng(0)
    t = np.arange(22050) / 22050
    for i in range(4):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(22050)
        sf.write(tmp / f"c{i}.wav", tone.astype(np.float32), 22050)
    manifest_from_files(sorted(tmp.glob("c*.wav")), tmp / "train.jsonl")
    overrides = [f"data.train_manifest={tmp / 'train.jsonl'}", "train.max_steps=6"]
    result = run(validate(load_config(RECIPE, overrides)), tmp / "run")
    return f"{result.weights_digest[:16]} step {result.step} last loss {result.last_loss:.6g}"


def main() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"vocode small-speech, shipped clip, seed 0: {vocode_digest()}")
    print(f"smoke training run, 6 steps:              {training_digest()}")


if __name__ == "__main__":
    main()
