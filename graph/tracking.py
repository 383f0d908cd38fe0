"""Experiment tracking: an optional MLflow run beside each Archsmith run (``[tracking] mlflow = true``).

What is logged: the resolved config as params (dotted keys) and as ``config.toml``; for every
archived candidate its score, params (millions), FLOPs (millions), the best score so far and any
reported metrics (``metrics.<name>``), all as metrics whose step is the candidate number (c0042 ->
42); when the run stops, ``best/`` (the winner's source and result), ``summary.json`` and the HTML
report as artifacts. The default store is local: ``mlruns/`` beside the runs directory (``./mlruns``
for the default ``runs_dir = "runs"``, MLflow's own place), SQLite in ``mlruns/mlflow.db`` with
artifacts in ``mlruns/artifacts`` (MLflow's file store is in maintenance mode and refuses
to open without an opt-in); ``tracking.mlflow_uri`` names any other (``http://host:5000``, ...).

Only MLflow's client object is used (no fluent API, so no process-wide active run). A resume goes
on with the same MLflow run, whose id the run directory keeps in ``tracking.json``. Tracking never
stops a search: after the start, a failing MLflow call is a warning and tracking ends for the run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from archsmith.graph.config import ArchsmithConfig, ConfigError
from archsmith.graph.paths import RunPaths, write_json
from archsmith.graph.state import CandidateRecord

INSTALL = "pip install 'archsmith[tracking]'"
STATE_FILE = "tracking.json"
PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call
MAX_PARAM_CHARS = 500  # the smallest value limit of MLflow versions still in use
QUIET_LOGGERS = ("mlflow", "alembic")  # table creation is announced at INFO level
CONNECT_TIMEOUT_S = 5.0
RecordListener = Callable[[CandidateRecord], None]


def local_store(runs_dir: str | Path) -> Path:
    """``mlruns/`` beside the runs directory (not in it: ``runs/*`` stays a list of runs)."""
    return Path(runs_dir).resolve().parent / "mlruns"


def default_uri(runs_dir: str | Path) -> str:
    """The local store's URI: SQLite in :func:`local_store` (absolute, so any cwd finds it)."""
    return f"sqlite:///{local_store(runs_dir) / 'mlflow.db'}"


def check_tracking(config: ArchsmithConfig) -> None:
    """A ConfigError when tracking is asked for but cannot work here (what to install, or what to set)."""
    if not config.tracking.mlflow:
        return
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(f"tracking.mlflow = true needs MLflow, which is not installed: {INSTALL} "
                          f"(or set tracking.mlflow = false)")
    uri = config.tracking.mlflow_uri
    if uri is None or uri.startswith("sqlite:"):
        missing = [name for name in ("sqlalchemy", "alembic") if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(f"tracking.mlflow: the local SQLite store needs {' and '.join(missing)}: {INSTALL}, "
                              f"or set tracking.mlflow_uri to a tracking server")
    elif uri.startswith(("http://", "https://")):
        _reachable(uri)


def _reachable(uri: str) -> None:
    """A ConfigError at once for a server that does not answer (MLflow's client retries for minutes)."""
    parsed = urlsplit(uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ConfigError(f"tracking.mlflow_uri = {uri!r}: no MLflow server answers at {parsed.hostname}:{port} "
                          f"({error.strerror or error}); start it, or unset tracking.mlflow_uri for the local "
                          f"store") from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config values as dotted keys and strings (lists and tables of leaves as JSON)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out[name] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return out


def candidate_step(record: CandidateRecord, fallback: int) -> int:
    """The candidate number of ``c0042`` (42); ``fallback`` for an id without digits."""
    digits = re.findall(r"\d+", str(record.get("id", "")))
    return int(digits[-1]) if digits else fallback


def _best_so_far(paths: RunPaths) -> float | None:
    """The best score among the records history.jsonl already lists (None: none valid yet)."""
    if not paths.history.is_file():
        return None
    records = [json.loads(line) for line in paths.history.read_text("utf-8").splitlines() if line.strip()]
    scores = [r["score"] for r in records if r.get("status") == "valid" and r.get("score") is not None]
    return max(scores) if scores else None


def listeners(*calls: RecordListener | None) -> RecordListener | None:
    """One record listener calling each given one in turn (None when none is given)."""
    chosen = [call for call in calls if call is not None]
    if not chosen:
        return None

    def listener(record: CandidateRecord) -> None:
        for call in chosen:
            call(record)

    return listener


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's and alembic's INFO lines off for the duration (levels restored after)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class MlflowTracker:
    """One MLflow run: params at the start, a metric row per candidate, artifacts at the end."""

    def __init__(self, config: ArchsmithConfig, paths: RunPaths, kind: str) -> None:
        from mlflow.tracking import MlflowClient

        settings = config.tracking
        self.paths = paths
        self.uri = settings.mlflow_uri or default_uri(config.runs_dir)
        self._lock = threading.Lock()
        self._best: float | None = None
        self._count = 0
        self.failed: str | None = None
        state_file = paths.root / STATE_FILE
        previous = json.loads(state_file.read_text("utf-8")) if state_file.is_file() else {}
        try:
            with _quiet():
                self.client = MlflowClient(tracking_uri=self.uri)
                if previous.get("uri") == self.uri and previous.get("run_id"):
                    self.run_id = previous["run_id"]  # a resume: the same MLflow run goes on
                    self.client.update_run(self.run_id, status="RUNNING")
                else:
                    self.run_id = self._create_run(config, kind)
        except Exception as error:  # noqa: BLE001 - any MLflow, database or network failure
            raise ConfigError(f"tracking: cannot start an MLflow run at {self.uri} "
                              f"({type(error).__name__}: {error}); check tracking.mlflow_uri") from None
        write_json(state_file, {"uri": self.uri, "run_id": self.run_id, "experiment": settings.experiment})
        self._best = _best_so_far(paths)  # a resume's curve goes on from the archived records

    def _create_run(self, config: ArchsmithConfig, kind: str) -> str:
        from mlflow.entities import Param

        settings = config.tracking
        experiment = self.client.get_experiment_by_name(settings.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            location = None
            if settings.mlflow_uri is None:  # artifacts beside the local database
                location = (local_store(config.runs_dir) / "artifacts").as_uri()
            experiment_id = self.client.create_experiment(settings.experiment, artifact_location=location)
        tags = {"archsmith.run_id": self.paths.run_id, "archsmith.run_dir": str(self.paths.root.resolve()),
                "archsmith.space": config.space.name, "archsmith.evaluator": config.evaluator.name,
                "archsmith.kind": kind}
        run = self.client.create_run(experiment_id, run_name=self.paths.run_id, tags=tags)
        params = [Param(key, value) for key, value in flatten(config.model_dump(mode="json", exclude_none=True)).items()]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(run.info.run_id, params=params[start:start + PARAMS_PER_BATCH])
        self.client.log_text(run.info.run_id, config.to_toml(), "config.toml")
        return run.info.run_id

    def _safely(self, what: str, call) -> None:  # noqa: ANN001 - a thunk
        """Run an MLflow call; the first failure warns and ends tracking for this run."""
        if self.failed is not None:
            return
        try:
            with _quiet():
                call()
        except Exception as error:  # noqa: BLE001 - tracking must never stop the search
            self.failed = f"{what}: {type(error).__name__}: {error}"
            warnings.warn(f"MLflow tracking stopped for this run ({self.failed})", RuntimeWarning, stacklevel=2)

    def on_record(self, record: CandidateRecord) -> None:
        """Metrics of one archived candidate (valid ones; a discarded child has no score)."""
        from mlflow.entities import Metric

        with self._lock:
            self._count += 1
            if record.get("status") != "valid" or record.get("score") is None:
                return
            score = float(record["score"])
            self._best = score if self._best is None else max(self._best, score)
            step, now = candidate_step(record, self._count), int(time.time() * 1000)
            values = {"score": score, "best_score": self._best}
            if record.get("params") is not None:
                values["params_m"] = record["params"] / 1e6
            if record.get("flops") is not None:
                values["flops_m"] = record["flops"] / 1e6
            for name, value in (record.get("metrics") or {}).items():
                if isinstance(value, (int, float)):
                    values[f"metrics.{name}"] = float(value)
            metrics = [Metric(key, value, now, step) for key, value in values.items()]
            self._safely("log candidate", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def finish(self) -> None:
        """The best candidate's files, the summary and the report as artifacts."""
        root = self.paths.root
        if self.paths.best.is_dir():
            self._safely("log best/", lambda: self.client.log_artifacts(self.run_id, str(self.paths.best), "best"))
        if self.paths.summary.is_file():
            self._safely("log summary", lambda: self.client.log_artifact(self.run_id, str(self.paths.summary)))
        with tempfile.TemporaryDirectory() as folder:
            try:
                from archsmith.graph.view import write_report

                report = write_report(root, Path(folder) / "report.html")
            except Exception as error:  # noqa: BLE001 - a report that cannot render is no reason to fail
                warnings.warn(f"MLflow tracking: no report artifact ({type(error).__name__}: {error})",
                              RuntimeWarning, stacklevel=2)
            else:
                self._safely("log report", lambda: self.client.log_artifact(self.run_id, str(report)))

    def end(self, status: str) -> None:
        self._safely("end run", lambda: self.client.set_terminated(self.run_id, status=status))


@contextmanager
def tracking(config: ArchsmithConfig, paths: RunPaths, kind: str) -> Iterator[MlflowTracker | None]:
    """The run's tracker (None when tracking is off); its MLflow run ends FINISHED, or KILLED on an
    interrupt, or FAILED on an error."""
    if not config.tracking.mlflow:
        yield None
        return
    check_tracking(config)
    tracker = MlflowTracker(config, paths, kind)
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
