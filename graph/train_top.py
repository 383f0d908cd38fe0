"""Training the best candidates of a finished search: proxies rank, training decides.

``train_top(run_dir, top=5)`` takes the ``top`` valid candidates of a run by their search score,
trains each (classification: the training evaluator's task on ``[evaluator.train]``'s data;
detection: ultralytics on ``[evaluator.detection]``'s data YAML) on the configured executor, and
appends one line per candidate to ``RUN_DIR/trained.jsonl`` as each finishes, so an interrupted
session loses only the candidates still training. A later call skips candidates already trained
with the same settings. The result also gives the rank agreement (Kendall tau) between the
search score and the trained score.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsmith.graph.config import ArchsmithConfig, ConfigError, TrainEvaluatorConfig, load_config
from archsmith.graph.context import train_payload
from archsmith.graph.paths import RunPaths
from archsmith.graph.run import load_history, open_executor, open_sandbox
from archsmith.tools.evaluators import TRAIN_TASK, score_from_task
from archsmith.tools.executors import Job, as_completed
from archsmith.tools.ranking import kendall_tau

__all__ = ["TrainedCandidate", "TrainTopResult", "train_top"]

TRAINED_FILE = "trained.jsonl"


@dataclass
class TrainedCandidate:
    id: str
    search_score: float | None
    ok: bool
    score: float | None = None  # the trained signal (valid accuracy, mAP50-95)
    report: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    settings_key: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainTopResult:
    run_dir: Path
    trained: list[TrainedCandidate]  # this call's and earlier sessions' (same settings), best first
    skipped: list[str]  # already trained with these settings
    kendall_tau: float | None  # search score vs trained score, over the successful ones
    executor: str


def _training_config(config: ArchsmithConfig) -> ArchsmithConfig:
    """The run's config with training as its evaluator (defaults when the search used a proxy)."""
    evaluator = config.evaluator
    if config.space.name == "yolo" or evaluator.name == "train":
        return config
    return config.model_copy(update={"evaluator": evaluator.model_copy(
        update={"name": "train", "train": evaluator.train or TrainEvaluatorConfig()})})


def _job_factory(config: ArchsmithConfig) -> tuple[Callable[[str, str], Job], dict[str, Any]]:
    """A job per (candidate id, text) and the settings that identify this training."""
    if config.space.name == "yolo":
        from archsmith.graph.detection_jobs import detection_training_job

        return detection_training_job(config)
    train = config.evaluator.train
    assert train is not None

    def job(candidate_id: str, text: str) -> Job:
        return Job(key=candidate_id, task=TRAIN_TASK, payload=train_payload(config, text), timeout_s=train.timeout_s)

    return job, {"train": train.model_dump(mode="json"), "seed": config.seed}


def _settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _load_trained(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise ConfigError(f"{path}, line {number}: not JSON (a damaged trained.jsonl; fix or remove it)") from None
    return rows


def train_top(
    run_dir: str | Path,
    top: int = 5,
    overrides: list[str] | None = None,
    on_trained: Callable[[TrainedCandidate], None] | None = None,
    again: bool = False,
) -> TrainTopResult:
    """Train the ``top`` best candidates of a run (see the module docstring)."""
    if top < 1:
        raise ConfigError(f"--top {top}: train at least one candidate")
    paths = RunPaths.existing(run_dir)
    config = _training_config(load_config(paths.config, overrides or []))
    make_job, settings = _job_factory(config)
    key = _settings_key(settings)
    history = load_history(paths)
    ranked = sorted((r for r in history if r.get("status") == "valid" and r.get("score") is not None),
                    key=lambda r: r["score"], reverse=True)[:top]
    if not ranked:
        raise ConfigError(f"{paths.root}: no valid candidate to train (history.jsonl is empty or all discarded)")
    trained_file = paths.root / TRAINED_FILE
    earlier = {row["id"]: row for row in _load_trained(trained_file) if row.get("settings_key") == key}
    skipped = [] if again else [r["id"] for r in ranked if r["id"] in earlier and earlier[r["id"]].get("ok")]
    todo = [r for r in ranked if r["id"] not in skipped]
    search_scores = {r["id"]: r["score"] for r in ranked}
    fresh: list[TrainedCandidate] = []
    with ExitStack() as stack:
        stack.enter_context(paths.lock())
        sandbox = open_sandbox(config, stack)
        executor = open_executor(config, stack, sandbox)
        jobs = [make_job(r["id"], r["text"]) for r in todo]
        for job, outcome in as_completed(executor, jobs):
            score = score_from_task("train", outcome)
            entry = TrainedCandidate(
                id=job.key, search_score=search_scores[job.key], ok=score.ok, score=score.score,
                report=score.report, error=None if score.ok else score.short_error(), settings_key=key,
                details=score.details,
            )
            with trained_file.open("a", encoding="utf-8") as handle:  # one line per finished candidate
                handle.write(json.dumps(entry.as_json(), sort_keys=True) + "\n")
            fresh.append(entry)
            if on_trained is not None:
                on_trained(entry)
        mechanism = executor.mechanism
    kept = [TrainedCandidate(**earlier[i]) for i in skipped] + fresh
    kept.sort(key=lambda c: (c.score is not None, c.score or 0.0), reverse=True)
    good = [c for c in kept if c.ok and c.score is not None and c.search_score is not None]
    tau = kendall_tau([c.search_score for c in good], [c.score for c in good]) if len(good) >= 2 else None
    return TrainTopResult(paths.root, kept, skipped, tau, mechanism)
