"""The one-time cost of a candidate's first training epoch in a fresh process, in and out of the sandbox.

Usage::

    python benchmarks/gpu_cold_start.py [--device auto|cpu|cuda] [--epochs 2] [--samples 2048]

Every sandboxed candidate trains in a freshly forked process, so whatever a process pays once
(CUDA context, kernel loading, cudnn.benchmark timing each new shape) it pays per candidate. For
each network and ``cudnn_benchmark`` setting the table gives, for two trainings in a row:

- ``fresh process``: a new Python process (not sandboxed) that trains twice; the second run
  shows what is left once the process is warm;
- ``sandbox``: two tasks on a warm sandbox, each in its own forked child (what a search does).

Columns: epoch-1 and epoch-2 seconds and the wall time of the first training, then epoch 1 and
wall of the second. Epoch 2 is the steady state; epoch 1 minus epoch 2 is the warm-up. On an H100
(2026-11-23) sandboxed template-space candidates spent 15-47 s in epoch 1 and 0.3-0.5 s in epoch 2
with cudnn.benchmark on; this table is there to say how much of that each cause is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from train_bench import RESNET_CELL

NETWORKS = {"template seed": ("template", None), "nb201 resnet cell": ("nb201", RESNET_CELL)}


def payload(space: str, text: str | None, device: str, epochs: int, samples: int, benchmark: bool) -> dict[str, Any]:
    from archsmith.tools.spaces import get_space

    return {
        "space": space, "space_settings": {}, "text": text or get_space(space).initial()[0], "num_classes": 10,
        "torch_threads": 1, "device": device, "seed": 0,
        "train": {"preset": "smoke", "epochs": epochs, "batch_size": 64, "cudnn_benchmark": benchmark},
        "data": {"name": "synthetic", "synthetic_samples": samples, "input_size": 32},
    }  # fmt: skip


def summary(value: dict[str, Any]) -> dict[str, Any]:
    if not value.get("ok"):
        return {"error": f"{value.get('error_type')}: {value.get('error_message')}"[:200]}
    seconds = [epoch["seconds"] for epoch in value["curve"]]
    return {"epoch1": seconds[0], "epoch2": seconds[1] if len(seconds) > 1 else None,
            "wall": value["report"]["wall_s"], "device": value["device"]}  # fmt: skip


def child(spec: str) -> None:
    """In a fresh process: train twice, print the two summaries as JSON."""
    from archsmith.tools.train_task import train_candidate

    task = json.loads(spec)
    print(json.dumps([summary(train_candidate(task)) for _ in range(2)]))


def fresh_process(task: dict[str, Any]) -> list[dict[str, Any]]:
    run = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    if run.returncode != 0:
        return [{"error": run.stderr.strip().splitlines()[-1][:200] if run.stderr.strip() else "failed"}] * 2
    return json.loads(run.stdout.strip().splitlines()[-1])


def cell(run: dict[str, Any], *keys: str) -> str:
    if "error" in run:
        return run["error"][:40]
    return " ".join(f"{run[k]:>7.2f}" if run.get(k) is not None else f"{'-':>7}" for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    import torch

    from archsmith.tools.sandbox import Sandbox, SandboxLimits
    from archsmith.tools.train_task import TRAIN_TASK

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    settings = [False, True] if device == "cuda" else [False]
    print(f"device {device}; torch {torch.__version__}; {args.epochs} epochs of {args.samples} images, batch 64")
    print(f"{'network':<18} {'where':<14} {'bench':<5} {'1st: ep1':>8} {'ep2':>7} {'wall':>7}   {'2nd: ep1':>8} {'wall':>7}")
    with Sandbox(SandboxLimits(timeout_s=900), workers=1) as sandbox:
        sandbox.warm_up()
        for label, (space, text) in NETWORKS.items():
            for benchmark in settings:
                task = payload(space, text, device, args.epochs, args.samples, benchmark)
                runs = {
                    "fresh process": fresh_process(task),
                    "sandbox": [summary(sandbox.run(TRAIN_TASK, task).value) for _ in range(2)],
                }
                for where, (first, second) in runs.items():
                    print(f"{label:<18} {where:<14} {'on' if benchmark else 'off':<5} "
                          f"{cell(first, 'epoch1', 'epoch2', 'wall'):>24}   {cell(second, 'epoch1', 'wall'):>16}")
    print(f"sandbox: {sandbox.mechanism}")


if __name__ == "__main__":
    main()
