"""Default threads vs ``--threads 1`` when another torch job shares the cores (issue 22, part 3).

Each measurement is a fresh process (OpenMP reads its settings when torch loads) that loads the
vocoder (``--model``, default ``small-speech``), warms it up on a short mel, then times
``vocoder(mel, seed=0)`` on ``--seconds`` (10) of a synthetic speech-like signal, median of
``--calls`` (3) calls. Three settings:

* ``before``: what the CLI did before issue 22: torch's default threads, ``OMP_WAIT_POLICY`` unset
  (OpenMP threads spin after each parallel region);
* ``default``: what the CLI does now: :func:`audiodiff.cli.own_process_defaults` before torch
  loads (``OMP_WAIT_POLICY=PASSIVE`` unless set), torch's default threads;
* ``threads1``: the same with ``torch.set_num_threads(1)`` (``--threads 1``).

each on a *quiet* machine and a *busy* one, where a subprocess runs 512 x 512 float32 matmuls in
a loop with torch's default threads and spin policy (another user's torch job). The settings run
interleaved, ``--rounds`` (3) rounds, so load changes hit all of them; the table prints medians
and the targets: busy ``default / threads1 <= 1.2``, quiet ``default / before <= 1`` (within
noise).

    python benchmarks/busy_machine.py [--seconds 10] [--rounds 3] [--calls 3] [--model NAME]

Say what else ran on the machine with the numbers (the load average is printed): on a shared CPU
every number here moves with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
mode, model, seconds, calls = {mode!r}, {model!r}, {seconds!r}, {calls!r}
if mode != "before":
    from audiodiff.cli import own_process_defaults
    own_process_defaults()
import numpy as np, torch
if mode == "threads1":
    torch.set_num_threads(1)
from audiodiff.vocoder import Vocoder
sys.path.insert(0, os.path.join({root!r}, "benchmarks"))
from serving_speed import speech_like
voc = Vocoder.from_pretrained(model)
mel = voc.mel(speech_like(seconds, voc.sample_rate), voc.sample_rate)
voc(mel[..., :200], seed=0)  # warm-up: first-call costs
times = []
for _ in range(calls):
    t = time.perf_counter()
    voc(mel, seed=0)
    times.append(time.perf_counter() - t)
print(json.dumps({{"seconds": sorted(times)[len(times) // 2], "threads": torch.get_num_threads(),
                  "policy": os.environ.get("OMP_WAIT_POLICY", "")}}))
"""

LOAD = r"""
import torch
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a) * 0.5
"""


def run_child(mode: str, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    code = CHILD.format(
        root=str(ROOT), mode=mode, model=args.model, seconds=args.seconds, calls=args.calls
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--model", default="small-speech")
    parser.add_argument("--modes", default="before,default,threads1")
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: dict[tuple[str, str], list[float]] = {}
    info: dict[str, dict] = {}
    for scenario in ("quiet", "busy"):
        load = None
        if scenario == "busy":
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            load = subprocess.Popen([sys.executable, "-c", LOAD], env=env)
            time.sleep(3.0)  # let it start its threads
        try:
            for _ in range(args.rounds):
                for mode in modes:
                    r = run_child(mode, args)
                    results.setdefault((scenario, mode), []).append(r["seconds"])
                    info[mode] = r
        finally:
            if load is not None:
                load.terminate()
                load.wait()
        print(f"{scenario}: load average {os.getloadavg()[0]:.2f} after the runs", flush=True)
    print(f"\n{args.model}, {args.seconds:g} s of audio, median of {args.calls} calls per process,"
          f" median of {args.rounds} rounds; {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'setting':<10} {'threads':>7} {'policy':>8} {'quiet s':>8} {'busy s':>8}")
    med = {key: statistics.median(v) for key, v in results.items()}
    for mode in modes:
        i = info[mode]
        print(f"{mode:<10} {i['threads']:>7} {i['policy'] or '-':>8} "
              f"{med[('quiet', mode)]:>8.3f} {med[('busy', mode)]:>8.3f}")  # fmt: skip
    if {"default", "threads1", "before"} <= set(modes):
        busy = med[("busy", "default")] / med[("busy", "threads1")]
        quiet = med[("quiet", "default")] / med[("quiet", "before")]
        before = med[("busy", "before")] / med[("busy", "threads1")]
        print(f"busy:  default / threads1 = {busy:.2f} (target <= 1.2; before: {before:.2f})")
        print(f"quiet: default / before   = {quiet:.2f} (target <= 1, within noise)")


if __name__ == "__main__":
    main()
