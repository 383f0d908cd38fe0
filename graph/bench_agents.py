"""The Archsmith agent graph as a bench method, evaluated exactly like the baselines.

``run_agents`` runs the graph (algorithmic policies unless the config says otherwise) on the
bench problem's space, scoring every child through the problem's own evaluation function, and
returns the distinct architectures it evaluated, in order, as :class:`Evaluation` records. The
budget is the same as the baselines': distinct architectures evaluated; duplicates are discarded
by the Verifier and cost nothing.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from archsmith.graph.bench import MethodRun
from archsmith.graph.config import load_config
from archsmith.graph.run import run
from archsmith.graph.trace import read_steps
from archsmith.tools.baselines import Evaluation, SearchProblem
from archsmith.tools.results import ScoreResult


class ProblemEvaluator:
    """An Evaluator backed by a bench problem's ``evaluate`` (a table lookup: nothing executed)."""

    name = "bench"
    needs_execution = False

    def __init__(self, problem: SearchProblem) -> None:
        self.problem = problem

    def evaluate(self, text: str) -> ScoreResult:
        signal, report = self.problem.evaluate(self.problem.space.canonical(text))
        if signal is None:
            return ScoreResult(ok=False, name=self.name, error_type="NotInTable",
                               error_message="the bench problem has no value for this architecture")
        return ScoreResult(ok=True, name=self.name, score=float(signal), repeats=1, report=dict(report))

    def measure(self, text: str) -> tuple[int | None, int | None]:
        """The table's cost columns: free to read, like profiling (never its accuracy columns)."""
        if self.problem.profile is None:
            return None, None
        return self.problem.profile(self.problem.space.canonical(text))


def run_agents(
    problem: SearchProblem,
    budget: int,
    seed: int,
    *,
    overrides: Sequence[str] = (),
    config_path: str | None = None,
    space_settings: Mapping[str, Any] | None = None,
    chat_models: Mapping[str, Any] | None = None,
) -> MethodRun:
    """One seeded run of the agent graph on ``problem`` with ``budget`` distinct evaluations.

    ``chat_models`` injects LangChain chat models for roles whose policy is ``llm`` (tests use
    fake ones); otherwise the config's endpoints are used.
    """
    settings = [f"space.settings.{key}={json.dumps(value)}" for key, value in (space_settings or {}).items()]
    with tempfile.TemporaryDirectory(prefix="archsmith-bench-") as scratch:
        base = [
            f"space.name={problem.space.name}",
            f"runs_dir='{scratch}'",
            f"seed={seed}",
            f"search.max_candidates={budget}",
            "parallel.workers=1",  # one child at a time: runs are reproducible under a seed
            "workflow.min_layers=1",
        ]
        config = load_config(config_path, [*base, *settings, *overrides])
        if not any(item.strip().startswith("budget.") for item in overrides) and config_path is None:
            # The baselines search the whole table: the default run's budget would bind only the
            # agents (the table's cost columns are read as their profile).
            config.budget.params_m = config.budget.flops_m = None
        result = run(config, evaluator=ProblemEvaluator(problem), chat_models=chat_models)
        model_seconds = sum(
            float((step.tools.get("model") or {}).get("seconds", 0.0))
            for step in read_steps(result.run_dir / "trace.sqlite", role="navigator")
        )
    evaluations: list[Evaluation] = []
    for proposals, record in enumerate(result.history, start=1):
        if record.get("status") == "valid":
            evaluations.append(
                Evaluation(len(evaluations) + 1, record["canonical"], record["score"],
                           dict(record.get("metrics") or {}), proposals)
            )
    return MethodRun(evaluations, model_seconds)
