"""``archsmith knowledge``: ingest, stats, list, search, sample. Parses, calls, prints."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from archsmith.graph.cli_errors import user_errors
from archsmith.graph.config import KnowledgeConfig, load_config

knowledge_app = typer.Typer(no_args_is_help=True, help="The design-idea store: ingest papers, inspect, search, sample.")
console = Console()

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="Config TOML (its knowledge section).")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override: --set knowledge.embedding=hashing")]
StoreOption = Annotated[Optional[Path], typer.Option("--store", help="Store directory (overrides knowledge.path).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TargetOption = Annotated[Optional[str], typer.Option("--target", help="performance | efficiency")]
GranularityOption = Annotated[Optional[str], typer.Option("--granularity", help="operation | block and connectivity | network")]
MainOption = Annotated[Optional[str], typer.Option("--main", help="Main category.")]
SubOption = Annotated[Optional[str], typer.Option("--sub", help="Sub-category.")]


def _settings(config: Path | None, overrides: list[str] | None, store: Path | None) -> tuple[KnowledgeConfig, Any]:
    with user_errors():
        full = load_config(config, overrides or [])
    settings = full.knowledge
    if store is not None:
        settings = settings.model_copy(update={"path": str(store)})
    return settings, full


def _open(settings: KnowledgeConfig):
    from archsmith.knowledge.api import open_store

    with user_errors():
        return open_store(settings)


def _idea_row(stored) -> dict[str, Any]:
    idea = stored.idea
    row = {"id": stored.id, "text": idea.text, "target": idea.target, "granularity": idea.granularity,
           "main_category": idea.main_category, "sub_category": idea.sub_category,
           "source": idea.source.model_dump(exclude_none=True), "provenance": idea.provenance.model_dump(),
           "merged": stored.merged}
    if stored.similarity is not None:
        row["similarity"] = round(stored.similarity, 4)
    return row


def _print_ideas(rows: list[dict[str, Any]], title: str) -> None:
    scored = any("similarity" in row for row in rows)  # search: the cosine similarity to the query
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    if scored:
        table.add_column("sim", justify="right", no_wrap=True)
    table.add_column("idea", overflow="fold", ratio=4)
    table.add_column("tag", overflow="fold", ratio=2)
    table.add_column("source", overflow="fold", ratio=2)
    for row in rows:
        tag = f"{row['target']} > {row['granularity']} > {row['main_category']} > {row['sub_category']}"
        source = row["source"]["title"] + (f" ({row['source']['year']})" if row["source"].get("year") else "")
        cells = [row["id"]]
        if scored:
            cells.append("-" if row.get("similarity") is None else f"{row['similarity']:.2f}")
        # idea text is plain text, not rich markup (a "[...]" in it must print as is)
        table.add_row(*cells, Text(row["text"]), Text(tag), Text(source))
    if scored:
        table.caption = "sim = cosine similarity to the query"
    console.print(table)


@knowledge_app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Papers (.txt/.md/.pdf), JSONL records, or directories.")],
    config: ConfigOption = None,
    set_: SetOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add papers (filtered and mined by the knowledge.llm model) and idea JSONL files (no LLM)."""
    from archsmith.knowledge.api import make_reader
    from archsmith.knowledge.ingest import ingest as run_ingest
    from archsmith.knowledge.papers import collect

    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        console.print(f"[red]ingest: no such file or directory: {', '.join(missing)}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    settings, full = _settings(config, set_, store)
    idea_store = _open(settings)
    sources = collect(list(paths))
    reader = make_reader(settings, idea_store.tree, full.prompts_dir) if sources.papers else None
    total = len(sources.papers) + len(sources.idea_files)
    columns = (TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[current]}"))
    with Progress(*columns, console=console, transient=as_json, disable=as_json) as progress:
        task = progress.add_task("ingest", total=total, current="")
        summary = run_ingest([str(p) for p in paths], idea_store, reader,
                             on_progress=lambda origin: progress.update(task, advance=1, current=Path(origin.split(":")[0]).name))
    data = {**summary.as_dict(), "store": idea_store.version()}
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        table = Table(title="ingest summary", show_header=False)
        table.add_column("what", no_wrap=True)
        table.add_column("count", overflow="fold")
        for key in ("papers_kept", "papers_discarded", "papers_skipped", "ideas_added", "ideas_merged", "ideas_skipped"):
            table.add_row(key.replace("_", " "), str(data[key]))
        table.add_row("papers failed", str(len(summary.papers_failed)))
        table.add_row("ideas rejected (bad tag)", str(len(summary.ideas_rejected)))
        for category, count in data["per_category"].items():
            table.add_row(f"added: {category}", str(count))
        console.print(table)
        # the store's path on one line of its own: in a table cell a narrow console squeezed it to a column
        console.print(f"store: {idea_store.path} ({idea_store.count()} ideas)", soft_wrap=True, highlight=False)
        for line in summary.errors + summary.papers_failed + summary.ideas_rejected:
            console.print(f"[yellow]{line}[/yellow]", markup=True, highlight=False)
    if summary.errors or summary.papers_failed:
        raise typer.Exit(1)


@knowledge_app.command()
def stats(
    config: ConfigOption = None,
    set_: SetOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a bar chart of ideas per main category (PNG).")] = None,
) -> None:
    """Total and per-category counts."""
    settings, _ = _settings(config, set_, store)
    with user_errors():
        data = _open(settings).stats()
    if plot is not None:
        _plot(data["main_categories"], plot)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"idea store {data['path']} ({data['embedding_model']}, fingerprint {data['fingerprint']})")
    table.add_column("main category (target/granularity/main)")
    table.add_column("ideas", justify="right")
    for key, count in data["main_categories"].items():
        table.add_row(key, str(count))
    table.add_row("[bold]total[/bold]", f"[bold]{data['total']}[/bold]")
    console.print(table)
    others = {model: count for model, count in data["embeddings"].items() if model != data["embedding_model"]}
    if others:
        listed = ", ".join(f"{model} ({count} ideas)" for model, count in others.items())
        console.print(f"other embeddings in this store: {listed} (choose with --set knowledge.embedding=...)",
                      highlight=False, soft_wrap=True)
    if plot is not None:
        console.print(f"bar chart: {plot}")


