"""Sandbox tasks for the detection (yolo) space: payload dict -> JSON-serialisable dict.

Like :mod:`archsmith.tools.tasks`, every task returns ``ok``, ``error_type``, ``error_message``,
``traceback`` and ``stage`` (the step that failed), and a faulty candidate is a result. Common
payload keys: ``space`` (``"yolo"``), ``space_settings``, ``text`` (the model YAML),
``num_classes``, ``seed`` (default 0), ``torch_threads``, ``config_dir`` (ultralytics' settings
directory; default ``<tempdir>/archsmith-ultralytics``, the task's own directory in the sandbox).

- :func:`check_detection_candidate`: ``input_size`` (profile image size, default 640; int or a
  square [S, S]), ``check_size`` (forward/backward resolution, default 64, a multiple of 32),
  ``batch_size`` (default 2).
- :func:`nas_det_candidate`: ``nas_det`` = keyword arguments of
  :func:`~archsmith.tools.detection_score.nas_det_score` (``input_size``, ``batch_size``,
  ``gamma``, ``repeats``, ``seed``; defaults: ``NAS_DET_CPU_SEARCH`` and the payload's seed).
- :func:`train_detection_candidate`: see its docstring.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsmith.tools.tasks import StageFailure, failed_result, forward_counting_weight_layers, set_threads, succeeded

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.nn as nn

__all__ = ["check_detection_candidate", "nas_det_candidate", "train_detection_candidate"]

DEFAULT_IMGSZ = 640
DEFAULT_CHECK_SIZE = 64
TRAIN_OPTIONS = ("fraction", "patience", "lr0", "optimizer", "close_mosaic", "mosaic", "cos_lr", "warmup_epochs")


def _square(size: Any, name: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise StageFailure("InvalidPayload", f"{name} must be one size or a square [S, S], got {size!r}")
        size = size[0]
    size = int(size)
    if size < 32 or size % 32:
        raise StageFailure("InvalidPayload", f"{name} must be a multiple of 32 (the P5 stride), got {size}")
    return size


def _build(payload: dict[str, Any]) -> nn.Module:
    from archsmith.tools.detection import prepare_ultralytics
    from archsmith.tools.spaces import get_space

    prepare_ultralytics(payload.get("config_dir"))
    space = get_space(payload.get("space", "yolo"), payload.get("space_settings") or {})
    validation = space.validate(payload["text"])
    if not validation.ok:
        raise StageFailure("InvalidStructure", validation.summary())
    return space.build(payload["text"], int(payload["num_classes"]), plain=False)


def _head_outputs(out: Any, batch: int, num_classes: int, size: int) -> tuple[list[torch.Tensor], list[list[int]]]:
    """The head's training outputs as tensors to backpropagate, and their shapes, checked.

    Ultralytics >= 8.4 returns a dict (``boxes`` [B, 4*reg_max, A], ``scores`` [B, nc, A],
    ``feats``: the three P3/P4/P5 maps); older versions a list of three [B, nc + 4*reg_max, H, W].
    """
    import torch

    anchors = sum((size // stride) ** 2 for stride in (8, 16, 32))
    if isinstance(out, dict):
        out = out.get("one2many", out)
        tensors = [out.get("boxes"), out.get("scores")]
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise StageFailure("OutputShape", f"the head returned keys {sorted(out)}, expected boxes and scores")
        scores = tensors[1]
        if tuple(scores.shape) != (batch, num_classes, anchors):
            raise StageFailure("OutputShape", f"scores shape {tuple(scores.shape)}, expected {(batch, num_classes, anchors)}")
    elif isinstance(out, (list, tuple)) and len(out) == 3 and all(isinstance(t, torch.Tensor) for t in out):
        tensors = list(out)
        for t, stride in zip(tensors, (8, 16, 32), strict=True):
            if t.shape[0] != batch or t.shape[-1] != size // stride:
                raise StageFailure("OutputShape", f"level output {tuple(t.shape)} at stride {stride} for size {size}")
    else:
        raise StageFailure("OutputShape", f"forward returned {type(out).__name__}, not the head's training outputs")
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise StageFailure("NonFinite", "the output contains NaN or infinite values")
    return tensors, [list(t.shape) for t in tensors]


def check_detection_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """Build, forward a random batch in train mode at ``check_size``, backward the sum of the
    outputs' means, then params/MACs/FLOPs at ``input_size`` counted as ultralytics counts them."""
    from archsmith.tools.detection import profile_detection

    started = time.perf_counter()
    set_threads(payload)
    fields: dict[str, Any] = {"params": 0, "macs": 0, "flops": 0, "output_shape": None, "weight_layers": None}
    stage = "build"
    try:
        imgsz = _square(payload.get("input_size", DEFAULT_IMGSZ), "input_size")
        fields["input_size"] = [imgsz, imgsz]
        size = _square(payload.get("check_size", DEFAULT_CHECK_SIZE), "check_size")
        import torch

        seed = int(payload.get("seed", 0))
        torch.manual_seed(seed)
        model = _build(payload)
        stage = "forward"
        batch = int(payload.get("batch_size", 2))
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
        out, fields["weight_layers"] = forward_counting_weight_layers(model, x)
        tensors, fields["output_shape"] = _head_outputs(out, batch, int(payload["num_classes"]), size)
        stage = "backward"
        sum(t.float().mean() for t in tensors).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        if all(g is None for g in grads):
            raise StageFailure("NoGradient", "no parameter received a gradient from the loss")
        if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
            raise StageFailure("NonFinite", "gradients contain NaN or infinite values")
        stage = "profile"
        model.zero_grad(set_to_none=True)
        profile = profile_detection(model, imgsz)
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        return failed_result(stage, exc, started, **fields)
    fields.update(params=profile.params, macs=profile.macs, flops=profile.flops)
    failed = not profile.ok
    return {
        **fields,
        "ok": not failed,
        "stage": "profile" if failed else None,
        "error_type": profile.error_type,
        "error_message": profile.error_message,
        "traceback": profile.traceback,
        "duration_s": time.perf_counter() - started,
    }


