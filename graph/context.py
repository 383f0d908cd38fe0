"""What every node of one run shares: config, run directory, space, sandbox, trace, models.

Built by the run lifecycle (graph/run.py) and handed to the agents when the graph is built;
nothing here is stored in the checkpointed state.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsmith.agents.llm import ChatModelProvider
from archsmith.agents.prompts import PromptLoader
from archsmith.agents.servers import ManagedServer
from archsmith.graph.config import ArchsmithConfig, ConfigError
from archsmith.graph.paths import RunPaths
from archsmith.graph.state import CandidateRecord
from archsmith.graph.trace import TraceStore
from archsmith.knowledge.sampling import IdeaSampler
from archsmith.knowledge.store import IdeaStore
from archsmith.tools.evaluators import (
    NAS_DET_TASK,
    SUPERNET_TASK,
    TRAIN_TASK,
    ZEN_TASK,
    Evaluator,
    TabularEvaluator,
    TaskEvaluator,
    TaskRunner,
)
from archsmith.tools.spaces import SearchSpace
from archsmith.tools.tabular import TabularBenchmark


class ArchiveIndex:
    """Thread-safe view of what has been archived or is being built, for duplicate checks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._canonicals: dict[str, str] = {}
        self._history: list[CandidateRecord] = []

    def reset(self, history: list[CandidateRecord]) -> None:
        with self._lock:
            self._history = list(history)
            self._canonicals = {
                r["canonical"]: r["id"] for r in history if r.get("canonical") and r.get("id")
            }

    def history(self) -> list[CandidateRecord]:
        """The records archived at the last reset (the history as the generation began)."""
        with self._lock:
            return list(self._history)

    def owner(self, canonical: str) -> str | None:
        """The candidate that holds a canonical form, if any."""
        with self._lock:
            return self._canonicals.get(canonical)

    def claim(self, canonical: str, candidate_id: str) -> str | None:
        """Claim a canonical form for a candidate; returns the earlier owner if already taken."""
        with self._lock:
            owner = self._canonicals.get(canonical)
            if owner is not None and owner != candidate_id:
                return owner
            self._canonicals[canonical] = candidate_id
            return None


@dataclass
class RunContext:
    config: ArchsmithConfig
    paths: RunPaths
    space: SearchSpace
    sandbox: TaskRunner | None  # None when nothing is executed (tabular evaluation)
    trace: TraceStore
    prompts: PromptLoader
    models: ChatModelProvider
    evaluator: Evaluator
    ideas: IdeaSampler | None = None  # fair idea sampling, when knowledge.use
    idea_store: IdeaStore | None = None
    archive: ArchiveIndex = field(default_factory=ArchiveIndex)
    on_record: Callable[[CandidateRecord], None] | None = None
    generation_started: float = field(default_factory=time.time)
    # The Navigator's latest score model (search.strategy = "model"), which an llm Generator asking
    # for several children per plan (roles.generator.proposals) ranks them with; None before one
    # is fitted (warm start, or a resumed generation): the children are then taken in order.
    score_model: Any = None
    servers: dict[str, ManagedServer] = field(default_factory=dict)  # role -> the managed server it asks

    def task_payload(self, text: str, **extra: Any) -> dict[str, Any]:
        return task_payload(self.config, text, **extra)


def task_payload(config: ArchsmithConfig, text: str, **extra: Any) -> dict[str, Any]:
    """The payload every sandbox task gets for a candidate under this config."""
    budget = config.budget
    return {
        "space": config.space.name,
        "space_settings": config.space.settings,
        "text": text,
        "num_classes": budget.num_classes,
        "input_size": budget.input_size,
        "torch_threads": config.sandbox.torch_threads,
        **extra,
    }


def score_payload(config: ArchsmithConfig, text: str) -> dict[str, Any]:
    """The payload of the evaluator task: the candidate plus the resolved Zen-score settings."""
    zen = {"seed": config.seed, "resolution": config.budget.input_size, **config.evaluator.resolved()}
    return task_payload(config, text, zen=zen)


def needs_sandbox(config: ArchsmithConfig) -> bool:
    """Whether candidates of this config are executed (a tabular lookup runs nothing)."""
    return config.evaluator.name != "tabular"


