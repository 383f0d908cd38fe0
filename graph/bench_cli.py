"""``archsmith bench``: compare search methods on a tabular benchmark. Parses, calls, prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from archsmith.graph.bench import DEFAULT_METHODS, BenchError, BenchSpec, run_bench
from archsmith.graph.bench_output import model_share, render_table, write_outputs
from archsmith.graph.config import ConfigError
from archsmith.tools.tabular import BUILTIN_PREFIX, DEFAULT_TABLES, TabularSpec, default_table


def _settings(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse (numbers, lists), else strings."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--space-setting expects key=value, got {pair!r}")
        try:
            settings[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key.strip()] = raw
    return settings


TABLE_HELP = (
    "CSV (or .csv.gz) with an arch column, the signal and test columns and optionally dataset, params_m, "
    "flops_m; or builtin:NAME. Default: the table shipped for the space and dataset "
    f"({', '.join(f'{s} / {d}: {BUILTIN_PREFIX}{n}' for (s, d), n in DEFAULT_TABLES.items())})."
)
SIGNAL_HELP = "Column the methods see and maximise (e.g. test_acc for a table without valid_acc)."
DATASET_HELP = (
    "Rows of this value of the table's dataset column. Default: cifar10, or the table's only dataset. "
    "A table without a dataset column is one dataset: --dataset is then an error, not ignored."
)


def _table_spec(table: Optional[str], space: str, dataset: Optional[str], signal: str) -> TabularSpec:
    """The table the user named, else the one shipped for (space, dataset)."""
    if table is None:
        table = default_table(space, dataset)
        if table is None:
            shipped = ", ".join(f"{s} / {d}" for s, d in DEFAULT_TABLES)
            raise BenchError(
                f"--table is required: no table ships for space {space!r} and dataset {dataset or 'cifar10'!r} "
                f"(shipped: {shipped})"
            )
    return TabularSpec(path=table, dataset=dataset, signal=signal)


def bench(
    table: Annotated[Optional[str], typer.Option("--table", metavar="CSV", help=TABLE_HELP)] = None,
    space: Annotated[str, typer.Option("--space", help="Enumerable search space.")] = "nb201",
    dataset: Annotated[Optional[str], typer.Option("--dataset", help=DATASET_HELP)] = None,
    signal: Annotated[str, typer.Option("--signal", help=SIGNAL_HELP)] = "valid_acc",
    test_metric: Annotated[
        str, typer.Option("--test-metric", help="Column reported for the chosen archs (the 'test' figures).")
    ] = "test_acc",
    budget: Annotated[int, typer.Option("--budget", help="Distinct architectures evaluated per run.")] = 100,
    runs: Annotated[int, typer.Option("--runs", help="Seeded runs per method.")] = 10,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated methods.")] = ",".join(DEFAULT_METHODS),
    seed: Annotated[int, typer.Option("--seed", help="Base seed; run r of every method uses the same seed.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write results.json, CSVs and curves.png here.")] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", "-s", help="Config override for the agents method (repeatable).")
    ] = None,
    agents_config: Annotated[Optional[Path], typer.Option("--agents-config", help="Config file for agents.")] = None,
    space_settings: Annotated[
        Optional[list[str]], typer.Option("--space-setting", help="Space setting key=value (repeatable).")
    ] = None,
) -> None:
    """Compare search methods (rs, rea, ea, reinforce, agents) on a tabular benchmark under one budget.

    Prints per method the test metric of the best-signal arch, the regret and the runs reaching the best.
    """
    console = Console()
    try:
        spec = BenchSpec(
            space=space,
            space_settings=_settings(space_settings or []),
            table=_table_spec(table, space, dataset, signal),
            test_metric=test_metric,
            budget=budget,
            runs=runs,
            methods=[m.strip() for m in methods.split(",") if m.strip()],
            seed=seed,
            agents_config=str(agents_config) if agents_config else None,
            agents_overrides=list(overrides or []),
        )
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            tasks: dict[str, Any] = {}

            def on_progress(method: str, done: int, total: int) -> None:
                if method not in tasks:
                    tasks[method] = progress.add_task(method, total=total)
                progress.update(tasks[method], completed=done)

            result = run_bench(spec, progress=on_progress)
    except (BenchError, ConfigError) as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        console.print(f"[red]invalid bench settings: {problems}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(render_table(result))
    for name, method in result.methods.items():
        share = model_share(method)
        model = "" if share is None else f" (its model: {method.model_seconds:.2f} s, {100 * share:.0f}% of it)"
        console.print(f"wall time {name}: {method.wall_seconds:.2f} s{model}")
    if out is not None:
        paths = write_outputs(result, out)
        console.print("wrote " + ", ".join(str(p) for p in paths.values()), soft_wrap=True)
