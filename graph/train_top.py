"""Training the best candidates of a finished search: proxies rank, training decides.

``train_top(run_dir, top=5)`` takes the ``top`` valid candidates of a run by their search score,
trains each (classification: the training evaluator's task on ``[evaluator.train]``'s data;
detection: ultralytics on ``[evaluator.detection]``'s data YAML) on the configured executor, and
appends one line per candidate to ``RUN_DIR/trained.jsonl`` as each finishes, so an interrupted
session loses only the candidates still training. A later call skips candidates already trained
with the same settings. The result also gives the rank agreement (Kendall tau) between the
search score and the trained score, from five trained candidates on (fewer measure nothing).
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
from archsmith.tools.datasets import DataError
from archsmith.tools.evaluators import TRAIN_TASK, score_from_task
from archsmith.tools.executors import Job, as_completed
from archsmith.tools.ranking import kendall_tau

__all__ = ["MIN_RANKED", "TrainPlan", "TrainedCandidate", "TrainTopResult", "train_top"]

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


MIN_RANKED = 5  # fewer trained candidates give no rank statistic: Kendall tau over 2-4 measures nothing


@dataclass
class TrainPlan:
    """What a call is about to do, told before the first candidate trains."""

    data: str  # the data set, in words ("cifar10 at /data/cifar", "synthetic: ...", a data YAML)
    synthetic: bool  # random images: the accuracies measure nothing about real data
    preset: str  # the training schedule, in words
    todo: list[str]  # candidate ids to train, best search score first
    skipped: list[str]  # trained earlier with the same settings


@dataclass
class TrainTopResult:
    run_dir: Path
    trained: list[TrainedCandidate]  # this call's and earlier sessions' (same settings), best first
    skipped: list[str]  # already trained with these settings
    kendall_tau: float | None  # search score vs trained score, over >= MIN_RANKED successful ones
    executor: str
    data: str = ""
    synthetic: bool = False
    preset: str = ""


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


def _describe(config: ArchsmithConfig) -> tuple[str, bool, str]:
    """(data set, synthetic?, preset) of a training config, in words."""
    if config.space.name == "yolo":
        detection = config.evaluator.detection
        return (str(detection.data_yaml), False,
                f"ultralytics, {detection.epochs} epoch(s) at {detection.imgsz}, batch {detection.batch}")
    train = config.evaluator.train
    assert train is not None
    data = train.data
    name = str(data.get("name", "synthetic"))
    changed = ", ".join(f"{key}={value}" for key, value in train.settings.items())
    preset = f"{train.preset}" + (f" ({changed})" if changed else "")
    if name == "synthetic":
        samples, classes = data.get("synthetic_samples", 2048), data.get("synthetic_classes", 10)
        return f"synthetic ({samples} generated images, {classes} classes)", True, preset
    return (f"{name} at {data['path']}" if data.get("path") else name), False, preset


SYNTHETIC_REFUSED = (
    "no data set configured: the run's evaluator.train.data is synthetic (generated images whose accuracies "
    "measure nothing about real data). Name a data set, e.g. --set 'evaluator.train.data={name=\"cifar10\", "
    "path=\"/data/cifar-10-batches-py\"}', or pass --synthetic to train on synthetic data anyway"
)


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
    allow_synthetic: bool = True,
    on_plan: Callable[[TrainPlan], None] | None = None,
) -> TrainTopResult:
    """Train the ``top`` best candidates of a run (see the module docstring).

    ``allow_synthetic=False`` refuses (ConfigError) a run whose training data is the synthetic
    set (`archsmith train` without --synthetic); ``on_plan`` hears the data set, preset and the
    candidates before the first trains, ``on_trained`` each as it finishes."""
    if top < 1:
        raise ConfigError(f"--top {top}: train at least one candidate")
    paths = RunPaths.existing(run_dir)
    config = _training_config(load_config(paths.config, overrides or []))
    train = config.evaluator.train if config.space.name != "yolo" else None
    synthetic_data = train is not None and train.data.get("name", "synthetic") == "synthetic"
    if synthetic_data and not allow_synthetic:
        raise ConfigError(SYNTHETIC_REFUSED)
    if train is not None:
        try:  # [evaluator.train.data] download = true: here, as the training tasks have no network
            train.prepare_data()
        except DataError as error:
            raise ConfigError(f"evaluator.train.data: {error}") from None
    make_job, settings = _job_factory(config)  # a yolo run's data YAML is checked here
    data, synthetic, preset = _describe(config)
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
    if on_plan is not None:
        on_plan(TrainPlan(data, synthetic, preset, [r["id"] for r in todo], skipped))
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
    tau = kendall_tau([c.search_score for c in good], [c.score for c in good]) if len(good) >= MIN_RANKED else None
    return TrainTopResult(paths.root, kept, skipped, tau, mechanism, data, synthetic, preset)
