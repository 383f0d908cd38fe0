"""``archsmith compare RUN_DIR...``: a table of runs side by side and a plot of their best-so-far
score curves (one step line per run; x: the candidate number, y: the best valid score so far).

Reads only files of the run directories (config.toml, history.jsonl, summary.json), so runs made by
other versions, still going or stopped compare as well. Scores of different evaluators (or of one
evaluator on different tables) are not comparable: the command says so when the runs mix them.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archsmith.graph.paths import RunPaths
from archsmith.graph.run import load_history

console = Console()


class CompareError(ValueError):
    """A directory that is not a readable run; the message names it."""


@dataclass
class RunOverview:
    """One run as the comparison shows it."""

    run: str
    path: str
    space: str
    evaluator: str
    candidates: int  # archived children, valid or not
    valid: int
    best_score: float | None
    best_id: str | None
    wall_s: float | None  # from summary.json (None: the run never stopped cleanly)
    finished: bool
    curve: list[tuple[int, float]] = field(default_factory=list)  # (candidate number, best so far)


def _step(record: dict[str, Any], fallback: int) -> int:
    digits = re.findall(r"\d+", str(record.get("id", "")))
    return int(digits[-1]) if digits else fallback


def overview(run_dir: str | Path) -> RunOverview:
    """The table row and the curve of one run directory."""
    try:
        paths = RunPaths.existing(run_dir)
    except FileNotFoundError as error:
        raise CompareError(str(error)) from None
    try:
        config = tomllib.loads(paths.config.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CompareError(f"{paths.config}: unreadable ({error})") from None
    try:
        history = load_history(paths)
    except json.JSONDecodeError as error:
        raise CompareError(f"{paths.history}: not JSON ({error.msg})") from None
    summary: dict[str, Any] = {}
    if paths.summary.is_file():
        try:
            summary = json.loads(paths.summary.read_text("utf-8"))
        except json.JSONDecodeError as error:
            raise CompareError(f"{paths.summary}: not JSON ({error.msg})") from None
    best, curve = None, []
    for index, record in enumerate(history, start=1):
        if record.get("status") != "valid" or record.get("score") is None:
            continue
        if best is None or record["score"] > best["score"]:
            best = record
        curve.append((_step(record, index), float(best["score"])))
    return RunOverview(
        run=paths.run_id, path=str(paths.root), space=str(config.get("space", {}).get("name", "?")),
        evaluator=str(config.get("evaluator", {}).get("name", "?")), candidates=len(history),
        valid=sum(1 for r in history if r.get("status") == "valid"),
        best_score=float(best["score"]) if best else None, best_id=best.get("id") if best else None,
        wall_s=summary.get("elapsed_s"), finished=bool(summary.get("stop_reason")), curve=curve,
    )


def compare_runs(run_dirs: list[str | Path]) -> list[RunOverview]:
    """One overview per run directory, in the order given."""
    return [overview(run_dir) for run_dir in run_dirs]


def plot_curves(runs: list[RunOverview], out: str | Path) -> Path:
    """A PNG of every run's best-so-far curve (matplotlib's Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    for run in runs:
        if run.curve:
            steps, scores = zip(*run.curve)
            axis.step(steps, scores, where="post", label=f"{run.run} ({run.space}, {run.evaluator})", linewidth=1.6)
        else:
            axis.plot([], [], label=f"{run.run} (no valid candidate)")
    axis.set_xlabel("candidate")
    axis.set_ylabel("best score so far")
    axis.set_title("best-so-far score per run")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", loc="best")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def mixed_scores(runs: list[RunOverview]) -> str | None:
    """A warning when the runs' scores come from different evaluators (None: one evaluator)."""
    evaluators = sorted({run.evaluator for run in runs})
    if len(evaluators) > 1:
        return f"scores of different evaluators ({', '.join(evaluators)}) are not comparable"
    return None


def _wall(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


WIDE_TABLE = 100  # narrower (or piped): one line per run
COLUMNS = ("run", "space", "evaluator", "valid/candidates", "best score", "best id", "wall time")


def _row(run: RunOverview) -> tuple[str, ...]:
    wall = _wall(run.wall_s) if run.finished and run.wall_s is not None else "unfinished"
    return (run.run, run.space, run.evaluator, f"{run.valid}/{run.candidates}",
            f"{run.best_score:.4f}" if run.best_score is not None else "-", run.best_id or "-", wall)


def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (runs/<id>), one or more.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Plot of best-so-far curves (PNG).")] = Path("compare.png"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the plot is still written).")] = False,
) -> None:
    """Compare runs: a table (space, evaluator, valid/all candidates, best score and id, wall time)
    and a plot of best-so-far score curves."""
    try:
        runs = compare_runs(list(run_dirs))
    except CompareError as error:
        console.print(f"[red]{escape(str(error))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    plot = plot_curves(runs, out)
    if as_json:
        print(json.dumps({"runs": [asdict(run) for run in runs], "plot": str(plot)}, indent=2))
        return
    rows = [_row(run) for run in runs]
    if console.is_terminal and console.width >= WIDE_TABLE:
        table = Table(title=f"{len(runs)} run(s)")
        for name in COLUMNS:
            table.add_column(name, no_wrap=True, justify="right" if name in COLUMNS[3:5] else "left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:  # narrow or piped: one line per run, nothing cut (grep-able)
        typer.echo("  ".join(name.replace(" ", "_") for name in COLUMNS))
        for row in rows:
            typer.echo("  ".join(row))
    warning = mixed_scores(runs)
    if warning:
        console.print(f"[yellow]{warning}[/yellow]", highlight=False, soft_wrap=True)
    console.print(f"plot: {plot}", highlight=False, soft_wrap=True)