def nas_det_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """NAS_det of the candidate (a ScoreResult as a dict, plus ``stage``)."""
    from archsmith.tools.detection_score import NAS_DET_CPU_SEARCH, nas_det_score

    started = time.perf_counter()
    set_threads(payload)
    settings = {**NAS_DET_CPU_SEARCH.kwargs(), "seed": int(payload.get("seed", 0)), **(payload.get("nas_det") or {})}
    stage = "build"
    try:
        model = _build(payload)
        stage = "nas_det"
        result = nas_det_score(model, **settings).model_dump()  # an unknown setting is a TypeError here
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        return failed_result(stage, exc, started, name="nas_det", score=None, settings=settings)
    result["stage"] = None if result["ok"] else "nas_det"
    return result


def train_detection_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """Train the candidate with ultralytics on a local dataset; ``score`` is the final mAP50-95.

    Payload: ``data_yaml`` (path of an existing local dataset YAML; names of built-in datasets,
    URLs and ``download`` scripts are refused), ``epochs`` (1), ``imgsz`` (640), ``batch`` (16),
    ``device`` ("cpu", "cuda:N", "auto" or ultralytics' "N"), ``project_dir`` (where ultralytics writes: a cleaned ``data.yaml``,
    ``candidate.yaml`` and ``train/``; default a new temporary directory), ``workers`` (0), ``seed``
    and optionally ``fraction``, ``patience``, ``lr0``, ``optimizer``, ``close_mosaic``,
    ``mosaic``, ``cos_lr``, ``warmup_epochs``. Offline; plots and AMP off (AMP's check downloads a
    checkpoint). Returns ``ok``, ``score``, ``report`` {map50_95, map50, precision, recall,
    params, gflops (at ``imgsz``), wall_s}, ``save_dir`` and the error fields; a dataset problem
    is ``error_type`` "InvalidDataset". In the sandbox the dataset must be readable (Landlock's
    ``private_home`` hides it) and ``project_dir`` writable (else leave it to the task's directory).
    """
    started = time.perf_counter()
    set_threads(payload)
    fields: dict[str, Any] = {"score": None, "report": {}, "save_dir": None}
    stage = "dataset"
    try:
        workdir = Path(payload.get("project_dir") or tempfile.mkdtemp(prefix="archsmith-detect-")).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        data_yaml, nc = _local_dataset(payload.get("data_yaml"), workdir)
        stage = "build"
        model_yaml = _model_yaml(payload, nc, workdir)
        stage = "train"
        fields.update(_train(payload, model_yaml, data_yaml, workdir, started))
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        return failed_result(stage, exc, started, **fields)
    return succeeded(started, **fields)


def _without_git_metadata() -> None:
    """Keep ultralytics from reading the git repository around its own package.

    Its trainer writes that repository's branch and commit into each checkpoint; when the virtual
    environment lives inside a checkout, the repository is outside what the sandbox may read.
    """
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils.git import GitRepo

    no_repository = GitRepo.__new__(GitRepo)  # not __init__: that searches upwards for .git
    no_repository.root = no_repository.gitdir = no_repository.refdir = None
    trainer_module.GIT = no_repository


def _ultralytics_device(device: Any) -> str:
    """Our device names ("cpu", "cuda", "cuda:N", "auto") as ultralytics wants them ("cpu", "N")."""
    name = str(device or "cpu")
    if name == "auto":
        import torch

        name = "cuda:0" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        return name.partition(":")[2] or "0"
    return name