def absolute_data(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a data spec with its ``path`` absolute (tasks run in their own directory; the
    path also goes to ``read_paths``)."""
    data = dict(data)
    if data.get("path"):
        data["path"] = os.path.abspath(os.path.expanduser(str(data["path"])))
    return data


def train_payload(config: ArchsmithConfig, text: str) -> dict[str, Any]:
    """The payload of the training task: the candidate, its preset and overrides, data, device."""
    train = config.evaluator.train
    assert train is not None  # the config validator fills it for evaluator.name = "train"
    data = absolute_data(train.data)
    return task_payload(config, text, seed=config.seed, device=train.device,
                        train={"preset": train.preset, **train.settings}, data=data,
                        read_paths=[data["path"]] if data.get("path") else [])


def supernet_payload(config: ArchsmithConfig, text: str, prepared: Path | None = None) -> dict[str, Any]:
    """The payload of the supernet task: the candidate, the checkpoint (absolute), data, device, and
    the run's prepared images when there are (``prepared``, see :func:`prepare_supernet_images`)."""
    supernet = config.evaluator.supernet
    assert supernet is not None  # the config validator guarantees it for evaluator.name = "supernet"
    data = absolute_data(supernet.data)
    checkpoint = supernet.checkpoint_path()
    settings = supernet.model_dump(exclude={"data", "device", "timeout_s", "training", "checkpoint"})
    readable = [str(checkpoint.parent), *([data["path"]] if data.get("path") else [])]
    if prepared is not None:
        readable.append(str(prepared.parent))
    return task_payload(config, text, seed=config.seed, device=supernet.device, data=data,
                        supernet={**settings, "checkpoint": str(checkpoint)},
                        prepared=str(prepared) if prepared is not None else None, read_paths=readable)


def prepare_supernet_images(config: ArchsmithConfig, directory: Path) -> Path:
    """The calibration and scored images of [evaluator.supernet], prepared once in ``directory``
    (the run's; kept for a resume) so that no task decodes the data set again."""
    from archsmith.tools.supernets.eval_data import cache_key, prepare_eval_images, save_eval_images

    supernet = config.evaluator.supernet
    assert supernet is not None
    data = absolute_data(supernet.data)
    args = (data, supernet.calibration_images, supernet.split, supernet.eval_images, supernet.normalization)
    path = directory / f"supernet-images-{cache_key(*args)}.pt"
    if not path.is_file():
        save_eval_images(prepare_eval_images(*args), path)
    return path


def check_supernet_checkpoint(config: ArchsmithConfig, space: SearchSpace) -> None:
    """ConfigError naming evaluator.supernet.checkpoint when it is missing or does not fit the space's
    supernet (checked once before the run, not once per candidate)."""
    supernet = config.evaluator.supernet
    assert supernet is not None
    if getattr(space, "supernet_settings", None) is None:
        raise ConfigError(f"evaluator.name = 'supernet' needs a supernet space (ofa_mbv3, spos_shufflenet); "
                          f"space.name is {config.space.name!r}")
    path = supernet.checkpoint_path()
    if not path.is_file():
        raise ConfigError(f"evaluator.supernet.checkpoint: {path} does not exist (download a published "
                         "supernet, or train one: archsmith supernet train CONFIG)")
    from archsmith.tools.supernets.extract import load_supernet

    try:
        load_supernet(space, path)
    except (RuntimeError, ValueError, KeyError, OSError, TypeError) as error:
        raise ConfigError(f"evaluator.supernet.checkpoint: {path} does not fit the {config.space.name} "
                         f"supernet of space.settings: {str(error)[:800]}") from None


def make_evaluator(
    config: ArchsmithConfig, space: SearchSpace, executor: TaskRunner | None, workdir: Path | None = None
) -> Evaluator:
    """The configured evaluator; tasks that score by running the candidate go to ``executor``.
    ``workdir`` (the run directory) keeps what an evaluator prepares once per run."""
    name = config.evaluator.name
    if name == "tabular":
        assert config.evaluator.tabular is not None  # the config validator guarantees it
        return TabularEvaluator(TabularBenchmark.load(config.evaluator.tabular, space))
    if executor is None:
        raise ValueError(f"evaluator {name!r} runs candidates and needs an executor")
    if name == "train":
        assert config.evaluator.train is not None
        return TaskEvaluator("train", TRAIN_TASK, executor, lambda text: train_payload(config, text),
                             config.evaluator.train.timeout_s)
    if name == "supernet":
        assert config.evaluator.supernet is not None
        prepared = prepare_supernet_images(config, workdir) if workdir is not None else None
        return TaskEvaluator("supernet", SUPERNET_TASK, executor,
                             lambda text: supernet_payload(config, text, prepared), config.evaluator.supernet.timeout_s)
    if name == "nas_det":
        nas_det = {**config.evaluator.nas_det.model_dump(), "seed": config.seed}
        return TaskEvaluator("nas_det", NAS_DET_TASK, executor, lambda text: task_payload(config, text, nas_det=nas_det),
                             config.sandbox.timeout_s)
    return TaskEvaluator("zen", ZEN_TASK, executor, lambda text: score_payload(config, text),
                         config.sandbox.timeout_s)
