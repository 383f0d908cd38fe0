"""The Ray executor: each job is a Ray task with CPU/GPU resources, run in the worker's sandbox.

Choosing it is one config line (``[executor] name = "ray"``). ``address = None`` starts a local
Ray instance for the run (and stops it afterwards); ``"auto"`` or ``"ray://host:10001"`` joins a
running cluster. Results are the same :class:`~archsmith.tools.results.SandboxResult` objects as
the local executor's, sent back as plain data and delivered as each job finishes.

Failures: Ray re-runs a task whose worker process died (``max_retries`` times); after that, or
when the cluster itself fails, the job's result is ``WorkerLost``: the candidate is marked
failed, never lost. A task's own failure (the candidate raised, timed out, ran out of memory) is
classified by the worker's sandbox and not retried.

Network: a local instance is started loopback-only. Ray picks its node address by probing a
route to a public resolver and, even with usage statistics off, its API server asks the
cloud-metadata addresses (169.254.169.254, metadata.google.internal) which cloud it runs on.
:data:`LOOPBACK_ENVIRONMENT` pins the node to 127.0.0.1 and sends those HTTP probes to a closed
loopback port; tests/test_ray_executor.py checks under strace that no process of the instance
attempts a connection off the loopback. Both the variables and Ray's node-address constant are
set only while the local instance starts (:func:`_loopback_only`), and put back after.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.environ import scoped_environ
from archsmith.tools.executors import Job, worker_lost
from archsmith.tools.results import SandboxResult

__all__ = ["LOOPBACK_ENVIRONMENT", "RayExecutor", "RayUnavailable", "RunnerSpec"]

_CLOSED_LOOPBACK_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connects fail fast
LOOPBACK_ENVIRONMENT: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node address = loopback, no route probe
    "RAY_USAGE_STATS_ENABLED": "0",
    **{name: _CLOSED_LOOPBACK_PROXY for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")},
    **{name: "127.0.0.1,localhost,::1" for name in ("no_proxy", "NO_PROXY")},
}


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster could not be started or reached."""


class RunnerSpec(BaseModel):
    """How a Ray worker runs a job: its own sandbox (``limits``) or, for debugging, in-process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: str = Field("sandbox", pattern="^(sandbox|inprocess)$")
    limits: tuple[tuple[str, Any], ...] = ()  # SandboxLimits fields, as a hashable tuple
    torch_threads: int | None = 1
    python_path: tuple[str, ...] = ()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(
            "executor.name = 'ray' needs Ray: pip install 'archsmith[ray]'"
        ) from exc
    return ray


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While a local instance starts: :data:`LOOPBACK_ENVIRONMENT` in os.environ (the processes Ray
    starts inherit it) and Ray's node-address rule off, so that its node listens on 127.0.0.1, not
    on the machine's address; both put back after.

    Ray computes the rule (``ray_constants.ENABLE_RAY_CLUSTER``) from the environment when it is
    imported and reads it when ``ray.init`` picks the node's address (later calls ask the node).
    """
    from ray._private import ray_constants

    with scoped_environ(LOOPBACK_ENVIRONMENT):
        saved = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            yield
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = saved


