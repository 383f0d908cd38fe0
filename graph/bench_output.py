"""The outputs of a bench (:mod:`archsmith.graph.bench`): results.json, the CSVs, the curves and
the rich table the CLI prints."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np

from archsmith.graph.bench import STD_NOTE, BenchResult, MethodResult, RunResult, TableInfo

SUMMARY_COLUMNS = (
    "test_of_best_valid_mean",
    "test_of_best_valid_std",
    "best_test_mean",
    "best_test_std",
    "runs_reaching_best_valid",
    "median_evals_to_best_valid",
    "wall_seconds",
    "regret_mean",
    "regret_std",
    "evals_to_best_valid_mean",
    "model_seconds",
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
    signal = result.table.signal
    axes.axhline(result.table.best_valid, color="grey", linestyle="--", linewidth=1, label="table best")
    axes.set_xlabel("distinct architectures evaluated")
    axes.set_ylabel(f"best {signal} so far")
    where = f"{result.spec.space} / {table_name(result.table)}"
    axes.set_title(f"{where}: mean over {result.spec.runs} runs, band = ±1 std")
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


def table_name(info: TableInfo) -> str:
    """The dataset, or the table's file name for a table with no dataset column."""
    return info.dataset if info.dataset is not None else Path(info.path).name


def model_share(method: MethodResult) -> float | None:
    """The share of the wall time spent in the method's own model, when it reports one."""
    if method.model_seconds is None or method.wall_seconds <= 0:
        return None
    return method.model_seconds / method.wall_seconds


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {std:.2f}"


def render_table(result: BenchResult):
    """A rich table of the figures, one row per method; at 80 columns cells wrap, never cut (the caption explains)."""
    from rich.table import Table

    spec, info = result.spec, result.table
    signal, test = info.signal, spec.test_metric
    same = signal == test  # then the best test among the evaluated is the test of the best: one column
    model = _any_model(result)
    ties = f" ({info.best_valid_archs} archs tied)" if info.best_valid_archs > 1 else ""
    table = Table(
        title=f"{spec.space} on {table_name(info)}: {spec.budget} distinct archs x {spec.runs} runs "
        f"(seed {spec.seed})",
        caption=(
            f"± = {STD_NOTE}. Signal (what the search sees): {signal}; 'test' = {test}"
            f"{'' if same else ' (never seen by the search)'}. Table: {info.rows} archs; best {signal} "
            f"{info.best_valid:.2f}{ties}, its {test} {_num(info.test_of_best_valid)}; best {test} "
            f"{info.best_test:.2f}. 'test of best' = {test} of the arch with the best {signal} a run evaluated; "
            f"'regret' = the table's best {signal} minus the run's best; 'reached' = runs that evaluated an arch "
            f"with the table's best {signal}{' (any of the tied ones)' if ties else ''}, (n) = after how many evaluations (median)"
            + ("; 'model' = share of the wall time in the method's own model." if model else ".")
        ),
    )
    short = any(r.n_evaluations < spec.budget for m in result.methods.values() for r in m.runs)
    # Never cut a cell (a piped console is 80 columns): a narrow column wraps at spaces, or folds a long word.
    table.add_column("method", overflow="fold")
    table.add_column("test of best", justify="right", overflow="fold")
    if not same:
        table.add_column("best test", justify="right", overflow="fold")
    table.add_column("regret", justify="right", overflow="fold")
    table.add_column("reached", justify="right", overflow="fold")
    if short:  # some runs stopped early (space exhausted or proposal cap)
        table.add_column("evals", justify="right", overflow="fold")
    table.add_column("wall s", justify="right", overflow="fold")
    if model:
        table.add_column("model", justify="right", overflow="fold")
    for name, method in result.methods.items():
        median = method.median_evals_to_best_valid
        cells = [name, _pm(method.test_of_best_valid_mean, method.test_of_best_valid_std)]
        if not same:
            cells.append(_pm(method.best_test_mean, method.best_test_std))
        cells.append(_pm(method.regret_mean, method.regret_std))
        reached = f"{method.runs_reaching_best_valid}/{len(method.runs)}"
        cells.append(reached if median is None else f"{reached} ({median:g})")
        if short:
            cells.append(f"{statistics.fmean(r.n_evaluations for r in method.runs):.1f}")
        cells.append(f"{method.wall_seconds:.2f}")
        if model:
            share = model_share(method)
            cells.append("-" if share is None else f"{100 * share:.0f}%")
        table.add_row(*cells)
    return table


def _any_model(result: BenchResult) -> bool:
    return any(m.model_seconds is not None for m in result.methods.values())