def _local_dataset(raw: Any, workdir: Path) -> tuple[Path, int]:
    """A cleaned copy of the user's dataset YAML (absolute paths, no ``download``) and its nc."""
    import yaml

    def refuse(message: str) -> StageFailure:
        return StageFailure("InvalidDataset", message)

    if not isinstance(raw, str) or "://" in raw:
        raise refuse(f"data_yaml must be the path of a local dataset YAML, got {raw!r}")
    path = Path(raw).expanduser().resolve()
    try:
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            raise refuse(f"data_yaml {raw!r} is not an existing local .yaml file (dataset names and URLs are not downloaded)")
        data = yaml.safe_load(path.read_text("utf-8"))
    except PermissionError as error:  # the sandbox's private_home confines reads
        raise refuse(f"cannot read {path} ({error.strerror}); a sandbox must be allowed to read the dataset") from None
    if not isinstance(data, dict):
        raise refuse(f"{path} is not a mapping with train, val and names")
    root = Path(data.get("path") or path.parent)
    root = root if root.is_absolute() else (path.parent / root).resolve()
    clean: dict[str, Any] = {"path": str(root)}
    for key in ("train", "val"):
        entries = data.get(key)
        if not entries:
            raise refuse(f"{path} has no {key!r} entry")
        resolved = [p if p.is_absolute() else (root / p).resolve() for p in map(Path, entries if isinstance(entries, list) else [entries])]
        missing = [str(p) for p in resolved if not p.exists()]
        if missing:
            raise refuse(f"{path}: {key} path {missing[0]} does not exist")
        clean[key] = [str(p) for p in resolved]
    names = data.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        nc = data.get("nc")
        if not isinstance(nc, int) or nc < 1:
            raise refuse(f"{path} gives neither names nor nc")
        names = {k: f"class{k}" for k in range(nc)}
    clean["names"] = {int(k): str(v) for k, v in names.items()}
    clean["nc"] = len(clean["names"])
    target = workdir / "data.yaml"
    target.write_text(yaml.safe_dump(clean, sort_keys=False), "utf-8")
    return target, clean["nc"]


def _model_yaml(payload: dict[str, Any], nc: int, workdir: Path) -> Path:
    import yaml

    from archsmith.tools.detection import ultralytics_dict
    from archsmith.tools.spaces import get_space

    space = get_space(payload.get("space", "yolo"), payload.get("space_settings") or {})
    validation = space.validate(payload["text"])
    if not validation.ok:
        raise StageFailure("InvalidStructure", validation.summary())
    spec, _ = space.spec(payload["text"])  # type: ignore[attr-defined]
    target = workdir / "candidate.yaml"
    target.write_text(yaml.safe_dump(ultralytics_dict(spec, nc), sort_keys=False), "utf-8")
    return target


class _ThreadOnlyPool:
    """``multiprocessing.pool.ThreadPool``'s ``imap`` on plain threads: no POSIX semaphore, which
    cannot be created where /dev/shm is not writable (the sandbox's Landlock rules)."""

    def __init__(self, processes: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=processes)

    def __enter__(self) -> _ThreadOnlyPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._executor.shutdown()

    def imap(self, func: Any, iterable: Any) -> Any:
        return self._executor.map(func, iterable)


def _semaphores_work() -> bool:
    import multiprocessing

    try:
        multiprocessing.Lock()
    except OSError:  # PermissionError: sem_open under /dev/shm refused
        return False
    return True


def _train(payload: dict[str, Any], model_yaml: Path, data_yaml: Path, workdir: Path, started: float) -> dict[str, Any]:
    from archsmith.tools.detection import prepare_ultralytics, profile_detection

    prepare_ultralytics(payload.get("config_dir"))
    from ultralytics.models.yolo.detect import DetectionTrainer

    if not _semaphores_work():  # ultralytics scans labels with a multiprocessing ThreadPool
        import ultralytics.data.base
        import ultralytics.data.dataset

        ultralytics.data.base.ThreadPool = _ThreadOnlyPool  # type: ignore[attr-defined,misc]
        ultralytics.data.dataset.ThreadPool = _ThreadOnlyPool  # type: ignore[attr-defined,misc]

    imgsz = int(payload.get("imgsz", DEFAULT_IMGSZ))
    overrides = {
        "model": str(model_yaml), "data": str(data_yaml), "epochs": int(payload.get("epochs", 1)), "imgsz": imgsz,
        "batch": int(payload.get("batch", 16)), "device": _ultralytics_device(payload.get("device")),
        "workers": int(payload.get("workers", 0)), "seed": int(payload.get("seed", 0)), "project": str(workdir),
        "name": "train", "exist_ok": True, "plots": False, "amp": False, "pretrained": False, "verbose": False,
        **{k: payload[k] for k in TRAIN_OPTIONS if k in payload},
    }  # fmt: skip
    _without_git_metadata()
    trainer = DetectionTrainer(overrides=overrides)
    trainer.train()
    metrics = dict(trainer.metrics or {})
    profile = profile_detection(trainer.model, imgsz)
    report = {
        "map50_95": float(metrics.get("metrics/mAP50-95(B)", float("nan"))),
        "map50": float(metrics.get("metrics/mAP50(B)", float("nan"))),
        "precision": float(metrics.get("metrics/precision(B)", float("nan"))),
        "recall": float(metrics.get("metrics/recall(B)", float("nan"))),
        "params": float(profile.params),
        "gflops": profile.flops / 1e9,
        "wall_s": time.perf_counter() - started,
    }
    if report["map50_95"] != report["map50_95"]:
        raise StageFailure("NonFinite", f"training reported no finite mAP50-95: {metrics}")
    return {"score": report["map50_95"], "report": report, "save_dir": str(trainer.save_dir)}
