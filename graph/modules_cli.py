"""``archsmith modules``: mine nn.Module classes from code, list and show the library."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from archsmith.graph.cli_errors import user_errors

modules_app = typer.Typer(no_args_is_help=True, help="Module mining: nn.Module classes from real code, probed in the sandbox.")
console = Console()

LibraryOption = Annotated[
    Optional[Path], typer.Option("--library", help="Library file (default: <data dir>/modules/library.sqlite).")
]


def _open(library: Path | None):
    from archsmith.tools.modules import ModuleLibrary

    if library is not None and library.is_dir():
        console.print(f"[red]--library {escape(str(library))}: is a directory, expected a file[/red]", highlight=False)
        raise typer.Exit(2)
    return ModuleLibrary(library)


@modules_app.command("mine")
def mine_command(
    sources: Annotated[list[str], typer.Argument(help="Directories, .py files or installed packages (torch.nn).")],
    library: LibraryOption = None,
    no_probe: Annotated[bool, typer.Option("--no-probe", help="Parse only; do not build and run the modules.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds per module probe.")] = 20.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Sandbox workers probing in parallel.")] = 1,
) -> None:
    """Parse SOURCES for nn.Module classes, probe each public one in the sandbox, store them."""
    from archsmith.tools.modules.mining import parse_sources, resolve_source

    started = time.perf_counter()
    with user_errors():
        resolved = [resolve_source(source) for source in sources]
    files = sum(len(r.files) for r in resolved)
    console.print(f"Parsing {files} files of {', '.join(r.package for r in resolved)} ...")
    report = parse_sources(resolved)
    if not no_probe:
        _probe(report, timeout, workers, sources)
    report.wall_s = time.perf_counter() - started
    with _open(library) as store:
        counts = store.upsert(report.modules)
        where = store.path
    _summary(report, counts, where)


def _probe(report, timeout: float, workers: int, sources: list[str]) -> None:
    from archsmith.tools.modules.mining import probe_records
    from archsmith.tools.sandbox import Sandbox, SandboxLimits

    todo = [r for r in report.modules if not (r.private or r.abstract)]
    if not todo:
        return
    preload = ["torch", "archsmith.tools.modules.probe"]
    preload += sorted({s.split(".")[0] for s in sources if not Path(s).exists()})  # installed packages
    limits = SandboxLimits(timeout_s=timeout, memory_mb=2048)
    with Sandbox(limits, workers=workers, preload=preload) as sandbox, Progress(
        TextColumn("probing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
        console=console, transient=True,
    ) as progress:
        task = progress.add_task("", total=len(todo))

        def advance(record) -> None:
            progress.update(task, advance=1, description=record.class_name)

        probe_records(report.modules, sandbox, timeout, workers, advance)
    report.probed = True


def _summary(report, counts: dict[str, int], where: Path) -> None:
    table = Table(title="Mining summary", show_header=False)
    table.add_column("what")
    table.add_column("", justify="right")
    table.add_row("files parsed", str(report.files_parsed))
    table.add_row("files skipped", str(len(report.skipped)))
    table.add_row("modules found", str(len(report.modules)))
    table.add_row("private / abstract (not probed)", str(sum(1 for r in report.modules if r.private or r.abstract)))
    if report.probed:
        table.add_row("probed ok", str(report.probed_ok))
        table.add_row("need arguments", str(report.needs_args))
        table.add_row("failed", str(report.failed))
    else:
        table.add_row("probed", "no (--no-probe)")
    table.add_row("library", f"{counts['added']} added, {counts['updated']} updated, {counts['replaced']} replaced")
    table.add_row("wall time", f"{report.wall_s:.1f} s")
    console.print(table)
    for skipped in report.skipped:
        console.print(Text(f"skipped {skipped.path}: {skipped.error}", style="yellow"))
    console.print(Text(f"library: {where}"))


def _channels(probe: dict | None) -> str:
    if not probe or probe.get("status") != "ok":
        return "-"
    return f"{probe.get('channels_in')}->{probe.get('channels_out')}"


@modules_app.command("list")
def list_command(
    library: LibraryOption = None,
    source: Annotated[Optional[str], typer.Option("--source", help="Only this package (torch.nn) or source.")] = None,
    ok_only: Annotated[bool, typer.Option("--ok-only", help="Only modules whose probe succeeded.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """The stored modules: name, channels in->out, stride, params, status."""
    with _open(library) as store:
        records = store.records(source, ok_only)
    if as_json:
        for record in records:
            typer.echo(record.model_dump_json())
        return
    table = Table(title=f"{len(records)} modules")
    table.add_column("name", overflow="fold")
    table.add_column("in->out", justify="right", no_wrap=True)
    table.add_column("stride", justify="right")
    table.add_column("params", justify="right")
    table.add_column("status", overflow="fold")
    for record in records:
        probe = record.probe or {}
        ok = probe.get("status") == "ok"
        stride = probe.get("stride") if ok else None
        params = probe.get("params") if ok else None
        table.add_row(Text(record.name), _channels(probe), "-" if stride is None else str(stride),
                      "-" if params is None else f"{params:,}", Text(record.status))
    console.print(table)


@modules_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Qualified name, or a unique class name (Conv2d).")],
    library: LibraryOption = None,
) -> None:
    """One module: signature, provenance, probe result and source."""
    with _open(library) as store:
        found = store.find(name)
    if not found:
        console.print(f"[red]no module named {escape(name)!s} in the library[/red]", highlight=False)
        raise typer.Exit(2)
    if len(found) > 1:
        names = ", ".join(r.name for r in found[:8]) + (" ..." if len(found) > 8 else "")
        console.print(f"[red]{escape(name)} is ambiguous: {escape(names)}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    record = found[0]
    console.print(Text(record.name, style="bold"))
    args = ", ".join(_arg_text(a) for a in record.init_args)
    console.print(Text(f"__init__({args})" + (f"   (from {record.init_from})" if record.init_from else "")))
    console.print(Text(record.forward_signature or "forward: not found in the mined classes"))
    if record.required_args:
        console.print(Text(f"required: {', '.join(record.required_args)}"))
    version = f" {record.version}" if record.version else ""
    console.print(Text(f"provenance: {record.package}{version}, {record.path}:{record.line}"
                       + (f", licence {record.licence}" if record.licence else "")))
    console.print(Text(f"bases: {', '.join(record.bases)}; status: {record.status}"))
    if record.probe:
        shown = {k: v for k, v in record.probe.items() if k not in ("traceback", "ok") and v is not None}
        console.print(Text("probe: " + json.dumps(shown)))
    console.print(Syntax(record.class_source, "python", line_numbers=True, start_line=record.line))


def _arg_text(arg) -> str:
    prefix = {"var_positional": "*", "var_keyword": "**"}.get(arg.kind, "")
    text = prefix + arg.name + (f": {arg.annotation}" if arg.annotation else "")
    return text + (f" = {arg.default}" if arg.default is not None else "")
