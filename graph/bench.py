"""Search-method benchmark on a tabular benchmark: every method, one harness, one budget.

``run_bench(spec)`` loads the space and the table once, then runs each method ``spec.runs``
times with the same seeds (run r of every method uses :func:`run_seeds`'s r-th seed), each
spending ``spec.budget`` DISTINCT architectures (see :mod:`archsmith.tools.baselines`). The
signal is the table's signal column (``valid_acc`` by default, any column with ``--signal``);
the names ``*_valid`` below mean "of the signal". Per run it records the reported test metric of
the architecture with the best signal among those evaluated, the best test metric among them,
the regret (the table's best signal minus the best signal found), and whether and when the
table's best signal was reached: the first evaluation whose signal equals the table's best, so
every architecture tied for the best counts. Means and stds over runs use the population std
(numpy's default, ddof=0).

Methods: a registry ``name -> (problem, budget, seed) -> list[Evaluation] | MethodRun``. ``rs``,
``rea``, ``ea`` and ``reinforce`` come from the baselines; ``agents`` is imported lazily from
``archsmith.graph.bench_agents`` with the spec's agents options. A method that returns a
:class:`MethodRun` may say how many of its seconds went into its own model (a surrogate's
fitting and prediction); the bench reports that as a share of the wall time.

The outputs (results.json, the CSVs, curves.png, the rich table) are in
:mod:`archsmith.graph.bench_output`.
"""

from __future__ import annotations

import math
import random
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from archsmith.tools.baselines import (
    Evaluation,
    SearchProblem,
    elitist_evolution,
    random_search,
    regularized_evolution,
    reinforce,
)
from archsmith.tools.spaces.base import EnumerableSpace, SpaceError, get_space
from archsmith.tools.tabular import TabularBenchmark, TabularError, TabularSpec


@dataclass(frozen=True)
class MethodRun:
    """What a method may return instead of its bare evaluations: ``model_seconds`` is the time
    spent in the method's own model (fitting and predicting a surrogate), None when it has none."""

    evaluations: list[Evaluation]
    model_seconds: float | None = None


Method = Callable[[SearchProblem, int, int], list[Evaluation] | MethodRun]
Progress = Callable[[str, int, int], None]
"""Called as (method, runs done, runs in all), once before a method's first run and after each."""

STD_NOTE = "population std (ddof=0) over runs"
DEFAULT_METHODS = ("rs", "rea", "reinforce", "agents")


def _seeded(search: Callable[[SearchProblem, int, random.Random], list[Evaluation]]) -> Method:
    def method(problem: SearchProblem, budget: int, seed: int) -> list[Evaluation]:
        return search(problem, budget, random.Random(seed))

    method.__doc__ = search.__doc__
    return method


METHODS: dict[str, Method] = {
    "rs": _seeded(random_search),
    "rea": _seeded(regularized_evolution),
    "ea": _seeded(elitist_evolution),
    "reinforce": _seeded(reinforce),
}


def register_method(name: str, method: Method) -> Method:
    """Add a method to the registry (``agents`` is resolved lazily unless registered here)."""
    METHODS[name] = method
    return method


class BenchError(ValueError):
    """A bench that cannot run: unknown method or space, unusable table."""


class BenchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space: str = Field("nb201", description="Registered enumerable search space.")
    space_settings: dict[str, Any] = Field(default_factory=dict)
    table: TabularSpec = Field(description="The table; its signal column is what the methods see.")
    test_metric: str = Field("test_acc", description="Reported column used for the figures (may be the signal).")
    budget: int = Field(100, ge=1, description="Distinct architectures evaluated per run.")
    runs: int = Field(10, ge=1)
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    seed: int = Field(0, ge=0)
    agents_config: str | None = Field(None, description="Config file for the agents method.")
    agents_overrides: list[str] = Field(default_factory=list, description="Dotted overrides for agents.")


class RunResult(BaseModel):
    run: int
    seed: int
    test_of_best_valid: float | None
    best_valid: float | None
    best_arch: str | None
    best_test: float | None
    evals_to_best_valid: int | None = Field(
        description="Index (from 1) of the first evaluation whose signal equals the table's best signal "
        "(any of the tied architectures); None when the run never reached it."
    )
    regret: float | None = Field(
        None, description="The table's best signal minus the best signal of the run (0 when reached)."
    )
    n_evaluations: int
    proposals: int
    wall_seconds: float
    model_seconds: float | None = Field(
        None, description="Seconds of the wall time spent in the method's own model, when it reports them."
    )
    curve: list[float | None] = Field(description="Best-so-far signal after each evaluation.")
    evaluations: list[Evaluation] = Field(default_factory=list, exclude=True, repr=False)


