"""Evaluators: how a verified candidate gets its score.

* :class:`TaskEvaluator` runs a scoring task on the candidate through an executor (a local pool of
  sandboxed workers or a Ray cluster, tools/executors.py): Zen-score (``ZEN_TASK``), training
  (``TRAIN_TASK``), PhaseNAS's detection proxy (``NAS_DET_TASK``), a subnet with weights
  inherited from a supernet (``SUPERNET_TASK``). The candidate is code: it must be executed, and the Verifier has already built
  and run it.
* :class:`TabularEvaluator` looks the candidate up in a tabular benchmark: nothing is executed,
  params/FLOPs come from the table, the signal column is the score and the report columns (test
  accuracy) are recorded for reporting only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from archsmith.tools.executors import TaskRunner
from archsmith.tools.results import SandboxResult, ScoreResult
from archsmith.tools.tabular import TabularBenchmark

__all__ = [
    "DETECTION_TRAIN_TASK", "NAS_DET_TASK", "SUPERNET_TASK", "TRAIN_TASK", "ZEN_TASK",
    "Evaluator", "TabularEvaluator", "TaskEvaluator", "TaskRunner", "score_from_task",
]

ZEN_TASK = "archsmith.tools.tasks:zen_score_candidate"
TRAIN_TASK = "archsmith.tools.train_task:train_candidate"
NAS_DET_TASK = "archsmith.tools.detection_tasks:nas_det_candidate"
DETECTION_TRAIN_TASK = "archsmith.tools.detection_tasks:train_detection_candidate"
SUPERNET_TASK = "archsmith.tools.supernets.evaluate:evaluate_subnet_candidate"
# Keys of a task's value that describe the run (kept in ScoreResult.details): curves, devices.
_DETAIL_KEYS = ("curve", "device", "stopped_early", "warnings", "num_classes")


class Evaluator(Protocol):
    name: str
    needs_execution: bool  # the Verifier must build and run the candidate before scoring

    def evaluate(self, text: str) -> ScoreResult:
        """The candidate's score (higher is better); a failure is a result, never an exception."""

    def measure(self, text: str) -> tuple[int | None, int | None]:
        """(params, FLOPs) known without running the candidate, or (None, None)."""


def score_from_task(name: str, result: SandboxResult) -> ScoreResult:
    """The ScoreResult a scoring task's SandboxResult stands for (a failure when it has no score)."""
    value = result.value
    if not result.ok or value.get("score") is None:
        return ScoreResult(
            ok=False,
            name=name,
            error_type=result.error_type or "NoScore",
            error_message=result.error_message or "the score task returned no score",
            traceback=result.traceback,
            stdout=result.stdout,
            timed_out=result.timed_out,
            duration_s=result.duration_s,
        )
    report = {
        key: float(number) for key, number in (value.get("report") or {}).items()
        if isinstance(number, int | float) and not isinstance(number, bool)
    }
    return ScoreResult(
        ok=True,
        name=name,
        score=float(value["score"]),
        std=float(value.get("std") or 0.0),
        repeats=int(value.get("repeats") or 0),
        settings=dict(value.get("settings") or {}),
        report=report,
        details={key: value[key] for key in _DETAIL_KEYS if key in value},
        duration_s=result.duration_s,
    )


class TaskEvaluator:
    """Scores a candidate by running ``task`` on ``payload(text)`` through ``runner``.

    ``runner`` is an executor (or anything with the TaskRunner shape, e.g. a Sandbox).
    """

    needs_execution = True

    def __init__(
        self,
        name: str,
        task: str,
        runner: TaskRunner,
        payload: Callable[[str], dict[str, Any]],
        timeout_s: float,
    ) -> None:
        self.name = name
        self.task = task
        self.runner = runner
        self.payload = payload
        self.timeout_s = timeout_s

    def evaluate(self, text: str) -> ScoreResult:
        return score_from_task(self.name, self.runner.run(self.task, self.payload(text), self.timeout_s))

    def measure(self, text: str) -> tuple[int | None, int | None]:
        return None, None


class TabularEvaluator:
    name = "tabular"
    needs_execution = False

    def __init__(self, table: TabularBenchmark) -> None:
        self.table = table

    def evaluate(self, text: str) -> ScoreResult:
        return self.table.evaluate(text)

    def measure(self, text: str) -> tuple[int | None, int | None]:
        return self.table.profile(text)