def _plot(counts: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [key.split("/", 2)[2] + f" ({key.split('/')[0][:4]}.)" for key in counts]
    figure, axis = plt.subplots(figsize=(9, 0.35 * len(counts) + 1.2))
    axis.barh(labels[::-1], list(counts.values())[::-1], color="#4c72b0")
    axis.set_xlabel("ideas")
    axis.set_title("ideas per main category")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


@knowledge_app.command("list")
def list_ideas(
    config: ConfigOption = None, set_: SetOption = None, store: StoreOption = None,
    target: TargetOption = None, granularity: GranularityOption = None, main: MainOption = None, sub: SubOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many (0: all).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Ideas in the store, filtered by any tree level."""
    settings, _ = _settings(config, set_, store)
    with user_errors():
        ideas = _open(settings).ideas(target=target, granularity=granularity, main_category=main, sub_category=sub)
    rows = [_idea_row(stored) for stored in (ideas[:limit] if limit else ideas)]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_ideas(rows, f"{len(rows)} of {len(ideas)} ideas")


@knowledge_app.command()
def search(
    query: Annotated[str, typer.Argument(help="Text to find ideas like.")],
    config: ConfigOption = None, set_: SetOption = None, store: StoreOption = None,
    n: Annotated[int, typer.Option("-n", help="How many ideas.")] = 5,
    target: TargetOption = None, granularity: GranularityOption = None, main: MainOption = None, sub: SubOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ideas nearest in meaning to QUERY."""
    settings, _ = _settings(config, set_, store)
    with user_errors():
        found = _open(settings).search(query, n, target=target, granularity=granularity, main_category=main,
                                       sub_category=sub)
    rows = [_idea_row(stored) for stored in found]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_ideas(rows, f"ideas like {query!r}")


@knowledge_app.command()
def sample(
    config: ConfigOption = None, set_: SetOption = None, store: StoreOption = None,
    n: Annotated[int, typer.Option("-n", help="How many draws.")] = 5,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed (default: the config's seed).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Draw ideas as the Navigator does (fair sampling at knowledge.sampling), with mutation targets."""
    from archsmith.knowledge.api import make_sampler

    settings, full = _settings(config, set_, store)
    with user_errors():
        sampler = make_sampler(_open(settings), settings)
    rng = random.Random(full.seed if seed is None else seed)
    draws = [sampler.draw(rng) for _ in range(n)]
    rows = [{**_idea_row(draw.stored), "mutation_target": draw.mutation_target} for draw in draws]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    _print_ideas(rows, f"{n} draws, fair over {settings.sampling}")
    for index, row in enumerate(rows, start=1):
        console.print(f"{index}. {row['mutation_target']}: {row['id']}", highlight=False)
