"""Search-method benchmark on a tabular benchmark: every method, one harness, one budget.

``run_bench(spec)`` loads the space and the table once, then runs each method ``spec.runs``
times with the same seeds (run r of every method uses :func:`run_seeds`'s r-th seed), each
spending ``spec.budget`` DISTINCT architectures (see :mod:`archsmith.tools.baselines`). Per run
it records the reported test accuracy of the architecture with the best signal (validation
accuracy) among those evaluated, the best test accuracy among them, and whether and when the
table's best-validation architecture was evaluated. Means and stds over runs use the population
std (numpy's default, ddof=0).

Methods: a registry ``name -> (problem, budget, seed) -> list[Evaluation]``. ``rs``, ``rea`` and
``reinforce`` come from the baselines; ``agents`` is imported lazily from
``archsmith.graph.bench_agents`` with the spec's agents options.
"""

from __future__ import annotations

import csv
import json
import random
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
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

Method = Callable[[SearchProblem, int, int], list[Evaluation]]
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
    table: TabularSpec
    test_metric: str = Field("test_acc", description="Reported column used for the figures.")
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
    evals_to_best_valid: int | None = Field(description="Index at which the table's best-valid arch came.")
    n_evaluations: int
    proposals: int
    wall_seconds: float
    curve: list[float | None] = Field(description="Best-so-far signal after each evaluation.")
    evaluations: list[Evaluation] = Field(default_factory=list, exclude=True, repr=False)


class MethodResult(BaseModel):
    test_of_best_valid_mean: float | None
    test_of_best_valid_std: float | None
    best_test_mean: float | None
    best_test_std: float | None
    runs_reaching_best_valid: int
    median_evals_to_best_valid: float | None
    wall_seconds: float
    runs: list[RunResult]
    curve_mean: list[float | None]
    curve_std: list[float | None]


class TableInfo(BaseModel):
    path: str
    dataset: str
    rows: int
    best_valid_arch: str
    best_valid: float
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
    best_arch, best_row = table.best()
    seeds = run_seeds(spec.seed, spec.runs)
    results: dict[str, MethodResult] = {}
    for name, method in resolved.items():
        if progress:
            progress(name, 0, spec.runs)
        runs = []
        for index, seed in enumerate(seeds):
            started = time.perf_counter()
            evaluations = method(problem, spec.budget, seed)
            wall = time.perf_counter() - started
            runs.append(summarise_run(evaluations, index, seed, wall, best_arch, spec.test_metric))
            if progress:
                progress(name, index + 1, spec.runs)
        results[name] = aggregate(runs, spec.budget)
    info = TableInfo(
        path=table.source,
        dataset=table.spec.dataset,
        rows=len(table),
        best_valid_arch=best_arch,
        best_valid=best_row[table.spec.signal],
        test_of_best_valid=best_row.get(spec.test_metric),
        best_test=max(row[spec.test_metric] for row in table.rows.values()),
    )
    return BenchResult(spec=spec, table=info, methods=results)


def summarise_run(
    evaluations: list[Evaluation], run: int, seed: int, wall: float, best_arch: str, test_metric: str
) -> RunResult:
    """The per-run figures; only the signal picks the architecture, the test metric is read after."""
    valid = [e for e in evaluations if e.signal is not None]
    chosen = max(valid, key=lambda e: e.signal, default=None)  # first of equal signals
    tests = [e.report[test_metric] for e in evaluations if test_metric in e.report]
    reached = next((e.index for e in evaluations if e.arch == best_arch), None)
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
        n_evaluations=len(evaluations),
        proposals=evaluations[-1].proposals if evaluations else 0,
        wall_seconds=wall,
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
    reached = [r.evals_to_best_valid for r in runs if r.evals_to_best_valid is not None]
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
        wall_seconds=sum(r.wall_seconds for r in runs),
        runs=runs,
        curve_mean=[None if np.isnan(v) else float(v) for v in mean],
        curve_std=[None if np.isnan(v) else float(v) for v in std],
    )



SUMMARY_COLUMNS = (
    "test_of_best_valid_mean",
    "test_of_best_valid_std",
    "best_test_mean",
    "best_test_std",
    "runs_reaching_best_valid",
    "median_evals_to_best_valid",
    "wall_seconds",
)
RUN_COLUMNS = tuple(name for name in RunResult.model_fields if name not in ("curve", "evaluations"))


