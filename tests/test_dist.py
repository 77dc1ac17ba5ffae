"""torchrun environment parsing; two gloo ranks against one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiodiff.checkpoint import load_checkpoint
from audiodiff.config_io import load_config
from audiodiff.dist import env_ranks, init, resolve_device, teardown
from audiodiff.manifest import manifest_from_files
from audiodiff.model import DiffWave
from audiodiff.seeds import derived_seed
from audiodiff.train import Trainer

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "smoke" / "vocoder.yaml"


def test_env_ranks_reads_torchrun_variables():
    assert env_ranks({}) == (0, 1, 0)
    assert env_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    with pytest.raises(ValueError, match="RANK 4, WORLD_SIZE 4"):
        env_ranks({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="must be integers"):
        env_ranks({"RANK": "zero"})


def test_single_process_needs_no_process_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = init("cpu")
    assert ctx.is_main and not ctx.distributed and not ctx.initialized
    assert not torch.distributed.is_initialized()
    teardown(ctx)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_equal_one_process(tmp_path, write_wav):
    """``torchrun --nproc_per_node=2 -m audiodiff train``: both ranks end with identical weights
    (the trainer compares their SHA-256 at the end), equal to one process with the same global
    batch (per-rank batch 2 x 2 ranks == batch 2 x grad_accum 2: same clips, same noise)."""
    clips = [write_wav(f"c{i}.wav", duration_s=0.2 + 0.04 * i, seed=i) for i in range(8)]
    manifest = manifest_from_files(clips, tmp_path / "train.jsonl")
    sets = [f"data.train_manifest={manifest}", "train.max_steps=5", "train.save_every=5",
            "train.log_every=1"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "audiodiff", "train", str(RECIPE), "--run-dir", str(tmp_path / "ddp")]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "weights identical on 2 ranks" in output
    assert output.count("trained to step 5") == 1  # rank 0 alone reports

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(RECIPE, [*sets, "train.grad_accum=2"])
        Trainer(cfg, tmp_path / "single").train()
    finally:
        torch.set_num_threads(threads)
    ddp, single = load_checkpoint(tmp_path / "ddp"), load_checkpoint(tmp_path / "single")
    assert ddp["step"] == single["step"] == 5 and ddp["epoch"] == single["epoch"]
    for key in ("model", "ema"):
        for name, value in single[key].items():
            # Only the order of float additions differs (all-reduce vs accumulation).
            torch.testing.assert_close(ddp[key][name], value, rtol=1e-4, atol=1e-6)
    # The tolerance is meaningful: training moved the weights far more than it.
    init_gen = torch.Generator().manual_seed(derived_seed("init", cfg.train.seed))
    start = DiffWave.from_config(cfg, generator=init_gen).state_dict()
    moved = max((single["model"][n] - v).abs().max().item() for n, v in start.items())
    assert moved > 1e-3
