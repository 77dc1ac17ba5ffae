"""Vocoding speed of an audiodiff vocoder beside the Vocos architecture, in one process (issue 20).

Vocos (Siuzdak 2024; PyPI ``vocos`` 0.1.0, installed with ``pip install --no-deps
vocos==0.1.0``) is the speed a frame-rate vocoder is judged against: its backbone (8 ConvNeXt
blocks of width 512, intermediate 1536) and ISTFT head, built here with **random weights** (speed
does not depend on their values; its pretrained weights are never loaded) from its own modules,
imported without its package ``__init__`` (which needs the hub) and with a stand-in for the one
torchaudio helper its ``heads`` module imports (``torchaudio`` itself is never installed).

For each length (``--seconds``, default 1, 2, 5, 10) both vocoders run on the mel of the same
speech-like signal, in interleaved rounds (one call of each, back to back), ``--threads``
threads; the table gives each one's median real-time factor and the ratio to Vocos. Rows: the
model at its own defaults, the network alone (no refinement after sampling, when the model has
one), and the DSP estimate alone (``model.start: estimate`` models: what the network's step costs
on top of).

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/vocos_speed.py [--model small-speech]
        [--seconds 1 2 5 10] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from audiodiff.vocoder import Vocoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stft_speed import speech_like  # noqa: E402


def vocos_modules() -> types.ModuleType:
    """``vocos.models`` and ``vocos.heads`` loaded from the installed files, without the
    package's ``__init__``; ``torchaudio.functional.functional`` stood in (only the mel-scale
    helpers of heads the IMDCT head uses, which is not built here)."""
    spec = importlib.util.find_spec("vocos")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("vocos is not installed: pip install --no-deps vocos==0.1.0")
    root = Path(spec.submodule_search_locations[0])
    package = types.ModuleType("vocos")
    package.__path__ = [str(root)]
    sys.modules.setdefault("vocos", package)
    if "torchaudio" not in sys.modules:
        stand_in = types.ModuleType("torchaudio.functional.functional")

        def unused(*_args, **_kwargs):
            raise RuntimeError("torchaudio stand-in: not used by the ISTFT head")

        stand_in._hz_to_mel = stand_in._mel_to_hz = unused
        for name in ("torchaudio", "torchaudio.functional"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchaudio.functional.functional"] = stand_in
    loaded = {}
    for name in ("spectral_ops", "modules", "models", "heads"):
        module_spec = importlib.util.spec_from_file_location(f"vocos.{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[f"vocos.{name}"] = module
        module_spec.loader.exec_module(module)
        loaded[name] = module
    return types.SimpleNamespace(**loaded)


def build_vocos(n_mels: int, n_fft: int, hop_length: int) -> torch.nn.Module:
    """Vocos' 22/24 kHz generator (backbone + ISTFT head) with random weights."""
    vocos = vocos_modules()
    backbone = vocos.models.VocosBackbone(
        input_channels=n_mels, dim=512, intermediate_dim=1536, num_layers=8
    )
    head = vocos.heads.ISTFTHead(dim=512, n_fft=n_fft, hop_length=hop_length, padding="same")
    return torch.nn.Sequential(backbone, head).eval()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-speech")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 2.0, 5.0, 10.0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    voc = Vocoder.from_pretrained(args.model)
    m = voc.config.mel
    vocos = build_vocos(m.n_mels, m.n_fft, m.hop_length)
    params = sum(p.numel() for p in vocos.parameters()) / 1e6
    ours = sum(p.numel() for p in voc.net.parameters()) / 1e6
    sa = voc.config.sample
    refines = sa.mel_match_iters > 0 or sa.griffin_lim_iters > 0 or sa.magnitude_blend < 1
    methods: dict[str, Callable[[torch.Tensor], object]] = {
        "vocos (random weights)": lambda mel: vocos(mel),
        f"{args.model} (defaults)": lambda mel: voc(mel, seed=0),
    }
    if refines:
        methods[f"{args.model} network alone"] = lambda mel: voc(
            mel, seed=0, mel_match_iters=0, griffin_lim_iters=0, magnitude_blend=1
        )
    if voc.config.model.start == "estimate":
        methods["its DSP estimate alone"] = lambda mel: voc.domain.from_model(
            voc.domain.estimate(mel), mel
        )
    print(
        f"# {args.model} ({ours:.2f} M parameters) vs the Vocos architecture ({params:.2f} M), "
        f"{args.threads} threads, median of {args.rounds} interleaved rounds, torch "
        f"{torch.__version__}"
    )
    print("| audio | method | RTF | time / Vocos |\n|---|---|---|---|")
    with torch.inference_mode():
        for seconds in args.seconds:
            mel = voc.mel(speech_like(seconds, m.sample_rate), m.sample_rate)
            for fn in methods.values():  # warm-up: first-call costs are not the method's
                fn(mel)
            times: dict[str, list[float]] = {name: [] for name in methods}
            for _ in range(args.rounds):
                for name, fn in methods.items():
                    times[name].append(timed(lambda fn=fn, mel=mel: fn(mel)))
            base = statistics.median(times["vocos (random weights)"])
            for name, values in times.items():
                t = statistics.median(values)
                print(f"| {seconds:g} s | {name} | {t / seconds:.4f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
