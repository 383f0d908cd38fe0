"""The sandbox task that trains a candidate and scores it by accuracy.

Run it with ``sandbox.run("archsmith.tools.train_task:train_candidate", payload)``. Payload keys:

- ``space``, ``space_settings``, ``text``: the candidate, built with the space's ``build``;
- ``train``: ``{"preset": "short", **overrides}`` (:func:`~archsmith.tools.training.resolve_settings`;
  default preset ``short``); ``data``: a :class:`~archsmith.tools.datasets.DatasetSpec` dict
  (default: the synthetic set);
- ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available; default);
- ``num_classes``: optional; the data set's count wins (a difference is recorded in ``warnings``);
- ``input_size``: an int (or a square [H, W]); it becomes ``data.input_size`` when the data spec
  leaves that None, so that a candidate trains at the size it was checked and measured at;
- ``seed`` (default 0): seeds the model's initialisation, and ``train.seed`` unless given there;
- ``torch_threads``: torch's intra-op threads, as in :mod:`archsmith.tools.tasks`.

Returns the :class:`~archsmith.tools.results.ScoreResult` fields (``ok``, ``error_type``,
``error_message``, ``traceback``, ``name="train"``, ``score`` = the ``train.signal`` accuracy in
percent, ``std=0.0``, ``repeats=1``, ``settings``, ``report`` = numeric metrics only) plus
``stage`` (settings, data, build or train: the step that failed, None when ok), ``curve``,
``device``, ``stopped_early``, ``num_classes``, ``warnings`` and ``duration_s``. Failures come
back as data with ``score`` None: InvalidSettings, DeviceUnavailable, DataError, the build's
errors (InvalidStructure, ...), OutOfMemory, NonFiniteLoss, OutputShape, or the exception's
class name (:func:`~archsmith.tools.sandbox_protocol.classify_exception`).
"""

from __future__ import annotations

import time
from typing import Any

from archsmith.tools.tasks import StageFailure, build_candidate, failed_result, set_threads, succeeded

__all__ = ["REPORT_KEYS", "TRAIN_TASK", "train_candidate"]

TRAIN_TASK = "archsmith.tools.train_task:train_candidate"
REPORT_KEYS = ("train_acc", "valid_acc", "test_acc", "wall_s", "images_per_s", "peak_memory_mb", "epochs_done")


def _input_size(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    height, width = (int(v) for v in value)
    if height != width:
        raise ValueError(f"input_size: training uses square images, got {height}x{width}")
    return height


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise ValueError(f"device: expected cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise StageFailure("DeviceUnavailable", f"device {name!r} asked for, but CUDA is not available here")
    return name


def _resolve(payload: dict[str, Any]) -> tuple[Any, Any, str, dict[str, Any]]:
    """(TrainSettings, DatasetSpec, device, the settings record); InvalidSettings on a bad value."""
    from pydantic import ValidationError

    from archsmith.tools.datasets import DatasetSpec
    from archsmith.tools.training import resolve_settings

    train = dict(payload.get("train") or {})
    preset = str(train.pop("preset", "short"))
    try:
        train.setdefault("seed", int(payload.get("seed", 0)))
        settings = resolve_settings(preset, train)
        data = dict(payload.get("data") or {"name": "synthetic"})
        if data.get("input_size") is None and payload.get("input_size") is not None:
            data["input_size"] = _input_size(payload["input_size"])
        spec = DatasetSpec.model_validate(data)
        device = _device(str(payload.get("device", "auto")))
    except ValidationError as error:
        raise StageFailure("InvalidSettings", _problems("data", error)) from None
    except (ValueError, TypeError) as error:
        raise StageFailure("InvalidSettings", str(error)) from None
    record = {"preset": preset, "train": settings.model_dump(), "data": spec.model_dump(), "device": device}
    return settings, spec, device, record


def _problems(prefix: str, error: Any) -> str:
    """A pydantic ValidationError as ``prefix.field: message; ...``."""
    parts = []
    for problem in error.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        where = ".".join(map(str, problem["loc"]))
        field = f"{prefix}.{where}" if where else prefix
        parts.append(message if message.startswith(f"{prefix}.") else f"{field}: {message}")
    return "; ".join(parts)


def _classified(exc: BaseException) -> BaseException:
    """Training and data failures as staged failures (their type, no traceback); others as they are."""
    from archsmith.tools.datasets import DataError
    from archsmith.tools.training import TrainingFailure

    if isinstance(exc, TrainingFailure):
        return StageFailure(exc.error_type, str(exc))
    if isinstance(exc, DataError):
        return StageFailure("DataError", str(exc))
    return exc


def train_candidate(payload: dict[str, Any]) -> dict[str, Any]:
    """Build the candidate, train it on the data set, return its accuracy as the score."""
    started = time.perf_counter()
    set_threads(payload)
    fields: dict[str, Any] = {
        "name": "train", "score": None, "std": 0.0, "repeats": 1, "settings": {}, "report": {}, "curve": [],
        "device": None, "stopped_early": False, "num_classes": payload.get("num_classes"), "warnings": [],
    }  # fmt: skip
    stage = "settings"
    try:
        import torch

        from archsmith.tools.datasets import DataError, load_dataset
        from archsmith.tools.training import train_model

        settings, spec, device, fields["settings"] = _resolve(payload)
        fields["device"] = device
        stage = "data"
        data = load_dataset(spec)
        fields["settings"]["data_summary"] = data.summary()
        split = {"train_acc": "train", "valid_acc": "valid", "test_acc": "test"}[settings.signal]
        if len(getattr(data, f"{split}_y")) == 0:
            raise DataError(f"the {data.name} data set has no {split} images for train.signal = {settings.signal!r}")
        asked = payload.get("num_classes")
        if asked is not None and int(asked) != data.num_classes:
            fields["warnings"].append(f"num_classes: the payload says {asked}, the data set has "
                                      f"{data.num_classes}; built with {data.num_classes}")  # fmt: skip
        fields["num_classes"] = data.num_classes
        stage = "build"
        torch.manual_seed(int(payload.get("seed", 0)))
        model = build_candidate({**payload, "num_classes": data.num_classes})
        stage = "train"
        report = train_model(model, data, settings, device)
    except Exception as exc:  # noqa: BLE001 - a faulty candidate is a result
        return failed_result(stage, _classified(exc), started, **fields)
    values = report.model_dump()
    fields["warnings"].extend(report.warnings)
    return succeeded(started, **{
        **fields,
        "score": report.metric(settings.signal),
        "report": {key: float(values[key]) for key in REPORT_KEYS if values[key] is not None},
        "curve": values["curve"],
        "device": report.device,
        "stopped_early": report.stopped_early,
        "peak_memory_kind": report.peak_memory_kind,
    })
