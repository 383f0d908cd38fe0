"""What tests/test_ray_executor.py checks, run once in a private network namespace.

``python tests/ray_scenarios.py OUT.json`` starts one local Ray instance (2 CPUs) and writes the
outcome of each scenario to OUT.json:

- ``same_results``: the same training and Zen-score jobs (same seeds) on the local executor and on
  Ray (each Ray worker in its own sandbox): their scores and reports;
- ``streamed``: keys in the order as_completed delivered jobs of different lengths;
- ``killed_retried`` / ``killed_lost``: a job whose Ray worker dies mid-task, with one retry (it is
  re-run and answers) and with none (it comes back WorkerLost, not lost);
- ``mechanism``: the executor's description.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parent)
sys.path.insert(0, TESTS_DIR)

from archsmith.graph.config import config_from_dict  # noqa: E402
from archsmith.graph.context import score_payload, train_payload  # noqa: E402
from archsmith.tools.evaluators import TRAIN_TASK, ZEN_TASK  # noqa: E402
from archsmith.tools.executors import Job, LocalExecutor, as_completed  # noqa: E402
from archsmith.tools.ray_executor import RayExecutor, RunnerSpec  # noqa: E402
from archsmith.tools.sandbox import Sandbox, SandboxLimits  # noqa: E402
from archsmith.tools.spaces import get_space  # noqa: E402

TRAIN_CONFIG = {
    "seed": 3,
    "budget": {"input_size": 16, "num_classes": 4},
    "evaluator": {"name": "train", "train": {
        "preset": "smoke", "settings": {"batch_size": 32},
        "data": {"name": "synthetic", "synthetic_samples": 256, "synthetic_classes": 4, "input_size": 16},
        "device": "auto",
    }},
}


def scoring_jobs() -> list[Job]:
    config = config_from_dict(TRAIN_CONFIG)
    text = get_space("template").initial()[0]
    return [
        Job(key="train", task=TRAIN_TASK, payload=train_payload(config, text), timeout_s=300),
        Job(key="zen", task=ZEN_TASK, payload=score_payload(config, text), timeout_s=120),
    ]


def scores(executor) -> dict[str, dict]:
    out = {}
    for job, result in as_completed(executor, scoring_jobs()):
        value = result.value
        out[job.key] = {"ok": result.ok, "error": result.short_error(), "score": value.get("score"),
                        "report": {k: v for k, v in (value.get("report") or {}).items()
                                   if k not in ("wall_s", "images_per_s", "peak_memory_mb")}}
    return out


def main(out_path: str) -> None:
    outcome: dict = {}
    started = time.time()
    with Sandbox(SandboxLimits(timeout_s=300), workers=2) as sandbox, LocalExecutor(sandbox, ["cpu", "cpu"]) as local:
        outcome["local"] = scores(local)
    tests_only = RunnerSpec(mode="inprocess", python_path=(TESTS_DIR,))
    with RayExecutor(num_cpus=2, runner=RunnerSpec(limits=(("timeout_s", 300.0),)), max_retries=1) as ray_executor:
        outcome["mechanism"] = ray_executor.mechanism
        outcome["ray"] = scores(ray_executor)
        waits = {"slow": 2.0, "fast": 0.1}
        streamed = RayExecutor(runner=tests_only)  # joins the running instance
        jobs = [Job(key=key, task="ray_tasks:where", payload={"sleep_s": wait, "key": key}) for key, wait in waits.items()]
        outcome["streamed"] = [job.key for job, _ in as_completed(streamed, jobs)]
        marker = Path(tempfile.mkdtemp()) / "first-attempt"
        retried = streamed.run("ray_tasks:die_once", {"marker": str(marker)})
        outcome["killed_retried"] = {"ok": retried.ok, "value": retried.value}
        once = RayExecutor(runner=tests_only, max_retries=0)
        marker = Path(tempfile.mkdtemp()) / "first-attempt"
        lost = once.run("ray_tasks:die_once", {"marker": str(marker)})
        outcome["killed_lost"] = {"ok": lost.ok, "error_type": lost.error_type, "message": lost.error_message}
    outcome["seconds"] = round(time.time() - started, 1)
    Path(out_path).write_text(json.dumps(outcome, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
