"""The `archsmith` command: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from archsmith.graph.cli_check import check, export
from archsmith.graph.cli_config import budget_line, config_app, load_checked
from archsmith.graph.cli_errors import ArchsmithGroup, SetOption
from archsmith.graph.cli_errors import user_errors as _user_errors
from archsmith.graph.cli_tables import print_result as _print_result
from archsmith.graph.config import ConfigError, load_config

app = typer.Typer(
    cls=ArchsmithGroup, no_args_is_help=True, help="Archsmith: agents that design neural networks.",
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)
console = Console()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"archsmith {version('archsmith')}")
        except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
            typer.echo("archsmith (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    """Archsmith: agents that design neural networks."""


def _run_paths(run_dir: Path):
    from archsmith.graph.paths import RunPaths

    try:
        return RunPaths.existing(run_dir)
    except FileNotFoundError as error:
        console.print(f"[red]{escape(str(error))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None


def _with_progress(total: int, done: int, call):
    best = {"score": None}
    columns = (TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("best {task.fields[best]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("search", total=total, completed=done, best="-")

        def on_record(record) -> None:
            if record.get("status") != "valid":  # the budget counts evaluated candidates only
                return
            score = record.get("score")
            if score is not None and (best["score"] is None or score > best["score"]):
                best["score"] = score
            shown = f"{best['score']:.3f}" if best["score"] is not None else "-"
            progress.update(task, advance=1, best=shown)

        return call(on_record)


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Argument(help="TOML config; the embedded default when omitted.")] = None,
    set_: SetOption = None,
) -> None:
    """Run a search (with no config: the default template-space search, no LLM, no GPU)."""
    from archsmith.graph.run import run as run_search

    cfg = load_checked(config, set_)  # every config error before any output
    console.print(f"space [bold]{cfg.space.name}[/bold], evaluator {cfg.evaluator.name}, "
                  f"workers {cfg.parallel.workers}", highlight=False)
    console.print(budget_line(cfg, config, set_), highlight=False, soft_wrap=True)
    started: list[Path] = []

    def announce(run_dir: Path) -> None:
        started.append(run_dir)
        console.print(f"run directory: {run_dir}", soft_wrap=True)

    try:
        with _user_errors(), _terminate_as_interrupt():
            result = _with_progress(cfg.search.max_candidates, 0,
                                    lambda cb: run_search(cfg, on_record=cb, on_start=announce))
    except KeyboardInterrupt:
        _interrupted(started[0] if started else None)
    _print_result(result)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a batch scheduler's time limit) stops a search as Ctrl-C does: the run's
    LLM servers and sandbox are stopped, the checkpoint stays resumable and the exit code is 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(run_dir: Path | None) -> None:
    if run_dir is not None:
        console.print(f"[yellow]interrupted; continue with: archsmith resume {run_dir}[/yellow]", soft_wrap=True)
    raise typer.Exit(130)


@app.command()
def resume(run_dir: Annotated[Path, typer.Argument(help="The run directory (runs/<id>).")]) -> None:
    """Continue a stopped run from its last checkpoint."""
    from archsmith.graph.run import load_history, summarize_counts
    from archsmith.graph.run import resume as resume_search

    paths = _run_paths(run_dir)
    with _user_errors():  # a config from an incompatible version names the fields it does not know
        cfg = load_config(paths.config)
    done = summarize_counts(load_history(paths))["valid"]
    try:
        with _user_errors(), _terminate_as_interrupt():
            result = _with_progress(cfg.search.max_candidates, done, lambda cb: resume_search(run_dir, on_record=cb))
    except KeyboardInterrupt:
        _interrupted(run_dir)
    _print_result(result)


app.command("check")(check)
app.command("export")(export)
app.add_typer(config_app, name="config")


@app.command()
def trace(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (runs/<id>).")],
    step: Annotated[Optional[int], typer.Option("--step", "-n", help="Print this step in full.")] = None,
    role: Annotated[Optional[str], typer.Option("--role", "-r", help="Only steps of this role.")] = None,
    candidate: Annotated[Optional[str], typer.Option("--candidate", "-c", help="Only steps of this candidate.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable: a JSON list of steps (one with --step).")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Print new steps as they come until the run ends.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="With --follow: stop after this many seconds.")] = None,
    fork_step: Annotated[Optional[int], typer.Option("--fork", help="Start a new run from the checkpoint before this step (with --set changes).")] = None,
    set_: SetOption = None,
) -> None:
    """List a run's steps, or print one step's inputs, prompts, answers and tool results; or fork the run."""
    from archsmith.graph.trace import TraceStore

    paths = _run_paths(run_dir)
    if fork_step is not None:
        _fork(paths.root, fork_step, set_ or [])
        return
    if set_:
        console.print("[red]--set applies to --fork only[/red]")
        raise typer.Exit(2)
    store = TraceStore(paths.trace_db)
    try:
        if step is not None:
            record = store.step(step)
            if record is None:
                console.print(f"[red]no step {step} in {paths.trace_db}[/red]", soft_wrap=True)
                raise typer.Exit(2)
            if as_json:
                typer.echo(record.model_dump_json(indent=2))
            else:
                _print_step(record)
            return
        records = store.steps(role=role, candidate_id=candidate)
        if follow:
            _follow(paths, store, records, role, candidate, as_json, timeout)
        elif as_json:
            typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        else:
            _print_steps(paths.run_id, records)
    finally:
        store.close()


WIDE_TABLE = 100  # narrower (or piped): one line per step, nothing cut


def _print_steps(run_id: str, records) -> None:
    if not (console.is_terminal and console.width >= WIDE_TABLE):
        typer.echo(f"steps of {run_id}: step session generation candidate node policy seconds decision")
        for record in records:
            typer.echo(_step_line(record))
        return
    table = Table(title=f"steps of {run_id}")
    for column in ("step", "session", "gen", "candidate", "node", "policy", "seconds"):
        table.add_column(column, no_wrap=True)
    table.add_column("decision", overflow="ellipsis", no_wrap=True, ratio=1)
    for record in records:
        table.add_row(*_step_row(record))
    console.print(table)


def _step_row(record) -> tuple[str, ...]:
    return (str(record.id), str(record.session), str(record.generation or ""), record.candidate_id or "",
            record.node, record.policy or "", f"{record.duration_s:.2f}", record.decision or record.error or "")


def _step_line(record) -> str:
    """One step on one line, every field in place ("-" when empty): grep-able, never cut."""
    *fields, decision = _step_row(record)
    return "  ".join([*(field or "-" for field in fields), " ".join(decision.split()) or "-"])


def _run_finished(paths) -> bool:
    """summary.json is there and no process holds the run (a resume rewrites the summary at its end)."""
    return paths.summary.is_file() and not paths.in_use()


def _follow(paths, store, records, role, candidate, as_json: bool, timeout: float | None) -> None:
    """Print steps as they are recorded (one line each, or one JSON object a line) until the run ends."""
    import time

    def emit(batch) -> int | None:
        for record in batch:
            if as_json:
                typer.echo(record.model_dump_json())
            else:
                typer.echo(_step_line(record))
        return batch[-1].id if batch else None

    deadline = None if timeout is None else time.monotonic() + timeout
    last = emit(records) or 0
    try:
        while True:
            finished = _run_finished(paths)  # read before the last poll, so no final step is missed
            last = emit(store.steps(role=role, candidate_id=candidate, after_id=last)) or last
            if finished:
                if not as_json:
                    console.print(f"run finished ({paths.summary.name} written)")
                return
            if deadline is not None and time.monotonic() >= deadline:
                if not as_json:
                    console.print(f"stopped following after {timeout:g} s")
                return
            time.sleep(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        return


@app.command()
def view(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (runs/<id>).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the report here (default RUN/report.html).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the report on 127.0.0.1 until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option("--port", "-p", help="Port for --serve (0: any free port).")] = 8000,
) -> None:
    """Write a self-contained HTML report of a run (plots, lineage, every step); optionally serve it."""
    from archsmith.graph.view import ReportServer, write_report

    paths = _run_paths(run_dir)
    report = write_report(paths.root, out)
    console.print(f"report: {report}", soft_wrap=True)
    if not serve:
        return
    try:
        server = ReportServer(report, port)
    except OSError as error:
        console.print(f"[red]cannot serve on 127.0.0.1:{port}: {error}[/red]")
        raise typer.Exit(2) from None
    console.print(f"serving on {server.url} (Ctrl-C stops)", soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _fork(run_dir: Path, step: int, overrides: list[str]) -> None:
    from archsmith.graph.fork import ForkError, fork
    from archsmith.graph.paths import RunPaths
    from archsmith.graph.run import load_history, summarize_counts

    with _user_errors():
        cfg = load_config(run_dir / "config.toml", overrides)
    started: list[Path] = []

    def announce(fork_dir: Path) -> None:
        started.append(fork_dir)
        done = summarize_counts(load_history(RunPaths(fork_dir)))
        console.print(f"fork of {run_dir} before step {step}: {fork_dir} ({done['valid']} candidates kept)",
                      soft_wrap=True)

    try:
        with _user_errors():
            try:
                result = _with_progress(cfg.search.max_candidates, 0,
                                        lambda cb: fork(run_dir, step, overrides, on_record=cb, on_start=announce))
            except ForkError as error:
                raise ConfigError(str(error)) from None
    except KeyboardInterrupt:
        _interrupted(started[0] if started else None)
    _print_result(result)


def _print_step(record) -> None:
    console.rule(f"step {record.id}: {record.node} ({record.policy or 'tool'}) candidate {record.candidate_id or '-'}")
    console.print(f"decision: {record.decision}")
    if record.error:
        console.print(f"[red]error: {record.error}[/red]")
    console.print(f"phase: {record.phase or '-'}   duration: {record.duration_s:.3f} s   tokens: {record.tokens}")
    console.rule("inputs")
    console.print_json(json.dumps(record.inputs, default=str))
    for prompt in record.prompts:
        console.rule(f"prompt {prompt.template} (sha256 {prompt.sha256})")
        console.print(prompt.text, markup=False)
    for index, answer in enumerate(record.answers):
        console.rule(f"answer {index + 1}")
        console.print(answer, markup=False)
    console.rule("parsed")
    console.print_json(json.dumps(record.parsed, default=str))
    console.rule("tool results")
    console.print_json(json.dumps(record.tools, default=str))


def _register_bench() -> None:
    from archsmith.graph.bench_cli import bench

    app.command("bench")(bench)


_register_bench()


def _register_train() -> None:
    from archsmith.graph.train_cli import train

    app.command("train")(train)


_register_train()


def _register_knowledge() -> None:
    from archsmith.graph.knowledge_cli import knowledge_app

    app.add_typer(knowledge_app, name="knowledge")


_register_knowledge()


def _register_compare() -> None:
    from archsmith.graph.compare import compare

    app.command("compare")(compare)


_register_compare()


def _register_supernet() -> None:
    from archsmith.graph.supernet_cli import supernet_app

    app.add_typer(supernet_app, name="supernet")


_register_supernet()


def _register_modules() -> None:
    from archsmith.graph.modules_cli import modules_app

    app.add_typer(modules_app, name="modules")


_register_modules()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
