"""Bad input on the command line: one red line naming what is wrong, exit code 2, no traceback.

Shared by every command (graph/cli.py, graph/knowledge_cli.py): :func:`user_errors`, the
``--set`` option, and the command group that reads ``--set KEY VALUE`` (no ``=``) as the mistake
it is before any argument is taken for something else.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from archsmith.graph.config import ConfigError
from archsmith.graph.paths import RunInUseError

console = Console()

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config field: --set budget.params_m=0.5 (repeatable)."),
]


@contextmanager
def user_errors():
    """Bad input (config, workflow, space settings, knowledge files, data directories, a busy
    run, an unreachable Ray cluster, a source that cannot be mined): one red line naming what is wrong, exit code 2, no traceback."""
    from archsmith.graph.builder import WorkflowError
    from archsmith.knowledge.errors import KnowledgeError
    from archsmith.tools.datasets import DataError
    from archsmith.tools.modules import MiningError
    from archsmith.tools.ray_executor import RayUnavailable
    from archsmith.tools.spaces import SpaceError

    try:
        yield
    except (ConfigError, WorkflowError, SpaceError, KnowledgeError, RunInUseError, DataError, RayUnavailable,
            MiningError) as error:
        console.print(f"[red]{escape(str(error))}[/red]", highlight=False, soft_wrap=True)  # each names its store, file or field
        raise typer.Exit(2) from None


def _set_options(group: Any, ctx: Any, args: list[str]) -> set[str]:
    """The option names of --set in the command these args invoke (-s only where it means --set)."""
    command = group
    for token in args:
        if token == "--":
            break
        if token.startswith("-") or not hasattr(command, "get_command"):
            continue
        sub = command.get_command(ctx, token)
        if sub is None:
            break
        command = sub
    names = {"--set"}
    for param in command.params:
        if "--set" in getattr(param, "opts", []):
            names.update(param.opts)
    return names


def set_without_value(args: list[str], names: set[str]) -> str | None:
    """A message for the first ``--set KEY`` whose value has no ``=`` (``--set a.b 20``), else None."""
    for index, token in enumerate(args):
        if token == "--":
            return None
        if token in names:
            value = args[index + 1] if index + 1 < len(args) else None
        elif token.startswith("--set="):
            value = token[len("--set="):]
        elif "-s" in names and token.startswith("-s") and not token.startswith("--") and len(token) > 2:
            value = token[2:]
        else:
            continue
        if value is None or "=" in value:
            continue
        after = args[index + 2] if token in names and index + 2 < len(args) else None
        example = f"{value}={after}" if after is not None and not after.startswith("-") else f"{value}=VALUE"
        return f"--set {value}: expected KEY=VALUE (with '='), e.g. --set {example}"
    return None


class ArchsmithGroup(TyperGroup):
    """The root command group: ``--set KEY VALUE`` is named as the mistake it is (else the value
    would be taken as the CONFIG argument: "config file not found: 20")."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        problem = set_without_value(args, _set_options(self, ctx, args))
        if problem is not None:
            console.print(f"[red]{escape(problem)}[/red]", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        return super().parse_args(ctx, args)
