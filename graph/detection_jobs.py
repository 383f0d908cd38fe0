"""Training jobs for detection candidates (yolo space): ultralytics on the user's data YAML."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archsmith.graph.config import ArchsmithConfig, ConfigError
from archsmith.graph.context import task_payload
from archsmith.tools.evaluators import DETECTION_TRAIN_TASK
from archsmith.tools.executors import Job

__all__ = ["detection_training_job"]


def _dataset_dirs(data_yaml: Path) -> list[str]:
    """Directories the training task reads: the YAML's folder and the dataset root it names."""
    import yaml

    dirs = [str(data_yaml.parent)]
    try:
        root = (yaml.safe_load(data_yaml.read_text("utf-8")) or {}).get("path")
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"evaluator.detection.data_yaml {data_yaml}: not a readable YAML file ({error})") from None
    if isinstance(root, str) and root:
        resolved = Path(root) if os.path.isabs(root) else data_yaml.parent / root
        dirs.append(str(resolved.resolve()))
    return dirs


def detection_training_job(config: ArchsmithConfig) -> tuple[Callable[[str, str], Job], dict[str, Any]]:
    """A job per (candidate id, model YAML) and the settings that identify this training."""
    settings = config.evaluator.detection
    if not settings.data_yaml:
        raise ConfigError("training a yolo-space run needs evaluator.detection.data_yaml: the data YAML of a "
                          "local dataset (e.g. --set evaluator.detection.data_yaml=/data/mine/data.yaml)")
    data_yaml = Path(settings.data_yaml).expanduser().resolve()
    if not data_yaml.is_file():
        raise ConfigError(f"evaluator.detection.data_yaml: {data_yaml} is not a file (built-in dataset names "
                          "are refused: they download)")
    read_paths = _dataset_dirs(data_yaml)

    def job(candidate_id: str, text: str) -> Job:
        payload = task_payload(
            config, text, seed=config.seed, data_yaml=str(data_yaml), epochs=settings.epochs,
            imgsz=settings.imgsz, batch=settings.batch, device=settings.device, read_paths=read_paths,
            **settings.options,
        )
        return Job(key=candidate_id, task=DETECTION_TRAIN_TASK, payload=payload, timeout_s=settings.timeout_s)

    return job, {"detection": settings.model_dump(mode="json"), "seed": config.seed}
