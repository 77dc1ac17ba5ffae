"""The import direction of DESIGN.md §3, enforced by parsing every module's imports with ``ast``.

Layers (imports only point down): config -> power_spectrum -> stft -> {audio, mel, schedule,
model, dist, plot} -> {manifest, perceptual} -> {diffusion, domains, samplers, scan, data,
datasets, metrics, griffin_lim} -> evaluation -> {checkpoint, synthesis} -> pretrained ->
{train, vocoder} -> {generate, schedule_search, diffwave_import, demo} -> cli.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "audiodiff"

# Lower number = lower layer. A module may import only modules of a strictly lower layer, plus the
# explicit exceptions below. Modules not listed here fail the test: every new module picks a layer.
LAYER = {
    "config": 0,
    "seeds": 0,  # every seed derivation: imports nothing of ours
    "noise": 0.3,  # positional noise (drawn by position, keyed by item): the engine's noise
    "atomic": 0,  # the one atomic file writer: imports nothing of ours
    "config_migrate": 0.05,  # config_version migrations, model config apart from run config
    "config_io": 0.1,  # strict dict/YAML loading and --set overrides of the config dataclasses
    "config_rules": 0.2,  # validate, derived values (upsampler strides), resume changes
    "encoding": 0,  # UTF-8 text and file names in it: imports nothing of ours
    "problems": 0,  # refusals naming every problem at once (paths, text): imports nothing of ours
    "levels": 0,  # the level rule on peaks (NumPy only): audio, data and prepare share it
    "probe": 1,  # open, decode, measure and classify one audio file: the scan and prepare share it
    "power_spectrum": 0.4,  # |STFT|^2 with a closed-form gradient: imports nothing of ours
    "stft": 0.5,  # the profiles' STFT pair (+ its power): used by mel and domains
    "consistency": 0.6,  # mel matching + Griffin-Lim from a given phase: domains and griffin_lim
    "spectral_loss": 0.5,  # multi-resolution STFT distance: the metric and the training loss
    "phase_loss": 0,  # anti-wrapping phase losses (APNet2): imports nothing of ours
    "discriminator": 0,  # UnivNet's multi-resolution discriminator and the GAN losses
    "audio": 1,
    "mel_checks": 1.2,  # a vocoder's input checks: layout, profile and value range of a mel
    "mel": 1,  # MelConfig profiles -> MelSpectrogram, value ranges, the mel normaliser
    "schedule": 1,
    "kernels": 0,  # CPU backends of the residual stack and the rule picking one; import nothing
    "model_blocks": 0.5,  # DiffWave's blocks and Conditioning; imports config only
    "model_compute": 0.7,  # DiffWave's prepare, step checks, eager stack, stack backends dispatch
    "model": 1,
    "convnext": 1,  # the ConvNeXt stack (Vocos) beside DiffWave's; build_network picks
    "subband": 1.5,  # band folding around the shared network
    "dist": 1,
    "plot": 1.5,  # draws mels: above mel (1), which undoes their compression
    "files": 1,
    "diffusion": 2,
    "domains": 2,
    "perceptual": 1.5,  # MOS predictors over audio; metrics builds on them
    "samplers": 2,
    "manifest": 1.5,  # JSONL manifests (reads audio headers); the scan reads them
    "scan": 2,  # which of a manifest's clips are usable, the scan cache and the data report
    "data": 2,
    "datasets": 2,
    "dataset_layouts": 2,
    "metrics": 2,
    "evaluation": 2.5,  # the evaluate job: pairs two folders and scores them with metrics
    "griffin_lim": 2,
    "checkpoint": 3,
    "sampling_spec": 2.5,  # sampler, sigmas, eta and refinement of one run, resolved once
    "synthesis": 3,  # the one sampling engine: below vocoder, generate, train, schedule search
    "streaming": 3.5,  # mel chunks in, audio out: spans for the engine as the input arrives
    "pretrained": 4,
    "output_level": 0,  # the one policy for audio above full scale when written: no imports of ours
    "input_notes": 0,  # counts of resampled / mixed-down / band-limited inputs: imports nothing
    "run_lock": 0,  # one process per run directory (fcntl): imports nothing of ours
    "interrupt": 1.5,  # SIGTERM/SIGINT and the save clock of the training loop (above dist)
    "run_dir": 4,  # a run directory: config.yaml, metrics.jsonl, the checkpoint a resume loads
    "train_data": 4,  # a training run's datasets, class names, sampler and loader
    "train_eval": 4,  # in-training evaluation: validation loss, copy synthesis and its scores
    "train_losses": 3.9,  # auxiliary losses on a clean estimate: spectral, mel, phase, consistency
    "train_adversarial": 4,  # the trainer's discriminator, its optimiser and its step
    "train_setup": 4.5,  # the trainer's networks, optimiser, init weights, precision, LR schedule
    "train_log": 4,  # rank 0 output of a run: messages, progress bar, metrics.jsonl, TensorBoard
    "train": 5,
    "vocoder": 5,
    "generate": 6,
    "schedule_search": 6,
    "schedule_store": 6,  # a searched schedule written into a copy of a checkpoint or an export
    "diffwave_import": 6,
    "diffwave_reader": 5.5,  # lmnt-com/diffwave checkpoints read safely; diffwave_import maps them
    "onnx_stft": 5.5,  # an stft vocoder's step and prepare graphs, its arrays and settings
    "onnx_export": 6,  # a waveform vocoder as ONNX graphs and a schedule JSON, beside the exports
    "demo": 6,
    "cli": 7,
    "__main__": 8,
    "__init__": 8,
}

FORBIDDEN = {
    # DESIGN §3: the network knows no diffusion and no audio front end.
    "model": {"schedule", "diffusion", "audio", "mel"},
    # Samplers are plain functions over a denoiser: they import nothing of ours.
    "samplers": set(LAYER) - {"samplers"},
    "train": {"vocoder"},
    "vocoder": {"train"},
}


def _our_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "audiodiff" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level and node.module:
                found.add(node.module.split(".")[0])
            elif node.module and node.module.split(".")[0] == "audiodiff":
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
    return found


def _modules() -> list[tuple[str, Path]]:
    """(layer name, file): top-level modules, and every file of a sub-package under its name."""
    found = [(p.stem, p) for p in PACKAGE.glob("*.py")]
    for init in PACKAGE.glob("*/__init__.py"):
        found += [(init.parent.name, p) for p in init.parent.glob("*.py")]
    return sorted(found)


@pytest.mark.parametrize(("name", "path"), _modules(), ids=lambda v: str(v))
def test_imports_point_down(name, path):
    assert name in LAYER, f"audiodiff/{name} has no layer in tests/test_layering.py"
    imports = _our_imports(path) - {name}
    if name == "__init__":
        return
    for dep in imports:
        assert dep in LAYER, f"{name} imports unknown module audiodiff.{dep}"
        assert dep not in FORBIDDEN.get(name, set()), f"{name} must not import {dep}"
        assert LAYER[dep] < LAYER[name], (
            f"{name} (layer {LAYER[name]}) imports {dep} (layer {LAYER[dep]}): imports point down"
        )


def test_click_only_in_cli_and_package_import_is_light():
    for path in PACKAGE.rglob("*.py"):
        if path.parent != PACKAGE / "cli":  # only the cli package imports click
            tree = ast.parse(path.read_text())
            names = {
                a.name.split(".")[0]
                for n in ast.walk(tree)
                if isinstance(n, ast.Import)
                for a in n.names
            } | {
                n.module.split(".")[0]
                for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module
            }
            assert "click" not in names, f"{path.name} imports click"
            assert "torchaudio" not in names, f"{path.name} imports torchaudio"
    code = (
        "import sys, audiodiff; "
        "heavy = ('click', 'tensorboard', 'torch.utils.tensorboard'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
