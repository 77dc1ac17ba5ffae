"""The shipped stft vocoder through ONNX: parity, scores and speed beside PyTorch (issue 22).

Exports MODEL (default ``small-speech``) into a temporary folder and runs the README's
``onnx-loop`` block (numpy + onnxruntime only) on the held-out clips in ``samples/original``
(speech the model never trained on). For each clip, from the same start noise: the largest
difference of the step's ``x0`` (relative to its largest value) and of the audio between
onnxruntime and PyTorch (the Denoiser, then the domain's decoding with the model's refinement),
and MR-STFT and PESQ-WB of both against the original; then the real-time factor of the README's
pieces (sessions already loaded; onnxruntime's default threads, as the README creates them)
beside ``Vocoder.__call__``'s with ``--threads`` (1) torch threads.

    OMP_NUM_THREADS=1 python benchmarks/onnx_stft.py [MODEL] [--threads 1]

On a shared machine set ``OMP_NUM_THREADS=1``: numpy's BLAS threads spin like torch's (measured
here with other jobs running: the numpy side's RTF 0.71 without it, 0.23 with it).

Quote the machine's load with the speeds (a shared CPU moves them).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from audiodiff.audio import load_model_audio  # noqa: E402
from audiodiff.diffusion import Denoiser  # noqa: E402
from audiodiff.metrics import mr_stft_distance, pesq_wb  # noqa: E402
from audiodiff.onnx_export import export_onnx  # noqa: E402
from audiodiff.synthesis import make_sampling_spec  # noqa: E402
from audiodiff.vocoder import Vocoder  # noqa: E402


def readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- onnx-loop:[^>]*-->\n```python\n(.*?)```", text, re.S)
    if match is None:
        raise SystemExit("README lost its onnx-loop block")
    return match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="small-speech")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime  # noqa: F401 - the README block imports it; fail here if it is missing

    out = Path(tempfile.mkdtemp(prefix="onnx-stft-")) / "voc.onnx"
    t = time.perf_counter()
    export_onnx(args.model, out)
    print(f"export of {args.model}: {time.perf_counter() - t:.1f} s; load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    voc = Vocoder.from_pretrained(args.model, device="cpu")
    spec = make_sampling_spec(voc.config, voc.schedule)
    den = Denoiser(voc.net, voc.schedule, target=voc.config.diffusion.target)
    clips = sorted((ROOT / "samples" / "original").glob("*.wav"))
    cwd = os.getcwd()
    os.chdir(out.parent)
    rows, t_ort, t_torch, seconds = [], 0.0, 0.0, 0.0
    try:
        for clip in clips:
            audio, _ = load_model_audio(clip, voc.sample_rate)
            ref = torch.as_tensor(audio).reshape(-1)
            mel = voc.mel(ref, voc.sample_rate)
            scope = {"mel": mel.numpy()}
            exec(compile(readme_block(), "README.md", "exec"), scope)  # noqa: S102
            n = mel.shape[-1]
            with torch.no_grad():
                x0 = den(torch.from_numpy(scope["start"]), float(spec.sigmas[0]), den.prepare(mel))
                want = voc.domain.from_model_window(
                    x0, mel, first=0, total=n, start=0, stop=n, refinement=spec.refinement
                )[0, 0]
            got = torch.from_numpy(scope["audio"])
            scores = []
            for gen in (want, got):
                m = len(gen)
                scores.append((float(mr_stft_distance(ref[:m], gen)),
                               pesq_wb(ref[:m].numpy(), gen.numpy(), voc.sample_rate)))  # fmt: skip
            dx = float((x0 - torch.from_numpy(scope["x0"])).abs().max() / x0.abs().max())
            rows.append((clip.stem, dx, float((want - got).abs().max()), *scores))
            # Speed: the README's pieces with the sessions loaded, and Vocoder.__call__.
            s = scope
            t = time.perf_counter()
            x = s["sample"](s["mel"], s["start"], np.random.default_rng(0))
            s["istft"](s["refine"](s["spectrum"](x, s["whiten_scale"](s["mel"])),
                                   np.exp(s["mel"][0])))  # fmt: skip
            t_ort += time.perf_counter() - t
            voc(mel, seed=0)  # warm-up of the same shapes
            t = time.perf_counter()
            voc(mel, seed=0)
            t_torch += time.perf_counter() - t
            seconds += len(ref) / voc.sample_rate
    finally:
        os.chdir(cwd)
    print("x0 diff: the largest difference over the largest |x0|; audio diff: absolute")
    print(f"{'clip':<22} {'x0 diff':>9} {'audio diff':>10}  {'MR-STFT torch / ort':>20}"
          f"  {'PESQ torch / ort':>17}")  # fmt: skip
    for name, dx, da, (m_t, p_t), (m_o, p_o) in rows:
        print(f"{name:<22} {dx:9.1e} {da:10.1e}  {m_t:9.4f} / {m_o:8.4f}  {p_t:7.3f} / {p_o:7.3f}")
    mean = np.mean([[r[3][0], r[4][0], r[3][1], r[4][1]] for r in rows], axis=0)
    print(f"{'mean':<22} {'':>9} {'':>10}  {mean[0]:9.4f} / {mean[1]:8.4f}  {mean[2]:7.3f} / "
          f"{mean[3]:7.3f}")  # fmt: skip
    print(f"RTF over {seconds:.2f} s of audio: onnxruntime + numpy "
          f"{t_ort / seconds:.3f} (its default threads), PyTorch {t_torch / seconds:.3f} "
          f"({args.threads} thread(s))")  # fmt: skip


if __name__ == "__main__":
    main()
