"""tests/test_training_gpu.py's Ray check, run in a private network namespace.

``python tests/ray_gpu_scenario.py OUT.json``: a local Ray instance with 1 GPU, two candidates per
GPU (0.5 GPU a task), two training jobs with ``device = "auto"``; writes each result's ok, device
and score, and the executor's description.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from archsmith.graph.config import config_from_dict
from archsmith.graph.context import train_payload
from archsmith.tools.evaluators import TRAIN_TASK
from archsmith.tools.executors import Job, as_completed
from archsmith.tools.ray_executor import RayExecutor, RunnerSpec
from archsmith.tools.spaces import get_space

CONFIG = {
    "seed": 0,
    "budget": {"input_size": 32, "num_classes": 10},
    "evaluator": {"name": "train", "train": {
        "preset": "smoke", "settings": {"epochs": 2},
        "data": {"name": "synthetic", "synthetic_samples": 2048, "input_size": 32}, "device": "auto",
    }},
}


def main(out_path: str) -> None:
    config = config_from_dict(CONFIG)
    texts = get_space("template").initial()[:1] * 2
    jobs = [Job(key=f"c{i}", task=TRAIN_TASK, payload=train_payload(config, t), timeout_s=300)
            for i, t in enumerate(texts)]  # fmt: skip
    with RayExecutor(num_cpus=2, num_gpus=1, per_gpu=2, runner=RunnerSpec(limits=(("timeout_s", 300.0),))) as ex:
        results = [{"key": job.key, "ok": r.ok, "error": r.short_error(), "device": r.value.get("device"),
                    "score": r.value.get("score")} for job, r in as_completed(ex, jobs)]  # fmt: skip
        outcome = {"mechanism": ex.mechanism, "results": sorted(results, key=lambda r: r["key"])}
    Path(out_path).write_text(json.dumps(outcome, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
