"""`archsmith check CANDIDATE` (vet one candidate) and `archsmith export RUN` (write a run's winner
to a file with its space's extension). Registered by graph/cli.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from archsmith.graph.cli_errors import SetOption, user_errors
from archsmith.graph.cli_tables import flops_text
from archsmith.graph.config import ConfigError, load_config

console = Console()


def _budget_text(cfg, origin: str) -> str:
    limits = [f"params <= {cfg.budget.params_m} M" if cfg.budget.params_m is not None else "",
              f"FLOPs <= {cfg.budget.flops_m} M" if cfg.budget.flops_m is not None else ""]
    shown = ", ".join(limit for limit in limits if limit)
    if shown:
        return f"{shown} ({origin})"
    return "none (give one with --config FILE or --set budget.params_m=...)"


def check(
    candidate: Annotated[str, typer.Argument(help="A candidate or a file holding one: a .py file is a code "
                                             "candidate, a .yaml file a detection model, a .txt file is read by its "
                                             "content (Python, model YAML, NB201 cell or template string).")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config: space, evaluator and budget.")] = None,
    set_: SetOption = None,
) -> None:
    """Run the Verifier's checks and the evaluator on one candidate; exit 1 if it fails.

    A budget applies only when you give one (--config or --set budget.params_m=...)."""
    from archsmith.graph.check import check_candidate, check_config, load_candidate

    with user_errors():
        given = load_candidate(candidate)
        if config is not None:
            cfg = load_config(config, set_ or [])
            space_origin, budget_origin = f"from {config}", f"from {config}"
        else:
            cfg = check_config(given.space, given.text, set_)
            space_origin = "from --set" if cfg.space.name != given.space else f"from {given.why}"
            budget_origin = "from --set"
        report = check_candidate(given.text, cfg)
    table = Table(show_header=False, title="check")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("verdict", "[green]pass[/green]" if report.ok else f"[red]fail[/red] at {report.stage}")
    if report.reason:
        table.add_row("reason", report.reason)
    table.add_row("space", f"{cfg.space.name} ({space_origin})")
    table.add_row("budget", _budget_text(cfg, budget_origin))
    if report.params is not None:
        table.add_row("params", f"{report.params:,} ({report.params / 1e6:.3f} M)")
    if report.macs is not None:
        table.add_row("MACs", f"{report.macs:,}")
    if report.flops is not None:
        table.add_row("FLOPs (2 x MACs)", f"{report.flops:,} ({flops_text(report.flops)})")
    if report.score is not None:
        label = "Zen-score" if cfg.evaluator.name == "zen" else f"score ({cfg.evaluator.name})"
        table.add_row(label, f"{report.score:.4f} (std {report.score_std or 0:.4f})")
    for name, value in report.metrics.items():
        table.add_row(f"{name} (reported only)", f"{value:.4f}")
    if report.weight_layers is not None:
        table.add_row("weight layers run", str(report.weight_layers))
    if report.sandbox:
        table.add_row("sandbox", report.sandbox)
    console.print(table)
    if report.traceback and not report.ok:
        console.print(report.traceback[-2000:], markup=False, highlight=False)
    raise typer.Exit(0 if report.ok else 1)


def export(
    run_dir: Annotated[Path, typer.Argument(help="The run directory (runs/<id>).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="File (or folder) to write; default "
                                                "./<run id>-<candidate id> with the space's extension.")] = None,
) -> None:
    """Write a run's best candidate to a file with its space's extension (.py, .yaml, .txt)."""
    from archsmith.graph.nodes import run_file_suffix
    from archsmith.graph.paths import RunPaths

    with user_errors():
        try:
            paths = RunPaths.existing(run_dir)
        except FileNotFoundError as error:
            raise ConfigError(str(error)) from None
        saved = paths.best / "result.json"
        if not saved.is_file():
            raise ConfigError(f"{paths.root}: no best candidate yet (no {saved.relative_to(paths.root)}; "
                              "the run has no valid candidate)")
        try:
            best = json.loads(saved.read_text("utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError(f"{saved}: not JSON ({error})") from None
        suffix = run_file_suffix(paths)
        name = f"{paths.run_id}-{best['id']}{suffix}"
        target = name if out is None else (out / name if out.is_dir() else out)
        target = Path(target)
        if not target.parent.is_dir():
            raise ConfigError(f"--out {out}: no folder {target.parent}")
        target.write_text(best["text"].rstrip("\n") + "\n", "utf-8")
    score = f", score {best['score']:.4f}" if best.get("score") is not None else ""
    console.print(f"wrote best candidate {best['id']}{score} to {target}", highlight=False, soft_wrap=True)
    if target.suffix != suffix:
        console.print(f"[yellow]note: {target.name} does not end in {suffix}, the extension of this run's "
                      "candidates (archsmith check reads .py as code, .yaml as a detection model)[/yellow]",
                      soft_wrap=True)
    console.print(f"vet it with: archsmith check {target}", highlight=False, soft_wrap=True)
