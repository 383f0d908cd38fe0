"""`archsmith train RUN_DIR --top K`: the best candidates of a search, trained (graph/train_top.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from archsmith.graph.cli_errors import user_errors

console = Console()

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config field of the run: --set evaluator.train.preset=nb201."),
]


def train(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (runs/<id>) of a search.")],
    top: Annotated[int, typer.Option("--top", "-k", help="How many of the best candidates to train.")] = 5,
    again: Annotated[bool, typer.Option("--again", help="Retrain candidates already trained with these settings.")] = False,
    set_: SetOption = None,
) -> None:
    """Train the best candidates of a search on the configured executor (proxies rank, training decides)."""
    from archsmith.graph.train_top import train_top

    from archsmith.graph.paths import RunPaths

    try:
        paths = RunPaths.existing(run_dir)
    except FileNotFoundError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None

    def announce(entry) -> None:
        outcome = f"{entry.score:.2f}" if entry.ok else f"[red]failed[/red]: {entry.error}"
        console.print(f"trained {entry.id}: {outcome}", highlight=False)

    try:
        with user_errors():
            result = train_top(paths.root, top=top, overrides=set_ or [], on_trained=announce, again=again)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; finished candidates are in {paths.root / 'trained.jsonl'}[/yellow]")
        raise typer.Exit(130) from None
    table = Table(title=f"trained: top {top} of {paths.root.name}")
    shown = ("train_acc", "valid_acc", "test_acc", "map50_95", "map50", "precision", "recall", "wall_s")
    metrics = [key for key in shown if any(key in entry.report for entry in result.trained)]
    for column in ("candidate", "search score", "trained score", *metrics, "note"):
        table.add_column(column, no_wrap=column == "candidate")
    for entry in result.trained:
        report = entry.report
        cells = [f"{report[k]:.2f}" if k in report else "" for k in metrics]
        note = "earlier session" if entry.id in result.skipped else ("" if entry.ok else str(entry.error))
        table.add_row(entry.id, f"{entry.search_score:.4f}" if entry.search_score is not None else "",
                      f"{entry.score:.2f}" if entry.score is not None else "-", *cells, note)
    console.print(table)
    tau = "n/a (fewer than 2 trained, or tied scores)" if result.kendall_tau is None else f"{result.kendall_tau:+.3f}"
    console.print(f"Kendall tau, search score vs trained score: {tau}; executor: {result.executor}", highlight=False)
    console.print(f"results: {paths.root / 'trained.jsonl'}")
