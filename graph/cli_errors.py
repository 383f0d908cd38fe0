"""Bad input on the command line: one red line naming what is wrong, exit code 2, no traceback.

Shared by every command (graph/cli.py, graph/knowledge_cli.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import typer
from rich.console import Console

from archsmith.graph.config import ConfigError
from archsmith.graph.paths import RunInUseError

console = Console()


@contextmanager
def user_errors():
    """Bad input (config, workflow, space settings, knowledge files, data directories, a busy
    run, an unreachable Ray cluster): one red line naming what is wrong, exit code 2, no traceback."""
    from archsmith.graph.builder import WorkflowError
    from archsmith.knowledge.errors import KnowledgeError
    from archsmith.tools.datasets import DataError
    from archsmith.tools.ray_executor import RayUnavailable
    from archsmith.tools.spaces import SpaceError

    try:
        yield
    except (ConfigError, WorkflowError, SpaceError, KnowledgeError, RunInUseError, DataError, RayUnavailable) as error:
        console.print(f"[red]{error}[/red]", highlight=False)  # each names its store, file or field
        raise typer.Exit(2) from None