class MethodResult(BaseModel):
    test_of_best_valid_mean: float | None
    test_of_best_valid_std: float | None
    best_test_mean: float | None
    best_test_std: float | None
    runs_reaching_best_valid: int
    median_evals_to_best_valid: float | None
    regret_mean: float | None = None
    regret_std: float | None = None
    evals_to_best_valid_mean: float | None = Field(None, description="Mean over the runs that reached the best.")
    wall_seconds: float
    model_seconds: float | None = Field(None, description="Sum over runs, when the method reports it.")
    runs: list[RunResult]
    curve_mean: list[float | None]
    curve_std: list[float | None]


class TableInfo(BaseModel):
    path: str
    dataset: str | None = Field(description="None for a table with no dataset column.")
    signal: str = Field("valid_acc", description="The column the methods see; best_valid is its best value.")
    rows: int
    best_valid_arch: str
    best_valid: float
    best_valid_archs: int = Field(1, description="Architectures tied for the best signal (each counts as reaching it).")
    test_of_best_valid: float | None
    best_test: float


class BenchResult(BaseModel):
    spec: BenchSpec
    std: str = STD_NOTE
    table: TableInfo
    methods: dict[str, MethodResult]


def run_seeds(seed: int, runs: int) -> list[int]:
    """The seed of each run, derived from (seed, run) and shared by every method."""
    return [int(np.random.SeedSequence([seed, run]).generate_state(1)[0]) for run in range(runs)]


def resolve_method(name: str, spec: BenchSpec, extra: Mapping[str, Method] | None = None) -> Method:
    """``extra`` first, then the registry, then the lazily imported agents method."""
    if extra and name in extra:
        return extra[name]
    if name in METHODS:
        return METHODS[name]
    if name == "agents":
        try:
            from archsmith.graph.bench_agents import run_agents
        except ImportError as error:
            raise BenchError(f"method 'agents' is not available: {error}") from None
        return partial(
            run_agents,
            overrides=list(spec.agents_overrides),
            config_path=spec.agents_config,
            space_settings=dict(spec.space_settings),
        )
    known = ", ".join(sorted({*METHODS, *(extra or {}), "agents"}))
    raise BenchError(f"unknown method {name!r}; known methods: {known}")


def load_problem(spec: BenchSpec) -> tuple[SearchProblem, TabularBenchmark]:
    """The space (must be enumerable) and its table, loaded once per bench."""
    try:
        space = get_space(spec.space, spec.space_settings)
    except SpaceError as error:
        raise BenchError(str(error)) from None
    if not isinstance(space, EnumerableSpace):
        raise BenchError(f"search space {spec.space!r} is not enumerable (no choices/encode/decode/sample)")
    table_spec = spec.table
    if spec.test_metric not in table_spec.report:
        table_spec = table_spec.model_copy(update={"report": [*table_spec.report, spec.test_metric]})
    try:
        table = TabularBenchmark.load(table_spec, space)
    except TabularError as error:
        raise BenchError(str(error)) from None
    return SearchProblem.from_table(space, table), table


def run_bench(
    spec: BenchSpec, progress: Progress | None = None, methods: Mapping[str, Method] | None = None
) -> BenchResult:
    """Run every method of ``spec`` ``spec.runs`` times; ``methods`` adds or replaces entries."""
    resolved = {name: resolve_method(name, spec, methods) for name in spec.methods}
    problem, table = load_problem(spec)
    signal = table.spec.signal
    best_arch, best_row = table.best()
    best_signal = best_row[signal]
    seeds = run_seeds(spec.seed, spec.runs)
    results: dict[str, MethodResult] = {}
    for name, method in resolved.items():
        if progress:
            progress(name, 0, spec.runs)
        runs = []
        for index, seed in enumerate(seeds):
            started = time.perf_counter()
            outcome = method(problem, spec.budget, seed)
            wall = time.perf_counter() - started
            if not isinstance(outcome, MethodRun):
                outcome = MethodRun(list(outcome))
            runs.append(
                summarise_run(
                    outcome.evaluations, index, seed, wall, best_signal, spec.test_metric, outcome.model_seconds
                )
            )
            if progress:
                progress(name, index + 1, spec.runs)
        results[name] = aggregate(runs, spec.budget)
    info = TableInfo(
        path=table.source,
        dataset=table.dataset,
        signal=signal,
        rows=len(table),
        best_valid_arch=best_arch,
        best_valid=best_signal,
        best_valid_archs=sum(1 for row in table.rows.values() if reaches(row[signal], best_signal)),
        test_of_best_valid=best_row.get(spec.test_metric),
        best_test=max(row[spec.test_metric] for row in table.rows.values()),
    )
    return BenchResult(spec=spec, table=info, methods=results)


