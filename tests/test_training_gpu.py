"""The training evaluator on a real GPU: the sandbox's GPU rules, shared GPU slots, real CUDA
out-of-memory, torch.compile, determinism and Ray GPU placement. Every test skips without CUDA
(CI has none); a session with a GPU runs ``pytest tests/test_training_gpu.py``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from archsmith.tools.datasets import load_dataset
from archsmith.tools.executors import Job, LocalExecutor, as_completed, device_slots
from archsmith.tools.sandbox import Sandbox, SandboxLimits
from archsmith.tools.train_task import TRAIN_TASK
from archsmith.tools.training import TrainingFailure, resolve_settings, train_model

import private_network
from test_training import TINY_SOURCE, payload, tiny_net

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TESTS_DIR = Path(__file__).resolve().parent
# A forward that asks the GPU for 4 TiB: a real cudaMalloc failure, not a simulated one.
HUGE_ALLOCATION = TINY_SOURCE.replace(
    "return self.fc", "torch.empty(2**42, dtype=torch.uint8, device=x.device); return self.fc"
)


@pytest.fixture(scope="module")
def data():
    return load_dataset({"name": "synthetic", "synthetic_samples": 2048, "input_size": 32})


def test_real_cuda_out_of_memory_is_classified_and_the_gpu_is_usable_after(data):
    class Huge(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 10)

        def forward(self, x):
            torch.empty(2**42, dtype=torch.uint8, device=x.device)
            return self.fc(x.mean((2, 3)))

    with pytest.raises(TrainingFailure) as caught:
        train_model(Huge(), data, resolve_settings("smoke"), "cuda")
    assert caught.value.error_type == "OutOfMemory" and "out of memory" in str(caught.value)
    report = train_model(tiny_net(), data, resolve_settings("smoke"), "cuda")
    assert report.valid_acc is not None and report.valid_acc > 20.0


def test_deterministic_cuda_runs_repeat(data):
    settings = resolve_settings("smoke", {"deterministic": True, "epochs": 2})
    first, second = (train_model(tiny_net(), data, settings, "cuda") for _ in range(2))
    assert [e.train_loss for e in first.curve] == [e.train_loss for e in second.curve]
    assert first.valid_acc == second.valid_acc and first.test_acc == second.test_acc


def test_torch_compile_trains_on_cuda(data):
    report = train_model(tiny_net(), data, resolve_settings("smoke", {"compile": True, "epochs": 2}), "cuda")
    assert report.warnings == [], report.warnings  # compiled, no fallback to eager
    assert report.valid_acc is not None and report.valid_acc > 20.0


def test_sandboxed_training_on_the_gpu_and_a_real_oom_in_the_same_worker():
    """The sandbox lifts its address-space limit and opens /dev/nvidia* for a GPU task only."""
    with Sandbox(SandboxLimits(timeout_s=300, memory_mb=4096), workers=1,
                 python_path=[str(TESTS_DIR)]) as sandbox:  # fmt: skip
        good = sandbox.run(TRAIN_TASK, payload(device="cuda:0", torch_threads=2))  # a fresh process: index
        assert good.ok, good.short_error() + (good.traceback or "") + good.stdout
        assert good.value["device"].startswith("cuda") and good.value["score"] > 20.0
        assert good.value["peak_memory_kind"] == "cuda_max_allocated"
        oom = sandbox.run(TRAIN_TASK, payload(device="cuda", text=HUGE_ALLOCATION))
        assert not oom.ok and oom.error_type == "OutOfMemory", oom.short_error()
        again = sandbox.run(TRAIN_TASK, payload(device="cuda"))
        assert again.ok and again.value["score"] > 20.0, again.short_error()
        cpu = sandbox.run(TRAIN_TASK, payload(device="cpu"))
        assert cpu.ok and cpu.value["device"] == "cpu", cpu.short_error()


def test_two_candidates_share_one_gpu_through_the_local_executor():
    slots = device_slots("auto", per_gpu=2, cpu_slots=2)
    assert slots[:2] == ["cuda:0", "cuda:0"]
    train = {"preset": "smoke", "epochs": 3}
    jobs = [Job(key=f"c{i}", task=TRAIN_TASK, timeout_s=300,
                payload=payload(train=train, torch_threads=2, seed=i)) for i in range(4)]  # fmt: skip
    with Sandbox(SandboxLimits(timeout_s=300), workers=len(slots), python_path=[str(TESTS_DIR)]) as sandbox:
        sandbox.warm_up()
        with LocalExecutor(sandbox, slots) as executor:
            started = time.perf_counter()
            results = dict((job.key, result) for job, result in as_completed(executor, jobs))
            wall = time.perf_counter() - started
    assert all(r.ok for r in results.values()), {k: r.short_error() for k, r in results.items()}
    assert {r.value["device"] for r in results.values()} == {"cuda:0"}
    durations = sum(r.value["duration_s"] for r in results.values())
    assert wall < durations, (wall, durations)  # the slots overlapped: two at once on the GPU


@pytest.mark.slow
@pytest.mark.skipif(not private_network.available(), reason="needs unshare -rn (network namespaces)")
def test_ray_places_two_tasks_on_one_gpu(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "outcome.json"
    command = private_network.command(str(TESTS_DIR / "ray_gpu_scenario.py"), str(out))
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and out.is_file(), f"scenario failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    outcome = json.loads(out.read_text())
    assert "1 GPU; per task 1 CPU, 0.5 GPU" in outcome["mechanism"]
    assert [r["ok"] for r in outcome["results"]] == [True, True], outcome["results"]
    assert {r["device"] for r in outcome["results"]} == {"cuda:0"}


def test_a_device_index_beyond_the_gpus_is_classified(data):
    with pytest.raises(TrainingFailure) as caught:
        train_model(tiny_net(), data, resolve_settings("smoke"), f"cuda:{torch.cuda.device_count()}")
    assert caught.value.error_type == "DeviceUnavailable"
    assert f"this process sees {torch.cuda.device_count()} CUDA device(s)" in str(caught.value)
