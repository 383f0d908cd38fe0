"""The local executor: device slots, placement, streaming, failures as results; executor config."""

from __future__ import annotations

import threading
import time

import pytest

from archsmith.graph.config import ConfigError, config_from_dict
from archsmith.tools.executors import Job, LocalExecutor, as_completed, device_slots
from archsmith.tools.results import SandboxResult


class RecordingRunner:
    """A runner that sleeps ``payload['sleep_s']`` and records the device and concurrency."""

    mechanism = "recording"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def run(self, task, payload, timeout_s=None):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(payload.get("sleep_s", 0))
            if payload.get("explode"):
                raise RuntimeError("the sandbox is closed")
            return SandboxResult(ok=True, value={"device": payload.get("device"), "key": payload.get("key")})
        finally:
            with self.lock:
                self.running -= 1


def test_device_slots():
    assert device_slots(["cuda:0", "cuda:1"], per_gpu=2, cpu_slots=4) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert device_slots(["cpu", "cpu"], per_gpu=2, cpu_slots=1) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="tpu"):
        device_slots(["tpu:0"], per_gpu=1, cpu_slots=1)
    with pytest.raises(ValueError, match="empty"):
        device_slots([], per_gpu=1, cpu_slots=1)


def test_auto_slots_without_a_gpu_use_the_cpu(monkeypatch):
    monkeypatch.setattr("archsmith.tools.executors.available_gpus", lambda: 0)
    assert device_slots("auto", per_gpu=2, cpu_slots=3) == ["cpu"] * 3
    monkeypatch.setattr("archsmith.tools.executors.available_gpus", lambda: 2)
    assert device_slots("auto", per_gpu=2, cpu_slots=3) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]


def test_jobs_share_gpus_per_slot_and_stream_back_in_finish_order():
    runner = RecordingRunner()
    with LocalExecutor(runner, ["cuda:0", "cuda:0", "cuda:1"]) as executor:
        jobs = [Job(key=str(i), task="t", payload={"device": "auto", "sleep_s": 0.3 - 0.1 * i, "key": i})
                for i in range(3)]
        finished = [(job.key, result.value["device"]) for job, result in as_completed(executor, jobs)]
    assert [key for key, _ in finished] == ["2", "1", "0"]
    devices = sorted(device for _, device in finished)
    assert devices == ["cuda:0", "cuda:0", "cuda:1"]  # each slot used once, two jobs on one GPU
    assert runner.peak == 3


def test_slots_bound_concurrency_and_explicit_devices_are_kept():
    runner = RecordingRunner()
    with LocalExecutor(runner, ["cpu"]) as executor:
        placed = [executor.submit(Job(key=str(i), task="t", payload={"sleep_s": 0.05, "device": "auto"}))
                  for i in range(3)]
        assert all(future.result().value["device"] == "cpu" for future in placed)
        assert runner.peak == 1  # one slot: placed jobs run one at a time
        threads = [threading.Thread(target=lambda: results.append(executor.run("t", {"sleep_s": 0.2, "device": "cpu"})))
                   for _ in range(2)]
        results: list[SandboxResult] = []
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert runner.peak == 2  # explicit devices take no slot: the runner's own pool bounds them
    assert all(result.value["device"] == "cpu" for result in results)
    no_device = LocalExecutor(RecordingRunner(), ["cuda:0"]).run("t", {})
    assert no_device.value["device"] is None  # payloads that ask for no device (Zen) are left alone


def test_a_broken_runner_is_a_worker_lost_result_not_an_exception():
    with LocalExecutor(RecordingRunner(), ["cpu"]) as executor:
        result = executor.submit(Job(key="x", task="t", payload={"explode": True})).result()
    assert not result.ok and result.error_type == "WorkerLost"
    assert "sandbox is closed" in result.error_message


def test_executor_config_validation():
    config = config_from_dict({"executor": {"name": "ray", "address": "auto", "task_gpus": 0.5}})
    assert config.executor.name == "ray" and config.executor.task_gpus == 0.5
    with pytest.raises(ConfigError, match="executor.name"):
        config_from_dict({"executor": {"name": "dask"}})
    with pytest.raises(ConfigError, match="executor.per_gpu"):
        config_from_dict({"executor": {"per_gpu": 0}})


def test_train_evaluator_config_names_bad_presets_fields_and_data():
    config = config_from_dict({"evaluator": {"name": "train"}})
    assert config.evaluator.train is not None and config.evaluator.train.preset == "short"
    with pytest.raises(ConfigError, match="evaluator.train"):
        config_from_dict({"evaluator": {"name": "train", "train": {"preset": "forever"}}})
    with pytest.raises(ConfigError, match="epochz"):
        config_from_dict({"evaluator": {"name": "train", "train": {"settings": {"epochz": 3}}}})
    with pytest.raises(ConfigError, match="evaluator.train"):
        config_from_dict({"evaluator": {"name": "train", "train": {"data": {"name": "mnist"}}}})
    with pytest.raises(ConfigError, match="device"):
        config_from_dict({"evaluator": {"name": "train", "train": {"device": "tpu"}}})