def reaches(signal: float | None, best: float) -> bool:
    """Whether ``signal`` is the table's best (equal up to float rounding, e.g. of a CSV round trip)."""
    return signal is not None and (signal >= best or math.isclose(signal, best, rel_tol=1e-12, abs_tol=1e-12))


def summarise_run(
    evaluations: list[Evaluation],
    run: int,
    seed: int,
    wall: float,
    best_signal: float,
    test_metric: str,
    model_seconds: float | None = None,
) -> RunResult:
    """The per-run figures; only the signal picks the architecture, the test metric is read after.
    ``best_signal`` is the table's best signal: the run reaches it at the first evaluation whose
    signal equals it, whichever of the tied architectures that is."""
    valid = [e for e in evaluations if e.signal is not None]
    chosen = max(valid, key=lambda e: e.signal, default=None)  # first of equal signals
    tests = [e.report[test_metric] for e in evaluations if test_metric in e.report]
    reached = next((e.index for e in evaluations if reaches(e.signal, best_signal)), None)
    curve: list[float | None] = []
    best: float | None = None
    for evaluation in evaluations:
        if evaluation.signal is not None and (best is None or evaluation.signal > best):
            best = evaluation.signal
        curve.append(best)
    return RunResult(
        run=run,
        seed=seed,
        test_of_best_valid=chosen.report.get(test_metric) if chosen else None,
        best_valid=chosen.signal if chosen else None,
        best_arch=chosen.arch if chosen else None,
        best_test=max(tests, default=None),
        evals_to_best_valid=reached,
        regret=max(best_signal - chosen.signal, 0.0) if chosen else None,
        n_evaluations=len(evaluations),
        proposals=evaluations[-1].proposals if evaluations else 0,
        wall_seconds=wall,
        model_seconds=model_seconds,
        curve=curve,
        evaluations=evaluations,
    )


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return None, None
    return float(present.mean()), float(present.std())  # ddof=0


def aggregate(runs: list[RunResult], budget: int) -> MethodResult:
    """Mean and population std over runs; curves padded with their last value up to ``budget``."""
    tobv_mean, tobv_std = _mean_std([r.test_of_best_valid for r in runs])
    test_mean, test_std = _mean_std([r.best_test for r in runs])
    regret_mean, regret_std = _mean_std([r.regret for r in runs])
    reached = [r.evals_to_best_valid for r in runs if r.evals_to_best_valid is not None]
    model = [r.model_seconds for r in runs if r.model_seconds is not None]
    length = max([budget, *(len(r.curve) for r in runs)])
    curves = np.full((len(runs), length), np.nan)
    for row, r in enumerate(runs):
        padded = r.curve + [r.curve[-1] if r.curve else None] * (length - len(r.curve))
        curves[row] = [np.nan if v is None else v for v in padded]
    with warnings.catch_warnings():  # all-NaN columns (no valid signal yet) are expected
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
    return MethodResult(
        test_of_best_valid_mean=tobv_mean,
        test_of_best_valid_std=tobv_std,
        best_test_mean=test_mean,
        best_test_std=test_std,
        runs_reaching_best_valid=len(reached),
        median_evals_to_best_valid=float(statistics.median(reached)) if reached else None,
        regret_mean=regret_mean,
        regret_std=regret_std,
        evals_to_best_valid_mean=statistics.fmean(reached) if reached else None,
        wall_seconds=sum(r.wall_seconds for r in runs),
        model_seconds=sum(model) if model else None,
        runs=runs,
        curve_mean=[None if np.isnan(v) else float(v) for v in mean],
        curve_std=[None if np.isnan(v) else float(v) for v in std],
    )
