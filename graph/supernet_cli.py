"""`archsmith supernet train CONFIG`: train the supernet a config's `evaluator.supernet` names
(tools/supernets/training.py), so that `archsmith run CONFIG` can then score subnets with its
weights. One config file for both steps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from archsmith.graph.cli_errors import SetOption, user_errors

console = Console()
supernet_app = typer.Typer(help="Weight-sharing supernets: train one for the supernet evaluator.", no_args_is_help=True)


@supernet_app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="Config TOML with a supernet [space] (ofa_mbv3, spos_shufflenet) and [evaluator.supernet].")],
    restart: Annotated[bool, typer.Option("--restart", help="Start afresh, overwriting the checkpoint.")] = False,
    set_: SetOption = None,
) -> None:
    """Train the supernet of the config's space on [evaluator.supernet]'s data and save it to its
    checkpoint (the official {"state_dict": ...} format plus the training state). Run again to go on
    from the last saved epoch; then `archsmith run CONFIG` searches it."""
    from archsmith.graph.config import ConfigError, load_config
    from archsmith.tools.datasets import load_dataset
    from archsmith.tools.spaces import get_space
    from archsmith.tools.supernets.training import CheckpointMismatch, train_supernet

    with user_errors():
        cfg = load_config(config, set_ or [])
        supernet = cfg.evaluator.supernet
        if supernet is None:
            raise ConfigError(f"{config}: no [evaluator.supernet] section (checkpoint = the file to write, data, "
                              "[evaluator.supernet.training])")
        space = get_space(cfg.space.name, cfg.space.settings)
        if getattr(space, "supernet_settings", None) is None:
            raise ConfigError(f"space.name = {cfg.space.name!r} has no supernet (supernet spaces: ofa_mbv3, "
                              "spos_shufflenet)")
        settings = supernet.training
        if supernet.data.get("download"):
            from archsmith.tools.downloads import prepare_dataset

            prepare_dataset(supernet.data)
        data = load_dataset(supernet.data)
        device = _device(supernet.device)
        checkpoint = supernet.checkpoint_path()
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"supernet: {cfg.space.name} {escape(str(cfg.space.settings))}; data {data.name} "
                      f"({len(data.train_y)} training images, {data.num_classes} classes); {settings.sampling} "
                      f"sampling, {settings.epochs} epochs, batch {settings.batch_size}; device {device}",
                      highlight=False, soft_wrap=True)
        columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("train", total=None, loss="-")

            def on_step(step: int, total: int, loss: float) -> None:
                progress.update(task, completed=step, total=total, loss=f"{loss:.3f}")

            try:
                result = train_supernet(space, data, checkpoint, settings, device=device, on_step=on_step,
                                        restart=restart)
            except CheckpointMismatch as error:  # also: a sampling rule the space cannot follow
                raise ConfigError(f"evaluator.supernet.checkpoint: {error}") from None
    subnet = "largest subnet" if settings.sampling == "sandwich" else "sampled subnets"
    table = Table(box=box.SIMPLE, title=f"supernet training ({subnet}, training images)")
    for header in ("epoch", "loss", "train acc %", "secs"):
        table.add_column(header, justify="right")
    for row in result.history:
        table.add_row(str(int(row["epoch"])), f"{row['loss']:.3f}", f"{row['train_acc']:.1f}",
                      f"{row['seconds']:.1f}")
    console.print(table)
    if result.resumed_from and result.resumed_from >= settings.epochs:
        console.print(f"already trained: {result.resumed_from} epochs in {checkpoint} (raise "
                      "evaluator.supernet.training.epochs to train more, or --restart)", highlight=False)
    console.print(f"checkpoint: {checkpoint}", highlight=False, soft_wrap=True)
    console.print(f"next: archsmith run {config}", highlight=False, soft_wrap=True)


def _device(name: str) -> str:
    """The training device (auto: CUDA when there is one), as the training task resolves it; a
    CUDA device asked for where there is none is a config error."""
    from archsmith.graph.config import ConfigError
    from archsmith.tools.tasks import StageFailure
    from archsmith.tools.train_task import _device as resolve_device

    try:
        return resolve_device(name)
    except StageFailure as error:
        raise ConfigError(f"evaluator.supernet.device: {error}") from None