class RayExecutor:
    """Jobs as Ray tasks; see the module docstring."""

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        task_cpus: float = 1.0,
        task_gpus: float | None = None,
        per_gpu: int = 1,
        max_retries: int = 2,
        runner: RunnerSpec | None = None,
    ) -> None:
        ray = _import_ray()
        self._ray = ray
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            try:
                if address is None:
                    with _loopback_only():
                        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                                 log_to_driver=False, _node_ip_address="127.0.0.1")
                else:
                    ray.init(address=address, log_to_driver=False)
            except Exception as exc:  # noqa: BLE001 - ray raises many kinds; all mean "no cluster"
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise RayUnavailable(f"could not start or reach {where}: {type(exc).__name__}: {exc}") from exc
        cluster = ray.cluster_resources()
        self.cluster_cpus = float(cluster.get("CPU", 0))
        self.cluster_gpus = float(cluster.get("GPU", 0))
        if task_gpus is None:
            task_gpus = 1.0 / per_gpu if self.cluster_gpus > 0 else 0.0
        self.task_cpus, self.task_gpus = float(task_cpus), float(task_gpus)
        self.runner = runner or RunnerSpec()
        self._remote = ray.remote(_run_job).options(
            num_cpus=self.task_cpus, num_gpus=self.task_gpus, max_retries=max_retries, retry_exceptions=False
        )
        where = address or "local 127.0.0.1"
        self.mechanism = (
            f"ray ({where}: {self.cluster_cpus:g} CPU, {self.cluster_gpus:g} GPU; per task "
            f"{self.task_cpus:g} CPU, {self.task_gpus:g} GPU; {max_retries} retries), worker {self.runner.mode}"
        )
        self._closed = False

    def submit(self, job: Job) -> concurrent.futures.Future[SandboxResult]:
        if self._closed:
            raise RuntimeError("the executor is closed")
        result: concurrent.futures.Future[SandboxResult] = concurrent.futures.Future()
        try:
            ref = self._remote.remote(job.task, job.payload, job.timeout_s, self.runner)
        except Exception as exc:  # noqa: BLE001 - could not even submit: the job fails, visibly
            result.set_result(worker_lost(f"Ray did not accept the task: {type(exc).__name__}: {exc}"))
            return result
        ref.future().add_done_callback(lambda done: result.set_result(self._to_result(done)))
        return result

    def _to_result(self, done: concurrent.futures.Future[Any]) -> SandboxResult:
        try:
            value = done.result()
        except Exception as exc:  # noqa: BLE001 - a dead worker, node or owner after its retries
            kind = type(exc).__name__
            first_line = (str(exc).strip().splitlines() or [""])[0]
            return worker_lost(f"Ray task failed ({kind}): {first_line}", mechanism=self.mechanism)
        try:
            return SandboxResult.model_validate(value)
        except Exception as exc:  # noqa: BLE001
            return worker_lost(f"the Ray worker returned no result object: {exc}", mechanism=self.mechanism)

    def run(self, task: str, payload: dict[str, Any], timeout_s: float | None = None) -> SandboxResult:
        return self.submit(Job(key=payload.get("candidate_id") or "job", task=task, payload=payload,
                               timeout_s=timeout_s)).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_connection:
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- in the Ray worker

# One warm runner per Ray worker process and spec, so that a worker pays the sandbox start-up once
# (a cache, not shared state: each process builds its own, and nothing reads it but _run_job).
_WORKER_RUNNERS: dict[RunnerSpec, Any] = {}


def _worker_runner(spec: RunnerSpec) -> Any:
    runner = _WORKER_RUNNERS.get(spec)
    if runner is None:
        for path in reversed(spec.python_path):
            if path not in sys.path:
                sys.path.insert(0, path)
        if spec.mode == "inprocess":
            from archsmith.tools.sandbox_inprocess import InProcessRunner

            runner = InProcessRunner()
        else:
            from archsmith.tools.sandbox import Sandbox, SandboxLimits

            # All GPUs visible to the sandbox: jobs name theirs ("cuda:N", Ray's physical id), and
            # the sandbox outlives the task whose CUDA_VISIBLE_DEVICES Ray set.
            env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
            runner = Sandbox(SandboxLimits(**dict(spec.limits)), workers=1, python_path=spec.python_path,
                             torch_threads=spec.torch_threads, env=env)
        _WORKER_RUNNERS[spec] = runner
    return runner


def _run_job(task: str, payload: dict[str, Any], timeout_s: float | None, spec: RunnerSpec) -> dict[str, Any]:
    """The Ray task: place the job on this worker's GPU (if any), run it, return plain data."""
    import ray

    if payload.get("device") == "auto":
        gpu_ids: Sequence[Any] = ray.get_gpu_ids()
        # In-process the job sees Ray's CUDA_VISIBLE_DEVICES (its GPU is cuda:0); the sandbox sees all.
        device = ("cuda:0" if spec.mode == "inprocess" else f"cuda:{int(gpu_ids[0])}") if gpu_ids else "cpu"
        payload = {**payload, "device": device}
    result = _worker_runner(spec).run(task, payload, timeout_s)
    return result.model_dump(mode="json")
