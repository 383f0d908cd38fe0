"""`archsmith train RUN_DIR --top K`: the best candidates of a search, trained (graph/train_top.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archsmith.graph.cli_errors import user_errors

console = Console()

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config field of the run: --set evaluator.train.preset=nb201."),
]

# Report keys shown, with short headers so the table fits 80 columns uncut (units in the title).
COLUMNS = {"train_acc": "train", "valid_acc": "valid", "test_acc": "test", "map50_95": "mAP50-95",
           "map50": "mAP50", "precision": "P", "recall": "R", "wall_s": "secs"}


def train(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (runs/<id>) of a search.")],
    top: Annotated[int, typer.Option("--top", "-k", help="How many of the best candidates to train.")] = 5,
    again: Annotated[bool, typer.Option("--again", help="Retrain candidates already trained with these settings.")] = False,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Train on the synthetic data set when the run names "
                                            "no real one (the accuracies then measure nothing).")] = False,
    set_: SetOption = None,
) -> None:
    """Train the best candidates of a search on the configured executor (proxies rank, training decides).

    Needs a data set in the run's config (or --set evaluator.train.data=...); --synthetic trains on
    generated images instead, labelled as such."""
    from archsmith.graph.paths import RunPaths
    from archsmith.graph.train_top import MIN_RANKED, train_top

    try:
        paths = RunPaths.existing(run_dir)
    except FileNotFoundError as error:
        console.print(f"[red]{escape(str(error))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    tag = {"data": "", "total": "?", "done": 0}

    def plan(p) -> None:
        tag["data"] = " [yellow](SYNTHETIC data)[/yellow]" if p.synthetic else ""
        warning = " [yellow]SYNTHETIC: generated images, the accuracies measure nothing[/yellow]" if p.synthetic else ""
        console.print(f"data: {escape(p.data)}{warning}", highlight=False, soft_wrap=True)
        console.print(f"preset: {escape(p.preset)}", highlight=False, soft_wrap=True)
        earlier = f"; {len(p.skipped)} trained earlier with these settings ({', '.join(p.skipped)})" if p.skipped else ""
        console.print(f"training {len(p.todo)} of the top {top}: {', '.join(p.todo) or 'none'}{earlier}", highlight=False, soft_wrap=True)
        tag["total"] = len(p.todo)

    def announce(entry) -> None:
        tag["done"] += 1
        outcome = f"{entry.score:.2f}" if entry.ok else f"[red]failed[/red]: {escape(str(entry.error))}"
        console.print(f"[{tag['done']}/{tag['total']}] trained {entry.id}{tag['data']}: {outcome}",
                      highlight=False, soft_wrap=True)

    try:
        with user_errors():
            result = train_top(paths.root, top=top, overrides=set_ or [], on_trained=announce, again=again,
                               allow_synthetic=synthetic, on_plan=plan)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; finished candidates are in {paths.root / 'trained.jsonl'}[/yellow]")
        raise typer.Exit(130) from None
    data = "SYNTHETIC data, measures nothing" if result.synthetic else result.data
    metrics = [key for key in COLUMNS if any(key in entry.report for entry in result.trained)]
    units = "; accuracies in %" if "valid_acc" in metrics else ""
    table = Table(title=escape(f"trained: top {top} of {paths.root.name} ({data}{units})"), box=box.SIMPLE_HEAD)
    for header in ("candidate", "search", "trained", *(COLUMNS[k] for k in metrics)):
        table.add_column(header, no_wrap=True, min_width=len(header))
    table.add_column("note", overflow="fold")
    for entry in result.trained:
        report = entry.report
        cells = [f"{report[k]:.2f}" if k in report else "" for k in metrics]
        note = "earlier session" if entry.id in result.skipped else ("" if entry.ok else str(entry.error))
        table.add_row(entry.id, f"{entry.search_score:.4f}" if entry.search_score is not None else "",
                      f"{entry.score:.2f}" if entry.score is not None else "-", *cells, escape(note))
    console.print(table)
    good = sum(1 for entry in result.trained if entry.ok)
    if result.kendall_tau is not None:
        label = " (on synthetic data)" if result.synthetic else ""
        console.print(f"Kendall tau, search score vs trained score{label}: {result.kendall_tau:+.3f} "
                      f"over {good} candidates", highlight=False, soft_wrap=True)
    else:
        console.print(f"no rank statistic: {good} trained candidate(s), Kendall tau needs at least {MIN_RANKED} "
                      "(--top 5 or more)", highlight=False, soft_wrap=True)
    console.print(f"executor: {result.executor}; results: {paths.root / 'trained.jsonl'}", highlight=False, soft_wrap=True)
