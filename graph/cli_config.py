"""`archsmith config show [CONFIG]`: the resolved configuration with every default, and where
a run's budget and candidate count come from (the line `archsmith run` prints before it starts)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from archsmith.graph.cli_errors import SetOption, user_errors
from archsmith.graph.config import ArchsmithConfig, default_config_text, load_config, parse_override

config_app = typer.Typer(no_args_is_help=True, help="The configuration: print it resolved, with every default.")

ConfigArgument = Annotated[Optional[Path], typer.Argument(help="TOML config; the embedded default when omitted.")]


def load_checked(config: Path | None, overrides: list[str] | None) -> ArchsmithConfig:
    """The config, its workflow and its space checked as a run would check them, before any output
    (exit 2 with the field named)."""
    from archsmith.graph.builder import validate_workflow
    from archsmith.tools.spaces import get_space

    with user_errors():
        cfg = load_config(config, overrides or [])
        validate_workflow(cfg)
        get_space(cfg.space.name, cfg.space.settings)
    return cfg


def _has_key(data: dict[str, Any], dotted: list[str]) -> bool:
    node: Any = data
    for part in dotted:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def origin(key: str, config: Path | None, overrides: list[str] | None) -> str:
    """Where the value of a dotted key comes from: --set, the config file, the embedded default
    config, or the field's built-in default."""
    dotted = key.split(".")
    for item in reversed(overrides or []):
        path, _ = parse_override(item)
        if dotted[: len(path)] == path:
            return "--set"
    if config is None:
        data = tomllib.loads(default_config_text())
        return "embedded default config" if _has_key(data, dotted) else "built-in default"
    data = tomllib.loads(config.read_text("utf-8"))
    return f"from {config.name}" if _has_key(data, dotted) else f"built-in default, not set in {config.name}"


def budget_line(cfg: ArchsmithConfig, config: Path | None, overrides: list[str] | None) -> str:
    """One line (rich markup) saying which budget and candidate count apply and where each comes
    from; a config file starts from the built-in defaults (no limit, 40 candidates), not from the
    embedded default config (params <= 1.0 M, 200 candidates), and the line says so."""
    limits: dict[str, list[str]] = {}
    for name, unit in (("params_m", "params"), ("flops_m", "FLOPs")):
        value = getattr(cfg.budget, name)
        shown = f"{unit} <= {value} M" if value is not None else f"no {unit} limit"
        limits.setdefault(origin(f"budget.{name}", config, overrides), []).append(shown)
    budget = "; ".join(f"{' and '.join(shown)} ({where})" for where, shown in limits.items())
    if cfg.budget.params_m is None and cfg.budget.flops_m is None:
        budget = f"[yellow]{budget}[/yellow]"
    count = f"{cfg.search.max_candidates} candidates ({origin('search.max_candidates', config, overrides)})"
    line = f"[bold]budget: {budget}; {count}[/bold]"
    if config is not None and "built-in default" in line:
        line += " (a config file starts from the built-in defaults; see: archsmith config show FILE)"
    return line


def _unset(data: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in data.items():
        if value is None:
            found.append(f"{prefix}{key}")
        elif isinstance(value, dict):
            found.extend(_unset(value, f"{prefix}{key}."))
    return found


@config_app.command("show")
def show(config: ConfigArgument = None, set_: SetOption = None) -> None:
    """Print the resolved configuration as TOML, every default written out (a run saves the same
    in runs/<id>/config.toml); fields left unset (no limit, off) are listed at the end."""
    cfg = load_checked(config, set_)
    source = str(config) if config is not None else "the embedded default config"
    extra = f" with --set {' --set '.join(set_)}" if set_ else ""
    typer.echo(f"# resolved configuration: {source}{extra}, then the built-in defaults")
    typer.echo(cfg.to_toml().rstrip("\n"))
    unset = _unset(cfg.model_dump(mode="json"))
    if unset:
        typer.echo("\n# not set (TOML has no null; unset means no limit, off or automatic):")
        for name in unset:
            typer.echo(f"#   {name}")