def write_outputs(result: BenchResult, out_dir: str | Path) -> dict[str, Path]:
    """results.json (everything), results.csv (one row per method), runs.csv (one row per run)
    and curves.png (best-so-far signal vs evaluations)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("results.json", "results.csv", "runs.csv", "curves.png")}
    paths["results.json"].write_text(json.dumps(result.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    with open(paths["results.csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", *SUMMARY_COLUMNS, "runs", "budget", "std"])
        for name, method in result.methods.items():
            values = method.model_dump()
            summary = [values[c] for c in SUMMARY_COLUMNS]
            writer.writerow([name, *summary, len(method.runs), result.spec.budget, STD_NOTE])
    with open(paths["runs.csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", *RUN_COLUMNS])
        for name, method in result.methods.items():
            for run in method.runs:
                values = run.model_dump()
                writer.writerow([name, *(values[c] for c in RUN_COLUMNS)])
    plot_curves(result, paths["curves.png"])
    return paths


def plot_curves(result: BenchResult, path: Path) -> None:
    """Mean best-so-far signal per method with a +-1 std band (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, method in result.methods.items():
        mean = np.array([np.nan if v is None else v for v in method.curve_mean])
        std = np.array([np.nan if v is None else v for v in method.curve_std])
        steps = np.arange(1, len(mean) + 1)
        (line,) = axes.plot(steps, mean, label=name)
        axes.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    signal = result.spec.table.signal
    axes.axhline(result.table.best_valid, color="grey", linestyle="--", linewidth=1, label="table best")
    axes.set_xlabel("distinct architectures evaluated")
    axes.set_ylabel(f"best {signal} so far")
    axes.set_title(f"{result.spec.space} / {result.table.dataset}: mean over {result.spec.runs} runs, band = ±1 std")
    # Zoom past the first few (random) evaluations: start at the lowest mean after 10 of them.
    anchors = [m.curve_mean[min(9, len(m.curve_mean) - 1)] for m in result.methods.values() if m.curve_mean]
    anchors = [a for a in anchors if a is not None]
    if anchors:
        margin = 0.05 * max(result.table.best_valid - min(anchors), 1.0)
        axes.set_ylim(min(anchors) - margin, result.table.best_valid + margin)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {std:.2f}"


def render_table(result: BenchResult):
    """A rich table of the figures, one row per method."""
    from rich.table import Table

    spec, info = result.spec, result.table
    table = Table(
        title=f"{spec.space} on {info.dataset}: {spec.budget} distinct archs x {spec.runs} runs (seed {spec.seed})",
        caption=(
            f"± = {STD_NOTE}. Table: {info.rows} archs; best-valid arch {spec.table.signal} {info.best_valid:.2f}, "
            f"{spec.test_metric} {_num(info.test_of_best_valid)}; best {spec.test_metric} {info.best_test:.2f}. "
            f"'test' = {spec.test_metric} (never seen by the search); 'hit best valid' = runs that evaluated the "
            "table's best-valid arch, 'median evals' = after how many evaluations (median over those runs)."
        ),
    )
    short = any(r.n_evaluations < spec.budget for m in result.methods.values() for r in m.runs)
    table.add_column("method", no_wrap=True)
    table.add_column("test of best valid", justify="right", no_wrap=True)
    table.add_column("best test", justify="right", no_wrap=True)
    table.add_column("hit best valid", justify="right")
    table.add_column("median evals", justify="right")
    if short:  # some runs stopped early (space exhausted or proposal cap)
        table.add_column("evals (mean)", justify="right")
    table.add_column("wall s", justify="right")
    for name, method in result.methods.items():
        median = method.median_evals_to_best_valid
        cells = [
            name,
            _pm(method.test_of_best_valid_mean, method.test_of_best_valid_std),
            _pm(method.best_test_mean, method.best_test_std),
            f"{method.runs_reaching_best_valid}/{len(method.runs)}",
            "-" if median is None else f"{median:g}",
        ]
        if short:
            cells.append(f"{statistics.fmean(r.n_evaluations for r in method.runs):.1f}")
        table.add_row(*cells, f"{method.wall_seconds:.2f}")
    return table
