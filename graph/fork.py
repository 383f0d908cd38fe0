"""Fork and replay: a new run from the checkpoint before any step of an old one, with changes.

``archsmith trace RUN --fork STEP --set roles.debugger.policy=llm ...`` answers "what would the
run have done from here with another model or setting". The fork is a new run directory:

* its trace.sqlite is a copy of the origin's cut at the last checkpoint of the outer graph taken
  before STEP started (LangGraph checkpoints are time-ordered ids; later checkpoints, subgraph
  checkpoints and the pending writes of the cut checkpoint are dropped, so every task from the cut
  on runs again, under the new config), and its steps table keeps the steps before the cut;
* history.jsonl, best/ and candidates/ hold what the origin had archived at the cut;
* config.toml is the origin's config with the overrides applied; ``origin.json`` records the
  origin run, the step, the checkpoint and the overrides (the viewer links a fork to its origin).

Then the fork continues like a resumed run, as a session of kind ``fork``.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from archsmith.graph.config import apply_overrides, config_from_dict, load_config
from archsmith.graph.nodes import write_archive_files
from archsmith.graph.paths import RunPaths, write_atomic, write_json
from archsmith.graph.run import THREAD_ID, RecordListener, RunResult, _execute, load_history
from archsmith.graph.state import CandidateRecord
from archsmith.graph.trace import read_steps

ORIGIN = "origin.json"


class ForkError(ValueError):
    """A fork that cannot be made (unknown step, no checkpoint before it)."""


def _cut_checkpoint(db: Path, before: float) -> tuple[str, float, dict[str, Any]]:
    """(id, time, state values) of the last outer checkpoint taken before ``before`` (epoch s)."""
    connection = sqlite3.connect(db)
    try:
        saver = SqliteSaver(connection)
        for item in saver.list({"configurable": {"thread_id": THREAD_ID, "checkpoint_ns": ""}}):
            taken = datetime.fromisoformat(item.checkpoint["ts"]).timestamp()
            if taken < before:
                return item.config["configurable"]["checkpoint_id"], taken, item.checkpoint
    finally:
        connection.close()
    raise ForkError("no checkpoint was taken before that step (fork from a later step)")


def _copy_cut(origin_db: Path, fork_db: Path, checkpoint_id: str, taken: float) -> None:
    source = sqlite3.connect(origin_db)
    try:
        source.execute("PRAGMA wal_checkpoint(FULL)")
        target = sqlite3.connect(fork_db)
        source.backup(target)
    finally:
        source.close()
    try:
        target.execute("DELETE FROM checkpoints WHERE checkpoint_id > ?", (checkpoint_id,))
        target.execute("DELETE FROM writes WHERE checkpoint_id >= ?", (checkpoint_id,))
        target.execute("DELETE FROM steps WHERE started_at >= ?", (taken,))
        target.commit()
        target.execute("VACUUM")
    finally:
        target.close()


def fork(
    run_dir: str | Path,
    step_id: int,
    overrides: list[str] | None = None,
    *,
    chat_models: Mapping[str, Any] | None = None,
    on_record: RecordListener | None = None,
    on_start: Callable[[Path], None] | None = None,
) -> RunResult:
    """Fork ``run_dir`` before step ``step_id`` with config ``overrides`` and run the fork."""
    origin = RunPaths.existing(run_dir)
    steps = [s for s in read_steps(origin.trace_db) if s.id == step_id]
    if not steps:
        raise ForkError(f"{origin.root} has no step {step_id} (see `archsmith trace {origin.root}`)")
    step = steps[0]
    config = load_config(origin.config)
    data = apply_overrides(config.model_dump(mode="json", exclude_none=True), overrides or [])
    forked_config = config_from_dict(data, source=f"{origin.config} with overrides")
    checkpoint_id, taken, checkpoint = _cut_checkpoint(origin.trace_db, step.started_at)

    paths = RunPaths.new(Path(origin.root).parent, f"{origin.root.name}-fork{step_id}")
    write_atomic(paths.config, forked_config.to_toml())
    _copy_cut(origin.trace_db, paths.trace_db, checkpoint_id, taken)
    history = _history_at(checkpoint, load_history(origin))
    for record in history:
        source = origin.candidate(record["id"])
        if source.is_dir():
            shutil.copytree(source, paths.candidate(record["id"]))
    write_archive_files(paths, history)
    write_json(paths.root / ORIGIN, {
        "origin_run": str(origin.root), "origin_run_id": origin.run_id, "step": step_id,
        "step_role": step.role, "step_candidate": step.candidate_id, "checkpoint_id": checkpoint_id,
        "overrides": list(overrides or []), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    if on_start is not None:
        on_start(paths.root)
    return _execute(paths, forked_config, kind="fork", chat_models=chat_models, on_record=on_record)


def _history_at(checkpoint: dict[str, Any], origin_history: list[CandidateRecord]) -> list[CandidateRecord]:
    """The origin's archived records at the cut checkpoint.

    The history channel stores deltas, so it is rebuilt from the origin's history.jsonl: the cut
    checkpoint's generation is archived already when the checkpoint follows an archive (no plans
    left), and not yet when it follows the Navigator (plans pending).
    """
    values = checkpoint.get("channel_values") or {}
    generation = int(values.get("generation") or 0)
    archived = generation if not values.get("plans") else generation - 1
    return [record for record in origin_history if int(record.get("generation") or 0) <= archived]
