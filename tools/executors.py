"""Executors: where evaluation tasks run, one interface for a local pool and a Ray cluster.

An evaluator hands an executor a *job* (a sandbox task name, its payload, a timeout) and gets a
:class:`~archsmith.tools.results.SandboxResult` back, blocking (:meth:`Executor.run`, the
``TaskRunner`` shape the evaluators use) or as a future (:meth:`Executor.submit`); a batch streams
its results back in the order they finish (:func:`as_completed`). A failure of the machinery
(a worker that died, a cluster that went away) is a result too (``error_type`` ``WorkerLost``),
never an exception and never a lost candidate.

* :class:`LocalExecutor` runs jobs on this machine through a task runner (the run's sandbox: a
  pool of warm, isolated worker processes). It owns *device slots*: each GPU appears
  ``per_gpu`` times (several small candidates share one GPU, FairNAD ran two), without GPUs the
  CPU appears once per worker. A job takes a free slot and its payload's ``device`` names it.
* :class:`~archsmith.tools.ray_executor.RayExecutor` sends each job to a Ray task with
  ``num_cpus``/``num_gpus`` resources; there the job runs in the worker's own sandbox.

A payload whose ``device`` is ``"auto"`` gets its slot's device (``"cpu"`` or ``"cuda:N"``);
payloads without one (Zen-score) are left alone. The sandbox lifts its address-space limit and
opens the GPU device files for a CUDA job (tools/sandbox.py).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.results import SandboxResult

__all__ = [
    "Executor",
    "Job",
    "LocalExecutor",
    "TaskRunner",
    "as_completed",
    "available_gpus",
    "device_slots",
    "worker_lost",
]


class TaskRunner(Protocol):
    """What runs one task on a candidate: tools.sandbox.Sandbox, or the in-process runner."""

    mechanism: str

    def run(self, task: str, payload: dict[str, Any], timeout_s: float | None = None) -> SandboxResult:
        ...


class Job(BaseModel):
    """One unit of work: run ``task`` on ``payload``; ``key`` names it (a candidate id)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    task: str
    payload: dict[str, Any]
    timeout_s: float | None = Field(None, gt=0, description="Hard limit; None: the runner's default.")


class Executor(Protocol):
    name: str
    mechanism: str

    def submit(self, job: Job) -> concurrent.futures.Future[SandboxResult]:
        """Start ``job``; the future always resolves to a result (never raises)."""

    def run(self, task: str, payload: dict[str, Any], timeout_s: float | None = None) -> SandboxResult:
        """Run one task and wait for it (the TaskRunner shape evaluators use)."""

    def close(self) -> None:
        """Stop accepting jobs and release workers (and a cluster this executor started)."""


def worker_lost(message: str, **fields: Any) -> SandboxResult:
    """The result of a job whose worker died (or whose cluster failed) and was not recovered."""
    return SandboxResult(ok=False, error_type="WorkerLost", error_message=message, **fields)


def as_completed(executor: Executor, jobs: Iterable[Job]) -> Iterator[tuple[Job, SandboxResult]]:
    """Submit every job and yield (job, result) as each finishes, fastest first."""
    futures = {executor.submit(job): job for job in jobs}
    for future in concurrent.futures.as_completed(futures):
        yield futures[future], future.result()


def available_gpus() -> int:
    """CUDA devices torch sees here (0 without torch's CUDA or a GPU)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU, not a crash
        return 0


def device_slots(devices: Sequence[str] | str, per_gpu: int, cpu_slots: int) -> list[str]:
    """The device of every concurrent slot.

    ``"auto"``: every visible GPU ``per_gpu`` times, or the CPU ``cpu_slots`` times without GPUs.
    A list names devices (``["cuda:0", "cuda:1"]`` or ``["cpu"]``): a GPU entry gives ``per_gpu``
    slots, a ``cpu`` entry one slot each time it appears.
    """
    if devices == "auto":
        gpus = available_gpus()
        if gpus == 0:
            return ["cpu"] * cpu_slots
        return [f"cuda:{index}" for index in range(gpus) for _ in range(per_gpu)]
    slots: list[str] = []
    for device in devices:
        if device == "cpu":
            slots.append("cpu")
        elif device.startswith("cuda"):
            slots.extend([device] * per_gpu)
        else:
            raise ValueError(f"executor device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    if not slots:
        raise ValueError("executor devices: the list is empty")
    return slots


class LocalExecutor:
    """Jobs run through ``runner`` on this machine, at most one per device slot at a time.

    Only jobs that ask for a device (``"auto"``) take a slot; the others (Zen-score) go straight
    to the runner, whose own pool bounds them.

    The runner must run at least ``len(slots)`` tasks at once (a Sandbox with that many workers)
    for the slots to be used in parallel.
    """

    name = "local"

    def __init__(self, runner: TaskRunner, slots: Sequence[str]) -> None:
        if not slots:
            raise ValueError("a local executor needs at least one device slot")
        self.runner = runner
        self.slots = list(slots)
        self.mechanism = f"local ({', '.join(_slot_summary(self.slots))}), {runner.mechanism}"
        self._free: queue.Queue[str] = queue.Queue()
        for slot in self.slots:
            self._free.put(slot)
        runner_workers = getattr(runner, "workers", 1)  # a Sandbox's pool size
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(len(self.slots), runner_workers if isinstance(runner_workers, int) else 1),
            thread_name_prefix="archsmith-executor",
        )
        self._lock = threading.Lock()
        self._closed = False

    def run(self, task: str, payload: dict[str, Any], timeout_s: float | None = None) -> SandboxResult:
        if payload.get("device") != "auto":  # no device to place (Zen-score on the CPU): no slot taken
            return self._run_on(None, task, payload, timeout_s)
        slot = self._free.get()
        try:
            return self._run_on(slot, task, payload, timeout_s)
        finally:
            self._free.put(slot)

    def submit(self, job: Job) -> concurrent.futures.Future[SandboxResult]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is closed")
            return self._pool.submit(self.run, job.task, job.payload, job.timeout_s)

    def _run_on(self, slot: str | None, task: str, payload: dict[str, Any], timeout_s: float | None) -> SandboxResult:
        placed = {**payload, "device": slot} if slot is not None else payload
        try:
            return self.runner.run(task, placed, timeout_s)
        except Exception as exc:  # noqa: BLE001 - a closed or broken runner: the job is lost, not the caller
            return worker_lost(f"the local runner failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _slot_summary(slots: Sequence[str]) -> list[str]:
    counts: dict[str, int] = {}
    for slot in slots:
        counts[slot] = counts.get(slot, 0) + 1
    return [f"{device} x{count}" for device, count in counts.items()]
