"""How closely onnxruntime reproduces PyTorch for an exported vocoder, and how long export takes.

Exports MODEL (default the shipped waveform vocoder ``small-speech-waveform``) with
``audiodiff.onnx_export.export_onnx``
into a temporary folder, then prints the largest absolute difference between onnxruntime and
PyTorch for the mel upsampler and for the denoiser step at every sigma of the exported schedule,
on a random mel of ``--frames`` frames (batch 2). Needs the ``onnx`` extra. Waveform vocoders;
stft ones (``small-speech``): ``benchmarks/onnx_stft.py``.

    python benchmarks/onnx_parity.py [MODEL] [--frames 40]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audiodiff.diffusion import Denoiser
from audiodiff.onnx_export import export_onnx
from audiodiff.vocoder import Vocoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="small-speech-waveform")
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(1)
    if Vocoder.from_pretrained(args.model, device="cpu").domain.frame_rate:
        raise SystemExit(f"{args.model} is an stft vocoder: use benchmarks/onnx_stft.py")
    out = Path(tempfile.mkdtemp(prefix="onnx-parity-")) / "voc.onnx"
    start = time.perf_counter()
    step_path, prepare_path, schedule_path = export_onnx(args.model, out)[:3]
    print(f"export of {args.model}: {time.perf_counter() - start:.1f} s")
    vocoder = Vocoder.from_pretrained(args.model, device="cpu")
    with open(schedule_path, encoding="utf-8") as fh:
        rows = json.load(fh)["steps"]
    gen = torch.Generator().manual_seed(0)
    mel = torch.randn(2, vocoder.n_mels, args.frames, generator=gen) - 5.0
    prepare = ort.InferenceSession(str(prepare_path))
    step = ort.InferenceSession(str(step_path))
    mel_up = prepare.run(None, {"mel": mel.numpy()})[0]
    with torch.no_grad():
        expected = vocoder.net.spectrogram_upsampler(mel).numpy()
    print(f"upsampler: max |onnx - torch| {np.abs(mel_up - expected).max():.2e}")
    denoiser = Denoiser(vocoder.net, vocoder.schedule, target=vocoder.config.diffusion.target)
    prepared = denoiser.prepare(mel)
    for row in rows:
        x = torch.randn(2, 1, mel_up.shape[-1], generator=gen) * (1 + row["sigma"])
        feed = {
            "x": x.numpy(),
            "sigma": np.full(2, row["sigma"], np.float32),
            "c_noise": np.full(2, row["c_noise"], np.float32),
            "mel_up": mel_up,
        }
        got = step.run(None, feed)[0]
        with torch.no_grad():
            want = denoiser(x, row["sigma"], prepared).numpy()
        print(
            f"step at sigma {row['sigma']:.4g}: max |onnx - torch| {np.abs(got - want).max():.2e}"
        )


if __name__ == "__main__":
    main()
